//! What the annotations parse into: stores, remote references, items and how they are
//! exposed. Plain data, no parsing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
pub enum StoreKind {
    SecretStore,
    ClusterSecretStore,
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreKind::SecretStore => "SecretStore",
            StoreKind::ClusterSecretStore => "ClusterSecretStore",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
pub struct StoreRef {
    pub kind: StoreKind,
    pub name: String,
}

impl std::fmt::Display for StoreRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// Where a value lives in the backend. References only — never a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct RemoteRef {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl std::fmt::Display for RemoteRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key)?;
        if let Some(p) = &self.property {
            write!(f, "#{p}")?;
        }
        if let Some(v) = &self.version {
            write!(f, " (version {v})")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataRef {
    pub secret_key: String,
    pub remote_ref: RemoteRef,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Rollout {
    #[default]
    Restart,
    None,
}

impl Rollout {
    pub fn as_str(self) -> &'static str {
        match self {
            Rollout::Restart => "restart",
            Rollout::None => "none",
        }
    }
}

/// How an item's Secret reaches the containers.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Exposure {
    /// Secret keys exposed one by one as env vars of the same name (`secretKeyRef`).
    pub env_keys: Vec<String>,
    /// The whole Secret exposed through `envFrom` (used for `extract`).
    pub env_from: bool,
    /// A read-only `secret` volume mounted at this path.
    pub files: Option<FileMount>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMount {
    pub mount_path: String,
    /// `None` mounts every key of the Secret; `Some` only these keys (as files of that name).
    pub keys: Option<Vec<String>>,
}

/// One managed Secret and how it is injected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretItem {
    /// Where in the annotations this item came from, for error messages
    /// (`secret-injector.io/external-secrets[1]` or the short-form keys).
    pub origin: String,
    pub secret_name: String,
    pub store: StoreRef,
    pub refresh_interval: Duration,
    pub data: Vec<DataRef>,
    pub extract: Vec<RemoteRef>,
    /// A dynamic secret (exclusive with `data`/`extract` and `certificate`).
    pub dynamic: Option<DynamicSpec>,
    /// A certificate from a PKI engine (exclusive with everything else).
    pub certificate: Option<CertificateSpec>,
    pub exposure: Exposure,
    /// Containers (and init containers) to inject; `None` = all.
    pub containers: Option<Vec<String>>,
    pub rollout: Rollout,
}

impl SecretItem {
    /// The source description recorded on the managed Secret: references, never values.
    pub fn source(&self) -> SourceSpec {
        SourceSpec {
            store_ref: self.store.clone(),
            data: self.data.clone(),
            extract: self.extract.clone(),
            dynamic: self.dynamic.clone(),
            certificate: self.certificate.clone(),
        }
    }
}

/// What a managed Secret is made from. Serialised into its `secret-injector.io/source`
/// annotation; the refresher replays it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    pub store_ref: StoreRef,
    #[serde(default)]
    pub data: Vec<DataRef>,
    #[serde(default)]
    pub extract: Vec<RemoteRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<DynamicSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateSpec>,
}

impl SourceSpec {
    /// True when the Secret's values are issued with a lease (or a certificate lifetime)
    /// rather than read: one issuance per workload, renewed and re-issued by the refresher.
    pub fn is_issued(&self) -> bool {
        self.dynamic.is_some() || self.certificate.is_some()
    }

    /// The Kubernetes Secret type this source produces.
    pub fn secret_type(&self) -> &'static str {
        if self.certificate.is_some() {
            "kubernetes.io/tls"
        } else {
            "Opaque"
        }
    }
}

/// How a dynamic secret's path is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum DynamicMethod {
    #[default]
    Get,
    Post,
    Put,
}

impl DynamicMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            DynamicMethod::Get => "GET",
            DynamicMethod::Post => "POST",
            DynamicMethod::Put => "PUT",
        }
    }

    fn is_get(&self) -> bool {
        *self == DynamicMethod::Get
    }
}

/// A dynamic secret (Vault's database, AWS, … engines): one call to `path` whose answer's
/// `data` fields become the Secret's keys and whose lease the refresher owns.
/// References and parameters only — recorded on the managed Secret, so never a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DynamicSpec {
    /// The full Vault path (`database/creds/payments-rw`), not relative to the store's KV mount.
    pub path: String,
    #[serde(default, skip_serializing_if = "DynamicMethod::is_get")]
    pub method: DynamicMethod,
    /// Request body of a POST/PUT (scalars, or lists of scalars).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub parameters: std::collections::BTreeMap<String, serde_json::Value>,
    /// Secret key → field of the answer's `data`. Empty: every field under its own name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub keys: std::collections::BTreeMap<String, String>,
}

/// A certificate issued by a PKI engine (`pki/issue/<role>`), delivered as a
/// `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`, `ca.crt`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    pub path: String,
    pub common_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alt_names: Vec<String>,
    /// Requested lifetime (`72h`); the role's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectionSpec {
    pub items: Vec<SecretItem>,
}

/// What the parser needs to know about the pod and its workload.
pub struct ParseContext<'a> {
    /// Name of the owning workload (Deployment, StatefulSet, …) or of the bare pod.
    pub workload_name: Option<&'a str>,
    /// Names of every container and init container in the pod.
    pub container_names: &'a [String],
    /// Refresh intervals shorter than this (and not 0) are refused.
    pub min_refresh_interval: Duration,
}
