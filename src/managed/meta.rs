//! A managed Secret's metadata as the index keeps it, on every replica, for each managed
//! Secret in the cluster: its uid, resourceVersion and creation time, the annotations that are
//! read back ([`recorded::KEPT`]) and its ownerReferences — nothing else (no labels, no
//! managedFields, no other annotations, and never data). Their strings are kept end to end in
//! one allocation; [`Recorded::from_meta`](super::Recorded::from_meta) and the ownership guard
//! read it as they read a Secret's [`ObjectMeta`], through [`RecordedMeta`].

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use super::recorded::{self, Annotated, OwnerRef, RecordedMeta, KEPT};

/// Fields before the annotations: uid, resourceVersion.
const FIXED: usize = 2;
const _: () = assert!(
    KEPT.len() <= u16::BITS as usize,
    "`present` has a bit per kept annotation"
);

#[derive(Debug, PartialEq, Eq)]
pub struct ManagedMeta {
    namespace: Arc<str>,
    /// uid, resourceVersion, the values of the kept annotations present (in [`KEPT`] order),
    /// then apiVersion, kind, name and uid of each ownerReference.
    text: Box<str>,
    /// Where each field of `text` ends.
    ends: Ends,
    /// The creation time, as seconds and nanoseconds ([`NOT_CREATED`]: none); two fields
    /// rather than an `Option<Timestamp>`, which would take 24 bytes instead of 12.
    created_second: i64,
    created_nanosecond: i32,
    /// Bit i set: annotation `KEPT[i]` is present.
    present: u16,
}

const NOT_CREATED: i32 = i32::MIN;

/// Offsets into the text: two bytes each when it is shorter than 64 KiB (nearly always).
#[derive(Debug, PartialEq, Eq)]
enum Ends {
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

impl Ends {
    fn new(ends: Vec<usize>) -> Ends {
        match ends.iter().map(|&e| u16::try_from(e)).collect() {
            Ok(narrow) => Ends::Narrow(narrow),
            Err(_) => Ends::Wide(
                ends.into_iter()
                    .map(|e| u32::try_from(e).expect("metadata is far below 4 GiB"))
                    .collect(),
            ),
        }
    }

    fn get(&self, i: usize) -> usize {
        match self {
            Ends::Narrow(e) => usize::from(e[i]),
            Ends::Wide(e) => e[i] as usize,
        }
    }

    fn len(&self) -> usize {
        match self {
            Ends::Narrow(e) => e.len(),
            Ends::Wide(e) => e.len(),
        }
    }
}

impl ManagedMeta {
    /// Trimmed from the Secret's metadata; `namespace` is shared with the index's keys.
    pub fn new(meta: &ObjectMeta, namespace: Arc<str>) -> ManagedMeta {
        let mut text = String::new();
        let mut ends = Vec::new();
        let mut push = |s: &str| {
            text.push_str(s);
            ends.push(text.len());
        };
        push(meta.uid.as_deref().unwrap_or_default());
        push(meta.resource_version.as_deref().unwrap_or_default());
        let mut present = 0;
        for (i, key) in KEPT.iter().enumerate() {
            if let Some(v) = meta.annotation(key) {
                present |= 1 << i;
                push(v);
            }
        }
        for r in meta.owner_references() {
            for s in [r.api_version, r.kind, r.name, r.uid] {
                push(s);
            }
        }
        let created = meta.creation_timestamp.as_ref().map(|t| t.0);
        ManagedMeta {
            namespace,
            text: text.into_boxed_str(),
            ends: Ends::new(ends),
            created_second: created.map_or(0, |t| t.as_second()),
            created_nanosecond: created.map_or(NOT_CREATED, |t| t.subsec_nanosecond()),
            present,
        }
    }

    fn field(&self, i: usize) -> &str {
        let start = match i {
            0 => 0,
            _ => self.ends.get(i - 1),
        };
        &self.text[start..self.ends.get(i)]
    }

    /// Empty when the Secret had none.
    pub fn uid(&self) -> &str {
        self.field(0)
    }

    /// Empty when the Secret had none.
    pub fn resource_version(&self) -> &str {
        self.field(1)
    }

    pub fn created(&self) -> Option<Timestamp> {
        if self.created_nanosecond == NOT_CREATED {
            return None;
        }
        Timestamp::new(self.created_second, self.created_nanosecond).ok()
    }

    /// The keyed digest of its data, as recorded.
    pub fn data_hmac(&self) -> Option<String> {
        recorded::data_hmac(self)
    }

    /// Its force-sync request, as recorded.
    pub fn force_sync(&self) -> Option<&str> {
        self.annotation(recorded::ANN_FORCE_SYNC)
    }

