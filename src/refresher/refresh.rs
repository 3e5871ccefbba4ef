//! Refreshing one managed Secret: the same store resolution, identity and fetch as admission,
//! as the Secret's recorded ServiceAccount; a write only when the keyed digest differs, fenced
//! by resourceVersion. A failure never touches the Secret: the last good bytes stay.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, Client};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::admission::Injector;
use crate::identity::PodIdentity;
use crate::managed::{
    ANN_DATA_HMAC, ANN_LAST_SYNC, ANN_OWNER, ANN_REFRESH_INTERVAL, ANN_ROLLOUT,
    ANN_SERVICE_ACCOUNT, ANN_SOURCE, LABEL_MANAGED_BY, MANAGED_BY,
};
use crate::redact::SecretBytes;
use crate::spec::{parse_duration, Rollout, SourceSpec, ANN_FORCE_SYNC};

/// What the refresher knows about a managed Secret, read from its metadata only.
#[derive(Clone, Debug, PartialEq)]
pub struct Tracked {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub source: SourceSpec,
    pub service_account: String,
    pub interval: Duration,
    pub owner_kind: String,
    pub owner_name: String,
    /// uid from the ownerReference, when there is one.
    pub owner_uid: Option<String>,
    pub rollout: Rollout,
    pub data_hmac: Option<String>,
    pub force_sync: Option<String>,
    pub created: Option<OffsetDateTime>,
}

impl Tracked {
    pub fn from_meta(meta: &ObjectMeta) -> Result<Tracked, String> {
        let ann = meta.annotations.clone().unwrap_or_default();
        let get = |k: &str| {
            ann.get(k)
                .cloned()
                .ok_or_else(|| format!("annotation {k} is missing"))
        };
        let source: SourceSpec = serde_json::from_str(&get(ANN_SOURCE)?)
            .map_err(|_| format!("annotation {ANN_SOURCE} is not a source spec"))?;
        let interval = parse_duration(&get(ANN_REFRESH_INTERVAL)?)
            .map_err(|e| format!("annotation {ANN_REFRESH_INTERVAL}: {e}"))?;
        let owner = get(ANN_OWNER)?;
        let (owner_kind, owner_name) = owner
            .split_once('/')
            .ok_or_else(|| format!("annotation {ANN_OWNER} is not Kind/name"))?;
        let rollout = match ann.get(ANN_ROLLOUT).map(String::as_str) {
            Some("none") => Rollout::None,
            _ => Rollout::Restart,
        };
        let owner_uid = meta
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.kind == owner_kind && r.name == owner_name)
            .map(|r| r.uid.clone());
        Ok(Tracked {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            source,
            service_account: get(ANN_SERVICE_ACCOUNT)?,
            interval,
            owner_kind: owner_kind.to_string(),
            owner_name: owner_name.to_string(),
            owner_uid,
            rollout,
            data_hmac: ann.get(ANN_DATA_HMAC).cloned(),
            force_sync: ann.get(ANN_FORCE_SYNC).cloned(),
            created: meta
                .creation_timestamp
                .as_ref()
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t.0.as_second()).ok()),
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    /// New data written; the Secret's new resourceVersion.
    Updated(String),
    /// The owner is gone: the Secret was deleted.
    Orphaned,
    /// Someone wrote the Secret since this refresh was scheduled (an admission, a newer
    /// leader): nothing was written; check again soon with the newer version.
    Superseded,
    /// Not ours to refresh (its namespace has not opted in).
    Skipped(String),
    Failed(String),
}

/// The namespace label that opts a namespace in (the webhook's namespaceSelector).
pub const INJECT_LABEL: &str = "secret-injector.io/inject";

/// Error text of a fenced write that lost: not a failure, a newer version exists.
const SUPERSEDED: &str = "the Secret was written since this refresh started";

