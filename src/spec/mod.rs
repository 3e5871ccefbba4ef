//! Annotations → [`InjectionSpec`]. Pure: no I/O. Every error names the annotation key (and,
//! for the full form, the item and field) and says what was expected.

mod duration;
mod full;
mod names;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use duration::{format_duration, parse_duration};
pub use names::{is_dns1123_label, is_dns1123_subdomain, is_env_var_name, is_secret_key};

/// Prefix of every annotation, label and condition this project reads or writes.
pub const PREFIX: &str = "secret-injector.io/";
pub const ANN_STORE: &str = "secret-injector.io/store";
pub const ANN_ENV_PREFIX: &str = "secret-injector.io/env.";
pub const ANN_FILE_PREFIX: &str = "secret-injector.io/file.";
pub const ANN_EXTRACT: &str = "secret-injector.io/extract";
pub const ANN_REFRESH_INTERVAL: &str = "secret-injector.io/refresh-interval";
pub const ANN_SECRET_NAME: &str = "secret-injector.io/secret-name";
pub const ANN_MOUNT_PATH: &str = "secret-injector.io/mount-path";
pub const ANN_CONTAINERS: &str = "secret-injector.io/containers";
pub const ANN_ROLLOUT: &str = "secret-injector.io/rollout";
pub const ANN_EXTERNAL_SECRETS: &str = "secret-injector.io/external-secrets";
pub const ANN_INJECT: &str = "secret-injector.io/inject";
/// Written by the webhook onto the pod.
pub const ANN_STATUS: &str = "secret-injector.io/status";
pub const ANN_SECRETS: &str = "secret-injector.io/secrets";
/// Written by the refresher onto pod templates / read on managed Secrets.
pub const ANN_RESTARTED_AT: &str = "secret-injector.io/restarted-at";
pub const ANN_FORCE_SYNC: &str = "secret-injector.io/force-sync";

pub const DEFAULT_MOUNT_PATH: &str = "/var/run/secret-injector";
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(3600);
/// Remote values one pod may ask for (data entries plus extract keys, over every item):
/// each one is a backend read at admission, so a pod with thousands would fan out.
pub const MAX_KEYS_PER_POD: usize = 256;

/// Annotation keys under our prefix that we write ourselves or that belong to later stages;
/// they are allowed on pods and ignored by the parser.
const OUTPUT_KEYS: [&str; 4] = [ANN_STATUS, ANN_SECRETS, ANN_RESTARTED_AT, ANN_FORCE_SYNC];

