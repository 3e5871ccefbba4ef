//! Bare pods: admission writes a bare pod's Secret before the pod exists (no uid; with
//! `generateName`, no name either), recording the owner as `Pod/<name>` or `Pod/<prefix->`.
//! The leader finds the pod afterwards — by name, or for a prefix with a bounded,
//! namespace-scoped, metadata-only list — by the `secret-injector.io/secrets` annotation the
//! patch wrote, and adopts the Secret (ownerReference to the pod's real uid) through
//! [`crate::managed::adopt`]. Unadopted after the grace period ⇒ an orphan. This runs on the
//! refresher's schedule, never per admission.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::Api;

use super::tracked::Tracked;
use crate::k8s::{Owner, OwnerKind, WorkloadKind};
use crate::spec::ANN_SECRETS;

/// Pods listed per page, and pages at most, when looking for a `generateName` pod.
const PAGE: u32 = 250;
const MAX_PAGES: usize = 20;
/// Clock skew tolerated between the Secret's and the pod's creation.
const SKEW: SignedDuration = SignedDuration::from_secs(5);

/// What a bare pod's Secret should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum PodState {
    /// Adopted, and the pod is there.
    Present,
    /// Its pod is gone (or never appeared within the grace period).
    Gone,
    /// The pod exists: record it as the owner.
    Adopt(Owner),
    /// Not adopted yet and still within the grace period: look again soon.
    Awaiting,
}

/// True for a bare pod's Secret that has no pod uid yet.
pub fn needs_adoption(t: &Tracked) -> bool {
    t.record.owner.kind == OwnerKind::Known(WorkloadKind::Pod) && t.record.owner.uid.is_none()
}

pub async fn bare_pod(
    client: &kube::Client,
    tracked: &Tracked,
    grace: Duration,
) -> Result<PodState, kube::Error> {
    let owner = &tracked.record.owner;
    let api: Api<Pod> = Api::namespaced(client.clone(), &tracked.namespace);
    if let Some(uid) = &owner.uid {
        let Some(pod) = api.get_metadata_opt(&owner.name).await? else {
            return Ok(PodState::Gone);
        };
        if pod.metadata.uid.as_deref() == Some(uid.as_str()) {
            return Ok(PodState::Present);
        }
        // A new pod of the same name that uses this Secret: it is the owner now.
        return Ok(match adoptable(&pod, tracked) {
            Some(owner) => PodState::Adopt(owner),
            None => PodState::Gone,
        });
    }
    if let Some(owner) = find(&api, tracked).await? {
        return Ok(PodState::Adopt(owner));
    }
    let old_enough = tracked.created.is_none_or(|c| {
        Timestamp::now().duration_since(c)
            > SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX)
    });
    Ok(if old_enough {
        PodState::Gone
    } else {
        PodState::Awaiting
    })
}

/// The pod this Secret was written for: named as recorded, or (a `generateName` prefix,
/// which ends in `-`) the first pod with that prefix created since the Secret.
async fn find(api: &Api<Pod>, tracked: &Tracked) -> Result<Option<Owner>, kube::Error> {
    let name = &tracked.record.owner.name;
    if !name.ends_with('-') {
        let pod = api.get_metadata_opt(name).await?;
        return Ok(pod.and_then(|p| adoptable(&p, tracked)));
    }
    let mut params = ListParams::default().limit(PAGE);
    for _ in 0..MAX_PAGES {
        let page = api.list_metadata(&params).await?;
        let found = page.items.iter().find_map(|p| {
            let pod_name = p.metadata.name.as_deref().unwrap_or_default();
            let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let after = match (created, tracked.created) {
                (Some(pod), Some(secret)) => pod >= secret - SKEW,
                _ => true,
            };
            (pod_name.starts_with(name.as_str()) && after)
                .then(|| adoptable(p, tracked))
                .flatten()
        });
        if found.is_some() {
            return Ok(found);
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    Ok(None)
}

/// The pod as the Secret's owner, when its patch named this Secret and it is not being deleted.
fn adoptable(pod: &PartialObjectMeta<Pod>, tracked: &Tracked) -> Option<Owner> {
    let meta = &pod.metadata;
    let lists = meta
        .annotations
        .as_ref()?
        .get(ANN_SECRETS)?
        .split(',')
        .any(|s| s.trim() == tracked.name);
    if !lists || meta.deletion_timestamp.is_some() {
        return None;
    }
    Some(Owner {
        namespace: tracked.namespace.clone(),
        kind: OwnerKind::Known(WorkloadKind::Pod),
        name: meta.name.clone()?,
        uid: Some(meta.uid.clone()?),
    })
}
