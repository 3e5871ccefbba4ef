//! The refresher: keeps every managed Secret current on its workload's refreshInterval and
//! rolls the workload when a value changes. Runs on the Lease holder only.
//!
//! Its work list is the managed Secrets themselves, as the context's one metadata-only watch
//! ([`crate::index::ManagedIndex`], shared with admission) reports them: the annotations
//! ([`crate::managed::Recorded`]) record the source, ServiceAccount, interval and owner, and
//! the keyed digest says whether a fetched value differs — so no Secret data is held in
//! memory and nothing polls the API. An entry of the work list holds the index's own record
//! of its Secret (shared, not copied), parsed again for each refresh.

pub mod adopt;
pub mod lease;
pub mod refresh;
pub mod rollout;
pub mod schedule;
pub mod tracked;
mod workloads;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use kube::runtime::events::{EventType, Recorder, Reporter};
use rand::SeedableRng;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::context::Context;
use crate::index::{Change, ObjKey};
use crate::k8s::{Owner, WorkloadKind};
use crate::managed::ManagedMeta;
use crate::spec::Rollout;
use refresh::{Outcome, RefreshError, Refreshed, Tracked};
use rollout::Pending;
use schedule::DueQueue;
use tracked::{held, Entry};
use workloads::{WorkloadEvent, WorkloadKey, Workloads};

#[derive(Clone, Debug)]
pub struct RefresherConfig {
    /// Refreshes in flight at once.
    pub concurrency: usize,
    /// Changes to a workload's Secrets within this window cause one rollout.
    pub rollout_debounce: Duration,
    /// A bare pod's Secret is kept this long after its pod is gone (pods being created).
    pub orphan_grace: Duration,
    /// This replica's name in Events.
    pub identity: String,
    /// The operator's floor for refresh intervals (also applied to Secrets recorded earlier).
    pub min_interval: Duration,
}

/// How soon a bare pod's Secret is looked at again while its pod has not adopted it.
const ADOPTION_RETRY: Duration = Duration::from_secs(2);

/// A managed Secret in the work list: `(namespace, name)`, shared with the index.
type Key = ObjKey;

/// The workload a tracked Secret belongs to, without its uid (what rollouts key on).
fn owner_of(t: &Tracked) -> Owner {
    t.record.owner.workload()
}

/// Run whenever this replica leads, until shutdown.
pub async fn run(
    ctx: Arc<Context>,
    config: RefresherConfig,
    leading: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) {
    crate::leader::run_while_leading("refresher", leading, shutdown, || {
        Refresher::new(ctx.clone(), config.clone()).run()
    })
    .await;
}

struct Refresher {
    ctx: Arc<Context>,
    config: RefresherConfig,
    recorder: Recorder,
    entries: HashMap<Key, Entry>,
    queue: DueQueue<Key>,
    pending: Pending,
    /// Last seen `force-sync` annotation of each workload owning a tracked Secret (only).
    workloads: Workloads,
    /// Leases held by the tracked Secrets (the sum over the entries).
    leases: usize,
    /// Keys seen during a watcher (re)list, to drop the ones that disappeared meanwhile.
    relisting: Option<HashSet<Key>>,
    rng: rand::rngs::StdRng,
    semaphore: Arc<Semaphore>,
    results_tx: mpsc::UnboundedSender<(Key, Outcome)>,
    results_rx: mpsc::UnboundedReceiver<(Key, Outcome)>,
}

impl Refresher {
    fn new(ctx: Arc<Context>, config: RefresherConfig) -> Self {
        let recorder = Recorder::new(
            ctx.client().clone(),
            Reporter {
                controller: "secret-injector".into(),
                instance: Some(config.identity.clone()),
            },
        );
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        Self {
            semaphore: Arc::new(Semaphore::new(config.concurrency.max(1))),
            ctx,
            config,
            recorder,
            entries: HashMap::new(),
            queue: DueQueue::default(),
            pending: Pending::default(),
            workloads: Workloads::default(),
            leases: 0,
            relisting: None,
            rng: rand::rngs::StdRng::from_os_rng(),
            results_tx,
            results_rx,
        }
    }

