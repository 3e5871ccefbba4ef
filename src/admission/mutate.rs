//! The mutating pipeline for one pod: review → spec → store → (identity → fetch) → managed
//! Secret → patch. Values are fetched for every item before anything is written, so a failure
//! leaves nothing half-done.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::future::try_join_all;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::error::InjectError;
use crate::context::Context;
use crate::identity::PodIdentity;
use crate::k8s::Owner;
use crate::managed::{self, Existing, Fence, Recorded, Target};
use crate::metrics::Stage as MetricStage;
use crate::patch::PodPatch;
use crate::pipeline;
use crate::plan;
use crate::pod::PodView;
use crate::spec;
use crate::store::ResolvedStore;

/// What the pipeline is doing, for the deadline message.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Stage {
    Index,
    Owner,
    Store,
    ManagedSecret,
    Fetch,
    Write,
}

impl Stage {
    fn describe(v: u8) -> &'static str {
        match v {
            0 => "waiting for the first sync of the index of namespaces, stores and owners",
            1 => "verifying the pod's owner",
            2 => "reading the SecretStore",
            3 => "reading the managed Secret",
            4 => "fetching from the secret backend",
            _ => "writing the managed Secret",
        }
    }
}

pub struct Mutation {
    pub patch: PodPatch,
    /// Managed Secrets named in the patch (for logs).
    pub secrets: Vec<String>,
    /// The workload the pod belongs to (the Event's object).
    pub owner: Owner,
}

pub async fn mutate(
    ctx: &Context,
    pod: &PodView<'_>,
    namespace: &str,
    dry_run: bool,
) -> Result<Option<Mutation>, InjectError> {
    // No annotation of ours ⇒ allowed without a single API call.
    if !spec::wants_injection(pod.annotations.iter().flatten()) {
        return Ok(None);
    }
    let stage = AtomicU8::new(Stage::Index as u8);
    let deadline = ctx.config().deadline;
    match tokio::time::timeout(deadline, run(ctx, pod, namespace, dry_run, &stage)).await {
        Ok(result) => result,
        Err(_) => {
            ctx.metrics().deadline_exceeded();
            Err(InjectError::Deadline {
                deadline,
                stage: Stage::describe(stage.load(Ordering::Relaxed)),
            })
        }
    }
}

async fn run(
    ctx: &Context,
    pod: &PodView<'_>,
    namespace: &str,
    dry_run: bool,
    stage: &AtomicU8,
) -> Result<Option<Mutation>, InjectError> {
    let started = Instant::now();
    let set_stage = |s: Stage| stage.store(s as u8, Ordering::Relaxed);
    // Trust checks first: nothing below (TokenRequest, backend call, Secret write) happens for
    // a review whose claims the API server's own objects do not back.
    ctx.index().wait_until_synced().await;
    if ctx.is_excluded_namespace(namespace) {
        return Err(InjectError::ExcludedNamespace(namespace.to_string()));
    }
    if ctx.index().opted_in(namespace).is_none() {
        return Err(InjectError::NotOptedIn(namespace.to_string()));
    }
    set_stage(Stage::Owner);
    let workload = ctx.owner_chain(namespace, pod).await?;
    if workload.name.is_none() {
        let has = |k: &str| pod.annotation(k).is_some();
        if !has(spec::ANN_SECRET_NAME) && !has(spec::ANN_EXTERNAL_SECRETS) {
            return Err(InjectError::UnnamedBarePod);
        }
    }
    let Some(plan::Planned { spec, mut patch }) = plan::plan(
        pod,
        workload.name.as_deref(),
        &workload.annotations,
        ctx.config().min_refresh_interval,
    )?
    else {
        return Ok(None);
    };

    set_stage(Stage::Store);
    let mut stores: BTreeMap<spec::StoreRef, ResolvedStore> = BTreeMap::new();
    let give_up = tokio::time::Instant::now() + ctx.config().store_wait;
    for item in &spec.items {
        if !stores.contains_key(&item.store) {
            let resolved = ctx
                .index()
                .resolve_store_waiting(namespace, &item.store, give_up)
                .await?;
            stores.insert(item.store.clone(), resolved);
        }
    }

    let identity = PodIdentity {
        namespace: namespace.to_string(),
        service_account: pod.service_account().to_string(),
    };

    ctx.metrics()
        .stage(MetricStage::Resolve, started.elapsed().as_secs_f64());

    set_stage(Stage::ManagedSecret);
    let targets: Vec<Target> = spec
        .items
        .iter()
        .map(|item| Target {
            namespace: namespace.to_string(),
            name: item.secret_name.clone(),
            record: Recorded {
                source: item.source(),
                service_account: identity.service_account.clone(),
                refresh_interval: item.refresh_interval,
                owner: workload.owner.clone(),
                rollout: item.rollout,
                lease: None,
            },
        })
        .collect();
    for item in &spec.items {
        plan::check_issued_store(item, stores[&item.store].config.provider_name())?;
    }
    // Warm: every managed Secret is in the watch-fed index, ours and current ⇒ no network call.
    let secrets = spec.items.iter().map(|i| i.secret_name.clone()).collect();
    if targets.iter().all(|t| current_in_index(ctx, t)) {
        return Ok(Some(Mutation {
            patch,
            secrets,
            owner: workload.owner,
        }));
    }
    let indexed: Vec<Option<Existing>> =
        targets.iter().map(|t| existing_in_index(ctx, t)).collect();
    let secrets_api: Api<Secret> = Api::namespaced(ctx.client().clone(), namespace);
    if dry_run {
        // Same answer, no side effects: no TokenRequest, no backend call, no write.
        for (target, indexed) in targets.iter().zip(&indexed) {
            if indexed.is_none() {
                // Boxed, as the cold flight below: an API request's state is large.
                Box::pin(managed::inspect(&secrets_api, target)).await?;
            }
        }
        return Ok(Some(Mutation {
            patch,
            secrets,
            owner: workload.owner,
        }));
    }

    // Cold: concurrent admissions of the same workload (same targets, same identity) share one
    // flight — one GET, one read, one write — instead of racing to create the same Secret.
    // Advice from this admission's own issuance (the flight's waiters share its result, not
    // its warnings).
    let warnings = std::sync::Mutex::new(Vec::new());
    let cold = Cold {
        ctx,
        spec: &spec,
        stores: &stores,
        identity: &identity,
        targets: &targets,
        secrets_api: &secrets_api,
        set_stage: &set_stage,
        warnings: &warnings,
    };
    // Boxed: the cold half's state (a cache flight, backend reads, writes) is large, and every
    // admission's future would otherwise carry its size, copied at each layer it passes.
    let flight = ctx
        .cold_flights()
        .run(flight_key(&targets), cold.ensure(indexed));
    Box::pin(flight)
        .await
        .map_err(|e| Arc::try_unwrap(e).unwrap_or_else(InjectError::Shared))?;
    patch
        .warnings
        .extend(warnings.into_inner().unwrap_or_default());
    Ok(Some(Mutation {
        patch,
        secrets,
        owner: workload.owner,
    }))
}

