//! An in-process stand-in for the Kubernetes API server, for tests.
//!
//! `StandIn::start()` serves plain HTTP on a random loopback port and follows the real API
//! server's REST semantics for the handful of resources this project touches: `metav1.Status`
//! errors, a single global `resourceVersion` counter, optimistic concurrency, generation
//! bumping, status subresources, JSON/merge patches, finalizers, label/field selectors,
//! paginated lists and watches with history replay, bookmarks and `410 Gone`. It also issues
//! and reviews service-account tokens (TokenRequest / TokenReview) with a real RSA key, so a
//! real OpenBao can verify them.
//!
//! What it deliberately does not model (RBAC, admission, controllers, garbage collection,
//! server-side-apply field ownership, …) is listed in `STANDIN.md` next to this file.
//!
//! Layout of this file: public interface, resource table, API errors, the store (objects,
//! history, counters), selectors, tokens, validation helpers, and the HTTP router.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxumState};
use axum::http::{header, HeaderMap, Method};
use axum::response::Response;
use axum::Router;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rand::Rng as _;
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

// ============================================================================================
// Constants
// ============================================================================================

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The namespace and name of the ServiceAccount whose token `client()` presents.
const SELF_NAMESPACE: &str = "secret-injector";
const SELF_SERVICE_ACCOUNT: &str = "secret-injector";
/// Namespaces present in every fresh cluster.
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

const DEFAULT_HISTORY_LIMIT: usize = 10_000;
const EVENT_CHANNEL_CAPACITY: usize = 16_384;
/// The real server rejects request bodies above 3 MiB.
const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// The real server picks a random watch timeout in [1800s, 3600s] when none is asked for.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

const MIN_TOKEN_EXPIRATION: i64 = 600;
const DEFAULT_TOKEN_EXPIRATION: i64 = 3600;
const MAX_TOKEN_EXPIRATION: i64 = 48 * 3600;
/// go-jose's default leeway, which the API server's token validation uses.
const TOKEN_LEEWAY_SECONDS: i64 = 60;
/// Lifetime of the token `client()` / `write_kubeconfig()` present.
const CLIENT_TOKEN_SECONDS: i64 = 24 * 3600;

const MAX_SECRET_BYTES: usize = 1024 * 1024;

// ============================================================================================
// Public interface
// ============================================================================================

/// The running stand-in. Dropping it stops the server and ends every open watch.
pub struct StandIn {
    inner: Arc<Inner>,
    addr: SocketAddr,
    server: JoinHandle<()>,
    shutdown: watch::Sender<bool>,
}

/// One TokenRequest (`POST …/serviceaccounts/{name}/token`) served, successful or not.
#[derive(Clone, Debug)]
pub struct TokenRequestRecord {
    pub namespace: String,
    pub service_account: String,
    /// As requested; empty means "the API server's default audiences".
    pub audiences: Vec<String>,
    /// As requested, or 3600 when the request left it unset.
    pub expiration_seconds: i64,
    /// HTTP status code of the response.
    pub status: u16,
}

/// One TokenReview evaluated (the caller had a valid bearer token).
#[derive(Clone, Debug)]
pub struct TokenReviewRecord {
    /// `spec.audiences` as requested (empty = the API server's audiences).
    pub audiences: Vec<String>,
    pub authenticated: bool,
    pub username: Option<String>,
}

