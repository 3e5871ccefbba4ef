//! The missed-injection detector (leader only). Two metadata-only watches — Namespaces, and
//! Pods that have not finished (`status.phase!=Succeeded,status.phase!=Failed`) — and once per
//! period a judgement of the pods that carry our annotations but not
//! `secret-injector.io/status: injected`:
//!
//! * in an opted-in namespace ⇒ `InjectionMissed` (the webhook was bypassed: failurePolicy
//!   Ignore while it was unreachable, a selector or matchCondition that skipped the pod, a
//!   pod created before the namespace was labelled);
//! * elsewhere ⇒ `NamespaceNotOptedIn` (the workload asks for injection, the namespace does
//!   not have `secret-injector.io/inject=enabled`).
//!
//! A pod appears in a watch only after admission answered (the API server persists it after
//! the webhooks ran), so a pod the watch shows is never "in flight"; still, each pod is
//! judged at the first tick after it was seen, against the namespace state of that tick.
//!
//! Pod-template annotations are not in any workload's metadata, so the pods (which carry
//! them) stand for their workload: a workload with no pods has not missed anything yet.
//! One Warning Event per workload and pod-template revision (the controller's uid plus the
//! `pod-template-hash`/`controller-revision-hash` label), or per bare pod, on the top of the
//! owner chain; the same key is never reported twice while remembered (bounded).

use std::sync::Arc;

use crate::index::Owners;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use moka::future::Cache;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{PodRef, Publisher, Report, Severity, Subject, REASON_MISSED, REASON_NOT_OPTED_IN};
use crate::metrics::Metrics;
use crate::spec::{self, ANN_INJECT, ANN_STATUS};

/// The opt-in label (the MutatingWebhookConfiguration's namespaceSelector).
pub const OPT_IN_LABEL: &str = "secret-injector.io/inject";
pub const OPT_IN_VALUE: &str = "enabled";
/// Pods carrying these labels are grouped per template revision.
const REVISION_LABELS: [&str; 2] = ["pod-template-hash", "controller-revision-hash"];
/// Pods waiting for judgement, and keys remembered as reported.
const MAX_PENDING: usize = 10_000;
const MAX_REPORTED: usize = 10_000;

#[derive(Clone, Debug)]
pub struct DetectorConfig {
    /// How often seen pods are judged; zero turns the detector off.
    pub period: Duration,
    /// Never judged: the webhook's own namespace, kube-system, kube-node-lease.
    pub excluded_namespaces: Vec<String>,
}

/// Run the detector while this replica leads.
pub async fn run(
    client: Client,
    index_owners: Arc<Owners>,
    publisher: Publisher,
    metrics: Metrics,
    config: DetectorConfig,
    leading: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) {
    if config.period.is_zero() {
        info!("missed-injection detector off (--missed-injection-check-interval 0)");
        return;
    }
    crate::leader::run_while_leading("missed-injection detector", leading, shutdown, || {
        Detector::new(
            client.clone(),
            index_owners.clone(),
            publisher.clone(),
            metrics.clone(),
            config.clone(),
        )
        .run()
    })
    .await;
}

/// A pod seen without injection, waiting for the next tick.
struct Candidate {
    pod: PodRef,
    revision: Option<String>,
    /// The pod sets `secret-injector.io/inject` itself (it then wins over its workload's).
    sets_inject: bool,
}

/// What the owner chain says, once per controller.
#[derive(Clone)]
struct Resolved {
    regarding: ObjectReference,
    opted_out: bool,
}

