//! `secret-injector render`: check manifests offline. For every workload it builds the pod its
//! controller would create and runs the webhook's own pure stages on it ([`crate::plan`]:
//! annotations → spec → patch; with `--stores`, the store lookup and the validation the
//! validating webhook runs). It prints the managed Secrets (references only — there are no
//! values offline), the JSON patch, or the denial exactly as `/mutate` would word it.
//! No Kubernetes client is built and no backend is contacted.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::config::{RenderArgs, RenderOutput};
use crate::plan;
use crate::spec::{self, DataRef, RemoteRef, SecretItem, StoreKind, StoreRef};
use crate::store::{
    self, ClusterStoreCondition, EndpointPolicy, FieldError, ProviderSpec, StoreError,
};

/// Exit code: every workload would be admitted (and every store given is valid).
pub const EXIT_OK: i32 = 0;
/// Exit code: at least one workload would be denied, or a store is invalid.
pub const EXIT_DENIED: i32 = 1;
/// Exit code: an input could not be read or parsed.
pub const EXIT_INPUT: i32 = 2;

const GROUP: &str = "secret-injector.io";
const OPT_IN_LABEL: &str = "secret-injector.io/inject";

/// Settings that change a verdict; the same flags (and env vars) as `serve`.
#[derive(Clone, Debug)]
pub struct Options {
    pub min_refresh_interval: Duration,
    pub endpoints: EndpointPolicy,
    /// Namespace of objects that do not name one.
    pub default_namespace: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            min_refresh_interval: Duration::from_secs(10),
            endpoints: EndpointPolicy::default(),
            default_namespace: "default".into(),
        }
    }
}

/// One input text and where it came from (a path, or `-` for stdin).
#[derive(Clone, Debug)]
pub struct Input {
    pub source: String,
    pub text: String,
}

/// An input that cannot be used. Messages name the file and position, never its content
/// (a manifest directory may hold Secrets).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("{file}: cannot be read: {message}")]
    Read { file: String, message: String },
    #[error("{file}: not valid YAML{}", position(*.line, *.column))]
    Yaml {
        file: String,
        line: u64,
        column: u64,
    },
    #[error("{file}, document {document}: {message}")]
    Document {
        file: String,
        document: usize,
        message: String,
    },
}

fn position(line: u64, column: u64) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(" (line {line}, column {column})")
    }
}

// ---------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------

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
    /// A dynamic secret: issued once per workload, its lease renewed and re-issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<spec::DynamicSpec>,
    /// A certificate (kubernetes.io/tls Secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<spec::CertificateSpec>,
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

impl Report {
    pub fn exit_code(&self) -> i32 {
        if self.summary.denied > 0 || self.summary.invalid_stores > 0 {
            EXIT_DENIED
        } else {
            EXIT_OK
        }
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("the report serialises");
        s.push('\n');
        s
    }

    /// The human-readable form.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for w in &self.workloads {
            text_workload(&mut out, w);
            out.push('\n');
        }
        if let Some(stores) = &self.stores {
            for s in stores {
                let ns = s
                    .namespace
                    .as_deref()
                    .map(|n| format!("{n}/"))
                    .unwrap_or_default();
                let verdict = if s.denial.is_some() {
                    "INVALID"
                } else {
                    "valid"
                };
                out.push_str(&format!(
                    "{verdict}  {} {ns}{}  ({}, document {})\n",
                    s.kind, s.name, s.file, s.document
                ));
                if let Some(d) = &s.denial {
                    out.push_str(&format!("  denied: {d}\n"));
                }
                for w in &s.warnings {
                    out.push_str(&format!("  warning: {w}\n"));
                }
            }
            if !stores.is_empty() {
                out.push('\n');
            }
        }
        for s in &self.skipped {
            out.push_str(&format!(
                "skipped  {} {}  ({}, document {}): {}\n",
                s.kind, s.name, s.file, s.document, s.reason
            ));
        }
        let m = &self.summary;
        out.push_str(&format!(
            "{} workload{}: {} injected, {} denied, {} not injected",
            m.workloads,
            if m.workloads == 1 { "" } else { "s" },
            m.injected,
            m.denied,
            m.not_injected
        ));
        if self.stores.is_some() {
            out.push_str(&format!("; {} invalid store(s)", m.invalid_stores));
        }
        out.push('\n');
        out
    }
}

