//! `spec.provider.aws` (CRD type; mirrors External Secrets Operator's).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsProviderSpec {
    /// Only `SecretsManager` is supported.
    pub service: String,
    pub region: String,
    /// IAM role to assume with the pod's web identity. Default: the ServiceAccount's
    /// `eks.amazonaws.com/role-arn` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Override of the Secrets Manager / STS endpoint (VPC endpoints, tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}
