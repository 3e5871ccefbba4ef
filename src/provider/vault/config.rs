//! A Vault store's runtime configuration and the rules that turn `spec.provider.vault` into it.

use base64::Engine;
use url::Url;

use super::spec::{VaultAuthSpec, VaultProviderSpec};
use crate::provider::findings::Findings;
use crate::provider::policy::EndpointPolicy;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvVersion {
    V1,
    V2,
}

impl KvVersion {
    pub fn as_str(&self) -> &'static str {
        match self {
            KvVersion::V1 => "v1",
            KvVersion::V2 => "v2",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum VaultAuthMethod {
    Kubernetes,
    Jwt,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VaultAuthConfig {
    pub method: VaultAuthMethod,
    /// Mount path of the auth method, without `auth/`.
    pub mount: String,
    pub role: String,
    /// Never empty: the store's `audiences`, else [`DEFAULT_AUDIENCE`]. A token with the API
    /// server's default audience is never requested for Vault (another service accepting
    /// Kubernetes tokens — the API server itself — would accept it too).
    pub audiences: Vec<String>,
}

/// The audience of the pod's token when a Vault store sets no `audiences`: what External
/// Secrets Operator's JWT auth uses by default, and what the Vault role must expect
/// (`audience=vault`). See docs/stores.md ("Audience").
pub const DEFAULT_AUDIENCE: &str = "vault";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VaultConfig {
    pub server: Url,
    pub mount: String,
    pub kv: KvVersion,
    pub namespace: Option<String>,
    /// PEM bytes of the CA bundle.
    pub ca_pem: Option<Vec<u8>>,
    pub auth: VaultAuthConfig,
}

pub(super) fn validate(
    spec: &VaultProviderSpec,
    endpoints: &EndpointPolicy,
    out: &mut Findings,
) -> Option<VaultConfig> {
    let server = out.endpoint(
        "spec.provider.vault.server",
        &spec.server,
        &endpoints.vault,
        "--allowed-vault-servers",
    );

    let kv = match spec.version.as_deref() {
        None | Some("v2") => KvVersion::V2,
        Some("v1") => KvVersion::V1,
        Some(other) => {
            out.error(
                "spec.provider.vault.version",
                format!("expected v1 or v2, got {other:?}"),
            );
            KvVersion::V2
        }
    };

    let path = spec.path.as_str();
    if let Err(m) = check_mount_segments(path) {
        out.error("spec.provider.vault.path", m);
    } else if kv == KvVersion::V2 && path.split('/').any(|s| s == "data") {
        out.error(
            "spec.provider.vault.path",
            format!(
                "{path:?} contains a data/ segment; for KV v2 give the bare mount (e.g. \"secret\"): \
                 the data/ prefix is added for you"
            ),
        );
    }

    if let Some(ns) = &spec.namespace {
        if let Err(m) = check_mount_segments(ns) {
            out.error("spec.provider.vault.namespace", m);
        }
    }

    let ca_pem = spec
        .ca_bundle
        .as_deref()
        .and_then(|b64| match decode_ca_bundle(b64) {
            Ok(pem) => Some(pem),
            Err(m) => {
                out.error("spec.provider.vault.caBundle", m);
                None
            }
        });

    let auth = validate_auth(&spec.auth, out);
    if !out.errors.is_empty() {
        return None;
    }
    Some(VaultConfig {
        server: server?,
        mount: path.to_string(),
        kv,
        namespace: spec.namespace.clone(),
        ca_pem,
        auth: auth?,
    })
}

/// The one auth method, as `(method, section, mount, mount field, role, audiences, ESO ref)`.
fn validate_auth(spec: &VaultAuthSpec, out: &mut Findings) -> Option<VaultAuthConfig> {
    let (method, at, mount, mount_field, role, audiences, sa_ref) =
        match (&spec.kubernetes, &spec.jwt) {
            (Some(k), None) => (
                VaultAuthMethod::Kubernetes,
                "spec.provider.vault.auth.kubernetes",
                k.mount_path.as_deref().unwrap_or("kubernetes"),
                "mountPath",
                &k.role,
                k.audiences.as_deref(),
                k.service_account_ref.is_some(),
            ),
            (None, Some(j)) => (
                VaultAuthMethod::Jwt,
                "spec.provider.vault.auth.jwt",
                j.path.as_deref().unwrap_or("jwt"),
                "path",
                &j.role,
                j.audiences.as_deref(),
                j.service_account_ref.is_some(),
            ),
            (Some(_), Some(_)) => {
                out.error(
                    "spec.provider.vault.auth",
                    "exactly one auth method may be set, found both kubernetes and jwt",
                );
                return None;
            }
            (None, None) => {
                out.error(
                    "spec.provider.vault.auth",
                    "exactly one auth method must be set: kubernetes or jwt",
                );
                return None;
            }
        };
    if sa_ref {
        out.warnings.push(format!(
            "{at}.serviceAccountRef is ignored: secret-injector always authenticates as the pod's \
             own ServiceAccount"
        ));
    }
    let before = out.errors.len();
    if let Err(m) = check_mount_segments(mount) {
        out.error(&format!("{at}.{mount_field}"), m);
    }
    if role.trim().is_empty() {
        out.error(&format!("{at}.role"), "must not be empty");
    }
    let audiences: Vec<String> = match audiences {
        Some([]) => {
            // An explicit empty list would mean the API server's default audience.
            out.error(
                &format!("{at}.audiences"),
                format!(
                    "must list at least one audience (the Vault role's `audience`); omit the \
                     field for the default [{DEFAULT_AUDIENCE}]. A token with the API server's \
                     default audience is never sent to Vault"
                ),
            );
            Vec::new()
        }
        Some(list) => list.to_vec(),
        None => {
            out.warnings.push(format!(
                "{at}.audiences is not set: pod tokens are requested with the audience \
                 \"{DEFAULT_AUDIENCE}\" (never the API server's default); the Vault role must \
                 expect it (audience={DEFAULT_AUDIENCE}), or set audiences to what the role expects"
            ));
            vec![DEFAULT_AUDIENCE.to_string()]
        }
    };
    for (i, a) in audiences.iter().enumerate() {
        if a.trim().is_empty() {
            out.error(&format!("{at}.audiences[{i}]"), "must not be empty");
        }
    }
    if out.errors.len() > before {
        return None;
    }
    Some(VaultAuthConfig {
        method,
        mount: mount.to_string(),
        role: role.to_string(),
        audiences,
    })
}

/// A Vault mount or namespace path: non-empty segments, no leading/trailing '/', no dot
/// segments, nothing that changes the request URL.
fn check_mount_segments(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("must not be empty".into());
    }
    if path.starts_with('/') || path.ends_with('/') {
        return Err(format!("{path:?} must not start or end with '/'"));
    }
    if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!("{path:?} has an empty, '.' or '..' segment"));
    }
    if path
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '%' | '\\'))
    {
        return Err(format!("{path:?} may only contain path characters"));
    }
    Ok(())
}

