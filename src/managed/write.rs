//! The one function that writes a managed Secret, for admission and the refresher alike:
//! built from the [`Recorded`](super::Recorded) request and the fetched data, guarded by
//! [`classify`], fenced by resourceVersion. Unchanged data and request ⇒ no write.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::ByteString;
use kube::Api;

use super::guard::{classify, inspect, Existing, Target};
use super::recorded::{
    is_lease_annotation, sync_annotations, Recorded, LABEL_MANAGED_BY, MANAGED_BY,
};
use super::{DigestKey, ManagedError};
use crate::k8s::{is_status, post_params};
use crate::metrics::Metrics;
use crate::redact::SecretBytes;

/// What the writer may assume about the Secret it replaces.
#[derive(Debug)]
pub enum Fence {
    /// Admission: what the guard saw. A concurrent writer makes it look again (a few times).
    Observed(Existing),
    /// The refresher: the resourceVersion it scheduled from. Anyone else's write since then
    /// (an admission, a newer leader) wins: nothing is written.
    Version(String),
}

#[derive(Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Created,
    /// Written; the Secret's new resourceVersion.
    Updated(Option<String>),
    Unchanged,
    /// Under [`Fence::Version`]: the Secret changed since; nothing was written. Under
    /// [`Fence::Observed`], for an issued Secret only: another admission (another replica)
    /// wrote its own, current issuance first; ours was not written and its lease is unused.
    Superseded,
}

/// Admission retries this often when other writers keep winning.
const ATTEMPTS: usize = 4;

/// Build the desired Secret.
pub fn build(
    target: &Target,
    data: &BTreeMap<String, SecretBytes>,
    key: &DigestKey,
    now: Timestamp,
) -> Secret {
    let mut annotations = target.record.annotations();
    annotations.extend(sync_annotations(key.digest(data), now));
    Secret {
        metadata: ObjectMeta {
            name: Some(target.name.clone()),
            namespace: Some(target.namespace.clone()),
            labels: Some(BTreeMap::from([(
                LABEL_MANAGED_BY.to_string(),
                MANAGED_BY.to_string(),
            )])),
            annotations: Some(annotations),
            owner_references: target.record.owner.owner_reference().map(|r| vec![r]),
            ..Default::default()
        },
        type_: Some(target.record.source.secret_type().to_string()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.expose().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Create or update the managed Secret.
pub async fn write(
    api: &Api<Secret>,
    target: &Target,
    data: &BTreeMap<String, SecretBytes>,
    key: &DigestKey,
    fence: Fence,
    metrics: &Metrics,
) -> Result<WriteOutcome, ManagedError> {
    let name = target.name.as_str();
    let (mut existing, retry) = match fence {
        Fence::Observed(existing) => (existing, true),
        Fence::Version(version) => match fenced(api, target, &version).await? {
            Some(existing) => (existing, false),
            None => return Ok(WriteOutcome::Superseded),
        },
    };
    for _attempt in 0..ATTEMPTS {
        let desired = build(target, data, key, Timestamp::now());
        let result = match existing {
            Existing::Absent => api.create(&post_params(), &desired).await.map(|_| {
                metrics.secret_write("create");
                WriteOutcome::Created
            }),
            Existing::Ours { secret, .. } => {
                if unchanged(&secret, &desired, target) {
                    return Ok(WriteOutcome::Unchanged);
                }
                let updated = merge(*secret, desired);
                // `replace` carries the resourceVersion we read: a concurrent writer makes
                // this a 409 instead of being overwritten.
                api.replace(name, &post_params(), &updated).await.map(|w| {
                    metrics.secret_write("update");
                    WriteOutcome::Updated(w.metadata.resource_version)
                })
            }
        };
        match result {
            Ok(outcome) => return Ok(outcome),
            Err(e) if is_status(&e, 409) && retry => {
                existing = inspect(api, target).await?;
                if let Some(outcome) = issued_elsewhere(&existing, target) {
                    return Ok(outcome);
                }
            }
            Err(e) if is_status(&e, 409) => return Ok(WriteOutcome::Superseded),
            Err(e) => return Err(ManagedError::api(name, e)),
        }
    }
    Err(ManagedError::Contended {
        name: name.to_string(),
    })
}

/// Rewrite only the recorded request (e.g. a renewed lease) of the Secret the refresher
/// scheduled at `version`, keeping its data. Anyone else's write since then wins.
pub async fn update_record(
    api: &Api<Secret>,
    target: &Target,
    key: &DigestKey,
    version: &str,
    metrics: &Metrics,
) -> Result<WriteOutcome, ManagedError> {
    let Some(existing) = fenced(api, target, version).await? else {
        return Ok(WriteOutcome::Superseded);
    };
    let Existing::Ours { secret, .. } = &existing else {
        return Ok(WriteOutcome::Superseded);
    };
    let data: BTreeMap<String, SecretBytes> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), SecretBytes::new(v.0.clone())))
        .collect();
    let desired = build(target, &data, key, Timestamp::now());
    if unchanged(secret, &desired, target) {
        return Ok(WriteOutcome::Unchanged);
    }
    let Existing::Ours { secret, .. } = existing else {
        unreachable!("matched above")
    };
    match api
        .replace(&target.name, &post_params(), &merge(*secret, desired))
        .await
    {
        Ok(w) => {
            metrics.secret_write("update");
            Ok(WriteOutcome::Updated(w.metadata.resource_version))
        }
        Err(e) if is_status(&e, 409) => Ok(WriteOutcome::Superseded),
        Err(e) => Err(ManagedError::api(&target.name, e)),
    }
}

