//! The managed Secret's annotation schema, defined, written and parsed here only: what the
//! Secret was made from (references, never values), for whom, how often it is refreshed, what
//! a change does to its owner, and when and with what keyed digest it was last written.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use crate::k8s::{Owner, OwnerKind, WorkloadKind};
use crate::spec::{format_duration, parse_duration, Rollout, SourceSpec};
pub use crate::spec::{ANN_FORCE_SYNC, ANN_REFRESH_INTERVAL, ANN_ROLLOUT};

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "secret-injector";
/// The label selector of every managed Secret.
pub const SELECTOR: &str = "app.kubernetes.io/managed-by=secret-injector";
pub const ANN_SOURCE: &str = "secret-injector.io/source";
pub const ANN_SERVICE_ACCOUNT: &str = "secret-injector.io/service-account";
pub const ANN_OWNER: &str = "secret-injector.io/owner";
pub const ANN_LAST_SYNC: &str = "secret-injector.io/last-sync";
pub const ANN_DATA_HMAC: &str = "secret-injector.io/data-hmac";

/// The request a managed Secret was made for. Written at admission, replayed by the refresher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub source: SourceSpec,
    pub service_account: String,
    pub refresh_interval: Duration,
    /// The owning workload; its uid comes from the Secret's ownerReference.
    pub owner: Owner,
    pub rollout: Rollout,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordedError {
    #[error("annotation {0} is missing")]
    Missing(&'static str),
    #[error("annotation {ANN_SOURCE} is not a source spec")]
    Source,
    #[error("annotation {ANN_REFRESH_INTERVAL}: {0}")]
    Interval(String),
    #[error("annotation {ANN_OWNER} is not Kind/name")]
    Owner,
}

impl Recorded {
    pub fn source_json(&self) -> String {
        serde_json::to_string(&self.source).expect("source spec serialises")
    }

    /// The request's annotations (without last-sync and digest).
    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (ANN_SOURCE.to_string(), self.source_json()),
            (
                ANN_SERVICE_ACCOUNT.to_string(),
                self.service_account.clone(),
            ),
            (
                ANN_REFRESH_INTERVAL.to_string(),
                format_duration(self.refresh_interval),
            ),
            (ANN_OWNER.to_string(), self.owner.reference()),
            (ANN_ROLLOUT.to_string(), self.rollout.as_str().to_string()),
        ])
    }

    /// True when `annotations` record the same source, interval and rollout.
    pub fn same_request(&self, annotations: &BTreeMap<String, String>) -> bool {
        let ours = self.annotations();
        [ANN_SOURCE, ANN_REFRESH_INTERVAL, ANN_ROLLOUT]
            .iter()
            .all(|k| annotations.get(*k) == ours.get(*k))
    }

    /// Parse what [`Recorded::annotations`] wrote. `meta` is the Secret's metadata.
    pub fn from_meta(meta: &ObjectMeta) -> Result<Recorded, RecordedError> {
        let empty = BTreeMap::new();
        let ann = meta.annotations.as_ref().unwrap_or(&empty);
        let get = |k: &'static str| ann.get(k).ok_or(RecordedError::Missing(k));
        let source: SourceSpec =
            serde_json::from_str(get(ANN_SOURCE)?).map_err(|_| RecordedError::Source)?;
        let refresh_interval = parse_duration(get(ANN_REFRESH_INTERVAL)?)
            .map_err(|e| RecordedError::Interval(e.to_string()))?;
        let (kind, name) = get(ANN_OWNER)?
            .split_once('/')
            .ok_or(RecordedError::Owner)?;
        let reference = meta
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.kind == kind && r.name == name);
        let namespace = meta.namespace.clone().unwrap_or_default();
        let owner = match reference {
            Some(r) => Owner::from_reference(&namespace, r),
            None => Owner {
                namespace,
                kind: match WorkloadKind::from_kind(kind) {
                    Some(k) => OwnerKind::Known(k),
                    None => OwnerKind::Other {
                        api_version: String::new(),
                        kind: kind.to_string(),
                    },
                },
                name: name.to_string(),
                uid: None,
            },
        };
        // Anything but an explicit "none" restarts, as before the annotation existed.
        let rollout = match ann.get(ANN_ROLLOUT).map(String::as_str) {
            Some("none") => Rollout::None,
            _ => Rollout::Restart,
        };
        Ok(Recorded {
            source,
            service_account: get(ANN_SERVICE_ACCOUNT)?.clone(),
            refresh_interval,
            owner,
            rollout,
        })
    }
}

/// When the data was last written and its keyed digest.
pub fn sync_annotations(data_hmac: String, now: Timestamp) -> [(String, String); 2] {
    [
        (ANN_LAST_SYNC.to_string(), now.to_string()),
        (ANN_DATA_HMAC.to_string(), data_hmac),
    ]
}

/// The keyed digest recorded on a managed Secret.
pub fn data_hmac(meta: &ObjectMeta) -> Option<String> {
    meta.annotations.as_ref()?.get(ANN_DATA_HMAC).cloned()
}

/// The force-sync request recorded on a managed Secret (or a workload).
pub fn force_sync(meta: &ObjectMeta) -> Option<String> {
    meta.annotations.as_ref()?.get(ANN_FORCE_SYNC).cloned()
}

/// True when the labels say the object is ours.
pub fn has_managed_label(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(LABEL_MANAGED_BY))
        .map(String::as_str)
        == Some(MANAGED_BY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{StoreKind, StoreRef};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn recorded(owner: Owner) -> Recorded {
        Recorded {
            source: SourceSpec {
                store_ref: StoreRef {
                    kind: StoreKind::SecretStore,
                    name: "vault".into(),
                },
                data: vec![],
                extract: vec![],
            },
            service_account: "api".into(),
            refresh_interval: Duration::from_secs(90),
            owner,
            rollout: Rollout::None,
        }
    }

    #[test]
    fn round_trips_through_annotations() {
        let owner = Owner::from_reference(
            "ns",
            &OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "api".into(),
                uid: "u-1".into(),
                ..Default::default()
            },
        );
        let r = recorded(owner.clone());
        let meta = ObjectMeta {
            namespace: Some("ns".into()),
            annotations: Some(r.annotations()),
            owner_references: owner.owner_reference().map(|o| vec![o]),
            ..Default::default()
        };
        assert_eq!(Recorded::from_meta(&meta).unwrap(), r);
        assert!(r.same_request(meta.annotations.as_ref().unwrap()));

        let bare = recorded(Owner::bare_pod("ns", "p"));
        let meta = ObjectMeta {
            namespace: Some("ns".into()),
            annotations: Some(bare.annotations()),
            ..Default::default()
        };
        assert_eq!(Recorded::from_meta(&meta).unwrap(), bare);
    }

    #[test]
    fn missing_and_malformed_annotations_are_named() {
        let mut ann = recorded(Owner::bare_pod("ns", "p")).annotations();
        ann.insert(ANN_OWNER.into(), "no-slash".into());
        let meta = ObjectMeta {
            annotations: Some(ann.clone()),
            ..Default::default()
        };
        assert_eq!(Recorded::from_meta(&meta), Err(RecordedError::Owner));
        ann.remove(ANN_SERVICE_ACCOUNT);
        ann.insert(ANN_OWNER.into(), "Pod/p".into());
        let meta = ObjectMeta {
            annotations: Some(ann),
            ..Default::default()
        };
        assert_eq!(
            Recorded::from_meta(&meta),
            Err(RecordedError::Missing(ANN_SERVICE_ACCOUNT))
        );
    }
}
