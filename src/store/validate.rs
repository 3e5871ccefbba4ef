//! The one conversion from a store's spec to a provider configuration. The runtime calls it
//! before any TokenRequest or connection; the validating webhook calls the same function, so
//! what is admitted is guaranteed to load.

use std::net::IpAddr;

use base64::Engine;
use url::Url;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::policy::{self, EndpointPolicy};
use super::types::*;

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
    /// Empty: the API server's default audience.
    pub audiences: Vec<String>,
}

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

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AwsConfig {
    pub region: String,
    pub role: Option<String>,
    pub endpoint: Option<Url>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProviderConfig {
    Vault(VaultConfig),
    Aws(AwsConfig),
}

impl ProviderConfig {
    pub fn provider_name(&self) -> &'static str {
        match self {
            ProviderConfig::Vault(_) => "vault",
            ProviderConfig::Aws(_) => "aws",
        }
    }
}

/// A valid configuration plus advice for the user (admission warnings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    pub config: ProviderConfig,
    pub warnings: Vec<String>,
}

/// Validate a provider spec against the operator's endpoint policy. All problems are
/// reported, each with its field path.
pub fn validate_provider(
    spec: &ProviderSpec,
    endpoints: &EndpointPolicy,
) -> Result<Validated, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let config = match (&spec.vault, &spec.aws) {
        (Some(vault), None) => {
            validate_vault(vault, endpoints, &mut errors, &mut warnings).map(ProviderConfig::Vault)
        }
        (None, Some(aws)) => validate_aws(aws, endpoints, &mut errors).map(ProviderConfig::Aws),
        (Some(_), Some(_)) => {
            errors.push(err(
                "spec.provider",
                "exactly one provider may be set, found both vault and aws",
            ));
            None
        }
        (None, None) => {
            errors.push(err(
                "spec.provider",
                "exactly one provider must be set: vault or aws",
            ));
            None
        }
    };
    match config {
        Some(config) if errors.is_empty() => Ok(Validated { config, warnings }),
        _ => Err(errors),
    }
}

fn err(path: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.to_string(),
        message: message.into(),
    }
}

