//! Backends. A provider turns (identity, store, remote keys) into remote documents; the
//! provider-independent selection (`#property`, whole value, `extract`) lives here so every
//! backend behaves the same way.

pub mod aws;
pub mod net;
pub mod vault;

use std::collections::BTreeMap;

use futures::future::BoxFuture;

use crate::identity::{IdentityError, PodIdentity};
use crate::redact::SecretBytes;
use crate::spec::RemoteRef;
use crate::store::ResolvedStore;

/// A cached login or credential set that knows how long it may be reused.
pub(crate) trait Expiring {
    fn ttl(&self) -> std::time::Duration;
}

/// moka per-entry expiry for [`Expiring`] values: each entry lives exactly its own TTL.
pub(crate) struct TtlExpiry;

impl<K, V: Expiring> moka::Expiry<K, std::sync::Arc<V>> for TtlExpiry {
    fn expire_after_create(
        &self,
        _: &K,
        value: &std::sync::Arc<V>,
        _: std::time::Instant,
    ) -> Option<std::time::Duration> {
        Some(value.ttl())
    }
}

/// An error with its sources, `a: b: c`. Callers scrub it before showing it.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// What one remote key holds.
#[derive(Clone, Debug)]
pub enum RemoteSecret {
    /// A map of fields (Vault KV data).
    Fields(BTreeMap<String, SecretBytes>),
    /// A single value (Secrets Manager SecretString or SecretBinary); JSON is parsed on demand.
    Blob(SecretBytes),
}

/// A key to read, with an optional version.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteKey {
    pub key: String,
    pub version: Option<String>,
}

impl From<&RemoteRef> for RemoteKey {
    fn from(r: &RemoteRef) -> Self {
        Self {
            key: r.key.clone(),
            version: r.version.clone(),
        }
    }
}

/// Why a backend call failed. Messages never carry a value or a credential: anything that
/// came from the backend went through [`crate::redact::scrub`].
#[derive(Debug, thiserror::Error, Clone)]
pub enum ProviderError {
    #[error(transparent)]
    Identity(std::sync::Arc<IdentityError>),
    #[error("login at {path} as role {role:?} was refused ({detail})")]
    LoginRefused {
        path: String,
        role: String,
        detail: String,
    },
    #[error("permission denied ({detail})")]
    PermissionDenied { detail: String },
    #[error("path not found ({detail})")]
    NotFound { detail: String },
    #[error("the store says KV {configured} but mount {mount:?} is KV {actual}; fix spec.provider.vault.version")]
    KvVersionMismatch {
        mount: String,
        configured: &'static str,
        actual: String,
    },
    #[error("{0}")]
    InvalidRequest(String),
    #[error("backend error ({detail})")]
    Backend { detail: String },
    #[error("backend unreachable ({detail})")]
    Unreachable { detail: String },
    /// The backend kept refusing for rate reasons after the bounded retries.
    #[error("throttled by the backend ({detail}); retried with backoff and gave up")]
    Throttled { detail: String },
}

impl From<IdentityError> for ProviderError {
    fn from(e: IdentityError) -> Self {
        ProviderError::Identity(std::sync::Arc::new(e))
    }
}

/// A failure tied to the key it happened on (None: before any key, e.g. login).
#[derive(Debug, Clone)]
pub struct KeyedError {
    pub key: Option<String>,
    pub error: ProviderError,
}

pub trait SecretProvider: Send + Sync {
    /// Read every key as `identity`. All-or-nothing: the first failure is returned with
    /// the key it concerns.
    fn fetch<'a>(
        &'a self,
        identity: &'a PodIdentity,
        store: &'a ResolvedStore,
        keys: &'a [RemoteKey],
    ) -> BoxFuture<'a, Result<Vec<RemoteSecret>, KeyedError>>;
}

/// Selecting a value out of a remote document failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
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
