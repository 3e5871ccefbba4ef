//! The pod's own identity: a short-lived TokenRequest for `spec.serviceAccountName` in the
//! request's namespace — never a name taken from an annotation or a store.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::redact::SecretToken;

/// Who a fetch is made as. Everything cached is keyed by this.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodIdentity {
    pub namespace: String,
    pub service_account: String,
}

impl std::fmt::Display for PodIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ServiceAccount {}/{}",
            self.namespace, self.service_account
        )
    }
}

/// The API server's minimum, and short enough that a token stolen from memory is soon useless.
pub const TOKEN_TTL: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{identity} does not exist")]
    ServiceAccountNotFound { identity: PodIdentity },
    #[error("TokenRequest for {identity} failed: {}", crate::k8s::api_error_message(.source))]
    Api {
        identity: PodIdentity,
        #[source]
        source: Box<kube::Error>,
    },
    /// Never sent: a token without an explicit audience would carry the API server's own,
    /// which every service accepting Kubernetes tokens (the API server too) accepts.
    #[error("refusing a TokenRequest for {identity} without an audience (the API server's default audience is never requested)")]
    NoAudience { identity: PodIdentity },
    #[error("TokenRequest for {identity} returned no token")]
    Empty { identity: PodIdentity },
    #[error("reading {identity} failed: {}", crate::k8s::api_error_message(.source))]
    Lookup {
        identity: PodIdentity,
        #[source]
        source: Box<kube::Error>,
    },
}

#[derive(Clone)]
pub struct TokenIssuer {
    client: Client,
}

impl TokenIssuer {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// A token for the pod's ServiceAccount with the given audiences, valid for
    /// [`TOKEN_TTL`]. An empty list is refused: it would mean the API server's default
    /// audience.
    pub async fn issue(
        &self,
        identity: &PodIdentity,
        audiences: &[String],
    ) -> Result<SecretToken, IdentityError> {
        if audiences.is_empty() || audiences.iter().any(|a| a.trim().is_empty()) {
            return Err(IdentityError::NoAudience {
                identity: identity.clone(),
            });
        }
        let api = Api::<ServiceAccount>::namespaced(self.client.clone(), &identity.namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.to_vec(),
                expiration_seconds: Some(TOKEN_TTL.as_secs() as i64),
                bound_object_ref: None,
            },
            ..Default::default()
        };
        let response = api
            .create_token_request(&identity.service_account, &PostParams::default(), &request)
            .await
            .map_err(|source| match &source {
                kube::Error::Api(s) if s.code == 404 => IdentityError::ServiceAccountNotFound {
                    identity: identity.clone(),
                },
                _ => IdentityError::Api {
                    identity: identity.clone(),
                    source: Box::new(source),
                },
            })?;
        let token = response
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| IdentityError::Empty {
                identity: identity.clone(),
            })?;
        Ok(SecretToken::new(token))
    }

    /// One annotation of the pod's ServiceAccount (e.g. `eks.amazonaws.com/role-arn`), read
    /// with a GET of that ServiceAccount only: the name is never taken from anywhere else.
    pub async fn service_account_annotation(
        &self,
        identity: &PodIdentity,
        annotation: &str,
    ) -> Result<Option<String>, IdentityError> {
        let api = Api::<ServiceAccount>::namespaced(self.client.clone(), &identity.namespace);
        let sa = api
            .get(&identity.service_account)
            .await
            .map_err(|source| match &source {
                kube::Error::Api(s) if s.code == 404 => IdentityError::ServiceAccountNotFound {
                    identity: identity.clone(),
                },
                _ => IdentityError::Lookup {
                    identity: identity.clone(),
                    source: Box::new(source),
                },
            })?;
        Ok(sa
            .metadata
            .annotations
            .and_then(|mut a| a.remove(annotation)))
    }
}
