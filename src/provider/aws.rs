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

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_secretsmanager::config::retry::RetryConfig;
use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::config::{
    BehaviorVersion, ConfigBag, Credentials, IdentityCache, Intercept, Region, RuntimeComponents,
    SharedHttpClient,
};
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::batch_get_secret_value::BatchGetSecretValueError;
use aws_sdk_secretsmanager::operation::get_secret_value::{
    GetSecretValueError, GetSecretValueOutput,
};
use aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityError;
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use futures::future::{join_all, BoxFuture};
use futures::FutureExt;
use moka::future::Cache;
use tracing::instrument::WithSubscriber;
use tracing::subscriber::NoSubscriber;

use super::{KeyedError, ProviderError, RemoteKey, RemoteSecret, SecretProvider};
use crate::identity::{PodIdentity, TokenIssuer};
use crate::metrics::Metrics;
use crate::redact::{scrub, SecretBytes};
use crate::store::{is_forbidden_ip, is_iam_role_arn, AwsConfig, ProviderConfig, ResolvedStore};

/// The audience IRSA tokens carry; the role's trust policy conditions on it.
pub const STS_AUDIENCE: &str = "sts.amazonaws.com";
/// The ServiceAccount annotation EKS uses to name a workload's IAM role.
pub const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
/// Requested session length: one hour is allowed by every role (MaxSessionDuration ≥ 1 h).
const SESSION_DURATION: Duration = Duration::from_secs(3600);
/// Credentials are dropped this long before they expire, so a read never races the expiry.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5 * 60);
/// `BatchGetSecretValue` takes at most 20 secret ids per call.
pub const BATCH_LIMIT: usize = 20;
/// Bounds that keep STS + Secrets Manager inside the admission deadline (8 s by default):
/// each operation, retries included, gets at most `OPERATION_TIMEOUT`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(2500);
const OPERATION_TIMEOUT: Duration = Duration::from_millis(3500);
/// Standard retry (exponential backoff with full jitter) for throttling and transient errors.
const MAX_ATTEMPTS: u32 = 3;
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A batch answer that keeps paginating past this is not trusted any further.
const MAX_BATCH_PAGES: usize = 5;

