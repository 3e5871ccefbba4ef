//! The background side of [`super::Publisher`]: resolve each occurrence's workload, feed the
//! aggregator, perform the writes it hands out. Runs for the life of the process on every
//! replica (admissions happen everywhere); the detector feeds it on the leader.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch};
use kube::Client;
use moka::future::Cache;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::warn;

use super::aggregate::{Aggregator, Occurrence, OccurrenceWrite, Outcome, Write};
use super::{fit_note, EventsConfig, PodRef, Report, Subject, REPORTING_CONTROLLER, TICK};
use crate::k8s::{api_error_message, is_status, Owner};
use crate::metrics::Metrics;

pub(super) async fn run(
    client: Client,
    owners: std::sync::Arc<crate::index::Owners>,
    metrics: Metrics,
    config: EventsConfig,
    mut rx: mpsc::Receiver<Report>,
) {
    let mut worker = Worker {
        resolver: Resolver::new(owners, metrics.clone()),
        aggregator: Aggregator::new(config.limits.clone(), Instant::now()),
        instance: crate::spec::truncate_utf8(&config.instance, 128).to_string(),
        client,
        metrics,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            report = rx.recv() => match report {
                Some(report) => worker.take(report).await,
                // Every Publisher is gone: the process is stopping.
                None => return,
            },
            _ = tick.tick() => {
                for write in worker.aggregator.due(Instant::now()) {
                    worker.perform(write).await;
                }
            }
        }
    }
}

struct Worker {
    client: Client,
    metrics: Metrics,
    resolver: Resolver,
    aggregator: Aggregator,
    instance: String,
}

impl Worker {
    async fn take(&mut self, report: Report) {
        let regarding = match report.subject {
            Subject::Reference(r) => r,
            Subject::Pod(pod) => self.resolver.resolve(&pod).await,
        };
        let occurrence = Occurrence {
            regarding,
            severity: report.severity,
            reason: report.reason,
            action: report.action,
            note: fit_note(&report.note),
        };
        match self
            .aggregator
            .observe(occurrence, Instant::now(), Timestamp::now())
        {
            Ok(Some(write)) => self.perform(write).await,
            Ok(None) => {}
            Err(_) => self.metrics.event_dropped("aggregator_full"),
        }
    }

    async fn perform(&mut self, write: Write) {
        match write {
            Write::Create { key, occurrence } => {
                let count = occurrence.count;
                let namespace = occurrence.regarding.namespace.clone().unwrap_or_default();
                let event = self.event(&occurrence);
                let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
                let outcome = match api.create(&crate::k8s::post_params(), &event).await {
                    Ok(created) => {
                        self.metrics.event_write("create", "ok");
                        Outcome::Created(created.metadata.name.unwrap_or_default())
                    }
                    Err(e) => {
                        self.metrics.event_write("create", "error");
                        warn!(error = %api_error_message(&e), reason = occurrence.reason, "publishing an Event failed");
                        Outcome::Failed
                    }
                };
                self.aggregator.finished(&key, count, outcome);
            }
            Write::Patch {
                key,
                namespace,
                name,
                count,
                last_observed,
            } => {
                let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
                let body = json!({"series": {"count": count, "lastObservedTime": MicroTime(last_observed)}});
                let outcome = match api
                    .patch(&name, &crate::k8s::patch_params(), &Patch::Merge(&body))
                    .await
                {
                    Ok(_) => {
                        self.metrics.event_write("patch", "ok");
                        Outcome::Patched
                    }
                    Err(e) if is_status(&e, 404) => {
                        self.metrics.event_write("patch", "error");
                        Outcome::Gone
                    }
                    Err(e) => {
                        self.metrics.event_write("patch", "error");
                        warn!(error = %api_error_message(&e), "updating an Event's count failed");
                        Outcome::Failed
                    }
                };
                self.aggregator.finished(&key, count, outcome);
            }
        }
    }

    fn event(&self, o: &OccurrenceWrite) -> Event {
        let now = Timestamp::now();
        Event {
            metadata: ObjectMeta {
                name: Some(event_name(&o.regarding, now)),
                namespace: o.regarding.namespace.clone(),
                ..Default::default()
            },
            event_time: Some(MicroTime(o.first_observed)),
            series: (o.count > 1).then_some(EventSeries {
                count: o.count as i32,
                last_observed_time: MicroTime(o.last_observed),
            }),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            action: Some(o.action.into()),
            reason: Some(o.reason.into()),
            regarding: Some(o.regarding.clone()),
            note: Some(o.note.clone()),
            type_: Some(o.severity.as_str().into()),
            ..Default::default()
        }
    }
}

/// `<object name>.<hex nanoseconds>`, as client-go names Events, kept a valid DNS subdomain
/// (a `generateName` prefix ends in `-`).
fn event_name(regarding: &ObjectReference, now: Timestamp) -> String {
    let base = regarding.name.as_deref().unwrap_or(REPORTING_CONTROLLER);
    let base = crate::spec::truncate_utf8(base, 200).trim_end_matches(['-', '.']);
    let base = if base.is_empty() {
        REPORTING_CONTROLLER
    } else {
        base
    };
    format!("{base}.{:x}", now.as_nanosecond())
}

/// Pod → the top of its controller chain, cached by controller uid: one resolution per
/// ReplicaSet/Job/…, however many of its pods are reported. When the chain cannot be read
/// the pod's own controller is referenced.
struct Resolver {
    owners: std::sync::Arc<crate::index::Owners>,
    metrics: Metrics,
    cache: Cache<String, ObjectReference>,
}

impl Resolver {
    fn new(owners: std::sync::Arc<crate::index::Owners>, metrics: Metrics) -> Self {
        Self {
            owners,
            metrics,
            cache: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
        }
    }

    async fn resolve(&self, pod: &PodRef) -> ObjectReference {
        let Some(controller) = &pod.controller else {
            return pod.reference();
        };
        let key = format!("{}/{}", pod.namespace, controller.uid);
        if let Some(r) = self.cache.get(&key).await {
            return r;
        }
        let meta_only = Pod {
            metadata: ObjectMeta {
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                owner_references: Some(vec![controller.clone()]),
                ..Default::default()
            },
            ..Default::default()
        };
        let owner = match crate::workload::resolve(
            &self.owners,
            &pod.namespace,
            &crate::pod::PodView::of(&meta_only),
            std::time::Duration::ZERO,
            &self.metrics,
        )
        .await
        {
            Ok(w) => w.owner,
            Err(_) => Owner::from_reference(&pod.namespace, controller),
        };
        let r = reference(&owner);
        self.cache.insert(key, r.clone()).await;
        r
    }
}

/// An owner as an Event's `regarding`, with its uid when known (so `kubectl describe`
/// lists the Event).
pub(super) fn reference(owner: &Owner) -> ObjectReference {
    ObjectReference {
        uid: owner.uid.clone(),
        ..owner.object_reference()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_dns_subdomains_even_for_generate_name_prefixes() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let of = |name: &str| {
            event_name(
                &ObjectReference {
                    name: Some(name.into()),
                    ..Default::default()
                },
                now,
            )
        };
        assert_eq!(of("web-"), format!("web.{:x}", now.as_nanosecond()));
        assert!(of("payments-api").starts_with("payments-api."));
        assert!(of("-").starts_with("secret-injector."));
        assert!(of(&"a".repeat(300)).len() < 253);
    }
}
