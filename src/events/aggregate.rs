//! The aggregator: pure bookkeeping that turns a stream of occurrences into a bounded number
//! of Event writes. The first occurrence of a key is written at once (a create); repeats only
//! raise a count, written as the Event's `series` at most once per interval per key; every
//! write spends a token from one global bucket. Time is passed in, so tests drive it.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;

/// Severity, as the Event's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    Normal,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Normal => "Normal",
            Severity::Warning => "Warning",
        }
    }
}

/// One thing that happened to one object, ready to be recorded.
#[derive(Clone, Debug)]
pub struct Occurrence {
    pub regarding: ObjectReference,
    pub severity: Severity,
    pub reason: &'static str,
    pub action: &'static str,
    /// Already cut to the API server's limit.
    pub note: String,
}

/// Occurrences with the same key are one Event (events.k8s.io makes `note` immutable, so a
/// different message is a different Event).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    namespace: String,
    kind: String,
    name: String,
    uid: String,
    reason: &'static str,
    note_hash: u64,
}

impl Key {
    pub fn of(o: &Occurrence) -> Key {
        let mut h = DefaultHasher::new();
        o.note.hash(&mut h);
        o.severity.hash(&mut h);
        let r = &o.regarding;
        Key {
            namespace: r.namespace.clone().unwrap_or_default(),
            kind: r.kind.clone().unwrap_or_default(),
            name: r.name.clone().unwrap_or_default(),
            uid: r.uid.clone().unwrap_or_default(),
            reason: o.reason,
            note_hash: h.finish(),
        }
    }
}

/// Limits of the aggregator.
#[derive(Clone, Debug)]
pub struct Limits {
    /// At most one write per key per interval (the first occurrence is written at once).
    pub interval: Duration,
    /// Global write budget: tokens per second and bucket size.
    pub rate_per_sec: f64,
    pub burst: f64,
    /// Keys tracked at most; a new key beyond that is dropped unless a quiet one can go.
    pub max_keys: usize,
    /// A key with nothing left to write is forgotten after this much quiet (a later
    /// occurrence starts a new Event).
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            rate_per_sec: 5.0,
            burst: 25.0,
            max_keys: 4096,
            idle: Duration::from_secs(600),
        }
    }
}