/// Error codes AWS uses for rate limiting (the SDK's standard retry retries them too).
const THROTTLING_CODES: &[&str] = &[
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
/// Codes meaning the temporary credentials themselves were rejected: worth one fresh
/// AssumeRoleWithWebIdentity before giving up.
const STALE_CREDENTIAL_CODES: &[&str] = &[
    "ExpiredTokenException",
    "ExpiredToken",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
];

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SessionKey {
    identity: PodIdentity,
    role: String,
    region: String,
    endpoint: Option<String>,
}

struct Session {
    client: aws_sdk_secretsmanager::Client,
    ttl: Duration,
}

impl super::Expiring for Session {
    fn ttl(&self) -> Duration {
        self.ttl
    }
}

pub struct AwsProvider {
    tokens: TokenIssuer,
    sessions: Cache<SessionKey, Arc<Session>>,
    http: SharedHttpClient,
    metrics: Metrics,
}

impl AwsProvider {
    pub fn new(tokens: TokenIssuer, metrics: Metrics) -> Self {
        Self {
            tokens,
            sessions: Cache::builder()
                .max_capacity(10_000)
                .expire_after(super::TtlExpiry)
                .build(),
            http: https_client(),
            metrics,
        }
    }

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

    async fn session(
        &self,
        identity: &PodIdentity,
        config: &AwsConfig,
        role: &str,
    ) -> Result<(Arc<Session>, bool), ProviderError> {
        let key = session_key(identity, config, role);
        let mut fresh = false;
        let session = self
            .sessions
            .try_get_with(key, async {
                fresh = true;
                self.assume_role(identity, config, role).await.map(Arc::new)
            })
            .await
            .map_err(|e: Arc<ProviderError>| (*e).clone())?;
        Ok((session, fresh))
    }

    /// TokenRequest (audience sts.amazonaws.com) → AssumeRoleWithWebIdentity → a Secrets
    /// Manager client holding the temporary credentials.
    async fn assume_role(
        &self,
        identity: &PodIdentity,
        config: &AwsConfig,
        role: &str,
    ) -> Result<Session, ProviderError> {
        let jwt = self
            .tokens
            .issue(identity, &[STS_AUDIENCE.to_string()])
            .await?;
        let mut sts = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .http_client(self.http.clone())
            .retry_config(retry_config())
            .timeout_config(timeout_config())
            .interceptor(CallRecorder(self.metrics.clone()));
        if let Some(endpoint) = &config.endpoint {
            sts = sts.endpoint_url(endpoint.as_str().trim_end_matches('/'));
        }
        // No credentials provider: AssumeRoleWithWebIdentity is an unsigned call, and nothing
        // here may fall back to the webhook's own identity.
        let sts = quietly(|| aws_sdk_sts::Client::from_conf(sts.build()));
        let result = sts
            .assume_role_with_web_identity()
            .role_arn(role)
            .role_session_name(session_name(identity))
            .web_identity_token(jwt.expose())
            .duration_seconds(SESSION_DURATION.as_secs() as i32)
            .send()
            .with_subscriber(NoSubscriber::default())
            .await;
        drop(jwt);
        let output = result.map_err(|e| {
            let failure = classify_sdk_error(&e);
            match failure.error {
                ProviderError::PermissionDenied { detail }
                | ProviderError::NotFound { detail }
                | ProviderError::Backend { detail } => ProviderError::LoginRefused {
                    path: "STS AssumeRoleWithWebIdentity".into(),
                    role: role.to_string(),
                    detail: format!(
                        "{detail}; the role's trust policy must allow the cluster's OIDC provider \
                         with sub system:serviceaccount:{}:{} and aud {STS_AUDIENCE}",
                        identity.namespace, identity.service_account
                    ),
                },
                other => other,
            }
        })?;
        let Some(creds) = output.credentials else {
            return Err(ProviderError::Backend {
                detail: "STS AssumeRoleWithWebIdentity returned no credentials".into(),
            });
        };
        let expires = SystemTime::try_from(creds.expiration).ok();
        let ttl = credential_ttl(expires, SystemTime::now());
        let credentials = Credentials::new(
            creds.access_key_id,
            creds.secret_access_key,
            Some(creds.session_token),
            expires,
            "secret-injector-irsa",
        );
        Ok(Session {
            client: secrets_manager_client(self.http.clone(), &self.metrics, config, credentials),
            ttl,
        })
    }

    async fn fetch_all(
        &self,
        identity: &PodIdentity,
        config: &AwsConfig,
        keys: &[RemoteKey],
    ) -> Result<Vec<RemoteSecret>, KeyedError> {
        // Requests that can never succeed are refused before any TokenRequest or connection.
        for key in keys {
            check_key(key, &config.region).map_err(|error| KeyedError {
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
            let result = read_all(&session.client, keys)
                .with_subscriber(NoSubscriber::default())
                .await;
            match result {
                Ok(values) => return Ok(values),
                // Credentials rejected as such (expired, revoked session): assume the role
                // again once before giving up.
                Err((_, failure)) if failure.stale_credentials && !fresh && !retried => {
                    retried = true;
                    self.sessions
                        .invalidate(&session_key(identity, config, &role))
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

impl SecretProvider for AwsProvider {
    fn fetch<'a>(
        &'a self,
        identity: &'a PodIdentity,
        store: &'a ResolvedStore,
        keys: &'a [RemoteKey],
    ) -> BoxFuture<'a, Result<Vec<RemoteSecret>, KeyedError>> {
        async move {
            let ProviderConfig::Aws(config) = &store.config else {
                return Err(KeyedError {
                    key: None,
                    error: ProviderError::InvalidRequest("store is not an AWS store".into()),
                });
            };
            self.fetch_all(identity, config, keys).await
        }
        .boxed()
    }
}

/// A Secrets Manager client that signs with exactly `credentials` and nothing else.
fn secrets_manager_client(
    http: SharedHttpClient,
    metrics: &Metrics,
    config: &AwsConfig,
    credentials: Credentials,
) -> aws_sdk_secretsmanager::Client {
    let mut sm = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(config.region.clone()))
        .credentials_provider(credentials)
        .identity_cache(IdentityCache::no_cache())
        .http_client(http)
        .retry_config(retry_config())
        .timeout_config(timeout_config())
        .interceptor(CallRecorder(metrics.clone()));
    if let Some(endpoint) = &config.endpoint {
        sm = sm.endpoint_url(endpoint.as_str().trim_end_matches('/'));
    }
    quietly(|| aws_sdk_secretsmanager::Client::from_conf(sm.build()))
}

/// Run `f` with tracing off (the SDK logs while building clients, too).
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    tracing::subscriber::with_default(NoSubscriber::default(), f)
}

fn session_key(identity: &PodIdentity, config: &AwsConfig, role: &str) -> SessionKey {
    SessionKey {
        identity: identity.clone(),
        role: role.to_string(),
        region: config.region.clone(),
        endpoint: config.endpoint.as_ref().map(ToString::to_string),
    }
}

/// How long credentials expiring at `expires` may be used from `now`.
fn credential_ttl(expires: Option<SystemTime>, now: SystemTime) -> Duration {
    let Some(expires) = expires else {
        return Duration::ZERO;
    };
    expires
        .duration_since(now)
        .unwrap_or_default()
        .saturating_sub(EXPIRY_MARGIN)
        .min(SESSION_DURATION)
}

/// A failed read, with whether fresh credentials might fix it.
#[derive(Debug, Clone)]
struct Failure {
    error: ProviderError,
    stale_credentials: bool,
}

/// Read every key with `client`: unversioned keys through BatchGetSecretValue when there are
/// two or more of them, everything else (and anything a batch did not answer) through
/// GetSecretValue. On failure: the first failing key in `keys` order.
async fn read_all(
    client: &aws_sdk_secretsmanager::Client,
    keys: &[RemoteKey],
) -> Result<Vec<RemoteSecret>, (String, Failure)> {
    let unversioned: Vec<&str> = keys
        .iter()
        .filter(|k| k.version.is_none())
        .map(|k| k.key.as_str())
        .collect();
    let mut batched: BTreeMap<&str, Result<RemoteSecret, Failure>> = BTreeMap::new();
    if unversioned.len() >= 2 {
        let chunks = join_all(
            unversioned
                .chunks(BATCH_LIMIT)
                .map(|chunk| batch_get(client, chunk)),
        )
        .await;
        for (chunk, answer) in unversioned.chunks(BATCH_LIMIT).zip(chunks) {
            match answer {
                Ok(found) => batched.extend(found),
                // The call itself was refused: most likely the role lacks
                // secretsmanager:BatchGetSecretValue (or a VPC endpoint policy denies one
                // secret). GetSecretValue on each key then works, or names the key at fault.
                Err(Failure {
                    error: ProviderError::PermissionDenied { .. },
                    stale_credentials: false,
                }) => {}
                // Throttled, unreachable, stale credentials: it concerns every key of the
                // chunk; report it on the first.
                Err(failure) => return Err((chunk[0].to_string(), failure)),
            }
        }
    }
    let singles = join_all(
        keys.iter()
            .filter(|k| !(k.version.is_none() && batched.contains_key(k.key.as_str())))
            .map(|k| async move { (k, get_one(client, k).await) }),
    )
    .await;
    let mut singles: BTreeMap<&RemoteKey, Result<RemoteSecret, Failure>> =
        singles.into_iter().collect();
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let result = match singles.remove(key) {
            Some(r) => r,
            None => batched
                .get(key.key.as_str())
                .cloned()
                .expect("every key is read by the batch or on its own"),
        };
        match result {
            Ok(v) => out.push(v),
            Err(f) => return Err((key.key.clone(), f)),
        }
    }
    Ok(out)
}

async fn get_one(
    client: &aws_sdk_secretsmanager::Client,
    key: &RemoteKey,
) -> Result<RemoteSecret, Failure> {
    let mut request = client.get_secret_value().secret_id(&key.key);
    match key.version.as_deref().map(classify_version) {
        Some(Version::Id(id)) => request = request.version_id(id),
        Some(Version::Stage(stage)) => request = request.version_stage(stage),
        None => {}
    }
    let output: GetSecretValueOutput = request.send().await.map_err(|e| classify_sdk_error(&e))?;
    into_remote(
        output.secret_string,
        output.secret_binary.map(|b| b.into_inner()),
    )
}

/// One BatchGetSecretValue call (plus its pages): the keys it answered, each with its value
/// or its per-secret error. Keys it says nothing about are absent (read on their own after).
async fn batch_get<'k>(
    client: &aws_sdk_secretsmanager::Client,
    ids: &[&'k str],
) -> Result<Vec<(&'k str, Result<RemoteSecret, Failure>)>, Failure> {
    let mut found: Vec<(&'k str, Result<RemoteSecret, Failure>)> = Vec::new();
    let mut next_token: Option<String> = None;
    for _ in 0..MAX_BATCH_PAGES {
        let output = client
            .batch_get_secret_value()
            .set_secret_id_list(Some(ids.iter().map(|s| s.to_string()).collect()))
            .set_next_token(next_token.take())
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        for entry in output.secret_values.unwrap_or_default() {
            let name = entry.name.as_deref().unwrap_or_default();
            let arn = entry.arn.as_deref().unwrap_or_default();
            let value = into_remote(
                entry.secret_string,
                entry.secret_binary.map(|b| b.into_inner()),
            );
            for id in ids.iter().filter(|id| matches_entry(id, name, arn)) {
                found.push((id, value.clone()));
            }
        }
        for error in output.errors.unwrap_or_default() {
            let Some(secret_id) = error.secret_id.as_deref() else {
                continue;
            };
            let failure =
                classify_code(None, error.error_code.as_deref(), error.message.as_deref());
            for id in ids.iter().filter(|id| **id == secret_id) {
                found.push((id, Err(failure.clone())));
            }
        }
        match output.next_token {
            Some(token) if !token.is_empty() => next_token = Some(token),
            _ => break,
        }
    }
    Ok(found)
}

/// Whether a requested id (a name, a full ARN, or an ARN without the random suffix) names
/// the batch entry with this name and ARN.
fn matches_entry(id: &str, name: &str, arn: &str) -> bool {
    if id.is_empty() {
        return false;
    }
    id == name
        || id == arn
        || arn
            .strip_prefix(id)
            .is_some_and(|rest| rest.len() == 7 && rest.starts_with('-'))
}

fn into_remote(string: Option<String>, binary: Option<Vec<u8>>) -> Result<RemoteSecret, Failure> {
    match (string, binary) {
        (Some(s), _) => Ok(RemoteSecret::Blob(SecretBytes::from_string(s))),
        (None, Some(b)) => Ok(RemoteSecret::Blob(SecretBytes::new(b))),
        (None, None) => Err(Failure {
            error: ProviderError::Backend {
                detail: "the secret version has neither a SecretString nor a SecretBinary".into(),
            },
            stale_credentials: false,
        }),
    }
}

/// `remoteRef.version` for Secrets Manager: a VersionId when it looks like one (UUID-shaped
/// 8-4-4-4-12, or 32–64 hex digits and dashes), else a VersionStage such as `AWSCURRENT`,
/// `AWSPREVIOUS` or a custom label. (The annotation grammar allows only letters, digits, `-`
/// and `_`, so ESO's `uuid/<id>` prefix cannot be written; the shape decides.)
#[derive(Debug, PartialEq, Eq)]
enum Version<'a> {
    Id(&'a str),
    Stage(&'a str),
}

fn classify_version(v: &str) -> Version<'_> {
    let uuid_shaped = v.split('-').map(str::len).eq([8, 4, 4, 4, 12])
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let hexish = (32..=64).contains(&v.len())
        && v.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        && v.bytes().any(|b| b.is_ascii_digit());
    if uuid_shaped || hexish {
        Version::Id(v)
    } else {
        Version::Stage(v)
    }
}

/// What a remote key must look like for Secrets Manager: a secret name or an ARN in the
/// store's region. Checked before any TokenRequest or connection.
fn check_key(key: &RemoteKey, region: &str) -> Result<(), ProviderError> {
    let id = key.key.as_str();
    if let Some(rest) = id.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(6, ':').collect();
        let valid = parts.len() == 6
            && matches!(parts[0], "aws" | "aws-cn" | "aws-us-gov")
            && parts[1] == "secretsmanager"
            && parts[3].len() == 12
            && parts[3].bytes().all(|b| b.is_ascii_digit())
            && parts[4] == "secret"
            && !parts[5].is_empty();
        if !valid {
            return Err(ProviderError::InvalidRequest(format!(
                "{id:?} is not a Secrets Manager ARN \
                 (arn:aws:secretsmanager:<region>:<account>:secret:<name>)"
            )));
        }
        if parts[2] != region {
            return Err(ProviderError::InvalidRequest(format!(
                "the ARN is in region {} but the store reads from {region}; use a store for {}",
                parts[2], parts[2]
            )));
        }
    } else if id.len() > 512
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b))
    {
        return Err(ProviderError::InvalidRequest(format!(
            "{id:?} is not a Secrets Manager secret name (at most 512 of A-Z a-z 0-9 / _ + = . @ -) \
             or ARN"
        )));
    }
    Ok(())
}

/// A RoleSessionName naming the namespace and ServiceAccount (`<namespace>.<sa>`), within
/// STS's `[\w+=,.@-]{2,64}`: other characters become `-`; a name too long is cut and given a
/// digest of the full identity so it stays unique.
pub fn session_name(identity: &PodIdentity) -> String {
    use sha2::{Digest, Sha256};
    let full = format!("{}.{}", identity.namespace, identity.service_account);
    let mut name: String = full
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.len() > 64 {
        let digest = Sha256::digest(full.as_bytes());
        let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        name.truncate(55);
        name.push('.');
        name.push_str(&hex);
    }
    while name.len() < 2 {
        name.push('-');
    }
    name
}

/// Map any SDK error to a message-safe failure.
fn classify_sdk_error<E>(
    e: &SdkError<E, aws_sdk_secretsmanager::config::http::HttpResponse>,
) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::TimeoutError(_) => Failure {
            error: ProviderError::Unreachable {
                detail: format!(
                    "no answer within {:.1}s (retries included)",
                    OPERATION_TIMEOUT.as_secs_f32()
                ),
            },
            stale_credentials: false,
        },
        SdkError::DispatchFailure(d) => Failure {
            error: ProviderError::Unreachable {
                detail: scrub(&super::error_chain(e)).replace(
                    "dispatch failure",
                    if d.is_timeout() {
                        "connection timed out"
                    } else {
                        "connection failed"
                    },
                ),
            },
            stale_credentials: false,
        },
        SdkError::ConstructionFailure(_) => Failure {
            error: ProviderError::InvalidRequest(format!(
                "the AWS request could not be built: {}",
                scrub(&super::error_chain(e))
            )),
            stale_credentials: false,
        },
        _ => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            classify_code(status, e.code(), e.message())
        }
    }
}

