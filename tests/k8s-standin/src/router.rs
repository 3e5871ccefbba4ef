//! HTTP: parsing a request path and query, counting, unmetered endpoints and the one
//! axum handler that routes everything.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxumState};
use axum::http::{header, Method};
use axum::response::Response;
use serde_json::{json, Value};

use crate::handlers::Call;
use crate::resources::{resource_for_path, ResourceInfo, RESOURCES};
use crate::status::ApiError;
use crate::store::Inner;
use crate::{ISSUER, MAX_BODY_BYTES};

pub(crate) fn json_response(code: u16, value: &Value) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::to_vec(value).expect("serialise JSON"),
        ))
        .expect("build response")
}

fn text_response(code: u16, text: &'static str) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(text))
        .expect("build response")
}

/// A request's query string.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(query: Option<&str>) -> Query {
        Query(
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true") | Some("1"))
    }
}

/// A request path that names a resource.
pub(crate) struct Target {
    /// The resource as named in the URL (for counting unknown resources).
    pub(crate) plural: String,
    pub(crate) info: Option<&'static ResourceInfo>,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) subresource: Option<String>,
}

impl Target {
    /// The counter key: `secrets`, `deployments/status`, `serviceaccounts/token`.
    fn count_key(&self) -> String {
        let base = self
            .info
            .map(|i| i.id.to_string())
            .unwrap_or_else(|| self.plural.clone());
        match &self.subresource {
            Some(sub) => format!("{base}/{sub}"),
            None => base,
        }
    }
}

enum Route {
    Discovery { group: String, version: String },
    Resource(Target),
}

fn parse_route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let owned = |s: &str| Some(s.to_string());
    let (namespace, plural, name, subresource) = match rest {
        [] => {
            return Some(Route::Discovery {
                group: group.to_string(),
                version: version.to_string(),
            })
        }
        // The Namespace object and its subresources.
        ["namespaces", ns] if group.is_empty() => (None, "namespaces", owned(ns), None),
        ["namespaces", ns, sub @ ("status" | "finalize")] if group.is_empty() => {
            (None, "namespaces", owned(ns), owned(sub))
        }
        ["namespaces", ns, plural] => (owned(ns), *plural, None, None),
        ["namespaces", ns, plural, name] => (owned(ns), *plural, owned(name), None),
        ["namespaces", ns, plural, name, sub] => (owned(ns), *plural, owned(name), owned(sub)),
        [plural] => (None, *plural, None, None),
        [plural, name] => (None, *plural, owned(name), None),
        [plural, name, sub] => (None, *plural, owned(name), owned(sub)),
        _ => return None,
    };
    let info = resource_for_path(group, version, plural).filter(|info| {
        // A namespaced resource has no object paths outside a namespace, and a cluster-scoped
        // one has no paths inside one.
        if info.namespaced {
            namespace.is_some() || name.is_none()
        } else {
            namespace.is_none()
        }
    });
    Some(Route::Resource(Target {
        plural: plural.to_string(),
        info,
        namespace,
        name,
        subresource,
    }))
}

fn verb_for(method: &Method, target: &Target, query: &Query) -> &'static str {
    match (method.as_str(), target.name.is_some()) {
        ("GET", false) if query.flag("watch") => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

pub(crate) async fn handle(AxumState(inner): AxumState<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Some(response) = inner.unmetered(&parts.method, parts.uri.path()) {
        return response;
    }
    let route = match parse_route(parts.uri.path()) {
        Some(route) => route,
        None => return text_response(404, "404 page not found\n"),
    };
    let target = match route {
        Route::Discovery { group, version } => {
            return inner.group_version_discovery(&group, &version)
        }
        Route::Resource(target) => target,
    };
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return ApiError::new(413, "RequestEntityTooLarge", "request entity too large")
                .into_response()
        }
    };
    let query = Query::parse(parts.uri.query());
    let verb = verb_for(&parts.method, &target, &query);
    let key = target.count_key();
    let dry_run = query.get("dryRun") == Some("All")
        || (verb.starts_with("delete")
            && serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|o| o["dryRun"].as_array().cloned())
                .is_some_and(|d| d.iter().any(|x| x == "All")));

    if let Some(failure) = inner.record_request(verb, &key, dry_run) {
        return failure.into_response();
    }
    if verb == "list" || verb == "watch" {
        inner.released(&key).await;
    }
    // `Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1` (what kube's
    // `Api<PartialObjectMeta<K>>` sends) asks for metadata only, as the real server serves it.
    let metadata_only = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("as=PartialObjectMetadata"));
    if verb == "watch" {
        return match inner.watch(&target, &query) {
            Ok(response) if metadata_only => response.map(|body| {
                Body::from_stream(futures::StreamExt::map(body.into_data_stream(), |chunk| {
                    chunk.map(metadata_only_event)
                }))
            }),
            Ok(response) => response,
            Err(err) => err.into_response(),
        };
    }
    let request = Call {
        verb,
        target: &target,
        query: &query,
        headers: &parts.headers,
        body: &body,
        dry_run,
    };
    match inner.dispatch(&request) {
        Ok((code, value)) if metadata_only && verb != "delete" => {
            json_response(code, &partial_metadata(value))
        }
        Ok((code, value)) => json_response(code, &value),
        Err(err) => err.into_response(),
    }
}

