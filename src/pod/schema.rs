//! What the typed decoder (k8s-openapi's `Pod`) accepts, as a small static tree
//! (`schema_table.rs`) compiled from k8s-openapi's own JSON schema of the Pod (its `schemars`
//! output, generated from the same OpenAPI definitions as its decoder; `schema_gen.rs` compiles
//! it, and a test fails when the committed table drifts from it). `json.rs` checks every part
//! of a review's pod that the view does not keep against it, so the view is built only from
//! pods the typed decoder would have decoded; anything else goes to the typed decoder and gets
//! its exact error. The table is static: nothing is generated or allocated at run time.
//!
//! Each node accepts **at most** what the typed decoder accepts at that place, never more:
//! a shape this file does not know is `Refuse` (the review goes the typed way). Checking
//! keeps nothing: strings are validated where they are (escapes included), never copied.

use std::sync::OnceLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

pub(super) use super::schema_node::{Node, NodeId, StructId};
use super::schema_table::{DEFS, NODES, STRUCTS};
use super::Text;

/// The compiled schema, with the ids of the structs the view reads field by field.
#[derive(Debug)]
pub struct Schema {
    nodes: &'static [Node],
    /// Fields of each struct, sorted by name.
    structs: &'static [&'static [(&'static str, NodeId)]],
    pub pod: StructId,
    pub object_meta: StructId,
    pub pod_spec: StructId,
    pub container: StructId,
    pub env_var: StructId,
    pub env_var_source: StructId,
    pub secret_key_selector: StructId,
    pub env_from_source: StructId,
    pub secret_env_source: StructId,
    pub volume_mount: StructId,
    pub volume: StructId,
    pub owner_reference: StructId,
    pub secret_volume_source: StructId,
    pub user_info: NodeId,
}

impl Schema {
    /// The schema; `None` if the table lacks one of the structs the view reads (then every
    /// review goes the typed way).
    pub fn get() -> Option<&'static Schema> {
        static SCHEMA: OnceLock<Option<Schema>> = OnceLock::new();
        SCHEMA.get_or_init(Schema::from_table).as_ref()
    }

    fn from_table() -> Option<Schema> {
        let node = |name: &str| DEFS.iter().find(|(n, _)| *n == name).map(|(_, id)| *id);
        let def = |name: &str| match node(name).map(|id| NODES[id.0 as usize]) {
            Some(Node::Struct(id)) => Some(id),
            _ => None,
        };
        let core = |name: &str| def(&format!("io.k8s.api.core.v1.{name}"));
        let meta = |name: &str| def(&format!("io.k8s.apimachinery.pkg.apis.meta.v1.{name}"));
        Some(Schema {
            nodes: &NODES,
            structs: &STRUCTS,
            pod: core("Pod")?,
            object_meta: meta("ObjectMeta")?,
            pod_spec: core("PodSpec")?,
            container: core("Container")?,
            env_var: core("EnvVar")?,
            env_var_source: core("EnvVarSource")?,
            secret_key_selector: core("SecretKeySelector")?,
            env_from_source: core("EnvFromSource")?,
            secret_env_source: core("SecretEnvSource")?,
            volume_mount: core("VolumeMount")?,
            volume: core("Volume")?,
            owner_reference: meta("OwnerReference")?,
            secret_volume_source: core("SecretVolumeSource")?,
            user_info: node("io.k8s.api.authentication.v1.UserInfo")?,
        })
    }

    fn field(&self, of: StructId, key: &str) -> Option<NodeId> {
        let fields = self.structs[of.0 as usize];
        fields
            .binary_search_by(|(name, _)| (*name).cmp(key))
            .ok()
            .map(|i| fields[i].1)
    }

    /// Check the value of `key`, a field of struct `of` the view does not keep, as the typed
    /// decoder would read it (`Option<T>`; unknown fields are ignored, as there).
    pub fn skip_field<'de, A: MapAccess<'de>>(
        &self,
        of: StructId,
        key: &str,
        map: &mut A,
    ) -> Result<(), A::Error> {
        match self.field(of, key) {
            Some(node) => map.next_value_seed(Check {
                schema: self,
                node,
                optional: true,
            }),
            None => map.next_value::<IgnoredAny>().map(drop),
        }
    }

    /// A seed that checks one value against `node` (not null: a required value).
    pub fn check(&self, node: NodeId) -> Check<'_> {
        Check {
            schema: self,
            node,
            optional: false,
        }
    }
}

/// Checks one value against a node; keeps nothing.
#[derive(Clone, Copy)]
pub struct Check<'s> {
    schema: &'s Schema,
    node: NodeId,
    /// A struct field (`Option<T>` in k8s-openapi): `null` is taken.
    optional: bool,
}