const SHORT_FORM_KEYS: [&str; 7] = [
    ANN_STORE,
    ANN_EXTRACT,
    ANN_REFRESH_INTERVAL,
    ANN_SECRET_NAME,
    ANN_MOUNT_PATH,
    ANN_CONTAINERS,
    ANN_ROLLOUT,
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("annotation {key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

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

/// Keys under our prefix that carry configuration (as opposed to our own outputs).
pub fn config_annotations(annotations: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    annotations
        .iter()
        .filter(|(k, _)| k.starts_with(PREFIX) && !OUTPUT_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// True when the pod asks for injection at all: it carries one of our configuration
/// annotations and has not opted out. Decides whether any API call is made.
pub fn wants_injection(pod_annotations: &BTreeMap<String, String>) -> bool {
    if pod_annotations.get(ANN_INJECT).map(|v| v.trim()) == Some("false") {
        return false;
    }
    config_annotations(pod_annotations)
        .keys()
        .any(|k| k != ANN_INJECT)
}

/// Parse the merged annotations (workload's, overlaid by the pod's) into a spec.
/// `Ok(None)` when the pod opted out or asks for nothing.
pub fn parse(
    annotations: &BTreeMap<String, String>,
    ctx: &ParseContext<'_>,
) -> Result<Option<InjectionSpec>, SpecError> {
    let config = config_annotations(annotations);
    if let Some(v) = config.get(ANN_INJECT) {
        match v.trim() {
            "false" => return Ok(None),
            "true" | "enabled" => {}
            other => {
                return Err(invalid(
                    ANN_INJECT,
                    format!("expected \"true\", \"enabled\" or \"false\", got {other:?}"),
                ))
            }
        }
    }
    for key in config.keys() {
        let known = key == ANN_INJECT
            || key == ANN_EXTERNAL_SECRETS
            || SHORT_FORM_KEYS.contains(&key.as_str())
            || key.starts_with(ANN_ENV_PREFIX)
            || key.starts_with(ANN_FILE_PREFIX);
        if !known {
            return Err(invalid(
                key,
                "unknown annotation; known keys are store, env.<KEY>, file.<KEY>, extract, \
                 refresh-interval, secret-name, mount-path, containers, rollout, \
                 external-secrets and inject (see the annotation reference)",
            ));
        }
    }

    let items = if let Some(full) = config.get(ANN_EXTERNAL_SECRETS) {
        let short: Vec<&str> = config
            .keys()
            .filter(|k| {
                SHORT_FORM_KEYS.contains(&k.as_str())
                    || k.starts_with(ANN_ENV_PREFIX)
                    || k.starts_with(ANN_FILE_PREFIX)
            })
            .map(String::as_str)
            .collect();
        if !short.is_empty() {
            return Err(invalid(
                ANN_EXTERNAL_SECRETS,
                format!(
                    "the full form cannot be mixed with short-form annotations ({}); \
                     move them into the external-secrets list or drop external-secrets",
                    short.join(", ")
                ),
            ));
        }
        full::parse(full, ctx)?
    } else {
        // Count before parsing so a pod with thousands of keys costs no more than a count.
        let requested = config
            .keys()
            .filter(|k| k.starts_with(ANN_ENV_PREFIX) || k.starts_with(ANN_FILE_PREFIX))
            .count()
            + config.get(ANN_EXTRACT).map_or(0, |v| v.split(',').count());
        check_key_budget(&config, requested)?;
        match parse_short(&config, ctx)? {
            Some(item) => vec![item],
            None => return Ok(None),
        }
    };
    let count: usize = items.iter().map(|i| i.data.len() + i.extract.len()).sum();
    check_key_budget(&config, count)?;
    check_cross_item_conflicts(&items)?;
    Ok(Some(InjectionSpec { items }))
}

fn parse_short(
    config: &BTreeMap<String, String>,
    ctx: &ParseContext<'_>,
) -> Result<Option<SecretItem>, SpecError> {
    let mut data = Vec::new();
    let mut env_keys = Vec::new();
    let mut file_keys = Vec::new();
    let mut seen_keys: BTreeMap<String, String> = BTreeMap::new();

    for (key, value) in config {
        let (secret_key, as_env) = if let Some(k) = key.strip_prefix(ANN_ENV_PREFIX) {
            (k, true)
        } else if let Some(k) = key.strip_prefix(ANN_FILE_PREFIX) {
            (k, false)
        } else {
            continue;
        };
        if secret_key.is_empty() {
            return Err(invalid(key, "the name after the dot is empty"));
        }
        if as_env && !is_env_var_name(secret_key) {
            return Err(invalid(
                key,
                format!(
                    "{secret_key:?} is not a valid environment variable name \
                     (letters, digits and '_', not starting with a digit)"
                ),
            ));
        }
        if !as_env && !is_secret_key(secret_key) {
            return Err(invalid(
                key,
                format!(
                    "{secret_key:?} is not a valid file name for a Secret key \
                     (letters, digits, '-', '_' and '.')"
                ),
            ));
        }
        if let Some(other) = seen_keys.insert(secret_key.to_string(), key.clone()) {
            return Err(invalid(
                key,
                format!("duplicate target key {secret_key:?}: also produced by {other}"),
            ));
        }
        let remote_ref = parse_short_ref(key, value)?;
        data.push(DataRef {
            secret_key: secret_key.to_string(),
            remote_ref,
        });
        if as_env {
            env_keys.push(secret_key.to_string());
        } else {
            file_keys.push(secret_key.to_string());
        }
    }

    let mut extract = Vec::new();
    if let Some(list) = config.get(ANN_EXTRACT) {
        for part in list.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(invalid(
                    ANN_EXTRACT,
                    "expected a comma-separated list of remote keys, found an empty entry",
                ));
            }
            if part.contains('#') {
                return Err(invalid(
                    ANN_EXTRACT,
                    format!(
                        "{part:?}: extract takes whole remote keys; a #property selects one \
                         value, use env.<KEY> for that"
                    ),
                ));
            }
            check_remote_key(ANN_EXTRACT, part)?;
            let r = RemoteRef {
                key: part.to_string(),
                property: None,
                version: None,
            };
            if extract.contains(&r) {
                return Err(invalid(ANN_EXTRACT, format!("{part:?} is listed twice")));
            }
            extract.push(r);
        }
    }

    let has_sources = !data.is_empty() || !extract.is_empty();
    let store = match config.get(ANN_STORE) {
        Some(v) => Some(parse_store_ref(ANN_STORE, v)?),
        None => None,
    };
    let store = match (store, has_sources) {
        (Some(s), true) => s,
        (None, true) => {
            return Err(invalid(
                ANN_STORE,
                "missing: set it to a SecretStore name in this namespace or \
                 ClusterSecretStore/<name>",
            ))
        }
        (Some(_), false) => {
            return Err(invalid(
                ANN_STORE,
                "is set but nothing is requested: add secret-injector.io/env.<KEY>, \
                 secret-injector.io/file.<KEY> or secret-injector.io/extract",
            ))
        }
        (None, false) => {
            // Only modifiers (refresh-interval, rollout, …) and no sources: nothing to inject,
            // but a modifier without a source is almost certainly a mistake.
            if let Some(k) = config.keys().find(|k| k.as_str() != ANN_INJECT) {
                return Err(invalid(
                    k.clone(),
                    "has no effect without secret-injector.io/store and at least one \
                     env.<KEY>, file.<KEY> or extract annotation",
                ));
            }
            return Ok(None);
        }
    };

    let refresh_interval = match config.get(ANN_REFRESH_INTERVAL) {
        Some(v) => parse_interval(ANN_REFRESH_INTERVAL, v, ctx.min_refresh_interval)?,
        None => DEFAULT_REFRESH_INTERVAL,
    };
    let secret_name = match config.get(ANN_SECRET_NAME) {
        Some(v) => {
            let v = v.trim();
            if !is_dns1123_subdomain(v) {
                return Err(invalid(
                    ANN_SECRET_NAME,
                    format!(
                        "{v:?} is not a valid Secret name (lowercase DNS-1123 subdomain, \
                         at most 253 characters)"
                    ),
                ));
            }
            v.to_string()
        }
        None => {
            let derived = default_secret_name(ctx.workload_name).ok_or_else(|| {
                invalid(
                    ANN_SECRET_NAME,
                    "missing: the pod has neither an owning workload nor a name to derive \
                     the Secret name from; set secret-injector.io/secret-name",
                )
            })?;
            if !is_dns1123_subdomain(&derived) {
                return Err(invalid(
                    ANN_SECRET_NAME,
                    format!(
                        "missing, and the name derived from the workload ({:?}) is not a \
                         valid Secret name; set secret-injector.io/secret-name",
                        truncate_utf8(&derived, 64)
                    ),
                ));
            }
            derived
        }
    };
    let mount_path = match config.get(ANN_MOUNT_PATH) {
        Some(v) => {
            if file_keys.is_empty() {
                return Err(invalid(
                    ANN_MOUNT_PATH,
                    "is set but no secret-injector.io/file.<KEY> annotation asks for files",
                ));
            }
            check_mount_path(ANN_MOUNT_PATH, v)?
        }
        None => DEFAULT_MOUNT_PATH.to_string(),
    };
    let containers = match config.get(ANN_CONTAINERS) {
        Some(v) => Some(parse_containers(ANN_CONTAINERS, v, ctx.container_names)?),
        None => None,
    };
    let rollout = match config.get(ANN_ROLLOUT) {
        Some(v) => parse_rollout(ANN_ROLLOUT, v)?,
        None => Rollout::Restart,
    };

    let origin = "short-form annotations".to_string();
    Ok(Some(SecretItem {
        origin,
        secret_name,
        store,
        refresh_interval,
        data,
        extract: extract.clone(),
        exposure: Exposure {
            env_keys,
            env_from: !extract.is_empty(),
            files: if file_keys.is_empty() {
                None
            } else {
                Some(FileMount {
                    mount_path,
                    keys: Some(file_keys),
                })
            },
        },
        containers,
        rollout,
    }))
}

/// `<name>-injected`, trimmed so the result is still a valid Secret name.
pub fn default_secret_name(workload: Option<&str>) -> Option<String> {
    let base = workload?.trim_end_matches('-');
    if base.is_empty() {
        return None;
    }
    let base = truncate_utf8(base, 253 - "-injected".len());
    Some(format!("{}-injected", base.trim_end_matches(['-', '.'])))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
/// Every place that cuts a string to a byte length goes through this: names come from
/// untrusted reviews and may be multi-byte.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// Deny a pod asking for more remote values than [`MAX_KEYS_PER_POD`], naming the count.
fn check_key_budget(config: &BTreeMap<String, String>, count: usize) -> Result<(), SpecError> {
    if count <= MAX_KEYS_PER_POD {
        return Ok(());
    }
    let field = if config.contains_key(ANN_EXTERNAL_SECRETS) {
        ANN_EXTERNAL_SECRETS.to_string()
    } else {
        format!("{ANN_ENV_PREFIX}*, {ANN_FILE_PREFIX}* and {ANN_EXTRACT}")
    };
    Err(invalid(
        field,
        format!(
            "the pod asks for {count} remote values; at most {MAX_KEYS_PER_POD} are allowed per \
             pod (each one is a backend read at admission): split the workload or use extract \
             on fewer, larger remote secrets"
        ),
    ))
}

fn parse_short_ref(key: &str, value: &str) -> Result<RemoteRef, SpecError> {
    let value = value.trim();
    let (remote, property) = match value.split_once('#') {
        Some((k, p)) => (k, Some(p)),
        None => (value, None),
    };
    check_remote_key(key, remote)?;
    if let Some(p) = property {
        check_property(key, p)?;
    }
    Ok(RemoteRef {
        key: remote.to_string(),
        property: property.map(str::to_string),
        version: None,
    })
}

/// Remote keys are paths or names in the backend. They must not be able to escape the
/// store's mount (`..`), smuggle a query, or be empty.
pub(crate) fn check_remote_key(field: &str, key: &str) -> Result<(), SpecError> {
    if key.is_empty() {
        return Err(invalid(
            field,
            "expected <remote-key>[#<property>], the remote key is empty",
        ));
    }
    if key.len() > 2048 {
        return Err(invalid(
            field,
            "the remote key is longer than 2048 characters",
        ));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            field,
            format!("remote key {key:?} contains whitespace or control characters"),
        ));
    }
    if key.contains(['?', '%', '\\']) {
        return Err(invalid(
            field,
            format!("remote key {key:?} may not contain '?', '%' or '\\'"),
        ));
    }
    if key.starts_with('/') || key.ends_with('/') {
        return Err(invalid(
            field,
            format!(
                "remote key {key:?} must not start or end with '/': it is relative to \
                 the store's path"
            ),
        ));
    }
    if key
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(invalid(
            field,
            format!("remote key {key:?} has an empty, '.' or '..' path segment"),
        ));
    }
    Ok(())
}

