//! Validation of the issued kinds of the full form: `dynamic` (a lease-bearing Vault path)
//! and `certificate` (a PKI issue). Every error names the item's field.

use std::collections::BTreeMap;

use super::*;

/// Parameters are recorded on the managed Secret: small, and scalars (or lists of scalars).
const MAX_PARAMETERS_BYTES: usize = 4096;

pub(super) fn dynamic(
    at: &str,
    path: String,
    method: Option<String>,
    parameters: Option<BTreeMap<String, serde_json::Value>>,
    keys: Option<BTreeMap<String, String>>,
) -> Result<DynamicSpec, SpecError> {
    check_issue_path(&format!("{at}.path"), &path)?;
    let method = match method.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("GET") => DynamicMethod::Get,
        Some("POST") => DynamicMethod::Post,
        Some("PUT") => DynamicMethod::Put,
        Some(other) => {
            return Err(invalid(
                format!("{at}.method"),
                format!("expected GET, POST or PUT, got {other:?}"),
            ))
        }
    };
    let parameters = parameters.unwrap_or_default();
    if !parameters.is_empty() && method == DynamicMethod::Get {
        return Err(invalid(
            format!("{at}.parameters"),
            "parameters are sent as the request body: set method: POST (or PUT)",
        ));
    }
    for (name, value) in &parameters {
        let scalar = |v: &serde_json::Value| {
            matches!(
                v,
                serde_json::Value::String(_)
                    | serde_json::Value::Number(_)
                    | serde_json::Value::Bool(_)
            )
        };
        let ok = scalar(value)
            || matches!(value, serde_json::Value::Array(items) if items.iter().all(scalar));
        if name.is_empty() || !ok {
            return Err(invalid(
                format!("{at}.parameters.{name}"),
                "expected a string, number, boolean or a list of them",
            ));
        }
    }
    let size = serde_json::to_string(&parameters).map_or(0, |s| s.len());
    if size > MAX_PARAMETERS_BYTES {
        return Err(invalid(
            format!("{at}.parameters"),
            format!("{size} bytes; at most {MAX_PARAMETERS_BYTES} (they are recorded on the managed Secret)"),
        ));
    }
    let keys = keys.unwrap_or_default();
    for (secret_key, field) in &keys {
        if !is_secret_key(secret_key) {
            return Err(invalid(
                format!("{at}.keys"),
                format!(
                    "{secret_key:?} is not a valid Secret key (letters, digits, '-', '_' and '.')"
                ),
            ));
        }
        if field.is_empty() || field.chars().any(char::is_control) || field.len() > 256 {
            return Err(invalid(
                format!("{at}.keys.{secret_key}"),
                "expected the name of a field of the answer's data (e.g. username)",
            ));
        }
    }
    Ok(DynamicSpec {
        path,
        method,
        parameters,
        keys,
    })
}

pub(super) fn certificate(
    at: &str,
    path: String,
    common_name: String,
    alt_names: Vec<String>,
    ttl: Option<String>,
) -> Result<CertificateSpec, SpecError> {
    check_issue_path(&format!("{at}.path"), &path)?;
    check_name(&format!("{at}.commonName"), &common_name)?;
    if alt_names.len() > 64 {
        return Err(invalid(format!("{at}.altNames"), "more than 64 names"));
    }
    for (i, n) in alt_names.iter().enumerate() {
        check_name(&format!("{at}.altNames[{i}]"), n)?;
    }
    if let Some(t) = &ttl {
        match parse_duration(t.trim()) {
            Ok(d) if !d.is_zero() => {}
            _ => {
                return Err(invalid(
                    format!("{at}.ttl"),
                    format!("{t:?} is not a positive duration (examples: 24h, 72h, 30m)"),
                ))
            }
        }
    }
    Ok(CertificateSpec {
        path,
        common_name,
        alt_names,
        ttl: ttl.map(|t| t.trim().to_string()),
    })
}

