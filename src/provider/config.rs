//! What validating a store's `spec.provider` produces: a backend's runtime configuration, the
//! advice for the user, or every problem with its field path.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use url::Url;

use super::aws::{AwsConfig, AwsProviderSpec};
use super::policy::{self, EndpointPattern};
use super::vault::{VaultConfig, VaultProviderSpec};
use crate::spec::StoreRef;

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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

pub(crate) fn err(path: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// A backend's runtime configuration, one variant per backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProviderConfig {
    Vault(VaultConfig),
    Aws(AwsConfig),
}

impl ProviderConfig {
    /// The backend's key under `spec.provider` (`vault`, `aws`).
    pub fn provider_name(&self) -> &'static str {
        super::registry::name_of(self)
    }
}

/// A valid configuration plus advice for the user (admission warnings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    pub config: ProviderConfig,
    pub warnings: Vec<String>,
}

/// Problems and advice gathered while checking one backend's spec.
#[derive(Default)]
pub struct Findings {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
}

impl Findings {
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(err(path, message));
    }

    /// `raw` as a backend endpoint (see [`super::net::check_endpoint`]) that the operator's
    /// allowlist `patterns` admits; `flag` names the option that sets them.
    pub fn endpoint(
        &mut self,
        path: &str,
        raw: &str,
        patterns: &[EndpointPattern],
        flag: &str,
    ) -> Option<Url> {
        let url = super::net::check_endpoint(path, raw, &mut self.errors)?;
        match policy::check(&url, patterns, flag) {
            Ok(()) => Some(url),
            Err(m) => {
                self.error(path, m);
                None
            }
        }
    }

    /// The configuration when nothing was wrong, else every problem.
    pub fn finish(self, config: Option<ProviderConfig>) -> Result<Validated, Vec<FieldError>> {
        match config {
            Some(config) if self.errors.is_empty() => Ok(Validated {
                config,
                warnings: self.warnings,
            }),
            _ => Err(self.errors),
        }
    }
}
