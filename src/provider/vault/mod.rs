//! Vault / OpenBao: login with the pod's ServiceAccount token (Kubernetes or JWT auth), then
//! read KV v1 or v2 through vaultrs. Logins are cached per identity and single-flight.
//!
//! `config` turns `spec.provider.vault` into a [`VaultConfig`]; `auth` logs in and caches the
//! sessions; `kv` reads and diagnoses a wrong KV version; this file ties them together and
//! classifies Vault's errors.

mod auth;
mod config;
mod dynamic;
mod kv;
mod spec;

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use moka::future::Cache;
use vaultrs::error::ClientError;

/// A valid Vault store spec for tests elsewhere.
#[cfg(test)]
pub(crate) use config::tests::vault as test_spec;
pub use config::{KvVersion, VaultAuthConfig, VaultAuthMethod, VaultConfig, DEFAULT_AUDIENCE};
pub use spec::{
    ServiceAccountRef, VaultAuthSpec, VaultJwtAuth, VaultKubernetesAuth, VaultProviderSpec,
};

use super::findings::Findings;
use super::policy::EndpointPolicy;
use super::{Backend, KeyedError, ProviderError, RemoteKey, RemoteSecret};
use crate::identity::{PodIdentity, TokenIssuer};
use crate::metrics::{Metrics, Stage};
use crate::redact::scrub;

/// Per-request timeout towards Vault: a login plus a read (6s) fit in the default 8s
/// admission deadline, so a slow Vault gets a precise error rather than a deadline denial.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// A status probe waits this long for `sys/health`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct HttpKey {
    ca: Option<Vec<u8>>,
}

pub struct VaultProvider {
    tokens: TokenIssuer,
    sessions: Cache<auth::SessionKey, Arc<auth::Session>>,
    http: Cache<HttpKey, reqwest::Client>,
    metrics: Metrics,
}

impl VaultProvider {
    async fn http_client(&self, ca: Option<&[u8]>) -> Result<reqwest::Client, ProviderError> {
        let key = HttpKey {
            ca: ca.map(<[u8]>::to_vec),
        };
        self.http
            .try_get_with(key, async move {
                super::net::backend_client(ca, REQUEST_TIMEOUT)
                    .map_err(ProviderError::InvalidRequest)
            })
            .await
            .map_err(|e: Arc<ProviderError>| (*e).clone())
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
                    error: kv::unversioned_engine(),
                });
            }
        }
        let mut retried = false;
        loop {
            let (session, fresh) = self
                .session(identity, config)
                .await
                .map_err(|error| KeyedError { key: None, error })?;
            let reads = join_all(keys.iter().map(|k| self.read(&session, config, k)));
            let results = self.metrics.timed(Stage::Read, reads).await;
            let failure = keys
                .iter()
                .zip(&results)
                .find_map(|(key, r)| r.as_ref().err().map(|e| (key, e)));
            match failure {
                None => return Ok(results.into_iter().flatten().collect()),
                // A cached token may have been revoked: log in again once before giving up.
                Some((_, ProviderError::PermissionDenied { .. })) if !fresh && !retried => {
                    retried = true;
                    self.sessions
                        .invalidate(&auth::session_key(identity, config))
                        .await;
                }
                Some((key, error)) => {
                    return Err(KeyedError {
                        key: Some(key.key.clone()),
                        error: error.clone(),
                    })
                }
            }
        }
    }
}

impl Backend for VaultProvider {
    const NAME: &'static str = "vault";
    type Spec = VaultProviderSpec;
    type Config = VaultConfig;

    fn new(tokens: TokenIssuer, metrics: Metrics) -> Self {
        Self {
            tokens,
            sessions: super::session_cache(),
            http: Cache::builder().max_capacity(256).build(),
            metrics,
        }
    }

    fn validate(
        spec: &VaultProviderSpec,
        endpoints: &EndpointPolicy,
        out: &mut Findings,
    ) -> Option<VaultConfig> {
        config::validate(spec, endpoints, out)
    }

    fn fetch(
        &self,
        identity: &PodIdentity,
        config: &VaultConfig,
        keys: &[RemoteKey],
    ) -> impl std::future::Future<Output = Result<Vec<RemoteSecret>, KeyedError>> + Send {
        self.fetch_all(identity, config, keys)
    }

    fn issue(
        &self,
        identity: &PodIdentity,
        config: &VaultConfig,
        request: &crate::provider::issue::IssueRequest,
    ) -> impl std::future::Future<Output = Result<crate::provider::issue::Issued, ProviderError>> + Send
    {
        self.issue_as(identity, config, request)
    }

    fn renew(
        &self,
        identity: &PodIdentity,
        config: &VaultConfig,
        lease_id: &str,
        increment: Duration,
    ) -> impl std::future::Future<Output = Result<crate::provider::issue::Renewed, ProviderError>> + Send
    {
        self.renew_as(identity, config, lease_id, increment)
    }

    fn revoke(
        &self,
        identity: &PodIdentity,
        config: &VaultConfig,
        lease_id: &str,
    ) -> impl std::future::Future<Output = Result<(), ProviderError>> + Send {
        self.revoke_as(identity, config, lease_id)
    }

    fn probe(
        config: &VaultConfig,
    ) -> impl std::future::Future<Output = Result<String, String>> + Send {
        probe(config)
    }
}

/// `sys/health` answers without a token; standbys count as up.
async fn probe(config: &VaultConfig) -> Result<String, String> {
    let client = super::net::backend_client(config.ca_pem.as_deref(), PROBE_TIMEOUT)?;
    let url = config
        .server
        .join("v1/sys/health?standbyok=true&perfstandbyok=true")
        .map_err(|e| e.to_string())?;
    let mut request = client.get(url);
    if let Some(ns) = &config.namespace {
        request = request.header("X-Vault-Namespace", ns.as_str());
    }
    let origin = config.server.origin().ascii_serialization();
    match request.send().await {
        Ok(r) => match r.status().as_u16() {
            200 | 429 | 472 | 473 => Ok(format!("{origin} answers sys/health")),
            501 => Err("Vault answers but is not initialized".into()),
            503 => Err("Vault answers but is sealed".into()),
            other => Err(format!("sys/health returned HTTP {other}")),
        },
        Err(e) => Err(format!(
            "{origin} did not answer: {}",
            super::net::transport_error(&e)
        )),
    }
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
            detail: super::net::transport_error(&source),
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