/// A write for the worker to perform.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// A new Event; `count` > 1 when occurrences piled up before it could be written.
    Create {
        key: Key,
        occurrence: Box<OccurrenceWrite>,
    },
    /// Raise the series of an Event already written.
    Patch {
        key: Key,
        namespace: String,
        name: String,
        count: u32,
        last_observed: Timestamp,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct OccurrenceWrite {
    pub regarding: ObjectReference,
    pub severity: Severity,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
    pub count: u32,
    pub first_observed: Timestamp,
    pub last_observed: Timestamp,
}

struct Entry {
    occurrence: Occurrence,
    /// The Event's name once created.
    event: Option<String>,
    count: u32,
    written: u32,
    first_observed: Timestamp,
    last_observed: Timestamp,
    last_write: Option<Instant>,
    last_seen: Instant,
    /// A write is in flight (not handed out again until it reports back).
    in_flight: bool,
}

impl Entry {
    fn pending(&self) -> bool {
        self.count > self.written
    }
}

/// What became of a write.
pub enum Outcome {
    Created(String),
    Patched,
    /// The Event is gone (expired on the server): the next write creates a new one.
    Gone,
    /// Any other failure: tried again at the next interval.
    Failed,
}

pub struct Aggregator {
    limits: Limits,
    entries: HashMap<Key, Entry>,
    tokens: f64,
    refilled: Instant,
}

/// Why an occurrence was not taken.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl Aggregator {
    pub fn new(limits: Limits, now: Instant) -> Self {
        Self {
            tokens: limits.burst,
            limits,
            entries: HashMap::new(),
            refilled: now,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Note an occurrence. Returns the create to perform when it is the first of its key and
    /// the budget allows; otherwise the count waits for [`Aggregator::due`].
    pub fn observe(
        &mut self,
        occurrence: Occurrence,
        now: Instant,
        wall: Timestamp,
    ) -> Result<Option<Write>, Full> {
        let key = Key::of(&occurrence);
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.count = entry.count.saturating_add(1);
            entry.last_observed = wall;
            entry.last_seen = now;
            return Ok(None);
        }
        if self.entries.len() >= self.limits.max_keys && !self.evict_one(now) {
            return Err(Full);
        }
        self.entries.insert(
            key.clone(),
            Entry {
                occurrence,
                event: None,
                count: 1,
                written: 0,
                first_observed: wall,
                last_observed: wall,
                last_write: None,
                last_seen: now,
                in_flight: false,
            },
        );
        Ok(self.take_token(now).then(|| self.write_for(&key, now)))
    }

    /// Writes whose interval has passed, as far as the budget allows; forgets quiet keys.
    pub fn due(&mut self, now: Instant) -> Vec<Write> {
        let idle = self.limits.idle;
        self.entries
            .retain(|_, e| e.in_flight || e.pending() || now.duration_since(e.last_seen) < idle);
        let interval = self.limits.interval;
        let mut ready: Vec<(Instant, Key)> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                !e.in_flight
                    && e.pending()
                    && e.last_write
                        .is_none_or(|t| now.duration_since(t) >= interval)
            })
            .map(|(k, e)| (e.last_write.unwrap_or(e.last_seen), k.clone()))
            .collect();
        // Oldest first, so a busy key cannot starve the others.
        ready.sort_by_key(|(t, _)| *t);
        let mut writes = Vec::new();
        for (_, key) in ready {
            if !self.take_token(now) {
                break;
            }
            writes.push(self.write_for(&key, now));
        }
        writes
    }

    /// Report how a write went.
    pub fn finished(&mut self, key: &Key, written_count: u32, outcome: Outcome) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        entry.in_flight = false;
        match outcome {
            Outcome::Created(name) => {
                entry.event = Some(name);
                entry.written = written_count;
            }
            Outcome::Patched => entry.written = written_count,
            Outcome::Gone => {
                entry.event = None;
                entry.written = 0;
            }
            Outcome::Failed => {}
        }
    }

    fn write_for(&mut self, key: &Key, now: Instant) -> Write {
        let entry = self.entries.get_mut(key).expect("key present");
        entry.in_flight = true;
        entry.last_write = Some(now);
        match &entry.event {
            Some(name) => Write::Patch {
                key: key.clone(),
                namespace: entry
                    .occurrence
                    .regarding
                    .namespace
                    .clone()
                    .unwrap_or_default(),
                name: name.clone(),
                count: entry.count,
                last_observed: entry.last_observed,
            },
            None => Write::Create {
                key: key.clone(),
                occurrence: Box::new(OccurrenceWrite {
                    regarding: entry.occurrence.regarding.clone(),
                    severity: entry.occurrence.severity,
                    reason: entry.occurrence.reason,
                    action: entry.occurrence.action,
                    note: entry.occurrence.note.clone(),
                    count: entry.count,
                    first_observed: entry.first_observed,
                    last_observed: entry.last_observed,
                }),
            },
        }
    }

    fn take_token(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * self.limits.rate_per_sec).min(self.limits.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Make room by forgetting the quietest key that has nothing left to write.
    fn evict_one(&mut self, _now: Instant) -> bool {
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| !e.in_flight && !e.pending())
            .min_by_key(|(_, e)| e.last_seen)
            .map(|(k, _)| k.clone());
        match victim {
            Some(k) => {
                self.entries.remove(&k);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occurrence(name: &str, note: &str) -> Occurrence {
        Occurrence {
            regarding: ObjectReference {
                kind: Some("ReplicaSet".into()),
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            severity: Severity::Warning,
            reason: "InjectionDenied",
            action: "Inject",
            note: note.into(),
        }
    }

    fn created(agg: &mut Aggregator, w: Write) {
        match w {
            Write::Create { key, occurrence } => {
                agg.finished(&key, occurrence.count, Outcome::Created("e1".into()))
            }
            Write::Patch { key, count, .. } => agg.finished(&key, count, Outcome::Patched),
        }
    }

    #[test]
    fn a_burst_is_one_create_then_one_patch_per_interval() {
        let t0 = Instant::now();
        let wall = Timestamp::now();
        let mut agg = Aggregator::new(Limits::default(), t0);
        let first = agg
            .observe(occurrence("rs", "denied: x"), t0, wall)
            .unwrap()
            .expect("first occurrence is written at once");
        created(&mut agg, first);
        for _ in 0..99 {
            assert_eq!(
                agg.observe(occurrence("rs", "denied: x"), t0, wall),
                Ok(None)
            );
        }
        assert!(
            agg.due(t0 + Duration::from_secs(10)).is_empty(),
            "within the interval"
        );
        let writes = agg.due(t0 + Duration::from_secs(61));
        assert_eq!(writes.len(), 1);
        assert!(matches!(&writes[0], Write::Patch { count: 100, name, .. } if name == "e1"));
        created(&mut agg, writes[0].clone());
        assert!(agg.due(t0 + Duration::from_secs(200)).is_empty());
        // Quiet long enough: forgotten.
        agg.due(t0 + Duration::from_secs(2000));
        assert!(agg.is_empty());
    }

    #[test]
    fn another_message_is_another_event_and_the_budget_caps_creates() {
        let t0 = Instant::now();
        let wall = Timestamp::now();
        let limits = Limits {
            burst: 3.0,
            rate_per_sec: 1.0,
            ..Limits::default()
        };
        let mut agg = Aggregator::new(limits, t0);
        let mut creates = 0;
        for i in 0..10 {
            if let Some(w) = agg
                .observe(occurrence("rs", &format!("m{i}")), t0, wall)
                .unwrap()
            {
                created(&mut agg, w);
                creates += 1;
            }
        }
        assert_eq!(creates, 3, "the bucket holds 3");
        assert_eq!(agg.len(), 10);
        // Two seconds later, two more tokens: the oldest waiting keys get them.
        assert_eq!(agg.due(t0 + Duration::from_secs(2)).len(), 2);
    }

    #[test]
    fn the_map_is_bounded() {
        let t0 = Instant::now();
        let wall = Timestamp::now();
        let limits = Limits {
            max_keys: 2,
            ..Limits::default()
        };
        let mut agg = Aggregator::new(limits, t0);
        for name in ["a", "b"] {
            let w = agg
                .observe(occurrence(name, "m"), t0, wall)
                .unwrap()
                .unwrap();
            created(&mut agg, w);
        }
        // Both have counts still to write: nothing can go.
        agg.observe(occurrence("a", "m"), t0, wall).unwrap();
        agg.observe(occurrence("b", "m"), t0, wall).unwrap();
        assert_eq!(agg.observe(occurrence("c", "m"), t0, wall), Err(Full));
        // Once written and quiet, the quietest makes room.
        for w in agg.due(t0 + Duration::from_secs(61)) {
            created(&mut agg, w);
        }
        assert!(agg.observe(occurrence("c", "m"), t0, wall).is_ok());
        assert_eq!(agg.len(), 2);
    }
}
