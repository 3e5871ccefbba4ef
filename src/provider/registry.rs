//! The one place a backend is chosen. Every backend is listed once in [`BACKENDS`]; validation,
//! probing and fetching dispatch through it.

use std::sync::{Arc, LazyLock};

use futures::future::BoxFuture;

use super::aws::AwsProvider;
use super::aws::{AwsConfig, AwsProviderSpec};
use super::config::{ProviderConfig, ProviderSpec, ResolvedStore, Validated};
use super::findings::{err, FieldError, Findings};
use super::limit::ReadBudget;
use super::policy::EndpointPolicy;
use super::vault::VaultProvider;
use super::vault::{VaultConfig, VaultProviderSpec};
use super::{Backend, KeyedError, ProviderError, RemoteKey, RemoteSecret, SecretProvider};
use crate::identity::PodIdentity;
use crate::identity::TokenIssuer;
use crate::metrics::Metrics;

type ValidateFn = fn(&ProviderSpec, &EndpointPolicy) -> Option<Result<Validated, Vec<FieldError>>>;
type ProbeFn = fn(&ProviderConfig) -> BoxFuture<'_, Result<String, String>>;
type BuildFn = fn(TokenIssuer, Metrics) -> Arc<dyn SecretProvider>;

/// How a backend's types sit inside the types shared by every backend (the CRD's
/// `spec.provider` and [`ProviderConfig`]). Written here, beside the list of backends, so a
/// backend never imports the types that list it.
trait Plugged: Backend {
    fn spec(provider: &ProviderSpec) -> Option<&Self::Spec>;
    fn config(config: &ProviderConfig) -> Option<&Self::Config>;
    fn wrap(config: Self::Config) -> ProviderConfig;
}

impl Plugged for VaultProvider {
    fn spec(provider: &ProviderSpec) -> Option<&VaultProviderSpec> {
        provider.vault.as_ref()
    }
    fn config(config: &ProviderConfig) -> Option<&VaultConfig> {
        match config {
            ProviderConfig::Vault(config) => Some(config),
            _ => None,
        }
    }
    fn wrap(config: VaultConfig) -> ProviderConfig {
        ProviderConfig::Vault(config)
    }
}

impl Plugged for AwsProvider {
    fn spec(provider: &ProviderSpec) -> Option<&AwsProviderSpec> {
        provider.aws.as_ref()
    }
    fn config(config: &ProviderConfig) -> Option<&AwsConfig> {
        match config {
            ProviderConfig::Aws(config) => Some(config),
            _ => None,
        }
    }
    fn wrap(config: AwsConfig) -> ProviderConfig {
        ProviderConfig::Aws(config)
    }
}

/// Every registered backend reads through the object-safe [`SecretProvider`].
impl<B: Plugged> SecretProvider for B {
    fn fetch<'a>(
        &'a self,
        identity: &'a PodIdentity,
        store: &'a ResolvedStore,
        keys: &'a [RemoteKey],
    ) -> BoxFuture<'a, Result<Vec<RemoteSecret>, KeyedError>> {
        match B::config(&store.config) {
            Some(config) => Box::pin(Backend::fetch(self, identity, config, keys)),
            // Never through Providers, which picks the backend by the configuration.
            None => Box::pin(futures::future::ready(Err(KeyedError {
                key: None,
                error: ProviderError::InvalidRequest(format!("store is not a {} store", B::NAME)),
            }))),
        }
    }
}

/// A backend's entry points, taken from its [`Backend`] implementation.
struct Registered {
    name: &'static str,
    owns: fn(&ProviderConfig) -> bool,
    validate: ValidateFn,
    probe: ProbeFn,
    build: BuildFn,
}

