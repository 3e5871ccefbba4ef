//! Refreshing one managed Secret: the same store resolution, identity and fetch as admission,
//! as the Secret's recorded ServiceAccount; a write (through [`managed::write`]) only when the
//! keyed digest differs, fenced by the resourceVersion the refresh was scheduled from. A
//! failure never touches the Secret: the last good bytes stay.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, Client};

use super::adopt::{self, PodState};
pub use super::tracked::{LeaseAction, Outcome, RefreshError, Refreshed, Tracked};
use crate::context::Context;
use crate::identity::PodIdentity;
use crate::k8s::{is_status, WorkloadKind};
use crate::managed::{self, Fence, WriteOutcome};

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
                Some(current) => owner.uid.as_deref().is_some_and(|uid| current.uid != *uid),
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
