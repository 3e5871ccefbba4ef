//! Every way an admission can fail, and the one place they become a denial message.

use std::time::Duration;

use crate::budget::NamespaceBusy;
use crate::managed::ManagedError;
use crate::patch::PatchError;
use crate::pipeline::FetchError;
use crate::spec::SpecError;
use crate::store::StoreError;
use crate::workload::WorkloadError;

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("the AdmissionRequest carries no pod object")]
    NoObject,
    #[error("the AdmissionRequest has no namespace")]
    NoNamespace,
    #[error(
        "namespace {0} is never injected (the webhook's own namespace and kube-system, kube-public \
         and kube-node-lease are excluded); nothing was fetched or written"
    )]
    ExcludedNamespace(String),
    #[error(
        "namespace {0} is not labelled secret-injector.io/inject=enabled, so secret-injector does \
         not inject there; nothing was fetched or written. Label the namespace to opt in (if it is \
         labelled, this review did not come from the API server)"
    )]
    NotOptedIn(String),
    #[error(
        "this bare pod has only metadata.generateName, so its managed Secret cannot be named after \
         it; set the annotation secret-injector.io/secret-name (or give the pod a fixed \
         metadata.name, or run it from a Deployment, StatefulSet, DaemonSet or Job)"
    )]
    UnnamedBarePod,
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Patch(#[from] PatchError),
    #[error(transparent)]
    Managed(#[from] ManagedError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    NamespaceBusy(#[from] NamespaceBusy),
    #[error(
        "no answer within the internal deadline of {}s while {stage}; the backend or the Kubernetes \
         API may be slow or unreachable — the pod was not admitted and nothing was written after that point",
        .deadline.as_secs_f32()
    )]
    Deadline {
        deadline: Duration,
        stage: &'static str,
    },
    /// The failure of a concurrent admission of the same workload whose cold flight this one
    /// waited for (see `pipeline::Flights`).
    #[error(transparent)]
    Shared(std::sync::Arc<InjectError>),
}

/// Plan errors keep their own variants (and so their kind) in a denial.
impl From<crate::plan::PlanError> for InjectError {
    fn from(e: crate::plan::PlanError) -> Self {
        match e {
            crate::plan::PlanError::Spec(e) => InjectError::Spec(e),
            crate::plan::PlanError::Patch(e) => InjectError::Patch(e),
        }
    }
}

impl InjectError {
    /// The denial message shown to the user (kubectl, Events of the ReplicaSet). It is built
    /// only from references, names and scrubbed backend messages — never values or tokens.
    pub fn denial_message(&self) -> String {
        self.to_string()
    }

    /// A short, fixed label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            InjectError::NoObject | InjectError::NoNamespace => "bad_request",
            InjectError::ExcludedNamespace(_) | InjectError::NotOptedIn(_) => "namespace",
            InjectError::UnnamedBarePod => "annotation",
            InjectError::Spec(_) => "annotation",
            InjectError::Workload(_) => "owner",
            InjectError::Store(_) => "store",
            InjectError::Patch(_) => "patch",
            InjectError::Managed(_) => "managed_secret",
            InjectError::Fetch(e) if e.is_read() => "fetch",
            InjectError::Fetch(_) => "value",
            InjectError::NamespaceBusy(_) => "rate_limited",
            InjectError::Deadline { .. } => "deadline",
            InjectError::Shared(e) => e.kind(),
        }
    }
}
