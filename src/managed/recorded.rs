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
/// The lease of an issued Secret (dynamic secret or certificate). A lease id is a reference,
/// not a credential (Vault's model); the credential and every token stay out of annotations.
pub const ANN_LEASE_ID: &str = "secret-injector.io/lease-id";
pub const ANN_LEASE_ISSUED: &str = "secret-injector.io/lease-issued";
pub const ANN_LEASE_TTL: &str = "secret-injector.io/lease-ttl";
pub const ANN_LEASE_RENEWED: &str = "secret-injector.io/lease-renewed";
pub const ANN_LEASE_RENEWABLE: &str = "secret-injector.io/lease-renewable";
pub const ANN_LEASE_HOLDER: &str = "secret-injector.io/lease-holder";
pub const ANN_LEASE_HOLDER_EXPIRES: &str = "secret-injector.io/lease-holder-expires";
/// Derived, for operators: min(lease end, holder token expiry).
pub const ANN_LEASE_EXPIRES: &str = "secret-injector.io/lease-expires";
/// When the refresher next renews or re-issues.
pub const ANN_LEASE_NEXT: &str = "secret-injector.io/lease-next-action";
/// Previous leases still in use by old pods, revoked after the grace period (JSON list).
pub const ANN_LEASE_RETIRING: &str = "secret-injector.io/lease-retiring";
const LEASE_PREFIX: &str = "secret-injector.io/lease-";

/// Every annotation read back from a managed Secret — by [`Recorded::from_meta`], the guard,
/// [`data_hmac`] and [`force_sync`] — and so all that the index keeps of its annotations
/// ([`super::ManagedMeta`]). A new annotation that is read back is added here too.
pub const KEPT: [&str; 16] = [
    ANN_SOURCE,
    ANN_SERVICE_ACCOUNT,
    ANN_REFRESH_INTERVAL,
    ANN_OWNER,
    ANN_ROLLOUT,
    ANN_DATA_HMAC,
    ANN_FORCE_SYNC,
    ANN_LEASE_ID,
    ANN_LEASE_ISSUED,
    ANN_LEASE_TTL,
    ANN_LEASE_RENEWED,
    ANN_LEASE_RENEWABLE,
    ANN_LEASE_HOLDER,
    ANN_LEASE_HOLDER_EXPIRES,
    ANN_LEASE_NEXT,
    ANN_LEASE_RETIRING,
];

/// Where annotations are read from: a Secret's metadata, a plain map, or the index's trimmed
/// copy of a managed Secret ([`super::ManagedMeta`]).
pub trait Annotated {
    fn annotation(&self, key: &str) -> Option<&str>;
}

/// One ownerReference, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnerRef<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

/// The metadata a [`Recorded`] is parsed from (and the ownership guard reads).
pub trait RecordedMeta: Annotated {
    fn namespace(&self) -> &str;
    fn owner_references(&self) -> impl Iterator<Item = OwnerRef<'_>>;
}

impl Annotated for BTreeMap<String, String> {
    fn annotation(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Annotated for ObjectMeta {
    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.annotation(key)
    }
}

impl RecordedMeta for ObjectMeta {
    fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }

    fn owner_references(&self) -> impl Iterator<Item = OwnerRef<'_>> {
        self.owner_references.iter().flatten().map(|r| OwnerRef {
            api_version: &r.api_version,
            kind: &r.kind,
            name: &r.name,
            uid: &r.uid,
        })
    }
}

/// The request a managed Secret was made for. Written at admission, replayed by the refresher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub source: SourceSpec,
    pub service_account: String,
    pub refresh_interval: Duration,
    /// The owning workload; its uid comes from the Secret's ownerReference.
    pub owner: Owner,
    pub rollout: Rollout,
    /// Issued sources only: the lease the current data was issued with.
    pub lease: Option<LeaseRecord>,
}

/// Who holds (is the parent of) the lease in Vault: leases die with their token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseHolder {
    /// An orphan token minted for the issuance and discarded (the default).
    OrphanToken,
    /// The login token itself (create-orphan refused): the lease ends with it.
    LoginToken,
    /// No token involved (a certificate: its lifetime is its own).
    None,
}

impl LeaseHolder {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseHolder::OrphanToken => "orphan-token",
            LeaseHolder::LoginToken => "login-token",
            LeaseHolder::None => "none",
        }
    }

    fn parse(s: &str) -> LeaseHolder {
        match s {
            "orphan-token" => LeaseHolder::OrphanToken,
            "login-token" => LeaseHolder::LoginToken,
            _ => LeaseHolder::None,
        }
    }
}

/// A lease no longer in the Secret but maybe still in use by old pods.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retiring {
    pub id: String,
    pub revoke_at: Timestamp,
}

