//! Prometheus metrics. Labels are a small fixed set: never a namespace-, key- or value-derived
//! string, so cardinality is bounded and nothing sensitive can appear.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub webhook: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub provider: &'static str,
    pub operation: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// The cold-path stages of an admission, the fixed label set of
/// `secret_injector_admission_stage_seconds`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Stage {
    /// Owner chain and SecretStore resolution.
    Resolve,
    /// TokenRequest for the pod's ServiceAccount and the backend login (Vault login, STS).
    Login,
    /// One backend read (all keys of one store for one request).
    Read,
    /// Creating or replacing the managed Secret.
    Write,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::Resolve => "resolve",
            Stage::Login => "login",
            Stage::Read => "read",
            Stage::Write => "write",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventWriteLabels {
    pub operation: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseLabels {
    pub operation: &'static str,
    pub result: &'static str,
}

struct Inner {
    registry: Registry,
    lease_operations: Family<LeaseLabels, Counter>,
    leases_held: prometheus_client::metrics::gauge::Gauge,
    refreshes: Family<ResultLabels, Counter>,
    rollouts: Family<KindLabels, Counter>,
    refresh_lag: Histogram,
    managed_secrets: prometheus_client::metrics::gauge::Gauge,
    admissions: Family<AdmissionLabels, Counter>,
    admission_seconds: Family<WebhookLabels, Histogram>,
    stage_seconds: Family<StageLabels, Histogram>,
    backend_calls: Family<BackendLabels, Counter>,
    secret_writes: Family<WriteLabels, Counter>,
    deadline_exceeded: Counter,
    owner_waits: Family<ResultLabels, Counter>,
    store_read_waits: Counter,
    cold_admissions_limited: Counter,
    tracked_workloads: prometheus_client::metrics::gauge::Gauge,
    event_writes: Family<EventWriteLabels, Counter>,
    events_dropped: Family<CauseLabels, Counter>,
    missed_injections: Family<ReasonLabels, Counter>,
}

#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("secret_injector");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "AdmissionReviews answered, by webhook and result (patched, allowed, denied, invalid)",
            admissions.clone(),
        );
        let admission_seconds = Family::<WebhookLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
        });
        registry.register(
            "admission_duration_seconds",
            "Time to answer an AdmissionReview, from parsed body to serialised response",
            admission_seconds.clone(),
        );
        let stage_seconds = Family::<StageLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
        });
        registry.register_with_unit(
            "admission_stage",
            "Latency of the cold-path stages, by stage: resolve (owner chain and stores, per \
             admission that needs them), login (TokenRequest + backend login, per login made), \
             read (one backend read, per read made, refresher included), write (managed Secret \
             create or replace at admission)",
            prometheus_client::registry::Unit::Seconds,
            stage_seconds.clone(),
        );
        let backend_calls = Family::<BackendLabels, Counter>::default();
        registry.register(
            "backend_requests",
            "Calls to secret backends, by provider (vault, aws), operation (login, read, assume_role_with_web_identity, get_secret_value, batch_get_secret_value) and result (ok, error, throttled, unreachable)",
            backend_calls.clone(),
        );
        let secret_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "managed_secret_writes",
            "Writes of managed Secrets, by operation (create, update, adopt)",
            secret_writes.clone(),
        );
        let deadline_exceeded = Counter::default();
        registry.register(
            "admission_deadline_exceeded",
            "Admissions denied because the internal deadline ran out",
            deadline_exceeded.clone(),
        );
        let refreshes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "refreshes",
            "Refreshes of managed Secrets, by result (unchanged, updated, error, orphaned, superseded, skipped, adopted, awaiting_pod; for dynamic secrets and certificates also renewed, reissued, retired)",
            refreshes.clone(),
        );
        let rollouts = Family::<KindLabels, Counter>::default();
        registry.register(
            "rollouts",
            "Workload rollouts triggered by changed Secret values, by kind",
            rollouts.clone(),
        );
        let refresh_lag = Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0]);
        registry.register(
            "refresh_lag_seconds",
            "How late a refresh started after it was due",
            refresh_lag.clone(),
        );
        let managed_secrets = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "managed_secrets",
            "Managed Secrets tracked by the refresher (on the leader)",
            managed_secrets.clone(),
        );
        let owner_waits = Family::<ResultLabels, Counter>::default();
        registry.register(
            "owner_index_waits",
            "Admissions whose owner was not in the watch-fed index yet and waited for it, by result (found, denied)",
            owner_waits.clone(),
        );
        let store_read_waits = Counter::default();
        registry.register(
            "store_read_waits",
            "Backend fetches that waited for their store's read budget (--max-concurrent-reads-per-store)",
            store_read_waits.clone(),
        );
        let cold_admissions_limited = Counter::default();
        registry.register(
            "cold_admissions_limited",
            "Admissions denied because their namespace exceeded --cold-admissions-per-namespace",
            cold_admissions_limited.clone(),
        );
        let tracked_workloads = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "refresher_tracked_workloads",
            "Workloads whose force-sync annotation the refresher remembers: only owners of managed Secrets (on the leader)",
            tracked_workloads.clone(),
        );
        let event_writes = Family::<EventWriteLabels, Counter>::default();
        registry.register(
            "event_writes",
            "Writes of Kubernetes Events (admission outcomes, missed injections), by operation (create, patch) and result (ok, error)",
            event_writes.clone(),
        );
        let events_dropped = Family::<CauseLabels, Counter>::default();
        registry.register(
            "events_dropped",
            "Event occurrences not recorded, by cause (queue_full, aggregator_full)",
            events_dropped.clone(),
        );
        let missed_injections = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "missed_injections",
            "Workloads (per pod-template revision) and bare pods found without injection, by reason (InjectionMissed, NamespaceNotOptedIn)",
            missed_injections.clone(),
        );
        let lease_operations = Family::<LeaseLabels, Counter>::default();
        registry.register(
            "lease_operations",
            "Lease operations on dynamic secrets and certificates, by operation (issue, renew, reissue, revoke) and result (ok, error)",
            lease_operations.clone(),
        );
        let leases_held = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "leases_held",
            "Leases of dynamic secrets held by managed Secrets (current and retiring; on the leader)",
            leases_held.clone(),
        );
        Self(Arc::new(Inner {
            lease_operations,
            leases_held,
            event_writes,
            events_dropped,
            missed_injections,
            owner_waits,
            registry,
            store_read_waits,
            cold_admissions_limited,
            tracked_workloads,
            refreshes,
            rollouts,
            refresh_lag,
            managed_secrets,
            admissions,
            admission_seconds,
            stage_seconds,
            backend_calls,
            secret_writes,
            deadline_exceeded,
        }))
    }

    pub fn admission(&self, webhook: &'static str, result: &'static str, seconds: f64) {
        self.0
            .admissions
            .get_or_create(&AdmissionLabels { webhook, result })
            .inc();
        self.0
            .admission_seconds
            .get_or_create(&WebhookLabels { webhook })
            .observe(seconds);
    }

    /// One cold-path stage took `seconds`.
    pub fn stage(&self, stage: Stage, seconds: f64) {
        self.0
            .stage_seconds
            .get_or_create(&StageLabels {
                stage: stage.label(),
            })
            .observe(seconds);
    }

    /// Run `work`, recording how long it took as `stage`.
    pub async fn timed<T>(&self, stage: Stage, work: impl std::future::Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let out = work.await;
        self.stage(stage, started.elapsed().as_secs_f64());
        out
    }

    pub fn backend_call(
        &self,
        provider: &'static str,
        operation: &'static str,
        result: &'static str,
    ) {
        self.0
            .backend_calls
            .get_or_create(&BackendLabels {
                provider,
                operation,
                result,
            })
            .inc();
    }

    pub fn secret_write(&self, operation: &'static str) {
        self.0
            .secret_writes
            .get_or_create(&WriteLabels { operation })
            .inc();
    }

    pub fn refresh(&self, result: &'static str) {
        self.0
            .refreshes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn rollout(&self, kind: &'static str) {
        self.0.rollouts.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn refresh_lag(&self, seconds: f64) {
        self.0.refresh_lag.observe(seconds);
    }

    pub fn managed_secrets(&self, count: usize) {
        self.0.managed_secrets.set(count as i64);
    }

    pub fn lease_operation(&self, operation: &'static str, ok: bool) {
        self.0
            .lease_operations
            .get_or_create(&LeaseLabels {
                operation,
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    pub fn leases_held(&self, count: usize) {
        self.0.leases_held.set(count as i64);
    }

    pub fn deadline_exceeded(&self) {
        self.0.deadline_exceeded.inc();
    }

    /// An admission waited for its owner to reach the index: `found` or `denied`.
    pub fn owner_wait(&self, result: &'static str) {
        self.0
            .owner_waits
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn store_read_wait(&self) {
        self.0.store_read_waits.inc();
    }

    pub fn cold_admission_limited(&self) {
        self.0.cold_admissions_limited.inc();
    }

    pub fn tracked_workloads(&self, count: usize) {
        self.0.tracked_workloads.set(count as i64);
    }

    pub fn event_write(&self, operation: &'static str, result: &'static str) {
        self.0
            .event_writes
            .get_or_create(&EventWriteLabels { operation, result })
            .inc();
    }

    pub fn event_dropped(&self, cause: &'static str) {
        self.0
            .events_dropped
            .get_or_create(&CauseLabels { cause })
            .inc();
    }

    pub fn missed_injection(&self, reason: &'static str) {
        self.0
            .missed_injections
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.0.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
