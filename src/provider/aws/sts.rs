//! STS: the pod's ServiceAccount token (audience sts.amazonaws.com) exchanged for temporary
//! credentials with `AssumeRoleWithWebIdentity`, cached per identity until shortly before
//! they expire, single-flight.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_secretsmanager::config::Credentials;
use tracing::instrument::WithSubscriber;
use tracing::subscriber::NoSubscriber;

use super::errors::classify_sdk_error;
use super::transport::{secrets_manager_client, sts_client};
use super::{AwsConfig, AwsProvider, STS_AUDIENCE};
use crate::identity::PodIdentity;
use crate::metrics::Stage;
use crate::provider::ProviderError;

/// Requested session length: one hour is allowed by every role (MaxSessionDuration ≥ 1 h).
const SESSION_DURATION: Duration = Duration::from_secs(3600);
/// Credentials are dropped this long before they expire, so a read never races the expiry.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5 * 60);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct SessionKey {
    identity: PodIdentity,
    role: String,
    region: String,
    endpoint: Option<String>,
}

pub(super) struct Session {
    pub client: aws_sdk_secretsmanager::Client,
    ttl: Duration,
}

impl crate::provider::Expiring for Session {
    fn ttl(&self) -> Duration {
        self.ttl
    }
}

impl AwsProvider {
    pub(super) async fn session(
        &self,
        identity: &PodIdentity,
        config: &AwsConfig,
        role: &str,
    ) -> Result<(Arc<Session>, bool), ProviderError> {
        let key = session_key(identity, config, role);
        crate::provider::single_flight(
            &self.sessions,
            key,
            self.metrics
                .timed(Stage::Login, self.assume_role(identity, config, role)),
        )
        .await
    }

    /// TokenRequest (audience sts.amazonaws.com) → AssumeRoleWithWebIdentity → a Secrets
    /// Manager client holding the temporary credentials.
    async fn assume_role(
        &self,
        identity: &PodIdentity,
        config: &AwsConfig,
        role: &str,
    ) -> Result<Session, ProviderError> {
        let jwt = self
            .tokens
            .issue(identity, &[STS_AUDIENCE.to_string()])
            .await?;
        let sts = sts_client(self.http.clone(), &self.metrics, config);
        let result = sts
            .assume_role_with_web_identity()
            .role_arn(role)
            .role_session_name(session_name(identity))
            .web_identity_token(jwt.expose())
            .duration_seconds(SESSION_DURATION.as_secs() as i32)
            .send()
            .with_subscriber(NoSubscriber::default())
            .await;
        drop(jwt);
        let output = result.map_err(|e| {
            let failure = classify_sdk_error(&e);
            match failure.error {
                ProviderError::PermissionDenied { detail }
                | ProviderError::NotFound { detail }
                | ProviderError::Backend { detail } => ProviderError::LoginRefused {
                    path: "STS AssumeRoleWithWebIdentity".into(),
                    role: role.to_string(),
                    detail: format!(
                        "{detail}; the role's trust policy must allow the cluster's OIDC provider \
                         with sub system:serviceaccount:{}:{} and aud {STS_AUDIENCE}",
                        identity.namespace, identity.service_account
                    ),
                },
                other => other,
            }
        })?;
        let Some(creds) = output.credentials else {
            return Err(ProviderError::Backend {
                detail: "STS AssumeRoleWithWebIdentity returned no credentials".into(),
            });
        };
        let expires = SystemTime::try_from(creds.expiration).ok();
        let ttl = credential_ttl(expires, SystemTime::now());
        let credentials = Credentials::new(
            creds.access_key_id,
            creds.secret_access_key,
            Some(creds.session_token),
            expires,
            "secret-injector-irsa",
        );
        Ok(Session {
            client: secrets_manager_client(self.http.clone(), &self.metrics, config, credentials),
            ttl,
        })
    }
}

pub(super) fn session_key(identity: &PodIdentity, config: &AwsConfig, role: &str) -> SessionKey {
    SessionKey {
        identity: identity.clone(),
        role: role.to_string(),
        region: config.region.clone(),
        endpoint: config.endpoint.as_ref().map(ToString::to_string),
    }
}

/// How long credentials expiring at `expires` may be used from `now`.
fn credential_ttl(expires: Option<SystemTime>, now: SystemTime) -> Duration {
    let Some(expires) = expires else {
        return Duration::ZERO;
    };
    expires
        .duration_since(now)
        .unwrap_or_default()
        .saturating_sub(EXPIRY_MARGIN)
        .min(SESSION_DURATION)
}

/// A RoleSessionName naming the namespace and ServiceAccount (`<namespace>.<sa>`), within
/// STS's `[\w+=,.@-]{2,64}`: other characters become `-`; a name too long is cut and given a
/// digest of the full identity so it stays unique.
pub fn session_name(identity: &PodIdentity) -> String {
    use sha2::{Digest, Sha256};
    let full = format!("{}.{}", identity.namespace, identity.service_account);
    let mut name: String = full
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.len() > 64 {
        let digest = Sha256::digest(full.as_bytes());
        let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        name.truncate(55);
        name.push('.');
        name.push_str(&hex);
    }
    while name.len() < 2 {
        name.push('-');
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ns: &str, sa: &str) -> PodIdentity {
        PodIdentity {
            namespace: ns.into(),
            service_account: sa.into(),
        }
    }

    fn sts_ok(name: &str) -> bool {
        (2..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
    }

    #[test]
    fn session_names_identify_the_service_account_and_fit_sts() {
        assert_eq!(
            session_name(&id("payments", "payments-api")),
            "payments.payments-api"
        );
        let long = id(&"n".repeat(63), &"s".repeat(253));
        let name = session_name(&long);
        assert!(sts_ok(&name), "{name}");
        assert_eq!(name.len(), 64);
        assert!(name.starts_with(&"n".repeat(55)));
        // Two long identities that share the first 55 characters still differ.
        let other = session_name(&id(&"n".repeat(63), &format!("{}x", "s".repeat(252))));
        assert_ne!(name, other);
        // Characters STS refuses are replaced; the minimum length holds.
        let odd = session_name(&id("a", "b:c/d"));
        assert_eq!(odd, "a.b-c-d");
        assert!(sts_ok(&session_name(&id("", ""))));
    }

    #[test]
    fn credentials_are_dropped_before_they_expire() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            credential_ttl(Some(now + Duration::from_secs(3600)), now),
            Duration::from_secs(3300)
        );
        assert_eq!(
            credential_ttl(Some(now + Duration::from_secs(60)), now),
            Duration::ZERO
        );
        assert_eq!(
            credential_ttl(Some(now - Duration::from_secs(1)), now),
            Duration::ZERO
        );
        assert_eq!(credential_ttl(None, now), Duration::ZERO);
        // Never longer than the session asked for, whatever the clock says.
        assert_eq!(
            credential_ttl(Some(now + Duration::from_secs(86_400)), now),
            SESSION_DURATION
        );
    }
}
