//! The per-store read budget: at most N backend requests in flight per store, across every
//! admission and refresh of this replica, so one pod with hundreds of keys (or a burst of
//! pods) cannot open hundreds of connections to one Vault or Secrets Manager.
//!
//! The unit is a key. Every backend keeps to [`SecretProvider`]'s contract that a fetch of
//! `n` keys has at most `n` requests in flight (Vault: a login, then one read per key; AWS:
//! one `BatchGetSecretValue` per 20 keys, then one `GetSecretValue` per key left), so holding
//! one permit per key bounds requests in flight. A fetch of more keys than the budget is
//! split into chunks of at most the budget, read one after the other (each chunk is one
//! provider call, so an AWS store still batches within a chunk), stopping at the first
//! failure — the same all-or-nothing answer as one call, naming the first failing key.
//!
//! A store is its object: `SecretStore` by namespace and name, `ClusterSecretStore` by name.
//! The semaphores live in a bounded map (capacity, idle expiry): a store unused for
//! [`IDLE`] gets a fresh semaphore next time, which is equivalent since none of its permits
//! can still be held (every backend request has a timeout of a few seconds). Only past
//! [`MAX_STORES`] stores in use at once could a busy store's semaphore be evicted and a second
//! one made for it.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use moka::future::Cache;
use tokio::sync::Semaphore;

use super::{KeyedError, RemoteKey, RemoteSecret, ResolvedStore, SecretProvider};
use crate::identity::PodIdentity;
use crate::metrics::Metrics;
use crate::spec::StoreKind;

/// Stores tracked at once; beyond it the least recently used store's semaphore is dropped.
const MAX_STORES: u64 = 10_000;
/// A store's semaphore is dropped after this long without a read.
const IDLE: Duration = Duration::from_secs(600);

/// Default for `--max-concurrent-reads-per-store`.
pub const DEFAULT_READS_PER_STORE: usize = 8;

/// A store object, as the budget counts it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct StoreId {
    kind: StoreKind,
    /// The SecretStore's namespace (the pod's); None for a ClusterSecretStore.
    namespace: Option<String>,
    name: String,
}

impl StoreId {
    fn of(identity: &PodIdentity, store: &ResolvedStore) -> Self {
        let kind = store.reference.kind;
        StoreId {
            kind,
            namespace: (kind == StoreKind::SecretStore).then(|| identity.namespace.clone()),
            name: store.reference.name.clone(),
        }
    }
}

/// One semaphore of `per_store` permits per store. Cheap to clone (shared).
#[derive(Clone)]
pub struct ReadBudget {
    per_store: usize,
    stores: Cache<StoreId, Arc<Semaphore>>,
    metrics: Metrics,
}

impl ReadBudget {
    pub fn new(per_store: usize, metrics: Metrics) -> Self {
        Self {
            per_store: per_store.max(1),
            stores: Cache::builder()
                .max_capacity(MAX_STORES)
                .time_to_idle(IDLE)
                .build(),
            metrics,
        }
    }

    pub fn per_store(&self) -> usize {
        self.per_store
    }

    async fn semaphore(&self, id: StoreId) -> Arc<Semaphore> {
        let per_store = self.per_store;
        self.stores
            .get_with(id, async move { Arc::new(Semaphore::new(per_store)) })
            .await
    }

    /// `inner`, reading within this budget.
    pub(super) fn wrap(&self, inner: Arc<dyn SecretProvider>) -> Arc<dyn SecretProvider> {
        Arc::new(Limited {
            inner,
            budget: self.clone(),
        })
    }

    #[cfg(test)]
    async fn stores(&self) -> u64 {
        self.stores.run_pending_tasks().await;
        self.stores.entry_count()
    }
}

/// A provider whose fetches hold one permit of the store's semaphore per key.
struct Limited {
    inner: Arc<dyn SecretProvider>,
    budget: ReadBudget,
}