impl StandIn {
    /// Bind 127.0.0.1:0 and serve on the current tokio runtime.
    pub async fn start() -> StandIn {
        let keys = tokio::task::spawn_blocking(signing_keys)
            .await
            .expect("generate the stand-in's signing key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in's listener");
        let addr = listener.local_addr().expect("listener address");
        let (shutdown, shutdown_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new()),
            keys,
            addr,
            shutdown: shutdown_rx,
        });
        inner.bootstrap();
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        StandIn {
            inner,
            addr,
            server,
            shutdown,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client authenticated as `system:serviceaccount:secret-injector:secret-injector`.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().expect("stand-in url"));
        config.auth_info.token = Some(self.client_token().into());
        kube::Client::try_from(config).expect("build a kube client for the stand-in")
    }

    /// Write a kubeconfig (server = `url()`, the `client()` token, current-context set) that
    /// `kube::Config::infer()` accepts through `KUBECONFIG`.
    pub fn write_kubeconfig(&self, path: &Path) {
        let kubeconfig = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: standin\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: {sa}\n  user:\n    token: {token}\n\
             contexts:\n\
             - name: standin\n  context:\n    cluster: standin\n    user: {sa}\n    namespace: default\n\
             current-context: standin\n\
             preferences: {{}}\n",
            url = self.url(),
            sa = SELF_SERVICE_ACCOUNT,
            token = self.client_token(),
        );
        std::fs::write(path, kubeconfig).expect("write kubeconfig");
    }

    pub fn issuer(&self) -> String {
        ISSUER.to_string()
    }

    /// The API server's default audiences (`--api-audiences`).
    pub fn api_audiences(&self) -> Vec<String> {
        vec![ISSUER.to_string()]
    }

    /// RSA public key (PKIX PEM) that verifies every token this stand-in issues.
    pub fn public_key_pem(&self) -> String {
        self.inner.keys.public_pem.clone()
    }

    /// The `kid` header of issued tokens (base64url SHA-256 of the DER public key, as the real
    /// server computes it).
    pub fn key_id(&self) -> String {
        self.inner.keys.kid.clone()
    }

    /// Mint a token directly (not counted, not recorded). Empty `audiences` means the API
    /// server's audiences. The uid claim is the ServiceAccount's if it exists (so TokenReview
    /// accepts the token), otherwise a fresh uid (so TokenReview rejects it, as it would reject a
    /// token for a deleted account). A negative `expiration_seconds` yields an expired token.
    pub fn issue_token(
        &self,
        namespace: &str,
        service_account: &str,
        audiences: &[&str],
        expiration_seconds: i64,
    ) -> String {
        let sa_uid = self
            .inner
            .state()
            .get(res("serviceaccounts"), namespace, service_account)
            .map(|sa| uid_of(sa).to_string())
            .unwrap_or_else(new_uid);
        let audiences: Vec<String> = if audiences.is_empty() {
            self.api_audiences()
        } else {
            audiences.iter().map(|a| a.to_string()).collect()
        };
        let now = now_unix();
        self.inner.keys.mint(&TokenClaims {
            namespace,
            service_account,
            service_account_uid: &sa_uid,
            audiences: &audiences,
            issued_at: now,
            expires_at: now + expiration_seconds,
            bound: None,
        })
    }

    /// Store an object directly (not counted): fills uid, resourceVersion, creationTimestamp,
    /// generation and (for namespaced kinds) namespace (`default` when absent); merges a Secret's
    /// `stringData`. Replaces an existing object of the same name (keeping its uid and
    /// creationTimestamp unless given). Emits ADDED or MODIFIED. Returns the stored object.
    /// Panics on an unknown apiVersion/kind: this is test set-up.
    pub fn seed(&self, object: Value) -> Value {
        self.inner.state().seed(object)
    }

    /// The stored object, if any. `resource` is the plural (`"secrets"`), or `plural.group`
    /// (`"events.events.k8s.io"` for the events.k8s.io Event store). Not counted.
    pub fn object(&self, resource: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let info = res(resource);
        self.inner
            .state()
            .get(info, namespace.unwrap_or(""), name)
            .cloned()
    }

    /// Every stored object of a resource, ordered by namespace then name. Not counted.
    pub fn objects(&self, resource: &str) -> Vec<Value> {
        let info = res(resource);
        let state = self.inner.state();
        state
            .bucket(info)
            .map(|b| b.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Delete an object directly, ignoring finalizers (not counted). Emits DELETED.
    pub fn remove(&self, resource: &str, namespace: Option<&str>, name: &str) {
        let info = res(resource);
        let mut state = self.inner.state();
        if let Some(old) = state.get(info, namespace.unwrap_or(""), name).cloned() {
            state.remove_now(info, old);
        }
    }

    /// Requests served for (verb, resource); resource includes the subresource
    /// (`"deployments/status"`, `"serviceaccounts/token"`). Verbs: get, list, watch, create,
    /// update, patch, delete, deletecollection.
    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        let state = self.inner.state();
        state
            .counts
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    pub fn counts(&self) -> BTreeMap<(String, String), u64> {
        self.inner.state().counts.clone()
    }

    /// Requests that named a resource (discovery, health and JWKS endpoints are not counted).
    pub fn total_requests(&self) -> u64 {
        self.inner.state().total_requests
    }

    /// Write requests (create, update, patch, delete, deletecollection) on exactly this resource
    /// key, failed ones included, dry-run ones excluded.
    pub fn writes(&self, resource: &str) -> u64 {
        self.inner
            .state()
            .writes
            .get(resource)
            .copied()
            .unwrap_or(0)
    }

    /// Dry-run requests (`dryRun=All`) for (verb, resource). They are also in `count`.
    pub fn dry_runs(&self, verb: &str, resource: &str) -> u64 {
        self.inner
            .state()
            .dry_runs
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Zero every request counter (token records are kept; see `clear_token_records`).
    pub fn reset_counts(&self) {
        let mut state = self.inner.state();
        state.counts.clear();
        state.writes.clear();
        state.dry_runs.clear();
        state.total_requests = 0;
    }

    pub fn token_requests(&self) -> Vec<TokenRequestRecord> {
        self.inner.state().token_requests.clone()
    }

    pub fn token_reviews(&self) -> Vec<TokenReviewRecord> {
        self.inner.state().token_reviews.clone()
    }

    pub fn clear_token_records(&self) {
        let mut state = self.inner.state();
        state.token_requests.clear();
        state.token_reviews.clear();
    }

    /// How many watch events are retained for replay (default 10,000). A watch from a
    /// resourceVersion older than the window gets `410 Gone` (`Expired`).
    pub fn set_history_limit(&self, limit: usize) {
        let mut state = self.inner.state();
        state.history_limit = limit;
        state.trim_history();
    }

    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK (default 1s).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.inner.state().bookmark_interval = interval;
    }

    /// Opt in to the NamespaceLifecycle admission plugin's check: creating a namespaced object
    /// in a namespace that does not exist fails with 404 `namespaces "x" not found`.
    pub fn require_namespaces(&self, enabled: bool) {
        self.inner.state().require_namespaces = enabled;
    }

    /// Make the next `times` requests matching (verb, resource) fail with `code` (a Status with
    /// the usual reason for that code). They are still counted.
    pub fn fail_next(&self, verb: &str, resource: &str, code: u16, times: u32) {
        self.inner.state().injected_failures.push(InjectedFailure {
            verb: verb.to_string(),
            resource: resource.to_string(),
            code,
            remaining: times,
        });
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.state().rv
    }

    fn client_token(&self) -> String {
        self.issue_token(
            SELF_NAMESPACE,
            SELF_SERVICE_ACCOUNT,
            &[],
            CLIENT_TOKEN_SECONDS,
        )
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.server.abort();
    }
}

// ============================================================================================
// Resource table
// ============================================================================================

/// One served resource.
#[derive(Debug)]
struct ResourceInfo {
    /// Key for counters and the public lookup functions: the plural, or `plural.group` where
    /// the plural alone is ambiguous (events.k8s.io events).
    id: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    group: &'static str,
    version: &'static str,
    namespaced: bool,
    /// Has a `/status` subresource: the main resource ignores status, `/status` changes only it.
    status: bool,
    /// Maintains `metadata.generation` (workloads, pods, custom resources; not Secrets etc.).
    generation: bool,
    /// PUT on a missing object creates it (true for leases and events on the real server).
    create_on_update: bool,
    /// A custom resource (no strategic merge patch).
    custom: bool,
    /// Create-only, never stored (TokenReview).
    virtual_only: bool,
}

impl ResourceInfo {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `secrets`, `deployments.apps`: how the real server names a resource in messages.
    fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Secret`, `Deployment.apps`.
    fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Field selectors the real server supports beyond metadata.name/namespace.
    fn extra_field_labels(&self) -> &'static [&'static str] {
        match (self.group, self.plural) {
            ("", "secrets") => &["type"],
            ("", "namespaces") => &["status.phase"],
            ("", "pods") => &[
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            ("", "events") => &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "type",
            ],
            ("batch", "jobs") => &["status.successful"],
            ("apps", "replicasets") => &["status.replicas"],
            _ => &[],
        }
    }
}

macro_rules! resource {
    ($id:expr, $plural:expr, $singular:expr, $kind:expr, $group:expr, $version:expr,
     namespaced: $ns:expr, status: $st:expr, generation: $gen:expr) => {
        ResourceInfo {
            id: $id,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            group: $group,
            version: $version,
            namespaced: $ns,
            status: $st,
            generation: $gen,
            create_on_update: false,
            custom: false,
            virtual_only: false,
        }
    };
}

static RESOURCES: [ResourceInfo; 21] = [
    resource!("namespaces", "namespaces", "namespace", "Namespace", "", "v1",
        namespaced: false, status: true, generation: false),
    resource!("serviceaccounts", "serviceaccounts", "serviceaccount", "ServiceAccount", "", "v1",
        namespaced: true, status: false, generation: false),
    resource!("secrets", "secrets", "secret", "Secret", "", "v1",
        namespaced: true, status: false, generation: false),
    resource!("configmaps", "configmaps", "configmap", "ConfigMap", "", "v1",
        namespaced: true, status: false, generation: false),
    ResourceInfo {
        create_on_update: true,
        ..resource!("events", "events", "event", "Event", "", "v1",
            namespaced: true, status: false, generation: false)
    },
    resource!("pods", "pods", "pod", "Pod", "", "v1",
        namespaced: true, status: true, generation: true),
    resource!("replicasets", "replicasets", "replicaset", "ReplicaSet", "apps", "v1",
        namespaced: true, status: true, generation: true),
    resource!("deployments", "deployments", "deployment", "Deployment", "apps", "v1",
        namespaced: true, status: true, generation: true),
    resource!("statefulsets", "statefulsets", "statefulset", "StatefulSet", "apps", "v1",
        namespaced: true, status: true, generation: true),
    resource!("daemonsets", "daemonsets", "daemonset", "DaemonSet", "apps", "v1",
        namespaced: true, status: true, generation: true),
    resource!("jobs", "jobs", "job", "Job", "batch", "v1",
        namespaced: true, status: true, generation: true),
    resource!("cronjobs", "cronjobs", "cronjob", "CronJob", "batch", "v1",
        namespaced: true, status: true, generation: true),
    ResourceInfo {
        create_on_update: true,
        ..resource!("leases", "leases", "lease", "Lease", "coordination.k8s.io", "v1",
            namespaced: true, status: false, generation: false)
    },
    ResourceInfo {
        create_on_update: true,
        ..resource!("events.events.k8s.io", "events", "event", "Event", "events.k8s.io", "v1",
            namespaced: true, status: false, generation: false)
    },
    ResourceInfo {
        custom: true,
        ..resource!("secretstores", "secretstores", "secretstore", "SecretStore",
            "secret-injector.io", "v1alpha1", namespaced: true, status: true, generation: true)
    },
    ResourceInfo {
        custom: true,
        ..resource!("clustersecretstores", "clustersecretstores", "clustersecretstore",
            "ClusterSecretStore", "secret-injector.io", "v1alpha1",
            namespaced: false, status: true, generation: true)
    },
    resource!("mutatingwebhookconfigurations", "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration", "MutatingWebhookConfiguration",
        "admissionregistration.k8s.io", "v1", namespaced: false, status: false, generation: true),
    resource!("validatingwebhookconfigurations", "validatingwebhookconfigurations",
        "validatingwebhookconfiguration", "ValidatingWebhookConfiguration",
        "admissionregistration.k8s.io", "v1", namespaced: false, status: false, generation: true),
    resource!("nodes", "nodes", "node", "Node", "", "v1",
        namespaced: false, status: true, generation: false),
    resource!("services", "services", "service", "Service", "", "v1",
        namespaced: true, status: true, generation: false),
    ResourceInfo {
        virtual_only: true,
        ..resource!("tokenreviews", "tokenreviews", "tokenreview", "TokenReview",
            "authentication.k8s.io", "v1", namespaced: false, status: false, generation: false)
    },
];

/// Look a resource up by its id (`secrets`, `events.events.k8s.io`) or `plural.group`.
fn find_resource(name: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.id == name)
        .or_else(|| RESOURCES.iter().find(|r| r.qualified_resource() == name))
}

/// Like `find_resource`, for test helpers: an unknown name is a bug in the test.
fn res(name: &str) -> &'static ResourceInfo {
    find_resource(name).unwrap_or_else(|| panic!("the stand-in does not serve resource {name:?}"))
}

fn resource_for_path(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

fn resource_for_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind && !r.virtual_only)
}

// ============================================================================================
// API errors (metav1.Status)
// ============================================================================================

/// A failed request, rendered as the real server's `metav1.Status`.
#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
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

    fn not_found(info: &ResourceInfo, name: &str) -> Self {
        let message = format!("{} \"{}\" not found", info.qualified_resource(), name);
        Self::new(404, "NotFound", message).with_details(Self::resource_details(info, name))
    }

    fn already_exists(info: &ResourceInfo, name: &str) -> Self {
        let message = format!("{} \"{}\" already exists", info.qualified_resource(), name);
        Self::new(409, "AlreadyExists", message).with_details(Self::resource_details(info, name))
    }

    fn conflict(info: &ResourceInfo, name: &str, why: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{}\": {}",
            info.qualified_resource(),
            name,
            why
        );
        Self::new(409, "Conflict", message).with_details(Self::resource_details(info, name))
    }

    fn modified(info: &ResourceInfo, name: &str) -> Self {
        Self::conflict(
            info,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Self {
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

    fn invalid_object(info: &ResourceInfo, name: &str, errors: &[FieldError]) -> Self {
        Self::invalid(info.group, info.kind, name, errors)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    fn method_not_allowed(verb: &str, info: Option<&ResourceInfo>) -> Self {
        let kind = info.map(|i| i.kind).unwrap_or("");
        Self::new(
            405,
            "MethodNotAllowed",
            format!("{verb} is not supported on resources of kind \"{kind}\""),
        )
    }

    fn no_resource() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    fn unsupported_patch(custom: bool) -> Self {
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

    fn injected(code: u16) -> Self {
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

    fn to_status(&self) -> Value {
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

    fn into_response(self) -> Response {
        json_response(self.code, &self.to_status())
    }
}

/// One entry of a validation error list (`field.Error` on the real server).
#[derive(Debug)]
struct FieldError {
    field: String,
    kind: FieldErrorKind,
    detail: String,
}

#[derive(Debug)]
enum FieldErrorKind {
    Invalid(Value),
    Required,
    Forbidden,
    TooLong,
}

impl FieldError {
    fn invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid(value),
            detail: detail.into(),
        }
    }

    fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Required,
            detail: detail.into(),
        }
    }

    fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            detail: detail.into(),
        }
    }

    fn too_long(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::TooLong,
            detail: detail.into(),
        }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Invalid(_) => "FieldValueInvalid",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
        }
    }

    fn message(&self) -> String {
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

type ApiResult<T> = Result<T, ApiError>;

// ============================================================================================
// Store: objects, history, counters
// ============================================================================================

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One change, as recorded for watch replay and fan-out.
#[derive(Debug)]
struct StoredEvent {
    rv: u64,
    resource: &'static str,
    kind: EventKind,
    /// The new state (for DELETED: the last state, carrying the deletion's resourceVersion).
    object: Value,
    /// For MODIFIED: the state before, so selector-filtered watches can turn the change into
    /// ADDED or DELETED as the real watch cache does.
    previous: Option<Value>,
}

struct InjectedFailure {
    verb: String,
    resource: String,
    code: u16,
    remaining: u32,
}

type ObjectKey = (String, String);

struct State {
    rv: u64,
    objects: HashMap<&'static str, BTreeMap<ObjectKey, Value>>,
    history: VecDeque<Arc<StoredEvent>>,
    history_limit: usize,
    /// The highest resourceVersion dropped from `history` (a watch from below it is expired).
    compacted_rv: u64,
    events: broadcast::Sender<Arc<StoredEvent>>,

    counts: BTreeMap<(String, String), u64>,
    writes: BTreeMap<String, u64>,
    dry_runs: BTreeMap<(String, String), u64>,
    total_requests: u64,
    token_requests: Vec<TokenRequestRecord>,
    token_reviews: Vec<TokenReviewRecord>,

    injected_failures: Vec<InjectedFailure>,
    bookmark_interval: Duration,
    require_namespaces: bool,
}

struct Inner {
    state: Mutex<State>,
    keys: &'static SigningKeys,
    addr: SocketAddr,
    shutdown: watch::Receiver<bool>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What a fresh cluster (with this webhook installed) already holds.
    fn bootstrap(&self) {
        let mut state = self.state();
        for ns in SYSTEM_NAMESPACES.iter().chain([&SELF_NAMESPACE]) {
            state.seed(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns}, "status": {"phase": "Active"}}));
        }
        state.seed(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": SELF_SERVICE_ACCOUNT, "namespace": SELF_NAMESPACE}}));
    }
}

fn key_of(object: &Value) -> ObjectKey {
    (
        meta_str(object, "namespace").unwrap_or("").to_string(),
        meta_str(object, "name").unwrap_or("").to_string(),
    )
}

impl State {
    fn new() -> Self {
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        State {
            rv: 0,
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_limit: DEFAULT_HISTORY_LIMIT,
            compacted_rv: 0,
            events,
            counts: BTreeMap::new(),
            writes: BTreeMap::new(),
            dry_runs: BTreeMap::new(),
            total_requests: 0,
            token_requests: Vec::new(),
            token_reviews: Vec::new(),
            injected_failures: Vec::new(),
            bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
            require_namespaces: false,
        }
    }

    fn bucket(&self, info: &ResourceInfo) -> Option<&BTreeMap<ObjectKey, Value>> {
        self.objects.get(info.id)
    }

    fn get(&self, info: &ResourceInfo, namespace: &str, name: &str) -> Option<&Value> {
        let ns = if info.namespaced { namespace } else { "" };
        self.bucket(info)?.get(&(ns.to_string(), name.to_string()))
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Persist a change and publish it. `object` already carries its new resourceVersion.
    fn commit(
        &mut self,
        info: &'static ResourceInfo,
        kind: EventKind,
        object: Value,
        previous: Option<Value>,
    ) {
        let key = key_of(&object);
        let bucket = self.objects.entry(info.id).or_default();
        match kind {
            EventKind::Deleted => {
                bucket.remove(&key);
            }
            EventKind::Added | EventKind::Modified => {
                bucket.insert(key, object.clone());
            }
        }
        let event = Arc::new(StoredEvent {
            rv: rv_number(&object),
            resource: info.id,
            kind,
            object,
            previous,
        });
        self.history.push_back(event.clone());
        self.trim_history();
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted_rv = dropped.rv;
            }
        }
        if self.history_limit == 0 {
            self.compacted_rv = self.rv;
        }
    }

    /// Delete now, whatever the finalizers say. Returns the object as it was last stored.
    fn remove_now(&mut self, info: &'static ResourceInfo, old: Value) -> Value {
        let rv = self.next_rv();
        let mut gone = old.clone();
        set_meta(&mut gone, "resourceVersion", json!(rv.to_string()));
        self.commit(info, EventKind::Deleted, gone, None);
        old
    }

    fn seed(&mut self, mut object: Value) -> Value {
        let api_version = object["apiVersion"].as_str().unwrap_or("").to_string();
        let kind = object["kind"].as_str().unwrap_or("").to_string();
        let info = resource_for_kind(&api_version, &kind)
            .unwrap_or_else(|| panic!("seed: the stand-in does not serve {api_version} {kind}"));
        if info.namespaced {
            if meta_str(&object, "namespace").unwrap_or("").is_empty() {
                set_meta(&mut object, "namespace", json!("default"));
            }
        } else {
            remove_meta(&mut object, "namespace");
        }
        if let Err(err) = decode_resource(info, &mut object) {
            panic!("seed: {}", err.message);
        }
        let (ns, name) = key_of(&object);
        assert!(!name.is_empty(), "seed: metadata.name is required");
        let existing = self.get(info, &ns, &name).cloned();
        if meta_str(&object, "uid").unwrap_or("").is_empty() {
            let uid = existing
                .as_ref()
                .map(|o| uid_of(o).to_string())
                .unwrap_or_else(new_uid);
            set_meta(&mut object, "uid", json!(uid));
        }
        if meta_str(&object, "creationTimestamp")
            .unwrap_or("")
            .is_empty()
        {
            let created = existing
                .as_ref()
                .and_then(|o| meta_str(o, "creationTimestamp").map(str::to_string))
                .unwrap_or_else(|| rfc3339(now_unix()));
            set_meta(&mut object, "creationTimestamp", json!(created));
        }
        if info.generation && meta(&object).and_then(|m| m.get("generation")).is_none() {
            set_meta(&mut object, "generation", json!(1));
        }
        let rv = self.next_rv();
        set_meta(&mut object, "resourceVersion", json!(rv.to_string()));
        let kind = if existing.is_some() {
            EventKind::Modified
        } else {
            EventKind::Added
        };
        self.commit(info, kind, object.clone(), existing);
        object
    }

    // ----------------------------------------------------------------------------------------
    // Verbs. Each runs entirely under the state lock, so it is atomic like an etcd transaction.
    // ----------------------------------------------------------------------------------------

    fn create(
        &mut self,
        info: &'static ResourceInfo,
        namespace: &str,
        mut object: Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        check_type_meta(info, &mut object)?;
        set_namespace_from_url(info, namespace, &mut object)?;
        if meta(&object)
            .and_then(|m| m.get("resourceVersion"))
            .and_then(Value::as_str)
            .is_some_and(|rv| !rv.is_empty())
        {
            return Err(ApiError::new(
                500,
                "",
                "resourceVersion should not be set on objects to be created",
            ));
        }
        if meta_str(&object, "name").unwrap_or("").is_empty() {
            if let Some(prefix) = meta_str(&object, "generateName").filter(|p| !p.is_empty()) {
                let name = format!("{prefix}{}", random_suffix());
                set_meta(&mut object, "name", json!(name));
            }
        }
        decode_resource(info, &mut object)?;
        let name = meta_str(&object, "name").unwrap_or("").to_string();
        let mut errors = validate_metadata(info, &object);
        errors.extend(validate_resource(info, &object, None));
        if !errors.is_empty() {
            return Err(ApiError::invalid_object(info, &name, &errors));
        }
        if info.namespaced
            && self.require_namespaces
            && self.get(res("namespaces"), "", namespace).is_none()
        {
            return Err(ApiError::not_found(res("namespaces"), namespace));
        }
        if self.get(info, namespace, &name).is_some() {
            return Err(ApiError::already_exists(info, &name));
        }

        // System fields, as rest.BeforeCreate fills them (client values are overwritten).
        set_meta(&mut object, "uid", json!(new_uid()));
        set_meta(&mut object, "creationTimestamp", json!(rfc3339(now_unix())));
        remove_meta(&mut object, "deletionTimestamp");
        remove_meta(&mut object, "deletionGracePeriodSeconds");
        if info.generation {
            set_meta(&mut object, "generation", json!(1));
        } else {
            remove_meta(&mut object, "generation");
        }
        if info.status {
            reset_status_for_create(info, &mut object);
        }
        if dry_run {
            return Ok(object);
        }
        let rv = self.next_rv();
        set_meta(&mut object, "resourceVersion", json!(rv.to_string()));
        self.commit(info, EventKind::Added, object.clone(), None);
        Ok(object)
    }

    /// PUT (and the second half of PATCH). `status_only` is the `/status` subresource.
    fn update(
        &mut self,
        info: &'static ResourceInfo,
        namespace: &str,
        name: &str,
        mut object: Value,
        status_only: bool,
        dry_run: bool,
    ) -> ApiResult<(u16, Value)> {
        check_type_meta(info, &mut object)?;
        set_namespace_from_url(info, namespace, &mut object)?;
        let body_name = meta_str(&object, "name").unwrap_or("").to_string();
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let Some(old) = self.get(info, namespace, name).cloned() else {
            if info.create_on_update && !status_only {
                remove_meta(&mut object, "resourceVersion");
                return self
                    .create(info, namespace, object, dry_run)
                    .map(|o| (201, o));
            }
            return Err(ApiError::not_found(info, name));
        };
        let old_rv = meta_str(&old, "resourceVersion").unwrap_or("").to_string();
        let new_rv = meta_str(&object, "resourceVersion")
            .unwrap_or("")
            .to_string();
        if !new_rv.is_empty() && new_rv != old_rv {
            return Err(ApiError::modified(info, name));
        }
        decode_resource(info, &mut object)?;

        let mut updated = if status_only {
            let mut updated = old.clone();
            match object.get("status") {
                Some(status) => updated["status"] = status.clone(),
                None => remove_key(&mut updated, "status"),
            }
            updated
        } else {
            if info.status {
                match old.get("status") {
                    Some(status) => object["status"] = status.clone(),
                    None => remove_key(&mut object, "status"),
                }
            }
            object
        };

        // System fields, as rest.BeforeUpdate treats them.
        let mut errors = Vec::new();
        match meta_str(&updated, "uid").unwrap_or("") {
            "" => set_meta(&mut updated, "uid", json!(uid_of(&old))),
            uid if uid != uid_of(&old) => errors.push(FieldError::invalid(
                "metadata.uid",
                json!(uid),
                "field is immutable",
            )),
            _ => {}
        }
        for field in [
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match meta(&old).and_then(|m| m.get(field)).cloned() {
                Some(value) => set_meta(&mut updated, field, value),
                None => remove_meta(&mut updated, field),
            }
        }
        set_meta(&mut updated, "resourceVersion", json!(old_rv));
        if info.generation {
            let old_generation = meta(&old)
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let bumped =
                !status_only && without_meta_and_status(&updated) != without_meta_and_status(&old);
            set_meta(
                &mut updated,
                "generation",
                json!(old_generation + i64::from(bumped)),
            );
        } else {
            match meta(&old).and_then(|m| m.get("generation")).cloned() {
                Some(generation) => set_meta(&mut updated, "generation", generation),
                None => remove_meta(&mut updated, "generation"),
            }
        }

        errors.extend(validate_metadata(info, &updated));
        errors.extend(validate_resource(info, &updated, Some(&old)));
        let deleting = meta(&old).is_some_and(|m| m.contains_key("deletionTimestamp"));
        if deleting {
            let before: BTreeSet<&str> = finalizers(&old).into_iter().collect();
            let added: Vec<&str> = finalizers(&updated)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                errors.push(FieldError::forbidden(
                    "metadata.finalizers",
                    format!(
                        "no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                    ),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid_object(info, name, &errors));
        }

        if updated == old || dry_run {
            // A no-op update writes nothing and emits nothing, as on the real server.
            return Ok((200, updated));
        }
        let rv = self.next_rv();
        set_meta(&mut updated, "resourceVersion", json!(rv.to_string()));
        if deleting && finalizers(&updated).is_empty() {
            // The last finalizer is gone: the pending deletion completes.
            self.commit(info, EventKind::Deleted, updated.clone(), None);
        } else {
            self.commit(info, EventKind::Modified, updated.clone(), Some(old));
        }
        Ok((200, updated))
    }

    #[allow(clippy::too_many_arguments)]
    fn patch(
        &mut self,
        info: &'static ResourceInfo,
        namespace: &str,
        name: &str,
        patch_type: PatchType,
        patch: Value,
        status_only: bool,
        dry_run: bool,
    ) -> ApiResult<(u16, Value)> {
        let Some(old) = self.get(info, namespace, name).cloned() else {
            if patch_type == PatchType::Apply && !status_only {
                // Server-side apply creates a missing object.
                let mut object = patch;
                let body_name = meta_str(&object, "name").unwrap_or("").to_string();
                if body_name != name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({body_name}) does not match the name on the URL ({name})"
                    )));
                }
                if object.get("status").is_some() && info.status {
                    remove_key(&mut object, "status");
                }
                return self
                    .create(info, namespace, object, dry_run)
                    .map(|o| (201, o));
            }
            return Err(ApiError::not_found(info, name));
        };
        let mut patched = old.clone();
        match patch_type {
            PatchType::Json => {
                let operations: json_patch::Patch = serde_json::from_value(patch)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                json_patch::patch(&mut patched, &operations.0)
                    .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
            }
            PatchType::Merge | PatchType::Apply => json_patch::merge(&mut patched, &patch),
            PatchType::Strategic => json_patch::merge(&mut patched, &strip_smp_directives(patch)),
        }
        let old_rv = meta_str(&old, "resourceVersion").unwrap_or("").to_string();
        match meta_str(&patched, "resourceVersion") {
            Some(rv) if !rv.is_empty() && rv != old_rv => {
                return Err(ApiError::modified(info, name));
            }
            _ => set_meta(&mut patched, "resourceVersion", json!(old_rv)),
        }
        self.update(info, namespace, name, patched, status_only, dry_run)
    }

    fn delete(
        &mut self,
        info: &'static ResourceInfo,
        namespace: &str,
        name: &str,
        options: &Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let Some(old) = self.get(info, namespace, name).cloned() else {
            return Err(ApiError::not_found(info, name));
        };
        let preconditions = &options["preconditions"];
        if let Some(uid) = preconditions["uid"].as_str() {
            if uid != uid_of(&old) {
                return Err(ApiError::conflict(
                    info,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        uid_of(&old)
                    ),
                ));
            }
        }
        if let Some(rv) = preconditions["resourceVersion"].as_str() {
            let current = meta_str(&old, "resourceVersion").unwrap_or("");
            if rv != current {
                return Err(ApiError::conflict(
                    info,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {current}"
                    ),
                ));
            }
        }
        if dry_run {
            return Ok(old);
        }
        Ok(self.delete_object(info, old))
    }

    /// Delete honouring finalizers: with finalizers the object only gets a deletionTimestamp.
    fn delete_object(&mut self, info: &'static ResourceInfo, old: Value) -> Value {
        if finalizers(&old).is_empty() {
            return self.remove_now(info, old);
        }
        if meta(&old).is_some_and(|m| m.contains_key("deletionTimestamp")) {
            return old;
        }
        let mut marked = old.clone();
        set_meta(&mut marked, "deletionTimestamp", json!(rfc3339(now_unix())));
        set_meta(&mut marked, "deletionGracePeriodSeconds", json!(0));
        let rv = self.next_rv();
        set_meta(&mut marked, "resourceVersion", json!(rv.to_string()));
        self.commit(info, EventKind::Modified, marked.clone(), Some(old));
        marked
    }

    fn matching(&self, filter: &ObjectFilter) -> Vec<Value> {
        self.bucket(filter.info)
            .map(|bucket| {
                bucket
                    .values()
                    .filter(|o| filter.matches(o))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn list(
        &self,
        filter: &ObjectFilter,
        limit: Option<usize>,
        continue_from: Option<ContinueToken>,
    ) -> Value {
        let info = filter.info;
        let (list_rv, start) = match continue_from {
            Some(token) => (token.rv, Some(token.start)),
            None => (self.rv, None),
        };
        let candidates: Vec<(&ObjectKey, &Value)> = self
            .bucket(info)
            .map(|bucket| {
                bucket
                    .iter()
                    .filter(|(key, _)| start.as_ref().is_none_or(|s| *key > s))
                    .filter(|(_, object)| filter.matches(object))
                    .collect()
            })
            .unwrap_or_default();
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        let take = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        if candidates.len() > take {
            let last = candidates[take - 1].0.clone();
            let token = ContinueToken {
                rv: list_rv,
                start: last,
            };
            metadata["continue"] = json!(token.encode());
            if filter.labels.is_empty() && filter.fields.is_empty() {
                metadata["remainingItemCount"] = json!(candidates.len() - take);
            }
        }
        let items: Vec<Value> = candidates
            .into_iter()
            .take(take)
            .map(|(_, o)| o.clone())
            .collect();
        json!({
            "kind": format!("{}List", info.kind),
            "apiVersion": info.api_version(),
            "metadata": metadata,
            "items": items,
        })
    }
}

/// The cursor of a paginated list: the list's resourceVersion and the last key returned.
struct ContinueToken {
    rv: u64,
    start: ObjectKey,
}

impl ContinueToken {
    fn encode(&self) -> String {
        let raw =
            json!({"v": "meta.k8s.io/v1", "rv": self.rv, "start": [self.start.0, self.start.1]});
        URL_SAFE_NO_PAD.encode(raw.to_string())
    }

    fn decode(token: &str) -> ApiResult<ContinueToken> {
        let invalid = || ApiError::bad_request(format!("continue key is not valid: {token}"));
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let value: Value = serde_json::from_slice(&raw).map_err(|_| invalid())?;
        let rv = value["rv"].as_u64().ok_or_else(invalid)?;
        let ns = value["start"][0].as_str().ok_or_else(invalid)?;
        let name = value["start"][1].as_str().ok_or_else(invalid)?;
        Ok(ContinueToken {
            rv,
            start: (ns.to_string(), name.to_string()),
        })
    }
}

// ============================================================================================
// Selectors
// ============================================================================================

/// Which objects of one resource a list, watch or deletecollection sees.
struct ObjectFilter {
    info: &'static ResourceInfo,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl ObjectFilter {
    fn matches(&self, object: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if meta_str(object, "namespace").unwrap_or("") != ns {
                return false;
            }
        }
        let empty = Map::new();
        let labels = meta(object)
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        self.labels.matches(labels) && self.fields.matches(object)
    }

    /// Turn a stored change into what this watcher should see, if anything.
    fn watch_event(&self, event: &StoredEvent) -> Option<(&'static str, Value)> {
        if event.resource != self.info.id {
            return None;
        }
        let now = self.matches(&event.object);
        match event.kind {
            EventKind::Added => now.then(|| ("ADDED", event.object.clone())),
            EventKind::Deleted => now.then(|| ("DELETED", event.object.clone())),
            EventKind::Modified => {
                let before = event.previous.as_ref().is_some_and(|p| self.matches(p));
                match (before, now) {
                    (true, true) => Some(("MODIFIED", event.object.clone())),
                    (false, true) => Some(("ADDED", event.object.clone())),
                    (true, false) => {
                        // The previous content, with this event's resourceVersion.
                        let mut gone = event.previous.clone().unwrap_or(Value::Null);
                        set_meta(&mut gone, "resourceVersion", json!(event.rv.to_string()));
                        Some(("DELETED", gone))
                    }
                    (false, false) => None,
                }
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum LabelOp {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Clone, Debug)]
struct Requirement {
    key: String,
    op: LabelOp,
    values: Vec<String>,
}

/// A parsed `labelSelector` (the full grammar of `labels.Parse`).
#[derive(Clone, Debug, Default)]
struct LabelSelector(Vec<Requirement>);

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Equals,
    DoubleEquals,
    NotEquals,
    Bang,
    Open,
    Close,
    Comma,
    Greater,
    Less,
}

impl LabelSelector {
    fn parse(selector: &str) -> Result<LabelSelector, String> {
        let tokens = Self::lex(selector)?;
        let mut requirements = Vec::new();
        let mut pos = 0;
        while pos < tokens.len() {
            let (requirement, next) = Self::requirement(&tokens, pos)?;
            requirements.push(requirement);
            pos = next;
            match tokens.get(pos) {
                None => break,
                Some(Token::Comma) => {
                    pos += 1;
                    if pos == tokens.len() {
                        return Err("found '', expected: identifier after ','".into());
                    }
                }
                Some(other) => return Err(format!("found {other:?}, expected: ','")),
            }
        }
        Ok(LabelSelector(requirements))
    }

    fn lex(selector: &str) -> Result<Vec<Token>, String> {
        let mut tokens = Vec::new();
        let mut chars = selector.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                ' ' | '\t' => {}
                ',' => tokens.push(Token::Comma),
                '(' => tokens.push(Token::Open),
                ')' => tokens.push(Token::Close),
                '>' => tokens.push(Token::Greater),
                '<' => tokens.push(Token::Less),
                '=' => {
                    if chars.peek() == Some(&'=') {
                        chars.next();
                        tokens.push(Token::DoubleEquals);
                    } else {
                        tokens.push(Token::Equals);
                    }
                }
                '!' => {
                    if chars.peek() == Some(&'=') {
                        chars.next();
                        tokens.push(Token::NotEquals);
                    } else {
                        tokens.push(Token::Bang);
                    }
                }
                _ => {
                    let mut ident = String::from(c);
                    while let Some(&next) = chars.peek() {
                        if " \t,()=!<>".contains(next) {
                            break;
                        }
                        ident.push(next);
                        chars.next();
                    }
                    tokens.push(Token::Ident(ident));
                }
            }
        }
        Ok(tokens)
    }

    fn requirement(tokens: &[Token], mut pos: usize) -> Result<(Requirement, usize), String> {
        let negated = tokens.get(pos) == Some(&Token::Bang);
        if negated {
            pos += 1;
        }
        let key = match tokens.get(pos) {
            Some(Token::Ident(key)) => key.clone(),
            other => return Err(format!("found {other:?}, expected: identifier")),
        };
        pos += 1;
        let at_end = matches!(tokens.get(pos), None | Some(Token::Comma));
        if negated {
            if !at_end {
                return Err(format!(
                    "found {:?}, expected: ',' or end of selector after '!{key}'",
                    tokens[pos]
                ));
            }
            let requirement = Requirement {
                key,
                op: LabelOp::DoesNotExist,
                values: vec![],
            };
            return Ok((requirement, pos));
        }
        if at_end {
            let requirement = Requirement {
                key,
                op: LabelOp::Exists,
                values: vec![],
            };
            return Ok((requirement, pos));
        }
        let op = match &tokens[pos] {
            Token::Equals | Token::DoubleEquals => LabelOp::Equals,
            Token::NotEquals => LabelOp::NotEquals,
            Token::Greater => LabelOp::GreaterThan,
            Token::Less => LabelOp::LessThan,
            Token::Ident(word) if word == "in" => LabelOp::In,
            Token::Ident(word) if word == "notin" => LabelOp::NotIn,
            other => {
                return Err(format!(
                    "found {other:?}, expected: in, notin, =, ==, !=, gt, lt"
                ))
            }
        };
        pos += 1;
        let mut values = Vec::new();
        match op {
            LabelOp::In | LabelOp::NotIn => {
                if tokens.get(pos) != Some(&Token::Open) {
                    return Err(format!("found {:?}, expected: '('", tokens.get(pos)));
                }
                pos += 1;
                loop {
                    match tokens.get(pos) {
                        Some(Token::Ident(value)) => {
                            values.push(value.clone());
                            pos += 1;
                        }
                        // An empty value, as in `a in (,x)` or `a in ()`.
                        Some(Token::Comma) | Some(Token::Close) => values.push(String::new()),
                        other => {
                            return Err(format!(
                                "found {other:?}, expected: ',', ')' or identifier"
                            ))
                        }
                    }
                    match tokens.get(pos) {
                        Some(Token::Comma) => pos += 1,
                        Some(Token::Close) => {
                            pos += 1;
                            break;
                        }
                        other => return Err(format!("found {other:?}, expected: ',' or ')'")),
                    }
                }
            }
            LabelOp::GreaterThan | LabelOp::LessThan => match tokens.get(pos) {
                Some(Token::Ident(value)) if value.parse::<i64>().is_ok() => {
                    values.push(value.clone());
                    pos += 1;
                }
                other => return Err(format!("found {other:?}, expected: an integer")),
            },
            _ => match tokens.get(pos) {
                Some(Token::Ident(value)) => {
                    values.push(value.clone());
                    pos += 1;
                }
                // `a=` selects an empty value.
                None | Some(Token::Comma) => values.push(String::new()),
                other => return Err(format!("found {other:?}, expected: identifier")),
            },
        }
        Ok((Requirement { key, op, values }, pos))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.0.iter().all(|r| {
            let value = labels.get(&r.key).and_then(Value::as_str);
            match r.op {
                LabelOp::Equals | LabelOp::In => {
                    value.is_some_and(|v| r.values.iter().any(|x| x == v))
                }
                LabelOp::NotEquals | LabelOp::NotIn => {
                    value.is_none_or(|v| !r.values.iter().any(|x| x == v))
                }
                LabelOp::Exists => value.is_some(),
                LabelOp::DoesNotExist => value.is_none(),
                LabelOp::GreaterThan | LabelOp::LessThan => {
                    let (Some(actual), Ok(bound)) = (
                        value.and_then(|v| v.parse::<i64>().ok()),
                        r.values[0].parse::<i64>(),
                    ) else {
                        return false;
                    };
                    if r.op == LabelOp::GreaterThan {
                        actual > bound
                    } else {
                        actual < bound
                    }
                }
            }
        })
    }
}

/// A parsed `fieldSelector`: `field=value`, `field==value`, `field!=value`, comma-joined.
#[derive(Clone, Debug, Default)]
struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    fn parse(selector: &str, info: &ResourceInfo) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for term in split_unescaped(selector, ',') {
            if term.is_empty() {
                continue;
            }
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{selector}'; can't understand '{term}'"
                ));
            };
            let field = field.trim();
            let known = field == "metadata.name"
                || field == "metadata.namespace"
                || info.extra_field_labels().contains(&field);
            if !known {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_string(), equal, unescape(value)));
        }
        Ok(FieldSelector(terms))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, expected)| {
            let mut current = object;
            for part in field.split('.') {
                current = current.get(part).unwrap_or(&Value::Null);
            }
            let actual = match current {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == *expected) == *equal
        })
    }
}

fn split_unescaped(s: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            parts.last_mut().expect("non-empty").push('\\');
            parts.last_mut().expect("non-empty").push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == separator {
            parts.push(String::new());
        } else {
            parts.last_mut().expect("non-empty").push(c);
        }
    }
    parts
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

// ============================================================================================
// Tokens: signing key, TokenRequest claims, validation as the API server's authenticator does
// ============================================================================================

struct SigningKeys {
    encoding: jsonwebtoken::EncodingKey,
    decoding: jsonwebtoken::DecodingKey,
    public_pem: String,
    kid: String,
    modulus: String,
    exponent: String,
}

/// rand 0.9's thread RNG behind the rand_core 0.6 traits that `rsa` 0.9 wants.
struct KeyGenRng;

impl rsa::rand_core::RngCore for KeyGenRng {
    fn next_u32(&mut self) -> u32 {
        rand::random()
    }
    fn next_u64(&mut self) -> u64 {
        rand::random()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand::RngCore::fill_bytes(&mut rand::rng(), dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for KeyGenRng {}

/// One 2048-bit key per process: generating it is slow.
fn signing_keys() -> &'static SigningKeys {
    static KEYS: OnceLock<SigningKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
        use rsa::traits::PublicKeyParts as _;
        use sha2::Digest as _;

        let private = rsa::RsaPrivateKey::new(&mut KeyGenRng, 2048).expect("generate RSA key");
        let public = private.to_public_key();
        let private_pem = private
            .to_pkcs1_pem(LineEnding::LF)
            .expect("encode private key");
        let public_pem = public
            .to_public_key_pem(LineEnding::LF)
            .expect("encode public key");
        let public_der = public.to_public_key_der().expect("encode public key");
        SigningKeys {
            encoding: jsonwebtoken::EncodingKey::from_rsa_pem(private_pem.as_bytes())
                .expect("load private key"),
            decoding: jsonwebtoken::DecodingKey::from_rsa_pem(public_pem.as_bytes())
                .expect("load public key"),
            kid: URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(public_der.as_bytes())),
            modulus: URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            exponent: URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            public_pem,
        }
    })
}

/// The object a token is bound to (`kubernetes.io.pod` / `kubernetes.io.secret` claims).
struct BoundObject {
    claim: &'static str,
    name: String,
    uid: String,
}

struct TokenClaims<'a> {
    namespace: &'a str,
    service_account: &'a str,
    service_account_uid: &'a str,
    audiences: &'a [String],
    issued_at: i64,
    expires_at: i64,
    bound: Option<&'a BoundObject>,
}

impl SigningKeys {
    fn mint(&self, claims: &TokenClaims<'_>) -> String {
        let mut k8s = json!({
            "namespace": claims.namespace,
            "serviceaccount": {"name": claims.service_account, "uid": claims.service_account_uid},
        });
        if let Some(bound) = claims.bound {
            k8s[bound.claim] = json!({"name": bound.name, "uid": bound.uid});
        }
        let body = json!({
            "iss": ISSUER,
            "aud": claims.audiences,
            "exp": claims.expires_at,
            "iat": claims.issued_at,
            "nbf": claims.issued_at,
            "sub": format!("system:serviceaccount:{}:{}", claims.namespace, claims.service_account),
            "jti": new_uid(),
            "kubernetes.io": k8s,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.typ = None;
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &body, &self.encoding).expect("sign token")
    }

    fn jwks(&self) -> Value {
        json!({"keys": [{
            "use": "sig", "kty": "RSA", "kid": self.kid, "alg": "RS256",
            "n": self.modulus, "e": self.exponent,
        }]})
    }
}

/// Who a valid token authenticates.
struct AuthenticatedUser {
    username: String,
    uid: String,
    groups: Vec<String>,
    extra: BTreeMap<String, Vec<String>>,
    audiences: Vec<String>,
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

impl State {
    /// Validate a service-account token as the API server does for bearer tokens and
    /// TokenReview: signature, time window (60s leeway), issuer, audiences, and that the
    /// ServiceAccount (and bound pod/secret) still exists with the uid in the token.
    fn authenticate(
        &self,
        keys: &SigningKeys,
        token: &str,
        requested_audiences: &[String],
    ) -> Result<AuthenticatedUser, String> {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Value>(token, &keys.decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "square/go-jose: error in cryptographic primitive".to_string()
                }
                _ => format!("token is not a valid service account token: {e}"),
            })?
            .claims;

        if claims["iss"].as_str() != Some(ISSUER) {
            return Err(format!("token issuer {} is not trusted", claims["iss"]));
        }
        let now = now_unix();
        if claims["exp"]
            .as_i64()
            .is_none_or(|exp| now > exp + TOKEN_LEEWAY_SECONDS)
        {
            return Err("service account token has expired".into());
        }
        if claims["nbf"]
            .as_i64()
            .is_some_and(|nbf| now < nbf - TOKEN_LEEWAY_SECONDS)
        {
            return Err("service account token is not valid yet".into());
        }
        let token_audiences: Vec<String> = match &claims["aud"] {
            Value::String(aud) => vec![aud.clone()],
            Value::Array(auds) => auds
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect(),
            _ => vec![],
        };
        let api_audiences = vec![ISSUER.to_string()];
        let token_audiences = if token_audiences.is_empty() {
            api_audiences.clone()
        } else {
            token_audiences
        };
        let requested = if requested_audiences.is_empty() {
            api_audiences
        } else {
            requested_audiences.to_vec()
        };
        let audiences: Vec<String> = token_audiences
            .iter()
            .filter(|a| requested.contains(a))
            .cloned()
            .collect();
        if audiences.is_empty() {
            return Err(format!(
                "token audiences {} is invalid for the target audiences {}",
                go_quoted_list(&token_audiences),
                go_quoted_list(&requested)
            ));
        }

        let k8s = &claims["kubernetes.io"];
        let namespace = k8s["namespace"].as_str().unwrap_or("");
        let sa_name = k8s["serviceaccount"]["name"].as_str().unwrap_or("");
        let sa_uid = k8s["serviceaccount"]["uid"].as_str().unwrap_or("");
        if namespace.is_empty() || sa_name.is_empty() {
            return Err("token does not name a service account".into());
        }
        let sa = self
            .get(res("serviceaccounts"), namespace, sa_name)
            .ok_or_else(|| format!("serviceaccounts \"{sa_name}\" not found"))?;
        if uid_of(sa) != sa_uid {
            return Err(format!(
                "service account UID ({}) does not match claim ({sa_uid})",
                uid_of(sa)
            ));
        }
        let mut extra = BTreeMap::new();
        for (claim, resource) in [("pod", "pods"), ("secret", "secrets")] {
            let Some(bound) = k8s.get(claim) else {
                continue;
            };
            let name = bound["name"].as_str().unwrap_or("");
            let uid = bound["uid"].as_str().unwrap_or("");
            let object = self
                .get(res(resource), namespace, name)
                .ok_or_else(|| format!("{resource} \"{name}\" not found"))?;
            if uid_of(object) != uid {
                return Err(format!(
                    "{claim} UID ({}) does not match claim ({uid})",
                    uid_of(object)
                ));
            }
            if claim == "pod" {
                extra.insert(
                    "authentication.kubernetes.io/pod-name".to_string(),
                    vec![name.to_string()],
                );
                extra.insert(
                    "authentication.kubernetes.io/pod-uid".to_string(),
                    vec![uid.to_string()],
                );
            }
        }
        if let Some(jti) = claims["jti"].as_str() {
            extra.insert(
                "authentication.kubernetes.io/credential-id".to_string(),
                vec![format!("JTI={jti}")],
            );
        }
        Ok(AuthenticatedUser {
            username: format!("system:serviceaccount:{namespace}:{sa_name}"),
            uid: sa_uid.to_string(),
            groups: vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_string(),
            ],
            extra,
            audiences,
        })
    }

    /// `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`
    fn token_request(
        &mut self,
        keys: &SigningKeys,
        namespace: &str,
        sa_name: &str,
        body: &[u8],
    ) -> ApiResult<Value> {
        let mut record = TokenRequestRecord {
            namespace: namespace.to_string(),
            service_account: sa_name.to_string(),
            audiences: vec![],
            expiration_seconds: DEFAULT_TOKEN_EXPIRATION,
            status: 201,
        };
        let result = self.token_request_inner(keys, namespace, sa_name, body, &mut record);
        if let Err(err) = &result {
            record.status = err.code;
        }
        self.token_requests.push(record);
        result
    }

    fn token_request_inner(
        &mut self,
        keys: &SigningKeys,
        namespace: &str,
        sa_name: &str,
        body: &[u8],
        record: &mut TokenRequestRecord,
    ) -> ApiResult<Value> {
        let mut request = parse_json_body(body)?;
        let type_ok = request["apiVersion"]
            .as_str()
            .is_none_or(|v| v == "authentication.k8s.io/v1")
            && request["kind"].as_str().is_none_or(|k| k == "TokenRequest");
        if !type_ok {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({} {}) does not match the expected kind (authentication.k8s.io/v1 TokenRequest)",
                request["apiVersion"], request["kind"]
            )));
        }
        let audiences: Vec<String> = match &request["spec"]["audiences"] {
            Value::Null => vec![],
            Value::Array(items) => items
                .iter()
                .map(|a| a.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ApiError::bad_request("spec.audiences must be a list of strings"))?,
            _ => {
                return Err(ApiError::bad_request(
                    "spec.audiences must be a list of strings",
                ))
            }
        };
        record.audiences = audiences.clone();
        let requested_expiration = match &request["spec"]["expirationSeconds"] {
            Value::Null => DEFAULT_TOKEN_EXPIRATION,
            value => value.as_i64().ok_or_else(|| {
                ApiError::bad_request("spec.expirationSeconds must be an integer")
            })?,
        };
        record.expiration_seconds = requested_expiration;

        let mut errors = Vec::new();
        for (field, value) in [("name", sa_name), ("namespace", namespace)] {
            if let Some(given) = meta_str(&request, field).filter(|g| !g.is_empty() && *g != value)
            {
                errors.push(FieldError::invalid(
                    format!("metadata.{field}"),
                    json!(given),
                    format!("must match the service account {field} if specified"),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                "",
                &errors,
            ));
        }
        let sa_info = res("serviceaccounts");
        let sa = self
            .get(sa_info, namespace, sa_name)
            .ok_or_else(|| ApiError::not_found(sa_info, sa_name))?;
        let sa_uid = uid_of(sa).to_string();
        if requested_expiration < MIN_TOKEN_EXPIRATION {
            errors.push(FieldError::invalid(
                "spec.expirationSeconds",
                json!(requested_expiration),
                "may not specify a duration less than 10 minutes",
            ));
        } else if requested_expiration > 1 << 32 {
            errors.push(FieldError::invalid(
                "spec.expirationSeconds",
                json!(requested_expiration),
                "may not specify a duration larger than 2^32 seconds",
            ));
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                "",
                &errors,
            ));
        }
        let expiration = requested_expiration.min(MAX_TOKEN_EXPIRATION);
        let audiences = if audiences.is_empty() {
            vec![ISSUER.to_string()]
        } else {
            audiences
        };

        let bound = match request["spec"]
            .get("boundObjectRef")
            .filter(|r| !r.is_null())
        {
            None => None,
            Some(reference) => Some(self.bound_object(namespace, sa_name, reference)?),
        };

        let now = now_unix();
        let token = keys.mint(&TokenClaims {
            namespace,
            service_account: sa_name,
            service_account_uid: &sa_uid,
            audiences: &audiences,
            issued_at: now,
            expires_at: now + expiration,
            bound: bound.as_ref(),
        });
        request["apiVersion"] = json!("authentication.k8s.io/v1");
        request["kind"] = json!("TokenRequest");
        set_meta(&mut request, "name", json!(sa_name));
        set_meta(&mut request, "namespace", json!(namespace));
        set_meta(&mut request, "creationTimestamp", json!(rfc3339(now)));
        request["spec"]["audiences"] = json!(audiences);
        request["spec"]["expirationSeconds"] = json!(expiration);
        request["status"] = json!({
            "token": token,
            "expirationTimestamp": rfc3339(now + expiration),
        });
        Ok(request)
    }

    fn bound_object(
        &self,
        namespace: &str,
        sa_name: &str,
        reference: &Value,
    ) -> ApiResult<BoundObject> {
        let kind = reference["kind"].as_str().unwrap_or("");
        let api_version = reference["apiVersion"].as_str().unwrap_or("v1");
        let name = reference["name"].as_str().unwrap_or("");
        let (claim, resource) = match (api_version, kind) {
            ("v1", "Pod") => ("pod", "pods"),
            ("v1", "Secret") => ("secret", "secrets"),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token to object of type {api_version}, Kind={kind}"
                )))
            }
        };
        let info = res(resource);
        let object = self
            .get(info, namespace, name)
            .ok_or_else(|| ApiError::not_found(info, name))?;
        if claim == "pod" {
            let pod_sa = object["spec"]["serviceAccountName"]
                .as_str()
                .unwrap_or("default");
            if pod_sa != sa_name {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {sa_name:?} to pod running with different serviceaccount name."
                )));
            }
        }
        let uid = uid_of(object).to_string();
        if let Some(wanted) = reference["uid"].as_str().filter(|u| !u.is_empty()) {
            if wanted != uid {
                let message = format!(
                    "Operation cannot be fulfilled on {kind} \"{name}\": the UID in the bound object reference ({wanted}) does not match the UID in record. The object might have been deleted and then recreated"
                );
                return Err(ApiError::new(409, "Conflict", message)
                    .with_details(json!({"name": name, "kind": kind})));
            }
        }
        Ok(BoundObject {
            claim,
            name: name.to_string(),
            uid,
        })
    }

    /// `POST /apis/authentication.k8s.io/v1/tokenreviews`
    fn token_review(
        &mut self,
        keys: &SigningKeys,
        headers: &HeaderMap,
        body: &[u8],
    ) -> ApiResult<Value> {
        let caller = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if caller.is_empty() || self.authenticate(keys, caller, &[]).is_err() {
            return Err(ApiError::unauthorized());
        }
        let mut review = parse_json_body(body)?;
        if review["kind"].as_str().is_some_and(|k| k != "TokenReview") {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({}) does not match the expected kind (TokenReview)",
                review["kind"]
            )));
        }
        let token = review["spec"]["token"].as_str().unwrap_or("").to_string();
        if token.is_empty() {
            return Err(ApiError::bad_request("token is required"));
        }
        let audiences: Vec<String> = review["spec"]["audiences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let status = match self.authenticate(keys, &token, &audiences) {
            Ok(user) => {
                self.token_reviews.push(TokenReviewRecord {
                    audiences: audiences.clone(),
                    authenticated: true,
                    username: Some(user.username.clone()),
                });
                json!({
                    "authenticated": true,
                    "user": {
                        "username": user.username,
                        "uid": user.uid,
                        "groups": user.groups,
                        "extra": user.extra,
                    },
                    "audiences": user.audiences,
                })
            }
            Err(reason) => {
                self.token_reviews.push(TokenReviewRecord {
                    audiences: audiences.clone(),
                    authenticated: false,
                    username: None,
                });
                json!({
                    "authenticated": false,
                    "user": {},
                    "error": format!("[invalid bearer token, {reason}]"),
                })
            }
        };
        review["apiVersion"] = json!("authentication.k8s.io/v1");
        review["kind"] = json!("TokenReview");
        set_meta(&mut review, "creationTimestamp", Value::Null);
        review["status"] = status;
        Ok(review)
    }
}

// ============================================================================================
// Object helpers and validation
// ============================================================================================

fn meta(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    meta(object)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

fn uid_of(object: &Value) -> &str {
    meta_str(object, "uid").unwrap_or("")
}

fn rv_number(object: &Value) -> u64 {
    meta_str(object, "resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

fn set_meta(object: &mut Value, field: &str, value: Value) {
    if !object.is_object() {
        *object = json!({});
    }
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    object["metadata"][field] = value;
}

fn remove_meta(object: &mut Value, field: &str) {
    if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove(field);
    }
}

fn remove_key(object: &mut Value, field: &str) {
    if let Some(m) = object.as_object_mut() {
        m.remove(field);
    }
}

fn finalizers(object: &Value) -> Vec<&str> {
    meta(object)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn without_meta_and_status(object: &Value) -> Value {
    let mut rest = object.clone();
    remove_key(&mut rest, "metadata");
    remove_key(&mut rest, "status");
    rest
}

/// Drop strategic-merge-patch directives (`$patch`, `$setElementOrder/…`, `$retainKeys`, …),
/// which JSON merge patch would otherwise store as fields.
fn strip_smp_directives(patch: Value) -> Value {
    match patch {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k, strip_smp_directives(v)))
                .collect(),
        ),
        other => other,
    }
}

fn parse_json_body(body: &[u8]) -> ApiResult<Value> {
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
fn check_type_meta(info: &ResourceInfo, object: &mut Value) -> ApiResult<()> {
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

fn set_namespace_from_url(
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

fn reset_status_for_create(info: &ResourceInfo, object: &mut Value) {
    match (info.group, info.plural) {
        ("", "pods") => object["status"] = json!({"phase": "Pending"}),
        ("", "namespaces") => object["status"] = json!({"phase": "Active"}),
        _ if info.custom => remove_key(object, "status"),
        _ => object["status"] = json!({}),
    }
}

/// The decoding stage: what the real server rejects with 400 before validation runs, plus the
/// conversions it does on the way in (Secret `stringData`, default Secret `type`).
fn decode_resource(info: &ResourceInfo, object: &mut Value) -> ApiResult<()> {
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

fn validate_metadata(info: &ResourceInfo, object: &Value) -> Vec<FieldError> {
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
fn validate_resource(info: &ResourceInfo, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
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

// ============================================================================================
// Small utilities
// ============================================================================================

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A random (version 4) UUID.
fn new_uid() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Five characters from the alphabet the real server uses for `generateName`.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn json_response(code: u16, value: &Value) -> Response {
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

// ============================================================================================
// HTTP: routing and handlers
// ============================================================================================

/// A request's query string.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        Query(
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true") | Some("1"))
    }
}

/// A request path that names a resource.
struct Target {
    /// The resource as named in the URL (for counting unknown resources).
    plural: String,
    info: Option<&'static ResourceInfo>,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
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

async fn handle(AxumState(inner): AxumState<Arc<Inner>>, request: Request) -> Response {
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

/// Everything a non-watch verb needs.
struct Call<'a> {
    verb: &'static str,
    target: &'a Target,
    query: &'a Query,
    headers: &'a HeaderMap,
    body: &'a Bytes,
    dry_run: bool,
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

    fn dispatch(&self, call: &Call<'_>) -> ApiResult<(u16, Value)> {
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

    /// Start a watch: replay (or synthesise) the initial events under the lock, then stream
    /// live ones from the broadcast channel.
    fn watch(&self, target: &Target, query: &Query) -> ApiResult<Response> {
        let info = target.info.ok_or_else(ApiError::no_resource)?;
        if target.subresource.is_some() || info.virtual_only {
            return Err(ApiError::no_resource());
        }
        let filter = object_filter(info, target, query)?;
        let since =
            match query.get("resourceVersion").filter(|rv| !rv.is_empty()) {
                None => None,
                Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {rv}"))
                })?),
            };
        let send_initial_events = query.flag("sendInitialEvents");
        let bookmarks = query.flag("allowWatchBookmarks");
        if send_initial_events
            && (query.get("resourceVersionMatch") != Some("NotOlderThan") || !bookmarks)
        {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "ListOptions",
                "",
                &[FieldError::forbidden(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and allowWatchBookmarks",
                )],
            ));
        }
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_WATCH_TIMEOUT);

        let mut initial = Vec::new();
        let mut close_after_initial = false;
        let state = self.state();
        let receiver = state.events.subscribe();
        let start_rv = state.rv;
        let bookmark_interval = state.bookmark_interval;
        match since {
            Some(rv) if rv > state.rv => {
                initial.push(too_large_event(rv, state.rv));
                close_after_initial = true;
            }
            // No resourceVersion, "0", or a streaming list: the current state, as ADDED events.
            None | Some(0) => {
                for object in state.matching(&filter) {
                    initial.push(event_line("ADDED", &object));
                }
            }
            Some(_) if send_initial_events => {
                for object in state.matching(&filter) {
                    initial.push(event_line("ADDED", &object));
                }
            }
            Some(rv) if rv < state.compacted_rv => {
                let status = ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {rv} ({})", state.compacted_rv),
                )
                .to_status();
                initial.push(event_line("ERROR", &status));
                close_after_initial = true;
            }
            Some(rv) => {
                for event in state.history.iter().filter(|e| e.rv > rv) {
                    if let Some((kind, object)) = filter.watch_event(event) {
                        initial.push(event_line(kind, &object));
                    }
                }
            }
        }
        if send_initial_events && !close_after_initial {
            initial.push(event_line(
                "BOOKMARK",
                &json!({
                    "kind": info.kind,
                    "apiVersion": info.api_version(),
                    "metadata": {
                        "resourceVersion": start_rv.to_string(),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                }),
            ));
        }
        drop(state);

        let (sender, mut lines) = mpsc::channel::<Bytes>(64);
        let stream = WatchStream {
            filter,
            receiver,
            last_rv: start_rv,
            sender,
            bookmarks: bookmarks.then_some(bookmark_interval),
            deadline: tokio::time::Instant::now() + timeout,
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(stream.run(initial, close_after_initial));
        let body = futures::stream::poll_fn(move |cx| {
            lines
                .poll_recv(cx)
                .map(|line| line.map(Ok::<Bytes, std::io::Error>))
        });
        Ok(Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(body))
            .expect("build watch response"))
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

fn object_filter(
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
enum PatchType {
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

// ============================================================================================
// Watch streaming
// ============================================================================================

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": kind, "object": object})).expect("serialise event");
    line.push(b'\n');
    Bytes::from(line)
}

fn too_large_event(asked: u64, current: u64) -> Bytes {
    let status = ApiError::new(
        504,
        "Timeout",
        format!("Too large resource version: {asked}, current: {current}"),
    )
    .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}))
    .to_status();
    event_line("ERROR", &status)
}

/// One open watch: forwards matching events until timeout, disconnect, lag or shutdown.
struct WatchStream {
    filter: ObjectFilter,
    receiver: broadcast::Receiver<Arc<StoredEvent>>,
    /// Every event up to this resourceVersion has been considered (what a BOOKMARK reports).
    last_rv: u64,
    sender: mpsc::Sender<Bytes>,
    bookmarks: Option<Duration>,
    deadline: tokio::time::Instant,
    shutdown: watch::Receiver<bool>,
}

impl WatchStream {
    async fn run(mut self, initial: Vec<Bytes>, close_after_initial: bool) {
        for line in initial {
            if self.sender.send(line).await.is_err() {
                return;
            }
        }
        if close_after_initial {
            return;
        }
        let period = self.bookmarks.unwrap_or(Duration::from_secs(3600));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            let line = tokio::select! {
                received = self.receiver.recv() => match received {
                    Ok(event) => self.line_for(&event),
                    // A watcher that falls this far behind is closed, as the real watch cache
                    // closes slow watchers; the client re-watches from its last resourceVersion.
                    Err(_) => return,
                },
                _ = ticker.tick(), if self.bookmarks.is_some() => {
                    // Catch up first, so the bookmark's resourceVersion is truthful.
                    loop {
                        match self.receiver.try_recv() {
                            Ok(event) => {
                                if let Some(line) = self.line_for(&event) {
                                    if self.sender.send(line).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            Err(broadcast::error::TryRecvError::Empty) => break,
                            Err(_) => return,
                        }
                    }
                    Some(event_line("BOOKMARK", &json!({
                        "kind": self.filter.info.kind,
                        "apiVersion": self.filter.info.api_version(),
                        "metadata": {"resourceVersion": self.last_rv.to_string()},
                    })))
                }
                _ = tokio::time::sleep_until(self.deadline) => return,
                _ = self.sender.closed() => return,
                _ = self.shutdown.changed() => return,
            };
            if let Some(line) = line {
                if self.sender.send(line).await.is_err() {
                    return;
                }
            }
        }
    }

    fn line_for(&mut self, event: &StoredEvent) -> Option<Bytes> {
        if event.rv <= self.last_rv {
            return None;
        }
        self.last_rv = event.rv;
        self.filter
            .watch_event(event)
            .map(|(kind, object)| event_line(kind, &object))
    }
}
