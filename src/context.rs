//! The shared state of one running webhook: the Kubernetes client, tunables, metrics, the
//! digest key, backend selection, the admission caches and the managed-Secret index. Built
//! complete by [`Context::new`] (the in-process tests run exactly the production path) and
//! shared by the server, admission and the refresher; `app` composes and runs it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use moka::future::Cache;

use crate::budget::{ColdAdmissionLimit, ColdAdmissions, NamespaceBusy};
use crate::events::{EventsConfig, Publisher};
use crate::identity::{PodIdentity, TokenIssuer};
use crate::managed::{DigestKey, ManagedIndex};
use crate::metrics::Metrics;
use crate::pipeline::{self, Documents, FetchCache, FetchError, Flights};
use crate::provider::{Providers, RemoteKey, SecretProvider};
use crate::redact::SecretBytes;
use crate::spec::{SourceSpec, StoreRef};
use crate::store::{self, EndpointPolicy, ResolvedStore, StoreError};
use crate::workload::{self, Workload, WorkloadError};

/// Tunables shared by admission and the refresher.
#[derive(Clone, Debug)]
pub struct ContextConfig {
    /// Internal budget for one review; below the webhook's timeoutSeconds so we always answer.
    pub deadline: Duration,
    pub min_refresh_interval: Duration,
    /// How long a fetched document may serve concurrent admissions of the same identity.
    pub fetch_coalesce_window: Duration,
    /// Which backend servers stores may name (checked before any TokenRequest or connection).
    pub endpoints: EndpointPolicy,
    /// Backend requests in flight per store at most (`--max-concurrent-reads-per-store`).
    pub reads_per_store: usize,
    /// Cold admissions (ones that read a backend) per namespace (`--cold-admissions-*`).
    pub cold_admissions: ColdAdmissionLimit,
    /// Admission Events (on/off, reporting instance, aggregation limits).
    pub events: EventsConfig,
}

impl Default for ContextConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(8),
            min_refresh_interval: Duration::from_secs(10),
            fetch_coalesce_window: Duration::from_secs(2),
            endpoints: EndpointPolicy::default(),
            reads_per_store: crate::provider::limit::DEFAULT_READS_PER_STORE,
            cold_admissions: ColdAdmissionLimit::default(),
            events: EventsConfig::default(),
        }
    }
}

/// Owner chains are cached by the pod's controller reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ControllerKey {
    namespace: String,
    kind: String,
    name: String,
    uid: String,
}

/// Resolved stores are cached by namespace and reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct StoreKey {
    namespace: String,
    reference: StoreRef,
}

/// One cold flight: every target's namespace, name and recorded annotations.
pub type ColdKey = Vec<(String, String, std::collections::BTreeMap<String, String>)>;

pub struct Context {
    client: Client,
    config: ContextConfig,
    metrics: Metrics,
    digest_key: DigestKey,
    providers: Providers,
    fetch_cache: FetchCache,
    /// Cold halves of admissions in flight, by their targets (see `admission::mutate`).
    cold_flights: Flights<ColdKey>,
    /// ReplicaSet → Deployment never changes; workload annotations are re-read after the TTL.
    owners: Cache<ControllerKey, Workload>,
    /// Resolved (and validated) stores, for a few seconds.
    stores: Cache<StoreKey, ResolvedStore>,
    /// Managed Secrets as the watch sees them, so a warm admission needs no Secret GET.
    managed: ManagedIndex,
    /// Token buckets of cold admissions, per namespace.
    cold: ColdAdmissions,
    /// Events, queued off the admission path.
    events: Publisher,
}

