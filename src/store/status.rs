//! Store status: the leader keeps `status.conditions[Ready]` of every SecretStore and
//! ClusterSecretStore current — `Valid`, `InvalidConfig` (the same validation the webhooks
//! use) or `Unreachable` (the provider's probe, which needs no identity: Vault `sys/health`,
//! an HTTPS request to the AWS endpoint). The probe runs only after the allowlist check passed, so status
//! checks cannot be used to reach addresses the operator has not allowed.
//!
//! The stores come from the shared watch-fed index (`crate::index`), not from watches of
//! their own: a pass runs when the index changes and every `--store-check-interval`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::Patch;
use kube::{Api, Client};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{
    validate_provider, validate_store, ClusterSecretStore, EndpointPolicy, SecretStore,
    SecretStoreStatus, StoreCondition,
};
use crate::provider::Providers;

pub const READY: &str = "Ready";
pub const REASON_VALID: &str = "Valid";
pub const REASON_INVALID: &str = "InvalidConfig";
pub const REASON_UNREACHABLE: &str = "Unreachable";

/// Every store as `(kind, object)`, from the shared index.
pub type StoreSnapshot = Arc<dyn Fn() -> Vec<(&'static str, Arc<Value>)> + Send + Sync>;

pub struct StatusContext {
    pub client: Client,
    pub endpoints: EndpointPolicy,
    pub interval: Duration,
    /// The stores as the shared watch-fed index has them (no watch of its own).
    pub stores: StoreSnapshot,
    /// Change signals of the index's store maps.
    pub changes: Vec<watch::Receiver<u64>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StatusError(String);

/// The Ready condition for a store object: (status, reason, message).
pub async fn evaluate(
    kind: &str,
    object: &Value,
    endpoints: &EndpointPolicy,
) -> (bool, &'static str, String) {
    let verdict = validate_store(kind, object, endpoints);
    if !verdict.errors.is_empty() {
        let detail: Vec<String> = verdict.errors.iter().map(ToString::to_string).collect();
        return (false, REASON_INVALID, detail.join("; "));
    }
    let provider = object
        .pointer("/spec/provider")
        .and_then(|p| serde_json::from_value(p.clone()).ok());
    let Some(Ok(validated)) = provider.map(|p| validate_provider(&p, endpoints)) else {
        return (
            false,
            REASON_INVALID,
            "spec.provider could not be read".into(),
        );
    };
    match Providers::probe(&validated.config).await {
        Ok(detail) if verdict.warnings.is_empty() => (true, REASON_VALID, detail),
        Ok(detail) => (
            true,
            REASON_VALID,
            format!("{detail}; warnings: {}", verdict.warnings.join("; ")),
        ),
        Err(detail) => (false, REASON_UNREACHABLE, detail),
    }
}

fn ready_condition(object: &Value) -> Option<StoreCondition> {
    let status: SecretStoreStatus = serde_json::from_value(object.get("status")?.clone()).ok()?;
    status.conditions.into_iter().find(|c| c.type_ == READY)
}

fn meta<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.pointer(&format!("/metadata/{field}"))?.as_str()
}

/// Evaluate one store and write its Ready condition when it changed; the resourceVersion of
/// the object afterwards.
async fn reconcile(
    kind: &'static str,
    object: &Value,
    ctx: &StatusContext,
) -> Result<Option<String>, StatusError> {
    let name = meta(object, "name").unwrap_or_default();
    let namespace = meta(object, "namespace");
    let (ready, reason, message) = evaluate(kind, object, &ctx.endpoints).await;
    let status = if ready { "True" } else { "False" };
    let previous = ready_condition(object);
    let unchanged = previous.as_ref().is_some_and(|p| {
        p.status == status
            && p.reason.as_deref() == Some(reason)
            && p.message.as_deref() == Some(message.as_str())
    });
    if unchanged {
        debug!(kind, name, reason, "store status unchanged");
        return Ok(meta(object, "resourceVersion").map(String::from));
    }
    let transition = match &previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => None,
    }
    .unwrap_or_else(|| Timestamp::now().to_string());
    let condition = StoreCondition {
        type_: READY.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.clone()),
        last_transition_time: Some(transition),
    };
    let patch = json!({"status": {"conditions": [condition]}});
    let params = crate::k8s::patch_params();
    let written = if kind == "ClusterSecretStore" {
        Api::<ClusterSecretStore>::all(ctx.client.clone())
            .patch_status(name, &params, &Patch::Merge(&patch))
            .await
            .map(|o| o.metadata.resource_version)
    } else {
        Api::<SecretStore>::namespaced(ctx.client.clone(), namespace.unwrap_or_default())
            .patch_status(name, &params, &Patch::Merge(&patch))
            .await
            .map(|o| o.metadata.resource_version)
    }
    .map_err(|e| StatusError(format!("updating status: {e}")))?;
    info!(
        kind,
        name,
        namespace = namespace.unwrap_or_default(),
        reason,
        "store status updated"
    );
    Ok(written)
}

/// One pass per change of the index or per `interval`: every store whose resourceVersion is
/// new to us, or whose last check is `interval` old, is evaluated. Both the version a check
/// read and the one our status write produced count as seen, so neither our own write nor a
/// snapshot taken before its watch event arrived triggers another probe.
async fn run_loop(ctx: Arc<StatusContext>) {
    type Key = (&'static str, String, String);
    struct Checked {
        read: Option<String>,
        written: Option<String>,
        at: Instant,
    }
    let mut checked: HashMap<Key, Checked> = HashMap::new();
    let mut changes = ctx.changes.clone();
    let tick = ctx.interval.min(Duration::from_secs(30));
    loop {
        let now = Instant::now();
        let mut seen = HashSet::new();
        for (kind, object) in (ctx.stores)() {
            let key: Key = (
                kind,
                meta(&object, "namespace").unwrap_or_default().to_string(),
                meta(&object, "name").unwrap_or_default().to_string(),
            );
            seen.insert(key.clone());
            let version = meta(&object, "resourceVersion").map(String::from);
            let due = checked.get(&key).is_none_or(|c| {
                (c.read != version && c.written != version)
                    || now.duration_since(c.at) >= ctx.interval
            });
            if !due {
                continue;
            }
            let written = match reconcile(kind, &object, &ctx).await {
                Ok(written) => written,
                Err(error) => {
                    warn!(%error, kind, name = %key.2, "store status reconcile failed");
                    None
                }
            };
            checked.insert(
                key,
                Checked {
                    read: version,
                    written,
                    at: now,
                },
            );
        }
        checked.retain(|k, _| seen.contains(k));
        let changed =
            futures::future::select_all(changes.iter_mut().map(|c| Box::pin(c.changed())));
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            (result, _, _) = changed => if result.is_err() { return },
        }
    }
}

/// Run the status loop whenever this replica leads, until shutdown.
pub async fn run(
    ctx: StatusContext,
    leading: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) {
    let ctx = Arc::new(ctx);
    crate::leader::run_while_leading("store status", leading, shutdown, || run_loop(ctx.clone()))
        .await;
}
