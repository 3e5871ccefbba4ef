//! A real OpenBao dev server for integration tests.
//!
//! `OpenBao::start()` runs `bao server -dev` on a free loopback port with a random root token,
//! waits until `/v1/sys/health` answers 200, and kills the process when the value is dropped.
//! The binary is found through `BAO_BIN`, then `<repository>/.venv/bin/bao` (what `make tools`
//! installs), then `PATH`.
//!
//! The helpers that configure the server (`enable_kv`, `write_policy`, …) panic with the server's
//! answer on failure: they are test set-up, and a set-up failure should stop the test loudly.
//! `api` returns the error instead, for tests that assert on it.
//!
//! When a test panics while the server is alive, the server's log directory is kept and its path
//! printed, so the log can be read after the run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rand::distr::Alphanumeric;
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 3;

pub struct OpenBao {
    child: Option<Child>,
    pid: Option<u32>,
    addr: String,
    root_token: String,
    http: reqwest::Client,
    log_path: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl OpenBao {
    /// Start a fresh dev server and wait until it is initialised, unsealed and active.
    ///
    /// Like every dev server it comes with a KV v2 mount at `secret/`; `enable_kv("secret", …)`
    /// still works (it re-mounts when the version differs).
    pub async fn start() -> OpenBao {
        install_crypto_provider();
        let bin = crate::tools::find_tool("BAO_BIN", "bao");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("build reqwest client");

        let mut last_failure = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("openbao-test-")
                .tempdir()
                .expect("create temp dir for OpenBao");
            let log_path = dir.path().join("bao.log");
            let port = crate::tools::free_port();
            let addr = format!("http://127.0.0.1:{port}");
            let root_token = format!("root-{}", random_alnum(24));

            let log = std::fs::File::create(&log_path).expect("create OpenBao log file");
            let log_err = log.try_clone().expect("clone OpenBao log file handle");
            let child = Command::new(&bin)
                .arg("server")
                .arg("-dev")
                .arg(format!("-dev-root-token-id={root_token}"))
                .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
                .arg("-dev-no-store-token")
                // Keep the CLI's token helper and any config lookups away from the real $HOME.
                .env("HOME", dir.path())
                .env_remove("BAO_ADDR")
                .env_remove("VAULT_ADDR")
                .env_remove("BAO_TOKEN")
                .env_remove("VAULT_TOKEN")
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(log_err))
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("failed to spawn {}: {e}", bin.display()));
            let pid = child.id();

