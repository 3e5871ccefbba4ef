//! The real `secret-injector` binary, serving over TLS with a throwaway CA, against the
//! stand-in API. Logs go to a file so tests can scan them for leaked values.
//!
//! This crate cannot name the package under test, so the caller passes what only it has: the
//! binary's path (`CARGO_BIN_EXE_secret-injector`) and a certificate from the webhook's own
//! generator (`secret_injector::certs::generate`). tests/support/mod.rs does both for the
//! integration tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};

use k8s_standin::StandIn;

/// A serving certificate for `localhost`/`127.0.0.1` and the CA that signed it, in PEM.
pub struct Tls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct Webhook {
    child: Child,
    pub url: String,
    pub admin_url: String,
    client: reqwest::Client,
    dir: tempfile::TempDir,
    log: PathBuf,
    /// PEM of the CA that signed the serving certificate, for clients built by a test.
    pub ca_pem: String,
}

impl Webhook {
    /// Run `binary serve` with `tls`, a test HMAC key and a kubeconfig for `standin`, plus
    /// `extra_args`; returns once `/readyz` answers.
    pub async fn start(binary: &Path, tls: Tls, standin: &StandIn, extra_args: &[&str]) -> Webhook {
        let webhook = Self::spawn(binary, tls, standin, extra_args);
        webhook.wait_ready().await;
        webhook
    }

    /// As [`Webhook::start`], without waiting for readiness.
    pub fn spawn(binary: &Path, tls: Tls, standin: &StandIn, extra_args: &[&str]) -> Webhook {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tls.crt"), &tls.cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), &tls.key_pem).unwrap();
        std::fs::write(
            dir.path().join("hmac.key"),
            "0123456789abcdef0123456789abcdef-test-key",
        )
        .unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        standin.write_kubeconfig(&kubeconfig);
        let log = dir.path().join("webhook.log");
        let (port, admin) = (crate::tools::free_port(), crate::tools::free_port());
        let child = Command::new(binary)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .arg("--tls-cert")
            .arg(dir.path().join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.path().join("tls.key"))
            .arg("--hmac-key-file")
            .arg(dir.path().join("hmac.key"))
            // Tests' backends live on loopback; a test that needs a stricter list passes its own.
            .args(if extra_args.contains(&"--allowed-vault-servers") {
                vec![]
            } else {
                vec!["--allowed-vault-servers", "http://127.0.0.1:*"]
            })
            .args(extra_args)
            .env("KUBECONFIG", &kubeconfig)
            // Most verbose level: a leak at any level must show up in the sentinel scans.
            .env("SECRET_INJECTOR_LOG", "trace")
            .env("SECRET_INJECTOR_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning secret-injector");
        let ca = reqwest::Certificate::from_pem(tls.ca_pem.as_bytes()).unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let webhook = Webhook {
            child,
            url: format!("https://127.0.0.1:{port}"),
            admin_url: format!("http://127.0.0.1:{admin}"),
            client,
            dir,
            log,
            ca_pem: tls.ca_pem.clone(),
        };
        webhook
    }

    /// `/readyz` answered 2xx (false also when the admin port is not up yet).
    pub async fn is_ready(&self) -> bool {
        self.client
            .get(format!("{}/readyz", self.admin_url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// Returns once `/readyz` answers 2xx; panics after 30 s.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self
                .client
                .get(format!("{}/readyz", self.admin_url))
                .send()
                .await
            {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "webhook not ready after 30s; log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// POST a review to /mutate over TLS: (HTTP status, body).
    pub async fn post(&self, path: &str, body: Vec<u8>) -> (u16, String) {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request to the webhook");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }

    /// POST an AdmissionReview to /mutate and return the raw body and the parsed response.
    pub async fn mutate(&self, review: &Value) -> (String, Value) {
        let (status, body) = self
            .post("/mutate", serde_json::to_vec(review).unwrap())
            .await;
        assert_eq!(status, 200, "body: {body}");
        let parsed: Value = serde_json::from_str(&body).unwrap();
        (body, parsed["response"].clone())
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.admin_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident memory of the webhook process, in KiB (Linux /proc).
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// A client trusting this webhook's CA, for load generation.
    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// Process id of the webhook (None once it has been reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Wait for the process to exit by itself (after a signal); None on timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}
