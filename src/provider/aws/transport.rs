//! The SDK clients: HTTPS with rustls + ring and the address-filtering resolver, bounded
//! retries and timeouts, the SDK's tracing silenced, and every HTTP attempt counted. Also the
//! status probe, which needs no identity.

use std::time::Duration;

use aws_sdk_secretsmanager::config::retry::RetryConfig;
use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::config::{
    BehaviorVersion, ConfigBag, Credentials, IdentityCache, Intercept, Region, RuntimeComponents,
    SharedHttpClient,
};
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_sdk_secretsmanager::operation::batch_get_secret_value::BatchGetSecretValueError;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityError;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use tracing::subscriber::NoSubscriber;

use super::AwsConfig;
use crate::metrics::Metrics;
use crate::provider::net::{backend_client, transport_error, GuardedResolver};

/// Error codes AWS uses for rate limiting (the SDK's standard retry retries them too).
pub(super) const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "LimitExceededException",
];

/// Bounds that keep STS + Secrets Manager inside the admission deadline (8 s by default):
/// each operation, retries included, gets at most `OPERATION_TIMEOUT`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(2500);
pub(super) const OPERATION_TIMEOUT: Duration = Duration::from_millis(3500);
/// Standard retry (exponential backoff with full jitter) for throttling and transient errors.
pub(super) const MAX_ATTEMPTS: u32 = 3;
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A status probe waits this long for any HTTP answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The settings every SDK client here shares: region, the one HTTPS client, bounded retries
/// and timeouts, the call recorder, and the store's endpoint override.
macro_rules! shared_settings {
    ($builder:expr, $http:expr, $metrics:expr, $config:expr) => {{
        let mut builder = $builder
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new($config.region.clone()))
            .http_client($http)
            .retry_config(retry_config())
            .timeout_config(timeout_config())
            .interceptor(CallRecorder($metrics.clone()));
        if let Some(endpoint) = &$config.endpoint {
            builder = builder.endpoint_url(endpoint.as_str().trim_end_matches('/'));
        }
        builder
    }};
}

/// An STS client with no credentials provider: AssumeRoleWithWebIdentity is an unsigned call,
/// and nothing here may fall back to the webhook's own identity.
pub(super) fn sts_client(
    http: SharedHttpClient,
    metrics: &Metrics,
    config: &AwsConfig,
) -> aws_sdk_sts::Client {
    let sts = shared_settings!(aws_sdk_sts::Config::builder(), http, metrics, config);
    quietly(|| aws_sdk_sts::Client::from_conf(sts.build()))
}

/// A Secrets Manager client that signs with exactly `credentials` and nothing else.
pub(super) fn secrets_manager_client(
    http: SharedHttpClient,
    metrics: &Metrics,
    config: &AwsConfig,
    credentials: Credentials,
) -> aws_sdk_secretsmanager::Client {
    let sm = shared_settings!(
        aws_sdk_secretsmanager::Config::builder()
            .credentials_provider(credentials)
            .identity_cache(IdentityCache::no_cache()),
        http,
        metrics,
        config
    );
    quietly(|| aws_sdk_secretsmanager::Client::from_conf(sm.build()))
}

/// Run `f` with tracing off (the SDK logs while building clients, too).
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    tracing::subscriber::with_default(NoSubscriber::default(), f)
}

fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(INITIAL_BACKOFF)
        .with_max_backoff(MAX_BACKOFF)
}

fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// HTTPS with rustls + ring (no aws-lc) and the bundled Mozilla roots, like the Vault client;
/// no proxy from the environment; DNS answers filtered like the Vault client's. Shared by
/// every STS and Secrets Manager client, so connections are pooled across identities
/// (credentials are per request, not per connection).
pub(super) fn https_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
    let mut roots = TrustStore::empty().with_native_roots(false);
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        roots.add_pem_certificate(pem_certificate(cert.as_ref()));
    }
    let context = TlsContext::builder()
        .with_trust_store(roots)
        .build()
        .expect("a TLS context from static roots");
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(context)
        .build_with_resolver(GuardedResolver)
}

fn pem_certificate(der: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem.into_bytes()
}

/// Counts every HTTP attempt (retries included) per operation and outcome in
/// `secret_injector_backend_requests_total{provider="aws"}`. Labels are fixed strings.
struct CallRecorder(Metrics);

impl std::fmt::Debug for CallRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallRecorder")
    }
}

impl Intercept for CallRecorder {
    fn name(&self) -> &'static str {
        "secret-injector-call-recorder"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let operation = match cfg.load::<Metadata>().map(Metadata::name) {
            Some("AssumeRoleWithWebIdentity") => "assume_role_with_web_identity",
            Some("GetSecretValue") => "get_secret_value",
            Some("BatchGetSecretValue") => "batch_get_secret_value",
            _ => "other",
        };
        let status = context.response().map(|r| r.status().as_u16());
        let code = context
            .output_or_error()
            .and_then(|r| r.err())
            .and_then(|e| e.as_operation_error())
            .and_then(|e| {
                e.downcast_ref::<GetSecretValueError>()
                    .and_then(|e| e.code())
                    .or_else(|| {
                        e.downcast_ref::<BatchGetSecretValueError>()
                            .and_then(|e| e.code())
                    })
                    .or_else(|| {
                        e.downcast_ref::<AssumeRoleWithWebIdentityError>()
                            .and_then(|e| e.code())
                    })
            });
        let result = match status {
            None => "unreachable",
            Some(s) if (200..300).contains(&s) => "ok",
            Some(s) if s == 429 || code.is_some_and(|c| THROTTLING_CODES.contains(&c)) => {
                "throttled"
            }
            Some(_) => "error",
        };
        self.0.backend_call("aws", operation, result);
        Ok(())
    }
}

/// Any HTTP answer from the Secrets Manager endpoint proves DNS, TCP and (for https) a
/// verified TLS handshake.
pub(super) async fn probe(config: &AwsConfig) -> Result<String, String> {
    let url = match &config.endpoint {
        Some(u) => u.clone(),
        // China regions live under amazonaws.com.cn.
        None => url::Url::parse(&format!(
            "https://secretsmanager.{}.amazonaws.com{}/",
            config.region,
            if config.region.starts_with("cn-") {
                ".cn"
            } else {
                ""
            }
        ))
        .map_err(|e| e.to_string())?,
    };
    let client = backend_client(None, PROBE_TIMEOUT)?;
    let origin = url.origin().ascii_serialization();
    match client.get(url).send().await {
        Ok(_) => Ok(format!("{origin} answers")),
        Err(e) => Err(format!("{origin} did not answer: {}", transport_error(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_roots_round_trip() {
        let der = webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].as_ref();
        let pem = pem_certificate(der);
        let mut reader = pem.as_slice();
        let parsed: Vec<_> = rustls_pemfile::certs(&mut reader)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].as_ref(), der);
    }
}
