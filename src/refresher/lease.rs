//! Refreshing an issued Secret (dynamic secret or certificate): renew its lease, re-issue it
//! in the last part of its life, revoke the leases it replaced once their grace period is over,
//! and revoke everything when its workload is gone. Timing policy: `pipeline::issue`.

use crate::k8s::WorkloadKind;
use k8s_openapi::jiff::SignedDuration;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use rand::SeedableRng;
use tracing::{info, warn};

use super::schedule;
use super::tracked::{LeaseAction, RefreshError, Refreshed, Tracked};
use crate::context::Context;
use crate::identity::PodIdentity;
use crate::managed::recorded::{after, LeaseRecord, Retiring};
use crate::managed::{self, Fence, WriteOutcome};
use crate::pipeline::issue::{self as policy, lease_belongs};
use crate::store::ResolvedStore;
use tokio::time::Instant;

/// When the refresher should next look at an issued Secret: its next check, or the first
/// retiring lease's revocation time, whichever comes first.
pub fn due(lease: &LeaseRecord) -> Timestamp {
    lease
        .retiring
        .iter()
        .map(|r| r.revoke_at)
        .chain([lease.next])
        .min()
        .unwrap_or(lease.next)
}

/// Renew, re-issue or retire, whichever is due.
pub(super) async fn refresh_issued(
    ctx: &Context,
    tracked: &Tracked,
    store: &ResolvedStore,
    identity: &PodIdentity,
) -> Result<Refreshed, RefreshError> {
    let now = Timestamp::now();
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let source = &tracked.record.source;
    let Some(current) = tracked.record.lease.clone() else {
        // Issued source without a lease record (written by an older version): issue anew.
        return reissue(ctx, tracked, store, identity, None, now).await;
    };
    if tracked.force_reissue {
        // force-sync: new credentials now (e.g. the old ones leaked); the old lease retires.
        return reissue(ctx, tracked, store, identity, Some(current), now).await;
    }
    let mut lease = current.clone();

    // 1. Leases replaced earlier whose grace period is over (never the one in use).
    let (due_now, later): (Vec<Retiring>, Vec<Retiring>) = lease
        .retiring
        .iter()
        .cloned()
        .partition(|r| r.revoke_at <= now);
    let mut retired = false;
    if !due_now.is_empty() {
        let mut kept = later;
        for r in due_now {
            if r.id == current.id || !lease_belongs(source, &r.id) {
                continue;
            }
            match revoke(ctx, store, identity, &r.id).await {
                Ok(()) => {
                    retired = true;
                    info!(namespace = %tracked.namespace, name = %tracked.name, "replaced lease revoked after its grace period");
                }
                Err(e) => {
                    warn!(namespace = %tracked.namespace, name = %tracked.name, error = %e, "revoking a replaced lease failed; retrying later");
                    kept.push(Retiring {
                        id: r.id,
                        revoke_at: after(now, Duration::from_secs(30)),
                    });
                }
            }
        }
        kept.sort_by_key(|r| r.revoke_at);
        lease.retiring = kept;
    }

    // 2. The lease in use: nothing to do yet, renew, or re-issue.
    let mut action = if retired {
        LeaseAction::Retired
    } else {
        LeaseAction::Kept
    };
    if lease.next <= now {
        if lease.renewable && !lease.id.is_empty() && lease_belongs(source, &lease.id) {
            let provider = ctx.provider_for(store);
            let renewed = provider
                .renew(
                    identity,
                    store,
                    &lease.id,
                    policy::renew_increment(&lease, now),
                )
                .await;
            ctx.metrics().lease_operation("renew", renewed.is_ok());
            match renewed {
                Ok(r) => {
                    lease = policy::renewed(&lease, now, r.ttl, r.renewable, &mut rng);
                    action = LeaseAction::Renewed;
                }
                // A lease Vault no longer knows (expired, revoked behind our back) or refuses
                // to renew: re-issue below if time is short, else report.
                // (Vault down: re-issuing would fail the same way; back off and warn.)
                Err(e)
                    if !matches!(e, crate::provider::ProviderError::Unreachable { .. })
                        && policy::should_reissue(&lease, now) =>
                {
                    warn!(namespace = %tracked.namespace, name = %tracked.name, error = %e, "lease renewal failed; re-issuing");
                }
                Err(e) => {
                    return Err(RefreshError::Lease {
                        op: "renewal",
                        error: e,
                    })
                }
            }
        }
        if policy::should_reissue(&lease, now) {
            return reissue(ctx, tracked, store, identity, Some(lease), now).await;
        }
        if action != LeaseAction::Renewed {
            lease.next = policy::next_check(now, lease.expires(), &mut rng);
        }
    }
    if lease == current {
        return Ok(Refreshed::Lease {
            action: LeaseAction::Kept,
            version: None,
            due: due(&lease),
        });
    }
    let mut target = tracked.target();
    target.record.lease = Some(lease.clone());
    let api: Api<Secret> = Api::namespaced(ctx.client().clone(), &tracked.namespace);
    match managed::update_record(
        &api,
        &target,
        ctx.digest_key(),
        &tracked.resource_version,
        ctx.metrics(),
    )
    .await?
    {
        WriteOutcome::Updated(version) => Ok(Refreshed::Lease {
            action,
            version,
            due: due(&lease),
        }),
        WriteOutcome::Unchanged => Ok(Refreshed::Lease {
            action,
            version: None,
            due: due(&lease),
        }),
        WriteOutcome::Superseded | WriteOutcome::Created => Err(RefreshError::Superseded),
    }
}

