//! Store status: the leader keeps `status.conditions[Ready]` of every SecretStore and
//! ClusterSecretStore current — `Valid`, `InvalidConfig` (the same validation the webhooks
//! use) or `Unreachable` (the provider's probe, which needs no identity: Vault `sys/health`,
//! an HTTPS request to the AWS endpoint). The probe runs only after the allowlist check passed, so status
//! checks cannot be used to reach addresses the operator has not allowed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::Patch;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::watch;
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

pub struct StatusContext {
    pub client: Client,
    pub endpoints: EndpointPolicy,
    pub interval: Duration,
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

fn ready_condition<K>(obj: &K) -> Option<StoreCondition>
where
    K: Resource + serde::Serialize,
{
    let value = serde_json::to_value(obj).ok()?;
    let status: SecretStoreStatus = serde_json::from_value(value.get("status")?.clone()).ok()?;
    status.conditions.into_iter().find(|c| c.type_ == READY)
}

/// The two store kinds differ only in scope.
trait StoreObject:
    Resource<DynamicType = ()>
    + Clone
    + DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    fn api_for(client: Client, namespace: Option<&str>) -> Api<Self>;
}

impl StoreObject for SecretStore {
    fn api_for(client: Client, namespace: Option<&str>) -> Api<Self> {
        Api::namespaced(client, namespace.unwrap_or_default())
    }
}

impl StoreObject for ClusterSecretStore {
    fn api_for(client: Client, _: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
}

async fn reconcile<K: StoreObject>(
    obj: Arc<K>,
    ctx: Arc<StatusContext>,
) -> Result<Action, StatusError> {
    let kind = K::kind(&()).to_string();
    let value = serde_json::to_value(obj.as_ref()).map_err(|e| StatusError(e.to_string()))?;
    let (ready, reason, message) = evaluate(&kind, &value, &ctx.endpoints).await;
    let status = if ready { "True" } else { "False" };
    let previous = ready_condition(obj.as_ref());
    let unchanged = previous.as_ref().is_some_and(|p| {
        p.status == status
            && p.reason.as_deref() == Some(reason)
            && p.message.as_deref() == Some(message.as_str())
    });
    if !unchanged {
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
        let api = K::api_for(ctx.client.clone(), obj.namespace().as_deref());
        let patch = json!({"status": {"conditions": [condition]}});
        api.patch_status(
            &obj.name_any(),
            &crate::k8s::patch_params(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| StatusError(format!("updating status: {e}")))?;
        info!(kind = %kind, name = %obj.name_any(), namespace = obj.namespace().unwrap_or_default(), reason, "store status updated");
    } else {
        debug!(kind = %kind, name = %obj.name_any(), reason, "store status unchanged");
    }
    Ok(Action::requeue(ctx.interval))
}

fn error_policy<K>(_obj: Arc<K>, error: &StatusError, ctx: Arc<StatusContext>) -> Action {
    warn!(error = %error, "store status reconcile failed");
    Action::requeue(ctx.interval.min(Duration::from_secs(30)))
}

async fn run_controllers(ctx: Arc<StatusContext>) {
    // No selector on purpose: every SecretStore and ClusterSecretStore is ours (our CRDs) and
    // each needs its Ready condition, so a selector could only hide stores from their status.
    // The reflector's memory is bounded by the number of store objects, which the validating
    // webhook admits and a ResourceQuota (`count/secretstores.secret-injector.io`) can cap per
    // namespace (docs/security.md, "Budgets").
    let namespaced = Controller::new(
        Api::<SecretStore>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .run(
        reconcile::<SecretStore>,
        error_policy::<SecretStore>,
        ctx.clone(),
    )
    .for_each(|_| async {});
    let cluster = Controller::new(
        Api::<ClusterSecretStore>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .run(
        reconcile::<ClusterSecretStore>,
        error_policy::<ClusterSecretStore>,
        ctx.clone(),
    )
    .for_each(|_| async {});
    futures::join!(namespaced, cluster);
}

/// Run the status controllers whenever this replica leads, until shutdown.
pub async fn run(
    ctx: StatusContext,
    leading: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) {
    let ctx = Arc::new(ctx);
    crate::leader::run_while_leading("store status", leading, shutdown, || {
        run_controllers(ctx.clone())
    })
    .await;
}
