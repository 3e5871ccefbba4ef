//! SecretStore / ClusterSecretStore: CRD types (and their YAML), resolution by name, the
//! validation shared by the runtime and the validating webhook, and the status controller.
//! Per-backend knowledge (configuration, rules, probes) lives in [`crate::provider`].

pub mod crd;
pub mod status;
pub mod types;
mod validate;

use kube::core::{Selector, SelectorExt};

/// The operator's endpoint allowlist is the providers' (they enforce it).
pub use crate::provider::policy::{
    parse_list as parse_endpoint_list, EndpointPattern, EndpointPolicy, DEFAULT_AWS_ENDPOINTS,
};
pub use types::*;
pub use validate::{validate_conditions, validate_provider, validate_store, Verdict};

/// Provider types that store users name through this module.
pub use crate::provider::{FieldError, ProviderConfig, ResolvedStore, Validated};

use crate::spec::StoreRef;

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

/// Whether a ClusterSecretStore's `conditions` admit `namespace` (ESO semantics: no
/// conditions ⇒ every namespace; otherwise any matching condition admits). `labels` are the Namespace's; `None` when not known, and then the answer is
/// `None` if only a selector could decide. Pure: shared by the index (admission, refresher) and `secret-injector render`.
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