fn check_name(field: &str, name: &str) -> Result<(), SpecError> {
    if name.is_empty()
        || name.len() > 253
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
    {
        return Err(invalid(
            field,
            format!("{name:?} is not a host name, IP address or e-mail for a certificate"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use crate::spec::*;

    fn parse_with(pairs: &[(&str, &str)]) -> Result<Option<InjectionSpec>, SpecError> {
        let names = vec!["app".to_string()];
        let ann: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(
            &ann,
            &ParseContext {
                workload_name: Some("payments-api"),
                container_names: &names,
                min_refresh_interval: Duration::from_secs(10),
            },
        )
    }

    fn err(pairs: &[(&str, &str)]) -> (String, String) {
        match parse_with(pairs) {
            Err(SpecError::Invalid { key, message }) => (key, message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    const STORE: (&str, &str) = ("secret-injector.io/store", "vault-backend");

    #[test]
    fn short_form_dynamic_goes_through_env_from() {
        let spec = parse_with(&[
            STORE,
            ("secret-injector.io/dynamic", "database/creds/payments-rw"),
        ])
        .unwrap()
        .unwrap();
        let item = &spec.items[0];
        assert_eq!(
            item.dynamic.as_ref().unwrap().path,
            "database/creds/payments-rw"
        );
        assert!(item.exposure.env_from);
        assert!(item.source().is_issued());
        assert_eq!(item.source().secret_type(), "Opaque");
        assert_eq!(item.rollout, Rollout::Restart);
    }

    #[test]
    fn short_form_dynamic_mistakes_name_the_annotation() {
        let (key, msg) = err(&[
            STORE,
            ("secret-injector.io/dynamic", "database/creds/x"),
            ("secret-injector.io/env.A", "kv/a#b"),
        ]);
        assert_eq!(key, "secret-injector.io/dynamic");
        assert!(msg.contains("secret-injector.io/env.A"), "{msg}");
        let (key, _) = err(&[
            STORE,
            ("secret-injector.io/dynamic", "database/creds/x"),
            ("secret-injector.io/refresh-interval", "1h"),
        ]);
        assert_eq!(key, "secret-injector.io/refresh-interval");
        for bad in [
            "sys/leases/lookup",
            "auth/token/create",
            "../x",
            "/database/creds/x",
        ] {
            let (key, _) = err(&[STORE, ("secret-injector.io/dynamic", bad)]);
            assert_eq!(key, "secret-injector.io/dynamic", "{bad}");
        }
    }

    #[test]
    fn full_form_dynamic_and_certificate() {
        let items = r#"
- name: payments-db
  storeRef: {name: vault-backend}
  dynamic:
    path: database/creds/payments-rw
    keys: {DB_USERNAME: username, DB_PASSWORD: password}
- name: payments-tls
  storeRef: {name: vault-backend}
  certificate: {path: pki/issue/payments, commonName: api.payments.svc, altNames: [api], ttl: 72h}
- name: payments-token
  storeRef: {name: vault-backend}
  dynamic: {path: aws/sts/deploy, method: POST, parameters: {ttl: 15m}}
"#;
        let spec = parse_with(&[("secret-injector.io/external-secrets", items)])
            .unwrap()
            .unwrap();
        let db = &spec.items[0];
        assert_eq!(db.exposure.env_keys, vec!["DB_PASSWORD", "DB_USERNAME"]);
        assert!(!db.exposure.env_from);
        let tls = &spec.items[1];
        assert_eq!(tls.source().secret_type(), "kubernetes.io/tls");
        assert_eq!(
            tls.rollout,
            Rollout::None,
            "mounted certificates update in place"
        );
        assert!(tls.exposure.env_keys.is_empty() && !tls.exposure.env_from);
        assert_eq!(
            tls.exposure.files.as_ref().unwrap().mount_path,
            "/var/run/secret-injector/payments-tls"
        );
        let token = &spec.items[2];
        let d = token.dynamic.as_ref().unwrap();
        assert_eq!(d.method, DynamicMethod::Post);
        assert!(token.exposure.env_from);
        // Recorded and replayed unchanged.
        let json = serde_json::to_string(&token.source()).unwrap();
        assert_eq!(
            serde_json::from_str::<SourceSpec>(&json).unwrap(),
            token.source()
        );
    }

    #[test]
    fn full_form_mistakes_name_item_and_field() {
        let cases = [
            (
                "[{name: a, storeRef: {name: v}, dynamic: {path: database/creds/x}, data: [{secretKey: A, remoteRef: {key: k}}]}]",
                "secret-injector.io/external-secrets[0].dynamic",
            ),
            (
                "[{name: a, storeRef: {name: v}, dynamic: {path: database/creds/x, method: DELETE}}]",
                "secret-injector.io/external-secrets[0].dynamic.method",
            ),
            (
                "[{name: a, storeRef: {name: v}, dynamic: {path: database/creds/x, parameters: {a: 1}}}]",
                "secret-injector.io/external-secrets[0].dynamic.parameters",
            ),
            (
                "[{name: a, storeRef: {name: v}, dynamic: {path: database/creds/x, parameters: {a: {b: 1}}, method: POST}}]",
                "secret-injector.io/external-secrets[0].dynamic.parameters.a",
            ),
            (
                "[{name: a, storeRef: {name: v}, dynamic: {path: database/creds/x, keys: {'1X': username}}}]",
                "secret-injector.io/external-secrets[0].dynamic.keys",
            ),
            (
                "[{name: a, storeRef: {name: v}, refreshInterval: 1h, dynamic: {path: database/creds/x}}]",
                "secret-injector.io/external-secrets[0].refreshInterval",
            ),
            (
                "[{name: a, storeRef: {name: v}, certificate: {path: pki/issue/x, commonName: 'a b'}}]",
                "secret-injector.io/external-secrets[0].certificate.commonName",
            ),
            (
                "[{name: a, storeRef: {name: v}, certificate: {path: pki/issue/x, commonName: a, ttl: soon}}]",
                "secret-injector.io/external-secrets[0].certificate.ttl",
            ),
            (
                "[{name: a, storeRef: {name: v}, certificate: {path: pki/issue/x, commonName: a}, inject: {env: true}}]",
                "secret-injector.io/external-secrets[0].inject.env",
            ),
            (
                "[{name: a, storeRef: {name: v}, certificate: {path: pki/issue/x, commonName: a}, dynamic: {path: database/creds/x}}]",
                "secret-injector.io/external-secrets[0].certificate",
            ),
        ];
        for (text, want) in cases {
            let (key, msg) = err(&[("secret-injector.io/external-secrets", text)]);
            assert_eq!(key, want, "{text}: {msg}");
        }
    }
}
