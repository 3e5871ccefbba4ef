//! The managed Secret: built from fetched values, written only when absent or when it is
//! provably ours (label, owner and ServiceAccount all match). Anything else with the name is
//! never touched.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::Api;
use sha2::Sha256;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::identity::PodIdentity;
use crate::metrics::Metrics;
use crate::redact::SecretBytes;
use crate::spec::{format_duration, SecretItem, SourceSpec};

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "secret-injector";
pub const ANN_SOURCE: &str = "secret-injector.io/source";
pub const ANN_SERVICE_ACCOUNT: &str = "secret-injector.io/service-account";
pub const ANN_REFRESH_INTERVAL: &str = "secret-injector.io/refresh-interval";
pub const ANN_OWNER: &str = "secret-injector.io/owner";
pub const ANN_LAST_SYNC: &str = "secret-injector.io/last-sync";
pub const ANN_DATA_HMAC: &str = "secret-injector.io/data-hmac";
pub const ANN_ROLLOUT: &str = "secret-injector.io/rollout";

/// Our name in `managedFields`, so GitOps tools can tell our writes from theirs.
pub const FIELD_MANAGER: &str = "secret-injector";

pub fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

pub fn patch_params() -> kube::api::PatchParams {
    kube::api::PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..kube::api::PatchParams::default()
    }
}

/// The workload a managed Secret belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// None for a bare pod (its uid does not exist yet at admission).
    pub uid: Option<String>,
}

impl Owner {
    /// `Kind/name`, as recorded in the `secret-injector.io/owner` annotation.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// Key for the HMAC recorded on managed Secrets: a digest of secret data without a key
/// could be brute-forced for short values, so only a keyed digest ever leaves the process.
#[derive(Clone)]
pub struct DigestKey(SecretBytes);

impl DigestKey {
    pub fn new(key: SecretBytes) -> Self {
        Self(key)
    }

    pub fn random() -> Self {
        let mut bytes = vec![0u8; 32];
        rand::Rng::fill(&mut rand::rng(), bytes.as_mut_slice());
        Self(SecretBytes::new(bytes))
    }

    /// HMAC-SHA256 over the sorted, length-prefixed entries, hex-encoded.
    pub fn digest(&self, data: &BTreeMap<String, SecretBytes>) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose())
            .expect("HMAC takes any key length");
        for (k, v) in data {
            mac.update(&(k.len() as u64).to_be_bytes());
            mac.update(k.as_bytes());
            mac.update(&(v.len() as u64).to_be_bytes());
            mac.update(v.expose());
        }
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    #[error(
        "Secret {name} already exists and is not managed by secret-injector; it was left untouched. \
         Choose another name (secret-injector.io/secret-name or the item's name) or remove that Secret"
    )]
    Foreign { name: String },
    #[error(
        "Secret {name} is managed by secret-injector for {existing_owner}, not for {owner}; it was left \
         untouched. Give this workload its own Secret name"
    )]
    OtherOwner {
        name: String,
        existing_owner: String,
        owner: String,
    },
    #[error(
        "Secret {name} was written for ServiceAccount {existing}, but this pod runs as {requested}; it was \
         left untouched. Use the same ServiceAccount or another Secret name"
    )]
    OtherServiceAccount {
        name: String,
        existing: String,
        requested: String,
    },
    #[error("reading or writing Secret {name} failed: {}", crate::api_error_message(.source))]
    Api {
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("writing Secret {name} kept conflicting with concurrent writers; try again")]
    Contended { name: String },
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

/// Everything needed to write one managed Secret except the values.
pub struct Target<'a> {
    pub namespace: &'a str,
    pub item: &'a SecretItem,
    pub identity: &'a PodIdentity,
    pub owner: &'a Owner,
}

impl Target<'_> {
    fn name(&self) -> &str {
        &self.item.secret_name
    }

    fn source_json(&self) -> String {
        serde_json::to_string(&self.item.source()).expect("source spec serialises")
    }
}

/// Read the target and apply the ownership guard.
pub async fn inspect(api: &Api<Secret>, target: &Target<'_>) -> Result<Existing, ManagedError> {
    let found = api
        .get_opt(target.name())
        .await
        .map_err(|source| ManagedError::Api {
            name: target.name().to_string(),
            source: Box::new(source),
        })?;
    match found {
        None => Ok(Existing::Absent),
        Some(secret) => classify(secret, target),
    }
}

