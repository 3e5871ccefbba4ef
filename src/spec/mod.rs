//! Annotations → [`InjectionSpec`]. Pure: no I/O. Every error names the annotation key (and,
//! for the full form, the item and field) and says what was expected.

mod annotations;
mod duration;
mod full;
mod issued;
mod names;
mod short;
mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub use annotations::*;
pub use duration::{format_duration, parse_duration};
pub use names::{is_dns1123_label, is_dns1123_subdomain, is_env_var_name, is_secret_key};
pub use short::default_secret_name;
pub use types::*;

/// Remote values one pod may ask for (data entries plus extract keys, over every item):
/// each one is a backend read at admission, so a pod with thousands would fan out.
pub const MAX_KEYS_PER_POD: usize = 256;

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

/// Keys under our prefix that carry configuration (as opposed to our own outputs).
pub fn config_annotations(annotations: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    annotations
        .iter()
        .filter(|(k, _)| is_config_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Ours, and not one of the annotations the webhook writes itself.
pub fn is_config_key(key: &str) -> bool {
    key.starts_with(PREFIX) && !OUTPUT_KEYS.contains(&key)
}

/// True when the pod asks for injection at all: it carries one of our configuration
/// annotations and has not opted out. Decides whether any API call is made.
pub fn wants_injection<'a, K, V>(pod_annotations: impl IntoIterator<Item = (&'a K, &'a V)>) -> bool
where
    K: AsRef<str> + ?Sized + 'a,
    V: AsRef<str> + ?Sized + 'a,
{
    let mut asks = false;
    for (key, value) in pod_annotations {
        let key = key.as_ref();
        if key == ANN_INJECT {
            if value.as_ref().trim() == "false" {
                return false;
            }
        } else if is_config_key(key) {
            asks = true;
        }
    }
    asks
}

/// Parse the merged annotations (workload's, overlaid by the pod's) into a spec.
/// `Ok(None)` when the pod opted out or asks for nothing.
pub fn parse(
    annotations: &BTreeMap<String, String>,
    ctx: &ParseContext<'_>,
) -> Result<Option<InjectionSpec>, SpecError> {
    parse_config(&config_annotations(annotations), ctx)
}

/// [`parse`] of annotations already narrowed to [`config_annotations`].
pub fn parse_config(
    config: &BTreeMap<String, String>,
    ctx: &ParseContext<'_>,
) -> Result<Option<InjectionSpec>, SpecError> {
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
                 dynamic, refresh-interval, secret-name, mount-path, containers, rollout, \
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
            + config.get(ANN_EXTRACT).map_or(0, |v| v.split(',').count())
            + usize::from(config.contains_key(ANN_DYNAMIC));
        check_key_budget(config, requested)?;
        match short::parse(config, ctx)? {
            Some(item) => vec![item],
            None => return Ok(None),
        }
    };
    let count: usize = items
        .iter()
        .map(|i| {
            i.data.len()
                + i.extract.len()
                + usize::from(i.dynamic.is_some() || i.certificate.is_some())
        })
        .sum();
    check_key_budget(config, count)?;
    check_cross_item_conflicts(&items)?;
    Ok(Some(InjectionSpec { items }))
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

/// Engines a dynamic secret or certificate may be issued from: anything but Vault's own
/// system, auth, identity and cubbyhole paths (which would put tokens into a Secret).
pub(crate) fn check_issue_path(field: &str, path: &str) -> Result<(), SpecError> {
    check_remote_key(field, path)?;
    let first = path.split('/').next().unwrap_or_default();
    if matches!(first, "sys" | "auth" | "identity" | "cubbyhole") {
        return Err(invalid(
            field,
            format!(
                "{path:?} is a Vault {first}/ path; dynamic secrets and certificates come from a \
                 secrets engine (e.g. database/creds/<role>, pki/issue/<role>)"
            ),
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
