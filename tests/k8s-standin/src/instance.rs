//! The public handle: start, stop, seed, inspect and count.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::object::{new_uid, now_unix, uid_of};
use crate::resources::res;
use crate::router::handle;
use crate::store::{InjectedFailure, Inner, State};
use crate::tokens::{signing_keys, TokenClaims};
use crate::{CLIENT_TOKEN_SECONDS, ISSUER, SELF_NAMESPACE, SELF_SERVICE_ACCOUNT};

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
            held: tokio::sync::watch::channel(Default::default()).0,
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

    /// Hold (true) or release (false) every list and watch request on `resource` (a counter key
    /// such as `replicasets`): while held they are counted on arrival and then left unanswered,
    /// as a slow or overloaded API server leaves them; releasing answers them normally, with
    /// the state at that moment. Requests already being answered are not affected.
    pub fn hold_reads(&self, resource: &str, hold: bool) {
        self.inner.held.send_modify(|held| {
            if hold {
                held.insert(resource.to_string());
            } else {
                held.remove(resource);
            }
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