/// Issue new credentials, write them (the old lease joins the retiring list), and report a
/// change so the workload is rolled once.
async fn reissue(
    ctx: &Context,
    tracked: &Tracked,
    store: &ResolvedStore,
    identity: &PodIdentity,
    old: Option<LeaseRecord>,
    now: Timestamp,
) -> Result<Refreshed, RefreshError> {
    let issued = ctx
        .issue_fresh(identity, store, &tracked.record.source)
        .await;
    ctx.metrics().lease_operation("reissue", issued.is_ok());
    let issuance = issued?;
    let mut lease = issuance.lease.clone();
    if let Some(old) = old {
        lease.retiring = old.retiring;
        if !old.id.is_empty() {
            lease.retiring.push(Retiring {
                id: old.id,
                revoke_at: after(now, ctx.config().lease_revoke_grace),
            });
        }
        lease.retiring.retain(|r| r.id != lease.id);
    }
    let mut target = tracked.target();
    target.record.lease = Some(lease.clone());
    let api: Api<Secret> = Api::namespaced(ctx.client().clone(), &tracked.namespace);
    let written = managed::write(
        &api,
        &target,
        &issuance.data,
        ctx.digest_key(),
        Fence::Version(tracked.resource_version.clone()),
        ctx.metrics(),
    )
    .await;
    match written {
        Ok(WriteOutcome::Updated(version)) => {
            info!(namespace = %tracked.namespace, name = %tracked.name, "credentials re-issued");
            Ok(Refreshed::Lease {
                action: LeaseAction::Reissued,
                version,
                due: due(&lease),
            })
        }
        other => {
            // Nobody will ever use these credentials: give the lease back at once.
            if !lease.id.is_empty() {
                let _ = revoke(ctx, store, identity, &lease.id).await;
            }
            match other {
                Err(e) => Err(e.into()),
                _ => Err(RefreshError::Superseded),
            }
        }
    }
}

/// Revoke every lease the Secret records (its workload is gone).
pub(super) async fn revoke_all(ctx: &Context, tracked: &Tracked) -> Result<(), RefreshError> {
    let Some(lease) = &tracked.record.lease else {
        return Ok(());
    };
    let source = &tracked.record.source;
    let ids: Vec<&str> = lease
        .retiring
        .iter()
        .map(|r| r.id.as_str())
        .chain([lease.id.as_str()])
        .filter(|id| !id.is_empty() && lease_belongs(source, id))
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let store = ctx.resolve_store(&tracked.namespace, &source.store_ref)?;
    let identity = tracked.identity();
    for id in ids {
        revoke(ctx, &store, &identity, id)
            .await
            .map_err(|error| RefreshError::Lease {
                op: "revocation",
                error,
            })?;
    }
    info!(namespace = %tracked.namespace, name = %tracked.name, "workload gone: its leases were revoked");
    Ok(())
}

async fn revoke(
    ctx: &Context,
    store: &ResolvedStore,
    identity: &PodIdentity,
    lease_id: &str,
) -> Result<(), crate::provider::ProviderError> {
    let result = ctx
        .provider_for(store)
        .revoke(identity, store, lease_id)
        .await;
    ctx.metrics().lease_operation("revoke", result.is_ok());
    result
}

