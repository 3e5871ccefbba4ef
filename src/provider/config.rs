//! What validating a store's `spec.provider` produces: a backend's runtime configuration, the
//! advice for the user, or every problem with its field path.

use super::aws::{AwsConfig, AwsProviderSpec};
use super::vault::{VaultConfig, VaultProviderSpec};
use crate::spec::StoreRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Exactly one provider must be set.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultProviderSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsProviderSpec>,
}

/// A store that exists, may be used from the namespace, and whose spec is valid: what a
/// provider reads from.
#[derive(Clone, Debug)]
pub struct ResolvedStore {
    pub reference: StoreRef,
    pub uid: Option<String>,
    pub config: ProviderConfig,
}

/// A backend's runtime configuration, one variant per backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProviderConfig {
    Vault(VaultConfig),
    Aws(AwsConfig),
}

/// A valid configuration plus advice for the user (admission warnings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    pub config: ProviderConfig,
    pub warnings: Vec<String>,
}
