//! The `/mutate` review, read in one pass: the envelope fields admission answers with, and
//! the pod as a [`PodView`] borrowing from the body, the rest of the pod checked against the
//! Pod schema and dropped. The fast read takes only reviews the typed decoder
//! (`AdmissionReview<Pod>`) takes too, to the same values; anything else — malformed, odd,
//! or merely unusual (an `oldObject`, duplicate keys, fields it does not know at the top) —
//! is left to the typed decoder, whose answer and error messages stay the reference.

use kube::core::admission::{AdmissionRequest, Operation};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::pod::json::PodSeed;
use crate::pod::schema::{AnyJson, Opt, Schema, TextSeed};
use crate::pod::{PodView, Text};

/// What admission needs of the request, from either decoder.
#[derive(Debug, PartialEq)]
pub struct PodRequest<'a> {
    /// The review's own `apiVersion` and `kind`, echoed in the answer.
    pub review_api_version: Text<'a>,
    pub review_kind: Text<'a>,
    pub uid: Text<'a>,
    /// `request.kind.group` and `request.kind.kind`.
    pub group: Text<'a>,
    pub kind: Text<'a>,
    pub operation: Operation,
    pub sub_resource: Option<Text<'a>>,
    pub namespace: Option<Text<'a>>,
    pub dry_run: bool,
}

impl<'a> PodRequest<'a> {
    /// From the typed decoder's request.
    pub fn of<T: kube::Resource>(req: &'a AdmissionRequest<T>) -> PodRequest<'a> {
        PodRequest {
            review_api_version: Text::Borrowed(&req.types.api_version),
            review_kind: Text::Borrowed(&req.types.kind),
            uid: Text::Borrowed(&req.uid),
            group: Text::Borrowed(&req.kind.group),
            kind: Text::Borrowed(&req.kind.kind),
            operation: req.operation.clone(),
            sub_resource: req.sub_resource.as_deref().map(Text::Borrowed),
            namespace: req.namespace.as_deref().map(Text::Borrowed),
            dry_run: req.dry_run,
        }
    }
}

/// A review the fast read took.
#[derive(Debug)]
pub struct PodReview<'a> {
    pub request: PodRequest<'a>,
    pub pod: Option<PodView<'a>>,
}

/// The review, when the fast read takes it; `None`: leave it to the typed decoder.
pub fn read_fast(body: &[u8]) -> Option<PodReview<'_>> {
    let schema = Schema::get()?;
    // Valid UTF-8 as a whole (else the typed decoder decides), so strings are not re-checked.
    let text = std::str::from_utf8(body).ok()?;
    let mut d = serde_json::Deserializer::from_str(text);
    let review = ReviewSeed(schema).deserialize(&mut d).ok()?;
    d.end().ok()?;
    Some(review)
}

fn declined<E: de::Error>() -> E {
    E::custom("left to the typed decoder")
}

/// A field read once: a second occurrence (which serde's derive refuses) declines.
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
    match slot.replace(value) {
        None => Ok(()),
        Some(_) => Err(declined()),
    }
}

/// Runs a visitor of an object (`deserialize_map`) as a seed.
macro_rules! object_seed {
    ($seed:ty, $value:ty) => {
        impl<'de> DeserializeSeed<'de> for $seed {
            type Value = $value;

            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<$value, D::Error> {
                d.deserialize_map(self)
            }
        }
    };
}

struct ReviewSeed<'s>(&'s Schema);

object_seed!(ReviewSeed<'_>, PodReview<'de>);

impl<'de> Visitor<'de> for ReviewSeed<'_> {
    type Value = PodReview<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an AdmissionReview")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PodReview<'de>, A::Error> {
        let (mut api_version, mut kind, mut request) = (None, None, None);
        while let Some(key) = map.next_key_seed(TextSeed)? {
            match &*key {
                "apiVersion" => once(&mut api_version, map.next_value_seed(TextSeed)?)?,
                "kind" => once(&mut kind, map.next_value_seed(TextSeed)?)?,
                "request" => once(&mut request, map.next_value_seed(RequestSeed(self.0))?)?,
                // `response`, or anything the typed decoder would collect for its flattened
                // type fields.
                _ => return Err(declined()),
            }
        }
        let (Some(api_version), Some(kind), Some(request)) = (api_version, kind, request) else {
            return Err(declined());
        };
        let (fields, pod) = request;
        Ok(PodReview {
            request: PodRequest {
                review_api_version: api_version,
                review_kind: kind,
                ..fields
            },
            pod,
        })
    }
}

struct RequestSeed<'s>(&'s Schema);

