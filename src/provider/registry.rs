//! The one place a backend is chosen. Every backend is listed once in [`BACKENDS`]; validation,
//! probing and fetching dispatch through it.

use std::sync::{Arc, LazyLock};

use futures::future::BoxFuture;

use super::aws::AwsProvider;
use super::config::{err, FieldError, ProviderConfig, Validated};
use super::vault::VaultProvider;
use super::SecretProvider;
use crate::identity::TokenIssuer;
use crate::metrics::Metrics;
use crate::store::{EndpointPolicy, ProviderSpec, ResolvedStore};

type ValidateFn = fn(&ProviderSpec, &EndpointPolicy) -> Option<Result<Validated, Vec<FieldError>>>;
type ProbeFn = fn(&ProviderConfig) -> BoxFuture<'_, Result<String, String>>;
type BuildFn = fn(TokenIssuer, Metrics) -> Arc<dyn SecretProvider>;

/// A backend's entry points, taken from its [`SecretProvider`] implementation.
struct Backend {
    name: &'static str,
    validate: ValidateFn,
    probe: ProbeFn,
    build: BuildFn,
}

impl Backend {
    fn of<P: SecretProvider + 'static>() -> Self {
        fn build<P: SecretProvider + 'static>(
            tokens: TokenIssuer,
            metrics: Metrics,
        ) -> Arc<dyn SecretProvider> {
            Arc::new(P::new(tokens, metrics))
        }
        Self {
            name: P::name(),
            validate: P::validate,
            probe: P::probe,
            build: build::<P>,
        }
    }
}

/// Every backend, in the order error messages name them. A new backend is one line here.
static BACKENDS: LazyLock<Vec<Backend>> =
    LazyLock::new(|| vec![Backend::of::<VaultProvider>(), Backend::of::<AwsProvider>()]);

fn backend(name: &str) -> &'static Backend {
    BACKENDS
        .iter()
        .find(|b| b.name == name)
        .expect("every ProviderConfig variant has a registered backend")
}

/// One instance of every backend, sharing the token issuer and the metrics.
#[derive(Clone)]
pub struct Providers {
    built: Vec<(&'static str, Arc<dyn SecretProvider>)>,
}

impl Providers {
    pub fn new(tokens: TokenIssuer, metrics: Metrics) -> Self {
        Self {
            built: BACKENDS
                .iter()
                .map(|b| (b.name, (b.build)(tokens.clone(), metrics.clone())))
                .collect(),
        }
    }

    /// The provider that reads from `store`.
    pub fn for_store(&self, store: &ResolvedStore) -> Arc<dyn SecretProvider> {
        let name = store.config.provider_name();
        self.built
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.clone())
            .expect("every ProviderConfig variant has a registered backend")
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

    /// Whether the backend of `config` answers (see [`SecretProvider::probe`]).
    pub async fn probe(config: &ProviderConfig) -> Result<String, String> {
        (backend(config.provider_name()).probe)(config).await
    }
}
