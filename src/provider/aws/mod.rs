//! AWS Secrets Manager with the pod's own IRSA identity.
//!
//! The webhook does what the pod's SDK would do with IRSA, on the pod's behalf: a TokenRequest
//! for the pod's ServiceAccount with audience `sts.amazonaws.com`, then an unsigned STS
//! `AssumeRoleWithWebIdentity` for the store's `role` (else the ServiceAccount's
//! `eks.amazonaws.com/role-arn` annotation), then Secrets Manager with the temporary
//! credentials that returns. There is no default credential chain anywhere in this module: the
//! webhook's own AWS identity (instance profile, its own IRSA, environment keys) is never used.
//!
//! Credentials are cached per (namespace, ServiceAccount, role, region, endpoint) until shortly
//! before they expire, single-flight. Reads use `GetSecretValue`, or one `BatchGetSecretValue`
//! per 20 secrets when a fetch needs two or more unversioned secrets. Every HTTP attempt is
//! counted in `secret_injector_backend_requests_total{provider="aws",operation=…,result=…}`.
//!
//! The SDK's own tracing is switched off around every call and client construction, whatever
//! the log filter says (and `init_tracing` silences the SDK's targets too): at debug/trace
//! level it prints its runtime components and signed requests, which carry the temporary
//! access key id and session token.
//!
//! `config` checks `spec.provider.aws`; `sts` turns the pod's token into a session; `read`
//! checks keys and reads them (batched); `errors` classifies AWS errors; `transport` builds the
//! SDK clients (HTTPS, DNS filter, retries, timeouts, the metrics interceptor).

mod config;
mod errors;
mod read;
mod spec;
mod sts;
mod transport;

use std::sync::Arc;

use aws_sdk_secretsmanager::config::SharedHttpClient;
use moka::future::Cache;
use tracing::instrument::WithSubscriber;
use tracing::subscriber::NoSubscriber;

pub use config::{is_iam_role_arn, AwsConfig};
pub use read::BATCH_LIMIT;
pub use spec::AwsProviderSpec;
pub use sts::session_name;

use super::findings::Findings;
use super::policy::EndpointPolicy;
use super::{Backend, KeyedError, ProviderError, RemoteKey, RemoteSecret};
use crate::identity::{PodIdentity, TokenIssuer};
use crate::metrics::{Metrics, Stage};

/// The audience IRSA tokens carry; the role's trust policy conditions on it.
pub const STS_AUDIENCE: &str = "sts.amazonaws.com";
/// The ServiceAccount annotation EKS uses to name a workload's IAM role.
pub const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

pub struct AwsProvider {
    tokens: TokenIssuer,
    sessions: Cache<sts::SessionKey, Arc<sts::Session>>,
    http: SharedHttpClient,
    metrics: Metrics,
}

impl AwsProvider {
    /// The role to assume: the store's, else the ServiceAccount's annotation. Runs before
    /// any TokenRequest; its only call is a GET of the pod's own ServiceAccount.
    async fn role(
        &self,
        identity: &PodIdentity,
        config: &AwsConfig,
    ) -> Result<String, ProviderError> {
        if let Some(role) = &config.role {
            return Ok(role.clone());
        }
        let annotated = self
            .tokens
            .service_account_annotation(identity, ROLE_ARN_ANNOTATION)
            .await?;
        match annotated.map(|r| r.trim().to_string()) {
            Some(role) if is_iam_role_arn(&role) => Ok(role),
            Some(role) => Err(ProviderError::InvalidRequest(format!(
                "the annotation {ROLE_ARN_ANNOTATION} on {identity} is {role:?}, which is not an \
                 IAM role ARN (arn:aws:iam::<account>:role/<name>); fix the annotation"
            ))),
            None => Err(ProviderError::InvalidRequest(format!(
                "no IAM role to assume: annotate {identity} with \
                 {ROLE_ARN_ANNOTATION}: arn:aws:iam::<account>:role/<name>, or set \
                 spec.provider.aws.role on the store"
            ))),
        }
    }

    async fn fetch_all(
        &self,
        identity: &PodIdentity,
        config: &AwsConfig,
        keys: &[RemoteKey],
    ) -> Result<Vec<RemoteSecret>, KeyedError> {
        // Requests that can never succeed are refused before any TokenRequest or connection.
        for key in keys {
            read::check_key(key, &config.region).map_err(|error| KeyedError {
                key: Some(key.key.clone()),
                error,
            })?;
        }
        let role = self
            .role(identity, config)
            .await
            .map_err(|error| KeyedError { key: None, error })?;
        let mut retried = false;
        loop {
            let (session, fresh) = self
                .session(identity, config, &role)
                .await
                .map_err(|error| KeyedError { key: None, error })?;
            let read =
                read::read_all(&session.client, keys).with_subscriber(NoSubscriber::default());
            let result = self.metrics.timed(Stage::Read, read).await;
            match result {
                Ok(values) => return Ok(values),
                // Credentials rejected as such (expired, revoked session): assume the role
                // again once before giving up.
                Err((_, failure)) if failure.stale_credentials && !fresh && !retried => {
                    retried = true;
                    self.sessions
                        .invalidate(&sts::session_key(identity, config, &role))
                        .await;
                }
                Err((key, failure)) => {
                    return Err(KeyedError {
                        key: Some(key),
                        error: failure.error,
                    })
                }
            }
        }
    }
}

impl Backend for AwsProvider {
    const NAME: &'static str = "aws";
    type Spec = AwsProviderSpec;
    type Config = AwsConfig;

    fn new(tokens: TokenIssuer, metrics: Metrics) -> Self {
        Self {
            tokens,
            sessions: super::session_cache(),
            http: transport::https_client(),
            metrics,
        }
    }

    fn validate(
        spec: &AwsProviderSpec,
        endpoints: &EndpointPolicy,
        out: &mut Findings,
    ) -> Option<AwsConfig> {
        config::validate(spec, endpoints, out)
    }

    fn fetch(
        &self,
        identity: &PodIdentity,
        config: &AwsConfig,
        keys: &[RemoteKey],
    ) -> impl std::future::Future<Output = Result<Vec<RemoteSecret>, KeyedError>> + Send {
        self.fetch_all(identity, config, keys)
    }

    fn probe(
        config: &AwsConfig,
    ) -> impl std::future::Future<Output = Result<String, String>> + Send {
        transport::probe(config)
    }
}