impl Registered {
    fn of<B: Plugged>() -> Self {
        fn owns<B: Plugged>(config: &ProviderConfig) -> bool {
            B::config(config).is_some()
        }
        fn validate<B: Plugged>(
            spec: &ProviderSpec,
            endpoints: &EndpointPolicy,
        ) -> Option<Result<Validated, Vec<FieldError>>> {
            let spec = B::spec(spec)?;
            let mut out = Findings::default();
            let config = B::validate(spec, endpoints, &mut out);
            Some(out.finish(config).map(|(config, warnings)| Validated {
                config: B::wrap(config),
                warnings,
            }))
        }
        fn probe<B: Plugged>(config: &ProviderConfig) -> BoxFuture<'_, Result<String, String>> {
            match B::config(config) {
                Some(config) => Box::pin(B::probe(config)),
                None => Box::pin(futures::future::ready(Err(format!(
                    "not a {} store",
                    B::NAME
                )))),
            }
        }
        fn build<B: Plugged>(tokens: TokenIssuer, metrics: Metrics) -> Arc<dyn SecretProvider> {
            Arc::new(B::new(tokens, metrics))
        }
        Self {
            name: B::NAME,
            owns: owns::<B>,
            validate: validate::<B>,
            probe: probe::<B>,
            build: build::<B>,
        }
    }
}

/// Every backend, in the order error messages name them. A new backend is one line here.
static BACKENDS: LazyLock<Vec<Registered>> = LazyLock::new(|| {
    vec![
        Registered::of::<VaultProvider>(),
        Registered::of::<AwsProvider>(),
    ]
});

impl ProviderConfig {
    /// The backend's key under `spec.provider` (`vault`, `aws`).
    pub fn provider_name(&self) -> &'static str {
        BACKENDS[index_of(self)].name
    }
}

/// Which registered backend `config` belongs to.
fn index_of(config: &ProviderConfig) -> usize {
    BACKENDS
        .iter()
        .position(|b| (b.owns)(config))
        .expect("every ProviderConfig variant has a registered backend")
}

/// One instance of every backend, sharing the token issuer and the metrics, each reading
/// within the per-store budget.
#[derive(Clone)]
pub struct Providers {
    /// In [`BACKENDS`] order, each wrapped in the budget.
    built: Vec<Arc<dyn SecretProvider>>,
}

impl Providers {
    /// `reads_per_store`: backend requests in flight per store at most (see [`ReadBudget`]).
    pub fn new(tokens: TokenIssuer, metrics: Metrics, reads_per_store: usize) -> Self {
        let budget = ReadBudget::new(reads_per_store, metrics.clone());
        Self {
            built: BACKENDS
                .iter()
                .map(|b| budget.wrap((b.build)(tokens.clone(), metrics.clone())))
                .collect(),
        }
    }

    /// The provider that reads from `store` (within the store's read budget).
    pub fn for_store(&self, store: &ResolvedStore) -> Arc<dyn SecretProvider> {
        self.built[index_of(&store.config)].clone()
    }

    /// Validate a provider spec against the operator's endpoint policy: exactly one backend
    /// must be set, and all its problems are reported, each with its field path.
    pub fn validate(
        spec: &ProviderSpec,
        endpoints: &EndpointPolicy,
    ) -> Result<Validated, Vec<FieldError>> {
        let mut set: Vec<(&str, Result<Validated, Vec<FieldError>>)> = BACKENDS
            .iter()
            .filter_map(|b| (b.validate)(spec, endpoints).map(|r| (b.name, r)))
            .collect();
        match set.len() {
            1 => set.remove(0).1,
            0 => {
                let names: Vec<&str> = BACKENDS.iter().map(|b| b.name).collect();
                Err(vec![err(
                    "spec.provider",
                    format!("exactly one provider must be set: {}", names.join(" or ")),
                )])
            }
            n => {
                let names: Vec<&str> = set.iter().map(|(name, _)| *name).collect();
                let both = if n == 2 { "both " } else { "" };
                Err(vec![err(
                    "spec.provider",
                    format!(
                        "exactly one provider may be set, found {both}{}",
                        names.join(" and ")
                    ),
                )])
            }
        }
    }

    /// Whether the backend of `config` answers (see [`Backend::probe`]).
    pub async fn probe(config: &ProviderConfig) -> Result<String, String> {
        (BACKENDS[index_of(config)].probe)(config).await
    }
}