fn validate_vault(
    spec: &VaultProviderSpec,
    endpoints: &EndpointPolicy,
    errors: &mut Vec<FieldError>,
    warnings: &mut Vec<String>,
) -> Option<VaultConfig> {
    let before = errors.len();
    let server =
        check_endpoint("spec.provider.vault.server", &spec.server, errors).and_then(|url| {
            match policy::check(&url, &endpoints.vault, "--allowed-vault-servers") {
                Ok(()) => Some(url),
                Err(m) => {
                    errors.push(err("spec.provider.vault.server", m));
                    None
                }
            }
        });

    let kv = match spec.version.as_deref() {
        None | Some("v2") => KvVersion::V2,
        Some("v1") => KvVersion::V1,
        Some(other) => {
            errors.push(err(
                "spec.provider.vault.version",
                format!("expected v1 or v2, got {other:?}"),
            ));
            KvVersion::V2
        }
    };

    let path = spec.path.as_str();
    if let Err(m) = check_mount_segments(path) {
        errors.push(err("spec.provider.vault.path", m));
    } else if kv == KvVersion::V2 && path.split('/').any(|s| s == "data") {
        errors.push(err(
            "spec.provider.vault.path",
            format!(
                "{path:?} contains a data/ segment; for KV v2 give the bare mount (e.g. \"secret\"): \
                 the data/ prefix is added for you"
            ),
        ));
    }

    if let Some(ns) = &spec.namespace {
        if let Err(m) = check_mount_segments(ns) {
            errors.push(err("spec.provider.vault.namespace", m));
        }
    }

    let ca_pem = spec
        .ca_bundle
        .as_deref()
        .and_then(|b64| match decode_ca_bundle(b64) {
            Ok(pem) => Some(pem),
            Err(m) => {
                errors.push(err("spec.provider.vault.caBundle", m));
                None
            }
        });

    let auth = match (&spec.auth.kubernetes, &spec.auth.jwt) {
        (Some(k), None) => {
            if k.service_account_ref.is_some() {
                warnings.push(service_account_ref_warning(
                    "spec.provider.vault.auth.kubernetes",
                ));
            }
            check_auth(
                VaultAuthMethod::Kubernetes,
                "spec.provider.vault.auth.kubernetes",
                k.mount_path.as_deref().unwrap_or("kubernetes"),
                "mountPath",
                &k.role,
                k.audiences.as_deref(),
                errors,
                warnings,
            )
        }
        (None, Some(j)) => {
            if j.service_account_ref.is_some() {
                warnings.push(service_account_ref_warning("spec.provider.vault.auth.jwt"));
            }
            check_auth(
                VaultAuthMethod::Jwt,
                "spec.provider.vault.auth.jwt",
                j.path.as_deref().unwrap_or("jwt"),
                "path",
                &j.role,
                j.audiences.as_deref(),
                errors,
                warnings,
            )
        }
        (Some(_), Some(_)) => {
            errors.push(err(
                "spec.provider.vault.auth",
                "exactly one auth method may be set, found both kubernetes and jwt",
            ));
            None
        }
        (None, None) => {
            errors.push(err(
                "spec.provider.vault.auth",
                "exactly one auth method must be set: kubernetes or jwt",
            ));
            None
        }
    };

    if errors.len() > before {
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

fn service_account_ref_warning(at: &str) -> String {
    format!(
        "{at}.serviceAccountRef is ignored: secret-injector always authenticates as the pod's own \
         ServiceAccount"
    )
}

#[allow(clippy::too_many_arguments)]
fn check_auth(
    method: VaultAuthMethod,
    at: &str,
    mount: &str,
    mount_field: &str,
    role: &str,
    audiences: Option<&[String]>,
    errors: &mut Vec<FieldError>,
    warnings: &mut Vec<String>,
) -> Option<VaultAuthConfig> {
    let before = errors.len();
    if let Err(m) = check_mount_segments(mount) {
        errors.push(err(&format!("{at}.{mount_field}"), m));
    }
    if role.trim().is_empty() {
        errors.push(err(&format!("{at}.role"), "must not be empty"));
    }
    let audiences: Vec<String> = audiences.map(<[String]>::to_vec).unwrap_or_default();
    for (i, a) in audiences.iter().enumerate() {
        if a.trim().is_empty() {
            errors.push(err(&format!("{at}.audiences[{i}]"), "must not be empty"));
        }
    }
    if audiences.is_empty() {
        warnings.push(format!(
            "{at}.audiences is not set: pod tokens will carry the API server's default audience, \
             which any service accepting Kubernetes tokens also accepts; set audiences (e.g. [vault]) \
             and the same audience on the Vault role"
        ));
    }
    if errors.len() > before {
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

/// Endpoints are absolute http(s) URLs with no credentials, query or path, and never
/// link-local or cloud-metadata addresses (a request forger's favourite targets).
fn check_endpoint(path: &str, raw: &str, errors: &mut Vec<FieldError>) -> Option<Url> {
    let url = match Url::parse(raw.trim()) {
        Ok(u) => u,
        Err(e) => {
            errors.push(err(path, format!("{raw:?} is not an absolute URL ({e})")));
            return None;
        }
    };
    if !matches!(url.scheme(), "https" | "http") {
        errors.push(err(
            path,
            format!("scheme {:?} is not allowed; use https", url.scheme()),
        ));
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        errors.push(err(path, "must not contain credentials (user:password@)"));
        return None;
    }
    if url.query().is_some() || url.fragment().is_some() || !matches!(url.path(), "" | "/") {
        errors.push(err(
            path,
            "must be scheme://host[:port] with no path, query or fragment",
        ));
        return None;
    }
    match url.host() {
        None => {
            errors.push(err(path, "has no host"));
            return None;
        }
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if d == "metadata.google.internal" || d == "metadata" || d == "instance-data" {
                errors.push(err(path, "cloud metadata endpoints are never allowed"));
                return None;
            }
        }
        Some(url::Host::Ipv4(ip)) => {
            if is_forbidden_ip(IpAddr::V4(ip)) {
                errors.push(err(
                    path,
                    "link-local and cloud metadata addresses are never allowed",
                ));
                return None;
            }
        }
        Some(url::Host::Ipv6(ip)) => {
            if is_forbidden_ip(IpAddr::V6(ip)) {
                errors.push(err(
                    path,
                    "link-local and cloud metadata addresses are never allowed",
                ));
                return None;
            }
        }
    }
    Some(url)
}

pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden_ip(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            // fe80::/10 link-local; fd00:ec2::254 is the EC2 IMDS IPv6 address.
            (seg[0] & 0xffc0) == 0xfe80
                || v6
                    == "fd00:ec2::254"
                        .parse::<std::net::Ipv6Addr>()
                        .expect("literal")
                || v6.is_unspecified()
        }
    }
}

fn validate_aws(
    spec: &AwsProviderSpec,
    endpoints: &EndpointPolicy,
    errors: &mut Vec<FieldError>,
) -> Option<AwsConfig> {
    let before = errors.len();
    if spec.service != "SecretsManager" {
        errors.push(err(
            "spec.provider.aws.service",
            format!("only SecretsManager is supported, got {:?}", spec.service),
        ));
    }
    if !is_aws_region(&spec.region) {
        errors.push(err(
            "spec.provider.aws.region",
            format!("{:?} is not an AWS region (e.g. eu-west-1)", spec.region),
        ));
    }
    if let Some(role) = &spec.role {
        if !is_iam_role_arn(role) {
            errors.push(err(
                "spec.provider.aws.role",
                format!("{role:?} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"),
            ));
        }
    }
    let endpoint = spec
        .endpoint
        .as_deref()
        .and_then(|e| check_endpoint("spec.provider.aws.endpoint", e, errors))
        .and_then(
            |url| match policy::check(&url, &endpoints.aws, "--allowed-aws-endpoints") {
                Ok(()) => Some(url),
                Err(m) => {
                    errors.push(err("spec.provider.aws.endpoint", m));
                    None
                }
            },
        );
    if errors.len() > before {
        return None;
    }
    Some(AwsConfig {
        region: spec.region.clone(),
        role: spec.role.clone(),
        endpoint,
    })
}

/// ClusterSecretStore `spec.conditions`: valid namespace names and label selectors.
pub fn validate_conditions(conditions: &[ClusterStoreCondition]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (i, c) in conditions.iter().enumerate() {
        let at = format!("spec.conditions[{i}]");
        if c.namespaces.is_empty() && c.namespace_selector.is_none() {
            errors.push(err(
                &at,
                "needs namespaces or namespaceSelector (an empty condition matches nothing)",
            ));
        }
        for (j, ns) in c.namespaces.iter().enumerate() {
            if !crate::spec::is_dns1123_label(ns) {
                errors.push(err(
                    &format!("{at}.namespaces[{j}]"),
                    format!("{ns:?} is not a valid namespace name"),
                ));
            }
        }
        if let Some(sel) = &c.namespace_selector {
            let sel_at = format!("{at}.namespaceSelector");
            for (k, v) in sel.match_labels.iter().flatten() {
                if !is_label_key(k) {
                    errors.push(err(
                        &format!("{sel_at}.matchLabels"),
                        format!("{k:?} is not a valid label key"),
                    ));
                }
                if !is_label_value(v) {
                    errors.push(err(
                        &format!("{sel_at}.matchLabels"),
                        format!("{v:?} is not a valid label value"),
                    ));
                }
            }
            for (j, e) in sel.match_expressions.iter().flatten().enumerate() {
                let e_at = format!("{sel_at}.matchExpressions[{j}]");
                if !is_label_key(&e.key) {
                    errors.push(err(
                        &format!("{e_at}.key"),
                        format!("{:?} is not a valid label key", e.key),
                    ));
                }
                let values = e.values.as_deref().unwrap_or_default();
                match e.operator.as_str() {
                    "In" | "NotIn" if values.is_empty() => errors.push(err(
                        &format!("{e_at}.values"),
                        format!("must be non-empty for operator {}", e.operator),
                    )),
                    "Exists" | "DoesNotExist" if !values.is_empty() => errors.push(err(
                        &format!("{e_at}.values"),
                        format!("must be empty for operator {}", e.operator),
                    )),
                    "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                    other => errors.push(err(
                        &format!("{e_at}.operator"),
                        format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
                    )),
                }
                for v in values {
                    if !is_label_value(v) {
                        errors.push(err(
                            &format!("{e_at}.values"),
                            format!("{v:?} is not a valid label value"),
                        ));
                    }
                }
            }
        }
    }
    errors
}

