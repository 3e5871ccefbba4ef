//! A real moto server (AWS API emulator) for integration tests: Secrets Manager and STS on one
//! loopback port.
//!
//! `Moto::start()` runs `moto_server -H 127.0.0.1 -p <free port>`, waits until it answers, and
//! kills it when dropped. The binary is found through `MOTO_SERVER`, then
//! `<repository>/.venv/bin/moto_server` (what `make tools` installs), then `PATH`.
//!
//! Secrets are created through the Secrets Manager JSON protocol with plain reqwest. moto does
//! not verify signatures, but it takes the region from the credential scope of the
//! `Authorization` header, so every call names the region the store will read from. No AWS
//! credential of any kind is involved: the header carries a placeholder key id.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::process::{Child, Command};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 3;
/// moto's default account; role ARNs in tests use it so assumed-role sessions see the secrets.
pub const ACCOUNT: &str = "123456789012";

pub struct Moto {
    child: Option<Child>,
    url: String,
    http: reqwest::Client,
    log: tempfile::NamedTempFile,
}

impl Moto {
    pub async fn start() -> Moto {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bin = crate::tools::find_tool("MOTO_SERVER", "moto_server");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("build reqwest client");
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let log = tempfile::Builder::new()
                .prefix("moto-")
                .suffix(".log")
                .tempfile()
                .expect("moto log file");
            let port = crate::tools::free_port();
            let child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                // Keep any real AWS configuration of the machine away from the emulator.
                .env_remove("AWS_PROFILE")
                .env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY")
                .env_remove("AWS_SESSION_TOKEN")
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.reopen().expect("reopen moto log")))
                .stderr(Stdio::from(log.reopen().expect("reopen moto log")))
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("failed to spawn {}: {e}", bin.display()));
            let mut moto = Moto {
                child: Some(child),
                url: format!("http://127.0.0.1:{port}"),
                http: http.clone(),
                log,
            };
            match moto.wait_ready().await {
                Ok(()) => return moto,
                Err(reason) => {
                    last = format!(
                        "moto_server ({}) did not start: {reason}\n{}",
                        bin.display(),
                        moto.logs()
                    );
                    if let Some(mut c) = moto.child.take() {
                        let _ = c.kill().await;
                    }
                }
            }
        }
        panic!("{last}");
    }

    /// `http://127.0.0.1:PORT`: the store's `endpoint` for both STS and Secrets Manager.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// A role ARN in moto's account.
    pub fn role_arn(name: &str) -> String {
        format!("arn:aws:iam::{ACCOUNT}:role/{name}")
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("exited early with {status}"));
                }
            }
            let last = match self
                .http
                .get(format!("{}/moto-api/data.json", self.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => format!("answered {}", r.status()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(format!("not ready after {START_TIMEOUT:?}; last: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A Secrets Manager JSON-protocol call in `region`; the answer, or (status, body).
    pub async fn secretsmanager(
        &self,
        region: &str,
        action: &str,
        body: Value,
    ) -> Result<Value, (u16, String)> {
        let response = self
            .http
            .post(format!("{}/", self.url))
            .header("X-Amz-Target", format!("secretsmanager.{action}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .header(
                "Authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDMOTOTEST/20240101/{region}/secretsmanager/aws4_request, \
                     SignedHeaders=host, Signature=0"
                ),
            )
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| (0, e.to_string()))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| (status, e.to_string()))?;
        if !(200..300).contains(&status) {
            return Err((status, text));
        }
        serde_json::from_str(&text).map_err(|e| (status, format!("{e}: {text}")))
    }

    async fn must(&self, region: &str, action: &str, body: Value) -> Value {
        self.secretsmanager(region, action, body.clone())
            .await
            .unwrap_or_else(|(status, text)| {
                panic!("moto secretsmanager.{action} failed ({status}): {text}\nrequest: {body}")
            })
    }

    /// Create a secret with a SecretString; returns its ARN.
    pub async fn create_secret(&self, region: &str, name: &str, value: &str) -> String {
        let r = self
            .must(
                region,
                "CreateSecret",
                json!({"Name": name, "SecretString": value}),
            )
            .await;
        r["ARN"].as_str().expect("ARN").to_string()
    }

    /// Create a secret with a SecretBinary; returns its ARN.
    pub async fn create_binary_secret(&self, region: &str, name: &str, value: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        let r = self
            .must(
                region,
                "CreateSecret",
                json!({"Name": name, "SecretBinary": b64}),
            )
            .await;
        r["ARN"].as_str().expect("ARN").to_string()
    }

    /// Put a new current version; the previous one becomes AWSPREVIOUS. Returns the new
    /// VersionId.
    pub async fn put_secret_value(&self, region: &str, name: &str, value: &str) -> String {
        let r = self
            .must(
                region,
                "PutSecretValue",
                json!({"SecretId": name, "SecretString": value}),
            )
            .await;
        r["VersionId"].as_str().expect("VersionId").to_string()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // The child is killed by `kill_on_drop`; show the log when the test is failing.
        if std::thread::panicking() {
            eprintln!("--- moto log ---\n{}", tail(&self.logs(), 40));
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
