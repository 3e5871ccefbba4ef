//! The pod patch: typed JSONPatch operations that only add references to managed Secrets
//! (`secretKeyRef`, `envFrom`, a read-only `secret` volume) and two status annotations.
//! It depends on the spec alone, never on values, and is idempotent: planning against its
//! own output yields no operations.

mod ops;

use json_patch::PatchOperation;
use sha2::{Digest, Sha256};

use ops::{AddOp, Added, Append, Place};

use crate::pod::{ContainerView, PodView};
use crate::spec::{InjectionSpec, SecretItem, ANN_SECRETS, ANN_STATUS};

pub const STATUS_INJECTED: &str = "injected";

#[derive(Debug, Default, PartialEq)]
pub struct PodPatch {
    adds: Vec<AddOp>,
    pub warnings: Vec<String>,
}

impl PodPatch {
    /// Operations in the patch.
    pub fn len(&self) -> usize {
        self.adds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.adds.is_empty()
    }

    /// The `json_patch` operations (`render` prints them; tests apply them).
    pub fn operations(&self) -> Vec<PatchOperation> {
        self.adds.iter().map(AddOp::operation).collect()
    }

    /// The patch as JSON: the bytes `serde_json` writes for `operations()`, without building
    /// them (admission answers with this).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 192 * self.adds.len());
        out.push(b'[');
        for (i, add) in self.adds.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            add.write_json(&mut out);
        }
        out.push(b']');
        out
    }
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

/// Collects add operations, creating a missing list or map once and appending after that.
struct Builder {
    adds: Vec<AddOp>,
}

impl Builder {
    /// Append `value` to the list at `place`; `exists` says whether the pod already has it
    /// (or an earlier operation created it).
    fn append(&mut self, place: Place, exists: &mut bool, value: Added) {
        let list = if *exists {
            Append::Last
        } else {
            *exists = true;
            Append::Create
        };
        self.adds.push(AddOp {
            place,
            list: Some(list),
            value,
        });
    }

    fn add(&mut self, place: Place, value: Added) {
        self.adds.push(AddOp {
            place,
            list: None,
            value,
        });
    }
}

struct ContainerRef<'a, 'p> {
    list: &'static str,
    index: usize,
    container: &'a ContainerView<'p>,
}

pub fn plan(pod: &PodView<'_>, spec: &InjectionSpec) -> Result<PodPatch, PatchError> {
    let pod_spec = pod.spec.as_ref().ok_or(PatchError::NoSpec)?;
    let mut b = Builder { adds: Vec::new() };
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
        let volume = Added::Volume {
            volume: name,
            secret_name: item.secret_name.clone(),
            keys: files.keys.clone(),
        };
        b.append(Place::Volumes, &mut volumes_exist, volume);
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
        plan_container(&mut b, &mut warnings, c, &items)?;
    }

    // Status annotations.
    let names = spec
        .items
        .iter()
        .map(|i| i.secret_name.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let wanted = [
        (ANN_SECRETS, names),
        (ANN_STATUS, STATUS_INJECTED.to_string()),
    ];
    match &pod.annotations {
        // Sorted by key, as the JSON object is written.
        None => b.add(Place::Annotations, Added::Annotations(wanted.into())),
        Some(existing) => {
            for (k, v) in [&wanted[1], &wanted[0]] {
                if existing.get(*k).map(|e| e.as_ref()) != Some(v.as_str()) {
                    // `add` on an existing member replaces it (RFC 6902 §4.1).
                    b.add(Place::Annotation(k), Added::Text(v.clone()));
                }
            }
        }
    }

    Ok(PodPatch {
        adds: b.adds,
        warnings,
    })
}