/// An object (or list) reduced to `PartialObjectMetadata` (or `PartialObjectMetadataList`).
fn partial_metadata(value: Value) -> Value {
    if value["kind"] == "Status" {
        return value;
    }
    if let Some(items) = value.get("items").and_then(Value::as_array) {
        return json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": value["metadata"],
            "items": items.iter().cloned().map(partial_metadata).collect::<Vec<_>>(),
        });
    }
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": value["metadata"]})
}

/// One watch line with its object reduced to metadata (ERROR Status events pass through).
fn metadata_only_event(line: Bytes) -> Bytes {
    let Ok(mut event) = serde_json::from_slice::<Value>(&line) else {
        return line;
    };
    if event["type"] != "ERROR" {
        let object = event["object"].take();
        event["object"] = partial_metadata(object);
    }
    let mut out = serde_json::to_vec(&event).expect("serialise event");
    out.push(b'\n');
    Bytes::from(out)
}

impl Inner {
    /// Count a request; returns an injected failure if one is armed for it.
    fn record_request(&self, verb: &str, key: &str, dry_run: bool) -> Option<ApiError> {
        let mut state = self.state();
        state.total_requests += 1;
        *state
            .counts
            .entry((verb.to_string(), key.to_string()))
            .or_default() += 1;
        if WRITE_VERBS.contains(&verb) {
            if dry_run {
                *state
                    .dry_runs
                    .entry((verb.to_string(), key.to_string()))
                    .or_default() += 1;
            } else {
                *state.writes.entry(key.to_string()).or_default() += 1;
            }
        }
        let failure = state
            .injected_failures
            .iter_mut()
            .find(|f| f.verb == verb && f.resource == key && f.remaining > 0)?;
        failure.remaining -= 1;
        let code = failure.code;
        state.injected_failures.retain(|f| f.remaining > 0);
        Some(ApiError::injected(code))
    }

    /// Endpoints that do not name a resource and are not counted.
    fn unmetered(&self, method: &Method, path: &str) -> Option<Response> {
        if method != Method::GET {
            return None;
        }
        let response = match path.trim_end_matches('/') {
            "/healthz" | "/livez" | "/readyz" => text_response(200, "ok"),
            "/version" => json_response(
                200,
                &json!({
                    "major": "1", "minor": "33", "gitVersion": "v1.33.0-standin",
                    "gitCommit": "0000000000000000000000000000000000000000",
                    "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
                    "goVersion": "go1.24.0", "compiler": "gc", "platform": "linux/amd64",
                }),
            ),
            "/api" => json_response(
                200,
                &json!({
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": self.addr.to_string()}
                    ],
                }),
            ),
            "/apis" => {
                let mut groups: Vec<(&str, &str)> = RESOURCES
                    .iter()
                    .filter(|r| !r.group.is_empty())
                    .map(|r| (r.group, r.version))
                    .collect();
                groups.sort();
                groups.dedup();
                let groups: Vec<Value> = groups
                    .into_iter()
                    .map(|(group, version)| {
                        let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
                        json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
                    })
                    .collect();
                json_response(
                    200,
                    &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
                )
            }
            "/openid/v1/jwks" => json_response(200, &self.keys.jwks()),
            "/.well-known/openid-configuration" => json_response(
                200,
                &json!({
                    "issuer": ISSUER,
                    "jwks_uri": format!("http://{}/openid/v1/jwks", self.addr),
                    "response_types_supported": ["id_token"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                }),
            ),
            _ => return None,
        };
        Some(response)
    }

    /// `GET /api/v1`, `GET /apis/{group}/{version}`: an APIResourceList.
    fn group_version_discovery(&self, group: &str, version: &str) -> Response {
        let served: Vec<&ResourceInfo> = RESOURCES
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .collect();
        if served.is_empty() {
            return ApiError::no_resource().into_response();
        }
        let mut resources = Vec::new();
        for info in served {
            let verbs: &[&str] = if info.virtual_only {
                &["create"]
            } else {
                &[
                    "create",
                    "delete",
                    "deletecollection",
                    "get",
                    "list",
                    "patch",
                    "update",
                    "watch",
                ]
            };
            resources.push(json!({
                "name": info.plural, "singularName": info.singular, "namespaced": info.namespaced,
                "kind": info.kind, "verbs": verbs,
            }));
            if info.status {
                resources.push(json!({
                    "name": format!("{}/status", info.plural), "singularName": "",
                    "namespaced": info.namespaced, "kind": info.kind, "verbs": ["get", "patch", "update"],
                }));
            }
            if info.id == "serviceaccounts" {
                resources.push(json!({
                    "name": "serviceaccounts/token", "singularName": "", "namespaced": true,
                    "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest",
                    "verbs": ["create"],
                }));
            }
        }
        let group_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        json_response(
            200,
            &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
        )
    }
}
