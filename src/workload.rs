//! Pod → owning workload (ReplicaSet → Deployment, StatefulSet, DaemonSet, Job → CronJob),
//! collecting each level's annotations so workload-level settings apply to its pods.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Api, Client};

use crate::managed::Owner;

#[derive(Debug, thiserror::Error)]
#[error("reading the pod's owner {kind} {name} failed: {}", crate::api_error_message(.source))]
pub struct WorkloadError {
    pub kind: String,
    pub name: String,
    #[source]
    pub source: Box<kube::Error>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// The top-most owner we could identify; None for a bare pod.
    pub owner: Option<Owner>,
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
            owner: Some(Owner {
                api_version: r.api_version,
                kind: r.kind,
                name: r.name,
                uid: Some(r.uid),
            }),
            annotations,
        },
        None => Workload {
            owner: None,
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
    let group = r.api_version.split('/').next().unwrap_or_default();
    let result = match (group, r.kind.as_str()) {
        ("apps", "ReplicaSet") => get_meta::<ReplicaSet>(client, namespace, &r.name).await,
        ("apps", "Deployment") => get_meta::<Deployment>(client, namespace, &r.name).await,
        ("apps", "StatefulSet") => get_meta::<StatefulSet>(client, namespace, &r.name).await,
        ("apps", "DaemonSet") => get_meta::<DaemonSet>(client, namespace, &r.name).await,
        ("batch", "Job") => get_meta::<Job>(client, namespace, &r.name).await,
        ("batch", "CronJob") => get_meta::<CronJob>(client, namespace, &r.name).await,
        _ => return Ok(None),
    };
    result.map_err(|source| WorkloadError {
        kind: r.kind.clone(),
        name: r.name.clone(),
        source: Box::new(source),
    })
}

/// An object's metadata by name, or None when it does not exist.
pub(crate) async fn get_meta<K>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<ObjectMeta>, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Ok(Api::<K>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?
        .map(|o| o.meta().clone()))
}
