//! Compiles k8s-openapi's JSON schema of the Pod (its `schemars` output) into the static table
//! of `schema_table.rs`, and fails when the committed table differs: after a k8s-openapi
//! upgrade, run `REGENERATE_POD_SCHEMA=1 cargo test --lib pod::schema_gen` and commit the
//! file. Test-only: the webhook reads the committed table and never generates anything.
//!
//! Every shape this compiler does not know becomes `Refuse` (only `null` passes there), so
//! the table never takes more than the typed decoder.

use std::collections::HashMap;
use std::fmt::Write;

use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::schema_node::{Node, NodeId, StructId};

const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const DEFINITION_PREFIX: &str = "#/$defs/";

/// The definitions `Schema` looks up by name (the structs the view reads, and the review's
/// `userInfo`).
const NAMED: &[&str] = &[
    "io.k8s.api.authentication.v1.UserInfo",
    "io.k8s.api.core.v1.Container",
    "io.k8s.api.core.v1.EnvFromSource",
    "io.k8s.api.core.v1.EnvVar",
    "io.k8s.api.core.v1.EnvVarSource",
    "io.k8s.api.core.v1.Pod",
    "io.k8s.api.core.v1.PodSpec",
    "io.k8s.api.core.v1.SecretEnvSource",
    "io.k8s.api.core.v1.SecretKeySelector",
    "io.k8s.api.core.v1.SecretVolumeSource",
    "io.k8s.api.core.v1.Volume",
    "io.k8s.api.core.v1.VolumeMount",
    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
    "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference",
];

struct Builder {
    definitions: serde_json::Map<String, Value>,
    nodes: Vec<Node>,
    structs: Vec<Vec<(String, NodeId)>>,
    /// Definitions by name, and every node but a struct's by shape (one `Str` for all strings).
    by_name: HashMap<String, NodeId>,
    by_shape: HashMap<Node, NodeId>,
}

impl Builder {
    fn intern(&mut self, node: Node) -> NodeId {
        if let Some(&id) = self.by_shape.get(&node) {
            return id;
        }
        let id = self.push(node);
        self.by_shape.insert(node, id);
        id
    }

    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        NodeId(self.nodes.len() as u32 - 1)
    }

    fn node(&mut self, schema: &Value) -> NodeId {
        let Some(reference) = schema.get("$ref").and_then(Value::as_str) else {
            let node = self.shape(schema);
            return self.place(node);
        };
        let name = reference
            .strip_prefix(DEFINITION_PREFIX)
            .unwrap_or(reference);
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let Some(definition) = self.definitions.get(name).cloned() else {
            return self.intern(Node::Refuse);
        };
        if definition.get("properties").is_some() {
            // A struct's node exists before its fields are compiled, so a recursive
            // definition refers to itself.
            let id = self.push(Node::Refuse);
            self.by_name.insert(name.to_string(), id);
            self.nodes[id.0 as usize] = self.shape(&definition);
            return id;
        }
        let node = match self.shape(&definition) {
            Node::IntOrString if name == QUANTITY => Node::Quantity,
            node => node,
        };
        let id = self.place(node);
        self.by_name.insert(name.to_string(), id);
        id
    }

    /// A struct gets a node of its own; any other node is shared (one `Str` for all strings).
    fn place(&mut self, node: Node) -> NodeId {
        match node {
            Node::Struct(_) => self.push(node),
            _ => self.intern(node),
        }
    }

    fn shape(&mut self, schema: &Value) -> Node {
        let word = |k: &str| schema.get(k).and_then(Value::as_str);
        if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
            && schema.get("type").is_none()
        {
            return Node::IntOrString;
        }
        match (word("type"), word("format")) {
            (Some("string"), None) => Node::Str,
            (Some("string"), Some("date-time")) => Node::Time,
            (Some("boolean"), None) => Node::Bool,
            (Some("integer"), Some("int32")) => Node::Int32,
            (Some("integer"), Some("int64")) => Node::Int64,
            (Some("number"), Some("double")) => Node::Number,
            (Some("array"), None) => match schema.get("items") {
                Some(items @ Value::Object(_)) => Node::Array(self.node(items)),
                _ => Node::Refuse,
            },
            (Some("object"), None) => {
                match (schema.get("properties"), schema.get("additionalProperties")) {
                    (Some(Value::Object(properties)), None) => {
                        let id = self.structs.len();
                        self.structs.push(Vec::new());
                        // serde_json's map is sorted by key: the order `Schema` searches in.
                        let fields: Vec<(String, NodeId)> = properties
                            .iter()
                            .map(|(name, property)| (name.clone(), self.node(property)))
                            .collect();
                        self.structs[id] = fields;
                        Node::Struct(StructId(id as u32))
                    }
                    (None, Some(values @ Value::Object(_))) => Node::Map(self.node(values)),
                    (None, None) => Node::AnyObject,
                    _ => Node::Refuse,
                }
            }
            _ => Node::Refuse,
        }
    }
}

