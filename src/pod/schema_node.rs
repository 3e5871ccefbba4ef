//! The vocabulary of the static Pod schema: the node kinds `schema_table.rs` is written in and
//! `schema.rs` checks with. Apart from both, so the generated table and its checker do not
//! import each other.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeId(pub(super) u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StructId(pub(super) u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Node {
    /// A string (k8s-openapi: `String`, and string enums).
    Str,
    Bool,
    Int32,
    Int64,
    /// `f64`: any JSON number. (No `f64` in today's Pod; the generator may emit it.)
    #[cfg_attr(not(test), allow(dead_code))]
    Number,
    /// `Time` and `MicroTime` (both a `jiff::Timestamp`): decoded for real, nothing allocated.
    Time,
    /// `IntOrString`: a string or an `i32`.
    IntOrString,
    /// `Quantity` (its schema is `IntOrString`'s, its decoder takes any number too).
    Quantity,
    Array(NodeId),
    /// An object with values of one kind (`BTreeMap<String, _>`).
    Map(NodeId),
    Struct(StructId),
    /// Any JSON object (`FieldsV1`, a `serde_json::Value`; a struct without properties).
    AnyObject,
    /// A shape this checker does not know: only `null` passes (where the field is optional).
    /// (Today's Pod has none; the generator emits it for any shape it does not know.)
    #[cfg_attr(not(test), allow(dead_code))]
    Refuse,
}