fn check_property(field: &str, property: &str) -> Result<(), SpecError> {
    if property.is_empty() {
        return Err(invalid(
            field,
            "the #property after the remote key is empty",
        ));
    }
    if property.chars().any(|c| c.is_control()) || property.len() > 256 {
        return Err(invalid(
            field,
            format!("property {property:?} is not a valid field name"),
        ));
    }
    Ok(())
}

pub(crate) fn parse_store_ref(field: &str, value: &str) -> Result<StoreRef, SpecError> {
    let value = value.trim();
    let (kind, name) = match value.split_once('/') {
        Some(("ClusterSecretStore", name)) => (StoreKind::ClusterSecretStore, name),
        Some(("SecretStore", name)) => (StoreKind::SecretStore, name),
        Some((kind, _)) => {
            return Err(invalid(
                field,
                format!("unknown store kind {kind:?}; expected NAME or ClusterSecretStore/NAME"),
            ))
        }
        None => (StoreKind::SecretStore, value),
    };
    if !is_dns1123_subdomain(name) {
        return Err(invalid(
            field,
            format!("{name:?} is not a valid store name (lowercase DNS-1123 subdomain)"),
        ));
    }
    Ok(StoreRef {
        kind,
        name: name.to_string(),
    })
}

pub(crate) fn parse_interval(
    field: &str,
    value: &str,
    min: Duration,
) -> Result<Duration, SpecError> {
    let d = parse_duration(value.trim()).map_err(|e| {
        invalid(
            field,
            format!(
                "{value:?} is not a duration: {e} (examples: 30s, 15m, 1h, 1h30m; 0 = fetch once)"
            ),
        )
    })?;
    if !d.is_zero() && d < min {
        return Err(invalid(
            field,
            format!(
                "{value:?} is shorter than the minimum refresh interval of {} set by the operator",
                format_duration(min)
            ),
        ));
    }
    Ok(d)
}

