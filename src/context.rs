//! The shared state of one running webhook: the Kubernetes client, tunables, metrics, the
//! digest key, backend selection, the fetch cache and the watch-fed [`Index`]. Built
//! complete by [`Context::new`] (the in-process tests run exactly the production path) and
//! shared by the server, admission and the refresher; `app` composes and runs it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use moka::future::Cache;
use rand::SeedableRng;

use crate::budget::{ColdAdmissionLimit, ColdAdmissions, NamespaceBusy};
use crate::events::{EventsConfig, Publisher};
use crate::identity::{PodIdentity, TokenIssuer};
use crate::index::{Index, ManagedIndex, SYSTEM_NAMESPACES};
use crate::managed::DigestKey;
use crate::metrics::Metrics;
use crate::pipeline::issue::Issuance;
use crate::pipeline::{self, Documents, FetchCache, FetchError, Flights};
use crate::pod::PodView;
use crate::provider::{Providers, RemoteKey, SecretProvider};
use crate::redact::SecretBytes;
use crate::spec::{SourceSpec, StoreRef};
use crate::store::{EndpointPolicy, ResolvedStore, StoreError};
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
    /// The webhook's own namespace: never injected.
    pub own_namespace: String,
    /// How long an admission waits for an owner the index has not seen yet (a new
    /// ReplicaSet's first pod can arrive before its watch event); within `deadline`.
    pub owner_wait: Duration,
    /// How long an admission waits for a store the index has not seen yet (created just
    /// before the pod); within `deadline`.
    pub store_wait: Duration,
    /// TTL asked for the orphan token that holds a dynamic secret's lease.
    pub lease_holder_ttl: Duration,
    /// How long a replaced lease stays valid for the old pods before it is revoked.
    pub lease_revoke_grace: Duration,
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
            own_namespace: "secret-injector".to_string(),
            owner_wait: Duration::from_secs(2),
            store_wait: Duration::from_millis(500),
            lease_holder_ttl: Duration::from_secs(24 * 3600),
            lease_revoke_grace: Duration::from_secs(10 * 60),
            reads_per_store: crate::provider::limit::DEFAULT_READS_PER_STORE,
            cold_admissions: ColdAdmissionLimit::default(),
            events: EventsConfig::default(),
        }
    }
}

/// Issuances are coalesced per managed Secret (never shared between two workloads, even of
/// one identity), identity, store and source.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct IssueKey {
    namespace: String,
    secret: String,
    identity: PodIdentity,
    store: StoreRef,
    config: crate::store::ProviderConfig,
    source: String,
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
    /// The watch-fed index (managed Secrets, opted-in namespaces, stores, owners): everything
    /// the admission hot path reads, so a warm admission makes no API request.
    index: Index,
    /// Single-flight issuances for concurrent cold admissions of one workload.
    issues: Cache<IssueKey, Arc<Issuance>>,
    /// Cold halves of admissions in flight, by their targets (see `admission::mutate`).
    cold_flights: Flights<ColdKey>,
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
        let index = Index::watch(&client, &config.endpoints);
        let events = Publisher::spawn(
            client.clone(),
            index.shared_owners(),
            metrics.clone(),
            config.events.clone(),
        );
        Self {
            providers: Providers::new(tokens, metrics.clone(), config.reads_per_store),
            cold: ColdAdmissions::new(config.cold_admissions),
            fetch_cache: FetchCache::new(config.fetch_coalesce_window),
            index,
            events,
            cold_flights: Flights::default(),
            issues: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(config.fetch_coalesce_window)
                .build(),
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
        self.index.managed()
    }

    /// The watch-fed index of namespaces, stores, owners and managed Secrets.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// True when `namespace` is never injected: the webhook's own or a system namespace.
    pub fn is_excluded_namespace(&self, namespace: &str) -> bool {
        namespace == self.config.own_namespace || SYSTEM_NAMESPACES.contains(&namespace)
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

    /// Issue the values of the managed Secret `secret` (an issued source) as `identity`:
    /// concurrent admissions of the same workload share one issuance.
    pub async fn issue_coalesced(
        &self,
        identity: &PodIdentity,
        store: &ResolvedStore,
        secret: &str,
        source: &SourceSpec,
    ) -> Result<Arc<Issuance>, FetchError> {
        let key = IssueKey {
            namespace: identity.namespace.clone(),
            secret: secret.to_string(),
            identity: identity.clone(),
            store: store.reference.clone(),
            config: store.config.clone(),
            source: serde_json::to_string(source).expect("source spec serialises"),
        };
        // Errors are shared with the waiters of this flight but never cached.
        self.issues
            .try_get_with(key, async {
                self.issue_fresh(identity, store, source)
                    .await
                    .map(Arc::new)
            })
            .await
            .map_err(|e: Arc<FetchError>| (*e).clone())
    }

    /// Issue an issued source's values now (the refresher's re-issue).
    pub async fn issue_fresh(
        &self,
        identity: &PodIdentity,
        store: &ResolvedStore,
        source: &SourceSpec,
    ) -> Result<Issuance, FetchError> {
        let provider = self.provider_for(store);
        let mut rng = rand::rngs::StdRng::from_os_rng();
        let issued = pipeline::issue::issue(
            provider.as_ref(),
            identity,
            store,
            source,
            self.config.lease_holder_ttl,
            &mut rng,
        )
        .await;
        self.metrics.lease_operation("issue", issued.is_ok());
        issued
    }

    /// The pod's owner chain, every level verified by uid against the index (waiting up to
    /// `owner_wait` for an owner the watch has not delivered yet). No API request.
    pub async fn owner_chain(
        &self,
        namespace: &str,
        pod: &PodView<'_>,
    ) -> Result<Workload, WorkloadError> {
        workload::resolve(
            self.index.owners(),
            namespace,
            pod,
            self.config.owner_wait,
            &self.metrics,
        )
        .await
    }

    /// A store, resolved and validated, from the index (validated once per resourceVersion).
    pub fn resolve_store(
        &self,
        namespace: &str,
        reference: &StoreRef,
    ) -> Result<ResolvedStore, StoreError> {
        self.index.resolve_store(namespace, reference)
    }
}
