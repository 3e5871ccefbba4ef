//! The provider-independent selection (`#property`, whole value, `extract`), so every backend
//! behaves the same way.

use std::collections::BTreeMap;

use super::RemoteSecret;
use crate::redact::SecretBytes;

/// Selecting a value out of a remote document failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("property {property:?} is missing (fields present: {})", .available.join(", "))]
    PropertyMissing {
        property: String,
        available: Vec<String>,
    },
    #[error("the value is not a JSON object, so property {property:?} cannot be selected")]
    NotJson { property: String },
    #[error("the secret has {count} fields ({}); name one with #<property>", .fields.join(", "))]
    Ambiguous { count: usize, fields: Vec<String> },
    #[error("the value is not a JSON object, so it cannot be extracted into keys")]
    NotExtractable,
    #[error("field {field:?} is not a valid Secret key (letters, digits, '-', '_' and '.')")]
    BadKey { field: String },
}

/// The value for one `#property` (or the whole secret).
pub fn select(secret: &RemoteSecret, property: Option<&str>) -> Result<SecretBytes, SelectError> {
    match (secret, property) {
        (RemoteSecret::Fields(fields), Some(p)) => {
            fields
                .get(p)
                .cloned()
                .ok_or_else(|| SelectError::PropertyMissing {
                    property: p.to_string(),
                    available: fields.keys().cloned().collect(),
                })
        }
        (RemoteSecret::Fields(fields), None) => {
            if fields.len() == 1 {
                Ok(fields.values().next().expect("one field").clone())
            } else {
                Err(SelectError::Ambiguous {
                    count: fields.len(),
                    fields: fields.keys().cloned().collect(),
                })
            }
        }
        (RemoteSecret::Blob(blob), None) => Ok(blob.clone()),
        (RemoteSecret::Blob(blob), Some(p)) => {
            let map = json_object(blob).ok_or_else(|| SelectError::NotJson {
                property: p.to_string(),
            })?;
            map.get(p)
                .cloned()
                .ok_or_else(|| SelectError::PropertyMissing {
                    property: p.to_string(),
                    available: map.keys().cloned().collect(),
                })
        }
    }
}

/// Every top-level field as a Secret key.
pub fn extract(secret: &RemoteSecret) -> Result<BTreeMap<String, SecretBytes>, SelectError> {
    let map = match secret {
        RemoteSecret::Fields(fields) => fields.clone(),
        RemoteSecret::Blob(blob) => json_object(blob).ok_or(SelectError::NotExtractable)?,
    };
    if let Some(bad) = map.keys().find(|k| !crate::spec::is_secret_key(k)) {
        return Err(SelectError::BadKey { field: bad.clone() });
    }
    Ok(map)
}

/// A JSON object's fields: strings as their text, anything else as its JSON encoding
/// (numbers, booleans, nested objects) — the convention External Secrets Operator uses.
fn json_object(blob: &SecretBytes) -> Option<BTreeMap<String, SecretBytes>> {
    let value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(blob.expose()).ok()?;
    Some(value.into_iter().map(|(k, v)| (k, json_field(v))).collect())
}

pub(crate) fn json_field(v: serde_json::Value) -> SecretBytes {
    match v {
        serde_json::Value::String(s) => SecretBytes::from_string(s),
        other => SecretBytes::new(serde_json::to_vec(&other).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> RemoteSecret {
        RemoteSecret::Fields(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), SecretBytes::from_string(v.to_string())))
                .collect(),
        )
    }

    #[test]
    fn select_semantics() {
        let db = fields(&[("username", "app"), ("password", "s3cret")]);
        assert_eq!(select(&db, Some("password")).unwrap().expose(), b"s3cret");
        let e = select(&db, Some("pw")).unwrap_err();
        assert!(e.to_string().contains("password, username"), "{e}");
        assert!(!e.to_string().contains("s3cret"));
        assert!(matches!(
            select(&db, None),
            Err(SelectError::Ambiguous { count: 2, .. })
        ));
        assert_eq!(select(&fields(&[("v", "x")]), None).unwrap().expose(), b"x");

        let blob = RemoteSecret::Blob(SecretBytes::from_string(
            r#"{"api_key":"k","port":443}"#.into(),
        ));
        assert_eq!(select(&blob, Some("port")).unwrap().expose(), b"443");
        let plain = RemoteSecret::Blob(SecretBytes::from_string("plain-token".into()));
        assert_eq!(select(&plain, None).unwrap().expose(), b"plain-token");
        assert_eq!(
            select(&plain, Some("x")),
            Err(SelectError::NotJson {
                property: "x".into()
            })
        );
    }

    #[test]
    fn extract_semantics() {
        let blob = RemoteSecret::Blob(SecretBytes::from_string(
            r#"{"api_key":"k","endpoint":"https://x"}"#.into(),
        ));
        let m = extract(&blob).unwrap();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["api_key", "endpoint"]);
        let bad = fields(&[("a/b", "x")]);
        assert_eq!(
            extract(&bad),
            Err(SelectError::BadKey {
                field: "a/b".into()
            })
        );
        let plain = RemoteSecret::Blob(SecretBytes::from_string("nope".into()));
        assert_eq!(extract(&plain), Err(SelectError::NotExtractable));
    }
}
