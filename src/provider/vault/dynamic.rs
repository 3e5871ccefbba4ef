//! Dynamic secrets and certificates. Issued with a **lease-holder token**: an orphan token the
//! pod's login token mints (`auth/token/create-orphan`, policies inherited) just for the
//! issuance and then drops — so the lease outlives the short login token (Vault revokes a
//! token's leases with it). Renewed and revoked later with a fresh login as the same identity.
//! When minting is refused, the login token itself holds the lease and the caller learns its
//! remaining life ([`TokenHolder::Login`]) so the credentials are re-issued before it ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tracing::warn;

use super::auth::Session;
use super::{tidy_vault_errors, VaultConfig, VaultProvider};
use crate::identity::PodIdentity;
use crate::provider::issue::{IssueRequest, Issued, Renewed, TokenHolder};
use crate::provider::{json_field, ProviderError};
use crate::redact::{scrub, SecretToken};
use crate::spec::DynamicMethod;

const HOLDER_DISPLAY_NAME: &str = "secret-injector-lease-holder";

impl VaultProvider {
    pub(super) async fn issue_as(
        &self,
        identity: &PodIdentity,
        config: &VaultConfig,
        request: &IssueRequest,
    ) -> Result<Issued, ProviderError> {
        self.with_session(identity, config, move |s| async move {
            self.issue_with(&s, config, request).await
        })
        .await
    }

    pub(super) async fn renew_as(
        &self,
        identity: &PodIdentity,
        config: &VaultConfig,
        lease_id: &str,
        increment: Duration,
    ) -> Result<Renewed, ProviderError> {
        check_lease_id(lease_id)?;
        let inc = increment.as_secs().max(1);
        let answer = self
            .with_session(identity, config, move |s| async move {
                // The path form is what a policy scoped to one role allows; the default
                // policy allows the body form.
                match call(
                    &s,
                    config,
                    None,
                    Method::PUT,
                    (&format!("sys/leases/renew/{lease_id}"), "sys/leases/renew"),
                    Some(json!({ "increment": inc })),
                )
                .await
                {
                    Err(ProviderError::PermissionDenied { .. }) => {
                        call(
                            &s,
                            config,
                            None,
                            Method::PUT,
                            ("sys/leases/renew", "sys/leases/renew"),
                            Some(json!({ "lease_id": lease_id, "increment": inc })),
                        )
                        .await
                    }
                    other => other,
                }
            })
            .await;
        self.metrics.backend_call("vault", "renew", result(&answer));
        let v = answer?;
        Ok(Renewed {
            ttl: Duration::from_secs(v["lease_duration"].as_u64().unwrap_or(0)),
            renewable: v["renewable"].as_bool().unwrap_or(false),
        })
    }

    pub(super) async fn revoke_as(
        &self,
        identity: &PodIdentity,
        config: &VaultConfig,
        lease_id: &str,
    ) -> Result<(), ProviderError> {
        check_lease_id(lease_id)?;
        let answer = self
            .with_session(identity, config, move |s| async move {
                let path_form = call(
                    &s,
                    config,
                    None,
                    Method::PUT,
                    (
                        &format!("sys/leases/revoke/{lease_id}"),
                        "sys/leases/revoke",
                    ),
                    Some(json!({})),
                )
                .await;
                let answer = match path_form {
                    Err(ProviderError::PermissionDenied { .. }) => {
                        call(
                            &s,
                            config,
                            None,
                            Method::PUT,
                            ("sys/leases/revoke", "sys/leases/revoke"),
                            Some(json!({ "lease_id": lease_id })),
                        )
                        .await
                    }
                    other => other,
                };
                match answer {
                    // Already revoked or expired: what we wanted.
                    Err(ProviderError::Backend { detail }) if detail.contains("invalid lease") => {
                        Ok(Value::Null)
                    }
                    other => other,
                }
            })
            .await;
        self.metrics
            .backend_call("vault", "revoke", result(&answer));
        answer.map(|_| ())
    }

    /// Run `f` with the identity's session; a cached token refused with 403 is replaced by a
    /// fresh login once.
    async fn with_session<T, F, Fut>(
        &self,
        identity: &PodIdentity,
        config: &VaultConfig,
        f: F,
    ) -> Result<T, ProviderError>
    where
        F: Fn(Arc<Session>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let mut retried = false;
        loop {
            let (session, fresh) = self.session(identity, config).await?;
            match f(session).await {
                Err(ProviderError::PermissionDenied { .. }) if !fresh && !retried => {
                    retried = true;
                    self.sessions
                        .invalidate(&super::auth::session_key(identity, config))
                        .await;
                }
                other => return other,
            }
        }
    }

