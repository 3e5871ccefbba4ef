//! Kubernetes API vocabulary shared by every module that talks to the API server: readable
//! API error text, our field manager, the workload kinds we follow, and the one `Owner` type
//! (the workload a managed Secret belongs to).

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};

use crate::redact;

/// A Kubernetes API error as a user should read it: the API server's message and code, not
/// a debug dump of the Status object.
pub fn api_error_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                "no message"
            } else {
                status.message.as_str()
            };
            if status.reason.is_empty() {
                format!("{message} (HTTP {})", status.code)
            } else {
                format!("{message} (HTTP {} {})", status.code, status.reason)
            }
        }
        other => redact::scrub(&other.to_string()),
    }
}

/// True for an API answer with this HTTP status code.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Our name in `managedFields`, so GitOps tools can tell our writes from theirs.
pub const FIELD_MANAGER: &str = "secret-injector";

pub fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

/// The workload kinds we follow up an owner chain, check for existence and (some) roll.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
    Pod,
}

/// Run `$body` with `$K` bound to the k8s-openapi type of `$kind`: the one place a kind
/// becomes a type (each variant is named after its type).
macro_rules! with_kind {
    ($kind:expr, $K:ident => $body:expr) => {
        with_kind!(@arms $kind, $K, $body,
            Deployment StatefulSet DaemonSet ReplicaSet Job CronJob Pod)
    };
    (@arms $kind:expr, $K:ident, $body:expr, $($variant:ident)*) => {
        match $kind {
            $(WorkloadKind::$variant => {
                type $K = $variant;
                $body
            })*
        }
    };
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 7] = [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
        WorkloadKind::ReplicaSet,
        WorkloadKind::Job,
        WorkloadKind::CronJob,
        WorkloadKind::Pod,
    ];

    /// The kinds a rollout restarts (a pod-template annotation starts one).
    pub const ROLLABLE: [WorkloadKind; 3] = [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::ReplicaSet => "ReplicaSet",
            WorkloadKind::Job => "Job",
            WorkloadKind::CronJob => "CronJob",
            WorkloadKind::Pod => "Pod",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            WorkloadKind::Deployment
            | WorkloadKind::StatefulSet
            | WorkloadKind::DaemonSet
            | WorkloadKind::ReplicaSet => "apps/v1",
            WorkloadKind::Job | WorkloadKind::CronJob => "batch/v1",
            WorkloadKind::Pod => "v1",
        }
    }

    /// The kind by name alone (as recorded in `Kind/name`).
    pub fn from_kind(kind: &str) -> Option<WorkloadKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// The kind of an ownerReference: group and kind must both match.
    pub fn from_type(api_version: &str, kind: &str) -> Option<WorkloadKind> {
        let group = api_version.split('/').next().unwrap_or_default();
        Self::from_kind(kind).filter(|k| {
            k.api_version().split('/').next().unwrap_or_default() == group && *k != Self::Pod
        })
    }

    pub fn rollable(self) -> bool {
        Self::ROLLABLE.contains(&self)
    }

    /// Lower-case label for metrics.
    pub fn metric_label(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployment",
            WorkloadKind::StatefulSet => "statefulset",
            WorkloadKind::DaemonSet => "daemonset",
            WorkloadKind::ReplicaSet => "replicaset",
            WorkloadKind::Job => "job",
            WorkloadKind::CronJob => "cronjob",
            WorkloadKind::Pod => "pod",
        }
    }

    /// An object's metadata by name, or None when it does not exist.
    pub async fn get_meta(
        self,
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ObjectMeta>, kube::Error> {
        with_kind!(self, K => {
            Ok(Api::<K>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await?
                .map(|o| o.metadata))
        })
    }

    /// A JSON merge patch; errors with 409 when the body's resourceVersion precondition fails.
    pub async fn merge_patch(
        self,
        client: &Client,
        namespace: &str,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<(), kube::Error> {
        with_kind!(self, K => {
            Api::<K>::namespaced(client.clone(), namespace)
                .patch(name, &patch_params(), &Patch::Merge(body))
                .await
                .map(|_| ())
        })
    }
}

/// One event of a metadata-only watch.
pub enum MetaEvent {
    /// Created or changed; `initial` when part of a (re)list.
    Applied {
        meta: ObjectMeta,
        initial: bool,
    },
    Deleted(ObjectMeta),
}

/// Workloads in `kube-system` never have injected pods (the namespace is always excluded),
/// so the workload watches leave them out.
pub const WORKLOAD_FIELD_SELECTOR: &str = "metadata.namespace!=kube-system";

impl WorkloadKind {
    /// Metadata-only watch of every object of this kind outside kube-system.
    ///
    /// Selector: only the field selector above. The refresher needs each workload's
    /// `force-sync` annotation and annotations cannot be selected on; nothing is stored per
    /// event here (no reflector), and the refresher keeps state only for owners of managed
    /// Secrets (refresher/workloads.rs), so memory does not grow with the cluster's workloads.
    pub fn watch_metadata(self, client: &Client) -> BoxStream<'static, MetaEvent> {
        with_kind!(self, K => {
            watcher::watcher(
                Api::<PartialObjectMeta<K>>::all(client.clone()),
                watcher::Config::default().fields(WORKLOAD_FIELD_SELECTOR),
            )
            .default_backoff()
            .filter_map(|event| async move {
                match event {
                    Ok(watcher::Event::Apply(o)) => Some(MetaEvent::Applied { meta: o.metadata, initial: false }),
                    Ok(watcher::Event::InitApply(o)) => Some(MetaEvent::Applied { meta: o.metadata, initial: true }),
                    Ok(watcher::Event::Delete(o)) => Some(MetaEvent::Deleted(o.metadata)),
                    _ => None,
                }
            })
            .boxed()
        })
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of an owner: one we know, or another controller's (kept as written).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnerKind {
    Known(WorkloadKind),
    Other { api_version: String, kind: String },
}

impl OwnerKind {
    pub fn new(api_version: &str, kind: &str) -> Self {
        // A Pod owns only a bare pod's adopted Secret (never another pod: `from_type` excludes it).
        if api_version == "v1" && kind == "Pod" {
            return OwnerKind::Known(WorkloadKind::Pod);
        }
        match WorkloadKind::from_type(api_version, kind) {
            Some(k) => OwnerKind::Known(k),
            None => OwnerKind::Other {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            },
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            OwnerKind::Known(k) => k.as_str(),
            OwnerKind::Other { kind, .. } => kind,
        }
    }

    pub fn api_version(&self) -> &str {
        match self {
            OwnerKind::Known(k) => k.api_version(),
            OwnerKind::Other { api_version, .. } => api_version,
        }
    }

    pub fn known(&self) -> Option<WorkloadKind> {
        match self {
            OwnerKind::Known(k) => Some(*k),
            OwnerKind::Other { .. } => None,
        }
    }
}

/// The workload a managed Secret belongs to: the top of the pod's owner chain, or the bare
/// pod itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub namespace: String,
    pub kind: OwnerKind,
    pub name: String,
    /// None for a bare pod (its uid does not exist yet at admission).
    pub uid: Option<String>,
}