pub(crate) fn check_mount_path(field: &str, value: &str) -> Result<String, SpecError> {
    let v = value.trim();
    if !v.starts_with('/') {
        return Err(invalid(field, format!("{v:?} is not an absolute path")));
    }
    if v.contains(':') || v.split('/').any(|s| s == "..") || v.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("{v:?} may not contain ':' or '..' segments"),
        ));
    }
    let trimmed = v.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(invalid(field, "cannot mount over /"));
    }
    Ok(trimmed.to_string())
}

pub(crate) fn parse_containers(
    field: &str,
    value: &str,
    existing: &[String],
) -> Result<Vec<String>, SpecError> {
    let mut out: Vec<String> = Vec::new();
    for name in value.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(invalid(
                field,
                "expected a comma-separated list of container names, found an empty entry",
            ));
        }
        check_container(field, name, existing)?;
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

pub(crate) fn check_container(
    field: &str,
    name: &str,
    existing: &[String],
) -> Result<(), SpecError> {
    if !existing.iter().any(|c| c == name) {
        return Err(invalid(
            field,
            format!(
                "container {name:?} is not in this pod (containers: {})",
                existing.join(", ")
            ),
        ));
    }
    Ok(())
}

pub(crate) fn parse_rollout(field: &str, value: &str) -> Result<Rollout, SpecError> {
    match value.trim() {
        "restart" => Ok(Rollout::Restart),
        "none" => Ok(Rollout::None),
        other => Err(invalid(
            field,
            format!("expected \"restart\" or \"none\", got {other:?}"),
        )),
    }
}