/// After a Secret with leases was deleted: revoke them when its workload is gone too (a
/// Secret deleted by hand while the workload runs keeps its leases until they expire: its
/// pods still use the credentials).
pub(super) async fn revoke_if_orphaned(ctx: &Context, tracked: &Tracked, grace: Duration) {
    match owner_gone(ctx, tracked, grace).await {
        Ok(true) => {
            if let Err(e) = revoke_all(ctx, tracked).await {
                warn!(namespace = %tracked.namespace, name = %tracked.name, error = %e, "revoking the leases of a deleted Secret failed; they expire on their own");
            }
        }
        Ok(false) => {}
        Err(e) => {
            warn!(namespace = %tracked.namespace, name = %tracked.name, error = %crate::k8s::api_error_message(&e), "could not check the owner of a deleted Secret; its leases expire on their own")
        }
    }
}

impl super::Refresher {
    /// Issued Secrets follow their lease, not an interval.
    pub(super) fn upsert_issued(
        &mut self,
        key: super::Key,
        meta: std::sync::Arc<crate::managed::ManagedMeta>,
        tracked: Tracked,
    ) {
        let now = Instant::now();
        let (known, force_sync_before) = self.track(&key, meta, &tracked);
        let forced =
            known && tracked.force_sync.is_some() && tracked.force_sync != force_sync_before;
        let at = if forced {
            now
        } else {
            instant_of(issued_due(&tracked))
        };
        let entry = self.entries.get_mut(&key).expect("tracked above");
        if entry.running {
            entry.rerun |= forced;
            entry.force_reissue |= forced;
        } else if entry.failures == 0 || forced {
            entry.force_reissue |= forced;
            self.queue.schedule(key, at);
        }
    }

    /// A Secret was deleted (by the garbage collector with its workload, or by hand): its
    /// leases are revoked once the workload is confirmed gone.
    pub(super) fn on_issued_deleted(&self, key: &super::Key) {
        let Some(entry) = self.entries.get(key) else {
            return;
        };
        if entry.leases.is_some() {
            let Some(tracked) = entry.tracked(key) else {
                return;
            };
            let ctx = self.ctx.clone();
            let grace = self.config.orphan_grace;
            tokio::spawn(async move { revoke_if_orphaned(&ctx, &tracked, grace).await });
        }
    }
}

/// When an issued Secret is next due (now when it has no lease record yet).
pub(super) fn issued_due(tracked: &Tracked) -> k8s_openapi::jiff::Timestamp {
    tracked
        .record
        .lease
        .as_ref()
        .map_or_else(k8s_openapi::jiff::Timestamp::now, due)
}

/// A wall-clock time as a Tokio instant (now when it is past).
pub(super) fn instant_of(at: k8s_openapi::jiff::Timestamp) -> Instant {
    Instant::now() + crate::managed::recorded::between(k8s_openapi::jiff::Timestamp::now(), at)
}

/// Backoff, Event reason and message after a failed lease refresh: retries come quicker than
/// for KV (a lease does not wait) but never later than halfway to the expiry; the reason turns
/// to `LeaseExpiring` once the credentials are in the part of their life where they should
/// already have been replaced.
pub(super) fn lease_failure(
    tracked: &Tracked,
    failures: u32,
    error: &RefreshError,
    rng: &mut impl rand::Rng,
) -> (Duration, &'static str, String) {
    let now = k8s_openapi::jiff::Timestamp::now();
    let Some(lease) = &tracked.record.lease else {
        let delay = schedule::backoff_delay(Duration::from_secs(5), failures, rng);
        let note = format!(
            "issuing credentials for Secret {} failed (attempt {failures}, next in {}s): {error}",
            tracked.name,
            delay.as_secs()
        );
        return (delay, "LeaseRenewalFailed", note);
    };
    let left = crate::managed::recorded::between(now, lease.expires());
    let base = (left / 20).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let delay = schedule::backoff_delay(base, failures, rng)
        .min(left / 2)
        .max(Duration::from_secs(1));
    // "Well before expiry": in the last quarter of the credentials' life.
    let expiring = left.as_secs_f64() <= lease.lifetime().as_secs_f64() * 0.25;
    let reason = if expiring {
        "LeaseExpiring"
    } else {
        "LeaseRenewalFailed"
    };
    let note = format!(
        "{} of Secret {} could not be renewed or re-issued (attempt {failures}, next in {}s); the current credentials stay in place and expire at {}: {error}",
        if expiring { "credentials close to expiry" } else { "the lease" },
        tracked.name,
        delay.as_secs(),
        k8s_openapi::jiff::Timestamp::from_second(lease.expires().as_second()).unwrap_or(lease.expires()),
    );
    (delay, reason, note)
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
            Some(current) => owner.uid.as_deref().is_some_and(|uid| current.uid != *uid),
        },
    )
}