fn decode_ca_bundle(b64: &str) -> Result<Vec<u8>, String> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| "must be base64-encoded PEM (as in External Secrets Operator)".to_string())?;
    let mut reader = pem.as_slice();
    let certs: Vec<_> = rustls_pemfile::certs(&mut reader)
        .collect::<Result<_, _>>()
        .map_err(|_| "contains a PEM block that is not a certificate".to_string())?;
    if certs.is_empty() {
        return Err("decodes to no PEM CERTIFICATE block".into());
    }
    Ok(pem)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::provider::findings::FieldError;
    use crate::provider::vault::{ServiceAccountRef, VaultKubernetesAuth};
    use crate::provider::ProviderConfig;
    use crate::provider::ProviderSpec;
    use crate::provider::Providers;

    /// A valid Vault store spec (audiences set, no warnings) for `server` and `path`.
    pub(crate) fn vault(server: &str, path: &str) -> ProviderSpec {
        ProviderSpec {
            vault: Some(VaultProviderSpec {
                server: server.into(),
                path: path.into(),
                version: None,
                namespace: None,
                ca_bundle: None,
                auth: VaultAuthSpec {
                    kubernetes: Some(VaultKubernetesAuth {
                        mount_path: None,
                        role: "payments".into(),
                        audiences: Some(vec!["vault".into()]),
                        service_account_ref: None,
                    }),
                    jwt: None,
                },
            }),
            aws: None,
        }
    }

    fn open() -> EndpointPolicy {
        EndpointPolicy::with_vault(&[
            "https://*.svc:*",
            "https://vault.vault.svc:8200",
            "https://v:8200",
            "https://vault:8200",
            "http://127.0.0.1:*",
        ])
    }

    fn first_error(spec: &ProviderSpec) -> FieldError {
        Providers::validate(spec, &open()).unwrap_err().remove(0)
    }

    #[test]
    fn valid_vault_store() {
        let v =
            Providers::validate(&vault("https://vault.vault.svc:8200", "secret"), &open()).unwrap();
        let ProviderConfig::Vault(c) = v.config else {
            panic!()
        };
        assert_eq!(c.mount, "secret");
        assert_eq!(c.kv, KvVersion::V2);
        assert_eq!(c.auth.mount, "kubernetes");
        assert!(v.warnings.is_empty());
    }

    #[test]
    fn vault_rules_name_the_field() {
        let cases = [
            (
                vault("vault.svc:8200", "secret"),
                "spec.provider.vault.server",
            ),
            (
                vault("https://user:pw@vault:8200", "secret"),
                "spec.provider.vault.server",
            ),
            (
                vault("https://169.254.169.254", "secret"),
                "spec.provider.vault.server",
            ),
            (
                vault("http://[fd00:ec2::254]", "secret"),
                "spec.provider.vault.server",
            ),
            (
                vault("https://vault:8200/v1", "secret"),
                "spec.provider.vault.server",
            ),
            (vault("ftp://vault", "secret"), "spec.provider.vault.server"),
            (
                vault("https://vault:8200", "secret/data"),
                "spec.provider.vault.path",
            ),
            (
                vault("https://vault:8200", "/secret"),
                "spec.provider.vault.path",
            ),
            (
                vault("https://vault:8200", "a/../b"),
                "spec.provider.vault.path",
            ),
        ];
        for (spec, path) in cases {
            assert_eq!(first_error(&spec).path, path, "{spec:?}");
        }
        let mut s = vault("https://v:8200", "secret");
        s.vault
            .as_mut()
            .unwrap()
            .auth
            .kubernetes
            .as_mut()
            .unwrap()
            .role = " ".into();
        assert_eq!(
            first_error(&s).path,
            "spec.provider.vault.auth.kubernetes.role"
        );
        let mut s = vault("https://v:8200", "secret");
        s.vault.as_mut().unwrap().auth.kubernetes = None;
        assert_eq!(first_error(&s).path, "spec.provider.vault.auth");
        let mut s = vault("https://v:8200", "secret");
        s.vault.as_mut().unwrap().version = Some("v3".into());
        assert_eq!(first_error(&s).path, "spec.provider.vault.version");
        let mut s = vault("https://v:8200", "secret");
        s.vault.as_mut().unwrap().ca_bundle = Some("not base64!".into());
        assert_eq!(first_error(&s).path, "spec.provider.vault.caBundle");
        assert_eq!(first_error(&ProviderSpec::default()).path, "spec.provider");
    }

    #[test]
    fn warnings_for_eso_habits() {
        let mut s = vault("https://v:8200", "secret");
        let k = s.vault.as_mut().unwrap().auth.kubernetes.as_mut().unwrap();
        k.audiences = None;
        k.service_account_ref = Some(ServiceAccountRef {
            name: "x".into(),
            namespace: None,
            audiences: None,
        });
        let v = Providers::validate(&s, &open()).unwrap();
        assert_eq!(v.warnings.len(), 2);
        assert!(v
            .warnings
            .iter()
            .any(|w| w.contains("serviceAccountRef is ignored")));
        assert!(v
            .warnings
            .iter()
            .any(|w| w.contains("audiences is not set")));
        let ProviderConfig::Vault(c) = v.config else {
            panic!()
        };
        assert_eq!(c.auth.audiences, vec![DEFAULT_AUDIENCE.to_string()]);
    }

    #[test]
    fn audiences_default_to_vault_and_are_never_empty() {
        for jwt in [false, true] {
            let mut s = vault("https://v:8200", "secret");
            let auth = &mut s.vault.as_mut().unwrap().auth;
            if jwt {
                auth.kubernetes = None;
                auth.jwt = Some(crate::provider::vault::VaultJwtAuth {
                    path: None,
                    role: "payments".into(),
                    audiences: None,
                    service_account_ref: None,
                });
            } else {
                auth.kubernetes.as_mut().unwrap().audiences = None;
            }
            let v = Providers::validate(&s, &open()).unwrap();
            let ProviderConfig::Vault(c) = v.config else {
                panic!()
            };
            assert_eq!(c.auth.audiences, vec!["vault".to_string()]);

            let auth = &mut s.vault.as_mut().unwrap().auth;
            let (field, list) = match (&mut auth.kubernetes, &mut auth.jwt) {
                (Some(k), _) => (
                    "spec.provider.vault.auth.kubernetes.audiences",
                    &mut k.audiences,
                ),
                (_, Some(j)) => ("spec.provider.vault.auth.jwt.audiences", &mut j.audiences),
                _ => unreachable!(),
            };
            *list = Some(Vec::new());
            let e = first_error(&s);
            assert_eq!(e.path, field);
            assert!(e.message.contains("at least one audience"), "{e}");
        }
    }
}
