//! AWS errors → message-safe [`ProviderError`]s, with whether fresh credentials might help.

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

use super::transport::{OPERATION_TIMEOUT, THROTTLING_CODES};
use crate::provider::ProviderError;
use crate::redact::scrub;

/// Codes meaning the temporary credentials themselves were rejected: worth one fresh
/// AssumeRoleWithWebIdentity before giving up.
const STALE_CREDENTIAL_CODES: &[&str] = &[
    "ExpiredTokenException",
    "ExpiredToken",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
];

/// A failed read, with whether fresh credentials might fix it.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub error: ProviderError,
    pub stale_credentials: bool,
}

/// Map any SDK error to a message-safe failure.
pub(super) fn classify_sdk_error<E>(
    e: &SdkError<E, aws_sdk_secretsmanager::config::http::HttpResponse>,
) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::TimeoutError(_) => Failure {
            error: ProviderError::Unreachable {
                detail: format!(
                    "no answer within {:.1}s (retries included)",
                    OPERATION_TIMEOUT.as_secs_f32()
                ),
            },
            stale_credentials: false,
        },
        SdkError::DispatchFailure(d) => Failure {
            error: ProviderError::Unreachable {
                detail: scrub(&crate::provider::error_chain(e)).replace(
                    "dispatch failure",
                    if d.is_timeout() {
                        "connection timed out"
                    } else {
                        "connection failed"
                    },
                ),
            },
            stale_credentials: false,
        },
        SdkError::ConstructionFailure(_) => Failure {
            error: ProviderError::InvalidRequest(format!(
                "the AWS request could not be built: {}",
                scrub(&crate::provider::error_chain(e))
            )),
            stale_credentials: false,
        },
        _ => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            classify_code(status, e.code(), e.message())
        }
    }
}

/// Map an AWS error code (and HTTP status, when known) to a [`ProviderError`]. The message
/// goes through [`scrub`]; AWS messages name ARNs and actions, never secret values.
pub(super) fn classify_code(
    status: Option<u16>,
    code: Option<&str>,
    message: Option<&str>,
) -> Failure {
    let code = code.unwrap_or_default();
    let message = message.map(scrub).unwrap_or_default();
    let detail = match (code.is_empty(), message.is_empty()) {
        (false, false) => format!("{code}: {message}"),
        (false, true) => code.to_string(),
        (true, false) => message.clone(),
        (true, true) => match status {
            Some(s) => format!("HTTP {s}"),
            None => "no error code".into(),
        },
    };
    let stale_credentials = STALE_CREDENTIAL_CODES.contains(&code);
    let error = if THROTTLING_CODES.contains(&code)
        || status == Some(429)
        || message.contains("Rate exceeded")
    {
        ProviderError::Throttled {
            detail: format!("{detail}; retry later or raise the Secrets Manager / STS quota"),
        }
    } else if matches!(code, "AccessDeniedException" | "AccessDenied") || stale_credentials {
        ProviderError::PermissionDenied { detail }
    } else if code == "DecryptionFailure" {
        ProviderError::PermissionDenied {
            detail: format!("{detail}; the role needs kms:Decrypt on the secret's KMS key"),
        }
    } else if code == "ResourceNotFoundException" {
        ProviderError::NotFound { detail }
    } else if matches!(code, "InvalidIdentityToken" | "IDPRejectedClaim") {
        ProviderError::PermissionDenied {
            detail: format!(
                "{detail}; is the cluster's OIDC issuer registered as an IAM identity provider?"
            ),
        }
    } else if code == "IDPCommunicationError" {
        ProviderError::Unreachable { detail }
    } else if code.is_empty() && status == Some(403) {
        ProviderError::PermissionDenied { detail }
    } else if code.is_empty() && status == Some(404) {
        ProviderError::NotFound { detail }
    } else {
        ProviderError::Backend { detail }
    };
    Failure {
        error,
        stale_credentials,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_denials_with_their_cause() {
        let c = |status, code: &str, msg: &str| {
            classify_code(status, Some(code).filter(|c| !c.is_empty()), Some(msg))
        };
        let denied = c(
            Some(400),
            "AccessDeniedException",
            "User: arn:aws:sts::123456789012:assumed-role/payments/payments.payments-api is not \
             authorized to perform: secretsmanager:GetSecretValue",
        );
        assert!(matches!(
            denied.error,
            ProviderError::PermissionDenied { .. }
        ));
        assert!(denied
            .error
            .to_string()
            .contains("secretsmanager:GetSecretValue"));
        assert!(!denied.stale_credentials);
        assert!(matches!(
            c(Some(403), "", "").error,
            ProviderError::PermissionDenied { .. }
        ));
        assert!(matches!(
            c(
                Some(400),
                "ResourceNotFoundException",
                "Secrets Manager can't find the specified secret."
            )
            .error,
            ProviderError::NotFound { .. }
        ));
        for (status, code, msg) in [
            (Some(400), "ThrottlingException", "Rate exceeded"),
            (Some(429), "", ""),
            (Some(400), "TooManyRequestsException", ""),
            (None, "SomethingNew", "Rate exceeded"),
        ] {
            let f = c(status, code, msg);
            assert!(
                matches!(f.error, ProviderError::Throttled { .. }),
                "{status:?} {code} {msg}: {:?}",
                f.error
            );
        }
        let stale = c(
            Some(400),
            "ExpiredTokenException",
            "The security token included in the request is expired",
        );
        assert!(stale.stale_credentials);
        assert!(matches!(
            stale.error,
            ProviderError::PermissionDenied { .. }
        ));
        let kms = c(Some(400), "DecryptionFailure", "can't decrypt");
        assert!(kms.error.to_string().contains("kms:Decrypt"));
        let oidc = c(
            Some(400),
            "InvalidIdentityToken",
            "No OpenIDConnect provider found",
        );
        assert!(oidc.error.to_string().contains("OIDC"), "{}", oidc.error);
        assert!(matches!(
            c(Some(500), "InternalServiceError", "oops").error,
            ProviderError::Backend { .. }
        ));
        // Whatever the backend echoes goes through scrub.
        let echoed = c(
            Some(400),
            "InvalidRequestException",
            "token eyJhbGciOiJSUzI1NiJ9.e30.c2ln and key ASIAEXAMPLEEXAMPLE1234",
        );
        let text = echoed.error.to_string();
        assert!(
            !text.contains("eyJhbGci") && !text.contains("ASIAEXAMPLE"),
            "{text}"
        );
    }
}