    async fn run(mut self) {
        // The managed Secrets come from the context's one watch (metadata only: the refresher
        // never holds Secret data in memory).
        let mut secrets = self.ctx.managed_index().events();
        let client = self.ctx.client().clone();
        // The workload watches start once the Secrets' snapshot is in, so their initial list
        // meets the owners it concerns and sets their force-sync baselines.
        let mut workloads = stream::SelectAll::new();
        loop {
            if workloads.is_empty() && self.relisting.is_none() && !self.entries.is_empty() {
                for kind in WorkloadKind::ROLLABLE {
                    workloads.push(workloads::stream(kind, &client));
                }
            }
            let next = [self.queue.next_due(), self.pending.next_due()]
                .into_iter()
                .flatten()
                .min();
            let sleep_until = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                event = secrets.next() => match event {
                    Some(e) => self.on_secret_event(e),
                    None => return,
                },
                Some(event) = workloads.next() => self.on_workload_event(event),
                Some((key, outcome)) = self.results_rx.recv() => self.on_outcome(key, outcome).await,
                _ = tokio::time::sleep_until(sleep_until) => {
                    self.start_due_refreshes();
                    self.fire_due_rollouts().await;
                }
            }
            self.ctx.metrics().managed_secrets(self.entries.len());
            self.ctx.metrics().leases_held(self.leases);
            self.ctx.metrics().tracked_workloads(self.workloads.len());
        }
    }

    fn on_secret_event(&mut self, change: Change<ManagedMeta>) {
        match change {
            Change::Relist => self.relisting = Some(HashSet::new()),
            Change::Applied(key, meta) => {
                if let Some(seen) = self.relisting.as_mut() {
                    seen.insert(key.clone());
                }
                self.upsert(key, meta);
            }
            Change::Listed => {
                if let Some(seen) = self.relisting.take() {
                    let gone: Vec<Key> = self
                        .entries
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for k in gone {
                        self.forget(&k);
                    }
                }
            }
            Change::Removed(key) => {
                self.on_issued_deleted(&key);
                self.forget(&key);
            }
        }
    }

    fn forget(&mut self, key: &Key) {
        if let Some(entry) = self.entries.remove(key) {
            self.workloads.secret_removed(&entry.owner);
            self.leases -= held(entry.leases);
        }
        self.queue.remove(key);
    }

    /// Track a new version of the Secret `meta` (or a new Secret); true when it was tracked
    /// before, with the force-sync request it recorded then.
    fn track(
        &mut self,
        key: &Key,
        meta: Arc<ManagedMeta>,
        tracked: &Tracked,
    ) -> (bool, Option<String>) {
        let owner = WorkloadKey::of(&key.namespace, &tracked.record.owner);
        let Some(entry) = self.entries.get_mut(key) else {
            let owner = self.workloads.secret_added(owner);
            let entry = Entry::new(meta, tracked, owner);
            self.leases += held(entry.leases);
            self.entries.insert(key.clone(), entry);
            return (false, None);
        };
        if *entry.owner != owner {
            self.workloads.secret_removed(&entry.owner);
            entry.owner = self.workloads.secret_added(owner);
        }
        let force_sync = entry.meta.force_sync().map(str::to_string);
        self.leases -= held(entry.leases);
        entry.meta = meta;
        entry.written = None;
        entry.note(tracked);
        self.leases += held(entry.leases);
        (true, force_sync)
    }

    fn upsert(&mut self, key: Key, meta: Arc<ManagedMeta>) {
        let tracked = match Tracked::from_index(&key, &meta) {
            Ok(t) => t,
            Err(e) => {
                warn!(namespace = %key.namespace, name = %key.name, error = %e, "managed Secret has unusable annotations; not refreshed");
                self.forget(&key);
                return;
            }
        };
        let now = Instant::now();
        if tracked.record.source.is_issued() {
            self.upsert_issued(key, meta, tracked);
            return;
        }
        let interval_before = self.entries.get(&key).map(|e| e.interval);
        let (known, force_sync_before) = self.track(&key, meta, &tracked);
        if !known {
            // refreshInterval 0 means "fetch once": never scheduled (force-sync still works),
            // except that a bare pod's Secret is looked at until its pod adopts it.
            if adopt::needs_adoption(&tracked) {
                self.queue.schedule(key, now + ADOPTION_RETRY);
            } else if !tracked.record.refresh_interval.is_zero() {
                let delay = schedule::first_delay(
                    tracked
                        .record
                        .refresh_interval
                        .max(self.config.min_interval),
                    &mut self.rng,
                );
                self.queue.schedule(key, now + delay);
            }
            return;
        }
        let forced = tracked.force_sync.is_some() && tracked.force_sync != force_sync_before;
        let interval_changed = interval_before != Some(tracked.record.refresh_interval);
        let entry = self.entries.get_mut(&key).expect("tracked above");
        if entry.running {
            entry.rerun |= forced;
            return;
        }
        if adopt::needs_adoption(&tracked) && !self.queue.is_scheduled(&key) {
            self.queue.schedule(key, now + ADOPTION_RETRY);
        } else if tracked.record.refresh_interval.is_zero() {
            if forced {
                self.queue.schedule(key, now);
            } else {
                self.queue.remove(&key);
            }
        } else if forced {
            debug!(namespace = %key.namespace, name = %key.name, "force-sync requested on the Secret");
            self.queue.schedule(key, now);
        } else if interval_changed || !self.queue.is_scheduled(&key) {
            let delay = schedule::first_delay(
                tracked
                    .record
                    .refresh_interval
                    .max(self.config.min_interval),
                &mut self.rng,
            );
            self.queue.schedule(key, now + delay);
        }
    }

    fn on_workload_event(&mut self, event: WorkloadEvent) {
        if let WorkloadEvent::Deleted { key } = &event {
            // Its Secrets are checked now: orphans go, their leases revoked.
            let now = Instant::now();
            let due: Vec<Key> = self
                .entries
                .iter()
                .filter(|(_, e)| !e.running && *e.owner == *key)
                .map(|(k, _)| k.clone())
                .collect();
            for k in due {
                self.queue.schedule(k, now);
            }
        }
        let Some(key) = self.workloads.on_event(event) else {
            return;
        };
        info!(namespace = %key.namespace, kind = %key.kind(), name = %key.name, "force-sync requested on the workload");
        let now = Instant::now();
        let mut due = Vec::new();
        for (k, e) in self.entries.iter_mut().filter(|(_, e)| *e.owner == key) {
            e.force_reissue |= e.issued;
            if e.running {
                e.rerun = true;
            } else {
                due.push(k.clone());
            }
        }
        for k in due {
            self.queue.schedule(k, now);
        }
    }

    fn start_due_refreshes(&mut self) {
        let now = Instant::now();
        for (key, due) in self.queue.pop_due(now) {
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            if entry.running {
                continue;
            }
            // Parsed when it was tracked: the same record parses again.
            let Some(mut tracked) = entry.tracked(&key) else {
                continue;
            };
            entry.running = true;
            self.ctx
                .metrics()
                .refresh_lag(now.saturating_duration_since(due).as_secs_f64());
            tracked.force_reissue = std::mem::take(&mut entry.force_reissue);
            let ctx = self.ctx.clone();
            let semaphore = self.semaphore.clone();
            let tx = self.results_tx.clone();
            let grace = self.config.orphan_grace;
            tokio::spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                // Boxed once it may run: a refresh's future takes kilobytes, and a task
                // waiting for its permit (a backlog of thousands at startup) holds only this.
                let outcome = Box::pin(refresh::refresh(&ctx, &tracked, grace)).await;
                let _ = tx.send((key, outcome));
            });
        }
    }

    async fn on_outcome(&mut self, key: Key, outcome: Outcome) {
        let now = Instant::now();
        self.ctx.metrics().refresh(match &outcome {
            Ok(done) => done.label(),
            Err(e) => e.label(),
        });
        // The watch may already have reported the Secret gone (e.g. the orphan we deleted).
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        entry.running = false;
        let rerun = std::mem::take(&mut entry.rerun);
        // refreshInterval 0 ("fetch once") stays 0; anything else respects the operator's floor.
        let interval = if entry.interval.is_zero() {
            Duration::ZERO
        } else {
            entry.interval.max(self.config.min_interval)
        };
        let Some(tracked) = entry.tracked(&key) else {
            return;
        };
        match outcome {
            Ok(Refreshed::Unchanged) => {
                entry.failures = 0;
            }
            Ok(Refreshed::Updated(resource_version)) => {
                entry.failures = 0;
                // Our own write: the next refresh is fenced on the version we produced.
                entry.written = Some(resource_version.unwrap_or_default().into());
                self.on_changed(&key, &tracked).await;
            }
            Ok(Refreshed::Adopted(resource_version)) => {
                entry.failures = 0;
                entry.written = Some(resource_version.unwrap_or_default().into());
                info!(namespace = %key.namespace, name = %key.name, "bare pod's Secret adopted by its pod");
            }
            Ok(Refreshed::AwaitingPod) => {
                self.queue.schedule(key, now + ADOPTION_RETRY);
                return;
            }
            Ok(Refreshed::Lease {
                action,
                version,
                due,
            }) => {
                entry.failures = 0;
                if let Some(v) = version {
                    entry.written = Some(v.into());
                }
                let at = if rerun { now } else { lease::instant_of(due) };
                self.queue.schedule(key.clone(), at);
                if action == refresh::LeaseAction::Reissued {
                    self.on_changed(&key, &tracked).await;
                }
                return;
            }
            Ok(Refreshed::Orphaned) => {
                info!(namespace = %key.namespace, name = %key.name, owner = %tracked.record.owner, "owner gone: managed Secret deleted");
                self.forget(&key);
                return;
            }
            Err(RefreshError::Superseded) => {
                // The watch brings the newer version; look again shortly, fenced on it.
                self.queue.schedule(key, now + Duration::from_secs(1));
                return;
            }
            Err(reason) if reason.is_skip() => {
                warn!(namespace = %key.namespace, name = %key.name, %reason, "managed Secret not refreshed");
                self.forget(&key);
                return;
            }
            Err(error) if tracked.record.source.is_issued() => {
                entry.failures += 1;
                let failures = entry.failures;
                let (delay, reason, note) =
                    lease::lease_failure(&tracked, failures, &error, &mut self.rng);
                warn!(namespace = %key.namespace, name = %key.name, failures, retry_in_s = delay.as_secs_f32(), %error, "lease renewal or re-issue failed; the current credentials are kept while valid");
                self.queue.schedule(key.clone(), now + delay);
                rollout::event(
                    &self.recorder,
                    &owner_of(&tracked),
                    EventType::Warning,
                    reason,
                    "Refresh",
                    note,
                )
                .await;
                return;
            }
            Err(error) => {
                entry.failures += 1;
                let failures = entry.failures;
                let note = if interval.is_zero() {
                    // "Fetch once": a failed force-sync is reported, not retried forever.
                    warn!(namespace = %key.namespace, name = %key.name, %error, "force-sync failed; the Secret keeps its last good value");
                    format!(
                        "force-sync of Secret {} failed; it keeps its last good value: {error}",
                        tracked.name
                    )
                } else {
                    let delay = schedule::backoff_delay(
                        interval.max(Duration::from_secs(1)),
                        failures,
                        &mut self.rng,
                    );
                    warn!(namespace = %key.namespace, name = %key.name, failures, retry_in_s = delay.as_secs_f32(), %error, "refresh failed; the Secret keeps its last good value");
                    self.queue.schedule(key.clone(), now + delay);
                    format!(
                        "refreshing Secret {} failed (attempt {failures}, next in {}s); it keeps its last good value: {error}",
                        tracked.name,
                        delay.as_secs()
                    )
                };
                rollout::event(
                    &self.recorder,
                    &owner_of(&tracked),
                    EventType::Warning,
                    "RefreshFailed",
                    "Refresh",
                    note,
                )
                .await;
                return;
            }
        }
        if rerun {
            self.queue.schedule(key, now);
        } else if !interval.is_zero() {
            let delay = schedule::next_delay(interval, &mut self.rng);
            self.queue.schedule(key, now + delay);
        }
    }

    /// A Secret's values changed: roll its workload once per debounce window, and check its
    /// sibling Secrets right away so changes made together roll together.
    async fn on_changed(&mut self, key: &Key, tracked: &Tracked) {
        let owner = owner_of(tracked);
        let workload = WorkloadKey::of(&key.namespace, &owner);
        if tracked.record.rollout == Rollout::Restart && owner.rollable() {
            if self
                .pending
                .note(owner.clone(), &tracked.name, self.config.rollout_debounce)
            {
                let now = Instant::now();
                let siblings: Vec<Key> = self
                    .entries
                    .iter()
                    .filter(|(k, e)| !e.running && *e.owner == workload && k.name != key.name)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in siblings {
                    self.queue.schedule(k, now);
                }
            }
        } else {
            let why = if tracked.record.rollout == Rollout::None {
                "rollout: none".to_string()
            } else {
                format!("a {} is not rolled", tracked.record.owner.kind.as_str())
            };
            rollout::event(
                &self.recorder,
                &owner,
                EventType::Normal,
                "SecretUpdated",
                "Refresh",
                format!(
                    "managed Secret {} has new values; {why}, so running pods keep the old values until they restart",
                    tracked.name
                ),
            )
            .await;
        }
    }

    async fn fire_due_rollouts(&mut self) {
        for (workload, secrets) in self.pending.take_due(Instant::now()) {
            let names: Vec<String> = secrets.into_iter().collect();
            match rollout::roll(self.ctx.client(), &workload, self.ctx.metrics()).await {
                Ok(()) => {
                    rollout::event(
                        &self.recorder,
                        &workload,
                        EventType::Normal,
                        "RolledOut",
                        "Rollout",
                        format!(
                            "restarted because managed Secret(s) {} changed",
                            names.join(", ")
                        ),
                    )
                    .await
                }
                Err(e) => {
                    warn!(namespace = %workload.namespace, kind = %workload.kind.as_str(), name = %workload.name, error = %e, "rollout failed");
                    rollout::event(
                        &self.recorder,
                        &workload,
                        EventType::Warning,
                        "RolloutFailed",
                        "Rollout",
                        format!(
                            "could not restart after Secret(s) {} changed: {e}",
                            names.join(", ")
                        ),
                    )
                    .await
                }
            }
        }
    }
}
