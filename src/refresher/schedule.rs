//! When each managed Secret is refreshed. Pure functions of time and randomness so the spread
//! and backoff properties are tested directly.
//!
//! - First refresh after the refresher starts (or first sees a Secret): uniformly random within
//!   one interval, so a restart never lines every Secret up (ESO#4231-style herds).
//! - After a success: one interval later, plus up to 5% jitter (never sooner).
//! - After a failure: the interval doubled per consecutive failure (×1, ×2, ×4) with 0–25%
//!   jitter, capped at max(interval, min(4×interval, 15 min)). Retries are never sooner than the
//!   normal schedule, so an outage cannot raise the backend call rate above normal.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

pub fn first_delay(interval: Duration, rng: &mut impl Rng) -> Duration {
    interval.mul_f64(rng.random::<f64>())
}

pub fn next_delay(interval: Duration, rng: &mut impl Rng) -> Duration {
    interval.mul_f64(1.0 + rng.random_range(0.0..0.05))
}

pub fn backoff_delay(
    interval: Duration,
    consecutive_failures: u32,
    rng: &mut impl Rng,
) -> Duration {
    let factor = 1u32 << consecutive_failures.saturating_sub(1).min(2);
    let cap = interval.max((interval * 4).min(Duration::from_secs(15 * 60)));
    (interval * factor)
        .mul_f64(1.0 + rng.random_range(0.0..0.25))
        .min(cap.mul_f64(1.25))
        .max(interval)
}

/// A min-heap of due times with lazy invalidation: rescheduling bumps a sequence number and
/// stale heap entries are skipped when popped.
pub struct DueQueue<K> {
    heap: BinaryHeap<Reverse<(Instant, u64, K)>>,
    current: HashMap<K, u64>,
    seq: u64,
}

impl<K: Clone + Eq + Hash + Ord> Default for DueQueue<K> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            current: HashMap::new(),
            seq: 0,
        }
    }
}

impl<K: Clone + Eq + Hash + Ord> DueQueue<K> {
    pub fn schedule(&mut self, key: K, at: Instant) {
        self.seq += 1;
        self.current.insert(key.clone(), self.seq);
        self.heap.push(Reverse((at, self.seq, key)));
    }

    pub fn remove(&mut self, key: &K) {
        self.current.remove(key);
    }

    pub fn is_scheduled(&self, key: &K) -> bool {
        self.current.contains_key(key)
    }

    fn drop_stale(&mut self) {
        while let Some(Reverse((_, seq, key))) = self.heap.peek() {
            if self.current.get(key) == Some(seq) {
                break;
            }
            self.heap.pop();
        }
    }

    pub fn next_due(&mut self) -> Option<Instant> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Remove and return every key due at or before `now`, with its due time.
    pub fn pop_due(&mut self, now: Instant) -> Vec<(K, Instant)> {
        let mut out = Vec::new();
        loop {
            self.drop_stale();
            match self.heap.peek() {
                Some(Reverse((at, _, _))) if *at <= now => {
                    let Reverse((at, _, key)) = self.heap.pop().expect("peeked");
                    self.current.remove(&key);
                    out.push((key, at));
                }
                _ => return out,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_thousand_secrets_spread_across_the_interval() {
        // 1,000 Secrets all seen at the same instant (a refresher restart), 60 s interval:
        // no 1-second window may hold more than 3× the mean.
        for seed in 0..20u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let interval = Duration::from_secs(60);
            let mut per_second = [0u32; 60];
            for _ in 0..1000 {
                let d = first_delay(interval, &mut rng);
                per_second[d.as_secs() as usize] += 1;
            }
            let mean = 1000.0 / 60.0;
            let max = *per_second.iter().max().unwrap();
            assert!(
                f64::from(max) <= 3.0 * mean,
                "seed {seed}: max {max} per second vs mean {mean:.1}"
            );
            // And it is a spread, not a pile-up at one end.
            assert!(
                per_second[..30].iter().sum::<u32>() > 350
                    && per_second[30..].iter().sum::<u32>() > 350
            );
        }
    }

    #[test]
    fn steady_state_never_refreshes_early() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let d = next_delay(Duration::from_secs(60), &mut rng);
            assert!(d >= Duration::from_secs(60) && d <= Duration::from_secs(63));
        }
    }

    #[test]
    fn backoff_never_exceeds_the_normal_call_rate_and_is_capped() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let interval = Duration::from_secs(60);
        let delays: Vec<Duration> = (1..=8)
            .map(|n| backoff_delay(interval, n, &mut rng))
            .collect();
        for d in &delays {
            assert!(
                *d >= interval,
                "a retry sooner than the schedule raises the call rate: {d:?}"
            );
            assert!(*d <= Duration::from_secs(300), "capped: {d:?}");
        }
        assert!(delays[2] >= Duration::from_secs(240), "grows: {delays:?}");
        // Long intervals: never beyond 1.25× the interval.
        let hour = Duration::from_secs(3600);
        assert!(backoff_delay(hour, 5, &mut rng) <= hour.mul_f64(1.25));
    }

    #[test]
    fn due_queue_reschedules_and_pops_in_order() {
        let t0 = Instant::now();
        let mut q = DueQueue::default();
        q.schedule("a", t0 + Duration::from_secs(5));
        q.schedule("b", t0 + Duration::from_secs(1));
        q.schedule("a", t0 + Duration::from_secs(2)); // reschedule wins
        assert_eq!(q.len(), 2);
        assert_eq!(q.next_due(), Some(t0 + Duration::from_secs(1)));
        let due: Vec<_> = q
            .pop_due(t0 + Duration::from_secs(3))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(due, ["b", "a"]);
        assert!(q.is_empty());
        assert_eq!(q.next_due(), None, "the stale entry for a at +5s is gone");
        q.schedule("c", t0);
        q.remove(&"c");
        assert!(q.pop_due(t0 + Duration::from_secs(10)).is_empty());
    }
}
