//! Rolling a workload after its Secret changed: one pod-template annotation
//! (`secret-injector.io/restarted-at`) per workload per debounce window, however many of its
//! Secrets changed; fenced by the workload's resourceVersion. `rollout: none`, bare pods and
//! Jobs get an Event instead.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::Patch;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::spec::ANN_RESTARTED_AT;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    pub namespace: String,
    pub kind: String,
    pub name: String,
}

impl WorkloadKey {
    pub fn reference(&self) -> ObjectReference {
        let api_version = match self.kind.as_str() {
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => "apps/v1",
            "Job" | "CronJob" => "batch/v1",
            _ => "v1",
        };
        ObjectReference {
            api_version: Some(api_version.into()),
            kind: Some(self.kind.clone()),
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            ..Default::default()
        }
    }

    pub fn rollable(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "Deployment" | "StatefulSet" | "DaemonSet"
        )
    }
}

/// Pending rollouts, each firing once at the end of its debounce window.
#[derive(Default)]
pub struct Pending {
    due: HashMap<WorkloadKey, (Instant, BTreeSet<String>)>,
}

impl Pending {
    /// Note that `secret` of `workload` changed. Returns true when this opened a new window.
    pub fn note(&mut self, workload: WorkloadKey, secret: &str, debounce: Duration) -> bool {
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

    pub fn take_due(&mut self, now: Instant) -> Vec<(WorkloadKey, BTreeSet<String>)> {
        let keys: Vec<WorkloadKey> = self
            .due
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.due.remove(&k).map(|(_, secrets)| (k, secrets)))
            .collect()
    }

    pub fn is_pending(&self, workload: &WorkloadKey) -> bool {
        self.due.contains_key(workload)
    }
}

/// Patch the pod template so the workload controller starts a rollout.
pub async fn roll(
    client: &Client,
    workload: &WorkloadKey,
    metrics: &Metrics,
) -> Result<(), String> {
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    let result = match workload.kind.as_str() {
        "Deployment" => patch::<Deployment>(client, workload, &now).await,
        "StatefulSet" => patch::<StatefulSet>(client, workload, &now).await,
        "DaemonSet" => patch::<DaemonSet>(client, workload, &now).await,
        other => return Err(format!("{other} is not rolled")),
    };
    match result {
        Ok(()) => {
            metrics.rollout(match workload.kind.as_str() {
                "Deployment" => "deployment",
                "StatefulSet" => "statefulset",
                _ => "daemonset",
            });
            info!(namespace = %workload.namespace, kind = %workload.kind, name = %workload.name, "workload rolled");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn patch<K>(client: &Client, workload: &WorkloadKey, now: &str) -> Result<(), String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), &workload.namespace);
    // The workload's status changes all the time; a conflict means "read again", not "give up".
    for _ in 0..3 {
        let current = api.get(&workload.name).await.map_err(|e| {
            format!(
                "reading {}: {}",
                workload.kind,
                crate::api_error_message(&e)
            )
        })?;
        // The resourceVersion in a merge patch is a precondition: a concurrent change (or a
        // newer leader's rollout) makes this a 409 rather than a blind overwrite.
        let body = json!({
            "metadata": {"resourceVersion": current.meta().resource_version},
            "spec": {"template": {"metadata": {"annotations": {ANN_RESTARTED_AT: now}}}}
        });
        match api
            .patch(
                &workload.name,
                &crate::managed::patch_params(),
                &Patch::Merge(&body),
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => {
                return Err(format!(
                    "patching {}: {}",
                    workload.kind,
                    crate::api_error_message(&e)
                ))
            }
        }
    }
    Err(format!(
        "patching {}: it kept changing concurrently (3 conflicts)",
        workload.kind
    ))
}

/// Publish an Event on the workload. Notes carry names and scrubbed causes only.
pub async fn event(
    recorder: &Recorder,
    workload: &WorkloadKey,
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
    if let Err(e) = recorder.publish(&ev, &workload.reference()).await {
        warn!(error = %e, reason, "publishing an Event failed");
    }
}
