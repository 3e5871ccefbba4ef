//! Decoding and validation of request bodies, in the real server's wording.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::object::{meta, meta_str, remove_key, remove_meta, set_meta};
use crate::resources::ResourceInfo;
use crate::status::{ApiError, ApiResult, FieldError};
use crate::MAX_SECRET_BYTES;

pub(crate) fn parse_json_body(body: &[u8]) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the body of the request was empty - an object is required",
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "couldn't get version/kind; json parse error: the body is not a JSON object",
        ));
    }
    Ok(value)
}

/// The body's apiVersion/kind must match the endpoint; missing ones are filled in.
pub(crate) fn check_type_meta(info: &ResourceInfo, object: &mut Value) -> ApiResult<()> {
    if !object.is_object() {
        return Err(ApiError::bad_request("the body is not a JSON object"));
    }
    let expected = info.api_version();
    if let Some(api_version) = object["apiVersion"].as_str().filter(|v| !v.is_empty()) {
        if api_version != expected {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({expected})"
            )));
        }
    }
    if let Some(kind) = object["kind"].as_str().filter(|k| !k.is_empty()) {
        if kind != info.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                info.kind
            )));
        }
    }
    object["apiVersion"] = json!(expected);
    object["kind"] = json!(info.kind);
    Ok(())
}

pub(crate) fn set_namespace_from_url(
    info: &ResourceInfo,
    namespace: &str,
    object: &mut Value,
) -> ApiResult<()> {
    if !info.namespaced {
        remove_meta(object, "namespace");
        return Ok(());
    }
    let given = meta_str(object, "namespace").unwrap_or("");
    if !given.is_empty() && given != namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    set_meta(object, "namespace", json!(namespace));
    Ok(())
}

pub(crate) fn reset_status_for_create(info: &ResourceInfo, object: &mut Value) {
    match (info.group, info.plural) {
        ("", "pods") => object["status"] = json!({"phase": "Pending"}),
        ("", "namespaces") => object["status"] = json!({"phase": "Active"}),
        _ if info.custom => remove_key(object, "status"),
        _ => object["status"] = json!({}),
    }
}