/// After a conflict on an issued Secret: a current Secret with *another* lease means a
/// concurrent admission won (keep theirs: overwriting would orphan credentials its pods already
/// use); with *our* lease it is our own issuance, already written.
fn issued_elsewhere(existing: &Existing, target: &Target) -> Option<WriteOutcome> {
    if !target.record.source.is_issued() || !existing.is_current() {
        return None;
    }
    let Existing::Ours { secret, .. } = existing else {
        return None;
    };
    let theirs = Recorded::from_meta(&secret.metadata).ok()?.lease?.id;
    let ours = &target.record.lease.as_ref()?.id;
    Some(if theirs == *ours {
        WriteOutcome::Unchanged
    } else {
        WriteOutcome::Superseded
    })
}

/// The Secret as it is now, when it is still the version the refresher saw and still ours for
/// the same request; None otherwise.
async fn fenced(
    api: &Api<Secret>,
    target: &Target,
    version: &str,
) -> Result<Option<Existing>, ManagedError> {
    let Some(secret) = api
        .get_opt(&target.name)
        .await
        .map_err(|e| ManagedError::api(&target.name, e))?
    else {
        return Ok(None);
    };
    if secret.metadata.resource_version.as_deref() != Some(version) {
        return Ok(None);
    }
    Ok(match classify(secret, target) {
        Ok(existing @ Existing::Ours { .. }) => Some(existing),
        // Rewritten for another request since it was scheduled: the watch brings it.
        _ => None,
    })
}

/// Same data, same request, same ownerReferences: nothing to write.
fn unchanged(secret: &Secret, desired: &Secret, target: &Target) -> bool {
    let empty = BTreeMap::new();
    let annotations = secret.metadata.annotations.as_ref().unwrap_or(&empty);
    secret.data.as_ref() == desired.data.as_ref()
        && secret.metadata.owner_references == desired.metadata.owner_references
        && target.record.same_request(annotations)
        && target.record.same_lease(annotations)
}

/// The desired Secret over the current one: labels and annotations others added (e.g. GitOps
/// tooling) are kept, ours win; the resourceVersion read is the fence.
fn merge(current: Secret, mut desired: Secret) -> Secret {
    desired.metadata.resource_version = current.metadata.resource_version;
    let mut labels = current.metadata.labels.unwrap_or_default();
    labels.extend(desired.metadata.labels.take().unwrap_or_default());
    desired.metadata.labels = Some(labels);
    let mut annotations = current.metadata.annotations.unwrap_or_default();
    // The lease annotations are one set: a field the new record lacks must go.
    annotations.retain(|k, _| !is_lease_annotation(k));
    annotations.extend(desired.metadata.annotations.take().unwrap_or_default());
    desired.metadata.annotations = Some(annotations);
    desired
}

/// Adopt a bare pod's Secret: it was recorded at admission before the pod had a uid (and, with
/// `generateName`, a name); now that the pod exists, record the pod's real name and set the
/// ownerReference to its uid, so the garbage collector removes the Secret with the pod. The
/// data is kept as it is. Fenced like every refresher write: the Secret must still be
/// `version` and ours for `target` (as recorded), else nothing is written.
pub async fn adopt(
    api: &Api<Secret>,
    target: &Target,
    version: &str,
    pod: &crate::k8s::Owner,
    metrics: &Metrics,
) -> Result<WriteOutcome, ManagedError> {
    let Some(Existing::Ours { secret, .. }) = fenced(api, target, version).await? else {
        return Ok(WriteOutcome::Superseded);
    };
    let mut secret = *secret;
    let mut record = target.record.clone();
    record.owner = pod.clone();
    let mut annotations = secret.metadata.annotations.take().unwrap_or_default();
    annotations.extend(record.annotations());
    secret.metadata.annotations = Some(annotations);
    secret.metadata.owner_references = pod.owner_reference().map(|r| vec![r]);
    secret.metadata.managed_fields = None;
    match api.replace(&target.name, &post_params(), &secret).await {
        Ok(written) => {
            metrics.secret_write("adopt");
            Ok(WriteOutcome::Updated(written.metadata.resource_version))
        }
        Err(e) if is_status(&e, 409) => Ok(WriteOutcome::Superseded),
        Err(e) => Err(ManagedError::api(&target.name, e)),
    }
}
