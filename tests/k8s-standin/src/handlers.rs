//! The non-watch verbs: get, list, create, update, patch, delete, deletecollection.

use axum::body::Bytes;
use axum::http::{header, HeaderMap};
use serde_json::{json, Value};

use crate::list::ContinueToken;
use crate::resources::ResourceInfo;
use crate::router::{Query, Target};
use crate::selectors::{FieldSelector, LabelSelector, ObjectFilter};
use crate::status::{ApiError, ApiResult, FieldError};
use crate::store::Inner;
use crate::validation::parse_json_body;

/// Everything a non-watch verb needs.
pub(crate) struct Call<'a> {
    pub(crate) verb: &'static str,
    pub(crate) target: &'a Target,
    pub(crate) query: &'a Query,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a Bytes,
    pub(crate) dry_run: bool,
}

impl Inner {
    pub(crate) fn dispatch(&self, call: &Call<'_>) -> ApiResult<(u16, Value)> {
        let target = call.target;
        let info = target.info.ok_or_else(ApiError::no_resource)?;
        let namespace = target.namespace.as_deref().unwrap_or("");
        let status_only = match target.subresource.as_deref() {
            None => false,
            Some("status") if info.status => true,
            Some("token") if info.id == "serviceaccounts" && call.verb == "create" => {
                let name = target.name.as_deref().unwrap_or("");
                let response = self
                    .state()
                    .token_request(self.keys, namespace, name, call.body)?;
                return Ok((201, response));
            }
            Some(_) => return Err(ApiError::no_resource()),
        };
        if info.virtual_only {
            if call.verb != "create" || target.name.is_some() {
                return Err(ApiError::method_not_allowed(call.verb, Some(info)));
            }
            let review = self
                .state()
                .token_review(self.keys, call.headers, call.body)?;
            return Ok((201, review));
        }
        if let Some(value) = call.query.get("dryRun").filter(|v| *v != "All") {
            return Err(ApiError::bad_request(format!(
                "Invalid dry run value: {value}; valid values are [All]"
            )));
        }

        match (call.verb, target.name.as_deref()) {
            ("get", Some(name)) => {
                let state = self.state();
                let object = state
                    .get(info, namespace, name)
                    .ok_or_else(|| ApiError::not_found(info, name))?;
                Ok((200, object.clone()))
            }
            ("list", None) => {
                let filter = object_filter(info, target, call.query)?;
                let limit =
                    match call.query.get("limit") {
                        Some(limit) => Some(limit.parse::<usize>().map_err(|_| {
                            ApiError::bad_request(format!("invalid limit: {limit}"))
                        })?),
                        None => None,
                    };
                let continue_from = match call.query.get("continue").filter(|c| !c.is_empty()) {
                    Some(token) => Some(ContinueToken::decode(token)?),
                    None => None,
                };
                Ok((200, self.state().list(&filter, limit, continue_from)))
            }
            ("create", None) => {
                if info.namespaced && target.namespace.is_none() {
                    return Err(ApiError::method_not_allowed("create", Some(info)));
                }
                let object = parse_json_body(call.body)?;
                let created = self.state().create(info, namespace, object, call.dry_run)?;
                Ok((201, created))
            }
            ("update", Some(name)) => {
                let object = parse_json_body(call.body)?;
                self.state()
                    .update(info, namespace, name, object, status_only, call.dry_run)
            }
            ("patch", Some(name)) => {
                let patch_type = PatchType::from_headers(call.headers, info)?;
                if patch_type == PatchType::Apply
                    && call.query.get("fieldManager").is_none_or(str::is_empty)
                {
                    return Err(ApiError::invalid(
                        "meta.k8s.io",
                        "PatchOptions",
                        "",
                        &[FieldError::required(
                            "fieldManager",
                            "is required for apply patch",
                        )],
                    ));
                }
                let patch = patch_type.parse_body(call.body)?;
                self.state().patch(
                    info,
                    namespace,
                    name,
                    patch_type,
                    patch,
                    status_only,
                    call.dry_run,
                )
            }
            ("delete", Some(name)) => {
                let options = delete_options(call.body)?;
                let deleted = self
                    .state()
                    .delete(info, namespace, name, &options, call.dry_run)?;
                Ok((200, deleted))
            }
            ("deletecollection", None) => {
                delete_options(call.body)?;
                let filter = object_filter(info, target, call.query)?;
                let mut state = self.state();
                let mut items = Vec::new();
                for object in state.matching(&filter) {
                    items.push(if call.dry_run {
                        object
                    } else {
                        state.delete_object(info, object)
                    });
                }
                Ok((
                    200,
                    json!({
                        "kind": format!("{}List", info.kind),
                        "apiVersion": info.api_version(),
                        "metadata": {"resourceVersion": state.rv.to_string()},
                        "items": items,
                    }),
                ))
            }
            (verb, _) => Err(ApiError::method_not_allowed(verb, Some(info))),
        }
    }
}

pub(crate) fn object_filter(
    info: &'static ResourceInfo,
    target: &Target,
    query: &Query,
) -> ApiResult<ObjectFilter> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""), info)
        .map_err(ApiError::bad_request)?;
    Ok(ObjectFilter {
        info,
        namespace: if info.namespaced {
            target.namespace.clone()
        } else {
            None
        },
        labels,
        fields,
    })
}

fn delete_options(body: &[u8]) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    parse_json_body(body)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    fn from_headers(headers: &HeaderMap, info: &ResourceInfo) -> ApiResult<PatchType> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match content_type.as_str() {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" if !info.custom => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" => Ok(PatchType::Apply),
            _ => Err(ApiError::unsupported_patch(info.custom)),
        }
    }

    fn parse_body(self, body: &[u8]) -> ApiResult<Value> {
        let text = std::str::from_utf8(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let parsed: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(_) if self == PatchType::Apply => serde_saphyr::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
            Err(json_error) => return Err(ApiError::bad_request(json_error.to_string())),
        };
        match self {
            PatchType::Json if !parsed.is_array() => Err(ApiError::bad_request(
                "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
            )),
            PatchType::Merge | PatchType::Strategic | PatchType::Apply if !parsed.is_object() => {
                Err(ApiError::bad_request("the patch is not a JSON object"))
            }
            PatchType::Apply
                if parsed["apiVersion"].as_str().is_none() || parsed["kind"].as_str().is_none() =>
            {
                Err(ApiError::bad_request(
                    "apply patches must set apiVersion and kind",
                ))
            }
            _ => Ok(parsed),
        }
    }
}