object_seed!(RequestSeed<'_>, (PodRequest<'de>, Option<PodView<'de>>));

impl<'de> Visitor<'de> for RequestSeed<'_> {
    type Value = (PodRequest<'de>, Option<PodView<'de>>);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an AdmissionRequest")
    }

    /// Fields as kube-core's derive reads them: `uid`, `kind`, `resource`, `operation` and
    /// `userInfo` required, `name` and `dryRun` defaulted (but not `null`), the rest optional.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let schema = self.0;
        let mut uid = None;
        let mut kind = None;
        let mut resource = None;
        let mut operation = None;
        let mut user_info = None;
        let mut sub_resource = None;
        let mut namespace = None;
        let mut name = None;
        let mut dry_run = None;
        let mut request_kind = None;
        let mut request_resource = None;
        let mut request_sub_resource = None;
        let mut object = None;
        let mut old_object = None;
        let mut options = None;
        while let Some(key) = map.next_key_seed(TextSeed)? {
            match &*key {
                "uid" => once(&mut uid, map.next_value_seed(TextSeed)?)?,
                "kind" => once(&mut kind, map.next_value_seed(GroupVersionKind)?)?,
                "resource" => once(&mut resource, map.next_value_seed(GroupVersionResource)?)?,
                "subResource" => once(&mut sub_resource, map.next_value_seed(Opt(TextSeed))?)?,
                "requestKind" => once(
                    &mut request_kind,
                    map.next_value_seed(Opt(GroupVersionKind))?,
                )?,
                "requestResource" => once(
                    &mut request_resource,
                    map.next_value_seed(Opt(GroupVersionResource))?,
                )?,
                "requestSubResource" => once(
                    &mut request_sub_resource,
                    map.next_value_seed(Opt(TextSeed))?,
                )?,
                "name" => once(&mut name, map.next_value_seed(TextSeed)?)?,
                "namespace" => once(&mut namespace, map.next_value_seed(Opt(TextSeed))?)?,
                "operation" => once(&mut operation, map.next_value_seed(OperationSeed)?)?,
                "userInfo" => once(
                    &mut user_info,
                    map.next_value_seed(schema.check(schema.user_info))?,
                )?,
                "object" => once(&mut object, map.next_value_seed(Opt(PodSeed(schema)))?)?,
                // Never on a pod create; a review with one goes the typed way.
                "oldObject" => match map.next_value::<Option<IgnoredAny>>()? {
                    None => once(&mut old_object, ())?,
                    Some(_) => return Err(declined()),
                },
                "dryRun" => once(&mut dry_run, map.next_value::<bool>()?)?,
                "options" => once(&mut options, map.next_value_seed(Opt(AnyJson))?)?,
                _ => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        let (Some(uid), Some((group, kind)), Some(()), Some(operation), Some(())) =
            (uid, kind, resource, operation, user_info)
        else {
            return Err(declined());
        };
        let request = PodRequest {
            // Filled in from the review's own fields.
            review_api_version: Text::Borrowed(""),
            review_kind: Text::Borrowed(""),
            uid,
            group,
            kind,
            operation,
            sub_resource: sub_resource.flatten(),
            namespace: namespace.flatten(),
            dry_run: dry_run.unwrap_or(false),
        };
        Ok((request, object.flatten()))
    }
}

/// kube-core's `GroupVersionKind` (all three required); its group and kind are kept.
#[derive(Clone, Copy)]
struct GroupVersionKind;

object_seed!(GroupVersionKind, (Text<'de>, Text<'de>));

impl<'de> Visitor<'de> for GroupVersionKind {
    type Value = (Text<'de>, Text<'de>);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a GroupVersionKind")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut group, mut version, mut kind) = (None, None, None);
        while let Some(key) = map.next_key_seed(TextSeed)? {
            match &*key {
                "group" => once(&mut group, map.next_value_seed(TextSeed)?)?,
                "version" => once(&mut version, map.next_value_seed(TextSeed)?)?,
                "kind" => once(&mut kind, map.next_value_seed(TextSeed)?)?,
                _ => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        match (group, version, kind) {
            (Some(group), Some(_), Some(kind)) => Ok((group, kind)),
            _ => Err(declined()),
        }
    }
}

/// kube-core's `GroupVersionResource` (group, version, resource required); checked only.
#[derive(Clone, Copy)]
struct GroupVersionResource;

object_seed!(GroupVersionResource, ());

impl<'de> Visitor<'de> for GroupVersionResource {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a GroupVersionResource")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (mut group, mut version, mut resource) = (None, None, None);
        while let Some(key) = map.next_key_seed(TextSeed)? {
            match &*key {
                "group" => once(&mut group, map.next_value_seed(TextSeed)?)?,
                "version" => once(&mut version, map.next_value_seed(TextSeed)?)?,
                "resource" => once(&mut resource, map.next_value_seed(TextSeed)?)?,
                // kube-core reads this one under its Rust name; rare enough to leave alone.
                "api_version" => return Err(declined()),
                _ => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        match (group, version, resource) {
            (Some(_), Some(_), Some(_)) => Ok(()),
            _ => Err(declined()),
        }
    }
}

/// kube-core's `Operation`, in its plain string form.
#[derive(Clone, Copy)]
struct OperationSeed;

impl<'de> DeserializeSeed<'de> for OperationSeed {
    type Value = Operation;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Operation, D::Error> {
        match &*TextSeed.deserialize(d)? {
            "CREATE" => Ok(Operation::Create),
            "UPDATE" => Ok(Operation::Update),
            "DELETE" => Ok(Operation::Delete),
            "CONNECT" => Ok(Operation::Connect),
            _ => Err(declined()),
        }
    }
}
