//! The patch's add operations in the webhook's own terms: where (a pod list, a container's
//! list, the annotations) and what (an env var, an envFrom source, a volume, a mount,
//! annotations). They are written as JSON directly (`write_json`, what admission answers
//! with) or turned into `json_patch` operations (`operation`, for `render` and the tests);
//! both give the same JSON (a unit test holds them to it).

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::core::v1::{
    EnvFromSource, EnvVar, EnvVarSource, KeyToPath, SecretEnvSource, SecretKeySelector,
    SecretVolumeSource, Volume, VolumeMount,
};
use serde::Serialize;
use serde_json::Value;

/// Where an operation adds.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Place {
    /// `/spec/volumes`
    Volumes,
    /// `/spec/<list>/<index>/<field>`
    Container {
        list: &'static str,
        index: usize,
        field: &'static str,
    },
    /// `/metadata/annotations`
    Annotations,
    /// `/metadata/annotations/<key>`
    Annotation(&'static str),
}

/// What an operation adds.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Added {
    /// A read-only `secret` volume for `secret_name`, named `volume`.
    Volume {
        volume: String,
        secret_name: String,
        keys: Option<Vec<String>>,
    },
    /// Env var `key` from the same key of `secret_name`.
    EnvVar {
        key: String,
        secret_name: String,
    },
    /// `envFrom` of the whole `secret_name`.
    EnvFrom {
        secret_name: String,
    },
    /// A read-only mount of `volume` at `mount_path`.
    Mount {
        volume: String,
        mount_path: String,
    },
    /// The annotations map, created with these members (sorted by key).
    Annotations(Vec<(&'static str, String)>),
    Text(String),
}

/// One `add`. To a list: `append` adds after its last element (`…/-`); otherwise the list
/// does not exist yet and is created holding the value.
#[derive(Clone, Debug, PartialEq)]
pub struct AddOp {
    pub(super) place: Place,
    pub(super) list: Option<Append>,
    pub(super) value: Added,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Append {
    /// `…/-`: the list exists.
    Last,
    /// The list is created: `[value]`.
    Create,
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("k8s types serialise")
}

impl AddOp {
    /// The JSON pointer's reference tokens (unescaped).
    fn tokens(&self) -> Vec<String> {
        let mut tokens: Vec<String> = match &self.place {
            Place::Volumes => vec!["spec".into(), "volumes".into()],
            Place::Container { list, index, field } => vec![
                "spec".into(),
                (*list).into(),
                index.to_string(),
                (*field).into(),
            ],
            Place::Annotations => vec!["metadata".into(), "annotations".into()],
            Place::Annotation(key) => {
                vec!["metadata".into(), "annotations".into(), (*key).into()]
            }
        };
        if self.list == Some(Append::Last) {
            tokens.push("-".into());
        }
        tokens
    }

    /// The JSON pointer of `tokens()`, written without building them: only an annotation
    /// key can hold a character to escape (RFC 6901: `~` as `~0`, `/` as `~1`).
    fn write_path(&self, path: &mut String) {
        match &self.place {
            Place::Volumes => path.push_str("/spec/volumes"),
            Place::Container { list, index, field } => {
                path.push_str("/spec/");
                path.push_str(list);
                path.push('/');
                push_decimal(path, *index);
                path.push('/');
                path.push_str(field);
            }
            Place::Annotations => path.push_str("/metadata/annotations"),
            Place::Annotation(key) => {
                path.push_str("/metadata/annotations/");
                for c in key.chars() {
                    match c {
                        '~' => path.push_str("~0"),
                        '/' => path.push_str("~1"),
                        c => path.push(c),
                    }
                }
            }
        }
        if self.list == Some(Append::Last) {
            path.push_str("/-");
        }
    }

    /// The `json_patch` operation.
    pub fn operation(&self) -> PatchOperation {
        let value = self.value.to_value();
        PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(self.tokens()),
            value: match self.list {
                Some(Append::Create) => Value::Array(vec![value]),
                _ => value,
            },
        })
    }

    /// The operation as `serde_json` writes `operation()`:
    /// `{"op":"add","path":…,"value":…}`, object members sorted by key.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"op\":\"add\",\"path\":");
        let mut path = String::with_capacity(64);
        self.write_path(&mut path);
        json_str(out, &path);
        out.extend_from_slice(b",\"value\":");
        let create = self.list == Some(Append::Create);
        if create {
            out.push(b'[');
        }
        self.value.write_json(out);
        if create {
            out.push(b']');
        }
        out.push(b'}');
    }
}

impl Added {
    fn to_value(&self) -> Value {
        match self {
            Added::Volume {
                volume,
                secret_name,
                keys,
            } => to_value(&Volume {
                name: volume.clone(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret_name.clone()),
                    items: keys.as_ref().map(|keys| {
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
            }),
            Added::EnvVar { key, secret_name } => to_value(&EnvVar {
                name: key.clone(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret_name.clone(),
                        key: key.clone(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
            }),
            Added::EnvFrom { secret_name } => to_value(&EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: secret_name.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            Added::Mount { volume, mount_path } => to_value(&VolumeMount {
                name: volume.clone(),
                mount_path: mount_path.clone(),
                read_only: Some(true),
                ..Default::default()
            }),
            Added::Annotations(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
                    .collect(),
            ),
            Added::Text(text) => Value::String(text.clone()),
        }
    }

    /// What `serde_json` writes for `to_value()`: members in key order, `None`s left out.
    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Added::Volume {
                volume,
                secret_name,
                keys,
            } => {
                out.extend_from_slice(b"{\"name\":");
                json_str(out, volume);
                out.extend_from_slice(b",\"secret\":{");
                if let Some(keys) = keys {
                    out.extend_from_slice(b"\"items\":[");
                    for (i, key) in keys.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(b"{\"key\":");
                        json_str(out, key);
                        out.extend_from_slice(b",\"path\":");
                        json_str(out, key);
                        out.push(b'}');
                    }
                    out.extend_from_slice(b"],");
                }
                out.extend_from_slice(b"\"optional\":false,\"secretName\":");
                json_str(out, secret_name);
                out.extend_from_slice(b"}}");
            }
            Added::EnvVar { key, secret_name } => {
                out.extend_from_slice(b"{\"name\":");
                json_str(out, key);
                out.extend_from_slice(b",\"valueFrom\":{\"secretKeyRef\":{\"key\":");
                json_str(out, key);
                out.extend_from_slice(b",\"name\":");
                json_str(out, secret_name);
                out.extend_from_slice(b",\"optional\":false}}}");
            }
            Added::EnvFrom { secret_name } => {
                out.extend_from_slice(b"{\"secretRef\":{\"name\":");
                json_str(out, secret_name);
                out.extend_from_slice(b",\"optional\":false}}");
            }
            Added::Mount { volume, mount_path } => {
                out.extend_from_slice(b"{\"mountPath\":");
                json_str(out, mount_path);
                out.extend_from_slice(b",\"name\":");
                json_str(out, volume);
                out.extend_from_slice(b",\"readOnly\":true}");
            }
            Added::Annotations(members) => {
                out.push(b'{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json_str(out, k);
                    out.push(b':');
                    json_str(out, v);
                }
                out.push(b'}');
            }
            Added::Text(text) => json_str(out, text),
        }
    }
}

fn push_decimal(out: &mut String, n: usize) {
    if n >= 10 {
        push_decimal(out, n / 10);
    }
    out.push(char::from(b'0' + (n % 10) as u8));
}

/// A JSON string, escaped exactly as serde_json escapes it.
fn json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("a string always serialises into a Vec");
}