/// The lease of an issued Secret, as recorded on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Empty when the answer had no lease (a certificate without `generate_lease`).
    pub id: String,
    pub issued: Timestamp,
    /// TTL granted at issue or at the last renewal.
    pub ttl: Duration,
    pub renewed: Option<Timestamp>,
    pub renewable: bool,
    pub holder: LeaseHolder,
    pub holder_expires: Option<Timestamp>,
    /// The next renewal or re-issue.
    pub next: Timestamp,
    pub retiring: Vec<Retiring>,
}

/// `t + d`, saturating.
pub fn after(t: Timestamp, d: Duration) -> Timestamp {
    let d = k8s_openapi::jiff::SignedDuration::try_from(d)
        .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX);
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// `b - a`, zero when negative.
pub fn between(a: Timestamp, b: Timestamp) -> Duration {
    Duration::try_from(b.duration_since(a)).unwrap_or(Duration::ZERO)
}

fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

impl LeaseRecord {
    /// When the credentials stop working: the lease's end, or its holder token's expiry.
    pub fn expires(&self) -> Timestamp {
        let end = after(self.renewed.unwrap_or(self.issued), self.ttl);
        match self.holder_expires {
            Some(h) if h < end => h,
            _ => end,
        }
    }

    /// The whole life the credentials can have: from issue to [`LeaseRecord::expires`].
    pub fn lifetime(&self) -> Duration {
        between(self.issued, self.expires())
    }

    fn annotations(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            (ANN_LEASE_ID, self.id.clone()),
            (ANN_LEASE_ISSUED, whole_seconds(self.issued).to_string()),
            (ANN_LEASE_TTL, format_duration(self.ttl)),
            (ANN_LEASE_RENEWABLE, self.renewable.to_string()),
            (ANN_LEASE_HOLDER, self.holder.as_str().to_string()),
            (ANN_LEASE_EXPIRES, whole_seconds(self.expires()).to_string()),
            (ANN_LEASE_NEXT, whole_seconds(self.next).to_string()),
        ];
        if let Some(r) = self.renewed {
            out.push((ANN_LEASE_RENEWED, whole_seconds(r).to_string()));
        }
        if let Some(h) = self.holder_expires {
            out.push((ANN_LEASE_HOLDER_EXPIRES, whole_seconds(h).to_string()));
        }
        if !self.retiring.is_empty() {
            out.push((
                ANN_LEASE_RETIRING,
                serde_json::to_string(&self.retiring).expect("retiring leases serialise"),
            ));
        }
        out
    }

    fn from_annotations(ann: &impl Annotated) -> Result<Option<LeaseRecord>, RecordedError> {
        let Some(issued) = ann.annotation(ANN_LEASE_ISSUED) else {
            return Ok(None);
        };
        let time =
            |k: &'static str, v: &str| v.parse::<Timestamp>().map_err(|_| RecordedError::Lease(k));
        let opt_time = |k: &'static str| ann.annotation(k).map(|v| time(k, v)).transpose();
        let get = |k: &'static str| ann.annotation(k).ok_or(RecordedError::Lease(k));
        Ok(Some(LeaseRecord {
            id: get(ANN_LEASE_ID)?.to_string(),
            issued: time(ANN_LEASE_ISSUED, issued)?,
            ttl: parse_duration(get(ANN_LEASE_TTL)?)
                .map_err(|_| RecordedError::Lease(ANN_LEASE_TTL))?,
            renewed: opt_time(ANN_LEASE_RENEWED)?,
            renewable: get(ANN_LEASE_RENEWABLE)? == "true",
            holder: LeaseHolder::parse(get(ANN_LEASE_HOLDER)?),
            holder_expires: opt_time(ANN_LEASE_HOLDER_EXPIRES)?,
            next: time(ANN_LEASE_NEXT, get(ANN_LEASE_NEXT)?)?,
            retiring: match ann.annotation(ANN_LEASE_RETIRING) {
                Some(v) => {
                    serde_json::from_str(v).map_err(|_| RecordedError::Lease(ANN_LEASE_RETIRING))?
                }
                None => Vec::new(),
            },
        }))
    }
}

