//! The pod patch: typed JSONPatch operations that only add references to managed Secrets
//! (`secretKeyRef`, `envFrom`, a read-only `secret` volume) and two status annotations.
//! It depends on the spec alone, never on values, and is idempotent: planning against its
//! own output yields no operations.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::core::v1::{
    EnvFromSource, EnvVar, EnvVarSource, KeyToPath, SecretEnvSource, SecretKeySelector,
    SecretVolumeSource, Volume, VolumeMount,
};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::pod::{ContainerView, PodView};
use crate::spec::{InjectionSpec, SecretItem, ANN_SECRETS, ANN_STATUS};

pub const STATUS_INJECTED: &str = "injected";

#[derive(Debug, Default, PartialEq)]
pub struct PodPatch {
    pub ops: Vec<PatchOperation>,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    #[error(
        "{origin}: container {container:?} already mounts something else at {path:?}; choose another mount path"
    )]
    MountConflict {
        origin: String,
        container: String,
        path: String,
    },
    #[error("{origin}: the pod already has a volume named {volume:?} that is not this Secret's")]
    VolumeConflict { origin: String, volume: String },
    #[error("the pod has no spec")]
    NoSpec,
}

/// Volume name for a managed Secret: a valid DNS-1123 label, stable for a given Secret name.
pub fn volume_name(secret_name: &str) -> String {
    let candidate = format!("si-{}", secret_name.replace('.', "-"));
    if candidate.len() <= 63 {
        return candidate;
    }
    let hash = Sha256::digest(secret_name.as_bytes());
    let suffix: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let head = crate::spec::truncate_utf8(&candidate, 54).trim_end_matches('-');
    format!("{head}-{suffix}")
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("k8s types serialise")
}

/// Collects add operations, creating a missing array or map once and appending after that.
struct Builder {
    ops: Vec<PatchOperation>,
}

impl Builder {
    /// Append `value` to the array at `path`; `exists` says whether the pod already has it
    /// (or an earlier op created it).
    fn append(&mut self, path: &[&str], exists: &mut bool, value: Value) {
        if *exists {
            let mut p = pointer(path);
            p.push_back("-");
            self.ops
                .push(PatchOperation::Add(AddOperation { path: p, value }));
        } else {
            self.ops.push(PatchOperation::Add(AddOperation {
                path: pointer(path),
                value: Value::Array(vec![value]),
            }));
            *exists = true;
        }
    }
}

struct ContainerRef<'a, 'p> {
    list: &'static str,
    index: usize,
    container: &'a ContainerView<'p>,
}

pub fn plan(pod: &PodView<'_>, spec: &InjectionSpec) -> Result<PodPatch, PatchError> {
    let pod_spec = pod.spec.as_ref().ok_or(PatchError::NoSpec)?;
    let mut b = Builder { ops: Vec::new() };
    let mut warnings = Vec::new();

    let containers: Vec<ContainerRef<'_, '_>> = pod_spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(index, container)| ContainerRef {
            list: "initContainers",
            index,
            container,
        })
        .chain(
            pod_spec
                .containers
                .iter()
                .enumerate()
                .map(|(index, container)| ContainerRef {
                    list: "containers",
                    index,
                    container,
                }),
        )
        .collect();

    // Pod-level volumes first, so container mounts never reference a missing volume.
    let mut volumes_exist = pod_spec.volumes.is_some();
    for item in &spec.items {
        let Some(files) = &item.exposure.files else {
            continue;
        };
        let name = volume_name(&item.secret_name);
        if let Some(existing) = pod_spec.volumes.iter().flatten().find(|v| v.name == name) {
            let same = existing.secret_name.as_deref() == Some(item.secret_name.as_str());
            if same {
                continue;
            }
            return Err(PatchError::VolumeConflict {
                origin: item.origin.clone(),
                volume: name,
            });
        }
        let volume = Volume {
            name,
            secret: Some(SecretVolumeSource {
                secret_name: Some(item.secret_name.clone()),
                items: files.keys.as_ref().map(|keys| {
                    keys.iter()
                        .map(|k| KeyToPath {
                            key: k.clone(),
                            path: k.clone(),
                            mode: None,
                        })
                        .collect()
                }),
                optional: Some(false),
                default_mode: None,
            }),
            ..Default::default()
        };
        b.append(&["spec", "volumes"], &mut volumes_exist, to_value(&volume));
    }

    for c in &containers {
        let items: Vec<&SecretItem> = spec
            .items
            .iter()
            .filter(|i| {
                i.containers
                    .as_ref()
                    .is_none_or(|names| names.iter().any(|n| *n == c.container.name))
            })
            .collect();
        if items.is_empty() {
            continue;
        }
        let index = c.index.to_string();
        let base = ["spec", c.list, index.as_str()];
        plan_container(&mut b, &mut warnings, &base, c.container, &items)?;
    }

    // Status annotations.
    let names = spec
        .items
        .iter()
        .map(|i| i.secret_name.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let wanted = [
        (ANN_STATUS, STATUS_INJECTED.to_string()),
        (ANN_SECRETS, names),
    ];
    match &pod.annotations {
        None => {
            let map: serde_json::Map<String, Value> = wanted
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
                .collect();
            b.ops.push(PatchOperation::Add(AddOperation {
                path: pointer(&["metadata", "annotations"]),
                value: Value::Object(map),
            }));
        }
        Some(existing) => {
            for (k, v) in wanted {
                if existing.get(k).map(|e| e.as_ref()) != Some(v.as_str()) {
                    // `add` on an existing member replaces it (RFC 6902 §4.1).
                    b.ops.push(PatchOperation::Add(AddOperation {
                        path: pointer(&["metadata", "annotations", k]),
                        value: Value::String(v),
                    }));
                }
            }
        }
    }

    Ok(PodPatch {
        ops: b.ops,
        warnings,
    })
}

