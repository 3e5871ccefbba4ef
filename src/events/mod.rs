//! Kubernetes Events (events.k8s.io/v1, as the refresher's) for what admission decided and
//! what the missed-injection detector found, on the owning workload.
//!
//! Admission never waits for an Event: [`Publisher`] hands an occurrence to a bounded
//! channel (full ⇒ dropped and counted in `secret_injector_events_dropped_total`) and a
//! background worker resolves the workload, aggregates (see [`aggregate`]) and writes. So a
//! crash-looping ReplicaSet that is denied a thousand times a minute costs the API server one
//! create and then one `series` patch per interval.
//!
//! Notes carry only what the denial message or a fixed text carries: names and references,
//! never values, tokens or digests.

pub mod aggregate;
pub mod detector;
mod worker;

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use tokio::sync::mpsc;

pub use aggregate::{Limits, Severity};

use crate::k8s::{Owner, WorkloadKind};
use crate::metrics::Metrics;
use crate::pod::{OwnerRefView, PodView};

/// A pod was patched (Normal), on its workload.
pub const REASON_INJECTED: &str = "Injected";
/// A pod was denied (Warning), with the denial message, on its workload.
pub const REASON_DENIED: &str = "InjectionDenied";
/// A pod in an opted-in namespace carries our annotations but was not injected.
pub const REASON_MISSED: &str = "InjectionMissed";
/// A pod carries our annotations in a namespace that is not opted in.
pub const REASON_NOT_OPTED_IN: &str = "NamespaceNotOptedIn";

/// `reportingController` of every Event we publish (the refresher's too).
pub const REPORTING_CONTROLLER: &str = "secret-injector";
/// The API server refuses an events.k8s.io/v1 `note` longer than this (bytes).
pub const NOTE_LIMIT: usize = 1024;

#[derive(Clone, Debug)]
pub struct EventsConfig {
    /// Publish admission Events (`--admission-events`); the detector's are published anyway.
    pub admission: bool,
    /// This replica's name (`reportingInstance`).
    pub instance: String,
    /// Occurrences waiting for the worker; beyond this they are dropped.
    pub queue: usize,
    pub limits: Limits,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            admission: true,
            instance: REPORTING_CONTROLLER.into(),
            queue: 1024,
            limits: Limits::default(),
        }
    }
}

/// What an Event is about, before the workload is known.
#[derive(Clone, Debug)]
pub enum Subject {
    /// Already resolved (admission knows the workload after a successful mutation).
    Reference(ObjectReference),
    /// A pod: the top of its controller chain is resolved by the worker (cached), and a bare
    /// pod is referenced itself.
    Pod(PodRef),
}

/// The pod metadata the worker needs.
#[derive(Clone, Debug)]
pub struct PodRef {
    pub namespace: String,
    /// The name, or `generateName` when the API server has not named it yet (admission).
    pub name: String,
    /// None at admission: the pod does not exist yet.
    pub uid: Option<String>,
    pub controller: Option<OwnerReference>,
}

impl PodRef {
    pub fn of(namespace: &str, pod: &PodView<'_>) -> PodRef {
        PodRef {
            namespace: namespace.to_string(),
            name: pod
                .name
                .as_deref()
                .filter(|n| !n.is_empty())
                .or(pod.generate_name.as_deref())
                .unwrap_or_default()
                .to_string(),
            uid: pod
                .uid
                .as_deref()
                .filter(|u| !u.is_empty())
                .map(str::to_string),
            controller: pod.controller().map(OwnerRefView::to_owned_ref),
        }
    }

    /// The pod itself as an Event's `regarding` (no uid before it exists).
    fn reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(self.namespace.clone()),
            name: Some(self.name.clone()),
            uid: self.uid.clone(),
            ..Default::default()
        }
    }
}

