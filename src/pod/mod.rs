//! The pod as the planner reads it: only the fields admission and `render` look at, borrowed
//! where they can be. `/mutate` reads it straight from the review's JSON (`json.rs`, which
//! checks the rest of the pod against the Pod schema without keeping it); `render` and tests
//! take it from a typed `Pod` ([`PodView::of`]). One planner (`crate::plan`) serves both.

pub mod json;
pub mod schema;
#[cfg(test)]
mod schema_gen;
mod schema_node;
mod schema_table;

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// A string of the pod: borrowed from the review's bytes (or a typed `Pod`) unless JSON
/// escapes made a copy necessary.
pub type Text<'a> = Cow<'a, str>;

/// `None` / `Some(empty)` keep the typed pod's distinction (a patch adds a missing list or map
/// whole, and appends to an existing one).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodView<'a> {
    pub name: Option<Text<'a>>,
    pub generate_name: Option<Text<'a>>,
    pub uid: Option<Text<'a>>,
    pub annotations: Option<BTreeMap<Text<'a>, Text<'a>>>,
    pub owner_references: Option<Vec<OwnerRefView<'a>>>,
    pub spec: Option<PodSpecView<'a>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct OwnerRefView<'a> {
    pub api_version: Text<'a>,
    pub kind: Text<'a>,
    pub name: Text<'a>,
    pub uid: Text<'a>,
    pub controller: Option<bool>,
    pub block_owner_deletion: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodSpecView<'a> {
    pub service_account_name: Option<Text<'a>>,
    pub init_containers: Option<Vec<ContainerView<'a>>>,
    pub containers: Vec<ContainerView<'a>>,
    pub volumes: Option<Vec<VolumeView<'a>>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerView<'a> {
    pub name: Text<'a>,
    pub env: Option<Vec<EnvVarView<'a>>>,
    pub env_from: Option<Vec<EnvFromView<'a>>>,
    pub volume_mounts: Option<Vec<VolumeMountView<'a>>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnvVarView<'a> {
    pub name: Text<'a>,
    /// `valueFrom.secretKeyRef`.
    pub secret_key_ref: Option<KeyRefView<'a>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyRefView<'a> {
    pub name: Text<'a>,
    pub key: Text<'a>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnvFromView<'a> {
    /// `secretRef.name` when there is a `secretRef`.
    pub secret_ref: Option<Text<'a>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct VolumeMountView<'a> {
    pub name: Text<'a>,
    pub mount_path: Text<'a>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct VolumeView<'a> {
    pub name: Text<'a>,
    /// `secret.secretName`.
    pub secret_name: Option<Text<'a>>,
}

fn text(s: &str) -> Text<'_> {
    Cow::Borrowed(s)
}

fn opt(s: &Option<String>) -> Option<Text<'_>> {
    s.as_deref().map(text)
}

impl<'a> PodView<'a> {
    /// The view of a typed pod, borrowing from it.
    pub fn of(pod: &'a Pod) -> PodView<'a> {
        let meta = &pod.metadata;
        PodView {
            name: opt(&meta.name),
            generate_name: opt(&meta.generate_name),
            uid: opt(&meta.uid),
            annotations: meta
                .annotations
                .as_ref()
                .map(|a| a.iter().map(|(k, v)| (text(k), text(v))).collect()),
            owner_references: meta.owner_references.as_ref().map(|refs| {
                refs.iter()
                    .map(|r| OwnerRefView {
                        api_version: text(&r.api_version),
                        kind: text(&r.kind),
                        name: text(&r.name),
                        uid: text(&r.uid),
                        controller: r.controller,
                        block_owner_deletion: r.block_owner_deletion,
                    })
                    .collect()
            }),
            spec: pod.spec.as_ref().map(|s| PodSpecView {
                service_account_name: opt(&s.service_account_name),
                init_containers: s
                    .init_containers
                    .as_ref()
                    .map(|c| c.iter().map(ContainerView::of).collect()),
                containers: s.containers.iter().map(ContainerView::of).collect(),
                volumes: s.volumes.as_ref().map(|volumes| {
                    volumes
                        .iter()
                        .map(|v| VolumeView {
                            name: text(&v.name),
                            secret_name: v.secret.as_ref().and_then(|s| opt(&s.secret_name)),
                        })
                        .collect()
                }),
            }),
        }
    }

    /// One annotation of the pod.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(|v| v.as_ref())
    }

    /// The pod's name, or its `generateName` followed by `*`, for logs.
    pub fn display_name(&self) -> String {
        match (&self.name, &self.generate_name) {
            (Some(name), _) => name.to_string(),
            (None, Some(prefix)) => format!("{prefix}*"),
            (None, None) => String::new(),
        }
    }

    /// The pod's controller reference, else its first ownerReference.
    pub fn controller(&self) -> Option<&OwnerRefView<'a>> {
        let refs = self.owner_references.as_ref()?;
        refs.iter()
            .find(|r| r.controller == Some(true))
            .or_else(|| refs.first())
    }

    /// `spec.serviceAccountName`, `default` when unset or empty.
    pub fn service_account(&self) -> &str {
        self.spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
    }

    /// Init containers first, then containers.
    pub fn all_containers(&self) -> impl Iterator<Item = &ContainerView<'a>> {
        self.spec.iter().flat_map(|s| {
            s.init_containers
                .iter()
                .flatten()
                .chain(s.containers.iter())
        })
    }
}

impl<'a> ContainerView<'a> {
    fn of(c: &'a Container) -> ContainerView<'a> {
        ContainerView {
            name: text(&c.name),
            env: c.env.as_ref().map(|env| {
                env.iter()
                    .map(|e| EnvVarView {
                        name: text(&e.name),
                        secret_key_ref: e
                            .value_from
                            .as_ref()
                            .and_then(|v| v.secret_key_ref.as_ref())
                            .map(|r| KeyRefView {
                                name: text(&r.name),
                                key: text(&r.key),
                            }),
                    })
                    .collect()
            }),
            env_from: c.env_from.as_ref().map(|env_from| {
                env_from
                    .iter()
                    .map(|e| EnvFromView {
                        secret_ref: e.secret_ref.as_ref().map(|s| text(&s.name)),
                    })
                    .collect()
            }),
            volume_mounts: c.volume_mounts.as_ref().map(|mounts| {
                mounts
                    .iter()
                    .map(|m| VolumeMountView {
                        name: text(&m.name),
                        mount_path: text(&m.mount_path),
                    })
                    .collect()
            }),
        }
    }
}

impl OwnerRefView<'_> {
    /// The typed ownerReference (for an Event's subject).
    pub fn to_owned_ref(&self) -> OwnerReference {
        OwnerReference {
            api_version: self.api_version.to_string(),
            kind: self.kind.to_string(),
            name: self.name.to_string(),
            uid: self.uid.to_string(),
            controller: self.controller,
            block_owner_deletion: self.block_owner_deletion,
        }
    }
}