/// A warm answer from the watch-fed index: `Some` only when the indexed Secret is ours and
/// current for this target. Anything else (absent, foreign, stale) falls back to a GET, which
/// is authoritative.
pub fn current_in_index(
    index: &kube::runtime::reflector::Store<kube::core::PartialObjectMeta<Secret>>,
    target: &Target<'_>,
) -> Option<Existing> {
    let key = kube::runtime::reflector::ObjectRef::new(target.name()).within(target.namespace);
    let indexed = index.get(&key)?;
    let secret = Secret {
        metadata: indexed.metadata.clone(),
        ..Default::default()
    };
    match classify(secret, target) {
        Ok(Existing::Ours {
            current: true,
            secret,
        }) => Some(Existing::Ours {
            current: true,
            secret,
        }),
        _ => None,
    }
}

fn classify(secret: Secret, target: &Target<'_>) -> Result<Existing, ManagedError> {
    let name = target.name().to_string();
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let ours = labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY)
        && secret.type_.as_deref().unwrap_or("Opaque") == "Opaque"
        && secret.immutable != Some(true);
    if !ours {
        return Err(ManagedError::Foreign { name });
    }
    let owner = target.owner.reference();
    match annotations.get(ANN_OWNER) {
        Some(existing) if *existing == owner => {}
        existing => {
            return Err(ManagedError::OtherOwner {
                name,
                existing_owner: existing
                    .cloned()
                    .unwrap_or_else(|| "an unknown owner".into()),
                owner,
            })
        }
    }
    let sa = &target.identity.service_account;
    match annotations.get(ANN_SERVICE_ACCOUNT) {
        Some(existing) if existing == sa => {}
        existing => {
            return Err(ManagedError::OtherServiceAccount {
                name,
                existing: existing
                    .cloned()
                    .unwrap_or_else(|| "(none recorded)".into()),
                requested: sa.clone(),
            })
        }
    }
    // Current means "made from the same request": the refresher keeps its values fresh, so
    // admission reuses it without a backend call however long ago it was last written.
    let same_request = annotations.get(ANN_SOURCE).map(String::as_str)
        == Some(target.source_json().as_str())
        && annotations.get(ANN_REFRESH_INTERVAL).map(String::as_str)
            == Some(format_duration(target.item.refresh_interval).as_str())
        && annotations.get(ANN_ROLLOUT).map(String::as_str) == Some(target.item.rollout.as_str());
    // A workload deleted and recreated under the same name has a new uid: the Secret must be
    // rewritten with the new ownerReference, or the garbage collector would remove it.
    let same_owner_uid = match &target.owner.uid {
        Some(uid) => secret
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == *uid),
        None => true,
    };
    Ok(Existing::Ours {
        current: same_request && same_owner_uid,
        secret: Box::new(secret),
    })
}

