//! The pod view read straight from a review's JSON. The fields the view keeps are read as
//! k8s-openapi reads them (each one an `Option<T>`: `null` is absent, the last of duplicate
//! keys wins, a missing required one is empty); every other field is checked against the Pod
//! schema (`schema.rs`) and dropped. So a view comes only out of JSON the typed decoder takes,
//! and it equals `PodView::of` the typed pod (tests/fuzz_props.rs holds both to that).

use std::collections::BTreeMap;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::schema::{Opt, Schema, StructId, TextSeed};
use super::{
    ContainerView, EnvFromView, EnvVarView, KeyRefView, OwnerRefView, PodSpecView, PodView, Text,
    VolumeMountView, VolumeView,
};

/// Reads a pod view (a review's `request.object`, not null).
#[derive(Clone, Copy)]
pub struct PodSeed<'s>(pub &'s Schema);

impl<'de> DeserializeSeed<'de> for PodSeed<'_> {
    type Value = PodView<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<PodView<'de>, D::Error> {
        seed::<PodView<'de>>(self.0).deserialize(d)
    }
}

/// A pod view from a pod's JSON; an error wherever the typed decoder might have stopped.
pub fn from_str<'de>(schema: &Schema, json: &'de str) -> Result<PodView<'de>, serde_json::Error> {
    let mut d = serde_json::Deserializer::from_str(json);
    let pod = PodSeed(schema).deserialize(&mut d)?;
    d.end()?;
    Ok(pod)
}

/// A struct of the view, read field by field.
trait ViewStruct<'de>: Default {
    /// The schema of the k8s-openapi struct it is read from.
    fn def(schema: &Schema) -> StructId;

    /// Read the value of `key` if this struct keeps it; `Ok(false)`: not kept.
    fn read<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        schema: &Schema,
    ) -> Result<bool, A::Error>;
}

/// Reads a `T` from a JSON object.
struct StructSeed<'s, T>(&'s Schema, PhantomData<T>);

impl<T> Clone for StructSeed<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for StructSeed<'_, T> {}

impl<'de, T: ViewStruct<'de>> DeserializeSeed<'de> for StructSeed<'_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: ViewStruct<'de>> Visitor<'de> for StructSeed<'_, T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let schema = self.0;
        let mut value = T::default();
        while let Some(key) = map.next_key_seed(TextSeed)? {
            if !value.read(&key, &mut map, schema)? {
                schema.skip_field(T::def(schema), &key, &mut map)?;
            }
        }
        Ok(value)
    }
}

fn seed<T>(schema: &Schema) -> StructSeed<'_, T> {
    StructSeed(schema, PhantomData)
}

/// `Vec<T>` of a seed (elements are never `null`).
#[derive(Clone, Copy)]
struct List<S>(S);

impl<'de, S: DeserializeSeed<'de> + Copy> DeserializeSeed<'de> for List<S> {
    type Value = Vec<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, S: DeserializeSeed<'de> + Copy> Visitor<'de> for List<S> {
    type Value = Vec<S::Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(self.0)? {
            out.push(item);
        }
        Ok(out)
    }
}

/// `BTreeMap<String, String>` (annotations): values are never `null`, the last duplicate wins.
#[derive(Clone, Copy)]
struct TextMap;

impl<'de> DeserializeSeed<'de> for TextMap {
    type Value = BTreeMap<Text<'de>, Text<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TextMap {
    type Value = BTreeMap<Text<'de>, Text<'de>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a map of strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key_seed(TextSeed)? {
            out.insert(key, map.next_value_seed(TextSeed)?);
        }
        Ok(out)
    }
}

/// An optional string field.
fn text<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Text<'de>>, A::Error> {
    map.next_value_seed(Opt(TextSeed))
}

/// A required string field (k8s-openapi: absent or `null` is empty).
fn required_text<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Text<'de>, A::Error> {
    text(map).map(Option::unwrap_or_default)
}

fn invalid<E: de::Error>(what: &str) -> E {
    E::custom(format_args!("not a Pod: {what}"))
}

