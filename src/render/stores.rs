//! The `--stores` checks: store objects and Namespace labels from the input, and a store
//! reference resolved against them as admission would resolve it.

use std::collections::BTreeMap;

use serde_json::Value;

use super::input::{kind_of, str_at, Object};
use super::report::{StoreCheck, StoreReport};
use super::Options;
use crate::spec::{StoreKind, StoreRef};
use crate::store::{
    self, ClusterStoreCondition, EndpointPolicy, FieldError, ProviderSpec, StoreError,
};

const GROUP: &str = "secret-injector.io";

pub(super) struct StoreEntry {
    kind: StoreKind,
    name: String,
    namespace: Option<String>,
    provider: Option<ProviderSpec>,
    conditions: Vec<ClusterStoreCondition>,
    /// The validating webhook's errors for this object.
    errors: Vec<FieldError>,
}

#[derive(Default)]
pub(super) struct Catalog {
    pub(super) stores: Option<Vec<StoreEntry>>,
    /// Namespace labels, from Namespace objects anywhere in the input.
    pub(super) namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

impl Catalog {
    /// The store as admission would resolve it: the same errors, with the same text.
    pub(super) fn check(
        &self,
        reference: &StoreRef,
        namespace: &str,
        endpoints: &EndpointPolicy,
    ) -> Result<Option<StoreCheck>, StoreError> {
        let Some(stores) = &self.stores else {
            return Ok(None);
        };
        let found = stores.iter().find(|s| {
            s.kind == reference.kind
                && s.name == reference.name
                && (reference.kind == StoreKind::ClusterSecretStore
                    || s.namespace.as_deref() == Some(namespace))
        });
        let Some(store) = found else {
            return Err(StoreError::NotFound {
                reference: reference.clone(),
                namespace: namespace.to_string(),
            });
        };
        let mut check = StoreCheck::Found;
        if reference.kind == StoreKind::ClusterSecretStore {
            match store::conditions_allow(
                namespace,
                self.namespaces.get(namespace),
                &store.conditions,
            ) {
                Some(true) => {}
                Some(false) => {
                    return Err(StoreError::NotAllowed {
                        reference: reference.clone(),
                        namespace: namespace.to_string(),
                    })
                }
                None => check = StoreCheck::Undecided,
            }
        }
        let invalid = |errors| StoreError::Invalid {
            reference: reference.clone(),
            errors,
        };
        match &store.provider {
            Some(provider) => {
                store::validate_provider(provider, endpoints).map_err(invalid)?;
            }
            None => return Err(invalid(store.errors.clone())),
        }
        Ok(Some(check))
    }
}

pub(super) fn store_entry(
    object: &Object,
    kind: StoreKind,
    options: &Options,
) -> (StoreEntry, StoreReport) {
    let name = str_at(&object.value, &["metadata", "name"])
        .unwrap_or_default()
        .to_string();
    let namespace = match kind {
        StoreKind::SecretStore => Some(
            str_at(&object.value, &["metadata", "namespace"])
                .unwrap_or(&options.default_namespace)
                .to_string(),
        ),
        StoreKind::ClusterSecretStore => None,
    };
    let kind_name = kind.to_string();
    let verdict = store::validate_store(&kind_name, &object.value, &options.endpoints);
    let spec = object.value.get("spec").cloned().unwrap_or(Value::Null);
    let provider = spec
        .get("provider")
        .and_then(|p| serde_json::from_value::<ProviderSpec>(p.clone()).ok());
    let conditions = spec
        .get("conditions")
        .and_then(|c| serde_json::from_value::<Vec<ClusterStoreCondition>>(c.clone()).ok())
        .unwrap_or_default();
    // The validating webhook's wording (`admission::validate`).
    let denial = (!verdict.errors.is_empty()).then(|| {
        let what = match &namespace {
            Some(ns) => format!("{kind_name} {ns}/{name}"),
            None => format!("{kind_name} {name}"),
        };
        let detail: Vec<String> = verdict.errors.iter().map(ToString::to_string).collect();
        format!("{what} is invalid: {}", detail.join("; "))
    });
    let report = StoreReport {
        file: object.file.clone(),
        document: object.document,
        kind: kind_name,
        name: name.clone(),
        namespace: namespace.clone(),
        denial,
        errors: verdict.errors.iter().map(ToString::to_string).collect(),
        warnings: verdict.warnings,
    };
    let entry = StoreEntry {
        kind,
        name,
        namespace,
        provider,
        conditions,
        errors: verdict.errors,
    };
    (entry, report)
}

pub(super) fn store_kind(object: &Object) -> Option<StoreKind> {
    match kind_of(&object.value) {
        (g, k) if g == GROUP && k == "SecretStore" => Some(StoreKind::SecretStore),
        (g, k) if g == GROUP && k == "ClusterSecretStore" => Some(StoreKind::ClusterSecretStore),
        _ => None,
    }
}

pub(super) fn namespace_labels(object: &Object) -> Option<(String, BTreeMap<String, String>)> {
    if kind_of(&object.value) != (String::new(), "Namespace".to_string()) {
        return None;
    }
    let name = str_at(&object.value, &["metadata", "name"])?.to_string();
    let labels = object
        .value
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    Some((name, labels))
}
