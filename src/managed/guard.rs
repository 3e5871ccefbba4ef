//! The ownership guard: a Secret at the target name is written only when it is provably ours
//! — our label, type Opaque, not immutable, the same owner and the same ServiceAccount.
//! Anything else with that name is never touched.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Api;

/// Issued credentials with less life left than this (or a tenth of their lifetime, if less)
/// are not handed to a new pod.
const ISSUED_MARGIN: std::time::Duration = std::time::Duration::from_secs(30);

use super::recorded::{has_managed_label, Recorded, ANN_OWNER, ANN_SERVICE_ACCOUNT};
use super::ManagedError;

/// One managed Secret to read or write: where, and the request it records.
#[derive(Clone, Debug)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    pub record: Recorded,
}

/// What is already at the target name.
#[derive(Debug)]
pub enum Existing {
    Absent,
    /// Ours, for the same owner and ServiceAccount. `current`: made from the same request
    /// (source, interval, rollout, owner uid), so admission needs no backend call.
    Ours {
        secret: Box<Secret>,
        current: bool,
    },
}

impl Existing {
    pub fn is_current(&self) -> bool {
        matches!(self, Existing::Ours { current: true, .. })
    }
}

/// Read the target and apply the ownership guard.
pub async fn inspect(api: &Api<Secret>, target: &Target) -> Result<Existing, ManagedError> {
    let found = api
        .get_opt(&target.name)
        .await
        .map_err(|source| ManagedError::api(&target.name, source))?;
    match found {
        None => Ok(Existing::Absent),
        Some(secret) => classify(secret, target),
    }
}

/// Apply the ownership guard to what is at the target name.
pub fn classify(secret: Secret, target: &Target) -> Result<Existing, ManagedError> {
    let current = judge(
        &secret.metadata,
        secret.type_.as_deref(),
        secret.immutable,
        target,
    )?;
    Ok(Existing::Ours {
        current,
        secret: Box::new(secret),
    })
}

/// The ownership guard on a Secret's metadata (and its `type`, `immutable`), borrowed: Ok
/// when it is ours for this target, with whether it is current. A warm admission judges the
/// indexed metadata in place with this.
pub fn judge(
    meta: &ObjectMeta,
    type_: Option<&str>,
    immutable: Option<bool>,
    target: &Target,
) -> Result<bool, ManagedError> {
    let ours = has_managed_label(meta)
        && type_.unwrap_or("Opaque") == target.record.source.secret_type()
        && immutable != Some(true);
    if !ours {
        return Err(ManagedError::Foreign {
            name: target.name.clone(),
        });
    }
    let empty = BTreeMap::new();
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    let owner = &target.record.owner;
    let recorded_owner = annotations.get(ANN_OWNER);
    if !recorded_owner.is_some_and(|r| owner.is_reference(r)) {
        return Err(ManagedError::OtherOwner {
            name: target.name.clone(),
            existing_owner: recorded_owner
                .cloned()
                .unwrap_or_else(|| "an unknown owner".into()),
            owner: owner.reference(),
        });
    }
    let sa = &target.record.service_account;
    recorded_as(annotations, ANN_SERVICE_ACCOUNT, sa).map_err(|existing| {
        ManagedError::OtherServiceAccount {
            name: target.name.clone(),
            existing: existing.unwrap_or_else(|| "(none recorded)".into()),
            requested: sa.clone(),
        }
    })?;
    // Current means "made from the same request": the refresher keeps its values fresh, so
    // admission reuses it without a backend call however long ago it was last written.
    let same_request = target.record.same_request(annotations);
    // A workload deleted and recreated under the same name has a new uid: the Secret must be
    // rewritten with the new ownerReference, or the garbage collector would remove it.
    let same_owner_uid = match &target.record.owner.uid {
        Some(uid) => meta
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == *uid),
        None => true,
    };
    // Issued credentials are current only while they have life left: an expired (or nearly
    // expired) lease is re-issued, never handed to a new pod.
    let alive = !target.record.source.is_issued()
        || Recorded::from_meta(meta)
            .ok()
            .and_then(|r| r.lease)
            .is_some_and(|l| {
                let margin = ISSUED_MARGIN.min(l.lifetime() / 10);
                l.expires() > super::recorded::after(Timestamp::now(), margin)
            });
    Ok(same_request && same_owner_uid && alive)
}

/// Ok when `annotations` record `expected` under `key`; otherwise what they record there.
fn recorded_as(
    annotations: &BTreeMap<String, String>,
    key: &str,
    expected: &str,
) -> Result<(), Option<String>> {
    match annotations.get(key) {
        Some(v) if v == expected => Ok(()),
        other => Err(other.cloned()),
    }
}
