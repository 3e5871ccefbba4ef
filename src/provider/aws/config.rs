//! An AWS store's runtime configuration and the rules that turn `spec.provider.aws` into it.

use url::Url;

use super::spec::AwsProviderSpec;
use crate::provider::findings::Findings;
use crate::provider::policy::EndpointPolicy;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AwsConfig {
    pub region: String,
    pub role: Option<String>,
    pub endpoint: Option<Url>,
}

pub(super) fn validate(
    spec: &AwsProviderSpec,
    endpoints: &EndpointPolicy,
    out: &mut Findings,
) -> Option<AwsConfig> {
    if spec.service != "SecretsManager" {
        out.error(
            "spec.provider.aws.service",
            format!("only SecretsManager is supported, got {:?}", spec.service),
        );
    }
    if !is_aws_region(&spec.region) {
        out.error(
            "spec.provider.aws.region",
            format!("{:?} is not an AWS region (e.g. eu-west-1)", spec.region),
        );
    }
    if let Some(role) = &spec.role {
        if !is_iam_role_arn(role) {
            out.error(
                "spec.provider.aws.role",
                format!("{role:?} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"),
            );
        }
    }
    let endpoint = spec.endpoint.as_deref().and_then(|e| {
        out.endpoint(
            "spec.provider.aws.endpoint",
            e,
            &endpoints.aws,
            "--allowed-aws-endpoints",
        )
    });
    if !out.errors.is_empty() {
        return None;
    }
    Some(AwsConfig {
        region: spec.region.clone(),
        role: spec.role.clone(),
        endpoint,
    })
}

fn is_aws_region(r: &str) -> bool {
    // e.g. us-east-1, eu-central-2, us-gov-west-1, ap-southeast-4, cn-north-1
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

pub fn is_iam_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && matches!(parts[1], "aws" | "aws-cn" | "aws-us-gov")
        && parts[2] == "iam"
        && parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5].strip_prefix("role/").is_some_and(|name| {
            !name.is_empty()
                && name.len() <= 512
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use crate::provider::aws::AwsProviderSpec;
    use crate::provider::policy::EndpointPolicy;
    use crate::provider::ProviderSpec;
    use crate::provider::Providers;

    fn first_error(spec: &ProviderSpec) -> crate::provider::findings::FieldError {
        Providers::validate(spec, &open()).unwrap_err().remove(0)
    }

    fn open() -> EndpointPolicy {
        EndpointPolicy::with_vault(&["https://*.svc:*", "http://127.0.0.1:*"])
    }

    #[test]
    fn aws_rules() {
        let aws = |region: &str, role: Option<&str>| ProviderSpec {
            vault: None,
            aws: Some(AwsProviderSpec {
                service: "SecretsManager".into(),
                region: region.into(),
                role: role.map(Into::into),
                endpoint: None,
            }),
        };
        let payments = aws("eu-west-1", Some("arn:aws:iam::123456789012:role/payments"));
        assert!(Providers::validate(&payments, &open()).is_ok());
        assert!(Providers::validate(&aws("us-gov-west-1", None), &open()).is_ok());
        assert_eq!(
            first_error(&aws("europe", None)).path,
            "spec.provider.aws.region"
        );
        assert_eq!(
            first_error(&aws("eu-west-1", Some("arn:aws:iam::123:role/x"))).path,
            "spec.provider.aws.role"
        );
    }
}