/// True for the lease annotations (replaced as a set on every write).
pub fn is_lease_annotation(key: &str) -> bool {
    key.starts_with(LEASE_PREFIX)
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
    #[error("annotation {0} is missing or malformed")]
    Lease(&'static str),
}

impl Recorded {
    pub fn source_json(&self) -> String {
        serde_json::to_string(&self.source).expect("source spec serialises")
    }

    /// The request's annotations (without last-sync and digest), with the lease when issued.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut out = self.request_annotations();
        for (k, v) in self.lease.iter().flat_map(LeaseRecord::annotations) {
            out.insert(k.to_string(), v);
        }
        out
    }

    /// True when `annotations` record exactly this lease (or, like this record, none).
    pub fn same_lease(&self, annotations: &BTreeMap<String, String>) -> bool {
        let ours = self.annotations();
        let theirs = annotations.iter().filter(|(k, _)| is_lease_annotation(k));
        let mine = ours.iter().filter(|(k, _)| is_lease_annotation(k));
        theirs.eq(mine)
    }

    fn request_annotations(&self) -> BTreeMap<String, String> {
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
    pub fn same_request(&self, annotations: &impl Annotated) -> bool {
        // Cheapest first: every admission asks this of every managed Secret it names.
        annotations.annotation(ANN_ROLLOUT) == Some(self.rollout.as_str())
            && annotations.annotation(ANN_REFRESH_INTERVAL)
                == Some(format_duration(self.refresh_interval).as_str())
            && annotations.annotation(ANN_SOURCE) == Some(self.source_json().as_str())
    }

    /// Parse what [`Recorded::annotations`] wrote. `meta` is the Secret's metadata (or the
    /// index's copy of it).
    pub fn from_meta(meta: &impl RecordedMeta) -> Result<Recorded, RecordedError> {
        let get = |k: &'static str| meta.annotation(k).ok_or(RecordedError::Missing(k));
        let source: SourceSpec =
            serde_json::from_str(get(ANN_SOURCE)?).map_err(|_| RecordedError::Source)?;
        let refresh_interval = parse_duration(get(ANN_REFRESH_INTERVAL)?)
            .map_err(|e| RecordedError::Interval(e.to_string()))?;
        let (kind, name) = get(ANN_OWNER)?
            .split_once('/')
            .ok_or(RecordedError::Owner)?;
        let reference = meta
            .owner_references()
            .find(|r| r.kind == kind && r.name == name);
        let namespace = meta.namespace().to_string();
        let owner = match reference {
            Some(r) => Owner {
                namespace,
                kind: OwnerKind::new(r.api_version, r.kind),
                name: r.name.to_string(),
                uid: Some(r.uid.to_string()),
            },
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
        let rollout = match meta.annotation(ANN_ROLLOUT) {
            Some("none") => Rollout::None,
            _ => Rollout::Restart,
        };
        Ok(Recorded {
            source,
            service_account: get(ANN_SERVICE_ACCOUNT)?.to_string(),
            refresh_interval,
            owner,
            rollout,
            lease: LeaseRecord::from_annotations(meta)?,
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
pub fn data_hmac(meta: &impl Annotated) -> Option<String> {
    meta.annotation(ANN_DATA_HMAC).map(str::to_string)
}

/// The force-sync request recorded on a managed Secret (or a workload).
pub fn force_sync(meta: &impl Annotated) -> Option<String> {
    meta.annotation(ANN_FORCE_SYNC).map(str::to_string)
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
                dynamic: None,
                certificate: None,
            },
            service_account: "api".into(),
            refresh_interval: Duration::from_secs(90),
            owner,
            rollout: Rollout::None,
            lease: None,
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
    fn a_lease_round_trips_and_is_not_part_of_the_request() {
        let t = |s: i64| Timestamp::from_second(s).unwrap();
        let mut r = recorded(Owner::bare_pod("ns", "p"));
        let plain = r.annotations();
        r.lease = Some(LeaseRecord {
            id: "database/creds/app/abc".into(),
            issued: t(1_000_000),
            ttl: Duration::from_secs(3600),
            renewed: Some(t(1_002_400)),
            renewable: true,
            holder: LeaseHolder::OrphanToken,
            holder_expires: Some(t(1_086_400)),
            next: t(1_004_000),
            retiring: vec![Retiring {
                id: "database/creds/app/old".into(),
                revoke_at: t(1_000_600),
            }],
        });
        let ann = r.annotations();
        assert_eq!(ann[ANN_LEASE_EXPIRES], t(1_006_000).to_string());
        let meta = ObjectMeta {
            namespace: Some("ns".into()),
            annotations: Some(ann.clone()),
            ..Default::default()
        };
        assert_eq!(Recorded::from_meta(&meta).unwrap(), r);
        // Same request with or without the lease; the lease comparison sees the difference.
        assert!(r.same_request(&plain));
        assert!(r.same_lease(&ann));
        assert!(!r.same_lease(&plain));
        let mut malformed = ann;
        malformed.insert(ANN_LEASE_NEXT.into(), "soon".into());
        let meta = ObjectMeta {
            annotations: Some(malformed),
            ..Default::default()
        };
        assert_eq!(
            Recorded::from_meta(&meta),
            Err(RecordedError::Lease(ANN_LEASE_NEXT))
        );
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
