//! Every way an admission can fail, and the one place they become a denial message.

use std::time::Duration;

use crate::identity::PodIdentity;
use crate::managed::ManagedError;
use crate::patch::PatchError;
use crate::provider::{ProviderError, SelectError};
use crate::spec::{SpecError, StoreRef};
use crate::store::StoreError;
use crate::workload::WorkloadError;

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("the AdmissionRequest carries no pod object")]
    NoObject,
    #[error("the AdmissionRequest has no namespace")]
    NoNamespace,
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
    Fetch(Box<FetchFailure>),
    /// `context` names the store, the remote key and the Secret key being produced.
    #[error("{context}: {error}")]
    Select { context: String, error: SelectError },
    #[error(
        "{origin}: Secret key {key:?} is produced twice (by {first} and by {second}); rename one"
    )]
    DuplicateKey {
        origin: String,
        key: String,
        first: String,
        second: String,
    },
    #[error(
        "{origin}: the values add up to {bytes} bytes, over the 1 MiB limit of a Kubernetes Secret"
    )]
    TooLarge { origin: String, bytes: usize },
    #[error(
        "no answer within the internal deadline of {}s while {stage}; the backend or the Kubernetes \
         API may be slow or unreachable — the pod was not admitted and nothing was written after that point",
        .deadline.as_secs_f32()
    )]
    Deadline {
        deadline: Duration,
        stage: &'static str,
    },
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

/// A backend read that failed, with what it was for.
#[derive(Debug, thiserror::Error)]
#[error("{store}: fetching {keys} as {identity} failed: {error}")]
pub struct FetchFailure {
    pub store: StoreRef,
    pub keys: String,
    pub identity: PodIdentity,
    pub error: ProviderError,
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
            InjectError::Spec(_) => "annotation",
            InjectError::Workload(_) => "owner",
            InjectError::Store(_) => "store",
            InjectError::Patch(_) => "patch",
            InjectError::Managed(_) => "managed_secret",
            InjectError::Fetch(_) => "fetch",
            InjectError::Select { .. }
            | InjectError::DuplicateKey { .. }
            | InjectError::TooLarge { .. } => "value",
            InjectError::Deadline { .. } => "deadline",
        }
    }
}