/// Build the desired Secret.
pub fn build(
    target: &Target<'_>,
    data: &BTreeMap<String, SecretBytes>,
    key: &DigestKey,
    now: OffsetDateTime,
) -> Secret {
    let mut annotations = BTreeMap::new();
    annotations.insert(ANN_SOURCE.to_string(), target.source_json());
    annotations.insert(
        ANN_SERVICE_ACCOUNT.to_string(),
        target.identity.service_account.clone(),
    );
    annotations.insert(
        ANN_REFRESH_INTERVAL.to_string(),
        format_duration(target.item.refresh_interval),
    );
    annotations.insert(ANN_OWNER.to_string(), target.owner.reference());
    annotations.insert(
        ANN_ROLLOUT.to_string(),
        target.item.rollout.as_str().to_string(),
    );
    annotations.insert(
        ANN_LAST_SYNC.to_string(),
        now.format(&Rfc3339).expect("RFC 3339 formats"),
    );
    annotations.insert(ANN_DATA_HMAC.to_string(), key.digest(data));
    let owner_references = target.owner.uid.as_ref().map(|uid| {
        vec![OwnerReference {
            api_version: target.owner.api_version.clone(),
            kind: target.owner.kind.clone(),
            name: target.owner.name.clone(),
            uid: uid.clone(),
            controller: None,
            block_owner_deletion: None,
        }]
    });
    Secret {
        metadata: ObjectMeta {
            name: Some(target.name().to_string()),
            namespace: Some(target.namespace.to_string()),
            labels: Some(BTreeMap::from([(
                LABEL_MANAGED_BY.to_string(),
                MANAGED_BY.to_string(),
            )])),
            annotations: Some(annotations),
            owner_references,
            ..Default::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.expose().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Created,
    Updated,
    Unchanged,
}

/// Create or update the Secret, fenced by resourceVersion. Unchanged data and source ⇒ no write.
pub async fn write(
    api: &Api<Secret>,
    target: &Target<'_>,
    data: &BTreeMap<String, SecretBytes>,
    key: &DigestKey,
    mut existing: Existing,
    metrics: &Metrics,
) -> Result<WriteOutcome, ManagedError> {
    let name = target.name().to_string();
    let api_err = |source| ManagedError::Api {
        name: name.clone(),
        source: Box::new(source),
    };
    for _attempt in 0..4 {
        let now = OffsetDateTime::now_utc();
        let desired = build(target, data, key, now);
        match existing {
            Existing::Absent => match api.create(&post_params(), &desired).await {
                Ok(_) => {
                    metrics.secret_write("create");
                    return Ok(WriteOutcome::Created);
                }
                // Another replica (or another pod of the workload) won the race: look again.
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    existing = inspect(api, target).await?;
                }
                Err(e) => return Err(api_err(e)),
            },
            Existing::Ours { secret, .. } => {
                let ann = secret.metadata.annotations.clone().unwrap_or_default();
                let same = ann.get(ANN_DATA_HMAC)
                    == desired
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(ANN_DATA_HMAC))
                    && ann.get(ANN_SOURCE)
                        == desired
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(ANN_SOURCE))
                    && secret.data.as_ref() == desired.data.as_ref()
                    && secret.metadata.owner_references == desired.metadata.owner_references
                    && [ANN_REFRESH_INTERVAL, ANN_ROLLOUT].iter().all(|k| {
                        ann.get(*k)
                            == desired
                                .metadata
                                .annotations
                                .as_ref()
                                .and_then(|a| a.get(*k))
                    });
                if same {
                    return Ok(WriteOutcome::Unchanged);
                }
                let mut updated = desired;
                updated.metadata.resource_version = secret.metadata.resource_version.clone();
                // Keep labels/annotations others added (e.g. by GitOps tooling); ours win.
                let mut labels = secret.metadata.labels.clone().unwrap_or_default();
                labels.extend(updated.metadata.labels.take().unwrap_or_default());
                updated.metadata.labels = Some(labels);
                let mut annotations = ann;
                annotations.extend(updated.metadata.annotations.take().unwrap_or_default());
                updated.metadata.annotations = Some(annotations);
                match api.replace(&name, &post_params(), &updated).await {
                    Ok(_) => {
                        metrics.secret_write("update");
                        return Ok(WriteOutcome::Updated);
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        existing = inspect(api, target).await?;
                    }
                    Err(e) => return Err(api_err(e)),
                }
            }
        }
    }
    Err(ManagedError::Contended { name })
}

/// Used by docs and tests: the interval annotation round-trips through the spec grammar.
pub fn parse_recorded_interval(text: &str) -> Option<Duration> {
    crate::spec::parse_duration(text).ok()
}

/// The source recorded on a managed Secret.
pub fn recorded_source(secret: &Secret) -> Option<SourceSpec> {
    let text = secret.metadata.annotations.as_ref()?.get(ANN_SOURCE)?;
    serde_json::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_keyed_and_order_independent() {
        let a = DigestKey::new(SecretBytes::new(b"key-a".to_vec()));
        let b = DigestKey::new(SecretBytes::new(b"key-b".to_vec()));
        let data: BTreeMap<String, SecretBytes> = [("x", "1"), ("y", "2")]
            .iter()
            .map(|(k, v)| (k.to_string(), SecretBytes::new(v.as_bytes().to_vec())))
            .collect();
        assert_eq!(a.digest(&data).len(), 64);
        assert_ne!(a.digest(&data), b.digest(&data));
        // Length prefixes: ("ab","c") and ("a","bc") must differ.
        let d1: BTreeMap<_, _> = [("ab".to_string(), SecretBytes::new(b"c".to_vec()))].into();
        let d2: BTreeMap<_, _> = [("a".to_string(), SecretBytes::new(b"bc".to_vec()))].into();
        assert_ne!(a.digest(&d1), a.digest(&d2));
    }
}