            let mut bao = OpenBao {
                child: Some(child),
                pid,
                addr,
                root_token,
                http: http.clone(),
                log_path,
                dir: Some(dir),
            };
            match bao.wait_healthy().await {
                Ok(()) => return bao,
                Err(reason) => {
                    let log = bao.log_contents();
                    let port_clash = log.contains("address already in use");
                    last_failure = format!(
                        "OpenBao ({}) did not become healthy: {reason}\n--- {} ---\n{}",
                        bin.display(),
                        bao.log_path.display(),
                        tail(&log, 60)
                    );
                    // Free-port selection can race with another process; try another port.
                    if port_clash && attempt < START_ATTEMPTS {
                        bao.stop().await;
                        continue;
                    }
                    bao.stop().await;
                    let kept = bao.keep_logs();
                    panic!("{last_failure}\n(log kept at {})", kept.display());
                }
            }
        }
        panic!("{last_failure}");
    }

    /// `http://127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    pub fn root_token(&self) -> String {
        self.root_token.clone()
    }

    /// The server's combined stdout/stderr log.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Raw `/v1/<path>` call with the root token. 204 or an empty body ⇒ `Value::Null`.
    /// Errors are `(status, body)`; a transport failure (refused, timed out) is status 0.
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (u16, String)> {
        self.api_with_token(Some(&self.root_token), method, path, body)
            .await
    }

    /// Like [`OpenBao::api`], with another token (a login's `client_token`) or none.
    pub async fn api_with_token(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (u16, String)> {
        let url = format!("{}/v1/{}", self.addr, path.trim_start_matches('/'));
        let mut req = self.http.request(method.clone(), &url);
        if let Some(token) = token {
            req = req.header("X-Vault-Token", token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| (0, format!("{method} {url}: {e}")))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| {
            (
                status.as_u16(),
                format!("{method} {url}: reading body: {e}"),
            )
        })?;
        if !status.is_success() {
            return Err((status.as_u16(), text));
        }
        if status == StatusCode::NO_CONTENT || text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| {
            (
                status.as_u16(),
                format!("{method} {url}: bad JSON ({e}): {text}"),
            )
        })
    }

    /// Status of `GET /v1/sys/health` (200 = active), or the transport error. Short timeout, so it
    /// also reports a paused server as an error instead of hanging.
    pub async fn health(&self) -> Result<u16, String> {
        let url = format!("{}/v1/sys/health", self.addr);
        self.http
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| format!("GET {url}: {e}"))
    }

    /// Mount a KV engine of `version` (1 or 2) at `mount`. An existing KV mount of the same
    /// version is kept; anything else at that path is unmounted first. Returns once the mount
    /// accepts requests (KV v2 needs a moment after mounting).
    pub async fn enable_kv(&self, mount: &str, version: u8) {
        assert!(
            version == 1 || version == 2,
            "KV version must be 1 or 2, got {version}"
        );
        let mount = mount.trim_matches('/');
        if let Ok(existing) = self
            .api(Method::GET, &format!("sys/mounts/{mount}"), None)
            .await
        {
            let data = existing.get("data").unwrap_or(&existing);
            let is_kv = data["type"] == "kv";
            let existing_version = data["options"]["version"].as_str().unwrap_or("1");
            if is_kv && existing_version == version.to_string() {
                self.wait_kv_ready(mount, version).await;
                return;
            }
            self.must(Method::DELETE, &format!("sys/mounts/{mount}"), None)
                .await;
        }
        self.must(
            Method::POST,
            &format!("sys/mounts/{mount}"),
            Some(json!({"type": "kv", "options": {"version": version.to_string()}})),
        )
        .await;
        self.wait_kv_ready(mount, version).await;
    }

    /// Write a secret. v2: `<mount>/data/<path>` `{data}`; v1: `<mount>/<path>` with `data` as body.
    pub async fn kv_put(&self, mount: &str, version: u8, path: &str, data: Value) {
        let (api_path, body) = match version {
            2 => (kv2_path(mount, "data", path), json!({ "data": data })),
            1 => (kv1_path(mount, path), data),
            v => panic!("KV version must be 1 or 2, got {v}"),
        };
        self.must(Method::POST, &api_path, Some(body)).await;
    }

    /// Delete a secret. v2 deletes the metadata, i.e. every version.
    pub async fn kv_delete(&self, mount: &str, version: u8, path: &str) {
        let api_path = match version {
            2 => kv2_path(mount, "metadata", path),
            1 => kv1_path(mount, path),
            v => panic!("KV version must be 1 or 2, got {v}"),
        };
        self.must(Method::DELETE, &api_path, None).await;
    }

    /// Read a secret's data map (v2: `data.data`, v1: `data`); `None` when it does not exist.
    pub async fn kv_get(&self, mount: &str, version: u8, path: &str) -> Option<Value> {
        let api_path = match version {
            2 => kv2_path(mount, "data", path),
            1 => kv1_path(mount, path),
            v => panic!("KV version must be 1 or 2, got {v}"),
        };
        match self.api(Method::GET, &api_path, None).await {
            Ok(v) if version == 2 => Some(v["data"]["data"].clone()),
            Ok(v) => Some(v["data"].clone()),
            Err((404, _)) => None,
            Err((status, body)) => panic!("GET {api_path} failed ({status}): {body}"),
        }
    }

    /// Create or replace an ACL policy.
    pub async fn write_policy(&self, name: &str, hcl: &str) {
        self.must(
            Method::PUT,
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": hcl })),
        )
        .await;
    }

    /// Enable an auth method of `kind` (e.g. `kubernetes`, `jwt`) at `auth/<mount>`.
    pub async fn enable_auth(&self, mount: &str, kind: &str) {
        self.must(
            Method::POST,
            &format!("sys/auth/{}", mount.trim_matches('/')),
            Some(json!({ "type": kind })),
        )
        .await;
    }

    /// Enable Kubernetes auth at `auth/<mount>` pointing at `kubernetes_host` (plain HTTP),
    /// reviewing tokens with `token_reviewer_jwt`. Local CA/JWT files are never consulted
    /// (`disable_local_ca_jwt`), even when the tests themselves run inside a pod.
    ///
    /// OpenBao refuses `disable_local_ca_jwt=true` without a `kubernetes_ca_cert`, so a throwaway
    /// self-signed certificate is configured; it is never used over plain HTTP.
    pub async fn enable_kubernetes_auth(
        &self,
        mount: &str,
        kubernetes_host: &str,
        token_reviewer_jwt: &str,
    ) {
        self.enable_kubernetes_auth_with_ca(mount, kubernetes_host, token_reviewer_jwt, None)
            .await;
    }

    /// [`OpenBao::enable_kubernetes_auth`] for an HTTPS API server whose CA is `ca_pem`
    /// (`None`: the unused placeholder certificate).
    pub async fn enable_kubernetes_auth_with_ca(
        &self,
        mount: &str,
        kubernetes_host: &str,
        token_reviewer_jwt: &str,
        ca_pem: Option<&str>,
    ) {
        let mount = mount.trim_matches('/');
        let ca_pem = match ca_pem {
            Some(pem) => pem.to_string(),
            None => placeholder_ca_pem(),
        };
        self.enable_auth(mount, "kubernetes").await;
        self.must(
            Method::POST,
            &format!("auth/{mount}/config"),
            Some(json!({
                "kubernetes_host": kubernetes_host,
                "token_reviewer_jwt": token_reviewer_jwt,
                "kubernetes_ca_cert": ca_pem,
                "disable_local_ca_jwt": true,
            })),
        )
        .await;
    }

    /// Create a Kubernetes auth role; tokens it issues live 20 minutes.
    pub async fn kubernetes_role(
        &self,
        mount: &str,
        role: &str,
        service_accounts: &[&str],
        namespaces: &[&str],
        policies: &[&str],
        audience: Option<&str>,
    ) {
        let mut body = json!({
            "bound_service_account_names": service_accounts,
            "bound_service_account_namespaces": namespaces,
            "token_policies": policies,
            "token_ttl": "20m",
        });
        if let Some(audience) = audience {
            body["audience"] = json!(audience);
        }
        self.must(
            Method::POST,
            &format!("auth/{}/role/{role}", mount.trim_matches('/')),
            Some(body),
        )
        .await;
    }

    /// Enable JWT auth at `auth/<mount>`, trusting tokens from `issuer` signed by `public_key_pem`.
    pub async fn enable_jwt_auth(&self, mount: &str, issuer: &str, public_key_pem: &str) {
        let mount = mount.trim_matches('/');
        self.enable_auth(mount, "jwt").await;
        self.must(
            Method::POST,
            &format!("auth/{mount}/config"),
            Some(json!({
                "jwt_validation_pubkeys": [public_key_pem],
                "bound_issuer": issuer,
            })),
        )
        .await;
    }

    /// Create a JWT auth role matching `sub == bound_subject` and any of `bound_audiences`;
    /// tokens it issues live 20 minutes.
    pub async fn jwt_role(
        &self,
        mount: &str,
        role: &str,
        bound_subject: &str,
        bound_audiences: &[&str],
        policies: &[&str],
    ) {
        self.must(
            Method::POST,
            &format!("auth/{}/role/{role}", mount.trim_matches('/')),
            Some(json!({
                "role_type": "jwt",
                "user_claim": "sub",
                "bound_subject": bound_subject,
                "bound_audiences": bound_audiences,
                "token_policies": policies,
                "token_ttl": "20m",
            })),
        )
        .await;
    }

    /// Log in at `auth/<mount>/login` with `{role, jwt}` (no token sent); returns the response,
    /// whose `auth.client_token` is the new token.
    pub async fn login(&self, mount: &str, role: &str, jwt: &str) -> Result<Value, (u16, String)> {
        self.api_with_token(
            None,
            Method::POST,
            &format!("auth/{}/login", mount.trim_matches('/')),
            Some(json!({ "role": role, "jwt": jwt })),
        )
        .await
    }

    /// SIGSTOP the server: it keeps its socket, so connections are accepted and then hang, as in
    /// an outage behind a load balancer. No-op after `stop`.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT a paused server.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Kill the server and wait for it to exit; connections are refused afterwards.
    /// Idempotent.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL also ends a SIGSTOPped process.
            let _ = child.kill().await;
        }
        self.pid = None;
    }

    fn signal(&self, sig: &str) {
        let Some(pid) = self.pid else { return };
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap_or_else(|e| panic!("running `kill -{sig} {pid}`: {e}"));
        assert!(status.success(), "`kill -{sig} {pid}` failed: {status}");
    }

    /// Call the API and panic with the server's answer on failure.
    async fn must(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        match self.api(method.clone(), path, body).await {
            Ok(v) => v,
            Err((status, text)) => panic!(
                "OpenBao {method} /v1/{path} failed ({status}): {text}\n(server log: {})",
                self.log_path.display()
            ),
        }
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + HEALTH_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("process exited early with {status}"));
                }
            }
            let last = match self.health().await {
                Ok(200) => return Ok(()),
                Ok(code) => format!("GET /v1/sys/health answered {code}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "timed out after {}s; last: {last}",
                    HEALTH_TIMEOUT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_kv_ready(&self, mount: &str, version: u8) {
        if version != 2 {
            return;
        }
        // A fresh KV v2 mount answers "upgrading" errors for a moment; its config endpoint
        // succeeds once it is usable.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self
                .api(Method::GET, &format!("{mount}/config"), None)
                .await
            {
                Ok(_) => return,
                Err((status, text)) if Instant::now() >= deadline => panic!(
                    "KV v2 mount {mount}/ not ready after 15s ({status}): {text}\n(server log: {})",
                    self.log_path.display()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn keep_logs(&mut self) -> PathBuf {
        match self.dir.take() {
            Some(dir) => dir.keep(),
            None => self
                .log_path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        }
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        // The child is killed by `kill_on_drop`. Keep the log when the test is failing.
        if std::thread::panicking() && self.dir.is_some() {
            let dir = self.keep_logs();
            eprintln!(
                "OpenBao server log kept at {}",
                dir.join("bao.log").display()
            );
        }
    }
}

fn kv1_path(mount: &str, path: &str) -> String {
    format!(
        "{}/{}",
        mount.trim_matches('/'),
        path.trim_start_matches('/')
    )
}

fn kv2_path(mount: &str, kind: &str, path: &str) -> String {
    format!(
        "{}/{kind}/{}",
        mount.trim_matches('/'),
        path.trim_start_matches('/')
    )
}

/// A valid but otherwise meaningless CA certificate (see `enable_kubernetes_auth`).
fn placeholder_ca_pem() -> String {
    rcgen::generate_simple_self_signed(vec!["kubernetes.placeholder.invalid".to_string()])
        .expect("generate placeholder CA certificate")
        .cert
        .pem()
}

/// reqwest is built with `rustls-no-provider`: install ring as the process default (harmless if
/// something else already installed one).
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn random_alnum(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
