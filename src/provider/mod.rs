//! Backends. A [`Backend`] owns everything the crate knows about it: how its section of
//! `spec.provider` is checked and turned into its configuration (`validate`), how it reads
//! remote keys as a pod's identity (`fetch`), and how the status controller checks it answers
//! (`probe`). [`Providers`] is the one place a backend is chosen; the provider-independent
//! selection (`#property`, whole value, `extract`) lives in `select` so every backend behaves
//! the same way.
//!
//! ```text
//! mod.rs       the Backend and SecretProvider traits, the shared types and errors
//! registry.rs  Providers: the list of backends, validate/probe/fetch dispatch
//! limit.rs     ReadBudget: backend requests in flight per store, at most N
//! config.rs    ProviderSpec (CRD), ProviderConfig (one variant per backend), ResolvedStore,
//!              Validated, FieldError
//! net.rs       the forbidden-address rule, the endpoint check, the filtering DNS resolver
//! policy.rs    the operator's endpoint allowlist
//! select.rs    #property / whole value / extract
//! vault/       Vault and OpenBao
//! aws/         AWS Secrets Manager
//! ```

pub mod aws;
pub mod config;
pub mod findings;
pub mod limit;
pub mod net;
pub mod policy;
mod registry;
mod select;
pub mod vault;

use std::collections::BTreeMap;

use futures::future::BoxFuture;

pub use config::{ProviderConfig, ProviderSpec, ResolvedStore, Validated};
pub use findings::{FieldError, Findings};
pub use registry::Providers;
pub(crate) use select::json_field;
pub use select::{extract, select, SelectError};

use crate::identity::{IdentityError, PodIdentity, TokenIssuer};
use crate::metrics::Metrics;
use crate::redact::SecretBytes;
use crate::spec::RemoteRef;
use policy::EndpointPolicy;

/// A cached login or credential set that knows how long it may be reused.
pub(crate) trait Expiring {
    fn ttl(&self) -> std::time::Duration;
}

/// moka per-entry expiry for [`Expiring`] values: each entry lives exactly its own TTL.
pub(crate) struct TtlExpiry;

impl<K, V: Expiring> moka::Expiry<K, std::sync::Arc<V>> for TtlExpiry {
    fn expire_after_create(
        &self,
        _: &K,
        value: &std::sync::Arc<V>,
        _: std::time::Instant,
    ) -> Option<std::time::Duration> {
        Some(value.ttl())
    }
}

/// A cache of logins or credential sets, each entry living its own TTL.
pub(crate) fn session_cache<K, V>() -> moka::future::Cache<K, std::sync::Arc<V>>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Expiring + Send + Sync + 'static,
{
    moka::future::Cache::builder()
        .max_capacity(10_000)
        .expire_after(TtlExpiry)
        .build()
}

/// The cached session for `key`, made by `make` once however many callers wait for it; and
/// whether this call made it (a fresh session is not worth retrying with).
pub(crate) async fn single_flight<K, V>(
    cache: &moka::future::Cache<K, std::sync::Arc<V>>,
    key: K,
    make: impl std::future::Future<Output = Result<V, ProviderError>>,
) -> Result<(std::sync::Arc<V>, bool), ProviderError>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let mut fresh = false;
    let value = cache
        .try_get_with(key, async {
            fresh = true;
            make.await.map(std::sync::Arc::new)
        })
        .await
        .map_err(|e: std::sync::Arc<ProviderError>| (*e).clone())?;
    Ok((value, fresh))
}

/// An error with its sources, `a: b: c`. Callers scrub it before showing it.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// What one remote key holds.
#[derive(Clone, Debug)]
pub enum RemoteSecret {
    /// A map of fields (Vault KV data).
    Fields(BTreeMap<String, SecretBytes>),
    /// A single value (Secrets Manager SecretString or SecretBinary); JSON is parsed on demand.
    Blob(SecretBytes),
}

/// A key to read, with an optional version.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteKey {
    pub key: String,
    pub version: Option<String>,
}