/// `[prefix/]name`: prefix a DNS subdomain, name ≤ 63 of alphanumerics, '-', '_', '.'.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    prefix.is_none_or(crate::spec::is_dns1123_subdomain) && !name.is_empty() && is_label_value(name)
}

fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric())
}

/// What validation concluded about one store object.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
}

/// Validate a store object (its full JSON) of `kind`. Shared with the status controller.
pub fn validate_store(kind: &str, object: &Value, endpoints: &EndpointPolicy) -> Verdict {
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    // Decode, find unknown fields, validate the provider; `extra` adds kind-specific checks.
    fn check<T: DeserializeOwned + Serialize>(
        spec: &Value,
        endpoints: &EndpointPolicy,
        provider: impl Fn(&T) -> &ProviderSpec,
        extra: impl Fn(&T) -> Vec<FieldError>,
    ) -> Verdict {
        let typed: T = match decode(spec) {
            Ok(t) => t,
            Err(e) => {
                return Verdict {
                    errors: vec![e],
                    warnings: Vec::new(),
                }
            }
        };
        let mut errors = unknown_fields(spec, &typed);
        let mut warnings = Vec::new();
        merge(
            validate_provider(provider(&typed), endpoints),
            &mut errors,
            &mut warnings,
        );
        errors.extend(extra(&typed));
        Verdict { errors, warnings }
    }
    match kind {
        "SecretStore" => {
            check::<SecretStoreSpec>(&spec, endpoints, |s| &s.provider, |_| Vec::new())
        }
        "ClusterSecretStore" => check::<ClusterSecretStoreSpec>(
            &spec,
            endpoints,
            |s| &s.provider,
            |s| validate_conditions(&s.conditions),
        ),
        other => Verdict {
            errors: vec![FieldError {
                path: "kind".into(),
                message: format!("{other:?} is not validated by this webhook"),
            }],
            warnings: Vec::new(),
        },
    }
}