    /// A Secret with only what identifies this one (name, namespace, uid, resourceVersion):
    /// what admission carries for a Secret it found current in the index and will not write.
    pub fn identity(&self, name: &str) -> Secret {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.namespace.to_string()),
                uid: non_empty(self.uid()),
                resource_version: non_empty(self.resource_version()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn annotations_present(&self) -> usize {
        self.present.count_ones() as usize
    }
}

impl Annotated for ManagedMeta {
    fn annotation(&self, key: &str) -> Option<&str> {
        let Some(i) = KEPT.iter().position(|k| *k == key) else {
            debug_assert!(
                false,
                "annotation {key} is not kept by the index (recorded::KEPT)"
            );
            return None;
        };
        if self.present & (1 << i) == 0 {
            return None;
        }
        let before = (self.present & ((1 << i) - 1)).count_ones() as usize;
        Some(self.field(FIXED + before))
    }
}

impl RecordedMeta for ManagedMeta {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn owner_references(&self) -> impl Iterator<Item = OwnerRef<'_>> {
        let first = FIXED + self.annotations_present();
        (first..self.ends.len()).step_by(4).map(|i| OwnerRef {
            api_version: self.field(i),
            kind: self.field(i + 1),
            name: self.field(i + 2),
            uid: self.field(i + 3),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        ManagedFieldsEntry, OwnerReference, Time,
    };
    use std::collections::BTreeMap;

    use crate::managed::Recorded;

    #[test]
    fn keeps_what_is_read_back_and_nothing_else() {
        let created = Timestamp::new(1_700_000_000, 5).unwrap();
        let mut annotations: BTreeMap<String, String> = KEPT
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 1)
            .map(|(i, k)| (k.to_string(), format!("value-{i}")))
            .collect();
        annotations.insert("kubectl.kubernetes.io/last-applied".into(), "{…}".into());
        annotations.insert(
            recorded::ANN_LAST_SYNC.into(),
            "2025-01-01T00:00:00Z".into(),
        );
        let meta = ObjectMeta {
            name: Some("api-creds".into()),
            namespace: Some("payments".into()),
            uid: Some("u-1".into()),
            resource_version: Some("42".into()),
            creation_timestamp: Some(Time(created)),
            labels: Some(BTreeMap::from([("a".into(), "b".into())])),
            annotations: Some(annotations.clone()),
            managed_fields: Some(vec![ManagedFieldsEntry::default()]),
            owner_references: Some(vec![
                OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "api".into(),
                    uid: "u-d".into(),
                    ..Default::default()
                },
                OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: "".into(),
                    uid: "u-cm".into(),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let kept = ManagedMeta::new(&meta, "payments".into());
        assert_eq!((kept.uid(), kept.resource_version()), ("u-1", "42"));
        assert_eq!(kept.created(), Some(created));
        assert_eq!(RecordedMeta::namespace(&kept), "payments");
        for key in KEPT {
            assert_eq!(kept.annotation(key), meta.annotation(key), "{key}");
        }
        assert!(kept.owner_references().eq(meta.owner_references()));
        assert_eq!(kept.owner_references().count(), 2);
        // Nothing else: the labels, managedFields and other annotations are not in it.
        assert!(!kept.text.contains("last-applied") && !kept.text.contains("2025"));

        // A record longer than 64 KiB (a long list of retiring leases, say) is kept whole.
        let long = "x".repeat(70_000);
        annotations.insert(recorded::ANN_LEASE_RETIRING.into(), long.clone());
        let meta = ObjectMeta {
            annotations: Some(annotations),
            ..meta
        };
        let kept = ManagedMeta::new(&meta, "payments".into());
        assert!(matches!(kept.ends, Ends::Wide(_)));
        assert_eq!(
            kept.annotation(recorded::ANN_LEASE_RETIRING),
            Some(long.as_str())
        );
        for key in KEPT {
            assert_eq!(kept.annotation(key), meta.annotation(key), "{key}");
        }
        assert!(kept.owner_references().eq(meta.owner_references()));

        let bare = ManagedMeta::new(&ObjectMeta::default(), "".into());
        assert_eq!((bare.uid(), bare.created()), ("", None));
        assert_eq!(bare.owner_references().count(), 0);
        assert_eq!(bare.annotation(recorded::ANN_SOURCE), None);
    }

    #[test]
    fn a_record_parses_alike_from_the_secret_and_from_the_index() {
        use crate::k8s::Owner;
        use crate::managed::recorded::{LeaseHolder, LeaseRecord, Retiring};
        use crate::spec::{Rollout, SourceSpec, StoreKind, StoreRef};
        let t = |s: i64| Timestamp::from_second(s).unwrap();
        let owner = Owner::from_reference(
            "ns",
            &OwnerReference {
                api_version: "apps/v1".into(),
                kind: "StatefulSet".into(),
                name: "db".into(),
                uid: "u-1".into(),
                ..Default::default()
            },
        );
        let record = Recorded {
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
            service_account: "db".into(),
            refresh_interval: std::time::Duration::from_secs(600),
            owner: owner.clone(),
            rollout: Rollout::None,
            lease: Some(LeaseRecord {
                id: "database/creds/db/abc".into(),
                issued: t(1_000_000),
                ttl: std::time::Duration::from_secs(3600),
                renewed: Some(t(1_002_400)),
                renewable: true,
                holder: LeaseHolder::OrphanToken,
                holder_expires: Some(t(1_086_400)),
                next: t(1_004_000),
                retiring: vec![Retiring {
                    id: "database/creds/db/old".into(),
                    revoke_at: t(1_000_600),
                }],
            }),
        };
        let mut annotations = record.annotations();
        annotations.extend(recorded::sync_annotations("d1g3st".into(), t(1_002_400)));
        annotations.insert(recorded::ANN_FORCE_SYNC.into(), "now".into());
        let meta = ObjectMeta {
            namespace: Some("ns".into()),
            annotations: Some(annotations),
            owner_references: owner.owner_reference().map(|r| vec![r]),
            ..Default::default()
        };
        let kept = ManagedMeta::new(&meta, "ns".into());
        assert_eq!(Recorded::from_meta(&kept).unwrap(), record);
        assert_eq!(Recorded::from_meta(&meta).unwrap(), record);
        assert_eq!(kept.data_hmac().as_deref(), Some("d1g3st"));
        assert_eq!(kept.force_sync(), Some("now"));
        assert!(record.same_request(&kept));
    }
}