/// What identifies one cold flight: every target with its full record (source, identity,
/// interval, owner, rollout).
fn flight_key(targets: &[Target]) -> crate::context::ColdKey {
    targets
        .iter()
        .map(|t| (t.namespace.clone(), t.name.clone(), t.record.annotations()))
        .collect()
}

/// The cold half of one admission: look at the Secrets the index did not answer for, read what
/// is stale (one read per store), write.
struct Cold<'a, F: Fn(Stage)> {
    ctx: &'a Context,
    spec: &'a spec::InjectionSpec,
    stores: &'a BTreeMap<spec::StoreRef, ResolvedStore>,
    identity: &'a PodIdentity,
    targets: &'a [Target],
    secrets_api: &'a Api<Secret>,
    set_stage: &'a F,
    warnings: &'a std::sync::Mutex<Vec<String>>,
}

impl<F: Fn(Stage)> Cold<'_, F> {
    async fn ensure(self, indexed: Vec<Option<Existing>>) -> Result<(), InjectError> {
        let Cold {
            ctx,
            spec,
            stores,
            identity,
            targets,
            secrets_api,
            set_stage,
            warnings,
        } = self;
        let mut existing = Vec::with_capacity(targets.len());
        for (target, indexed) in targets.iter().zip(indexed) {
            existing.push(match indexed {
                Some(current) => current,
                None => managed::inspect(secrets_api, target).await?,
            });
        }

        set_stage(Stage::Fetch);
        let to_fetch: Vec<usize> = existing
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.is_current())
            .map(|(i, _)| i)
            .collect();
        // A cold admission reads the backend: it spends one of the namespace's budget (warm ones
        // are free), before any TokenRequest or backend connection. Inside the flight, so the
        // concurrent pods of one new workload spend one, as its later pods would be warm.
        if !to_fetch.is_empty() {
            ctx.admit_cold(&targets[0].namespace)
                .await
                .inspect_err(|_| {
                    ctx.metrics().cold_admission_limited();
                })?;
        }
        // One read per store for all items that need it, so an AWS store batches every key of
        // the workload into BatchGetSecretValue.
        let sources: BTreeMap<usize, _> = to_fetch
            .iter()
            .filter(|&&i| !targets[i].record.source.is_issued())
            .map(|&i| (i, &targets[i].record.source))
            .collect();
        let mut keys_by_store: BTreeMap<&spec::StoreRef, std::collections::BTreeSet<_>> =
            BTreeMap::new();
        for (&i, source) in &sources {
            keys_by_store
                .entry(&spec.items[i].store)
                .or_default()
                .extend(pipeline::keys_of(source));
        }
        // Issued sources (dynamic secrets, certificates): one issuance per managed Secret,
        // shared by the concurrent cold admissions of the same workload.
        let issuing = to_fetch
            .iter()
            .filter(|&&i| targets[i].record.source.is_issued());
        let (documents, issued) = futures::try_join!(
            try_join_all(keys_by_store.iter().map(|(store, keys)| async {
                ctx.fetch_coalesced(identity, &stores[*store], keys)
                    .await
                    .map(|docs| (*store, docs))
            })),
            try_join_all(issuing.map(|&i| {
                let items = &spec.items;
                async move {
                    let target = &targets[i];
                    ctx.issue_coalesced(
                        identity,
                        &stores[&items[i].store],
                        &target.name,
                        &target.record.source,
                    )
                    .await
                    .map(|issuance| (i, issuance))
                }
            })),
        )?;
        let documents: BTreeMap<&spec::StoreRef, pipeline::Documents> =
            documents.into_iter().collect();
        let issued: BTreeMap<usize, _> = issued.into_iter().collect();
        let mut fetched: BTreeMap<usize, _> = BTreeMap::new();
        for (&i, source) in &sources {
            let item = &spec.items[i];
            let data = pipeline::assemble(
                &stores[&item.store],
                source,
                &item.origin,
                &documents[&item.store],
            )?;
            fetched.insert(i, data);
        }

        set_stage(Stage::Write);
        let now = k8s_openapi::jiff::Timestamp::now();
        let mut existing: Vec<Option<Existing>> = existing.into_iter().map(Some).collect();
        for &i in &to_fetch {
            let current = existing[i].take().expect("each item written once");
            let mut target = targets[i].clone();
            let data = match issued.get(&i) {
                Some(issuance) => {
                    let mut lease = issuance.lease.clone();
                    if lease.holder == managed::recorded::LeaseHolder::LoginToken {
                        warnings.lock().expect("not poisoned").push(format!(
                            "Secret {}: Vault refused auth/token/create-orphan, so the \
                             credentials end with the login token (at {}) and are re-issued \
                             before that, with a rollout each time; grant update on \
                             auth/token/create-orphan to the role's policy (see \
                             docs/dynamic-secrets.md)",
                            target.name,
                            k8s_openapi::jiff::Timestamp::from_second(lease.expires().as_second())
                                .unwrap_or(lease.expires())
                        ));
                    }
                    lease.retiring = retiring_after(
                        &current,
                        &target,
                        &lease.id,
                        now,
                        ctx.config().lease_revoke_grace,
                    );
                    target.record.lease = Some(lease);
                    &issuance.data
                }
                None => &fetched[&i],
            };
            let write = managed::write(
                secrets_api,
                &target,
                data,
                ctx.digest_key(),
                Fence::Observed(current),
                ctx.metrics(),
            );
            let outcome = ctx.metrics().timed(MetricStage::Write, write).await?;
            if outcome == managed::WriteOutcome::Superseded {
                // Another replica's issuance won the race: give our unused lease back.
                give_back(ctx, identity, &stores[&spec.items[i].store], &target);
            }
        }
        Ok(())
    }
}