impl Context {
    /// Everything, including the managed-Secret watch (so this needs a Tokio runtime).
    pub fn new(
        client: Client,
        config: ContextConfig,
        metrics: Metrics,
        digest_key: DigestKey,
    ) -> Self {
        let tokens = TokenIssuer::new(client.clone());
        Self {
            providers: Providers::new(tokens, metrics.clone(), config.reads_per_store),
            cold: ColdAdmissions::new(config.cold_admissions),
            fetch_cache: FetchCache::new(config.fetch_coalesce_window),
            cold_flights: Flights::default(),
            owners: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(30))
                .build(),
            stores: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(5))
                .build(),
            managed: ManagedIndex::watch(client.clone()),
            events: Publisher::spawn(client.clone(), metrics.clone(), config.events.clone()),
            client,
            config,
            metrics,
            digest_key,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn config(&self) -> &ContextConfig {
        &self.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn digest_key(&self) -> &DigestKey {
        &self.digest_key
    }

    pub fn managed_index(&self) -> &ManagedIndex {
        &self.managed
    }

    /// Cold admissions in flight: one per workload's targets at a time.
    pub fn cold_flights(&self) -> &Flights<ColdKey> {
        &self.cold_flights
    }

    /// Take one cold admission (one that needs a backend read) from `namespace`'s bucket.
    pub async fn admit_cold(&self, namespace: &str) -> Result<(), NamespaceBusy> {
        self.cold.admit(namespace).await
    }

    /// Where admission and the detector report Events (never blocks).
    pub fn events(&self) -> &Publisher {
        &self.events
    }

    /// A store's backend, chosen by the provider registry.
    pub fn provider_for(&self, store: &ResolvedStore) -> Arc<dyn SecretProvider> {
        self.providers.for_store(store)
    }

    /// Read `keys` as `identity`, shared with concurrent admissions of the same identity.
    pub async fn fetch_coalesced(
        &self,
        identity: &PodIdentity,
        store: &ResolvedStore,
        keys: &BTreeSet<RemoteKey>,
    ) -> Result<Documents, FetchError> {
        let provider = self.provider_for(store);
        pipeline::fetch_documents(
            provider.as_ref(),
            Some(&self.fetch_cache),
            identity,
            store,
            keys,
        )
        .await
    }

    /// Read everything `source` needs, fresh, and assemble its data.
    pub async fn fetch_fresh(
        &self,
        identity: &PodIdentity,
        store: &ResolvedStore,
        source: &SourceSpec,
        origin: &str,
    ) -> Result<std::collections::BTreeMap<String, SecretBytes>, FetchError> {
        let provider = self.provider_for(store);
        pipeline::fetch_source(provider.as_ref(), identity, store, source, origin).await
    }

    /// The pod's owner chain, cached by its controller reference.
    pub async fn owner_chain(&self, namespace: &str, pod: &Pod) -> Result<Workload, WorkloadError> {
        let controller = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true));
        let Some(r) = controller else {
            return workload::resolve(&self.client, namespace, pod).await;
        };
        let key = ControllerKey {
            namespace: namespace.to_string(),
            kind: r.kind.clone(),
            name: r.name.clone(),
            uid: r.uid.clone(),
        };
        if let Some(w) = self.owners.get(&key).await {
            return Ok(w);
        }
        let w = workload::resolve(&self.client, namespace, pod).await?;
        self.owners.insert(key, w.clone()).await;
        Ok(w)
    }

    /// A store, resolved and validated, cached for a few seconds.
    pub async fn resolve_store_cached(
        &self,
        namespace: &str,
        reference: &StoreRef,
    ) -> Result<ResolvedStore, StoreError> {
        let key = StoreKey {
            namespace: namespace.to_string(),
            reference: reference.clone(),
        };
        if let Some(s) = self.stores.get(&key).await {
            return Ok(s);
        }
        let s = self.resolve_store(namespace, reference).await?;
        self.stores.insert(key, s.clone()).await;
        Ok(s)
    }

    /// A store, resolved and validated now.
    pub async fn resolve_store(
        &self,
        namespace: &str,
        reference: &StoreRef,
    ) -> Result<ResolvedStore, StoreError> {
        store::resolve(&self.client, namespace, reference, &self.config.endpoints).await
    }
}