impl<'de> ViewStruct<'de> for PodView<'de> {
    fn def(schema: &Schema) -> StructId {
        schema.pod
    }

    fn read<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        schema: &Schema,
    ) -> Result<bool, A::Error> {
        match key {
            // k8s-openapi checks both on a top-level object (not null, exactly these).
            "apiVersion" => {
                if map.next_value_seed(TextSeed)? != "v1" {
                    return Err(invalid("apiVersion"));
                }
            }
            "kind" => {
                if map.next_value_seed(TextSeed)? != "Pod" {
                    return Err(invalid("kind"));
                }
            }
            "metadata" => {
                let meta = map
                    .next_value_seed(Opt(seed::<MetaFields>(schema)))?
                    .unwrap_or_default();
                self.name = meta.name;
                self.generate_name = meta.generate_name;
                self.uid = meta.uid;
                self.annotations = meta.annotations;
                self.owner_references = meta.owner_references;
            }
            "spec" => self.spec = map.next_value_seed(Opt(seed::<PodSpecView>(schema)))?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// The metadata fields the view keeps (flattened into `PodView`).
#[derive(Default)]
struct MetaFields<'a> {
    name: Option<Text<'a>>,
    generate_name: Option<Text<'a>>,
    uid: Option<Text<'a>>,
    annotations: Option<BTreeMap<Text<'a>, Text<'a>>>,
    owner_references: Option<Vec<OwnerRefView<'a>>>,
}

impl<'de> ViewStruct<'de> for MetaFields<'de> {
    fn def(schema: &Schema) -> StructId {
        schema.object_meta
    }

    fn read<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        schema: &Schema,
    ) -> Result<bool, A::Error> {
        match key {
            "name" => self.name = text(map)?,
            "generateName" => self.generate_name = text(map)?,
            "uid" => self.uid = text(map)?,
            "annotations" => self.annotations = map.next_value_seed(Opt(TextMap))?,
            "ownerReferences" => {
                self.owner_references =
                    map.next_value_seed(Opt(List(seed::<OwnerRefView>(schema))))?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl<'de> ViewStruct<'de> for OwnerRefView<'de> {
    fn def(schema: &Schema) -> StructId {
        schema.owner_reference
    }

    fn read<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        _: &Schema,
    ) -> Result<bool, A::Error> {
        match key {
            "apiVersion" => self.api_version = required_text(map)?,
            "kind" => self.kind = required_text(map)?,
            "name" => self.name = required_text(map)?,
            "uid" => self.uid = required_text(map)?,
            "controller" => self.controller = map.next_value()?,
            "blockOwnerDeletion" => self.block_owner_deletion = map.next_value()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl<'de> ViewStruct<'de> for PodSpecView<'de> {
    fn def(schema: &Schema) -> StructId {
        schema.pod_spec
    }

    fn read<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        schema: &Schema,
    ) -> Result<bool, A::Error> {
        let containers = || Opt(List(seed::<ContainerView>(schema)));
        match key {
            "serviceAccountName" => self.service_account_name = text(map)?,
            "containers" => {
                self.containers = map.next_value_seed(containers())?.unwrap_or_default()
            }
            "initContainers" => self.init_containers = map.next_value_seed(containers())?,
            "volumes" => {
                self.volumes = map.next_value_seed(Opt(List(seed::<VolumeView>(schema))))?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl<'de> ViewStruct<'de> for ContainerView<'de> {
    fn def(schema: &Schema) -> StructId {
        schema.container
    }

    fn read<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        schema: &Schema,
    ) -> Result<bool, A::Error> {
        match key {
            "name" => self.name = required_text(map)?,
            "env" => self.env = map.next_value_seed(Opt(List(seed::<EnvVarView>(schema))))?,
            "envFrom" => {
                self.env_from = map.next_value_seed(Opt(List(seed::<EnvFromView>(schema))))?
            }
            "volumeMounts" => {
                self.volume_mounts =
                    map.next_value_seed(Opt(List(seed::<VolumeMountView>(schema))))?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl<'de> ViewStruct<'de> for EnvVarView<'de> {
    fn def(schema: &Schema) -> StructId {
        schema.env_var
    }

    fn read<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        schema: &Schema,
    ) -> Result<bool, A::Error> {
        match key {
            "name" => self.name = required_text(map)?,
            "valueFrom" => {
                self.secret_key_ref = map
                    .next_value_seed(Opt(seed::<EnvVarSourceFields>(schema)))?
                    .and_then(|source| source.secret_key_ref)
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// `valueFrom`, of which the view keeps `secretKeyRef`.
#[derive(Default)]
struct EnvVarSourceFields<'a> {
    secret_key_ref: Option<KeyRefView<'a>>,
}

impl<'de> ViewStruct<'de> for EnvVarSourceFields<'de> {
    fn def(schema: &Schema) -> StructId {
        schema.env_var_source
    }

    fn read<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        schema: &Schema,
    ) -> Result<bool, A::Error> {
        if key != "secretKeyRef" {
            return Ok(false);
        }
        self.secret_key_ref = map.next_value_seed(Opt(seed::<KeyRefView>(schema)))?;
        Ok(true)
    }
}

impl<'de> ViewStruct<'de> for KeyRefView<'de> {
    fn def(schema: &Schema) -> StructId {
        schema.secret_key_selector
    }

    fn read<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        _: &Schema,
    ) -> Result<bool, A::Error> {
        match key {
            "name" => self.name = required_text(map)?,
            "key" => self.key = required_text(map)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl<'de> ViewStruct<'de> for EnvFromView<'de> {
    fn def(schema: &Schema) -> StructId {
        schema.env_from_source
    }

    fn read<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        schema: &Schema,
    ) -> Result<bool, A::Error> {
        if key != "secretRef" {
            return Ok(false);
        }
        self.secret_ref = map
            .next_value_seed(Opt(seed::<SecretEnvFields>(schema)))?
            .map(|s| s.name);
        Ok(true)
    }
}

/// `envFrom[].secretRef`, of which the view keeps the name.
#[derive(Default)]
struct SecretEnvFields<'a> {
    name: Text<'a>,
}

impl<'de> ViewStruct<'de> for SecretEnvFields<'de> {
    fn def(schema: &Schema) -> StructId {
        schema.secret_env_source
    }

    fn read<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        _: &Schema,
    ) -> Result<bool, A::Error> {
        if key != "name" {
            return Ok(false);
        }
        self.name = required_text(map)?;
        Ok(true)
    }
}

impl<'de> ViewStruct<'de> for VolumeMountView<'de> {
    fn def(schema: &Schema) -> StructId {
        schema.volume_mount
    }

    fn read<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        _: &Schema,
    ) -> Result<bool, A::Error> {
        match key {
            "name" => self.name = required_text(map)?,
            "mountPath" => self.mount_path = required_text(map)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl<'de> ViewStruct<'de> for VolumeView<'de> {
    fn def(schema: &Schema) -> StructId {
        schema.volume
    }

    fn read<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        schema: &Schema,
    ) -> Result<bool, A::Error> {
        match key {
            "name" => self.name = required_text(map)?,
            "secret" => {
                self.secret_name = map
                    .next_value_seed(Opt(seed::<SecretVolumeFields>(schema)))?
                    .and_then(|s| s.secret_name)
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// `volumes[].secret`, of which the view keeps `secretName`.
#[derive(Default)]
struct SecretVolumeFields<'a> {
    secret_name: Option<Text<'a>>,
}

impl<'de> ViewStruct<'de> for SecretVolumeFields<'de> {
    fn def(schema: &Schema) -> StructId {
        schema.secret_volume_source
    }

    fn read<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        _: &Schema,
    ) -> Result<bool, A::Error> {
        if key != "secretName" {
            return Ok(false);
        }
        self.secret_name = text(map)?;
        Ok(true)
    }
}
