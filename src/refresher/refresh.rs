//! Refreshing one managed Secret: the same store resolution, identity and fetch as admission,
//! as the Secret's recorded ServiceAccount; a write (through [`managed::write`]) only when the
//! keyed digest differs, fenced by the resourceVersion the refresh was scheduled from. A
//! failure never touches the Secret: the last good bytes stay.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, Client};

use super::adopt::{self, PodState};
use crate::context::Context;
use crate::identity::PodIdentity;
use crate::k8s::{api_error_message, is_status, WorkloadKind};
use crate::managed::{
    self, recorded, Fence, ManagedError, Recorded, RecordedError, Target, WriteOutcome,
};
use crate::pipeline::FetchError;
use crate::spec::ANN_INJECT;
use crate::store::StoreError;

/// What the refresher knows about a managed Secret, read from its metadata only.
#[derive(Clone, Debug, PartialEq)]
pub struct Tracked {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    /// The request it was made for (source, ServiceAccount, interval, owner, rollout).
    pub record: Recorded,
    pub data_hmac: Option<String>,
    pub force_sync: Option<String>,
    pub created: Option<Timestamp>,
    /// Set by the loop for one run: a force-sync of an issued Secret re-issues it.
    pub force_reissue: bool,
}

impl Tracked {
    pub fn from_meta(meta: &ObjectMeta) -> Result<Tracked, RecordedError> {
        Ok(Tracked {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            record: Recorded::from_meta(meta)?,
            data_hmac: recorded::data_hmac(meta),
            force_sync: recorded::force_sync(meta),
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            force_reissue: false,
        })
    }

    pub(super) fn identity(&self) -> PodIdentity {
        PodIdentity {
            namespace: self.namespace.clone(),
            service_account: self.record.service_account.clone(),
        }
    }

    pub fn target(&self) -> Target {
        Target {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            record: self.record.clone(),
        }
    }
}

/// A refresh that did its job.
#[derive(Debug, PartialEq, Eq)]
pub enum Refreshed {
    Unchanged,
    /// New data written; the Secret's new resourceVersion.
    Updated(Option<String>),
    /// The owner is gone: the Secret was deleted (and its leases revoked).
    Orphaned,
    /// A bare pod's Secret now names its pod (ownerReference set); the new resourceVersion.
    Adopted(Option<String>),
    /// A bare pod's Secret whose pod has not appeared yet (within the grace period).
    AwaitingPod,
    /// An issued Secret (dynamic secret, certificate): what happened to its lease, the
    /// Secret's new resourceVersion when it was written, and when it is next due.
    Lease {
        action: LeaseAction,
        version: Option<String>,
        due: Timestamp,
    },
}

/// What a refresh of an issued Secret did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// Nothing was due.
    Kept,
    /// The lease was renewed (same credentials).
    Renewed,
    /// New credentials were issued and written; the old lease retires after the grace period.
    Reissued,
    /// Replaced leases past their grace period were revoked.
    Retired,
}

/// A refresh that did not. Every variant maps to a fixed metric label.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Someone wrote the Secret since this refresh was scheduled (an admission, a newer
    /// leader): nothing was written; check again soon with the newer version.
    #[error("the Secret was written since this refresh started; it will be checked again")]
    Superseded,
    /// Not ours to refresh.
    #[error("namespace {0} is a system namespace")]
    SystemNamespace(String),
    #[error("namespace {0} is not labelled {ANN_INJECT}=enabled")]
    NotOptedIn(String),
    #[error("checking the owner {owner}: {}", api_error_message(.source))]
    Owner {
        owner: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting the orphaned Secret: {}", api_error_message(.0))]
    DeleteOrphan(#[source] kube::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Write(#[from] ManagedError),
    /// Renewing or revoking a lease failed (the backend's message, scrubbed).
    #[error("lease {op} failed: {error}")]
    Lease {
        op: &'static str,
        error: crate::provider::ProviderError,
    },
}

impl RefreshError {
    /// The `result` label of `secret_injector_refreshes_total`.
    pub fn label(&self) -> &'static str {
        match self {
            RefreshError::Superseded => "superseded",
            RefreshError::SystemNamespace(_) | RefreshError::NotOptedIn(_) => "skipped",
            RefreshError::Owner { .. }
            | RefreshError::DeleteOrphan(_)
            | RefreshError::Store(_)
            | RefreshError::Fetch(_)
            | RefreshError::Write(_)
            | RefreshError::Lease { .. } => "error",
        }
    }

    /// Not a failure: the Secret is not ours to refresh and is dropped from the work list.
    pub fn is_skip(&self) -> bool {
        self.label() == "skipped"
    }
}

impl Refreshed {
    /// The `result` label of `secret_injector_refreshes_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Refreshed::Unchanged => "unchanged",
            Refreshed::Updated(_) => "updated",
            Refreshed::Orphaned => "orphaned",
            Refreshed::Adopted(_) => "adopted",
            Refreshed::AwaitingPod => "awaiting_pod",
            Refreshed::Lease { action, .. } => match action {
                LeaseAction::Kept => "unchanged",
                LeaseAction::Renewed => "renewed",
                LeaseAction::Reissued => "reissued",
                LeaseAction::Retired => "retired",
            },
        }
    }
}

