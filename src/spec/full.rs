//! The full form: `secret-injector.io/external-secrets`, a YAML or JSON list of
//! ExternalSecret-shaped items, one managed Secret each.

use serde::Deserialize;

use super::*;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawItem {
    name: Option<String>,
    store_ref: Option<RawStoreRef>,
    refresh_interval: Option<StringOrNumber>,
    #[serde(default)]
    data: Vec<RawData>,
    #[serde(default)]
    data_from: Vec<RawDataFrom>,
    dynamic: Option<RawDynamic>,
    certificate: Option<RawCertificate>,
    inject: Option<RawInject>,
    containers: Option<Vec<String>>,
    rollout: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDynamic {
    path: String,
    method: Option<String>,
    parameters: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    keys: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCertificate {
    path: String,
    common_name: String,
    alt_names: Option<Vec<String>>,
    ttl: Option<StringOrNumber>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawStoreRef {
    name: String,
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawData {
    secret_key: String,
    remote_ref: RawRemoteRef,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRemoteRef {
    key: String,
    property: Option<String>,
    version: Option<StringOrNumber>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDataFrom {
    extract: RawExtract,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawExtract {
    key: String,
    version: Option<StringOrNumber>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawInject {
    env: Option<bool>,
    mount_path: Option<String>,
}

/// YAML users write `version: 2` and `refreshInterval: 0` unquoted.
#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    String(String),
    Number(u64),
}

impl StringOrNumber {
    fn into_string(self) -> String {
        match self {
            StringOrNumber::String(s) => s,
            StringOrNumber::Number(n) => n.to_string(),
        }
    }
}

pub(super) fn parse(text: &str, ctx: &ParseContext<'_>) -> Result<Vec<SecretItem>, SpecError> {
    let raw: Vec<RawItem> = serde_saphyr::from_str(text).map_err(|e| {
        // The parser's message can span several lines with a source excerpt; the first
        // line names the problem and its position, which is what a denial needs.
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or("").trim().to_string();
        invalid(
            ANN_EXTERNAL_SECRETS,
            format!("expected a YAML or JSON list of items (name, storeRef, data, dataFrom, dynamic, certificate, inject, …): {first}"),
        )
    })?;
    if raw.is_empty() {
        return Err(invalid(ANN_EXTERNAL_SECRETS, "the list is empty"));
    }
    if raw.len() > 32 {
        return Err(invalid(ANN_EXTERNAL_SECRETS, "more than 32 items"));
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, item)| parse_item(i, item, ctx))
        .collect()
}

fn parse_item(index: usize, raw: RawItem, ctx: &ParseContext<'_>) -> Result<SecretItem, SpecError> {
    let at = format!("{ANN_EXTERNAL_SECRETS}[{index}]");
    let field = |f: &str| format!("{at}.{f}");

    let name = raw
        .name
        .ok_or_else(|| invalid(field("name"), "missing: the managed Secret's name"))?;
    if !is_dns1123_subdomain(&name) {
        return Err(invalid(
            field("name"),
            format!("{name:?} is not a valid Secret name (lowercase DNS-1123 subdomain)"),
        ));
    }
    let store_ref = raw.store_ref.ok_or_else(|| {
        invalid(
            field("storeRef"),
            "missing: {name, kind} of the store to read from",
        )
    })?;
    let store = {
        let kind = match store_ref.kind.as_deref() {
            None | Some("SecretStore") => StoreKind::SecretStore,
            Some("ClusterSecretStore") => StoreKind::ClusterSecretStore,
            Some(other) => {
                return Err(invalid(
                    field("storeRef.kind"),
                    format!("expected SecretStore or ClusterSecretStore, got {other:?}"),
                ))
            }
        };
        if !is_dns1123_subdomain(&store_ref.name) {
            return Err(invalid(
                field("storeRef.name"),
                format!("{:?} is not a valid store name", store_ref.name),
            ));
        }
        StoreRef {
            kind,
            name: store_ref.name,
        }
    };
    let issued_kind = match (&raw.dynamic, &raw.certificate) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                field("certificate"),
                "an item holds either a dynamic secret or a certificate, not both",
            ))
        }
        (Some(_), None) => Some("dynamic"),
        (None, Some(_)) => Some("certificate"),
        (None, None) => None,
    };
    if let Some(kind) = issued_kind {
        if !raw.data.is_empty() || !raw.data_from.is_empty() {
            return Err(invalid(
                field(kind),
                format!(
                    "cannot be combined with data or dataFrom in one item: give the {kind} \
                     its own item (its own managed Secret)"
                ),
            ));
        }
        if raw.refresh_interval.is_some() {
            return Err(invalid(
                field("refreshInterval"),
                format!(
                    "has no effect on a {kind} item: its lease (or certificate lifetime) \
                     decides when it is renewed and re-issued"
                ),
            ));
        }
    }
    let refresh_interval = match raw.refresh_interval {
        Some(v) => parse_interval(
            &field("refreshInterval"),
            &v.into_string(),
            ctx.min_refresh_interval,
        )?,
        None => DEFAULT_REFRESH_INTERVAL,
    };

    let mut data = Vec::with_capacity(raw.data.len());
    for (j, d) in raw.data.into_iter().enumerate() {
        let f = field(&format!("data[{j}]"));
        if !is_secret_key(&d.secret_key) {
            return Err(invalid(
                format!("{f}.secretKey"),
                format!(
                    "{:?} is not a valid Secret key (letters, digits, '-', '_' and '.')",
                    d.secret_key
                ),
            ));
        }
        check_remote_key(&format!("{f}.remoteRef.key"), &d.remote_ref.key)?;
        if let Some(p) = &d.remote_ref.property {
            check_property(&format!("{f}.remoteRef.property"), p)?;
        }
        let version = d.remote_ref.version.map(StringOrNumber::into_string);
        if let Some(v) = &version {
            check_version(&format!("{f}.remoteRef.version"), v)?;
        }
        data.push(DataRef {
            secret_key: d.secret_key,
            remote_ref: RemoteRef {
                key: d.remote_ref.key,
                property: d.remote_ref.property,
                version,
            },
        });
    }
    unique_secret_keys(&field("data"), data.iter().map(|d| d.secret_key.as_str()))?;

    let mut extract = Vec::with_capacity(raw.data_from.len());
    for (j, d) in raw.data_from.into_iter().enumerate() {
        let f = field(&format!("dataFrom[{j}].extract"));
        check_remote_key(&format!("{f}.key"), &d.extract.key)?;
        let version = d.extract.version.map(StringOrNumber::into_string);
        if let Some(v) = &version {
            check_version(&format!("{f}.version"), v)?;
        }
        extract.push(RemoteRef {
            key: d.extract.key,
            property: None,
            version,
        });
    }
    let dynamic = match raw.dynamic {
        Some(d) => Some(super::issued::dynamic(
            &field("dynamic"),
            d.path,
            d.method,
            d.parameters,
            d.keys,
        )?),
        None => None,
    };
    let certificate = match raw.certificate {
        Some(c) => Some(super::issued::certificate(
            &field("certificate"),
            c.path,
            c.common_name,
            c.alt_names.unwrap_or_default(),
            c.ttl.map(StringOrNumber::into_string),
        )?),
        None => None,
    };
    if data.is_empty() && extract.is_empty() && dynamic.is_none() && certificate.is_none() {
        return Err(invalid(
            at,
            "has neither data, dataFrom, dynamic nor certificate: nothing to inject",
        ));
    }

    let (env, mount_path) = match raw.inject {
        Some(i) if certificate.is_some() => {
            if i.env == Some(true) {
                return Err(invalid(
                    field("inject.env"),
                    "a certificate is mounted as files (tls.crt, tls.key, ca.crt), never \
                     exposed as environment variables",
                ));
            }
            (
                false,
                Some(
                    i.mount_path
                        .unwrap_or_else(|| format!("{DEFAULT_MOUNT_PATH}/{name}")),
                ),
            )
        }
        None if certificate.is_some() => (false, Some(format!("{DEFAULT_MOUNT_PATH}/{name}"))),
        Some(i) => (i.env.unwrap_or(i.mount_path.is_none()), i.mount_path),
        None => (true, None),
    };
    let files = match mount_path {
        Some(p) => Some(FileMount {
            mount_path: check_mount_path(&field("inject.mountPath"), &p)?,
            keys: None,
        }),
        None => None,
    };
    if !env && files.is_none() {
        return Err(invalid(
            field("inject"),
            "env is false and no mountPath is set: the Secret would reach no container",
        ));
    }
    if env {
        for d in &data {
            if !is_env_var_name(&d.secret_key) {
                return Err(invalid(
                    field("data"),
                    format!(
                        "secretKey {:?} is not a valid environment variable name; set \
                         inject.env: false and use inject.mountPath, or rename it",
                        d.secret_key
                    ),
                ));
            }
        }
    }
    let containers = match raw.containers {
        Some(list) => {
            if list.is_empty() {
                return Err(invalid(
                    field("containers"),
                    "is empty; omit it to inject every container",
                ));
            }
            let mut out: Vec<String> = Vec::new();
            for c in list {
                check_container(&field("containers"), &c, ctx.container_names)?;
                if !out.contains(&c) {
                    out.push(c);
                }
            }
            Some(out)
        }
        None => None,
    };
    let rollout = match raw.rollout {
        Some(r) => parse_rollout(&field("rollout"), &r)?,
        // Mounted certificate files are updated in place by the kubelet.
        None if certificate.is_some() => Rollout::None,
        None => Rollout::Restart,
    };
    let dynamic_keys: Vec<String> = dynamic
        .as_ref()
        .map(|d| d.keys.keys().cloned().collect())
        .unwrap_or_default();
    if env {
        for k in &dynamic_keys {
            if !is_env_var_name(k) {
                return Err(invalid(
                    field("dynamic.keys"),
                    format!(
                        "{k:?} is not a valid environment variable name; set inject.env: \
                         false and use inject.mountPath, or rename it"
                    ),
                ));
            }
        }
    }

    Ok(SecretItem {
        origin: at,
        secret_name: name,
        store,
        refresh_interval,
        exposure: Exposure {
            env_keys: if env {
                data.iter()
                    .map(|d| d.secret_key.clone())
                    .chain(dynamic_keys)
                    .collect()
            } else {
                Vec::new()
            },
            // A dynamic secret without a key map: its fields are known only once issued.
            env_from: env
                && (!extract.is_empty() || dynamic.as_ref().is_some_and(|d| d.keys.is_empty())),
            files,
        },
        data,
        extract,
        dynamic,
        certificate,
        containers,
        rollout,
    })
}

fn check_version(field: &str, v: &str) -> Result<(), SpecError> {
    if v.is_empty()
        || v.len() > 128
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    {
        return Err(invalid(
            field,
            format!("{v:?} is not a version (a number for Vault KV v2, a VersionId or VersionStage for AWS)"),
        ));
    }
    Ok(())
}