impl From<&RemoteRef> for RemoteKey {
    fn from(r: &RemoteRef) -> Self {
        Self {
            key: r.key.clone(),
            version: r.version.clone(),
        }
    }
}

/// Why a backend call failed. Messages never carry a value or a credential: anything that
/// came from the backend went through [`crate::redact::scrub`].
#[derive(Debug, thiserror::Error, Clone)]
pub enum ProviderError {
    #[error(transparent)]
    Identity(std::sync::Arc<IdentityError>),
    #[error("login at {path} as role {role:?} was refused ({detail})")]
    LoginRefused {
        path: String,
        role: String,
        detail: String,
    },
    #[error("permission denied ({detail})")]
    PermissionDenied { detail: String },
    #[error("path not found ({detail})")]
    NotFound { detail: String },
    #[error("the store says KV {configured} but mount {mount:?} is KV {actual}; fix spec.provider.vault.version")]
    KvVersionMismatch {
        mount: String,
        configured: &'static str,
        actual: String,
    },
    #[error("{0}")]
    InvalidRequest(String),
    #[error("backend error ({detail})")]
    Backend { detail: String },
    #[error("backend unreachable ({detail})")]
    Unreachable { detail: String },
    /// The backend kept refusing for rate reasons after the bounded retries.
    #[error("throttled by the backend ({detail}); retried with backoff and gave up")]
    Throttled { detail: String },
}

impl From<IdentityError> for ProviderError {
    fn from(e: IdentityError) -> Self {
        ProviderError::Identity(std::sync::Arc::new(e))
    }
}

/// A failure tied to the key it happened on (None: before any key, e.g. login).
#[derive(Debug, Clone)]
pub struct KeyedError {
    pub key: Option<String>,
    pub error: ProviderError,
}

/// Reads remote keys as a pod's identity: what the fetch pipeline holds, chosen by
/// [`Providers::for_store`]. Every [`Backend`] is one.
pub trait SecretProvider: Send + Sync {
    /// Read every key as `identity`. All-or-nothing: the first failure is returned with
    /// the key it concerns. A fetch of `n` keys has at most `n` requests to the backend in
    /// flight at any moment (the per-store budget in `limit.rs` counts on it).
    fn fetch<'a>(
        &'a self,
        identity: &'a PodIdentity,
        store: &'a ResolvedStore,
        keys: &'a [RemoteKey],
    ) -> BoxFuture<'a, Result<Vec<RemoteSecret>, KeyedError>>;
}

/// Everything the crate knows about one backend. Only `fetch` needs the instance
/// [`Providers`] holds; validation and probes need no state, so the validating webhook and
/// the status controller use them without one. A new backend implements this trait, adds its
/// section to `ProviderSpec` and its variant to [`ProviderConfig`], and one line to the
/// registry.
pub trait Backend: Send + Sync + Sized + 'static {
    /// Its key under `spec.provider`.
    const NAME: &'static str;
    /// Its section of `spec.provider` (a CRD type).
    type Spec;
    /// Its runtime configuration.
    type Config: Send + Sync;

    /// The provider, issuing pods' tokens with `tokens`.
    fn new(tokens: TokenIssuer, metrics: Metrics) -> Self;

    /// The section checked against the operator's endpoint policy and turned into a
    /// configuration; every problem (with its field path) and every advice go to `out`.
    fn validate(
        spec: &Self::Spec,
        endpoints: &EndpointPolicy,
        out: &mut Findings,
    ) -> Option<Self::Config>;

    /// Read every key as `identity` (see [`SecretProvider::fetch`]).
    fn fetch(
        &self,
        identity: &PodIdentity,
        config: &Self::Config,
        keys: &[RemoteKey],
    ) -> impl std::future::Future<Output = Result<Vec<RemoteSecret>, KeyedError>> + Send;

    /// Whether the backend answers, with no identity: a detail for the Ready condition, or
    /// why not. Called only with a configuration `validate` produced (allowlist passed).
    fn probe(
        config: &Self::Config,
    ) -> impl std::future::Future<Output = Result<String, String>> + Send;
}
