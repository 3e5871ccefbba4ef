//! SecretStores and ClusterSecretStores, watched and validated once per resourceVersion (the
//! same `validate_provider` the validating webhook runs), so resolving a store on the hot path
//! is a map lookup. No selector: any store may be referenced by name, and stores are few
//! admin-written objects.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::runtime::watcher;
use kube::{Api, Client};

use super::watched::Watched;
use crate::provider::{FieldError, ProviderConfig, ResolvedStore};
use crate::spec::{StoreKind, StoreRef};
use crate::store::{
    conditions_allow, validate_provider, ClusterSecretStore, ClusterStoreCondition, EndpointPolicy,
    ProviderSpec, SecretStore, StoreError,
};

/// One store as indexed: its uid and the validation result of the resourceVersion seen.
#[derive(Debug)]
pub struct StoreRecord {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub validated: Result<ProviderConfig, Vec<FieldError>>,
    /// ClusterSecretStore only.
    pub conditions: Vec<ClusterStoreCondition>,
    /// The object as JSON (spec and status), for the status loop's full validation (with
    /// warnings) and its Ready condition. Stores are few; this is the only whole object kept.
    pub object: Arc<serde_json::Value>,
}

fn record<K: serde::Serialize>(
    object: &K,
    provider: &ProviderSpec,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    conditions: Vec<ClusterStoreCondition>,
    endpoints: &EndpointPolicy,
) -> StoreRecord {
    StoreRecord {
        object: Arc::new(serde_json::to_value(object).unwrap_or_default()),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        validated: validate_provider(provider, endpoints).map(|v| v.config),
        conditions,
    }
}

pub struct Stores {
    namespaced: Watched<StoreRecord>,
    cluster: Watched<StoreRecord>,
}

impl Stores {
    pub fn watch(client: &Client, endpoints: &EndpointPolicy) -> Self {
        let ep = endpoints.clone();
        let namespaced = Watched::spawn(
            Api::<SecretStore>::all(client.clone()),
            watcher::Config::default(),
            "SecretStore",
            true,
            move |s: &SecretStore| Some(record(s, &s.spec.provider, &s.metadata, Vec::new(), &ep)),
        );
        let ep = endpoints.clone();
        let cluster = Watched::spawn(
            Api::<ClusterSecretStore>::all(client.clone()),
            watcher::Config::default(),
            "ClusterSecretStore",
            true,
            move |s: &ClusterSecretStore| {
                Some(record(
                    s,
                    &s.spec.provider,
                    &s.metadata,
                    s.spec.conditions.clone(),
                    &ep,
                ))
            },
        );
        Self {
            namespaced,
            cluster,
        }
    }

    pub async fn wait_until_synced(&self) {
        self.namespaced.wait_until_synced().await;
        self.cluster.wait_until_synced().await;
    }

    /// Changes of the map `kind` resolves from.
    pub fn changes(&self, kind: StoreKind) -> tokio::sync::watch::Receiver<u64> {
        match kind {
            StoreKind::SecretStore => self.namespaced.changes(),
            StoreKind::ClusterSecretStore => self.cluster.changes(),
        }
    }

    /// Every store as `(kind, object)`, for the status loop.
    pub fn objects(&self) -> Vec<(&'static str, Arc<serde_json::Value>)> {
        let of = |kind: &'static str, w: &Watched<StoreRecord>| {
            w.entries()
                .into_iter()
                .map(move |(_, r)| (kind, r.object.clone()))
                .collect::<Vec<_>>()
        };
        let mut all = of("SecretStore", &self.namespaced);
        all.extend(of("ClusterSecretStore", &self.cluster));
        all
    }

    pub fn is_synced(&self) -> bool {
        self.namespaced.is_synced() && self.cluster.is_synced()
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.namespaced.len() + self.cluster.len()
    }

    /// A store as `namespace` may use it, from memory. `namespace_labels`: the labels of the
    /// (opted-in) namespace, for ClusterSecretStore `namespaceSelector` conditions.
    pub fn resolve(
        &self,
        namespace: &str,
        namespace_labels: &BTreeMap<String, String>,
        reference: &StoreRef,
    ) -> Result<ResolvedStore, StoreError> {
        let watched = match reference.kind {
            StoreKind::SecretStore => &self.namespaced,
            StoreKind::ClusterSecretStore => &self.cluster,
        };
        let scope = match reference.kind {
            StoreKind::SecretStore => namespace,
            StoreKind::ClusterSecretStore => "",
        };
        let Some(store) = watched.get(scope, &reference.name) else {
            if watched.is_missing() {
                return Err(StoreError::CrdMissing {
                    reference: reference.clone(),
                });
            }
            return Err(StoreError::NotFound {
                reference: reference.clone(),
                namespace: namespace.to_string(),
            });
        };
        if reference.kind == StoreKind::ClusterSecretStore
            && conditions_allow(namespace, Some(namespace_labels), &store.conditions) != Some(true)
        {
            return Err(StoreError::NotAllowed {
                reference: reference.clone(),
                namespace: namespace.to_string(),
            });
        }
        match &store.validated {
            Ok(config) => Ok(ResolvedStore {
                reference: reference.clone(),
                uid: store.uid.clone(),
                config: config.clone(),
            }),
            Err(errors) => Err(StoreError::Invalid {
                reference: reference.clone(),
                errors: errors.clone(),
            }),
        }
    }
}