fn merge(
    result: Result<crate::store::Validated, Vec<FieldError>>,
    errors: &mut Vec<FieldError>,
    warnings: &mut Vec<String>,
) {
    match result {
        Ok(v) => warnings.extend(v.warnings),
        Err(e) => errors.extend(e),
    }
}

/// Decode with the failing field's path (`spec.provider.vault.server: invalid type …`).
fn decode<T: DeserializeOwned>(spec: &Value) -> Result<T, FieldError> {
    if spec.is_null() {
        return Err(FieldError {
            path: "spec".into(),
            message: "missing".into(),
        });
    }
    serde_path_to_error::deserialize::<_, T>(spec).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." || inner.is_empty() {
            "spec".to_string()
        } else {
            format!("spec.{inner}")
        };
        FieldError {
            path,
            message: e.into_inner().to_string(),
        }
    })
}

/// Fields present in the object that the types do not know. The API server prunes these for
/// a structural CRD, but objects can arrive by other ways (and typos deserve an answer).
fn unknown_fields<T: Serialize>(original: &Value, typed: &T) -> Vec<FieldError> {
    let known = serde_json::to_value(typed).unwrap_or(Value::Null);
    let mut out = Vec::new();
    walk(original, &known, "spec", &mut out);
    out.into_iter()
        .map(|path| FieldError {
            path,
            message: "unknown field".into(),
        })
        .collect()
}