/// The source of `schema_table.rs`.
fn render() -> String {
    let mut generator = schemars::SchemaGenerator::default();
    let pod = generator.subschema_for::<Pod>();
    let user_info = generator.subschema_for::<UserInfo>();
    let mut b = Builder {
        definitions: generator.take_definitions(false),
        nodes: Vec::new(),
        structs: Vec::new(),
        by_name: HashMap::new(),
        by_shape: HashMap::new(),
    };
    b.node(pod.as_value());
    b.node(user_info.as_value());

    let mut out = String::from(
        "//! Generated from k8s-openapi's JSON schema of the Pod by `schema_gen.rs`; do not edit.\n\
         //! After a k8s-openapi upgrade: `REGENERATE_POD_SCHEMA=1 cargo test --lib pod::schema_gen`.\n\
         \n\
         use super::schema_node::Node::{self, *};\n\
         use super::schema_node::{NodeId as N, StructId as S};\n\n",
    );
    let node = |n: &Node| match n {
        Node::Array(id) => format!("Array(N({}))", id.0),
        Node::Map(id) => format!("Map(N({}))", id.0),
        Node::Struct(id) => format!("Struct(S({}))", id.0),
        other => format!("{other:?}"),
    };
    let _ = writeln!(
        out,
        "#[rustfmt::skip]\npub(super) static NODES: [Node; {}] = [",
        b.nodes.len()
    );
    for chunk in b.nodes.chunks(8) {
        let line: Vec<String> = chunk.iter().map(node).collect();
        let _ = writeln!(out, "    {},", line.join(", "));
    }
    out.push_str("];\n\n");
    let _ = writeln!(
        out,
        "#[rustfmt::skip]\npub(super) static STRUCTS: [&[(&str, N)]; {}] = [",
        b.structs.len()
    );
    for fields in &b.structs {
        let line: Vec<String> = fields
            .iter()
            .map(|(name, id)| format!("({name:?}, N({}))", id.0))
            .collect();
        let _ = writeln!(out, "    &[{}],", line.join(", "));
    }
    out.push_str("];\n\n");
    let _ = writeln!(
        out,
        "#[rustfmt::skip]\npub(super) static DEFS: [(&str, N); {}] = [",
        NAMED.len()
    );
    for name in NAMED {
        let id = b.by_name[*name];
        let _ = writeln!(out, "    ({name:?}, N({})),", id.0);
    }
    out.push_str("];\n");
    out
}

#[test]
fn the_committed_table_is_k8s_openapis_schema() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/pod/schema_table.rs");
    let generated = render();
    if std::env::var_os("REGENERATE_POD_SCHEMA").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "src/pod/schema_table.rs differs from k8s-openapi's Pod schema; regenerate it with \
         REGENERATE_POD_SCHEMA=1 cargo test --lib pod::schema_gen"
    );
}