fn plan_container(
    b: &mut Builder,
    warnings: &mut Vec<String>,
    c: &ContainerRef<'_, '_>,
    items: &[&SecretItem],
) -> Result<(), PatchError> {
    let container = c.container;
    let place = |field: &'static str| Place::Container {
        list: c.list,
        index: c.index,
        field,
    };

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
            let var = Added::EnvVar {
                key: key.clone(),
                secret_name: item.secret_name.clone(),
            };
            b.append(place("env"), &mut env_exists, var);
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
        let source = Added::EnvFrom {
            secret_name: item.secret_name.clone(),
        };
        b.append(place("envFrom"), &mut env_from_exists, source);
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
        let mount = Added::Mount {
            volume,
            mount_path: files.mount_path.clone(),
        };
        b.append(place("volumeMounts"), &mut mounts_exist, mount);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse, ParseContext};
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::{json, Value};

    /// Plans, and holds the directly written JSON to what serde_json writes for the
    /// operations.
    fn plan(pod: &Pod, spec: &InjectionSpec) -> Result<PodPatch, PatchError> {
        let patch = super::plan(&PodView::of(pod), spec)?;
        let written = String::from_utf8(patch.to_json()).unwrap();
        let reference = serde_json::to_string(&json_patch::Patch(patch.operations())).unwrap();
        assert_eq!(written, reference);
        Ok(patch)
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
        json_patch::patch(&mut doc, &patch.operations()).unwrap();
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
        assert!(again.is_empty(), "{:?}", again.operations());
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
    fn written_json_is_serde_jsons_for_every_kind_of_operation() {
        // Lists absent and present, annotations absent and present, file keys listed and not,
        // several items and containers; every case goes through `plan` above, which compares.
        let specs = [
            json!({
                "secret-injector.io/store": "vault",
                "secret-injector.io/env.A": "k#a",
                "secret-injector.io/file.tls.crt": "k#crt",
                "secret-injector.io/extract": "k2"
            }),
            json!({
                "secret-injector.io/store": "vault",
                "secret-injector.io/extract": "k2",
                "secret-injector.io/mount-path": "/etc/a~b",
                "secret-injector.io/file.x": "k#x"
            }),
            json!({
                "secret-injector.io/external-secrets": serde_json::to_string(&json!([
                    {"name": "one", "storeRef": {"name": "vault"}, "data": [{"secretKey": "K1", "remoteRef": {"key": "p/1"}}],
                     "inject": {"env": true, "mountPath": "/m1"}},
                    {"name": "two", "storeRef": {"name": "vault"}, "dataFrom": [{"extract": {"key": "p/2"}}],
                     "inject": {"env": true}}
                ])).unwrap()
            }),
        ];
        let pods = [
            json!({"spec": {"containers": [{"name": "app", "image": "x"}]}}),
            json!({"spec": {
                "initContainers": [{"name": "init", "image": "i", "env": [], "envFrom": [], "volumeMounts": []}],
                "containers": [{"name": "app", "image": "x", "env": [{"name": "OTHER", "value": "1"}]},
                               {"name": "b", "image": "y", "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                "volumes": [{"name": "v", "emptyDir": {}}]}}),
        ];
        for annotations in &specs {
            for (i, pod_json) in pods.iter().enumerate() {
                let mut pod_json = pod_json.clone();
                pod_json["metadata"] = json!({"annotations": annotations});
                let p = pod(pod_json.clone());
                let names: Vec<String> = PodView::of(&p)
                    .all_containers()
                    .map(|c| c.name.to_string())
                    .collect();
                let ann: BTreeMap<String, String> =
                    serde_json::from_value(annotations.clone()).unwrap();
                let spec = parse(
                    &ann,
                    &ParseContext {
                        workload_name: Some("w"),
                        container_names: &names,
                        min_refresh_interval: Duration::ZERO,
                    },
                )
                .unwrap()
                .unwrap();
                let patch = plan(&p, &spec).unwrap();
                assert!(!patch.is_empty(), "case {i}");
                // And once more with the status annotations already half there.
                pod_json["metadata"]["annotations"]["secret-injector.io/status"] =
                    json!("injected");
                plan(&pod(pod_json), &spec).unwrap();
            }
        }
    }

    #[test]
    fn volume_names_are_valid_labels() {
        assert_eq!(volume_name("api-injected"), "si-api-injected");
        let long = volume_name(&"x.".repeat(100));
        assert!(crate::spec::is_dns1123_label(&long), "{long}");
        assert_eq!(long, volume_name(&"x.".repeat(100)));
    }
}
