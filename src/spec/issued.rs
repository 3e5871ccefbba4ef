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