impl SecretProvider for Limited {
    fn fetch<'a>(
        &'a self,
        identity: &'a PodIdentity,
        store: &'a ResolvedStore,
        keys: &'a [RemoteKey],
    ) -> BoxFuture<'a, Result<Vec<RemoteSecret>, KeyedError>> {
        Box::pin(async move {
            let semaphore = self.budget.semaphore(StoreId::of(identity, store)).await;
            let mut out = Vec::with_capacity(keys.len());
            for chunk in keys.chunks(self.budget.per_store) {
                let n = u32::try_from(chunk.len()).expect("a chunk is at most the budget");
                let permits = match semaphore.try_acquire_many(n) {
                    Ok(p) => p,
                    Err(_) => {
                        self.budget.metrics.store_read_wait();
                        semaphore
                            .acquire_many(n)
                            .await
                            .expect("the semaphore is never closed")
                    }
                };
                out.extend(self.inner.fetch(identity, store, chunk).await?);
                drop(permits);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::provider::ProviderError;
    use crate::spec::StoreRef;

    /// Counts reads in flight; each key takes a little while.
    #[derive(Default)]
    struct Counting {
        now: AtomicUsize,
        peak: AtomicUsize,
        calls: AtomicUsize,
    }

    impl SecretProvider for Counting {
        fn fetch<'a>(
            &'a self,
            _: &'a PodIdentity,
            _: &'a ResolvedStore,
            keys: &'a [RemoteKey],
        ) -> BoxFuture<'a, Result<Vec<RemoteSecret>, KeyedError>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                let reads = keys.iter().map(|k| async move {
                    let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
                    self.peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    self.now.fetch_sub(1, Ordering::SeqCst);
                    if k.key == "missing" {
                        return Err(KeyedError {
                            key: Some(k.key.clone()),
                            error: ProviderError::NotFound {
                                detail: "404".into(),
                            },
                        });
                    }
                    Ok(RemoteSecret::Blob(crate::redact::SecretBytes::new(
                        k.key.as_bytes().to_vec(),
                    )))
                });
                futures::future::try_join_all(reads).await
            })
        }
    }

    fn store(kind: StoreKind, name: &str) -> ResolvedStore {
        ResolvedStore {
            reference: StoreRef {
                kind,
                name: name.into(),
            },
            uid: None,
            config: crate::provider::Providers::validate(
                &crate::provider::vault::test_spec("https://vault.vault.svc:8200", "secret"),
                &crate::provider::policy::EndpointPolicy::with_vault(&["https://*.svc:*"]),
            )
            .unwrap()
            .config,
        }
    }

    fn who(ns: &str) -> PodIdentity {
        PodIdentity {
            namespace: ns.into(),
            service_account: "sa".into(),
        }
    }

    fn keys(n: usize) -> Vec<RemoteKey> {
        (0..n)
            .map(|i| RemoteKey {
                key: format!("k{i:03}"),
                version: None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_store_never_has_more_reads_in_flight_than_its_budget() {
        let inner = Arc::new(Counting::default());
        let budget = ReadBudget::new(4, Metrics::new());
        let limited = budget.wrap(inner.clone());
        let s = store(StoreKind::SecretStore, "vault");
        let many = keys(50);
        // Five pods of the same namespace at once, 50 keys each.
        let a = who("a");
        let fetches = (0..5).map(|_| limited.fetch(&a, &s, &many));
        for r in futures::future::join_all(fetches).await {
            let got = r.unwrap();
            assert_eq!(got.len(), 50, "every key answered, in order");
            let RemoteSecret::Blob(first) = &got[0] else {
                panic!()
            };
            assert_eq!(first.expose(), b"k000");
        }
        assert_eq!(inner.peak.load(Ordering::SeqCst), 4);
        assert_eq!(inner.calls.load(Ordering::SeqCst), 5 * 13, "chunks of 4");
    }

    #[tokio::test]
    async fn stores_have_separate_budgets_and_failures_stop_the_fetch() {
        let inner = Arc::new(Counting::default());
        let budget = ReadBudget::new(3, Metrics::new());
        let limited = budget.wrap(inner.clone());
        let ks = keys(3);
        // Same name in two namespaces, and a ClusterSecretStore: three stores.
        let a = store(StoreKind::SecretStore, "vault");
        let c = store(StoreKind::ClusterSecretStore, "vault");
        let (wa, wb) = (who("a"), who("b"));
        let (r1, r2, r3) = futures::join!(
            limited.fetch(&wa, &a, &ks),
            limited.fetch(&wb, &a, &ks),
            limited.fetch(&wa, &c, &ks),
        );
        assert!(r1.is_ok() && r2.is_ok() && r3.is_ok());
        assert_eq!(inner.peak.load(Ordering::SeqCst), 9, "3 stores × 3");
        assert_eq!(budget.stores().await, 3);

        let mut ks = keys(7);
        ks[4].key = "missing".into();
        let calls = inner.calls.load(Ordering::SeqCst);
        let e = limited.fetch(&wa, &a, &ks).await.unwrap_err();
        assert_eq!(e.key.as_deref(), Some("missing"));
        assert_eq!(
            inner.calls.load(Ordering::SeqCst) - calls,
            2,
            "the third chunk is never read"
        );
    }
}
