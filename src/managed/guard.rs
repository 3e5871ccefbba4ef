//! The ownership guard: a Secret at the target name is written only when it is provably ours
//! — our label, type Opaque, not immutable, the same owner and the same ServiceAccount.
//! Anything else with that name is never touched.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::Api;

/// Issued credentials with less life left than this (or a tenth of their lifetime, if less)
/// are not handed to a new pod.
const ISSUED_MARGIN: std::time::Duration = std::time::Duration::from_secs(30);

use super::recorded::{
    has_managed_label, Annotated, Recorded, RecordedMeta, ANN_OWNER, ANN_SERVICE_ACCOUNT,
};
use super::ManagedError;
use super::ManagedMeta;

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
    let ours = has_managed_label(&secret.metadata)
        && secret.type_.as_deref().unwrap_or("Opaque") == target.record.source.secret_type()
        && secret.immutable != Some(true);
    if !ours {
        return Err(ManagedError::Foreign {
            name: target.name.clone(),
        });
    }
    Ok(Existing::Ours {
        current: judge(&secret.metadata, target)?,
        secret: Box::new(secret),
    })
}

/// What [`classify`] says of the indexed Secret: true when it is ours and current for
/// `target`. The index watches our label and keeps metadata only, which carries no type and
/// no immutability: read, as `classify` reads metadata, as a mutable Opaque Secret.
pub fn current_in_index(indexed: &ManagedMeta, target: &Target) -> bool {
    target.record.source.secret_type() == "Opaque" && judge(indexed, target).unwrap_or(false)
}

/// The guard past label and type: the same owner and ServiceAccount, or an error naming
/// what is recorded instead; then whether the Secret is current for `target`.
fn judge(meta: &impl RecordedMeta, target: &Target) -> Result<bool, ManagedError> {
    let name = &target.name;
    let owner = &target.record.owner;
    let recorded_owner = meta.annotation(ANN_OWNER);
    // Compared without formatting the reference: every warm admission asks this.
    if !recorded_owner.is_some_and(|r| owner.is_reference(r)) {
        return Err(ManagedError::OtherOwner {
            name: name.clone(),
            existing_owner: recorded_owner.map_or_else(|| "an unknown owner".into(), String::from),
            owner: owner.reference(),
        });
    }
    let sa = &target.record.service_account;
    recorded_as(meta, ANN_SERVICE_ACCOUNT, sa).map_err(|existing| {
        ManagedError::OtherServiceAccount {
            name: name.clone(),
            existing: existing.unwrap_or_else(|| "(none recorded)".into()),
            requested: sa.clone(),
        }
    })?;
    // Current means "made from the same request": the refresher keeps its values fresh, so
    // admission reuses it without a backend call however long ago it was last written.
    let same_request = target.record.same_request(meta);
    // A workload deleted and recreated under the same name has a new uid: the Secret must be
    // rewritten with the new ownerReference, or the garbage collector would remove it.
    let same_owner_uid = match &target.record.owner.uid {
        Some(uid) => meta.owner_references().any(|r| r.uid == uid),
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

/// Ok when `meta` records `expected` under `key`; otherwise what it records there.
fn recorded_as(meta: &impl Annotated, key: &str, expected: &str) -> Result<(), Option<String>> {
    match meta.annotation(key) {
        Some(v) if v == expected => Ok(()),
        other => Err(other.map(str::to_string)),
    }
}
