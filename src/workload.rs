//! Pod → owning workload (ReplicaSet → Deployment, StatefulSet, DaemonSet, Job → CronJob),
//! collecting each level's annotations so workload-level settings apply to its pods.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Client;

use crate::k8s::{api_error_message, Owner, WorkloadKind};

#[derive(Debug, thiserror::Error)]
#[error("reading the pod's owner {kind} {name} failed: {}", api_error_message(.source))]
pub struct WorkloadError {
    pub kind: String,
    pub name: String,
    #[source]
    pub source: Box<kube::Error>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// The top-most owner we could identify, or the bare pod itself.
    pub owner: Owner,
    /// Owner name, or the pod's name for a bare pod (None when it only has generateName).
    pub name: Option<String>,
    /// Annotations of the owner chain, top-most first (lower levels override).
    pub annotations: BTreeMap<String, String>,
}

/// Maximum owner depth we follow (Pod → Job → CronJob is 2; guard against cycles).
const MAX_DEPTH: usize = 4;

pub async fn resolve(
    client: &Client,
    namespace: &str,
    pod: &Pod,
) -> Result<Workload, WorkloadError> {
    let mut next = controller_of(&pod.metadata);
    let mut top: Option<OwnerReference> = None;
    let mut levels: Vec<BTreeMap<String, String>> = Vec::new();
    for _ in 0..MAX_DEPTH {
        let Some(reference) = next.take() else { break };
        let meta = fetch_meta(client, namespace, &reference).await?;
        top = Some(reference);
        match meta {
            Some(meta) => {
                levels.push(meta.annotations.clone().unwrap_or_default());
                next = controller_of(&meta);
            }
            None => break,
        }
    }
    let mut annotations = BTreeMap::new();
    for level in levels.into_iter().rev() {
        annotations.extend(level);
    }
    Ok(match top {
        Some(r) => Workload {
            name: Some(r.name.clone()),
            owner: Owner::from_reference(namespace, &r),
            annotations,
        },
        None => Workload {
            owner: Owner::bare_pod(namespace, pod.metadata.name.as_deref().unwrap_or_default()),
            name: pod.metadata.name.clone(),
            annotations,
        },
    })
}

fn controller_of(meta: &ObjectMeta) -> Option<OwnerReference> {
    let refs = meta.owner_references.as_ref()?;
    refs.iter()
        .find(|r| r.controller == Some(true))
        .or_else(|| refs.first())
        .cloned()
}

/// The owner's metadata, or None for kinds we do not read (custom controllers) or owners
/// that are already gone; those end the chain.
async fn fetch_meta(
    client: &Client,
    namespace: &str,
    r: &OwnerReference,
) -> Result<Option<ObjectMeta>, WorkloadError> {
    let Some(kind) = WorkloadKind::from_type(&r.api_version, &r.kind) else {
        return Ok(None);
    };
    kind.get_meta(client, namespace, &r.name)
        .await
        .map_err(|source| WorkloadError {
            kind: r.kind.clone(),
            name: r.name.clone(),
            source: Box::new(source),
        })
}
