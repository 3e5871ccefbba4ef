//! Small helpers on JSON objects and their metadata; time, uids and name suffixes.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng as _;
use serde_json::{json, Map, Value};

pub(crate) fn meta(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    meta(object)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

pub(crate) fn uid_of(object: &Value) -> &str {
    meta_str(object, "uid").unwrap_or("")
}

pub(crate) fn rv_number(object: &Value) -> u64 {
    meta_str(object, "resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn set_meta(object: &mut Value, field: &str, value: Value) {
    if !object.is_object() {
        *object = json!({});
    }
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    object["metadata"][field] = value;
}

pub(crate) fn remove_meta(object: &mut Value, field: &str) {
    if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove(field);
    }
}

pub(crate) fn remove_key(object: &mut Value, field: &str) {
    if let Some(m) = object.as_object_mut() {
        m.remove(field);
    }
}

pub(crate) fn finalizers(object: &Value) -> Vec<&str> {
    meta(object)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

pub(crate) fn without_meta_and_status(object: &Value) -> Value {
    let mut rest = object.clone();
    remove_key(&mut rest, "metadata");
    remove_key(&mut rest, "status");
    rest
}

/// Drop strategic-merge-patch directives (`$patch`, `$setElementOrder/…`, `$retainKeys`, …),
/// which JSON merge patch would otherwise store as fields.
pub(crate) fn strip_smp_directives(patch: Value) -> Value {
    match patch {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k, strip_smp_directives(v)))
                .collect(),
        ),
        other => other,
    }
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn rfc3339(unix: i64) -> String {
    // jiff's Timestamp displays as RFC 3339 in UTC (`2024-06-19T15:22:45Z`).
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A random (version 4) UUID.
pub(crate) fn new_uid() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Five characters from the alphabet the real server uses for `generateName`.
pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}