/// Conflicts that only show across items: the same Secret twice, the same env var twice,
/// the same mount path twice.
fn check_cross_item_conflicts(items: &[SecretItem]) -> Result<(), SpecError> {
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    let mut env: BTreeMap<&str, &str> = BTreeMap::new();
    let mut mounts: BTreeMap<&str, &str> = BTreeMap::new();
    for item in items {
        if let Some(other) = names.insert(&item.secret_name, &item.origin) {
            return Err(invalid(
                item.origin.clone(),
                format!(
                    "Secret name {:?} is also used by {other}; each item needs its own name",
                    item.secret_name
                ),
            ));
        }
        for k in &item.exposure.env_keys {
            if let Some(other) = env.insert(k, &item.origin) {
                return Err(invalid(
                    item.origin.clone(),
                    format!("duplicate env var {k:?}: also produced by {other}"),
                ));
            }
        }
        if let Some(f) = &item.exposure.files {
            if let Some(other) = mounts.insert(&f.mount_path, &item.origin) {
                return Err(invalid(
                    item.origin.clone(),
                    format!(
                        "mount path {:?} is also used by {other}; give each item its own mountPath",
                        f.mount_path
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Keys a set of data refs will produce, checked for duplicates (used by the full form).
pub(crate) fn unique_secret_keys<'a>(
    field: &str,
    keys: impl Iterator<Item = &'a str>,
) -> Result<BTreeSet<&'a str>, SpecError> {
    let mut set = BTreeSet::new();
    for k in keys {
        if !set.insert(k) {
            return Err(invalid(field, format!("duplicate target key {k:?}")));
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests;