struct Detector {
    client: Client,
    /// The owner index: owner chains come from it, never from a GET.
    index_owners: Arc<Owners>,
    owners: Cache<String, Resolved>,
    publisher: Publisher,
    metrics: Metrics,
    config: DetectorConfig,
    /// Opted-in namespaces (None until the first list completed).
    opted_in: Option<HashSet<String>>,
    relisting: Option<HashSet<String>>,
    pending: BTreeMap<String, Candidate>,
    reported: HashSet<(&'static str, String)>,
    reported_order: VecDeque<(&'static str, String)>,
}

impl Detector {
    fn new(
        client: Client,
        index_owners: Arc<Owners>,
        publisher: Publisher,
        metrics: Metrics,
        config: DetectorConfig,
    ) -> Self {
        Self {
            client,
            index_owners,
            owners: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            publisher,
            metrics,
            config,
            opted_in: None,
            relisting: None,
            pending: BTreeMap::new(),
            reported: HashSet::new(),
            reported_order: VecDeque::new(),
        }
    }

    async fn run(mut self) {
        let client = self.client.clone();
        let namespaces = watch_meta(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default(),
        );
        let pods = watch_meta(
            Api::<PartialObjectMeta<Pod>>::all(client),
            watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed"),
        );
        let (mut namespaces, mut pods) = (namespaces, pods);
        let mut tick = tokio::time::interval(self.config.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                Some(e) = namespaces.next() => self.on_namespace(e),
                Some(e) = pods.next() => self.on_pod(e),
                _ = tick.tick() => self.judge().await,
            }
        }
    }

    fn on_namespace(&mut self, event: Event<PartialObjectMeta<Namespace>>) {
        let opted_in = |m: &ObjectMeta| {
            m.labels
                .as_ref()
                .and_then(|l| l.get(OPT_IN_LABEL))
                .map(String::as_str)
                == Some(OPT_IN_VALUE)
        };
        let name = |m: &ObjectMeta| m.name.clone().unwrap_or_default();
        match event {
            Event::Init => self.relisting = Some(HashSet::new()),
            Event::InitApply(ns) => {
                if let Some(set) = &mut self.relisting {
                    if opted_in(&ns.metadata) {
                        set.insert(name(&ns.metadata));
                    }
                }
            }
            Event::InitDone => self.opted_in = self.relisting.take(),
            Event::Apply(ns) => {
                let set = self.opted_in.get_or_insert_with(HashSet::new);
                if opted_in(&ns.metadata) {
                    set.insert(name(&ns.metadata));
                } else {
                    set.remove(&name(&ns.metadata));
                }
            }
            Event::Delete(ns) => {
                if let Some(set) = &mut self.opted_in {
                    set.remove(&name(&ns.metadata));
                }
            }
        }
    }

    fn on_pod(&mut self, event: Event<PartialObjectMeta<Pod>>) {
        let (meta, present) = match event {
            Event::Apply(p) | Event::InitApply(p) => (p.metadata, true),
            Event::Delete(p) => (p.metadata, false),
            Event::Init | Event::InitDone => return,
        };
        let Some(uid) = meta.uid.clone() else { return };
        if !present || !missed(&meta) {
            self.pending.remove(&uid);
            return;
        }
        let namespace = meta.namespace.clone().unwrap_or_default();
        if self.config.excluded_namespaces.contains(&namespace) {
            return;
        }
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&uid) {
            return;
        }
        let pod = Pod {
            metadata: meta,
            ..Default::default()
        };
        let sets_inject = pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANN_INJECT));
        let revision = REVISION_LABELS.iter().find_map(|l| {
            pod.metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(*l).cloned())
        });
        self.pending.insert(
            uid,
            Candidate {
                pod: PodRef::of(&namespace, &crate::pod::PodView::of(&pod)),
                revision,
                sets_inject,
            },
        );
    }

    /// Report every waiting pod whose workload revision was not reported yet.
    async fn judge(&mut self) {
        // Without a complete namespace list nothing can be judged.
        let Some(opted_in) = self.opted_in.clone() else {
            return;
        };
        let pending = std::mem::take(&mut self.pending);
        let mut reports = Vec::new();
        for (uid, c) in pending {
            let in_opted_in = opted_in.contains(&c.pod.namespace);
            let reason = if in_opted_in {
                REASON_MISSED
            } else {
                REASON_NOT_OPTED_IN
            };
            let key = match (&c.pod.controller, &c.revision) {
                (Some(r), Some(rev)) => format!("{}/{}/{rev}", c.pod.namespace, r.uid),
                (Some(r), None) => format!("{}/{}", c.pod.namespace, r.uid),
                (None, _) => format!("{}/{uid}", c.pod.namespace),
            };
            if self.reported.contains(&(reason, key.clone())) {
                continue;
            }
            // `inject: "false"` on the workload's own metadata opts its pods out too.
            let resolved = self.resolve(&c.pod).await;
            if resolved.as_ref().is_some_and(|r| r.opted_out) && !c.sets_inject {
                continue;
            }
            self.reported.insert((reason, key.clone()));
            self.reported_order.push_back((reason, key));
            if self.reported_order.len() > MAX_REPORTED {
                if let Some(old) = self.reported_order.pop_front() {
                    self.reported.remove(&old);
                }
            }
            self.metrics.missed_injection(reason);
            let note = if in_opted_in {
                format!(
                    "pod {} carries secret-injector.io annotations but was not injected (no {ANN_STATUS}: injected): the webhook did not mutate it — check the webhook configuration (namespaceSelector, objectSelector, matchConditions), failurePolicy and whether the webhook was reachable when the pod was created; restart the workload once fixed",
                    c.pod.name
                )
            } else {
                format!(
                    "pod {} carries secret-injector.io annotations, but namespace {} is not labelled {OPT_IN_LABEL}={OPT_IN_VALUE}, so nothing is injected",
                    c.pod.name, c.pod.namespace
                )
            };
            warn!(namespace = %c.pod.namespace, pod = %c.pod.name, reason, "missed injection");
            reports.push(Report {
                subject: match resolved {
                    Some(r) => Subject::Reference(r.regarding),
                    None => Subject::Pod(c.pod),
                },
                severity: Severity::Warning,
                reason,
                action: "Detect",
                note,
            });
        }
        for r in reports {
            self.publisher.publish(r);
        }
    }
}