/// The decoding stage: what the real server rejects with 400 before validation runs, plus the
/// conversions it does on the way in (Secret `stringData`, default Secret `type`).
pub(crate) fn decode_resource(info: &ResourceInfo, object: &mut Value) -> ApiResult<()> {
    if !info.group.is_empty() {
        return Ok(());
    }
    let cannot = |kind: &str, why: String| {
        ApiError::bad_request(format!(
            "{kind} in version \"v1\" cannot be handled as a {kind}: {why}"
        ))
    };
    match info.plural {
        "secrets" => {
            decode_base64_map(object, "data").map_err(|why| cannot("Secret", why))?;
            if let Some(string_data) = object.get("stringData").cloned() {
                let Value::Object(string_data) = string_data else {
                    return Err(cannot(
                        "Secret",
                        "stringData must be a map of strings".into(),
                    ));
                };
                if !object["data"].is_object() {
                    object["data"] = json!({});
                }
                for (key, value) in string_data {
                    let value = value.as_str().ok_or_else(|| {
                        cannot("Secret", "stringData values must be strings".into())
                    })?;
                    object["data"][key] = json!(STANDARD.encode(value));
                }
                remove_key(object, "stringData");
            }
            if object["type"].as_str().unwrap_or("").is_empty() {
                object["type"] = json!("Opaque");
            }
        }
        "configmaps" => {
            decode_base64_map(object, "binaryData").map_err(|why| cannot("ConfigMap", why))?;
            if let Some(data) = object.get("data").and_then(Value::as_object) {
                if data.values().any(|v| !v.is_string() && !v.is_null()) {
                    return Err(cannot("ConfigMap", "data values must be strings".into()));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Every value of `object[field]` must be standard base64 (Go's decoder skips CR/LF).
fn decode_base64_map(object: &Value, field: &str) -> Result<(), String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(map)) => {
            for value in map.values() {
                match value {
                    Value::Null => {}
                    Value::String(encoded) => {
                        let cleaned: String = encoded
                            .chars()
                            .filter(|c| *c != '\r' && *c != '\n')
                            .collect();
                        STANDARD.decode(&cleaned).map_err(|e| {
                            let at = match e {
                                base64::DecodeError::InvalidByte(at, _)
                                | base64::DecodeError::InvalidLastSymbol(at, _) => at,
                                _ => cleaned.len(),
                            };
                            format!("illegal base64 data at input byte {at}")
                        })?;
                    }
                    other => {
                        return Err(format!(
                            "json: cannot unmarshal {} into Go value of type []uint8",
                            json_type_name(other)
                        ))
                    }
                }
            }
            Ok(())
        }
        Some(other) => Err(format!(
            "json: cannot unmarshal {} into Go struct field .{field} of type map[string][]uint8",
            json_type_name(other)
        )),
    }
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

const SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const CONFIG_KEY_MESSAGE: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const LABEL_VALUE_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_MESSAGE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

fn is_dns_label_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

fn dns1123_label_errors(field: &str, value: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push(FieldError::invalid(
            field,
            json!(value),
            "must be no more than 63 characters",
        ));
    }
    if !is_dns_label_part(value) {
        errors.push(FieldError::invalid(field, json!(value), LABEL_MESSAGE));
    }
    errors
}

fn dns1123_subdomain_errors(field: &str, value: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if value.len() > 253 {
        errors.push(FieldError::invalid(
            field,
            json!(value),
            "must be no more than 253 characters",
        ));
    }
    if !value.split('.').all(is_dns_label_part) {
        errors.push(FieldError::invalid(field, json!(value), SUBDOMAIN_MESSAGE));
    }
    errors
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn is_qualified_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

fn is_qualified_name(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => {
            prefix.len() <= 253
                && prefix.split('.').all(is_dns_label_part)
                && is_qualified_name_part(name)
        }
        None => is_qualified_name_part(key),
    }
}

pub(crate) fn validate_metadata(info: &ResourceInfo, object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let name = meta_str(object, "name").unwrap_or("");
    if name.is_empty() {
        errors.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else if info.plural == "namespaces" && info.group.is_empty() {
        errors.extend(dns1123_label_errors("metadata.name", name));
    } else {
        errors.extend(dns1123_subdomain_errors("metadata.name", name));
    }
    if let Some(labels) = meta(object)
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
    {
        for (key, value) in labels {
            if !is_qualified_name(key) {
                errors.push(FieldError::invalid(
                    "metadata.labels",
                    json!(key),
                    QUALIFIED_NAME_MESSAGE,
                ));
            }
            let value = value.as_str().unwrap_or("");
            if !(value.is_empty() || is_qualified_name_part(value)) {
                errors.push(FieldError::invalid(
                    "metadata.labels",
                    json!(value),
                    LABEL_VALUE_MESSAGE,
                ));
            }
        }
    }
    if let Some(annotations) = meta(object)
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
    {
        for key in annotations.keys() {
            if !is_qualified_name(&key.to_lowercase()) {
                errors.push(FieldError::invalid(
                    "metadata.annotations",
                    json!(key),
                    QUALIFIED_NAME_MESSAGE,
                ));
            }
        }
    }
    errors
}

fn config_key_errors(field: &str, key: &str) -> Vec<FieldError> {
    let path = format!("{field}[{key}]");
    let mut errors = Vec::new();
    if key.len() > 253 {
        errors.push(FieldError::invalid(
            &path,
            json!(key),
            "must be no more than 253 characters",
        ));
    }
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        errors.push(FieldError::invalid(&path, json!(key), CONFIG_KEY_MESSAGE));
    }
    if key == "." {
        errors.push(FieldError::invalid(&path, json!(key), "must not be '.'"));
    } else if key == ".." {
        errors.push(FieldError::invalid(&path, json!(key), "must not be '..'"));
    } else if key.starts_with("..") {
        errors.push(FieldError::invalid(
            &path,
            json!(key),
            "must not start with '..'",
        ));
    }
    errors
}

fn map_keys<'a>(object: &'a Value, field: &str) -> Vec<&'a String> {
    object
        .get(field)
        .and_then(Value::as_object)
        .map(|m| m.keys().collect())
        .unwrap_or_default()
}

/// Kind-specific validation (the subset of the real strategies that matters here).
pub(crate) fn validate_resource(
    info: &ResourceInfo,
    object: &Value,
    old: Option<&Value>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if info.id == "events.events.k8s.io" {
        return crate::events::validate(object, old);
    }
    if !info.group.is_empty() {
        return errors;
    }
    match info.plural {
        "secrets" => {
            for key in map_keys(object, "data") {
                errors.extend(config_key_errors("data", key));
            }
            let data = object.get("data").and_then(Value::as_object);
            let has = |key: &str| data.is_some_and(|d| d.contains_key(key));
            let secret_type = object["type"].as_str().unwrap_or("Opaque");
            match secret_type {
                "kubernetes.io/tls" => {
                    for key in ["tls.crt", "tls.key"] {
                        if !has(key) {
                            errors.push(FieldError::required(format!("data[{key}]"), ""));
                        }
                    }
                }
                "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
                    errors.push(FieldError::required("data[.dockerconfigjson]", ""));
                }
                "kubernetes.io/dockercfg" if !has(".dockercfg") => {
                    errors.push(FieldError::required("data[.dockercfg]", ""));
                }
                "kubernetes.io/ssh-auth" if !has("ssh-privatekey") => {
                    errors.push(FieldError::required("data[ssh-privatekey]", ""));
                }
                "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
                    errors.push(FieldError::required("data[username]", ""));
                    errors.push(FieldError::required("data[password]", ""));
                }
                _ => {}
            }
            let size: usize = data
                .map(|d| {
                    d.values()
                        .filter_map(Value::as_str)
                        .map(|v| STANDARD.decode(v).map(|b| b.len()).unwrap_or(0))
                        .sum()
                })
                .unwrap_or(0);
            if size > MAX_SECRET_BYTES {
                errors.push(FieldError::too_long(
                    "data",
                    format!("may not be more than {MAX_SECRET_BYTES} bytes"),
                ));
            }
            if let Some(old) = old {
                let old_type = old["type"].as_str().unwrap_or("Opaque");
                if old_type != secret_type {
                    errors.push(FieldError::invalid(
                        "type",
                        json!(secret_type),
                        "field is immutable",
                    ));
                }
                errors.extend(immutable_data_errors(object, old, &["data"]));
            }
        }
        "configmaps" => {
            let data = map_keys(object, "data");
            let binary = map_keys(object, "binaryData");
            for key in &data {
                errors.extend(config_key_errors("data", key));
            }
            for key in &binary {
                errors.extend(config_key_errors("binaryData", key));
                if data.contains(key) {
                    errors.push(FieldError::invalid(
                        format!("data[{key}]"),
                        json!(key),
                        "duplicate of key present in binaryData",
                    ));
                }
            }
            if let Some(old) = old {
                errors.extend(immutable_data_errors(object, old, &["data", "binaryData"]));
            }
        }
        _ => {}
    }
    errors
}

/// Secrets and ConfigMaps marked `immutable: true` may not change data or drop the mark.
fn immutable_data_errors(object: &Value, old: &Value, fields: &[&str]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if old["immutable"].as_bool() != Some(true) {
        return errors;
    }
    if object["immutable"].as_bool() != Some(true) {
        errors.push(FieldError::forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    for field in fields {
        let empty = json!({});
        let normalise = |v: &Value| {
            if v.is_null() {
                empty.clone()
            } else {
                v.clone()
            }
        };
        if normalise(&object[*field]) != normalise(&old[*field]) {
            errors.push(FieldError::forbidden(
                *field,
                "field is immutable when `immutable` is set",
            ));
        }
    }
    errors
}
