//! Per-namespace budget of cold admissions: a token bucket per namespace, taken only by an
//! admission that must read a secret backend (no current managed Secret). Warm admissions —
//! every pod of a rollout after the first — never touch it. So one tenant creating workloads
//! in a loop cannot exhaust Vault or AWS (or this webhook's review slots) for the others;
//! the denied pods are retried by their controllers.
//!
//! Buckets live in a bounded map: at most [`MAX_NAMESPACES`], and a bucket idle long enough
//! to have refilled completely is dropped (recreating it full is the same bucket).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::future::Cache;

/// Namespaces with a bucket at once; beyond it the least recently used bucket is dropped.
const MAX_NAMESPACES: u64 = 10_000;

/// `--cold-admissions-per-namespace` and `--cold-admissions-burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColdAdmissionLimit {
    /// Tokens added per second; 0 turns the limit off.
    pub per_second: f64,
    /// Bucket size: cold admissions a quiet namespace may make at once.
    pub burst: u32,
}

impl Default for ColdAdmissionLimit {
    fn default() -> Self {
        Self {
            per_second: 5.0,
            burst: 20,
        }
    }
}

impl ColdAdmissionLimit {
    fn enabled(&self) -> bool {
        self.per_second > 0.0
    }

    /// How long an untouched bucket takes to fill up from empty.
    fn refill_time(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.burst.max(1)) / self.per_second)
    }
}

/// A namespace over its cold-admission budget.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "namespace {namespace} exceeded {per_second} cold admissions per second (burst {burst}): \
     each pod without a current managed Secret reads the secret backend, and this limit keeps \
     one namespace from exhausting it for the others. The pod was not admitted; its controller \
     will retry shortly (a bare pod must be created again). Operators: \
     --cold-admissions-per-namespace and --cold-admissions-burst"
)]
pub struct NamespaceBusy {
    pub namespace: String,
    pub per_second: f64,
    pub burst: u32,
}

/// A token bucket.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(limit: &ColdAdmissionLimit, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(limit.burst),
            updated: now,
        }
    }

    /// Refill for the time since the last call, then take one token if there is one.
    fn take(&mut self, limit: &ColdAdmissionLimit, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.per_second).min(f64::from(limit.burst));
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The buckets of every namespace. Cheap to share behind the context.
pub struct ColdAdmissions {
    limit: ColdAdmissionLimit,
    buckets: Cache<String, Arc<Mutex<Bucket>>>,
}

impl ColdAdmissions {
    pub fn new(limit: ColdAdmissionLimit) -> Self {
        let idle = if limit.enabled() {
            limit.refill_time() + Duration::from_secs(1)
        } else {
            Duration::from_secs(1)
        };
        Self {
            limit,
            buckets: Cache::builder()
                .max_capacity(MAX_NAMESPACES)
                .time_to_idle(idle)
                .build(),
        }
    }

    /// Take one cold admission from `namespace`'s bucket.
    pub async fn admit(&self, namespace: &str) -> Result<(), NamespaceBusy> {
        self.admit_at(namespace, Instant::now()).await
    }

    async fn admit_at(&self, namespace: &str, now: Instant) -> Result<(), NamespaceBusy> {
        if !self.limit.enabled() {
            return Ok(());
        }
        let full = Bucket::full(&self.limit, now);
        let bucket = self
            .buckets
            .get_with_by_ref(namespace, async move { Arc::new(Mutex::new(full)) })
            .await;
        let taken = bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take(&self.limit, now);
        if taken {
            Ok(())
        } else {
            Err(NamespaceBusy {
                namespace: namespace.to_string(),
                per_second: self.limit.per_second,
                burst: self.limit.burst,
            })
        }
    }

    #[cfg(test)]
    async fn namespaces(&self) -> u64 {
        self.buckets.run_pending_tasks().await;
        self.buckets.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: f64, burst: u32) -> ColdAdmissionLimit {
        ColdAdmissionLimit { per_second, burst }
    }

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let l = limit(2.0, 3);
        let t0 = Instant::now();
        let mut b = Bucket::full(&l, t0);
        assert!(b.take(&l, t0) && b.take(&l, t0) && b.take(&l, t0));
        assert!(!b.take(&l, t0), "burst spent");
        assert!(!b.take(&l, t0 + Duration::from_millis(400)), "0.8 tokens");
        assert!(
            b.take(&l, t0 + Duration::from_millis(500)),
            "1 token at 2/s"
        );
        assert!(!b.take(&l, t0 + Duration::from_millis(600)));
        // A long pause refills to the burst, never beyond.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(b.take(&l, later));
        }
        assert!(!b.take(&l, later));
    }

    #[test]
    fn a_clock_going_backwards_adds_nothing() {
        let l = limit(1.0, 1);
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = Bucket::full(&l, t0);
        assert!(b.take(&l, t0));
        assert!(!b.take(&l, t0 - Duration::from_secs(5)));
    }

    #[tokio::test]
    async fn namespaces_have_their_own_buckets_and_the_denial_says_why() {
        let cold = ColdAdmissions::new(limit(5.0, 20));
        let now = Instant::now();
        for _ in 0..20 {
            cold.admit_at("noisy", now).await.unwrap();
        }
        let e = cold.admit_at("noisy", now).await.unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("namespace noisy exceeded 5 cold admissions per second (burst 20)"),
            "{m}"
        );
        assert!(m.contains("controller will retry"), "{m}");
        // Another tenant is untouched.
        for _ in 0..20 {
            cold.admit_at("quiet", now).await.unwrap();
        }
        // The noisy one gets one more every 200 ms.
        cold.admit_at("noisy", now + Duration::from_millis(200))
            .await
            .unwrap();
        assert!(cold
            .admit_at("noisy", now + Duration::from_millis(250))
            .await
            .is_err());
        assert_eq!(cold.namespaces().await, 2);
    }

    #[tokio::test]
    async fn zero_rate_turns_the_limit_off_and_keeps_no_state() {
        let cold = ColdAdmissions::new(limit(0.0, 1));
        for _ in 0..1000 {
            cold.admit("ns").await.unwrap();
        }
        assert_eq!(cold.namespaces().await, 0);
    }

    #[test]
    fn fractional_rates_read_naturally() {
        let e = NamespaceBusy {
            namespace: "a".into(),
            per_second: 0.5,
            burst: 2,
        };
        assert!(e
            .to_string()
            .contains("exceeded 0.5 cold admissions per second"));
    }
}
