//! Vault / OpenBao: login with the pod's ServiceAccount token (Kubernetes or JWT auth), then
//! read KV v1 or v2 through vaultrs. Logins are cached per identity and single-flight.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{join_all, BoxFuture};
use futures::FutureExt;
use moka::future::Cache;
use vaultrs::api::EndpointMiddleware;
use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::{json_field, KeyedError, ProviderError, RemoteKey, RemoteSecret, SecretProvider};
use crate::identity::{PodIdentity, TokenIssuer};
use crate::metrics::Metrics;
use crate::redact::scrub;
use crate::store::{KvVersion, ProviderConfig, ResolvedStore, VaultAuthMethod, VaultConfig};

/// Per-request timeout towards Vault: a login plus a read (6s) fit in the default 8s
/// admission deadline, so a slow Vault gets a precise error rather than a deadline denial.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Never keep a Vault token longer than this, whatever its lease says.
const MAX_SESSION: Duration = Duration::from_secs(15 * 60);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SessionKey {
    identity: PodIdentity,
    server: String,
    namespace: Option<String>,
    ca: Option<Vec<u8>>,
    method: &'static str,
    mount: String,
    role: String,
    audiences: Vec<String>,
}

struct Session {
    client: VaultClient,
    ttl: Duration,
}

impl super::Expiring for Session {
    fn ttl(&self) -> Duration {
        self.ttl
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct HttpKey {
    ca: Option<Vec<u8>>,
}

pub struct VaultProvider {
    tokens: TokenIssuer,
    sessions: Cache<SessionKey, Arc<Session>>,
    http: Cache<HttpKey, reqwest::Client>,
    metrics: Metrics,
}

impl VaultProvider {
    pub fn new(tokens: TokenIssuer, metrics: Metrics) -> Self {
        Self {
            tokens,
            sessions: Cache::builder()
                .max_capacity(10_000)
                .expire_after(super::TtlExpiry)
                .build(),
            http: Cache::builder().max_capacity(256).build(),
            metrics,
        }
    }

    async fn http_client(&self, ca: Option<&[u8]>) -> Result<reqwest::Client, ProviderError> {
        let key = HttpKey {
            ca: ca.map(<[u8]>::to_vec),
        };
        self.http
            .try_get_with(key, async move { build_http_client(ca) })
            .await
            .map_err(|e: Arc<ProviderError>| (*e).clone())
    }

    async fn session(
        &self,
        identity: &PodIdentity,
        config: &VaultConfig,
    ) -> Result<(Arc<Session>, bool), ProviderError> {
        let key = session_key(identity, config);
        let mut fresh = false;
        let session = self
            .sessions
            .try_get_with(key, async {
                fresh = true;
                self.login(identity, config).await.map(Arc::new)
            })
            .await
            .map_err(|e: Arc<ProviderError>| (*e).clone())?;
        Ok((session, fresh))
    }

    async fn login(
        &self,
        identity: &PodIdentity,
        config: &VaultConfig,
    ) -> Result<Session, ProviderError> {
        let http = self.http_client(config.ca_pem.as_deref()).await?;
        let jwt = self.tokens.issue(identity, &config.auth.audiences).await?;
        let mut client = vault_client(config, http, "")?;
        let path = format!("auth/{}/login", config.auth.mount);
        let result = match config.auth.method {
            VaultAuthMethod::Kubernetes => {
                vaultrs::auth::kubernetes::login(
                    &client,
                    &config.auth.mount,
                    &config.auth.role,
                    jwt.expose(),
                )
                .await
            }
            VaultAuthMethod::Jwt => {
                vaultrs::auth::oidc::login(
                    &client,
                    &config.auth.mount,
                    jwt.expose(),
                    Some(config.auth.role.clone()),
                )
                .await
            }
        };
        drop(jwt);
        let auth = match result {
            Ok(auth) => {
                self.metrics.backend_call("vault", "login", "ok");
                auth
            }
            Err(e) => {
                self.metrics.backend_call("vault", "login", "error");
                return Err(match classify(e) {
                    ProviderError::PermissionDenied { detail }
                    | ProviderError::NotFound { detail }
                    | ProviderError::Backend { detail } => ProviderError::LoginRefused {
                        path,
                        role: config.auth.role.clone(),
                        detail,
                    },
                    other => other,
                });
            }
        };
        client.set_token(&auth.client_token);
        let lease = Duration::from_secs(auth.lease_duration);
        let ttl = if lease.is_zero() {
            MAX_SESSION
        } else {
            (lease * 4 / 5).min(MAX_SESSION)
        };
        Ok(Session { client, ttl })
    }

    async fn read(
        &self,
        session: &Session,
        config: &VaultConfig,
        key: &RemoteKey,
    ) -> Result<RemoteSecret, ProviderError> {
        let result: Result<BTreeMap<String, serde_json::Value>, ClientError> = match (
            &config.kv,
            &key.version,
        ) {
            (KvVersion::V2, None) => {
                vaultrs::kv2::read(&session.client, &config.mount, &key.key).await
            }
            (KvVersion::V2, Some(v)) => {
                let version: u64 = v.parse().map_err(|_| {
                    ProviderError::InvalidRequest(format!(
                        "version {v:?} is not a KV v2 version number"
                    ))
                })?;
                vaultrs::kv2::read_version(&session.client, &config.mount, &key.key, version).await
            }
            (KvVersion::V1, None) => {
                vaultrs::kv1::get(&session.client, &config.mount, &key.key).await
            }
            (KvVersion::V1, Some(_)) => return Err(ProviderError::InvalidRequest(
                "remoteRef.version is set but the store's KV engine is v1, which has no versions"
                    .into(),
            )),
        };
        match result {
            Ok(map) => {
                self.metrics.backend_call("vault", "read", "ok");
                Ok(RemoteSecret::Fields(
                    map.into_iter().map(|(k, v)| (k, json_field(v))).collect(),
                ))
            }
            Err(e) => {
                self.metrics.backend_call("vault", "read", "error");
                let err = classify(e);
                // A policy scoped to `<mount>/data/...` makes a wrong KV version look like a 403,
                // so both statuses get the mount diagnosis.
                if matches!(
                    err,
                    ProviderError::NotFound { .. } | ProviderError::PermissionDenied { .. }
                ) {
                    if let Some(mismatch) = self.diagnose_kv_version(session, config).await {
                        return Err(mismatch);
                    }
                }
                Err(err)
            }
        }
    }

    /// After a 404 or 403, ask Vault which KV version the mount really is (the same lookup the
    /// vault CLI does), so a wrong `version` in the store gets a precise message.
    async fn diagnose_kv_version(
        &self,
        session: &Session,
        config: &VaultConfig,
    ) -> Option<ProviderError> {
        #[derive(serde::Deserialize)]
        struct MountInfo {
            data: MountData,
        }
        #[derive(serde::Deserialize)]
        struct MountData {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            options: Option<BTreeMap<String, String>>,
        }
        let url = config
            .server
            .join(&format!("v1/sys/internal/ui/mounts/{}", config.mount))
            .ok()?;
        let mut request = session
            .client
            .http
            .http
            .get(url)
            .header("X-Vault-Token", session.client.middle.token.as_str())
            .header("X-Vault-Request", "true");
        if let Some(ns) = &config.namespace {
            request = request.header("X-Vault-Namespace", ns.as_str());
        }
        let info: MountInfo = request
            .send()
            .await
            .ok()?
            .error_for_status()
            .ok()?
            .json()
            .await
            .ok()?;
        if info.data.kind != "kv" {
            return None;
        }
        let actual = info
            .data
            .options
            .and_then(|o| o.get("version").cloned())
            .unwrap_or_else(|| "1".into());
        let actual = format!("v{}", actual.trim_start_matches('v'));
        (actual != config.kv.as_str()).then(|| ProviderError::KvVersionMismatch {
            mount: config.mount.clone(),
            configured: config.kv.as_str(),
            actual,
        })
    }

    async fn fetch_all(
        &self,
        identity: &PodIdentity,
        config: &VaultConfig,
        keys: &[RemoteKey],
    ) -> Result<Vec<RemoteSecret>, KeyedError> {
        // Requests that can never succeed are refused before any TokenRequest or connection.
        for key in keys {
            if key.version.is_some() && config.kv == KvVersion::V1 {
                return Err(KeyedError {
                    key: Some(key.key.clone()),
                    error: ProviderError::InvalidRequest(
                        "remoteRef.version is set but the store's KV engine is v1, which has no versions".into(),
                    ),
                });
            }
        }
        let mut retried = false;
        loop {
            let (session, fresh) = self
                .session(identity, config)
                .await
                .map_err(|error| KeyedError { key: None, error })?;
            let results = join_all(keys.iter().map(|k| self.read(&session, config, k))).await;
            let mut out = Vec::with_capacity(results.len());
            let mut failure = None;
            for (key, r) in keys.iter().zip(results) {
                match r {
                    Ok(v) => out.push(v),
                    Err(error) => {
                        failure = Some(KeyedError {
                            key: Some(key.key.clone()),
                            error,
                        });
                        break;
                    }
                }
            }
            match failure {
                None => return Ok(out),
                // A cached token may have been revoked: log in again once before giving up.
                Some(KeyedError {
                    error: ProviderError::PermissionDenied { .. },
                    ..
                }) if !fresh && !retried => {
                    retried = true;
                    self.sessions
                        .invalidate(&session_key(identity, config))
                        .await;
                }
                Some(f) => return Err(f),
            }
        }
    }
}

fn session_key(identity: &PodIdentity, config: &VaultConfig) -> SessionKey {
    SessionKey {
        identity: identity.clone(),
        server: config.server.to_string(),
        namespace: config.namespace.clone(),
        ca: config.ca_pem.clone(),
        method: match config.auth.method {
            VaultAuthMethod::Kubernetes => "kubernetes",
            VaultAuthMethod::Jwt => "jwt",
        },
        mount: config.auth.mount.clone(),
        role: config.auth.role.clone(),
        audiences: config.auth.audiences.clone(),
    }
}

impl SecretProvider for VaultProvider {
    fn fetch<'a>(
        &'a self,
        identity: &'a PodIdentity,
        store: &'a ResolvedStore,
        keys: &'a [RemoteKey],
    ) -> BoxFuture<'a, Result<Vec<RemoteSecret>, KeyedError>> {
        async move {
            let ProviderConfig::Vault(config) = &store.config else {
                return Err(KeyedError {
                    key: None,
                    error: ProviderError::InvalidRequest("store is not a Vault store".into()),
                });
            };
            self.fetch_all(identity, config, keys).await
        }
        .boxed()
    }
}

