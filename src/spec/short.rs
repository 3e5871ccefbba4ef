//! The short form: one store per workload, `env.<KEY>`, `file.<KEY>`, `extract` and the
//! per-item settings as separate annotations.

use std::collections::BTreeMap;

use super::*;

pub(super) fn parse(
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

    let dynamic = match config.get(ANN_DYNAMIC) {
        Some(path) => {
            if let Some(other) = config.keys().find(|k| {
                k.starts_with(ANN_ENV_PREFIX)
                    || k.starts_with(ANN_FILE_PREFIX)
                    || k.as_str() == ANN_EXTRACT
            }) {
                return Err(invalid(
                    ANN_DYNAMIC,
                    format!(
                        "cannot be combined with {other} in the short form: a dynamic secret's \
                         fields all reach the containers through envFrom; use the full form \
                         (external-secrets) for one item of each kind"
                    ),
                ));
            }
            if config.contains_key(ANN_REFRESH_INTERVAL) {
                return Err(invalid(
                    ANN_REFRESH_INTERVAL,
                    "has no effect with secret-injector.io/dynamic: the lease decides when \
                     the credentials are renewed and re-issued",
                ));
            }
            let path = path.trim();
            check_issue_path(ANN_DYNAMIC, path)?;
            Some(DynamicSpec {
                path: path.to_string(),
                method: DynamicMethod::Get,
                parameters: BTreeMap::new(),
                keys: BTreeMap::new(),
            })
        }
        None => None,
    };

    let has_sources = !data.is_empty() || !extract.is_empty() || dynamic.is_some();
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
                 secret-injector.io/file.<KEY>, secret-injector.io/extract or \
                 secret-injector.io/dynamic",
            ))
        }
        (None, false) => {
            // Only modifiers (refresh-interval, rollout, …) and no sources: nothing to inject,
            // but a modifier without a source is almost certainly a mistake.
            if let Some(k) = config.keys().find(|k| k.as_str() != ANN_INJECT) {
                return Err(invalid(
                    k.clone(),
                    "has no effect without secret-injector.io/store and at least one \
                     env.<KEY>, file.<KEY>, extract or dynamic annotation",
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
            env_from: !extract.is_empty() || dynamic.is_some(),
            files: if file_keys.is_empty() {
                None
            } else {
                Some(FileMount {
                    mount_path,
                    keys: Some(file_keys),
                })
            },
        },
        dynamic,
        certificate: None,
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
