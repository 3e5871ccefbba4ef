//! Failed requests as the real server's `metav1.Status` bodies, and validation causes.

use axum::response::Response;
use serde_json::{json, Value};

use crate::resources::ResourceInfo;
use crate::router::json_response;

/// A failed request, rendered as the real server's `metav1.Status`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    details: Option<Value>,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub(crate) fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    fn resource_details(info: &ResourceInfo, name: &str) -> Value {
        let mut details = json!({"name": name, "kind": info.plural});
        if !info.group.is_empty() {
            details["group"] = json!(info.group);
        }
        details
    }

    pub(crate) fn not_found(info: &ResourceInfo, name: &str) -> Self {
        let message = format!("{} \"{}\" not found", info.qualified_resource(), name);
        Self::new(404, "NotFound", message).with_details(Self::resource_details(info, name))
    }

    pub(crate) fn already_exists(info: &ResourceInfo, name: &str) -> Self {
        let message = format!("{} \"{}\" already exists", info.qualified_resource(), name);
        Self::new(409, "AlreadyExists", message).with_details(Self::resource_details(info, name))
    }

    pub(crate) fn conflict(info: &ResourceInfo, name: &str, why: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{}\": {}",
            info.qualified_resource(),
            name,
            why
        );
        Self::new(409, "Conflict", message).with_details(Self::resource_details(info, name))
    }

    pub(crate) fn modified(info: &ResourceInfo, name: &str) -> Self {
        Self::conflict(
            info,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub(crate) fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Self {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let body = if errors.len() == 1 {
            errors[0].to_string()
        } else {
            let all: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            format!("[{}]", all.join(", "))
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason(), "message": e.message(), "field": e.field}))
            .collect();
        let mut details = json!({"name": name, "kind": kind, "causes": causes});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        Self::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {body}"),
        )
        .with_details(details)
    }

    pub(crate) fn invalid_object(info: &ResourceInfo, name: &str, errors: &[FieldError]) -> Self {
        Self::invalid(info.group, info.kind, name, errors)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub(crate) fn method_not_allowed(verb: &str, info: Option<&ResourceInfo>) -> Self {
        let kind = info.map(|i| i.kind).unwrap_or("");
        Self::new(
            405,
            "MethodNotAllowed",
            format!("{verb} is not supported on resources of kind \"{kind}\""),
        )
    }

    pub(crate) fn no_resource() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub(crate) fn unsupported_patch(custom: bool) -> Self {
        let types = if custom {
            "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        } else {
            "application/json-patch+json, application/merge-patch+json, \
             application/strategic-merge-patch+json, application/apply-patch+yaml"
        };
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {types}"
            ),
        )
    }

    pub(crate) fn injected(code: u16) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Gone",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "",
        };
        Self::new(code, reason, format!("injected failure (HTTP {code})"))
    }

    pub(crate) fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            status["reason"] = json!(self.reason);
        }
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }

    pub(crate) fn into_response(self) -> Response {
        json_response(self.code, &self.to_status())
    }
}

/// One entry of a validation error list (`field.Error` on the real server).
#[derive(Debug)]
pub(crate) struct FieldError {
    pub(crate) field: String,
    pub(crate) kind: FieldErrorKind,
    detail: String,
}

#[derive(Debug)]
pub(crate) enum FieldErrorKind {
    Invalid(Value),
    Required,
    Forbidden,
    TooLong,
}

impl FieldError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: Value,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid(value),
            detail: detail.into(),
        }
    }

    pub(crate) fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Required,
            detail: detail.into(),
        }
    }

    pub(crate) fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            detail: detail.into(),
        }
    }

    pub(crate) fn too_long(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::TooLong,
            detail: detail.into(),
        }
    }

    pub(crate) fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Invalid(_) => "FieldValueInvalid",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
        }
    }

    pub(crate) fn message(&self) -> String {
        match &self.kind {
            FieldErrorKind::Invalid(value) => {
                format!("Invalid value: {}: {}", value, self.detail)
            }
            FieldErrorKind::Required => format!("Required value: {}", self.detail),
            FieldErrorKind::Forbidden => format!("Forbidden: {}", self.detail),
            FieldErrorKind::TooLong => format!("Too long: {}", self.detail),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message())
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;
