//! Rolling a workload after its Secret changed: one pod-template annotation
//! (`secret-injector.io/restarted-at`) per workload per debounce window, however many of its
//! Secrets changed; fenced by the workload's resourceVersion. `rollout: none`, bare pods and
//! Jobs get an Event instead.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::Client;
use serde_json::json;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::k8s::{api_error_message, is_status, Owner, WorkloadKind};
use crate::metrics::Metrics;
use crate::spec::ANN_RESTARTED_AT;

/// Why a workload could not be restarted.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("{0} is not rolled")]
    NotRollable(String),
    #[error("reading {kind}: {}", api_error_message(.source))]
    Read {
        kind: WorkloadKind,
        #[source]
        source: kube::Error,
    },
    #[error("reading {0}: it no longer exists")]
    Gone(WorkloadKind),
    #[error("patching {kind}: {}", api_error_message(.source))]
    Patch {
        kind: WorkloadKind,
        #[source]
        source: kube::Error,
    },
    #[error("patching {0}: it kept changing concurrently (3 conflicts)")]
    Contended(WorkloadKind),
}

/// Pending rollouts, each firing once at the end of its debounce window.
#[derive(Default)]
pub struct Pending {
    due: HashMap<Owner, (Instant, BTreeSet<String>)>,
}

impl Pending {
    /// Note that `secret` of `workload` changed. Returns true when this opened a new window.
    pub fn note(&mut self, workload: Owner, secret: &str, debounce: Duration) -> bool {
        let mut opened = false;
        let entry = self.due.entry(workload).or_insert_with(|| {
            opened = true;
            (Instant::now() + debounce, BTreeSet::new())
        });
        entry.1.insert(secret.to_string());
        opened
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.due.values().map(|(at, _)| *at).min()
    }

    pub fn take_due(&mut self, now: Instant) -> Vec<(Owner, BTreeSet<String>)> {
        let keys: Vec<Owner> = self
            .due
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.due.remove(&k).map(|(_, secrets)| (k, secrets)))
            .collect()
    }

    pub fn is_pending(&self, workload: &Owner) -> bool {
        self.due.contains_key(workload)
    }
}

/// Patch the pod template so the workload controller starts a rollout.
pub async fn roll(
    client: &Client,
    workload: &Owner,
    metrics: &Metrics,
) -> Result<(), RolloutError> {
    let kind = workload
        .kind
        .known()
        .filter(|k| k.rollable())
        .ok_or_else(|| RolloutError::NotRollable(workload.kind.as_str().to_string()))?;
    let now = Timestamp::now().to_string();
    // The workload's status changes all the time; a conflict means "read again", not "give up".
    for _ in 0..3 {
        let current = kind
            .get_meta(client, &workload.namespace, &workload.name)
            .await
            .map_err(|source| RolloutError::Read { kind, source })?
            .ok_or(RolloutError::Gone(kind))?;
        // The resourceVersion in a merge patch is a precondition: a concurrent change (or a
        // newer leader's rollout) makes this a 409 rather than a blind overwrite.
        let body = json!({
            "metadata": {"resourceVersion": current.resource_version},
            "spec": {"template": {"metadata": {"annotations": {ANN_RESTARTED_AT: now}}}}
        });
        match kind
            .merge_patch(client, &workload.namespace, &workload.name, &body)
            .await
        {
            Ok(()) => {
                metrics.rollout(kind.metric_label());
                info!(namespace = %workload.namespace, kind = %kind, name = %workload.name, "workload rolled");
                return Ok(());
            }
            Err(e) if is_status(&e, 409) => continue,
            Err(source) => return Err(RolloutError::Patch { kind, source }),
        }
    }
    Err(RolloutError::Contended(kind))
}

/// Publish an Event on the workload. Notes carry names and scrubbed causes only.
pub async fn event(
    recorder: &Recorder,
    workload: &Owner,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &workload.object_reference()).await {
        warn!(error = %e, reason, "publishing an Event failed");
    }
}
