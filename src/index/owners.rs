//! The owner objects a pod's chain can name (ReplicaSet, Deployment, StatefulSet, DaemonSet,
//! Job, CronJob), watched metadata-only and stored trimmed to what the chain needs: uid, the
//! controller ownerReference, and the `secret-injector.io/` annotations. Everything else
//! (labels, managedFields, other annotations, timestamps) is dropped before it is stored.
//!
//! These watches carry no selector: the annotations that matter are not selectable, and any
//! workload can become an owner the moment its pods are annotated, so the only sound filter
//! would be the namespace opt-in, which a selector on a namespaced kind cannot express. Memory
//! is kept small instead (a few short strings per object; see docs/architecture.md).

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::watch;

use super::uid::Uid;
use super::watched::Watched;
use crate::k8s::WorkloadKind;
use crate::spec::PREFIX;

/// The controller ownerReference of an owner, as the API server stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerRef {
    kind: ControllerKind,
    pub name: Box<str>,
    pub uid: Uid,
}

/// apiVersion and kind: nearly always a kind the index knows (a ReplicaSet's Deployment, a
/// Job's CronJob), kept without a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ControllerKind {
    Known(WorkloadKind),
    Other(Box<(Box<str>, Box<str>)>),
}

impl ControllerRef {
    pub fn api_version(&self) -> &str {
        match &self.kind {
            ControllerKind::Known(k) => k.api_version(),
            ControllerKind::Other(other) => &other.0,
        }
    }

    pub fn kind(&self) -> &str {
        match &self.kind {
            ControllerKind::Known(k) => k.as_str(),
            ControllerKind::Other(other) => &other.1,
        }
    }
}

/// One owner object, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRecord {
    pub uid: Uid,
    /// Boxed: most owners (Deployments, StatefulSets, …) have none.
    pub controller: Option<Box<ControllerRef>>,
    /// Only `secret-injector.io/` annotations; boxed, as most owners have none.
    annotations: Option<Box<Annotations>>,
}

type Annotations = Vec<(Box<str>, Box<str>)>;

impl OwnerRecord {
    pub fn from_meta(meta: &ObjectMeta) -> Option<OwnerRecord> {
        let refs = meta.owner_references.as_deref().unwrap_or_default();
        let controller = refs
            .iter()
            .find(|r| r.controller == Some(true))
            .or_else(|| refs.first())
            .map(|r| {
                let known = WorkloadKind::ALL
                    .into_iter()
                    .find(|k| k.api_version() == r.api_version && k.as_str() == r.kind);
                Box::new(ControllerRef {
                    kind: match known {
                        Some(k) => ControllerKind::Known(k),
                        None => ControllerKind::Other(Box::new((
                            r.api_version.as_str().into(),
                            r.kind.as_str().into(),
                        ))),
                    },
                    name: r.name.as_str().into(),
                    uid: r.uid.as_str().into(),
                })
            });
        let annotations: Annotations = meta
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| k.starts_with(PREFIX))
            .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
            .collect();
        Some(OwnerRecord {
            uid: meta.uid.as_deref()?.into(),
            controller,
            annotations: (!annotations.is_empty()).then(|| Box::new(annotations)),
        })
    }

    /// Its `secret-injector.io/` annotations.
    pub fn annotations(&self) -> impl Iterator<Item = (&str, &str)> {
        self.annotations
            .iter()
            .flat_map(|a| a.iter())
            .map(|(k, v)| (&**k, &**v))
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// One watch per owner kind.
pub struct Owners {
    kinds: Vec<(WorkloadKind, Watched<OwnerRecord>)>,
}

fn spawn<K>(client: &Client, kind: WorkloadKind) -> (WorkloadKind, Watched<OwnerRecord>)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api = Api::<PartialObjectMeta<K>>::all(client.clone());
    let watched = Watched::spawn(
        api,
        watcher::Config::default(),
        kind.as_str(),
        false,
        |o: &PartialObjectMeta<K>| OwnerRecord::from_meta(&o.metadata),
    );
    (kind, watched)
}

impl Owners {
    pub fn watch(client: &Client) -> Self {
        Self {
            kinds: vec![
                spawn::<ReplicaSet>(client, WorkloadKind::ReplicaSet),
                spawn::<Deployment>(client, WorkloadKind::Deployment),
                spawn::<StatefulSet>(client, WorkloadKind::StatefulSet),
                spawn::<DaemonSet>(client, WorkloadKind::DaemonSet),
                spawn::<Job>(client, WorkloadKind::Job),
                spawn::<CronJob>(client, WorkloadKind::CronJob),
            ],
        }
    }

    fn of(&self, kind: WorkloadKind) -> Option<&Watched<OwnerRecord>> {
        self.kinds.iter().find(|(k, _)| *k == kind).map(|(_, w)| w)
    }

    /// The indexed owner (None also for kinds that are not indexed, e.g. Pod).
    pub fn get(&self, kind: WorkloadKind, namespace: &str, name: &str) -> Option<Arc<OwnerRecord>> {
        self.of(kind)?.get(namespace, name)
    }

    /// Changes of one kind's map (for waiting on an object the watch has not delivered yet).
    pub fn changes(&self, kind: WorkloadKind) -> Option<watch::Receiver<u64>> {
        self.of(kind).map(Watched::changes)
    }

    pub async fn wait_until_synced(&self) {
        for (_, w) in &self.kinds {
            w.wait_until_synced().await;
        }
    }

    pub fn is_synced(&self) -> bool {
        self.kinds.iter().all(|(_, w)| w.is_synced())
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.kinds.iter().map(|(_, w)| w.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference};
    use std::collections::BTreeMap;

    #[test]
    fn an_owner_is_trimmed_to_uid_controller_and_our_annotations() {
        let meta = ObjectMeta {
            name: Some("api-7c9f".into()),
            namespace: Some("payments".into()),
            uid: Some("u-rs".into()),
            labels: Some(BTreeMap::from([("app".into(), "api".into())])),
            annotations: Some(BTreeMap::from([
                ("deployment.kubernetes.io/revision".into(), "3".into()),
                ("secret-injector.io/secret-name".into(), "creds".into()),
            ])),
            managed_fields: Some(vec![ManagedFieldsEntry::default()]),
            owner_references: Some(vec![
                OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: "other".into(),
                    uid: "u-cm".into(),
                    ..Default::default()
                },
                OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "api".into(),
                    uid: "u-d".into(),
                    controller: Some(true),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let record = OwnerRecord::from_meta(&meta).unwrap();
        assert!(record.uid == *"u-rs");
        let controller = record.controller.as_ref().unwrap();
        assert_eq!(
            (controller.api_version(), controller.kind()),
            ("apps/v1", "Deployment")
        );
        assert!(matches!(controller.kind, ControllerKind::Known(_)));
        assert!(controller.uid == *"u-d");
        assert_eq!(record.annotations().count(), 1);
        assert_eq!(
            record.annotation("secret-injector.io/secret-name"),
            Some("creds")
        );
        // Without a uid there is nothing to verify against.
        assert!(OwnerRecord::from_meta(&ObjectMeta::default()).is_none());
    }
}