/// Map an AWS error code (and HTTP status, when known) to a [`ProviderError`]. The message
/// goes through [`scrub`]; AWS messages name ARNs and actions, never secret values.
fn classify_code(status: Option<u16>, code: Option<&str>, message: Option<&str>) -> Failure {
    let code = code.unwrap_or_default();
    let message = message.map(scrub).unwrap_or_default();
    let detail = match (code.is_empty(), message.is_empty()) {
        (false, false) => format!("{code}: {message}"),
        (false, true) => code.to_string(),
        (true, false) => message.clone(),
        (true, true) => match status {
            Some(s) => format!("HTTP {s}"),
            None => "no error code".into(),
        },
    };
    let stale_credentials = STALE_CREDENTIAL_CODES.contains(&code);
    let error = if THROTTLING_CODES.contains(&code)
        || status == Some(429)
        || message.contains("Rate exceeded")
    {
        ProviderError::Throttled {
            detail: format!("{detail}; retry later or raise the Secrets Manager / STS quota"),
        }
    } else if matches!(code, "AccessDeniedException" | "AccessDenied") || stale_credentials {
        ProviderError::PermissionDenied { detail }
    } else if code == "DecryptionFailure" {
        ProviderError::PermissionDenied {
            detail: format!("{detail}; the role needs kms:Decrypt on the secret's KMS key"),
        }
    } else if code == "ResourceNotFoundException" {
        ProviderError::NotFound { detail }
    } else if matches!(code, "InvalidIdentityToken" | "IDPRejectedClaim") {
        ProviderError::PermissionDenied {
            detail: format!(
                "{detail}; is the cluster's OIDC issuer registered as an IAM identity provider?"
            ),
        }
    } else if code == "IDPCommunicationError" {
        ProviderError::Unreachable { detail }
    } else if code.is_empty() && status == Some(403) {
        ProviderError::PermissionDenied { detail }
    } else if code.is_empty() && status == Some(404) {
        ProviderError::NotFound { detail }
    } else {
        ProviderError::Backend { detail }
    };
    Failure {
        error,
        stale_credentials,
    }
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
fn https_client() -> SharedHttpClient {
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
        .build_with_resolver(GuardedDns)
}

/// DNS that never yields a link-local or cloud-metadata address (the same rule as the Vault
/// client's resolver): a name that resolves, or is rebound, to 169.254.169.254 is as
/// unreachable as the literal address, which store validation already refuses.
#[derive(Clone, Debug)]
struct GuardedDns;

impl ResolveDns for GuardedDns {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        DnsFuture::new(async move {
            let resolved = tokio::net::lookup_host((name, 0))
                .await
                .map_err(ResolveDnsError::new)?;
            let allowed: Vec<IpAddr> = resolved
                .map(|a| a.ip())
                .filter(|ip| !is_forbidden_ip(*ip))
                .collect();
            if allowed.is_empty() {
                return Err(ResolveDnsError::new(format!(
                    "{name} resolves only to link-local or metadata addresses, which are never contacted"
                )));
            }
            Ok(allowed)
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn id(ns: &str, sa: &str) -> PodIdentity {
        PodIdentity {
            namespace: ns.into(),
            service_account: sa.into(),
        }
    }

    fn sts_ok(name: &str) -> bool {
        (2..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
    }

    #[test]
    fn session_names_identify_the_service_account_and_fit_sts() {
        assert_eq!(
            session_name(&id("payments", "payments-api")),
            "payments.payments-api"
        );
        let long = id(&"n".repeat(63), &"s".repeat(253));
        let name = session_name(&long);
        assert!(sts_ok(&name), "{name}");
        assert_eq!(name.len(), 64);
        assert!(name.starts_with(&"n".repeat(55)));
        // Two long identities that share the first 55 characters still differ.
        let other = session_name(&id(&"n".repeat(63), &format!("{}x", "s".repeat(252))));
        assert_ne!(name, other);
        // Characters STS refuses are replaced; the minimum length holds.
        let odd = session_name(&id("a", "b:c/d"));
        assert_eq!(odd, "a.b-c-d");
        assert!(sts_ok(&session_name(&id("", ""))));
    }

    #[test]
    fn versions_are_ids_or_stages() {
        // The shape of AWS's own documentation example.
        let documented = "EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE";
        assert_eq!(classify_version(documented), Version::Id(documented));
        let uuid = "2d86cff8-4a38-4ffb-a757-3ec17b35740c";
        assert_eq!(classify_version(uuid), Version::Id(uuid));
        let hex = "0123456789abcdef0123456789abcdef";
        assert_eq!(classify_version(hex), Version::Id(hex));
        for stage in [
            "AWSCURRENT",
            "AWSPREVIOUS",
            "AWSPENDING",
            "blue",
            "v2",
            "deadbeef",
        ] {
            assert_eq!(classify_version(stage), Version::Stage(stage));
        }
        // All letters, no digit: a label, even when it is long and hex-looking.
        let letters = "abcdefabcdefabcdefabcdefabcdefab";
        assert_eq!(classify_version(letters), Version::Stage(letters));
    }

    #[test]
    fn keys_are_checked_before_any_call() {
        let key = |k: &str| RemoteKey {
            key: k.into(),
            version: None,
        };
        assert!(check_key(&key("payments/fraud-feed"), "eu-west-1").is_ok());
        assert!(check_key(&key("prod/db+creds@v=1.x_y"), "eu-west-1").is_ok());
        assert!(check_key(
            &key("arn:aws:secretsmanager:eu-west-1:123456789012:secret:payments/fraud-feed-AbCdEf"),
            "eu-west-1"
        )
        .is_ok());
        let e = check_key(
            &key("arn:aws:secretsmanager:us-east-1:123456789012:secret:x"),
            "eu-west-1",
        )
        .unwrap_err();
        assert!(e.to_string().contains("region us-east-1"), "{e}");
        let e = check_key(&key("arn:aws:s3:::bucket"), "eu-west-1").unwrap_err();
        assert!(e.to_string().contains("not a Secrets Manager ARN"), "{e}");
        let e = check_key(&key("payments/fraud feed!"), "eu-west-1").unwrap_err();
        assert!(e.to_string().contains("secret name"), "{e}");
    }

    #[test]
    fn credentials_are_dropped_before_they_expire() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            credential_ttl(Some(now + Duration::from_secs(3600)), now),
            Duration::from_secs(3300)
        );
        assert_eq!(
            credential_ttl(Some(now + Duration::from_secs(60)), now),
            Duration::ZERO
        );
        assert_eq!(
            credential_ttl(Some(now - Duration::from_secs(1)), now),
            Duration::ZERO
        );
        assert_eq!(credential_ttl(None, now), Duration::ZERO);
        // Never longer than the session asked for, whatever the clock says.
        assert_eq!(
            credential_ttl(Some(now + Duration::from_secs(86_400)), now),
            SESSION_DURATION
        );
    }

    #[test]
    fn batch_entries_match_names_full_and_partial_arns() {
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:payments/feed-AbCdEf";
        assert!(matches_entry("payments/feed", "payments/feed", arn));
        assert!(matches_entry(arn, "payments/feed", arn));
        assert!(matches_entry(
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:payments/feed",
            "payments/feed",
            arn
        ));
        assert!(!matches_entry("payments/fee", "payments/feed", arn));
        assert!(!matches_entry("", "", ""));
    }

    #[test]
    fn error_codes_map_to_denials_with_their_cause() {
        let c = |status, code: &str, msg: &str| {
            classify_code(status, Some(code).filter(|c| !c.is_empty()), Some(msg))
        };
        let denied = c(
            Some(400),
            "AccessDeniedException",
            "User: arn:aws:sts::123456789012:assumed-role/payments/payments.payments-api is not \
             authorized to perform: secretsmanager:GetSecretValue",
        );
        assert!(matches!(
            denied.error,
            ProviderError::PermissionDenied { .. }
        ));
        assert!(denied
            .error
            .to_string()
            .contains("secretsmanager:GetSecretValue"));
        assert!(!denied.stale_credentials);
        assert!(matches!(
            c(Some(403), "", "").error,
            ProviderError::PermissionDenied { .. }
        ));
        assert!(matches!(
            c(
                Some(400),
                "ResourceNotFoundException",
                "Secrets Manager can't find the specified secret."
            )
            .error,
            ProviderError::NotFound { .. }
        ));
        for (status, code, msg) in [
            (Some(400), "ThrottlingException", "Rate exceeded"),
            (Some(429), "", ""),
            (Some(400), "TooManyRequestsException", ""),
            (None, "SomethingNew", "Rate exceeded"),
        ] {
            let f = c(status, code, msg);
            assert!(
                matches!(f.error, ProviderError::Throttled { .. }),
                "{status:?} {code} {msg}: {:?}",
                f.error
            );
        }
        let stale = c(
            Some(400),
            "ExpiredTokenException",
            "The security token included in the request is expired",
        );
        assert!(stale.stale_credentials);
        assert!(matches!(
            stale.error,
            ProviderError::PermissionDenied { .. }
        ));
        let kms = c(Some(400), "DecryptionFailure", "can't decrypt");
        assert!(kms.error.to_string().contains("kms:Decrypt"));
        let oidc = c(
            Some(400),
            "InvalidIdentityToken",
            "No OpenIDConnect provider found",
        );
        assert!(oidc.error.to_string().contains("OIDC"), "{}", oidc.error);
        assert!(matches!(
            c(Some(500), "InternalServiceError", "oops").error,
            ProviderError::Backend { .. }
        ));
        // Whatever the backend echoes goes through scrub.
        let echoed = c(
            Some(400),
            "InvalidRequestException",
            "token eyJhbGciOiJSUzI1NiJ9.e30.c2ln and key ASIAEXAMPLEEXAMPLE1234",
        );
        let text = echoed.error.to_string();
        assert!(
            !text.contains("eyJhbGci") && !text.contains("ASIAEXAMPLE"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn dns_never_yields_metadata_addresses() {
        let local = GuardedDns.resolve_dns("localhost").await.unwrap();
        assert!(!local.is_empty());
        let e = GuardedDns.resolve_dns("169.254.169.254").await.unwrap_err();
        let chain = crate::provider::error_chain(&e);
        assert!(chain.contains("never contacted"), "{chain}");
    }

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

    /// A loopback stand-in for Secrets Manager answering each call with the next canned
    /// response (the last one repeats) and counting calls per X-Amz-Target.
    struct FakeSecretsManager {
        url: String,
        calls: Arc<std::sync::Mutex<Vec<String>>>,
        _task: tokio::task::JoinHandle<()>,
    }

    impl FakeSecretsManager {
        async fn start(responses: Vec<(u16, &'static str)>) -> Self {
            let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
            let served = Arc::new(AtomicUsize::new(0));
            let recorded = calls.clone();
            let app = axum::Router::new().route(
                "/",
                axum::routing::post(move |headers: http::HeaderMap| {
                    let recorded = recorded.clone();
                    let served = served.clone();
                    let responses = responses.clone();
                    async move {
                        let target = headers
                            .get("x-amz-target")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        recorded.lock().unwrap().push(target);
                        let n = served.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = responses[n.min(responses.len() - 1)];
                        (
                            http::StatusCode::from_u16(status).unwrap(),
                            [("content-type", "application/x-amz-json-1.1")],
                            body,
                        )
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            Self {
                url,
                calls,
                _task: task,
            }
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        fn client(&self, metrics: &Metrics) -> aws_sdk_secretsmanager::Client {
            let config = AwsConfig {
                region: "eu-west-1".into(),
                role: None,
                endpoint: Some(url::Url::parse(&self.url).unwrap()),
            };
            secrets_manager_client(
                https_client(),
                metrics,
                &config,
                Credentials::new("AKIDTEST", "test-secret", None, None, "test"),
            )
        }
    }

    fn key(k: &str) -> RemoteKey {
        RemoteKey {
            key: k.into(),
            version: None,
        }
    }

    const THROTTLED: (u16, &str) = (
        400,
        r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
    );

    #[tokio::test]
    async fn throttling_is_retried_with_backoff_then_reported() {
        let fake = FakeSecretsManager::start(vec![THROTTLED]).await;
        let metrics = Metrics::new();
        let client = fake.client(&metrics);
        let started = std::time::Instant::now();
        let (failed_key, failure) = read_all(&client, &[key("payments/fraud-feed")])
            .await
            .unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(failed_key, "payments/fraud-feed");
        assert!(
            matches!(failure.error, ProviderError::Throttled { .. }),
            "{:?}",
            failure.error
        );
        assert!(failure.error.to_string().contains("Rate exceeded"));
        // Bounded: exactly MAX_ATTEMPTS calls, well inside the admission deadline.
        assert_eq!(fake.calls().len(), MAX_ATTEMPTS as usize);
        assert!(elapsed < OPERATION_TIMEOUT, "{elapsed:?}");
        let text = metrics.encode();
        assert!(
            text.contains(r#"secret_injector_backend_requests_total{provider="aws",operation="get_secret_value",result="throttled"} 3"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn throttling_that_clears_within_the_retries_succeeds() {
        let fake = FakeSecretsManager::start(vec![
            THROTTLED,
            (
                200,
                r#"{"Name":"payments/fraud-feed","SecretString":"plain-value"}"#,
            ),
        ])
        .await;
        let metrics = Metrics::new();
        let values = read_all(&fake.client(&metrics), &[key("payments/fraud-feed")])
            .await
            .unwrap();
        assert_eq!(fake.calls().len(), 2);
        let RemoteSecret::Blob(v) = &values[0] else {
            panic!("a blob")
        };
        assert_eq!(v.expose(), b"plain-value");
        let text = metrics.encode();
        assert!(
            text.contains(r#"operation="get_secret_value",result="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"operation="get_secret_value",result="throttled"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn batch_answers_values_binary_and_per_secret_errors_in_one_call() {
        let fake = FakeSecretsManager::start(vec![(
            200,
            r#"{"SecretValues":[
                {"Name":"a","ARN":"arn:aws:secretsmanager:eu-west-1:123456789012:secret:a-AbCdEf","SecretString":"{\"k\":\"v\"}"},
                {"Name":"bin","ARN":"arn:aws:secretsmanager:eu-west-1:123456789012:secret:bin-XyZ123","SecretBinary":"AAEC"}],
               "Errors":[{"SecretId":"gone","ErrorCode":"ResourceNotFoundException","Message":"Secrets Manager can't find the specified secret."}]}"#,
        )])
        .await;
        let metrics = Metrics::new();
        let client = fake.client(&metrics);
        let (failed, failure) = read_all(&client, &[key("a"), key("bin"), key("gone")])
            .await
            .unwrap_err();
        assert_eq!(failed, "gone");
        assert!(matches!(failure.error, ProviderError::NotFound { .. }));
        assert_eq!(fake.calls(), ["secretsmanager.BatchGetSecretValue"]);

        let values = read_all(&client, &[key("a"), key("bin")]).await.unwrap();
        let blobs: Vec<&[u8]> = values
            .iter()
            .map(|v| match v {
                RemoteSecret::Blob(b) => b.expose(),
                RemoteSecret::Fields(_) => panic!("blobs only"),
            })
            .collect();
        assert_eq!(blobs, [&br#"{"k":"v"}"#[..], &[0u8, 1, 2][..]]);
        assert_eq!(fake.calls().len(), 2);
        assert!(fake
            .calls()
            .iter()
            .all(|c| c == "secretsmanager.BatchGetSecretValue"));
    }

    #[tokio::test]
    async fn a_refused_batch_call_falls_back_to_one_read_per_key() {
        let fake = FakeSecretsManager::start(vec![
            (
                400,
                r#"{"__type":"AccessDeniedException","message":"not authorized to perform: secretsmanager:BatchGetSecretValue"}"#,
            ),
            (200, r#"{"Name":"a","SecretString":"one"}"#),
        ])
        .await;
        let metrics = Metrics::new();
        let values = read_all(&fake.client(&metrics), &[key("a"), key("b")])
            .await
            .unwrap();
        assert_eq!(values.len(), 2);
        let calls = fake.calls();
        assert_eq!(
            calls,
            [
                "secretsmanager.BatchGetSecretValue",
                "secretsmanager.GetSecretValue",
                "secretsmanager.GetSecretValue"
            ]
        );
        let text = metrics.encode();
        assert!(
            text.contains(r#"operation="batch_get_secret_value",result="error"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn batch_chunks_at_twenty_and_versioned_keys_are_read_alone() {
        let fake =
            FakeSecretsManager::start(vec![(200, r#"{"Name":"x","SecretString":"v"}"#)]).await;
        let metrics = Metrics::new();
        let client = fake.client(&metrics);
        // 21 unversioned keys ⇒ two batch calls; nothing in the answers matches, so each key
        // falls back to GetSecretValue, whose canned answer is a valid value.
        let mut keys: Vec<RemoteKey> = (0..21).map(|i| key(&format!("s{i:02}"))).collect();
        keys.push(RemoteKey {
            key: "s00".into(),
            version: Some("AWSPREVIOUS".into()),
        });
        let values = read_all(&client, &keys).await.unwrap();
        assert_eq!(values.len(), 22);
        let calls = fake.calls();
        let batches = calls
            .iter()
            .filter(|c| *c == "secretsmanager.BatchGetSecretValue")
            .count();
        assert_eq!(batches, 2, "{calls:?}");
    }
}