/// The leases to retire when `current` is replaced by a new issuance: its own lease (unless it
/// is the new one) and those it was already retiring, revoked after the grace period.
fn retiring_after(
    current: &Existing,
    target: &Target,
    new_lease: &str,
    now: k8s_openapi::jiff::Timestamp,
    grace: std::time::Duration,
) -> Vec<managed::recorded::Retiring> {
    let Existing::Ours { secret, .. } = current else {
        return Vec::new();
    };
    let Some(old) = Recorded::from_meta(&secret.metadata)
        .ok()
        .and_then(|r| r.lease)
    else {
        return Vec::new();
    };
    let mut out = old.retiring;
    if !old.id.is_empty() {
        out.push(managed::recorded::Retiring {
            id: old.id,
            revoke_at: managed::recorded::after(now, grace),
        });
    }
    out.retain(|r| {
        r.id != new_lease && pipeline::issue::lease_belongs(&target.record.source, &r.id)
    });
    out
}

/// Revoke, in the background, the lease of an issuance that was not written.
fn give_back(ctx: &Context, identity: &PodIdentity, store: &ResolvedStore, target: &Target) {
    let Some(lease) = target.record.lease.as_ref().filter(|l| !l.id.is_empty()) else {
        return;
    };
    let (provider, identity, store, id) = (
        ctx.provider_for(store),
        identity.clone(),
        store.clone(),
        lease.id.clone(),
    );
    let metrics = ctx.metrics().clone();
    tokio::spawn(async move {
        let revoked = provider.revoke(&identity, &store, &id).await;
        metrics.lease_operation("revoke", revoked.is_ok());
    });
}

/// A warm answer from the watch-fed index: true only when the indexed Secret is ours and
/// current for this target, judged on the indexed metadata in place.
fn current_in_index(ctx: &Context, target: &Target) -> bool {
    ctx.managed_index()
        .get(&target.namespace, &target.name)
        .is_some_and(|indexed| managed::current_in_index(&indexed, target))
}

/// What the index holds at the target, for the cold half: `Some` only when ours and current.
/// Anything else (absent, foreign, stale) falls back to a GET, which is authoritative.
fn existing_in_index(ctx: &Context, target: &Target) -> Option<Existing> {
    let indexed = ctx.managed_index().get(&target.namespace, &target.name)?;
    managed::current_in_index(&indexed, target).then(|| Existing::Ours {
        secret: Box::new(indexed.identity(&target.name)),
        current: true,
    })
}