/// One occurrence on its way to the worker.
#[derive(Clone, Debug)]
pub struct Report {
    pub subject: Subject,
    pub severity: Severity,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

/// The sending side, cheap to clone, shared through the Context.
#[derive(Clone)]
pub struct Publisher {
    tx: Option<mpsc::Sender<Report>>,
    admission: bool,
    metrics: Metrics,
}

impl Publisher {
    /// Start the worker (needs a Tokio runtime).
    pub fn spawn(
        client: Client,
        owners: std::sync::Arc<crate::index::Owners>,
        metrics: Metrics,
        config: EventsConfig,
    ) -> Publisher {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let admission = config.admission;
        tokio::spawn(worker::run(client, owners, metrics.clone(), config, rx));
        Publisher {
            tx: Some(tx),
            admission,
            metrics,
        }
    }

    /// Publishes nothing.
    pub fn disabled(metrics: Metrics) -> Publisher {
        Publisher {
            tx: None,
            admission: false,
            metrics,
        }
    }

    /// Queue an occurrence; never waits. A full queue drops it (counted).
    pub fn publish(&self, report: Report) {
        let Some(tx) = &self.tx else { return };
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(report) {
            self.metrics.event_dropped("queue_full");
        }
    }

    /// `Injected` on the pod's workload (a bare pod: the pod, by name or generateName).
    pub fn injected(&self, namespace: &str, pod: &PodView<'_>, owner: &Owner, secrets: &[String]) {
        if !self.admission {
            return;
        }
        let subject = match owner.kind.known() {
            Some(WorkloadKind::Pod) => Subject::Pod(PodRef::of(namespace, pod)),
            _ => Subject::Reference(worker::reference(owner)),
        };
        self.publish(Report {
            subject,
            severity: Severity::Normal,
            reason: REASON_INJECTED,
            action: "Inject",
            note: format!("pod injected with managed Secret(s) {}", secrets.join(", ")),
        });
    }

    /// `InjectionDenied` with the denial message, on the pod's workload.
    pub fn denied(&self, namespace: &str, pod: &PodView<'_>, message: &str) {
        if !self.admission {
            return;
        }
        self.publish(Report {
            subject: Subject::Pod(PodRef::of(namespace, pod)),
            severity: Severity::Warning,
            reason: REASON_DENIED,
            action: "Inject",
            note: message.to_string(),
        });
    }
}

/// Cut a note to the API server's limit on a character boundary, marking the cut.
pub fn fit_note(note: &str) -> String {
    if note.len() <= NOTE_LIMIT {
        return note.to_string();
    }
    const MARK: &str = " …(truncated)";
    let head = crate::spec::truncate_utf8(note, NOTE_LIMIT - MARK.len());
    format!("{head}{MARK}")
}

/// How long the worker waits between looks at the aggregator.
pub(crate) const TICK: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_fit_the_api_limit_on_a_character_boundary() {
        let long = "é".repeat(800);
        let fitted = fit_note(&long);
        assert!(fitted.len() <= NOTE_LIMIT);
        assert!(fitted.ends_with("(truncated)"));
        assert_eq!(fit_note("short"), "short");
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_never_waits() {
        let metrics = Metrics::new();
        let (tx, _rx) = mpsc::channel(1);
        let publisher = Publisher {
            tx: Some(tx),
            admission: true,
            metrics: metrics.clone(),
        };
        let pod = PodView::default();
        for _ in 0..3 {
            publisher.denied("ns", &pod, "denied");
        }
        assert!(
            metrics
                .encode()
                .contains(r#"secret_injector_events_dropped_total{cause="queue_full"} 2"#),
            "{}",
            metrics.encode()
        );
        // Admission Events off: nothing is queued at all.
        let off = Publisher {
            admission: false,
            ..publisher
        };
        off.denied("ns", &pod, "denied");
        assert!(metrics
            .encode()
            .contains(r#"secret_injector_events_dropped_total{cause="queue_full"} 2"#));
    }

    #[test]
    fn a_pod_without_a_name_is_referenced_by_generate_name() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"generateName": "web-", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u", "controller": true}]}
        }))
        .unwrap();
        let r = PodRef::of("ns", &PodView::of(&pod));
        assert_eq!(r.name, "web-");
        assert_eq!(r.controller.as_ref().unwrap().name, "web-1");
        assert!(r.reference().uid.is_none());
    }
}
