//! events.k8s.io/v1 Event validation, as the real server's strict path for that API version
//! (`ValidateEventCreate`/`ValidateEventUpdate`): the fields a new-style Event must carry, the
//! 1 KiB `note` limit, `series` rules, and which fields an update may not change. Core `v1`
//! Events keep the lenient legacy rules and are not checked here.

use serde_json::{json, Value};

use crate::status::FieldError;

/// Length limits of the real validation (bytes).
const NOTE_LIMIT: usize = 1024;
const SHORT_LIMIT: usize = 128;

pub(crate) fn validate(object: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let text = |f: &str| object.get(f).and_then(Value::as_str).unwrap_or("");
    if object.get("eventTime").is_none_or(Value::is_null) {
        errors.push(FieldError::required("eventTime", ""));
    }
    match text("type") {
        "Normal" | "Warning" => {}
        other => errors.push(FieldError::invalid(
            "type",
            json!(""),
            format!("has invalid value: {other}"),
        )),
    }
    for (field, limit) in [
        ("reportingController", usize::MAX),
        ("reportingInstance", SHORT_LIMIT),
        ("action", SHORT_LIMIT),
        ("reason", SHORT_LIMIT),
    ] {
        let value = text(field);
        if value.is_empty() {
            errors.push(FieldError::required(field, ""));
        } else if value.len() > limit {
            errors.push(FieldError::too_long(
                field,
                format!("may not be more than {limit} bytes"),
            ));
        }
    }
    if text("note").len() > NOTE_LIMIT {
        errors.push(FieldError::too_long(
            "note",
            format!("may not be more than {NOTE_LIMIT} bytes"),
        ));
    }
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or("");
    let regarding_ns = object["regarding"]["namespace"].as_str().unwrap_or("");
    if regarding_ns.is_empty() && namespace != "default" && namespace != "kube-system" {
        errors.push(FieldError::invalid(
            "regarding.namespace",
            json!(regarding_ns),
            "does not match event.namespace",
        ));
    }
    for field in [
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
        "deprecatedCount",
        "deprecatedSource",
    ] {
        if object.get(field).is_some_and(|v| !v.is_null()) {
            errors.push(FieldError::invalid(field, json!(""), "needs to be unset"));
        }
    }
    if let Some(series) = object.get("series").filter(|s| !s.is_null()) {
        if series["count"].as_i64().unwrap_or(0) < 2 {
            errors.push(FieldError::invalid(
                "series.count",
                json!(""),
                "should be at least 2",
            ));
        }
        if series.get("lastObservedTime").is_none_or(Value::is_null) {
            errors.push(FieldError::required("series.lastObservedTime", ""));
        }
    }
    if let Some(old) = old {
        for field in [
            "regarding",
            "related",
            "reason",
            "note",
            "type",
            "eventTime",
            "action",
            "reportingController",
            "reportingInstance",
        ] {
            let norm = |v: Option<&Value>| v.cloned().unwrap_or(Value::Null);
            if norm(object.get(field)) != norm(old.get(field)) {
                errors.push(FieldError::invalid(
                    field,
                    object.get(field).cloned().unwrap_or(Value::Null),
                    "field is immutable",
                ));
            }
        }
    }
    errors
}