impl Detector {
    /// The top of a pod's owner chain and whether the chain opts out, cached per controller;
    /// None for a bare pod or when the chain cannot be read (the worker then falls back).
    async fn resolve(&self, pod: &PodRef) -> Option<Resolved> {
        let controller = pod.controller.as_ref()?;
        let key = format!("{}/{}", pod.namespace, controller.uid);
        if let Some(r) = self.owners.get(&key).await {
            return Some(r);
        }
        let meta_only = Pod {
            metadata: ObjectMeta {
                name: Some(pod.name.clone()),
                owner_references: Some(vec![controller.clone()]),
                ..Default::default()
            },
            ..Default::default()
        };
        let workload = crate::workload::resolve(
            &self.index_owners,
            &pod.namespace,
            &crate::pod::PodView::of(&meta_only),
            Duration::ZERO,
            &self.metrics,
        )
        .await
        .ok()?;
        let r = Resolved {
            regarding: super::worker::reference(&workload.owner),
            opted_out: workload.annotations.get(ANN_INJECT).map(|v| v.trim()) == Some("false"),
        };
        self.owners.insert(key, r.clone()).await;
        Some(r)
    }
}

/// Our annotations (asking for something, not opted out) without the injected status.
fn missed(meta: &ObjectMeta) -> bool {
    let empty = BTreeMap::new();
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    spec::wants_injection(annotations)
        && annotations.get(ANN_STATUS).map(String::as_str) != Some("injected")
}

/// A metadata-only watch (`Api<PartialObjectMeta<K>>` asks for PartialObjectMetadata).
fn watch_meta<K>(
    api: Api<PartialObjectMeta<K>>,
    config: watcher::Config,
) -> impl Stream<Item = Event<PartialObjectMeta<K>>> + Send + Unpin + 'static
where
    K: kube::Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Clone + Eq + std::hash::Hash + Send + Sync,
{
    watcher::watcher(api, config)
        .default_backoff()
        .filter_map(|e| async move {
            match e {
                Ok(e) => Some(e),
                Err(err) => {
                    warn!(error = %err, "missed-injection detector watch error; retrying");
                    None
                }
            }
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(annotations: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(serde_json::json!({"name": "p", "annotations": annotations}))
            .unwrap()
    }

    #[test]
    fn only_pods_that_ask_for_injection_and_lack_the_status_are_candidates() {
        let ours =
            serde_json::json!({"secret-injector.io/store": "s", "secret-injector.io/env.A": "k#p"});
        assert!(missed(&meta(ours.clone())));
        let mut injected = ours.clone();
        injected["secret-injector.io/status"] = "injected".into();
        assert!(!missed(&meta(injected)));
        let mut opted_out = ours;
        opted_out["secret-injector.io/inject"] = "false".into();
        assert!(!missed(&meta(opted_out)));
        // Only our output keys, or nothing of ours: asks for nothing.
        assert!(!missed(&meta(
            serde_json::json!({"secret-injector.io/secrets": "x", "team": "a"})
        )));
        assert!(!missed(&ObjectMeta::default()));
    }
}
