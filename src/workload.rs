//! Pod → owning workload (ReplicaSet → Deployment, StatefulSet, DaemonSet, Job → CronJob),
//! verified against the watch-fed owner index and collecting each level's annotations so
//! workload-level settings apply to its pods.
//!
//! Trust: only the pod's own controller reference comes from the review, and it is believed
//! only when an object of that kind, name **and uid** is in the index (the API server's
//! objects). Every level above comes from the indexed objects themselves, and the managed
//! Secret's owner (and its ownerReference uid) is taken from there, never from the pod.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::index::owners::{OwnerRecord, Owners};
use crate::k8s::{Owner, OwnerKind, WorkloadKind};
use crate::metrics::Metrics;
use crate::pod::PodView;

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(
        "the pod's owner {kind} {name} with uid {uid} does not exist as far as the Kubernetes API \
         says (waited {waited_ms} ms for it); owners are verified by uid, so this review was refused \
         before anything was fetched or written — if the workload was only just created, the API \
         server retries; otherwise this review did not come from the API server"
    )]
    Unverified {
        kind: String,
        name: String,
        uid: String,
        waited_ms: u128,
    },
    #[error(
        "the pod's controller {api_version} {kind} {name} is not a kind secret-injector can verify \
         (ReplicaSet, Deployment, StatefulSet, DaemonSet, Job, CronJob); pods created by other \
         controllers cannot be injected"
    )]
    UnverifiableKind {
        api_version: String,
        kind: String,
        name: String,
    },
    #[error("the pod's owner chain is deeper than {MAX_DEPTH} levels or loops at {kind} {name}")]
    TooDeep { kind: String, name: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// The top-most owner, verified, or the bare pod itself.
    pub owner: Owner,
    /// Owner name, or the pod's name for a bare pod (None when it only has generateName).
    pub name: Option<String>,
    /// `secret-injector.io/` annotations of the owner chain (lower levels override).
    pub annotations: BTreeMap<String, String>,
}

/// Maximum owner depth we follow (Pod → Job → CronJob is 2; guard against cycles).
const MAX_DEPTH: usize = 4;

/// The pod's owner chain, every level verified against `owners`. An owner not (yet) in the
/// index is waited for up to `wait` (a new ReplicaSet's first pod can arrive before the
/// watch event of the ReplicaSet); the caller's deadline bounds the whole call.
pub async fn resolve(
    owners: &Owners,
    namespace: &str,
    pod: &PodView<'_>,
    wait: Duration,
    metrics: &Metrics,
) -> Result<Workload, WorkloadError> {
    let Some(claimed) = pod.controller() else {
        return Ok(bare_pod(namespace, pod));
    };
    let Some(mut kind) = WorkloadKind::from_type(&claimed.api_version, &claimed.kind) else {
        return Err(WorkloadError::UnverifiableKind {
            api_version: claimed.api_version.to_string(),
            kind: claimed.kind.to_string(),
            name: claimed.name.to_string(),
        });
    };
    let mut name = claimed.name.to_string();
    let mut uid = claimed.uid.to_string();
    let mut records = Vec::new();
    let give_up = Instant::now() + wait;
    for _ in 0..MAX_DEPTH {
        let record = verified(owners, kind, namespace, &name, &uid, give_up, metrics).await?;
        records.push(record.clone());
        let top = Owner {
            namespace: namespace.to_string(),
            kind: OwnerKind::Known(kind),
            name: name.clone(),
            uid: Some(record.uid.to_string()),
        };
        let Some(next) = record.controller.clone() else {
            return Ok(finish(top, &records));
        };
        match WorkloadKind::from_type(next.api_version(), next.kind()) {
            Some(k) => {
                kind = k;
                name = next.name.to_string();
                uid = next.uid.to_string();
            }
            // A controller of another kind (e.g. a Rollout owning the ReplicaSet): named by
            // the API server's own object, so it is the owner as recorded there.
            None => {
                let top = Owner {
                    namespace: namespace.to_string(),
                    kind: OwnerKind::new(next.api_version(), next.kind()),
                    name: next.name.to_string(),
                    uid: Some(next.uid.to_string()),
                };
                return Ok(finish(top, &records));
            }
        }
    }
    Err(WorkloadError::TooDeep {
        kind: kind.to_string(),
        name,
    })
}

fn finish(top: Owner, records: &[std::sync::Arc<OwnerRecord>]) -> Workload {
    let mut annotations = BTreeMap::new();
    // Top-most first, so lower levels override.
    for record in records.iter().rev() {
        for (k, v) in record.annotations() {
            annotations.insert(k.to_string(), v.to_string());
        }
    }
    Workload {
        name: Some(top.name.clone()),
        owner: top,
        annotations,
    }
}

/// A pod without a controller: the pod itself, by its name or (not yet named) its
/// generateName prefix, which always ends in `-` and so can never equal a real pod name.
fn bare_pod(namespace: &str, pod: &PodView<'_>) -> Workload {
    let named = pod.name.as_deref().filter(|n| !n.is_empty());
    let name = named.or(pod.generate_name.as_deref()).unwrap_or_default();
    Workload {
        owner: Owner::bare_pod(namespace, name),
        name: named.map(str::to_string),
        annotations: BTreeMap::new(),
    }
}

/// The indexed object of `kind`/`name` with exactly `uid`, waiting for the watch until
/// `give_up` when it is not there (yet).
async fn verified(
    owners: &Owners,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
    uid: &str,
    give_up: Instant,
    metrics: &Metrics,
) -> Result<std::sync::Arc<OwnerRecord>, WorkloadError> {
    let matches = || owners.get(kind, namespace, name).filter(|r| r.uid == *uid);
    if let Some(record) = matches() {
        return Ok(record);
    }
    let started = Instant::now();
    if let Some(mut changes) = owners.changes(kind) {
        loop {
            if let Some(record) = matches() {
                metrics.owner_wait("found");
                info!(namespace, %kind, name, waited_ms = started.elapsed().as_millis(), "owner arrived in the index");
                return Ok(record);
            }
            match tokio::time::timeout_at(give_up, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => break,
            }
        }
    }
    metrics.owner_wait("denied");
    warn!(namespace, %kind, name, uid, "owner not verified against the index; review refused");
    Err(WorkloadError::Unverified {
        kind: kind.to_string(),
        name: name.to_string(),
        uid: uid.to_string(),
        waited_ms: started.elapsed().as_millis(),
    })
}