fn build_http_client(ca: Option<&[u8]>) -> Result<reqwest::Client, ProviderError> {
    super::net::backend_client(ca, REQUEST_TIMEOUT).map_err(ProviderError::InvalidRequest)
}

fn vault_client(
    config: &VaultConfig,
    http: reqwest::Client,
    token: &str,
) -> Result<VaultClient, ProviderError> {
    let address = config.server.as_str().trim_end_matches('/').to_string();
    let settings = VaultClientSettingsBuilder::default()
        .address(&address)
        .token("")
        .ca_certs(Vec::new())
        .identity(None)
        .verify(true)
        .namespace(config.namespace.clone())
        .build()
        .map_err(|e| ProviderError::InvalidRequest(format!("Vault client setup failed: {e}")))?;
    Ok(VaultClient {
        http: rustify::clients::reqwest::Client::new(&address, http),
        middle: EndpointMiddleware {
            token: token.to_string(),
            version: "v1".into(),
            wrap: None,
            namespace: config.namespace.clone(),
        },
        settings,
    })
}

/// Map a vaultrs error to a message-safe [`ProviderError`].
fn classify(e: ClientError) -> ProviderError {
    match e {
        ClientError::APIError { code, errors } => {
            let detail = if errors.is_empty() {
                format!("Vault {code}")
            } else {
                format!("Vault {code}: {}", scrub(&tidy_vault_errors(&errors)))
            };
            match code {
                401 | 403 => ProviderError::PermissionDenied { detail },
                404 => ProviderError::NotFound { detail },
                _ => ProviderError::Backend { detail },
            }
        }
        ClientError::RestClientError { source } => ProviderError::Unreachable {
            detail: scrub(&super::error_chain(&source)),
        },
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => ProviderError::Backend {
            detail: "Vault returned an empty response".into(),
        },
        ClientError::JsonParseError { .. } => ProviderError::Backend {
            detail: "Vault returned a response of an unexpected shape (is this a KV mount of the configured version?)"
                .into(),
        },
        other => ProviderError::Backend {
            detail: scrub(&other.to_string()),
        },
    }
}

/// Vault wraps messages as "1 error occurred:\n\t* permission denied\n\n"; keep the sentences.
fn tidy_vault_errors(errors: &[String]) -> String {
    let mut parts = Vec::new();
    for e in errors {
        for line in e.lines() {
            let line = line.trim().trim_start_matches("* ").trim();
            let preamble = line.ends_with("error occurred:") || line.ends_with("errors occurred:");
            if !line.is_empty() && !preamble && !parts.contains(&line.to_string()) {
                parts.push(line.to_string());
            }
        }
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_error_bodies_are_tidied() {
        let raw = vec!["1 error occurred:\n\t* permission denied\n\n".to_string()];
        assert_eq!(tidy_vault_errors(&raw), "permission denied");
        let two = vec![
            "2 errors occurred:\n\t* a\n\t* b\n\n".to_string(),
            "b".to_string(),
        ];
        assert_eq!(tidy_vault_errors(&two), "a; b");
        assert_eq!(
            tidy_vault_errors(&["service account name not authorized".to_string()]),
            "service account name not authorized"
        );
    }
}
