//! SecretStore / ClusterSecretStore: CRD types (and their YAML), resolution by name, the
//! validation shared by the runtime and the validating webhook, and the status controller.
//! Per-backend knowledge (configuration, rules, probes) lives in [`crate::provider`].

pub mod crd;
pub mod status;
pub mod types;
mod validate;

use k8s_openapi::api::core::v1::Namespace;
use kube::core::{Selector, SelectorExt};
use kube::{Api, Client};

/// The operator's endpoint allowlist is the providers' (they enforce it).
pub use crate::provider::policy::{
    parse_list as parse_endpoint_list, EndpointPattern, EndpointPolicy, DEFAULT_AWS_ENDPOINTS,
};
pub use types::*;
pub use validate::{validate_conditions, validate_provider, validate_store, Verdict};

/// Provider types that store users name through this module.
pub use crate::provider::{FieldError, ProviderConfig, ResolvedStore, Validated};

use crate::spec::{StoreKind, StoreRef};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{reference} not found{}", match reference.kind {
        crate::spec::StoreKind::SecretStore => format!(" in namespace {namespace}"),
        crate::spec::StoreKind::ClusterSecretStore => String::new(),
    })]
    NotFound {
        reference: StoreRef,
        namespace: String,
    },
    #[error(
        "{reference} cannot be read: the secret-injector.io CRDs are not installed in this cluster \
         (kubectl apply -f deploy/base/crds/)"
    )]
    CrdMissing { reference: StoreRef },
    #[error("{reference} does not allow namespace {namespace} (spec.conditions)")]
    NotAllowed {
        reference: StoreRef,
        namespace: String,
    },
    #[error("{reference} is invalid: {}", join(errors))]
    Invalid {
        reference: StoreRef,
        errors: Vec<FieldError>,
    },
    #[error("reading {reference} from the Kubernetes API failed: {}", crate::k8s::api_error_message(.source))]
    Api {
        reference: StoreRef,
        #[source]
        source: Box<kube::Error>,
    },
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

pub async fn resolve(
    client: &Client,
    namespace: &str,
    reference: &StoreRef,
    endpoints: &EndpointPolicy,
) -> Result<ResolvedStore, StoreError> {
    let api_err = |source: kube::Error| match &source {
        // A 404 without an object name is the API server not knowing the resource at all.
        kube::Error::Api(status)
            if status.code == 404
                && status.details.as_ref().is_none_or(|d| d.name.is_empty())
                && status
                    .message
                    .contains("could not find the requested resource") =>
        {
            StoreError::CrdMissing {
                reference: reference.clone(),
            }
        }
        kube::Error::Api(status) if status.code == 404 => StoreError::NotFound {
            reference: reference.clone(),
            namespace: namespace.to_string(),
        },
        _ => StoreError::Api {
            reference: reference.clone(),
            source: Box::new(source),
        },
    };
    let (provider, uid) = match reference.kind {
        StoreKind::SecretStore => {
            let store = Api::<SecretStore>::namespaced(client.clone(), namespace)
                .get(&reference.name)
                .await
                .map_err(api_err)?;
            (store.spec.provider, store.metadata.uid)
        }
        StoreKind::ClusterSecretStore => {
            let store = Api::<ClusterSecretStore>::all(client.clone())
                .get(&reference.name)
                .await
                .map_err(api_err)?;
            if !namespace_allowed(client, namespace, &store.spec.conditions)
                .await
                .map_err(|source| StoreError::Api {
                    reference: reference.clone(),
                    source: Box::new(source),
                })?
            {
                return Err(StoreError::NotAllowed {
                    reference: reference.clone(),
                    namespace: namespace.to_string(),
                });
            }
            (store.spec.provider, store.metadata.uid)
        }
    };
    let validated =
        validate_provider(&provider, endpoints).map_err(|errors| StoreError::Invalid {
            reference: reference.clone(),
            errors,
        })?;
    Ok(ResolvedStore {
        reference: reference.clone(),
        uid,
        config: validated.config,
    })
}

/// ESO semantics: no conditions ⇒ every namespace; otherwise any matching condition admits.
/// The Namespace is read only when a condition has a selector.
async fn namespace_allowed(
    client: &Client,
    namespace: &str,
    conditions: &[ClusterStoreCondition],
) -> Result<bool, kube::Error> {
    if let Some(decided) = conditions_allow(namespace, None, conditions) {
        return Ok(decided);
    }
    let ns = Api::<Namespace>::all(client.clone()).get(namespace).await?;
    let labels = ns.metadata.labels.unwrap_or_default();
    Ok(conditions_allow(namespace, Some(&labels), conditions).unwrap_or(false))
}

/// Whether a ClusterSecretStore's `conditions` admit `namespace` (ESO semantics, see
/// [`resolve`]). `labels` are the Namespace's; `None` when not known, and then the answer is
/// `None` if only a selector could decide. Pure: shared with `secret-injector render`.
pub fn conditions_allow(
    namespace: &str,
    labels: Option<&std::collections::BTreeMap<String, String>>,
    conditions: &[ClusterStoreCondition],
) -> Option<bool> {
    if conditions.is_empty() {
        return Some(true);
    }
    if conditions
        .iter()
        .any(|c| c.namespaces.iter().any(|n| n == namespace))
    {
        return Some(true);
    }
    let selectors: Vec<_> = conditions
        .iter()
        .filter_map(|c| c.namespace_selector.clone())
        .collect();
    if selectors.is_empty() {
        return Some(false);
    }
    let labels = labels?;
    Some(selectors.into_iter().any(|s| match Selector::try_from(s) {
        Ok(selector) => selector.matches(labels),
        // An unparsable selector admits nobody.
        Err(_) => false,
    }))
}