    async fn issue_with(
        &self,
        session: &Session,
        config: &VaultConfig,
        request: &IssueRequest,
    ) -> Result<Issued, ProviderError> {
        let holder_body = json!({
            "ttl": format!("{}s", request.holder_ttl.as_secs().max(1)),
            "renewable": false,
            "display_name": HOLDER_DISPLAY_NAME,
            "meta": {"issued-by": "secret-injector"},
        });
        let minted = call(
            session,
            config,
            None,
            Method::POST,
            ("auth/token/create-orphan", "auth/token/create-orphan"),
            Some(holder_body),
        )
        .await;
        let (holder_token, holder) = match minted {
            Ok(v) => {
                self.metrics.backend_call("vault", "create_orphan", "ok");
                let token =
                    v["auth"]["client_token"]
                        .as_str()
                        .ok_or_else(|| ProviderError::Backend {
                            detail: "auth/token/create-orphan answered without a token".into(),
                        })?;
                let ttl = v["auth"]["lease_duration"].as_u64().unwrap_or(0);
                (
                    Some(SecretToken::new(token.to_string())),
                    TokenHolder::Orphan {
                        ttl: (ttl > 0).then(|| Duration::from_secs(ttl)),
                    },
                )
            }
            Err(ProviderError::PermissionDenied { detail }) => {
                self.metrics
                    .backend_call("vault", "create_orphan", "denied");
                warn!(path = %request.path, %detail, "auth/token/create-orphan refused: the login token holds the lease, so the credentials end with it and are re-issued before that (grant update on auth/token/create-orphan to avoid this)");
                let ttl = session
                    .token_expires
                    .map(|e| e.saturating_duration_since(Instant::now()));
                (None, TokenHolder::Login { ttl })
            }
            Err(e) => {
                self.metrics.backend_call("vault", "create_orphan", "error");
                return Err(e);
            }
        };
        let body = match &request.body {
            Some(b) => Some(serde_json::from_str::<Value>(b).map_err(|_| {
                ProviderError::InvalidRequest("the request parameters are not JSON".into())
            })?),
            None => None,
        };
        let method = match request.method {
            DynamicMethod::Get => Method::GET,
            DynamicMethod::Post => Method::POST,
            DynamicMethod::Put => Method::PUT,
        };
        let answer = call(
            session,
            config,
            holder_token.as_ref().map(SecretToken::expose),
            method,
            (&request.path, &request.path),
            body,
        )
        .await;
        // The holder token is never kept: Vault keeps it alive for the lease, we do not.
        drop(holder_token);
        self.metrics.backend_call("vault", "issue", result(&answer));
        let mut v = answer?;
        let data = match v.get_mut("data").map(Value::take) {
            Some(Value::Object(fields)) => fields
                .into_iter()
                .map(|(k, v)| (k, json_field(v)))
                .collect(),
            _ => {
                return Err(ProviderError::Backend {
                    detail: format!("the answer of {} carries no data", request.path),
                })
            }
        };
        Ok(Issued {
            data,
            lease_id: v["lease_id"].as_str().unwrap_or_default().to_string(),
            lease_duration: Duration::from_secs(v["lease_duration"].as_u64().unwrap_or(0)),
            renewable: v["renewable"].as_bool().unwrap_or(false),
            holder,
        })
    }
}

fn result<T>(r: &Result<T, ProviderError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(ProviderError::Unreachable { .. }) => "unreachable",
        Err(_) => "error",
    }
}

/// Lease ids come back from annotations anyone with Secret write access could edit: they
/// must be plain lease paths, never something that walks to another endpoint.
fn check_lease_id(id: &str) -> Result<(), ProviderError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
        && id
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    if ok {
        Ok(())
    } else {
        Err(ProviderError::InvalidRequest(
            "the recorded lease id is not a lease path".into(),
        ))
    }
}

/// One Vault API call with `token` (the session's login token when None). Messages name
/// `what` (never a lease id, and no URL).
async fn call(
    session: &Session,
    config: &VaultConfig,
    token: Option<&str>,
    method: Method,
    (path, what): (&str, &str),
    body: Option<Value>,
) -> Result<Value, ProviderError> {
    let url = config.server.join(&format!("v1/{path}")).map_err(|e| {
        ProviderError::InvalidRequest(format!("path {path:?} does not form a URL: {e}"))
    })?;
    let token = token.unwrap_or(session.client.middle.token.as_str());
    let mut request = session
        .client
        .http
        .http
        .request(method, url)
        .header("X-Vault-Token", token)
        .header("X-Vault-Request", "true");
    if let Some(ns) = &config.namespace {
        request = request.header("X-Vault-Namespace", ns.as_str());
    }
    if let Some(b) = body {
        request = request.json(&b);
    }
    let unreachable = |e: reqwest::Error| ProviderError::Unreachable {
        detail: format!(
            "{what}: {}",
            crate::provider::net::transport_error(&e.without_url())
        ),
    };
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(unreachable)?;
    if (200..300).contains(&status) {
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_str(&text).map_err(|_| ProviderError::Backend {
            detail: format!("Vault answered {what} with something that is not JSON"),
        });
    }
    let errors: Vec<String> = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            v["errors"].as_array().map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(String::from))
                    .collect()
            })
        })
        .unwrap_or_default();
    let detail = if errors.is_empty() {
        format!("Vault {status} on {what}")
    } else {
        format!(
            "Vault {status} on {what}: {}",
            scrub(&tidy_vault_errors(&errors))
        )
    };
    Err(match status {
        401 | 403 => ProviderError::PermissionDenied { detail },
        404 => ProviderError::NotFound { detail },
        _ => ProviderError::Backend { detail },
    })
}

#[cfg(test)]
mod tests {
    use super::check_lease_id;

    #[test]
    fn lease_ids_must_be_plain_paths() {
        assert!(check_lease_id("database/creds/app/AbC123.x-y_z").is_ok());
        for bad in [
            "",
            "../sys/x",
            "database//creds",
            "a/./b",
            "a?b",
            "a b",
            "a/%2e%2e",
        ] {
            assert!(check_lease_id(bad).is_err(), "{bad}");
        }
    }
}
