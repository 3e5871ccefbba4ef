//! The one place a backend is chosen. Every backend is listed once in [`BACKENDS`]; validation,
//! probing and fetching dispatch through it.

use std::sync::{Arc, LazyLock};

use futures::future::BoxFuture;

use super::aws::AwsProvider;
use super::config::{err, FieldError, Findings, ProviderConfig, Validated};
use super::config::{ProviderSpec, ResolvedStore};
use super::policy::EndpointPolicy;
use super::vault::VaultProvider;
use super::{Backend, SecretProvider};
use crate::identity::TokenIssuer;
use crate::metrics::Metrics;

type ValidateFn = fn(&ProviderSpec, &EndpointPolicy) -> Option<Result<Validated, Vec<FieldError>>>;
type ProbeFn = fn(&ProviderConfig) -> BoxFuture<'_, Result<String, String>>;
type BuildFn = fn(TokenIssuer, Metrics) -> Arc<dyn SecretProvider>;

/// A backend's entry points, taken from its [`Backend`] implementation.
struct Registered {
    name: &'static str,
    owns: fn(&ProviderConfig) -> bool,
    validate: ValidateFn,
    probe: ProbeFn,
    build: BuildFn,
}

impl Registered {
    fn of<B: Backend>() -> Self {
        fn owns<B: Backend>(config: &ProviderConfig) -> bool {
            B::config(config).is_some()
        }
        fn validate<B: Backend>(
            spec: &ProviderSpec,
            endpoints: &EndpointPolicy,
        ) -> Option<Result<Validated, Vec<FieldError>>> {
            let spec = B::spec(spec)?;
            let mut out = Findings::default();
            let config = B::validate(spec, endpoints, &mut out).map(B::wrap);
            Some(out.finish(config))
        }
        fn probe<B: Backend>(config: &ProviderConfig) -> BoxFuture<'_, Result<String, String>> {
            match B::config(config) {
                Some(config) => Box::pin(B::probe(config)),
                None => Box::pin(futures::future::ready(Err(format!(
                    "not a {} store",
                    B::NAME
                )))),
            }
        }
        fn build<B: Backend>(tokens: TokenIssuer, metrics: Metrics) -> Arc<dyn SecretProvider> {
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

/// The name of the backend `config` belongs to.
pub(super) fn name_of(config: &ProviderConfig) -> &'static str {
    BACKENDS[index_of(config)].name
}

/// Which registered backend `config` belongs to.
fn index_of(config: &ProviderConfig) -> usize {
    BACKENDS
        .iter()
        .position(|b| (b.owns)(config))
        .expect("every ProviderConfig variant has a registered backend")
}

/// One instance of every backend, sharing the token issuer and the metrics.
#[derive(Clone)]
pub struct Providers {
    /// In [`BACKENDS`] order.
    built: Vec<Arc<dyn SecretProvider>>,
}

impl Providers {
    pub fn new(tokens: TokenIssuer, metrics: Metrics) -> Self {
        Self {
            built: BACKENDS
                .iter()
                .map(|b| (b.build)(tokens.clone(), metrics.clone()))
                .collect(),
        }
    }

    /// The provider that reads from `store`.
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