fn text_workload(out: &mut String, w: &WorkloadReport) {
    let verdict = match w.result {
        Outcome::Injected => "INJECT",
        Outcome::Denied => "DENIED",
        Outcome::NotInjected => "SKIP  ",
    };
    out.push_str(&format!(
        "{verdict}  {} {}/{}  ({}, document {})\n",
        w.kind, w.namespace, w.name, w.file, w.document
    ));
    if let Some(d) = &w.denial {
        out.push_str(&format!("  denied: {d}\n"));
    }
    if let Some(r) = &w.reason {
        out.push_str(&format!("  not injected: {r}\n"));
    }
    if w.result == Outcome::Injected {
        out.push_str(&format!("  service account: {}\n", w.service_account));
    }
    for s in &w.secrets {
        out.push_str(&format!("  managed Secret {}  ({})\n", s.name, s.origin));
        let check = match s.store_check {
            StoreCheck::Unchecked => " (not checked: no --stores)",
            StoreCheck::Found => " (found, valid)",
            StoreCheck::Undecided => " (found; namespace conditions undecided, see notes)",
        };
        out.push_str(&format!("    store:            {}{check}\n", s.store));
        let interval = if s.dynamic.is_some() || s.certificate.is_some() {
            "by the lease (renewed, re-issued at 2/3 of its life)".to_string()
        } else if s.refresh_interval == "0" {
            "0 (fetched once)".to_string()
        } else {
            s.refresh_interval.clone()
        };
        out.push_str(&format!("    refresh interval: {interval}\n"));
        out.push_str(&format!("    rollout:          {}\n", s.rollout));
        if !s.data.is_empty() {
            out.push_str("    keys:\n");
            let width = s.data.iter().map(|d| d.secret_key.len()).max().unwrap_or(0);
            for d in &s.data {
                out.push_str(&format!(
                    "      {:width$}  <- {}\n",
                    d.secret_key, d.remote_ref
                ));
            }
        }
        for e in &s.extract {
            out.push_str(&format!(
                "    extract:          every top-level key of {e}\n"
            ));
        }
        if let Some(d) = &s.dynamic {
            out.push_str(&format!(
                "    dynamic:          {} {} (issued once per workload)\n",
                d.method.as_str(),
                d.path
            ));
            for (key, field) in &d.keys {
                out.push_str(&format!("      {key}  <- {field}\n"));
            }
        }
        if let Some(c) = &s.certificate {
            out.push_str(&format!(
                "    certificate:      {} CN={}{} (kubernetes.io/tls)\n",
                c.path,
                c.common_name,
                c.ttl
                    .as_deref()
                    .map(|t| format!(", ttl {t}"))
                    .unwrap_or_default()
            ));
        }
        let mut how = Vec::new();
        if !s.inject.env.is_empty() {
            how.push(format!("env {}", s.inject.env.join(", ")));
        }
        if s.inject.env_from {
            how.push("envFrom (every key)".to_string());
        }
        if let Some(f) = &s.inject.files {
            match &f.keys {
                Some(keys) => how.push(format!("files {} under {}", keys.join(", "), f.mount_path)),
                None => how.push(format!("every key as a file under {}", f.mount_path)),
            }
        }
        out.push_str(&format!("    injected as:      {}\n", how.join("; ")));
        if let Some(c) = &s.containers {
            out.push_str(&format!("    containers:       {}\n", c.join(", ")));
        }
    }
    if w.result == Outcome::Injected {
        let patch = serde_json::to_string_pretty(&w.patch).expect("a patch serialises");
        out.push_str("  patch:\n");
        for line in patch.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    for warning in &w.warnings {
        out.push_str(&format!("  warning: {warning}\n"));
    }
    for note in &w.notes {
        out.push_str(&format!("  note: {note}\n"));
    }
}

// ---------------------------------------------------------------------------------------
// Reading inputs
// ---------------------------------------------------------------------------------------

/// Files named on the command line: `-` is stdin, a directory its .yaml/.yml/.json files
/// (sorted; recursively with `recursive`).
pub fn read_inputs(paths: &[PathBuf], recursive: bool) -> Result<Vec<Input>, InputError> {
    let mut out = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| read_error("-", &e))?;
            out.push(Input {
                source: "-".into(),
                text,
            });
        } else if path.is_dir() {
            let mut files = Vec::new();
            list_dir(path, recursive, &mut files)?;
            for file in files {
                out.push(read_file(&file)?);
            }
        } else {
            out.push(read_file(path)?);
        }
    }
    Ok(out)
}

