//! What the webhook and the status controller check on a store object: decoding its JSON
//! with the failing field's path, fields the types do not know, ClusterSecretStore
//! conditions, and the provider — whose per-backend rules belong to the provider
//! ([`Providers::validate`]). The runtime runs the same conversion before any TokenRequest or
//! connection, so what is admitted is guaranteed to load.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::types::*;
use super::EndpointPolicy;
use crate::provider::findings::err;
use crate::provider::{FieldError, Providers, Validated};

/// The one conversion from a store's provider spec to a provider configuration.
pub fn validate_provider(
    spec: &ProviderSpec,
    endpoints: &EndpointPolicy,
) -> Result<Validated, Vec<FieldError>> {
    Providers::validate(spec, endpoints)
}

/// ClusterSecretStore `spec.conditions`: valid namespace names and label selectors.
pub fn validate_conditions(conditions: &[ClusterStoreCondition]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (i, c) in conditions.iter().enumerate() {
        let at = format!("spec.conditions[{i}]");
        if c.namespaces.is_empty() && c.namespace_selector.is_none() {
            errors.push(err(
                &at,
                "needs namespaces or namespaceSelector (an empty condition matches nothing)",
            ));
        }
        for (j, ns) in c.namespaces.iter().enumerate() {
            if !crate::spec::is_dns1123_label(ns) {
                errors.push(err(
                    &format!("{at}.namespaces[{j}]"),
                    format!("{ns:?} is not a valid namespace name"),
                ));
            }
        }
        if let Some(sel) = &c.namespace_selector {
            let sel_at = format!("{at}.namespaceSelector");
            for (k, v) in sel.match_labels.iter().flatten() {
                if !is_label_key(k) {
                    errors.push(err(
                        &format!("{sel_at}.matchLabels"),
                        format!("{k:?} is not a valid label key"),
                    ));
                }
                if !is_label_value(v) {
                    errors.push(err(
                        &format!("{sel_at}.matchLabels"),
                        format!("{v:?} is not a valid label value"),
                    ));
                }
            }
            for (j, e) in sel.match_expressions.iter().flatten().enumerate() {
                let e_at = format!("{sel_at}.matchExpressions[{j}]");
                if !is_label_key(&e.key) {
                    errors.push(err(
                        &format!("{e_at}.key"),
                        format!("{:?} is not a valid label key", e.key),
                    ));
                }
                let values = e.values.as_deref().unwrap_or_default();
                match e.operator.as_str() {
                    "In" | "NotIn" if values.is_empty() => errors.push(err(
                        &format!("{e_at}.values"),
                        format!("must be non-empty for operator {}", e.operator),
                    )),
                    "Exists" | "DoesNotExist" if !values.is_empty() => errors.push(err(
                        &format!("{e_at}.values"),
                        format!("must be empty for operator {}", e.operator),
                    )),
                    "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                    other => errors.push(err(
                        &format!("{e_at}.operator"),
                        format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
                    )),
                }
                for v in values {
                    if !is_label_value(v) {
                        errors.push(err(
                            &format!("{e_at}.values"),
                            format!("{v:?} is not a valid label value"),
                        ));
                    }
                }
            }
        }
    }
    errors
}

/// `[prefix/]name`: prefix a DNS subdomain, name ≤ 63 of alphanumerics, '-', '_', '.'.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    prefix.is_none_or(crate::spec::is_dns1123_subdomain) && !name.is_empty() && is_label_value(name)
}

fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric())
}

/// What validation concluded about one store object.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
}

/// Validate a store object (its full JSON) of `kind`. Shared with the status controller.
pub fn validate_store(kind: &str, object: &Value, endpoints: &EndpointPolicy) -> Verdict {
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    // Decode, find unknown fields, validate the provider; `extra` adds kind-specific checks.
    fn check<T: DeserializeOwned + Serialize>(
        spec: &Value,
        endpoints: &EndpointPolicy,
        provider: impl Fn(&T) -> &ProviderSpec,
        extra: impl Fn(&T) -> Vec<FieldError>,
    ) -> Verdict {
        let typed: T = match decode(spec) {
            Ok(t) => t,
            Err(e) => {
                return Verdict {
                    errors: vec![e],
                    warnings: Vec::new(),
                }
            }
        };
        let mut errors = unknown_fields(spec, &typed);
        let mut warnings = Vec::new();
        merge(
            validate_provider(provider(&typed), endpoints),
            &mut errors,
            &mut warnings,
        );
        errors.extend(extra(&typed));
        Verdict { errors, warnings }
    }
    match kind {
        "SecretStore" => {
            check::<SecretStoreSpec>(&spec, endpoints, |s| &s.provider, |_| Vec::new())
        }
        "ClusterSecretStore" => check::<ClusterSecretStoreSpec>(
            &spec,
            endpoints,
            |s| &s.provider,
            |s| validate_conditions(&s.conditions),
        ),
        other => Verdict {
            errors: vec![FieldError {
                path: "kind".into(),
                message: format!("{other:?} is not validated by this webhook"),
            }],
            warnings: Vec::new(),
        },
    }
}

fn merge(
    result: Result<Validated, Vec<FieldError>>,
    errors: &mut Vec<FieldError>,
    warnings: &mut Vec<String>,
) {
    match result {
        Ok(v) => warnings.extend(v.warnings),
        Err(e) => errors.extend(e),
    }
}

