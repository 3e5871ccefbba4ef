//! The mutating pipeline for one pod: review → spec → store → (identity → fetch) → managed
//! Secret → patch. Values are fetched for every item before anything is written, so a failure
//! leaves nothing half-done.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};

use futures::future::try_join_all;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;

use super::error::InjectError;
use super::Injector;
use crate::fetch;
use crate::identity::PodIdentity;
use crate::managed::{self, Existing, Target};
use crate::patch::PodPatch;
use crate::plan;
use crate::spec;
use crate::store::{self, ResolvedStore};
use crate::workload;

/// What the pipeline is doing, for the deadline message.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Stage {
    Owner,
    Store,
    ManagedSecret,
    Fetch,
    Write,
}

impl Stage {
    fn describe(v: u8) -> &'static str {
        match v {
            0 => "reading the pod's owner",
            1 => "reading the SecretStore",
            2 => "reading the managed Secret",
            3 => "fetching from the secret backend",
            _ => "writing the managed Secret",
        }
    }
}

pub struct Mutation {
    pub patch: PodPatch,
    /// Managed Secrets named in the patch (for logs).
    pub secrets: Vec<String>,
}

pub async fn mutate(
    injector: &Injector,
    pod: &Pod,
    namespace: &str,
    dry_run: bool,
) -> Result<Option<Mutation>, InjectError> {
    let pod_annotations = pod.metadata.annotations.clone().unwrap_or_default();
    // No annotation of ours ⇒ allowed without a single API call.
    if !spec::wants_injection(&pod_annotations) {
        return Ok(None);
    }
    let stage = AtomicU8::new(Stage::Owner as u8);
    let deadline = injector.config.deadline;
    match tokio::time::timeout(
        deadline,
        pipeline(injector, pod, namespace, dry_run, &stage),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => {
            injector.metrics.deadline_exceeded();
            Err(InjectError::Deadline {
                deadline,
                stage: Stage::describe(stage.load(Ordering::Relaxed)),
            })
        }
    }
}

async fn pipeline(
    injector: &Injector,
    pod: &Pod,
    namespace: &str,
    dry_run: bool,
    stage: &AtomicU8,
) -> Result<Option<Mutation>, InjectError> {
    let set_stage = |s: Stage| stage.store(s as u8, Ordering::Relaxed);
    let client = &injector.client;

    let workload = owner_chain(injector, namespace, pod).await?;
    let Some(plan::Planned { spec, patch }) = plan::plan(
        pod,
        workload.name.as_deref(),
        &workload.annotations,
        injector.config.min_refresh_interval,
    )?
    else {
        return Ok(None);
    };

    set_stage(Stage::Store);
    let mut stores: BTreeMap<spec::StoreRef, ResolvedStore> = BTreeMap::new();
    for item in &spec.items {
        if !stores.contains_key(&item.store) {
            let resolved = resolve_store(injector, namespace, &item.store).await?;
            stores.insert(item.store.clone(), resolved);
        }
    }

    let identity = PodIdentity {
        namespace: namespace.to_string(),
        service_account: pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_string()),
    };
    let owner = workload.owner.clone().unwrap_or_else(|| managed::Owner {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: workload.name.clone().unwrap_or_default(),
        uid: None,
    });

    set_stage(Stage::ManagedSecret);
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let targets: Vec<Target<'_>> = spec
        .items
        .iter()
        .map(|item| Target {
            namespace,
            item,
            identity: &identity,
            owner: &owner,
        })
        .collect();
    let mut existing = Vec::with_capacity(targets.len());
    for target in &targets {
        let indexed = injector
            .managed_index
            .get()
            .and_then(|index| managed::current_in_index(index, target));
        existing.push(match indexed {
            Some(current) => current,
            None => managed::inspect(&secrets_api, target).await?,
        });
    }

    let secrets = spec.items.iter().map(|i| i.secret_name.clone()).collect();
    if dry_run {
        // Same answer, no side effects: no TokenRequest, no backend call, no write.
        return Ok(Some(Mutation { patch, secrets }));
    }

    set_stage(Stage::Fetch);
    let to_fetch: Vec<usize> = existing
        .iter()
        .enumerate()
        .filter(|(_, e)| !matches!(e, Existing::Ours { current: true, .. }))
        .map(|(i, _)| i)
        .collect();
    // One read per store for all items that need it, so an AWS store batches every key of
    // the workload into BatchGetSecretValue.
    let sources: BTreeMap<usize, _> = to_fetch
        .iter()
        .map(|&i| (i, spec.items[i].source()))
        .collect();
    let mut keys_by_store: BTreeMap<&spec::StoreRef, std::collections::BTreeSet<_>> =
        BTreeMap::new();
    for (&i, source) in &sources {
        keys_by_store
            .entry(&spec.items[i].store)
            .or_default()
            .extend(fetch::keys_of(source));
    }
    let documents: BTreeMap<&spec::StoreRef, fetch::Documents> =
        try_join_all(keys_by_store.iter().map(|(store, keys)| async {
            fetch::fetch_documents(injector, &identity, &stores[*store], keys, true)
                .await
                .map(|docs| (*store, docs))
        }))
        .await?
        .into_iter()
        .collect();
    let fetched = to_fetch
        .iter()
        .map(|&i| {
            let item = &spec.items[i];
            fetch::assemble(
                &stores[&item.store],
                &sources[&i],
                &item.origin,
                &documents[&item.store],
            )
        })
        .collect::<Result<Vec<_>, _>>()?;

    set_stage(Stage::Write);
    let mut existing: Vec<Option<Existing>> = existing.into_iter().map(Some).collect();
    for (&i, data) in to_fetch.iter().zip(fetched.iter()) {
        let current = existing[i].take().expect("each item written once");
        managed::write(
            &secrets_api,
            &targets[i],
            data,
            &injector.digest_key,
            current,
            &injector.metrics,
        )
        .await?;
    }
    Ok(Some(Mutation { patch, secrets }))
}

/// The pod's owner chain, cached by its controller reference.
async fn owner_chain(
    injector: &Injector,
    namespace: &str,
    pod: &Pod,
) -> Result<workload::Workload, InjectError> {
    let controller = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .cloned();
    let Some(r) = controller else {
        return Ok(workload::resolve(&injector.client, namespace, pod).await?);
    };
    let key = (
        namespace.to_string(),
        r.kind.clone(),
        r.name.clone(),
        r.uid.clone(),
    );
    if let Some(w) = injector.owners.get(&key).await {
        return Ok(w);
    }
    let w = workload::resolve(&injector.client, namespace, pod).await?;
    injector.owners.insert(key, w.clone()).await;
    Ok(w)
}

/// A store, resolved and validated, cached for a few seconds.
async fn resolve_store(
    injector: &Injector,
    namespace: &str,
    reference: &spec::StoreRef,
) -> Result<ResolvedStore, InjectError> {
    let key = (namespace.to_string(), reference.clone());
    if let Some(s) = injector.stores.get(&key).await {
        return Ok(s);
    }
    let s = store::resolve(
        &injector.client,
        namespace,
        reference,
        &injector.config.endpoints,
    )
    .await?;
    injector.stores.insert(key, s.clone()).await;
    Ok(s)
}
