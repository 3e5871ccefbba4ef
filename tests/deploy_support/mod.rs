//! Helpers for tests/kustomize.rs: a throwaway copy of the install files, `kubectl kustomize`,
//! type checks for every rendered kind, and the binary's `--help` as data.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
pub const BIN: &str = env!("CARGO_BIN_EXE_secret-injector");

/// deploy/, certs/ (without any generated keys), Makefile and README.md in a temp dir.
pub struct Checkout {
    dir: tempfile::TempDir,
}

impl Checkout {
    pub fn bare() -> Checkout {
        let dir = tempfile::tempdir().unwrap();
        for entry in ["deploy", "certs"] {
            copy_tree(&Path::new(REPO).join(entry), &dir.path().join(entry));
        }
        for file in ["Makefile", "README.md", "Dockerfile"] {
            std::fs::copy(Path::new(REPO).join(file), dir.path().join(file)).unwrap();
        }
        Checkout { dir }
    }

    /// With the keys both installs read: `secret-injector certs` (what `make certs` runs) and
    /// `make hmac-key`.
    pub fn with_keys() -> Checkout {
        let co = Checkout::bare();
        let status = Command::new(BIN)
            .args(["certs", "--namespace", "secret-injector"])
            .args(["--service", "secret-injector", "--out-dir"])
            .arg(co.path().join("certs/self-signed/generated"))
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        co.sh("make hmac-key");
        co
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `kubectl kustomize <dir>` (what `kubectl apply -k <dir>` applies), parsed.
    pub fn render(&self, dir: &str) -> Vec<Value> {
        let out = Command::new(kubectl())
            .arg("kustomize")
            .arg(self.path().join(dir))
            .output()
            .expect("running kubectl kustomize");
        assert!(
            out.status.success(),
            "kubectl kustomize {dir} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_stream(&String::from_utf8(out.stdout).unwrap())
    }

    /// Render `install` with the named components enabled the documented way: uncommenting
    /// their lines in its kustomization.yaml.
    pub fn render_with_components(&self, install: &str, components: &[&str]) -> Vec<Value> {
        let file = self.path().join(install).join("kustomization.yaml");
        let original = std::fs::read_to_string(&file).unwrap();
        let mut edited = original.clone();
        for component in components {
            let line = original
                .lines()
                .find(|l| {
                    l.trim_start().starts_with("# - ")
                        && l.ends_with(&format!("components/{component}"))
                })
                .unwrap_or_else(|| {
                    panic!("{install}/kustomization.yaml has no commented {component} line")
                });
            edited = edited.replace(line, &line.replacen("# - ", "- ", 1));
        }
        std::fs::write(&file, &edited).unwrap();
        let objects = self.render(install);
        std::fs::write(&file, original).unwrap();
        objects
    }

    /// A kustomization in `tests-overlays/<name>/`; returns its directory for `render`.
    pub fn write_overlay(&self, name: &str, kustomization: &str) -> String {
        let dir = format!("tests-overlays/{name}");
        std::fs::create_dir_all(self.path().join(&dir)).unwrap();
        std::fs::write(
            self.path().join(&dir).join("kustomization.yaml"),
            kustomization,
        )
        .unwrap();
        dir
    }

    /// Run one shell line here; `make` runs the CLI through the built binary.
    pub fn sh(&self, line: &str) -> String {
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", line])
            .current_dir(self.path())
            .env("SECRET_INJECTOR", BIN)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`{line}` failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Run install lines in order; the first `kubectl apply -k DIR` becomes
    /// `kubectl kustomize DIR`, whose output is returned (nothing after it runs).
    pub fn run_until_kustomize(&self, lines: &[&str]) -> Vec<Value> {
        for line in lines {
            let command = line.split(" #").next().unwrap().trim();
            if let Some(dir) = command.strip_prefix("kubectl apply -k ") {
                return self.render(dir.trim());
            }
            assert!(
                !command.starts_with("kubectl"),
                "`{command}` needs a cluster before the kustomize step"
            );
            self.sh(command);
        }
        panic!("no `kubectl apply -k` line in {lines:?}");
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "generated" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

pub fn kubectl() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .expect("kubectl not found on PATH: run `make tools` (installs Debian's kubernetes-client)")
}

/// YAML stream → objects, with base64 fields that kustomize folds over lines made whole again
/// (the API server's decoder skips the newlines; a strict one does not).
pub fn parse_stream(text: &str) -> Vec<Value> {
    let mut objects: Vec<Value> = serde_saphyr::from_multiple::<Value>(text)
        .expect("kustomize output is YAML")
        .into_iter()
        .filter(|v| !v.is_null())
        .collect();
    let unfold = |v: &mut Value| {
        if let Some(s) = v.as_str() {
            *v = Value::String(s.split_whitespace().collect());
        }
    };
    for object in &mut objects {
        if object["kind"] == "Secret" {
            if let Some(data) = object.get_mut("data").and_then(Value::as_object_mut) {
                data.values_mut().for_each(unfold);
            }
        }
        if let Some(hooks) = object.get_mut("webhooks").and_then(Value::as_array_mut) {
            for hook in hooks {
                if let Some(bundle) = hook.pointer_mut("/clientConfig/caBundle") {
                    unfold(bundle);
                }
            }
        }
    }
    objects
}

pub fn is_cluster_scoped(object: &Value) -> bool {
    [
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ]
    .contains(&object["kind"].as_str().unwrap_or_default())
}

pub fn try_find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    try_find(objects, kind, name).unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

pub fn typed<T: DeserializeOwned>(object: &Value) -> T {
    serde_json::from_value(object.clone()).unwrap()
}

pub fn all_of<T: DeserializeOwned>(objects: &[Value], kind: &str) -> Vec<T> {
    objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .map(|o| typed(o))
        .collect()
}

/// Parse `object` as the type its apiVersion/kind names. Kubernetes kinds must also survive a
/// round trip unchanged, so a misspelt or misplaced field (which the typed parse would drop)
/// fails too. Custom resources are checked against the required fields of their published
/// schemas (the structs below).
pub fn check_type(object: &Value) -> Result<(), String> {
    use k8s_openapi::api::{
        admissionregistration::v1 as adm, apps::v1 as apps, core::v1 as core,
        networking::v1 as net, policy::v1 as policy, rbac::v1 as rbac,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
    let api = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    match (api, kind) {
        ("v1", "Namespace") => exact::<core::Namespace>(object),
        ("v1", "ServiceAccount") => exact::<core::ServiceAccount>(object),
        ("v1", "Secret") => exact::<core::Secret>(object),
        ("v1", "ConfigMap") => exact::<core::ConfigMap>(object),
        ("v1", "Service") => exact::<core::Service>(object),
        ("apps/v1", "Deployment") => exact::<apps::Deployment>(object),
        ("policy/v1", "PodDisruptionBudget") => exact::<policy::PodDisruptionBudget>(object),
        ("rbac.authorization.k8s.io/v1", "Role") => exact::<rbac::Role>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => exact::<rbac::ClusterRole>(object),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => exact::<rbac::RoleBinding>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            exact::<rbac::ClusterRoleBinding>(object)
        }
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            exact::<ext::CustomResourceDefinition>(object)
        }
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
            exact::<adm::MutatingWebhookConfiguration>(object)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {
            exact::<adm::ValidatingWebhookConfiguration>(object)
        }
        ("networking.k8s.io/v1", "NetworkPolicy") => exact::<net::NetworkPolicy>(object),
        ("cert-manager.io/v1", "Certificate") => custom::<Certificate>(object),
        ("cert-manager.io/v1", "Issuer") => {
            let issuer: Issuer = custom_parse(object)?;
            let kinds = [issuer.spec.ca.is_some(), issuer.spec.self_signed.is_some()];
            match kinds.iter().filter(|k| **k).count() {
                1 => Ok(()),
                n => Err(format!("Issuer {}: {n} issuer types", issuer.metadata.name)),
            }
        }
        ("monitoring.coreos.com/v1", "ServiceMonitor") => custom::<ServiceMonitor>(object),
        ("monitoring.coreos.com/v1", "PrometheusRule") => custom::<PrometheusRule>(object),
        other => Err(format!(
            "no type check for {other:?}: add one to check_type"
        )),
    }
}

fn exact<T: DeserializeOwned + Serialize>(object: &Value) -> Result<(), String> {
    let name = format!("{} {}", object["kind"], object["metadata"]["name"]);
    let typed: T = serde_path_to_error::deserialize(object.clone())
        .map_err(|e| format!("{name}: {} at {}", e.inner(), e.path()))?;
    let back = serde_json::to_value(&typed).unwrap();
    match first_difference(object, &back, String::new()) {
        None => Ok(()),
        Some(path) => Err(format!(
            "{name}: {path} is not a field of the type (or changed)"
        )),
    }
}

fn first_difference(a: &Value, b: &Value, path: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .iter()
            .find_map(|(k, v)| match y.get(k) {
                None => Some(format!("{path}.{k}")),
                Some(w) => first_difference(v, w, format!("{path}.{k}")),
            })
            .or_else(|| {
                y.keys()
                    .find(|k| !x.contains_key(*k))
                    .map(|k| format!("{path}.{k} (added)"))
            }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, format!("{path}[{i}]"))),
        // Numbers may come back as another representation of the same value.
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ if a == b => None,
        _ => Some(path),
    }
}

fn custom<T: DeserializeOwned>(object: &Value) -> Result<(), String> {
    custom_parse::<T>(object).map(|_| ())
}

fn custom_parse<T: DeserializeOwned>(object: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(object.clone()).map_err(|e| {
        format!(
            "{} {}: {} at {}",
            object["kind"],
            object["metadata"]["name"],
            e.inner(),
            e.path()
        )
    })
}

// Custom resources, as far as their published CRD schemas require (plus the fields the tests
// read). cert-manager.io/v1: Certificate.spec requires secretName and issuerRef (issuerRef
// requires name); Issuer.spec has exactly one issuer type, `ca` requires secretName.
// monitoring.coreos.com/v1: ServiceMonitor.spec requires selector (and endpoints before
// Prometheus Operator 0.75); PrometheusRule groups[] require name, rules[] require expr.
//
// Fields marked `allow(dead_code)` are never read by a test: they are there so the parse fails
// when one is missing or of the wrong type (serde ignores fields a struct does not name).

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub name: String,
    pub namespace: Option<String>,
    #[allow(dead_code)]
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[allow(dead_code)]
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
pub struct Certificate {
    pub metadata: Meta,
    pub spec: CertificateSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    pub secret_name: String,
    pub issuer_ref: IssuerRef,
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(default, rename = "isCA")]
    pub is_ca: bool,
    #[serde(default)]
    pub usages: Vec<String>,
    #[allow(dead_code)]
    pub duration: Option<String>,
    #[allow(dead_code)]
    pub renew_before: Option<String>,
}