impl Owner {
    pub fn from_reference(namespace: &str, r: &OwnerReference) -> Self {
        Owner {
            namespace: namespace.to_string(),
            kind: OwnerKind::new(&r.api_version, &r.kind),
            name: r.name.clone(),
            uid: Some(r.uid.clone()),
        }
    }

    pub fn bare_pod(namespace: &str, name: &str) -> Self {
        Owner {
            namespace: namespace.to_string(),
            kind: OwnerKind::Known(WorkloadKind::Pod),
            name: name.to_string(),
            uid: None,
        }
    }

    /// `Kind/name`, as recorded in the `secret-injector.io/owner` annotation.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.kind.as_str(), self.name)
    }

    /// `recorded == self.reference()`, without building the reference.
    pub fn is_reference(&self, recorded: &str) -> bool {
        recorded
            .strip_prefix(self.kind.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            == Some(self.name.as_str())
    }

    /// The ownerReference a managed Secret carries (none for a bare pod).
    pub fn owner_reference(&self) -> Option<OwnerReference> {
        self.uid.as_ref().map(|uid| OwnerReference {
            api_version: self.kind.api_version().to_string(),
            kind: self.kind.as_str().to_string(),
            name: self.name.clone(),
            uid: uid.clone(),
            controller: None,
            block_owner_deletion: None,
        })
    }

    /// The object an Event is published on.
    pub fn object_reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(self.kind.api_version().to_string()),
            kind: Some(self.kind.as_str().to_string()),
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            ..Default::default()
        }
    }

    /// True when a rollout can restart it.
    pub fn rollable(&self) -> bool {
        self.kind.known().is_some_and(WorkloadKind::rollable)
    }

    /// Without the uid: the key for debouncing rollouts and matching force-syncs.
    pub fn workload(&self) -> Owner {
        Owner {
            uid: None,
            ..self.clone()
        }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reference())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_match_groups() {
        for k in WorkloadKind::ALL {
            assert_eq!(WorkloadKind::from_kind(k.as_str()), Some(k));
        }
        assert_eq!(
            WorkloadKind::from_type("apps/v1", "Deployment"),
            Some(WorkloadKind::Deployment)
        );
        assert_eq!(
            WorkloadKind::from_type("argoproj.io/v1alpha1", "Deployment"),
            None
        );
        assert_eq!(
            WorkloadKind::from_type("batch/v1", "CronJob"),
            Some(WorkloadKind::CronJob)
        );
        assert!(WorkloadKind::DaemonSet.rollable());
        assert!(!WorkloadKind::Job.rollable());
    }

    #[test]
    fn owner_reference_text() {
        let o = Owner::bare_pod("ns", "p");
        assert_eq!(o.reference(), "Pod/p");
        assert!(o.owner_reference().is_none());
        for recorded in [
            "Pod/p",
            "Pod/p/",
            "Pod/",
            "Pod",
            "Podp",
            "Pod//p",
            "Deployment/p",
            "",
        ] {
            assert_eq!(
                o.is_reference(recorded),
                recorded == o.reference(),
                "{recorded}"
            );
        }
        let slashed = Owner::bare_pod("ns", "a/b");
        assert!(slashed.is_reference("Pod/a/b") && !slashed.is_reference("Pod/a"));
    }
}
