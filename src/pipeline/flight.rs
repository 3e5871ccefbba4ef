//! In-flight-only single-flight: concurrent callers with the same key share one run of the
//! work and its result; nothing is kept once it has finished, so the next caller runs it again.
//! Admission uses it for the whole cold half of a workload (look, read, write), so a burst of
//! pods of one new Deployment makes one Secret GET, one read and one create, not one each.

use std::hash::Hash;
use std::sync::Arc;

use moka::future::Cache;

pub struct Flights<K> {
    running: Cache<K, ()>,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Default for Flights<K> {
    fn default() -> Self {
        Self {
            running: Cache::builder().max_capacity(100_000).build(),
        }
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Flights<K> {
    /// Run `work` unless a flight with `key` is running; then wait for that one's result.
    /// A failure is shared with the waiters of that flight and never kept.
    pub async fn run<E: Send + Sync + 'static>(
        &self,
        key: K,
        work: impl std::future::Future<Output = Result<(), E>>,
    ) -> Result<(), Arc<E>> {
        let mut ran = false;
        let result = self
            .running
            .try_get_with(key.clone(), async {
                ran = true;
                work.await
            })
            .await;
        if ran {
            // Done: the next admission looks again (the index will have the write by then).
            self.running.invalidate(&key).await;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_run_and_later_callers_run_again() {
        let flights: Flights<&'static str> = Flights::default();
        let runs = AtomicUsize::new(0);
        let work = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<(), String>(())
        };
        let results = futures::future::join_all((0..20).map(|_| flights.run("k", work()))).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        flights.run("k", work()).await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failure_reaches_every_waiter_and_is_not_kept() {
        let flights: Flights<u8> = Flights::default();
        let failing = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err::<(), _>("backend down".to_string())
        };
        let waiting = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            flights.run(1, async { Ok::<(), String>(()) }).await
        };
        let (a, b) = tokio::join!(flights.run(1, failing), waiting);
        assert_eq!(a.unwrap_err().as_str(), "backend down");
        assert_eq!(b.unwrap_err().as_str(), "backend down");
        assert!(flights.run(1, async { Ok::<(), String>(()) }).await.is_ok());
    }
}
