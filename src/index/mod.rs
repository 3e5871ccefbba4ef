//! The one watch-fed index of everything read on the admission hot path, kept on every replica
//! and shared by admission, the refresher and readiness (through [`crate::context::Context`]):
//!
//! | what | watch | kept per object |
//! |---|---|---|
//! | managed Secrets | label `app.kubernetes.io/managed-by=secret-injector`, metadata only | uid, resourceVersion, creation time, the annotations read back, ownerReferences ([`ManagedMeta`]) |
//! | opted-in namespaces | label `secret-injector.io/inject=enabled`, metadata only | labels |
//! | SecretStores, ClusterSecretStores | all (any may be named) | uid, resourceVersion, validation result, conditions |
//! | ReplicaSets, Deployments, StatefulSets, DaemonSets, Jobs, CronJobs | all, metadata only (see [`owners`]) | uid, controller ref, `secret-injector.io/` annotations |
//!
//! The managed Secrets' map is the one watch of them, shared by admission (warm answers) and
//! the refresher (its work list, from [`Watched::events`]).
//!
//! These are the objects the trust checks compare a review's claims against: a review is
//! acted on only when its namespace is opted in and every owner in its pod's chain exists with
//! the claimed uid. With the index synced, a warm admission makes no API request at all, at any
//! age: there is no TTL anywhere, the watches keep it current.

pub mod owners;
pub mod stores;
pub mod uid;
pub mod watched;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use kube::{Api, Client};

use crate::managed::recorded::SELECTOR;
use crate::managed::ManagedMeta;
use crate::spec::{StoreRef, ANN_INJECT};
use crate::store::{EndpointPolicy, ResolvedStore, StoreError};
pub use owners::{ControllerRef, OwnerRecord, Owners};
pub use stores::Stores;
pub use uid::Uid;
pub use watched::{Change, ObjKey, Watched};

/// The managed Secrets (label-selected, metadata only), trimmed to [`ManagedMeta`].
pub type ManagedIndex = Watched<ManagedMeta>;

/// Changes a slow subscriber of the managed Secrets may fall behind by before it is re-sent a
/// snapshot.
const MANAGED_EVENTS: usize = 1024;

/// The label selector of opted-in namespaces (the webhook's namespaceSelector).
pub const NAMESPACE_SELECTOR: &str = "secret-injector.io/inject=enabled";

/// Namespaces that are never injected, whatever their labels say.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// An opted-in namespace: its labels (for ClusterSecretStore namespaceSelector conditions).
pub type NamespaceLabels = BTreeMap<String, String>;

pub struct Index {
    managed: ManagedIndex,
    namespaces: Watched<NamespaceLabels>,
    stores: Stores,
    owners: Arc<Owners>,
}

impl Index {
    /// Start every watch. Needs a Tokio runtime.
    pub fn watch(client: &Client, endpoints: &EndpointPolicy) -> Self {
        let namespaces = Watched::spawn(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default().labels(NAMESPACE_SELECTOR),
            "Namespace",
            false,
            |n: &PartialObjectMeta<Namespace>| Some(n.metadata.labels.clone().unwrap_or_default()),
        );
        let managed = Watched::spawn_with_events(
            Api::<PartialObjectMeta<Secret>>::all(client.clone()),
            watcher::Config::default().labels(SELECTOR),
            "managed Secret",
            MANAGED_EVENTS,
            |s: &PartialObjectMeta<Secret>, namespace: &Arc<str>| {
                Some(ManagedMeta::new(&s.metadata, namespace.clone()))
            },
        );
        Self {
            managed,
            namespaces,
            stores: Stores::watch(client, endpoints),
            owners: Arc::new(Owners::watch(client)),
        }
    }

    pub fn managed(&self) -> &ManagedIndex {
        &self.managed
    }

    pub fn owners(&self) -> &Owners {
        &self.owners
    }

    /// The owner index, for a task that outlives a borrow (the admission-Event worker and
    /// the missed-injection detector resolve owner chains from it, never with a GET).
    pub fn shared_owners(&self) -> Arc<Owners> {
        Arc::clone(&self.owners)
    }

    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// Resolves once every watch has applied its first list.
    pub async fn wait_until_synced(&self) {
        self.managed.wait_until_synced().await;
        self.namespaces.wait_until_synced().await;
        self.stores.wait_until_synced().await;
        self.owners.wait_until_synced().await;
    }

    /// The labels of `namespace` when it is opted in (labelled, and not a system namespace).
    pub fn opted_in(&self, namespace: &str) -> Option<Arc<NamespaceLabels>> {
        if SYSTEM_NAMESPACES.contains(&namespace) {
            return None;
        }
        self.namespaces
            .get("", namespace)
            .filter(|l| l.get(ANN_INJECT).map(String::as_str) == Some("enabled"))
    }

    /// A store as `namespace` may use it, resolved and validated from memory.
    pub fn resolve_store(
        &self,
        namespace: &str,
        reference: &StoreRef,
    ) -> Result<ResolvedStore, StoreError> {
        let labels = self.opted_in(namespace).unwrap_or_default();
        self.stores.resolve(namespace, &labels, reference)
    }

    /// As [`Index::resolve_store`], but a store that is not there yet is waited for until
    /// `give_up` (a store created just before the pod may not have reached the watch).
    pub async fn resolve_store_waiting(
        &self,
        namespace: &str,
        reference: &StoreRef,
        give_up: tokio::time::Instant,
    ) -> Result<ResolvedStore, StoreError> {
        let mut changes = self.stores.changes(reference.kind);
        loop {
            match self.resolve_store(namespace, reference) {
                Err(StoreError::NotFound { .. })
                    if tokio::time::timeout_at(give_up, changes.changed())
                        .await
                        .is_ok_and(|r| r.is_ok()) => {}
                result => return result,
            }
        }
    }

    /// Object counts per watch (for logs and the memory figure).
    pub fn sizes(&self) -> [(&'static str, usize); 3] {
        [
            ("namespaces", self.namespaces.len()),
            ("stores", self.stores.len()),
            ("owners", self.owners.len()),
        ]
    }
}