pub async fn refresh(injector: &Injector, tracked: &Tracked, orphan_grace: Duration) -> Outcome {
    // A labelled Secret alone is not a request: anyone who can write Secrets could forge one.
    // Act only where the namespace opted in, like the webhook's namespaceSelector (which also
    // never covers the system namespaces).
    if matches!(
        tracked.namespace.as_str(),
        "kube-system" | "kube-node-lease" | "kube-public"
    ) {
        return Outcome::Skipped(format!(
            "namespace {} is a system namespace",
            tracked.namespace
        ));
    }
    match opted_in(&injector.client, &tracked.namespace).await {
        Ok(true) => {}
        Ok(false) => {
            return Outcome::Skipped(format!(
                "namespace {} is not labelled {INJECT_LABEL}=enabled",
                tracked.namespace
            ))
        }
        Err(e) => {
            return Outcome::Failed(format!(
                "reading namespace {}: {}",
                tracked.namespace,
                crate::api_error_message(&e)
            ))
        }
    }
    match owner_gone(&injector.client, tracked, orphan_grace).await {
        Ok(true) => {
            return match delete(&injector.client, tracked).await {
                Ok(()) => Outcome::Orphaned,
                Err(e) => Outcome::Failed(format!("deleting the orphaned Secret: {e}")),
            };
        }
        Ok(false) => {}
        Err(e) => {
            return Outcome::Failed(format!(
                "checking the owner {}/{}: {}",
                tracked.owner_kind,
                tracked.owner_name,
                crate::api_error_message(&e)
            ))
        }
    }
    let store = match crate::store::resolve(
        &injector.client,
        &tracked.namespace,
        &tracked.source.store_ref,
        &injector.config.endpoints,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let identity = PodIdentity {
        namespace: tracked.namespace.clone(),
        service_account: tracked.service_account.clone(),
    };
    let origin = format!("Secret {}", tracked.name);
    let data = match crate::fetch::fetch_source(
        injector,
        &identity,
        &store,
        &tracked.source,
        &origin,
        false,
    )
    .await
    {
        Ok(d) => d,
        Err(e) => return Outcome::Failed(e.denial_message()),
    };
    let digest = injector.digest_key.digest(&data);
    if tracked.data_hmac.as_deref() == Some(digest.as_str()) {
        return Outcome::Unchanged;
    }
    match write(&injector.client, tracked, &data, &digest).await {
        Ok(Some(rv)) => {
            injector.metrics.secret_write("update");
            Outcome::Updated(rv)
        }
        Ok(None) => Outcome::Unchanged,
        Err(e) if e.starts_with(SUPERSEDED) => Outcome::Superseded,
        Err(e) => Outcome::Failed(e),
    }
}

/// Write new data, fenced by the resourceVersion observed *before* the fetch: if anyone (a
/// newer leader, an admission) wrote since, we stop rather than overwrite a newer value.
/// Returns the new resourceVersion, or None when the bytes were already equal (e.g. the HMAC
/// key changed since the digest was recorded): nothing written.
async fn write(
    client: &Client,
    tracked: &Tracked,
    data: &BTreeMap<String, SecretBytes>,
    digest: &str,
) -> Result<Option<String>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &tracked.namespace);
    let mut secret = api
        .get(&tracked.name)
        .await
        .map_err(|e| format!("reading the Secret: {}", crate::api_error_message(&e)))?;
    if secret.metadata.resource_version.as_deref() != Some(tracked.resource_version.as_str()) {
        return Err(
            "the Secret was written since this refresh started; it will be checked again".into(),
        );
    }
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    let ann = secret.metadata.annotations.clone().unwrap_or_default();
    if labels.get(LABEL_MANAGED_BY).map(String::as_str) != Some(MANAGED_BY)
        || ann.get(ANN_SOURCE) != Some(&serde_json::to_string(&tracked.source).unwrap_or_default())
        || ann.get(ANN_SERVICE_ACCOUNT) != Some(&tracked.service_account)
    {
        // Rewritten since it was scheduled (a new request at admission): the watch brings the
        // new version, which is checked instead.
        return Err(SUPERSEDED.into());
    }
    let desired: BTreeMap<String, ByteString> = data
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.expose().to_vec())))
        .collect();
    if secret.data.as_ref() == Some(&desired) {
        return Ok(None);
    }
    secret.data = Some(desired);
    secret.string_data = None;
    let annotations = secret
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(ANN_DATA_HMAC.into(), digest.to_string());
    annotations.insert(
        ANN_LAST_SYNC.into(),
        OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default(),
    );
    // `replace` carries the resourceVersion we read: a concurrent writer (or a newer leader)
    // makes this fail with 409 instead of being overwritten.
    let written = match api
        .replace(&tracked.name, &crate::managed::post_params(), &secret)
        .await
    {
        Ok(w) => w,
        Err(kube::Error::Api(s)) if s.code == 409 => return Err(SUPERSEDED.into()),
        Err(e) => {
            return Err(format!(
                "writing the Secret: {}",
                crate::api_error_message(&e)
            ))
        }
    };
    Ok(written.metadata.resource_version)
}

async fn owner_gone(
    client: &Client,
    tracked: &Tracked,
    grace: Duration,
) -> Result<bool, kube::Error> {
    let ns = &tracked.namespace;
    let name = &tracked.owner_name;
    let uid = match tracked.owner_kind.as_str() {
        "Deployment" => get_uid::<Deployment>(client, ns, name).await?,
        "StatefulSet" => get_uid::<StatefulSet>(client, ns, name).await?,
        "DaemonSet" => get_uid::<DaemonSet>(client, ns, name).await?,
        "ReplicaSet" => get_uid::<ReplicaSet>(client, ns, name).await?,
        "Job" => get_uid::<Job>(client, ns, name).await?,
        "CronJob" => get_uid::<CronJob>(client, ns, name).await?,
        "Pod" => {
            // A bare pod's uid did not exist at admission; its Secret goes once no pod of that
            // name exists and the grace period (for pods still being created) has passed.
            let exists = get_uid::<Pod>(client, ns, name).await?.is_some();
            let old_enough = tracked.created.is_none_or(|c| {
                OffsetDateTime::now_utc() - c
                    > time::Duration::try_from(grace).unwrap_or(time::Duration::MAX)
            });
            return Ok(!exists && old_enough);
        }
        // Owners of kinds we do not read (custom controllers): leave them to the garbage collector.
        _ => return Ok(false),
    };
    Ok(match (uid, &tracked.owner_uid) {
        (None, _) => true,
        // Same name, new object: the Secret belonged to the old one.
        (Some(current), Some(recorded)) => current != *recorded,
        (Some(_), None) => false,
    })
}

async fn get_uid<K>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Ok(crate::workload::get_meta::<K>(client, namespace, name)
        .await?
        .map(|m| m.uid.unwrap_or_default()))
}

async fn delete(client: &Client, tracked: &Tracked) -> Result<(), String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &tracked.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(tracked.uid.clone()),
            resource_version: Some(tracked.resource_version.clone()),
        }),
        ..DeleteParams::default()
    };
    match api.delete(&tracked.name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(crate::api_error_message(&e)),
    }
}

async fn opted_in(client: &Client, namespace: &str) -> Result<bool, kube::Error> {
    let ns = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .get_opt(namespace)
        .await?;
    Ok(ns
        .and_then(|n| n.metadata.labels)
        .is_some_and(|l| l.get(INJECT_LABEL).map(String::as_str) == Some("enabled")))
}