fn refused<E: de::Error>() -> E {
    E::custom("a shape the fast path does not check")
}

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.optional {
            return d.deserialize_option(Check {
                optional: false,
                ..self
            });
        }
        let schema = self.schema;
        match schema.nodes[self.node.0 as usize] {
            Node::Str => d.deserialize_str(AnyStr).map(drop),
            Node::Bool => bool::deserialize(d).map(drop),
            Node::Int32 => i32::deserialize(d).map(drop),
            Node::Int64 => i64::deserialize(d).map(drop),
            Node::Number => f64::deserialize(d).map(drop),
            Node::Time => Time::deserialize(d).map(drop),
            Node::IntOrString => d.deserialize_any(IntOrStr),
            Node::Quantity => d.deserialize_any(StrOrNumber),
            Node::Array(item) => d.deserialize_seq(Items { schema, item }),
            Node::Map(value) => d.deserialize_map(Values { schema, value }),
            Node::Struct(id) => d.deserialize_map(Fields { schema, id }),
            Node::AnyObject => d.deserialize_map(AnyJson),
            Node::Refuse => Err(refused()),
        }
    }
}

/// `Check` with `optional`: `null` passes, anything else is checked.
impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a value of the Pod schema")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
}

/// A string, validated (escapes included) and borrowed where the input allows.
pub struct AnyStr;

impl<'de> Visitor<'de> for AnyStr {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
        Ok(Text::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
        Ok(Text::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
        Ok(Text::Owned(v))
    }
}

struct IntOrStr;

impl<'de> Visitor<'de> for IntOrStr {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string or a 32-bit integer")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        i32::try_from(v).map(drop).map_err(|_| refused())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        i32::try_from(v).map(drop).map_err(|_| refused())
    }
}

struct StrOrNumber;

impl<'de> Visitor<'de> for StrOrNumber {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string or a number")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
}

struct Items<'s> {
    schema: &'s Schema,
    item: NodeId,
}

impl<'de> Visitor<'de> for Items<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(self.schema.check(self.item))?
            .is_some()
        {}
        Ok(())
    }
}

struct Values<'s> {
    schema: &'s Schema,
    value: NodeId,
}

impl<'de> Visitor<'de> for Values<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(TextSeed)?.is_some() {
            map.next_value_seed(self.schema.check(self.value))?;
        }
        Ok(())
    }
}

struct Fields<'s> {
    schema: &'s Schema,
    id: StructId,
}

impl<'de> Visitor<'de> for Fields<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(TextSeed)? {
            self.schema.skip_field(self.id, &key, &mut map)?;
        }
        Ok(())
    }
}

/// `Option<T>` of a seed: `null` is `None`.
#[derive(Clone, Copy)]
pub struct Opt<S>(pub S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Opt<S> {
    type Value = Option<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Opt<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a value or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

/// A string (an object key, or a value read as `String`), validated as the typed decoder
/// validates it (escapes decoded).
#[derive(Clone, Copy)]
pub struct TextSeed;

impl<'de> DeserializeSeed<'de> for TextSeed {
    type Value = Text<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Text<'de>, D::Error> {
        d.deserialize_str(AnyStr)
    }
}

/// Any JSON, checked as a `serde_json::Value` would read it (strings validated, numbers in
/// range), kept nowhere.
pub struct AnyJson;

impl<'de> DeserializeSeed<'de> for AnyJson {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(AnyJson)
    }
}

impl<'de> Visitor<'de> for AnyJson {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(AnyJson)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(TextSeed)?.is_some() {
            map.next_value_seed(AnyJson)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(node: NodeId, json: &str) -> bool {
        let schema = Schema::get().unwrap();
        let mut d = serde_json::Deserializer::from_str(json);
        schema.check(node).deserialize(&mut d).is_ok() && d.end().is_ok()
    }

    #[test]
    fn the_pod_schema_compiles_with_every_struct_the_view_reads() {
        let schema = Schema::get().expect("k8s-openapi's Pod schema has the expected shape");
        let container = &schema.structs[schema.container.0 as usize];
        assert!(container.iter().any(|(n, _)| &**n == "image"));
        let ports = schema.field(schema.container, "ports").unwrap();
        assert!(matches!(schema.nodes[ports.0 as usize], Node::Array(_)));
        assert!(schema.field(schema.container, "noSuchField").is_none());
    }

    #[test]
    fn nodes_take_no_more_than_the_typed_decoder() {
        let schema = Schema::get().unwrap();
        let meta = schema.object_meta;
        let field = |of, k| schema.field(of, k).unwrap();
        let labels = field(meta, "labels");
        assert!(accepts(labels, r#"{"a":"b","c":""}"#));
        assert!(!accepts(labels, r#"{"a":null}"#));
        assert!(!accepts(labels, r#"{"a":1}"#));
        assert!(!accepts(labels, r#"["a"]"#));
        let created = field(meta, "creationTimestamp");
        assert!(accepts(created, r#""2024-05-01T10:00:00Z""#));
        assert!(!accepts(created, r#""yesterday""#));
        let ports = field(schema.container, "ports");
        assert!(accepts(
            ports,
            r#"[{"containerPort":8080,"protocol":"TCP"}]"#
        ));
        assert!(!accepts(ports, r#"[{"containerPort":8080.5}]"#));
        assert!(!accepts(ports, r#"[{"containerPort":4294967296}]"#));
        assert!(!accepts(ports, r#"[null]"#));
        // A lone surrogate is refused in a string the typed decoder reads…
        assert!(!accepts(labels, r#"{"a":"\ud800"}"#));
        // …and in keys.
        assert!(!accepts(labels, r#"{"\ud800":"a"}"#));
    }
}