#[derive(Deserialize)]
pub struct IssuerRef {
    pub name: String,
    #[allow(dead_code)]
    pub kind: Option<String>,
    #[allow(dead_code)]
    pub group: Option<String>,
}

#[derive(Deserialize)]
pub struct Issuer {
    pub metadata: Meta,
    pub spec: IssuerSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuerSpec {
    pub ca: Option<CaIssuer>,
    pub self_signed: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaIssuer {
    pub secret_name: String,
}

#[derive(Deserialize)]
pub struct ServiceMonitor {
    #[allow(dead_code)]
    pub metadata: Meta,
    pub spec: ServiceMonitorSpec,
}

#[derive(Deserialize)]
pub struct ServiceMonitorSpec {
    pub selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    pub endpoints: Vec<MonitorEndpoint>,
}

#[derive(Deserialize)]
pub struct MonitorEndpoint {
    pub port: Option<String>,
    pub path: Option<String>,
    #[allow(dead_code)]
    pub scheme: Option<String>,
    #[allow(dead_code)]
    pub interval: Option<String>,
}

#[derive(Deserialize)]
pub struct PrometheusRule {
    #[allow(dead_code)]
    pub metadata: Meta,
    pub spec: PrometheusRuleSpec,
}

#[derive(Deserialize)]
pub struct PrometheusRuleSpec {
    pub groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
pub struct RuleGroup {
    #[allow(dead_code)]
    pub name: String,
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
pub struct Rule {
    pub alert: Option<String>,
    #[allow(dead_code)]
    pub record: Option<String>,
    #[allow(dead_code)]
    pub expr: String,
    #[allow(dead_code)]
    #[serde(rename = "for")]
    pub for_: Option<String>,
    #[allow(dead_code)]
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `secret-injector <args> --help`: long flag names, env variables, and each flag's text.
pub struct Help {
    pub flags: BTreeSet<String>,
    pub envs: BTreeSet<String>,
    texts: BTreeMap<String, String>,
}

impl Help {
    pub fn of(args: &[&str]) -> Help {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let mut help = Help {
            flags: BTreeSet::new(),
            envs: BTreeSet::new(),
            texts: BTreeMap::new(),
        };
        let mut current: Option<String> = None;
        for line in text.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with('-') {
                let flag = trimmed
                    .split_whitespace()
                    .find_map(|t| t.strip_prefix("--"))
                    .map(|f| f.trim_end_matches(',').to_string());
                if let Some(flag) = &flag {
                    help.flags.insert(flag.clone());
                }
                current = flag;
            }
            if let Some(flag) = &current {
                let entry = help.texts.entry(flag.clone()).or_default();
                entry.push_str(trimmed);
                entry.push(' ');
            }
            let mut rest = line;
            while let Some(at) = rest.find("[env: ") {
                rest = &rest[at + 6..];
                let end = rest.find(['=', ']']).unwrap();
                help.envs.insert(rest[..end].to_string());
            }
        }
        help
    }

    pub fn text_of(&self, flag: &str) -> String {
        self.texts.get(flag).cloned().unwrap_or_default()
    }

    pub fn default(&self, flag: &str) -> String {
        self.try_default(flag)
            .unwrap_or_else(|| panic!("--{flag} has no default: {}", self.text_of(flag)))
    }

    pub fn try_default(&self, flag: &str) -> Option<String> {
        let text = self.text_of(flag);
        let rest = &text[text.find("[default: ")? + 10..];
        Some(rest[..rest.find(']')?].to_string())
    }
}

/// `30s`, `2m`, `1m30s` → seconds.
pub fn parse_seconds(value: &str) -> i64 {
    let mut total = 0;
    let mut number = String::new();
    for c in value.chars() {
        if c.is_ascii_digit() {
            number.push(c);
        } else {
            let n: i64 = number.parse().unwrap_or(0);
            number.clear();
            total += match c {
                'h' => n * 3600,
                'm' => n * 60,
                _ => n,
            };
        }
    }
    total + number.parse::<i64>().unwrap_or(0)
}

/// `USER uid:gid` of the Dockerfile's final stage.
pub fn dockerfile_user() -> (i64, i64) {
    let text = std::fs::read_to_string(format!("{REPO}/Dockerfile")).unwrap();
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the Dockerfile sets USER");
    let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
    (uid.parse().unwrap(), gid.parse().unwrap())
}

/// `newName:newTag` of the one `images:` entry in deploy/base/kustomization.yaml.
pub fn base_image() -> String {
    let text = std::fs::read_to_string(format!("{REPO}/deploy/base/kustomization.yaml")).unwrap();
    let k: Value = serde_saphyr::from_str(&text).unwrap();
    let images = k["images"].as_array().expect("images: in the base");
    assert_eq!(images.len(), 1);
    format!(
        "{}:{}",
        images[0]["newName"].as_str().unwrap(),
        images[0]["newTag"].as_str().unwrap()
    )
}

pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The ```sh block after `<!-- install: NAME -->` in README.md.
pub fn readme_block(name: &str) -> String {
    let readme = std::fs::read_to_string(format!("{REPO}/README.md")).unwrap();
    let marker = format!("<!-- install: {name} -->");
    let at = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"));
    let rest = &readme[at..];
    let start = rest
        .find("```sh\n")
        .expect("a ```sh block after the marker")
        + 6;
    let end = rest[start..].find("```").unwrap();
    rest[start..start + end].to_string()
}
