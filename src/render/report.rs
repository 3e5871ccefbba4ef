//! What `render` found: the report, which is also the `-o json` document.

use serde::Serialize;

use crate::spec::{DataRef, RemoteRef, StoreRef};

/// Everything `render` found, in input order. This is the `-o json` document.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub workloads: Vec<WorkloadReport>,
    /// Present only with `--stores`: each store object and the validating webhook's verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stores: Option<Vec<StoreReport>>,
    /// Objects that are not workloads.
    pub skipped: Vec<Skipped>,
    pub summary: Summary,
}

#[derive(Debug, Serialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub workloads: usize,
    pub injected: usize,
    pub denied: usize,
    pub not_injected: usize,
    pub invalid_stores: usize,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Admitted with a patch (and, at admission, its managed Secrets).
    Injected,
    /// Denied: `denial` is the message the API server would show.
    Denied,
    /// Admitted unchanged: `reason` says why nothing is injected.
    NotInjected,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadReport {
    pub file: String,
    /// 1-based position among the file's non-empty YAML documents.
    pub document: usize,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    /// The identity every fetch uses: the pod's ServiceAccount.
    pub service_account: String,
    pub result: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denial: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub secrets: Vec<SecretReport>,
    /// The JSONPatch `/mutate` would answer with (RFC 6902 operations).
    pub patch: Vec<json_patch::PatchOperation>,
    /// Warnings the admission response would carry.
    pub warnings: Vec<String>,
    /// What cannot be decided offline, and hints.
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretReport {
    pub name: String,
    /// Where in the annotations it is configured.
    pub origin: String,
    pub store: StoreRef,
    /// `unchecked` (no `--stores`), `found`, or `undecided` (a ClusterSecretStore selector
    /// needs the Namespace's labels, which the input does not carry).
    pub store_check: StoreCheck,
    /// As written on the Secret: `1h`, `15m`; `0` = fetched once.
    pub refresh_interval: String,
    pub rollout: String,
    /// Secret keys named in the spec; `extract` adds every top-level key of its documents.
    pub keys: Vec<String>,
    pub data: Vec<DataRef>,
    pub extract: Vec<RemoteRef>,
    pub inject: InjectReport,
    /// Containers (and init containers) injected; absent = all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StoreCheck {
    Unchecked,
    Found,
    Undecided,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InjectReport {
    /// Keys exposed one by one as env vars (`secretKeyRef`).
    pub env: Vec<String>,
    /// The whole Secret through `envFrom` (extract).
    pub env_from: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesReport>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FilesReport {
    pub mount_path: String,
    /// Absent: every key of the Secret is a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StoreReport {
    pub file: String,
    pub document: usize,
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The validating webhook's denial when the store is invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denial: Option<String>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    pub file: String,
    pub document: usize,
    pub kind: String,
    pub name: String,
    pub reason: String,
}