pub type Outcome = Result<Refreshed, RefreshError>;

pub async fn refresh(ctx: &Context, tracked: &Tracked, orphan_grace: Duration) -> Outcome {
    let client = ctx.client();
    let index = ctx.index();
    // Every check below reads the watch-fed index; it must have seen the cluster once.
    index.wait_until_synced().await;
    // A labelled Secret alone is not a request: anyone who can write Secrets could forge one.
    // Act only where the namespace opted in, like the webhook's namespaceSelector (which also
    // never covers the system namespaces or the webhook's own).
    if ctx.is_excluded_namespace(&tracked.namespace) {
        return Err(RefreshError::SystemNamespace(tracked.namespace.clone()));
    }
    if index.opted_in(&tracked.namespace).is_none() {
        return Err(RefreshError::NotOptedIn(tracked.namespace.clone()));
    }
    let owner_err = |source| RefreshError::Owner {
        owner: tracked.record.owner.reference(),
        source,
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), &tracked.namespace);
    let gone = match tracked.record.owner.kind.known() {
        // Owners of kinds we do not read (custom controllers): left to the garbage collector.
        None => false,
        Some(WorkloadKind::Pod) => {
            match adopt::bare_pod(client, tracked, orphan_grace)
                .await
                .map_err(owner_err)?
            {
                PodState::Present => false,
                PodState::Gone => true,
                PodState::Awaiting => return Ok(Refreshed::AwaitingPod),
                PodState::Adopt(pod) => {
                    let version = &tracked.resource_version;
                    return match managed::adopt(
                        &api,
                        &tracked.target(),
                        version,
                        &pod,
                        ctx.metrics(),
                    )
                    .await?
                    {
                        WriteOutcome::Updated(v) => Ok(Refreshed::Adopted(v)),
                        _ => Err(RefreshError::Superseded),
                    };
                }
            }
        }
        // From the index: gone when absent, or present under a new uid (same name, new object).
        Some(kind) => {
            let owner = &tracked.record.owner;
            match index.owners().get(kind, &tracked.namespace, &owner.name) {
                None => true,
                Some(current) => owner.uid.as_deref().is_some_and(|uid| *current.uid != *uid),
            }
        }
    };
    if gone {
        // Nobody uses the credentials any more: give the leases back before the Secret goes
        // (a failure keeps the Secret, so the revocation is retried).
        super::lease::revoke_all(ctx, tracked).await?;
        delete(client, tracked)
            .await
            .map_err(RefreshError::DeleteOrphan)?;
        return Ok(Refreshed::Orphaned);
    }
    let store = ctx.resolve_store(&tracked.namespace, &tracked.record.source.store_ref)?;
    let identity = PodIdentity {
        namespace: tracked.namespace.clone(),
        service_account: tracked.record.service_account.clone(),
    };
    if tracked.record.source.is_issued() {
        return super::lease::refresh_issued(ctx, tracked, &store, &identity).await;
    }
    let origin = format!("Secret {}", tracked.name);
    let data = ctx
        .fetch_fresh(&identity, &store, &tracked.record.source, &origin)
        .await?;
    if tracked.data_hmac.as_deref() == Some(ctx.digest_key().digest(&data).as_str()) {
        return Ok(Refreshed::Unchanged);
    }
    let fence = Fence::Version(tracked.resource_version.clone());
    match managed::write(
        &api,
        &tracked.target(),
        &data,
        ctx.digest_key(),
        fence,
        ctx.metrics(),
    )
    .await?
    {
        WriteOutcome::Updated(version) => Ok(Refreshed::Updated(version)),
        // Same bytes (e.g. the HMAC key changed since the digest was recorded): nothing written.
        WriteOutcome::Unchanged => Ok(Refreshed::Unchanged),
        WriteOutcome::Superseded | WriteOutcome::Created => Err(RefreshError::Superseded),
    }
}

/// Whether the workload a Secret was made for is gone (the index answers for workloads; a
/// bare pod is looked up by name, after the grace period for pods still being created).
pub(super) async fn owner_gone(
    ctx: &Context,
    tracked: &Tracked,
    grace: Duration,
) -> Result<bool, kube::Error> {
    let owner = &tracked.record.owner;
    let Some(kind) = owner.kind.known() else {
        // Owners of kinds we do not read (custom controllers): leave them to the garbage collector.
        return Ok(false);
    };
    if kind == WorkloadKind::Pod {
        let meta = kind
            .get_meta(ctx.client(), &tracked.namespace, &owner.name)
            .await?;
        let old_enough = tracked.created.is_none_or(|c| {
            Timestamp::now().duration_since(c)
                > SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX)
        });
        return Ok(meta.is_none() && old_enough);
    }
    ctx.index().wait_until_synced().await;
    Ok(
        match ctx
            .index()
            .owners()
            .get(kind, &tracked.namespace, &owner.name)
        {
            None => true,
            // Same name, new object: the Secret belonged to the old one.
            Some(current) => owner.uid.as_deref().is_some_and(|uid| *current.uid != *uid),
        },
    )
}

async fn delete(client: &Client, tracked: &Tracked) -> Result<(), kube::Error> {
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
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e),
    }
}