fn walk(original: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (original, known) {
        (Value::Object(o), Value::Object(k)) => {
            for (key, value) in o {
                let p = format!("{path}.{key}");
                match k.get(key) {
                    Some(kv) => walk(value, kv, &p, out),
                    None if is_empty(value) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(o), Value::Array(k)) => {
            for (i, (value, kv)) in o.iter().zip(k).enumerate() {
                walk(value, kv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
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
    use super::*;
    use serde_json::json;

    fn vault(server: &str, path: &str) -> ProviderSpec {
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

    /// A policy that admits any https server and the test loopback over http.
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
        validate_provider(spec, &open()).unwrap_err().remove(0)
    }

    #[test]
    fn valid_vault_store() {
        let v =
            validate_provider(&vault("https://vault.vault.svc:8200", "secret"), &open()).unwrap();
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
        let v = validate_provider(&s, &open()).unwrap();
        assert_eq!(v.warnings.len(), 2);
        assert!(v
            .warnings
            .iter()
            .any(|w| w.contains("serviceAccountRef is ignored")));
        assert!(v
            .warnings
            .iter()
            .any(|w| w.contains("audiences is not set")));
    }

    #[test]
    fn allowlist_is_enforced_for_vault_and_aws() {
        let strict = EndpointPolicy::with_vault(&["https://vault.vault.svc:8200"]);
        let e = validate_provider(&vault("https://other.vault.svc:8200", "secret"), &strict)
            .unwrap_err();
        assert_eq!(e[0].path, "spec.provider.vault.server");
        assert!(e[0].message.contains("allowlist"), "{}", e[0].message);
        let e = validate_provider(&vault("http://vault.vault.svc:8200", "secret"), &strict)
            .unwrap_err();
        assert_eq!(
            e[0].path, "spec.provider.vault.server",
            "http needs an explicit http pattern"
        );
        let e = validate_provider(
            &vault("https://vault.vault.svc:8200", "secret"),
            &EndpointPolicy::default(),
        )
        .unwrap_err();
        assert!(
            e[0].message.contains("has not allowed any server"),
            "{}",
            e[0].message
        );
        let moto = ProviderSpec {
            vault: None,
            aws: Some(AwsProviderSpec {
                service: "SecretsManager".into(),
                region: "eu-west-1".into(),
                role: None,
                endpoint: Some("http://127.0.0.1:5000".into()),
            }),
        };
        let e = validate_provider(&moto, &strict).unwrap_err();
        assert_eq!(e[0].path, "spec.provider.aws.endpoint");
    }

    #[test]
    fn cluster_conditions() {
        let conditions: Vec<ClusterStoreCondition> = serde_json::from_value(serde_json::json!([
            {"namespaces": ["payments", "Bad_NS"]},
            {},
            {"namespaceSelector": {"matchExpressions": [
                {"key": "team", "operator": "In", "values": []},
                {"key": "tier", "operator": "Equals", "values": ["x"]},
                {"key": "bad key!", "operator": "Exists"}
            ]}},
            {"namespaceSelector": {"matchLabels": {"team": "payments"}}}
        ]))
        .unwrap();
        let paths: Vec<String> = validate_conditions(&conditions)
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            paths,
            [
                "spec.conditions[0].namespaces[1]",
                "spec.conditions[1]",
                "spec.conditions[2].namespaceSelector.matchExpressions[0].values",
                "spec.conditions[2].namespaceSelector.matchExpressions[1].operator",
                "spec.conditions[2].namespaceSelector.matchExpressions[2].key",
            ]
        );
    }

    fn strict_policy() -> EndpointPolicy {
        EndpointPolicy::with_vault(&["https://vault.vault.svc:8200"])
    }

    #[test]
    fn unknown_and_mistyped_fields_are_named() {
        let obj = json!({"spec": {"provider": {"vault": {"server": "https://vault.vault.svc:8200", "path": "secret",
            "auth": {"kubernetes": {"role": "r", "audiences": ["vault"]}}, "sever": "typo"}}}});
        let v = validate_store("SecretStore", &obj, &strict_policy());
        assert_eq!(v.errors[0].path, "spec.provider.vault.sever");
        let obj = json!({"spec": {"provider": {"vault": {"server": 8200, "path": "secret", "auth": {}}}}});
        let v = validate_store("SecretStore", &obj, &strict_policy());
        assert_eq!(
            v.errors[0].path, "spec.provider.vault.server",
            "{:?}",
            v.errors
        );
        let obj = json!({"spec": {"provider": {"vault": {"server": "https://vault.vault.svc:8200", "path": "secret",
            "auth": {"kubernetes": {"role": "r", "audiences": ["vault"]}}}}, "conditions": [{"namespaces": ["a"]}]}});
        let v = validate_store("SecretStore", &obj, &strict_policy());
        assert_eq!(
            v.errors[0].path, "spec.conditions",
            "conditions belong to ClusterSecretStore only"
        );
        assert!(validate_store("ClusterSecretStore", &obj, &strict_policy())
            .errors
            .is_empty());
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
        assert!(validate_provider(&payments, &open()).is_ok());
        assert!(validate_provider(&aws("us-gov-west-1", None), &open()).is_ok());
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