/// Decode with the failing field's path (`spec.provider.vault.server: invalid type …`).
fn decode<T: DeserializeOwned>(spec: &Value) -> Result<T, FieldError> {
    if spec.is_null() {
        return Err(FieldError {
            path: "spec".into(),
            message: "missing".into(),
        });
    }
    serde_path_to_error::deserialize::<_, T>(spec).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." || inner.is_empty() {
            "spec".to_string()
        } else {
            format!("spec.{inner}")
        };
        FieldError {
            path,
            message: e.into_inner().to_string(),
        }
    })
}

/// Fields present in the object that the types do not know. The API server prunes these for
/// a structural CRD, but objects can arrive by other ways (and typos deserve an answer).
fn unknown_fields<T: Serialize>(original: &Value, typed: &T) -> Vec<FieldError> {
    let known = serde_json::to_value(typed).unwrap_or(Value::Null);
    let mut out = Vec::new();
    walk(original, &known, "spec", &mut out);
    out.into_iter()
        .map(|path| FieldError {
            path,
            message: "unknown field".into(),
        })
        .collect()
}

fn walk(original: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (original, known) {
        (Value::Object(o), Value::Object(k)) => {
            for (key, value) in o {
                let p = format!("{path}.{key}");
                match k.get(key) {
                    Some(kv) => walk(value, kv, &p, out),
                    None if is_empty(value) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(o), Value::Array(k)) => {
            for (i, (value, kv)) in o.iter().zip(k).enumerate() {
                walk(value, kv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::vault::test_spec as vault;
    use serde_json::json;

    #[test]
    fn allowlist_is_enforced_for_vault_and_aws() {
        let strict = EndpointPolicy::with_vault(&["https://vault.vault.svc:8200"]);
        let e = validate_provider(&vault("https://other.vault.svc:8200", "secret"), &strict)
            .unwrap_err();
        assert_eq!(e[0].path, "spec.provider.vault.server");
        assert!(e[0].message.contains("allowlist"), "{}", e[0].message);
        let e = validate_provider(&vault("http://vault.vault.svc:8200", "secret"), &strict)
            .unwrap_err();
        assert_eq!(
            e[0].path, "spec.provider.vault.server",
            "http needs an explicit http pattern"
        );
        let e = validate_provider(
            &vault("https://vault.vault.svc:8200", "secret"),
            &EndpointPolicy::default(),
        )
        .unwrap_err();
        assert!(
            e[0].message.contains("has not allowed any server"),
            "{}",
            e[0].message
        );
        let moto = ProviderSpec {
            vault: None,
            aws: Some(AwsProviderSpec {
                service: "SecretsManager".into(),
                region: "eu-west-1".into(),
                role: None,
                endpoint: Some("http://127.0.0.1:5000".into()),
            }),
        };
        let e = validate_provider(&moto, &strict).unwrap_err();
        assert_eq!(e[0].path, "spec.provider.aws.endpoint");
    }

    #[test]
    fn cluster_conditions() {
        let conditions: Vec<ClusterStoreCondition> = serde_json::from_value(serde_json::json!([
            {"namespaces": ["payments", "Bad_NS"]},
            {},
            {"namespaceSelector": {"matchExpressions": [
                {"key": "team", "operator": "In", "values": []},
                {"key": "tier", "operator": "Equals", "values": ["x"]},
                {"key": "bad key!", "operator": "Exists"}
            ]}},
            {"namespaceSelector": {"matchLabels": {"team": "payments"}}}
        ]))
        .unwrap();
        let paths: Vec<String> = validate_conditions(&conditions)
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            paths,
            [
                "spec.conditions[0].namespaces[1]",
                "spec.conditions[1]",
                "spec.conditions[2].namespaceSelector.matchExpressions[0].values",
                "spec.conditions[2].namespaceSelector.matchExpressions[1].operator",
                "spec.conditions[2].namespaceSelector.matchExpressions[2].key",
            ]
        );
    }

    fn strict_policy() -> EndpointPolicy {
        EndpointPolicy::with_vault(&["https://vault.vault.svc:8200"])
    }

    #[test]
    fn unknown_and_mistyped_fields_are_named() {
        let obj = json!({"spec": {"provider": {"vault": {"server": "https://vault.vault.svc:8200", "path": "secret",
            "auth": {"kubernetes": {"role": "r", "audiences": ["vault"]}}, "sever": "typo"}}}});
        let v = validate_store("SecretStore", &obj, &strict_policy());
        assert_eq!(v.errors[0].path, "spec.provider.vault.sever");
        let obj = json!({"spec": {"provider": {"vault": {"server": 8200, "path": "secret", "auth": {}}}}});
        let v = validate_store("SecretStore", &obj, &strict_policy());
        assert_eq!(
            v.errors[0].path, "spec.provider.vault.server",
            "{:?}",
            v.errors
        );
        let obj = json!({"spec": {"provider": {"vault": {"server": "https://vault.vault.svc:8200", "path": "secret",
            "auth": {"kubernetes": {"role": "r", "audiences": ["vault"]}}}}, "conditions": [{"namespaces": ["a"]}]}});
        let v = validate_store("SecretStore", &obj, &strict_policy());
        assert_eq!(
            v.errors[0].path, "spec.conditions",
            "conditions belong to ClusterSecretStore only"
        );
        assert!(validate_store("ClusterSecretStore", &obj, &strict_policy())
            .errors
            .is_empty());
    }
}
