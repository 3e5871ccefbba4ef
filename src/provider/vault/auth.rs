//! Logging in to Vault as the pod: a TokenRequest for the store's audiences, then the
//! Kubernetes or JWT auth method. Sessions are cached per identity and single-flight.

use std::sync::Arc;
use std::time::Duration;

use vaultrs::api::EndpointMiddleware;
use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};

use super::{classify, VaultAuthMethod, VaultConfig, VaultProvider};
use crate::identity::PodIdentity;
use crate::metrics::Stage;
use crate::provider::ProviderError;

/// Never keep a Vault token longer than this, whatever its lease says.
const MAX_SESSION: Duration = Duration::from_secs(15 * 60);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct SessionKey {
    identity: PodIdentity,
    server: String,
    namespace: Option<String>,
    ca: Option<Vec<u8>>,
    method: &'static str,
    mount: String,
    role: String,
    audiences: Vec<String>,
}

pub(super) struct Session {
    pub client: VaultClient,
    ttl: Duration,
    /// When the login token itself expires (None: it does not).
    pub token_expires: Option<std::time::Instant>,
}

impl crate::provider::Expiring for Session {
    fn ttl(&self) -> Duration {
        self.ttl
    }
}

pub(super) fn session_key(identity: &PodIdentity, config: &VaultConfig) -> SessionKey {
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

impl VaultProvider {
    /// The identity's session, and whether it was made just now.
    pub(super) async fn session(
        &self,
        identity: &PodIdentity,
        config: &VaultConfig,
    ) -> Result<(Arc<Session>, bool), ProviderError> {
        let key = session_key(identity, config);
        let login = self
            .metrics
            .timed(Stage::Login, self.login(identity, config));
        crate::provider::single_flight(&self.sessions, key, login).await
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
        let token_expires = (!lease.is_zero()).then(|| std::time::Instant::now() + lease);
        Ok(Session {
            client,
            ttl,
            token_expires,
        })
    }
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