fn plan_container(
    b: &mut Builder,
    warnings: &mut Vec<String>,
    base: &[&str; 3],
    container: &ContainerView<'_>,
    items: &[&SecretItem],
) -> Result<(), PatchError> {
    let path = |leaf: &'static str| [base[0], base[1], base[2], leaf];

    let mut env_exists = container.env.is_some();
    for item in items {
        for key in &item.exposure.env_keys {
            let existing = container.env.iter().flatten().find(|e| e.name == *key);
            if let Some(e) = existing {
                let ours = e
                    .secret_key_ref
                    .as_ref()
                    .is_some_and(|r| r.name == item.secret_name && r.key == *key);
                if !ours {
                    warnings.push(format!(
                        "container {:?} already defines env var {key}; secret-injector left it unchanged",
                        container.name
                    ));
                }
                continue;
            }
            let var = EnvVar {
                name: key.clone(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: item.secret_name.clone(),
                        key: key.clone(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
            };
            b.append(&path("env"), &mut env_exists, to_value(&var));
        }
    }

    let mut env_from_exists = container.env_from.is_some();
    for item in items.iter().filter(|i| i.exposure.env_from) {
        let present = container
            .env_from
            .iter()
            .flatten()
            .any(|e| e.secret_ref.as_deref() == Some(item.secret_name.as_str()));
        if present {
            continue;
        }
        let source = EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: item.secret_name.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        };
        b.append(&path("envFrom"), &mut env_from_exists, to_value(&source));
    }

    let mut mounts_exist = container.volume_mounts.is_some();
    for item in items {
        let Some(files) = &item.exposure.files else {
            continue;
        };
        let volume = volume_name(&item.secret_name);
        let mounts = container.volume_mounts.iter().flatten();
        if mounts.clone().any(|m| m.name == volume) {
            continue;
        }
        if mounts
            .clone()
            .any(|m| m.mount_path.trim_end_matches('/') == files.mount_path)
        {
            return Err(PatchError::MountConflict {
                origin: item.origin.clone(),
                container: container.name.to_string(),
                path: files.mount_path.clone(),
            });
        }
        let mount = VolumeMount {
            name: volume,
            mount_path: files.mount_path.clone(),
            read_only: Some(true),
            ..Default::default()
        };
        b.append(&path("volumeMounts"), &mut mounts_exist, to_value(&mount));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse, ParseContext};
    use k8s_openapi::api::core::v1::Pod;

    fn plan(pod: &Pod, spec: &InjectionSpec) -> Result<PodPatch, PatchError> {
        super::plan(&PodView::of(pod), spec)
    }
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn pod(json: Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn spec_for(pod: &Pod) -> InjectionSpec {
        let names: Vec<String> = pod
            .spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let ann: BTreeMap<String, String> = pod.metadata.annotations.clone().unwrap_or_default();
        parse(
            &ann,
            &ParseContext {
                workload_name: Some("api"),
                container_names: &names,
                min_refresh_interval: Duration::from_secs(10),
            },
        )
        .unwrap()
        .unwrap()
    }

    fn apply(pod: &Pod, patch: &PodPatch) -> Pod {
        let mut doc = serde_json::to_value(pod).unwrap();
        json_patch::patch(&mut doc, &patch.ops).unwrap();
        serde_json::from_value(doc).unwrap()
    }

    fn sample() -> Pod {
        pod(serde_json::json!({
            "metadata": {"annotations": {
                "secret-injector.io/store": "vault",
                "secret-injector.io/env.DB_PASSWORD": "payments/db#password",
                "secret-injector.io/env.KEEP": "payments/db#username",
                "secret-injector.io/file.ca.crt": "payments/tls#ca",
                "secret-injector.io/extract": "payments/feed"
            }},
            "spec": {"containers": [
                {"name": "app", "image": "x", "env": [{"name": "KEEP", "value": "mine"}]},
                {"name": "sidecar", "image": "y"}
            ]}
        }))
    }

    #[test]
    fn patch_adds_only_references_and_is_idempotent() {
        let p = sample();
        let spec = spec_for(&p);
        let patch = plan(&p, &spec).unwrap();
        assert_eq!(patch.warnings.len(), 1, "{:?}", patch.warnings);
        assert!(patch.warnings[0].contains("KEEP"));
        let patched = apply(&p, &patch);
        let app = &patched.spec.as_ref().unwrap().containers[0];
        let env = app.env.as_ref().unwrap();
        assert_eq!(
            env.iter()
                .find(|e| e.name == "KEEP")
                .unwrap()
                .value
                .as_deref(),
            Some("mine")
        );
        let pw = env.iter().find(|e| e.name == "DB_PASSWORD").unwrap();
        let r = pw
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str()),
            ("api-injected", "DB_PASSWORD")
        );
        assert!(pw.value.is_none());
        let sidecar = &patched.spec.as_ref().unwrap().containers[1];
        assert_eq!(sidecar.env.as_ref().unwrap().len(), 2);
        assert_eq!(
            sidecar.env_from.as_ref().unwrap()[0]
                .secret_ref
                .as_ref()
                .unwrap()
                .name,
            "api-injected"
        );
        let mount = &sidecar.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(mount.mount_path, "/var/run/secret-injector");
        assert_eq!(mount.read_only, Some(true));
        let vol = &patched.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
        let items = vol.secret.as_ref().unwrap().items.as_ref().unwrap();
        assert_eq!(items[0].key, "ca.crt");
        let ann = patched.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann.get(ANN_STATUS).map(String::as_str), Some("injected"));
        assert_eq!(
            ann.get(ANN_SECRETS).map(String::as_str),
            Some("api-injected")
        );

        // Applying the webhook to its own output changes nothing (and warns as before).
        let again = plan(&patched, &spec).unwrap();
        assert!(again.ops.is_empty(), "{:?}", again.ops);
    }

    #[test]
    fn container_selection_and_init_containers() {
        let p = pod(serde_json::json!({
            "metadata": {"annotations": {
                "secret-injector.io/store": "vault",
                "secret-injector.io/env.A": "k#a",
                "secret-injector.io/containers": "app"
            }},
            "spec": {
                "initContainers": [{"name": "init", "image": "i"}],
                "containers": [{"name": "app", "image": "x"}, {"name": "other", "image": "y"}]
            }
        }));
        let names = vec!["init".to_string(), "app".to_string(), "other".to_string()];
        let spec = parse(
            p.metadata.annotations.as_ref().unwrap(),
            &ParseContext {
                workload_name: Some("w"),
                container_names: &names,
                min_refresh_interval: Duration::ZERO,
            },
        )
        .unwrap()
        .unwrap();
        let patched = apply(&p, &plan(&p, &spec).unwrap());
        let s = patched.spec.unwrap();
        assert!(s.containers[0].env.is_some());
        assert!(s.containers[1].env.is_none());
        assert!(s.init_containers.unwrap()[0].env.is_none());
    }

    #[test]
    fn mount_conflict_is_an_error() {
        let p = pod(serde_json::json!({
            "metadata": {"annotations": {
                "secret-injector.io/store": "vault",
                "secret-injector.io/file.key": "k#a",
                "secret-injector.io/mount-path": "/etc/app"
            }},
            "spec": {"containers": [{"name": "app", "image": "x", "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app"}]}]}
        }));
        let spec = spec_for(&p);
        assert!(matches!(
            plan(&p, &spec),
            Err(PatchError::MountConflict { .. })
        ));
    }

    #[test]
    fn volume_names_are_valid_labels() {
        assert_eq!(volume_name("api-injected"), "si-api-injected");
        let long = volume_name(&"x.".repeat(100));
        assert!(crate::spec::is_dns1123_label(&long), "{long}");
        assert_eq!(long, volume_name(&"x.".repeat(100)));
    }
}