fn read_error(source: &str, e: &std::io::Error) -> InputError {
    InputError::Read {
        file: source.to_string(),
        message: e.to_string(),
    }
}

fn read_file(path: &Path) -> Result<Input, InputError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| read_error(&source, &e))?;
    Ok(Input { source, text })
}

fn list_dir(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let source = dir.display().to_string();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| read_error(&source, &e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| read_error(&source, &e))?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if recursive {
                list_dir(&path, recursive, out)?;
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// One object of the input and where it is.
struct Object {
    file: String,
    document: usize,
    value: Value,
}

fn documents(input: &Input) -> Result<Vec<Object>, InputError> {
    // As kubectl reads manifests (YAML 1.1 via sigs.k8s.io/yaml): `defaultMode: 0440` is octal.
    let mut yaml = serde_saphyr::Options::default();
    yaml.legacy_octal_numbers = true;
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(&input.text, yaml).map_err(|e| {
            // Position only: the parser's message can quote the input.
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            InputError::Yaml {
                file: input.source.clone(),
                line,
                column,
            }
        })?;
    let mut out = Vec::new();
    for (i, value) in docs.into_iter().enumerate() {
        let document = i + 1;
        if !value.is_object() {
            return Err(InputError::Document {
                file: input.source.clone(),
                document,
                message: "not a Kubernetes object (expected a mapping with apiVersion and kind)"
                    .into(),
            });
        }
        flatten(&input.source, document, value, &mut out);
    }
    Ok(out)
}

/// `kind: List` (and `*List`) documents contribute their items.
fn flatten(file: &str, document: usize, value: Value, out: &mut Vec<Object>) {
    let is_list = value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array);
    if is_list {
        if let Some(Value::Array(items)) = value.get("items").cloned() {
            for item in items {
                flatten(file, document, item, out);
            }
        }
    } else {
        out.push(Object {
            file: file.to_string(),
            document,
            value,
        });
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn kind_of(v: &Value) -> (String, String) {
    let api_version = str_at(v, &["apiVersion"]).unwrap_or_default().to_string();
    let group = api_version
        .split_once('/')
        .map(|(g, _)| g.to_string())
        .unwrap_or_default();
    (group, str_at(v, &["kind"]).unwrap_or_default().to_string())
}

/// Decode with the failing field's path and no value (serde's messages can quote input).
fn decode<T: DeserializeOwned>(object: &Object, kind: &str) -> Result<T, InputError> {
    serde_path_to_error::deserialize::<_, T>(object.value.clone()).map_err(|e| {
        let path = e.path().to_string();
        InputError::Document {
            file: object.file.clone(),
            document: object.document,
            message: format!("{kind}: field {path} does not match the {kind} schema"),
        }
    })
}

// ---------------------------------------------------------------------------------------
// Stores and namespaces from the input
// ---------------------------------------------------------------------------------------

struct StoreEntry {
    kind: StoreKind,
    name: String,
    namespace: Option<String>,
    provider: Option<ProviderSpec>,
    conditions: Vec<ClusterStoreCondition>,
    /// The validating webhook's errors for this object.
    errors: Vec<FieldError>,
}

#[derive(Default)]
struct Catalog {
    stores: Option<Vec<StoreEntry>>,
    /// Namespace labels, from Namespace objects anywhere in the input.
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

impl Catalog {
    /// The store as admission would resolve it: the same errors, with the same text.
    fn check(
        &self,
        reference: &StoreRef,
        namespace: &str,
        endpoints: &EndpointPolicy,
    ) -> Result<Option<(StoreCheck, &'static str)>, StoreError> {
        let Some(stores) = &self.stores else {
            return Ok(None);
        };
        let found = stores.iter().find(|s| {
            s.kind == reference.kind
                && s.name == reference.name
                && (reference.kind == StoreKind::ClusterSecretStore
                    || s.namespace.as_deref() == Some(namespace))
        });
        let Some(store) = found else {
            return Err(StoreError::NotFound {
                reference: reference.clone(),
                namespace: namespace.to_string(),
            });
        };
        let mut check = StoreCheck::Found;
        if reference.kind == StoreKind::ClusterSecretStore {
            match store::conditions_allow(
                namespace,
                self.namespaces.get(namespace),
                &store.conditions,
            ) {
                Some(true) => {}
                Some(false) => {
                    return Err(StoreError::NotAllowed {
                        reference: reference.clone(),
                        namespace: namespace.to_string(),
                    })
                }
                None => check = StoreCheck::Undecided,
            }
        }
        let invalid = |errors| StoreError::Invalid {
            reference: reference.clone(),
            errors,
        };
        let backend = match &store.provider {
            Some(provider) => store::validate_provider(provider, endpoints)
                .map_err(invalid)?
                .config
                .provider_name(),
            None => return Err(invalid(store.errors.clone())),
        };
        Ok(Some((check, backend)))
    }
}

fn store_entry(object: &Object, kind: StoreKind, options: &Options) -> (StoreEntry, StoreReport) {
    let name = str_at(&object.value, &["metadata", "name"])
        .unwrap_or_default()
        .to_string();
    let namespace = match kind {
        StoreKind::SecretStore => Some(
            str_at(&object.value, &["metadata", "namespace"])
                .unwrap_or(&options.default_namespace)
                .to_string(),
        ),
        StoreKind::ClusterSecretStore => None,
    };
    let kind_name = kind.to_string();
    let verdict = store::validate_store(&kind_name, &object.value, &options.endpoints);
    let spec = object.value.get("spec").cloned().unwrap_or(Value::Null);
    let provider = spec
        .get("provider")
        .and_then(|p| serde_json::from_value::<ProviderSpec>(p.clone()).ok());
    let conditions = spec
        .get("conditions")
        .and_then(|c| serde_json::from_value::<Vec<ClusterStoreCondition>>(c.clone()).ok())
        .unwrap_or_default();
    // The validating webhook's wording (`admission::validate`).
    let denial = (!verdict.errors.is_empty()).then(|| {
        let what = match &namespace {
            Some(ns) => format!("{kind_name} {ns}/{name}"),
            None => format!("{kind_name} {name}"),
        };
        let detail: Vec<String> = verdict.errors.iter().map(ToString::to_string).collect();
        format!("{what} is invalid: {}", detail.join("; "))
    });
    let report = StoreReport {
        file: object.file.clone(),
        document: object.document,
        kind: kind_name,
        name: name.clone(),
        namespace: namespace.clone(),
        denial,
        errors: verdict.errors.iter().map(ToString::to_string).collect(),
        warnings: verdict.warnings,
    };
    let entry = StoreEntry {
        kind,
        name,
        namespace,
        provider,
        conditions,
        errors: verdict.errors,
    };
    (entry, report)
}

fn store_kind(object: &Object) -> Option<StoreKind> {
    match kind_of(&object.value) {
        (g, k) if g == GROUP && k == "SecretStore" => Some(StoreKind::SecretStore),
        (g, k) if g == GROUP && k == "ClusterSecretStore" => Some(StoreKind::ClusterSecretStore),
        _ => None,
    }
}

fn namespace_labels(object: &Object) -> Option<(String, BTreeMap<String, String>)> {
    if kind_of(&object.value) != (String::new(), "Namespace".to_string()) {
        return None;
    }
    let name = str_at(&object.value, &["metadata", "name"])?.to_string();
    let labels = object
        .value
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    Some((name, labels))
}

// ---------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------

/// The pod a workload's controller creates, and what admission learns from its owner chain.
struct WorkloadPod {
    kind: String,
    name: String,
    namespace: String,
    pod: Pod,
    /// The top-most owner's name (the bare pod's own name); `None` with only `generateName`.
    workload_name: Option<String>,
    /// The owner chain's annotations, merged top-most first (as `workload::resolve` does).
    chain_annotations: BTreeMap<String, String>,
}

fn pod_from(meta: &ObjectMeta, template: Option<PodTemplateSpec>, namespace: &str) -> Pod {
    let template = template.unwrap_or_default();
    let mut pod_meta = template.metadata.unwrap_or_default();
    pod_meta.namespace = Some(namespace.to_string());
    if let Some(name) = &meta.name {
        // What the controller's pods look like: a generated name under the owner's.
        pod_meta.generate_name = Some(format!("{name}-"));
    }
    Pod {
        metadata: pod_meta,
        spec: template.spec,
        status: None,
    }
}

fn annotations(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.annotations.clone().unwrap_or_default()
}

/// `Ok(None)`: not a workload kind.
fn workload_pod(object: &Object, options: &Options) -> Result<Option<WorkloadPod>, InputError> {
    let (group, kind) = kind_of(&object.value);
    let ns = |meta: &ObjectMeta| {
        meta.namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| options.default_namespace.clone())
    };
    // Controllers that copy their own annotations onto what they create (Deployment →
    // ReplicaSet) make the same merged map as the owner chain does at admission.
    let owned = |meta: ObjectMeta, template: Option<PodTemplateSpec>, chain| {
        let namespace = ns(&meta);
        WorkloadPod {
            kind: kind.clone(),
            name: meta.name.clone().unwrap_or_default(),
            pod: pod_from(&meta, template, &namespace),
            namespace,
            workload_name: meta.name.clone(),
            chain_annotations: chain,
        }
    };
    let w = match (group.as_str(), kind.as_str()) {
        ("apps", "Deployment") => {
            let d: Deployment = decode(object, &kind)?;
            let chain = annotations(&d.metadata);
            owned(d.metadata, d.spec.map(|s| s.template), chain)
        }
        ("apps", "StatefulSet") => {
            let d: StatefulSet = decode(object, &kind)?;
            let chain = annotations(&d.metadata);
            owned(d.metadata, d.spec.map(|s| s.template), chain)
        }
        ("apps", "DaemonSet") => {
            let d: DaemonSet = decode(object, &kind)?;
            let chain = annotations(&d.metadata);
            owned(d.metadata, d.spec.map(|s| s.template), chain)
        }
        ("apps", "ReplicaSet") => {
            let d: ReplicaSet = decode(object, &kind)?;
            let chain = annotations(&d.metadata);
            owned(d.metadata, d.spec.and_then(|s| s.template), chain)
        }
        ("batch", "Job") => {
            let d: Job = decode(object, &kind)?;
            let chain = annotations(&d.metadata);
            owned(d.metadata, d.spec.map(|s| s.template), chain)
        }
        ("batch", "CronJob") => {
            let d: CronJob = decode(object, &kind)?;
            // CronJob → Job (jobTemplate.metadata) → pod; lower levels override.
            let mut chain = annotations(&d.metadata);
            let job = d.spec.map(|s| s.job_template);
            if let Some(job_meta) = job.as_ref().and_then(|j| j.metadata.as_ref()) {
                chain.extend(annotations(job_meta));
            }
            owned(
                d.metadata,
                job.and_then(|j| j.spec).map(|s| s.template),
                chain,
            )
        }
        ("", "Pod") => {
            let mut pod: Pod = decode(object, &kind)?;
            let namespace = ns(&pod.metadata);
            pod.metadata.namespace = Some(namespace.clone());
            pod.status = None;
            WorkloadPod {
                kind: kind.clone(),
                name: pod
                    .metadata
                    .name
                    .clone()
                    .or_else(|| pod.metadata.generate_name.as_ref().map(|g| format!("{g}*")))
                    .unwrap_or_default(),
                namespace,
                workload_name: pod.metadata.name.clone(),
                chain_annotations: BTreeMap::new(),
                pod,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(w))
}

fn service_account(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

fn secret_report(item: &SecretItem, store_check: StoreCheck) -> SecretReport {
    SecretReport {
        name: item.secret_name.clone(),
        origin: item.origin.clone(),
        store: item.store.clone(),
        store_check,
        refresh_interval: spec::format_duration(item.refresh_interval),
        rollout: item.rollout.as_str().to_string(),
        keys: item.data.iter().map(|d| d.secret_key.clone()).collect(),
        data: item.data.clone(),
        extract: item.extract.clone(),
        dynamic: item.dynamic.clone(),
        certificate: item.certificate.clone(),
        inject: InjectReport {
            env: item.exposure.env_keys.clone(),
            env_from: item.exposure.env_from,
            files: item.exposure.files.as_ref().map(|f| FilesReport {
                mount_path: f.mount_path.clone(),
                keys: f.keys.clone(),
            }),
        },
        containers: item.containers.clone(),
    }
}

fn has_config(annotations: &BTreeMap<String, String>) -> bool {
    spec::config_annotations(annotations)
        .keys()
        .any(|k| k != spec::ANN_INJECT)
}

/// Admission's decision for one workload's pod, offline.
fn check_workload(
    object: &Object,
    w: WorkloadPod,
    catalog: &Catalog,
    options: &Options,
) -> WorkloadReport {
    let mut report = WorkloadReport {
        file: object.file.clone(),
        document: object.document,
        kind: w.kind.clone(),
        name: w.name.clone(),
        namespace: w.namespace.clone(),
        service_account: service_account(&w.pod),
        result: Outcome::NotInjected,
        denial: None,
        reason: None,
        secrets: Vec::new(),
        patch: Vec::new(),
        warnings: Vec::new(),
        notes: Vec::new(),
    };
    let pod_annotations = w.pod.metadata.annotations.clone().unwrap_or_default();
    if let Some(labels) = catalog.namespaces.get(&w.namespace) {
        if labels.get(OPT_IN_LABEL).map(String::as_str) != Some("enabled") {
            report.notes.push(format!(
                "namespace {} is not labelled {OPT_IN_LABEL}=enabled in this input: the \
                 webhook never sees its pods",
                w.namespace
            ));
        }
    }
    if w.namespace == "kube-system" {
        report
            .notes
            .push("pods in kube-system are never sent to the webhook".into());
    }
    // The same gate as `/mutate`: only the pod's own annotations decide whether it is looked at.
    if !spec::wants_injection(&pod_annotations) {
        report.reason = Some(
            if pod_annotations.get(spec::ANN_INJECT).map(|v| v.trim()) == Some("false") {
                format!("the pod opts out ({}: \"false\")", spec::ANN_INJECT)
            } else if has_config(&w.chain_annotations) {
                format!(
                    "the {}'s own metadata.annotations carry {}… settings but its pod template \
                     has none; the webhook acts only on pods that carry one (put them on the \
                     pod template's annotations)",
                    w.kind,
                    spec::PREFIX
                )
            } else {
                format!("no {}… annotation on the pod template", spec::PREFIX)
            },
        );
        return report;
    }
    let planned = match plan::plan(
        &w.pod,
        w.workload_name.as_deref(),
        &w.chain_annotations,
        options.min_refresh_interval,
    ) {
        Ok(Some(p)) => p,
        Ok(None) => {
            let opted_out =
                w.chain_annotations.get(spec::ANN_INJECT).map(|v| v.trim()) == Some("false");
            report.reason = Some(if opted_out {
                format!(
                    "the {} opts its pods out ({}: \"false\")",
                    w.kind,
                    spec::ANN_INJECT
                )
            } else {
                "the annotations ask for nothing".into()
            });
            return report;
        }
        Err(e) => {
            report.result = Outcome::Denied;
            report.denial = Some(e.to_string());
            return report;
        }
    };
    // Stores in item order, each once: admission's order, so the first denial is the same.
    let mut checks: BTreeMap<StoreRef, StoreCheck> = BTreeMap::new();
    let mut backends: BTreeMap<StoreRef, &'static str> = BTreeMap::new();
    for item in &planned.spec.items {
        if checks.contains_key(&item.store) {
            continue;
        }
        match catalog.check(&item.store, &w.namespace, &options.endpoints) {
            Ok(found) => {
                if let Some((_, backend)) = found {
                    backends.insert(item.store.clone(), backend);
                }
                let check = found.map_or(StoreCheck::Unchecked, |(c, _)| c);
                if check == StoreCheck::Undecided {
                    report.notes.push(format!(
                        "{} admits namespace {} only through a namespaceSelector, and the input \
                         has no Namespace {} with its labels: not decided offline",
                        item.store, w.namespace, w.namespace
                    ));
                }
                checks.insert(item.store.clone(), check);
            }
            Err(e) => {
                report.result = Outcome::Denied;
                report.denial = Some(e.to_string());
                return report;
            }
        }
    }
    for item in &planned.spec.items {
        if let Some(backend) = backends.get(&item.store) {
            if let Err(e) = plan::check_issued_store(item, backend) {
                report.result = Outcome::Denied;
                report.denial = Some(e.to_string());
                return report;
            }
        }
    }
    report.result = Outcome::Injected;
    report.secrets = planned
        .spec
        .items
        .iter()
        .map(|item| secret_report(item, checks[&item.store]))
        .collect();
    report.patch = planned.patch.ops;
    report.warnings = planned.patch.warnings;
    report.notes.push(
        "not checked offline: whether a Secret of the same name already exists and is \
         someone else's, the ServiceAccount, and the backend's values"
            .into(),
    );
    report
}

/// Check `inputs`; `stores` (with `--stores`) are the store objects to check references against.
pub fn render(
    inputs: &[Input],
    stores: Option<&[Input]>,
    options: &Options,
) -> Result<Report, InputError> {
    let mut objects = Vec::new();
    for input in inputs {
        objects.extend(documents(input)?);
    }
    let mut store_objects = Vec::new();
    for input in stores.unwrap_or_default() {
        store_objects.extend(documents(input)?);
    }

    let mut catalog = Catalog::default();
    for object in objects.iter().chain(&store_objects) {
        if let Some((name, labels)) = namespace_labels(object) {
            catalog.namespaces.insert(name, labels);
        }
    }
    let mut store_reports = Vec::new();
    if stores.is_some() {
        let mut entries = Vec::new();
        for object in &store_objects {
            if let Some(kind) = store_kind(object) {
                let (entry, report) = store_entry(object, kind, options);
                entries.push(entry);
                store_reports.push(report);
            }
        }
        catalog.stores = Some(entries);
    }

    let mut workloads = Vec::new();
    let mut skipped = Vec::new();
    for object in &objects {
        match workload_pod(object, options)? {
            Some(w) => workloads.push(check_workload(object, w, &catalog, options)),
            None => {
                let (_, kind) = kind_of(&object.value);
                let reason = if store_kind(object).is_some() {
                    "a store; pass it with --stores to check references against it"
                } else if kind == "Namespace" {
                    "not a workload (its labels are used for the opt-in and store conditions)"
                } else {
                    "not a workload (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, \
                     CronJob or Pod)"
                };
                skipped.push(Skipped {
                    file: object.file.clone(),
                    document: object.document,
                    name: str_at(&object.value, &["metadata", "name"])
                        .unwrap_or_default()
                        .to_string(),
                    kind,
                    reason: reason.into(),
                });
            }
        }
    }
    let summary = Summary {
        workloads: workloads.len(),
        injected: count(&workloads, Outcome::Injected),
        denied: count(&workloads, Outcome::Denied),
        not_injected: count(&workloads, Outcome::NotInjected),
        invalid_stores: store_reports.iter().filter(|s| s.denial.is_some()).count(),
    };
    Ok(Report {
        workloads,
        stores: stores.is_some().then_some(store_reports),
        skipped,
        summary,
    })
}

fn count(workloads: &[WorkloadReport], outcome: Outcome) -> usize {
    workloads.iter().filter(|w| w.result == outcome).count()
}

/// The `render` subcommand: prints the report to stdout and returns the exit code.
pub fn run(args: &RenderArgs) -> i32 {
    let options = Options {
        min_refresh_interval: args.min_refresh_interval,
        endpoints: EndpointPolicy {
            vault: args.allowed_vault_servers.0.clone(),
            aws: args.allowed_aws_endpoints.0.clone(),
        },
        default_namespace: args.namespace.clone(),
    };
    let result = read_inputs(&args.files, args.recursive).and_then(|inputs| {
        let stores = if args.stores.is_empty() {
            None
        } else {
            Some(read_inputs(&args.stores, args.recursive)?)
        };
        render(&inputs, stores.as_deref(), &options)
    });
    match result {
        Ok(report) => {
            match args.output {
                RenderOutput::Text => print!("{}", report.to_text()),
                RenderOutput::Json => print!("{}", report.to_json()),
            }
            report.exit_code()
        }
        Err(e) => {
            eprintln!("secret-injector render: {e}");
            EXIT_INPUT
        }
    }
}

#[cfg(test)]
mod tests;
