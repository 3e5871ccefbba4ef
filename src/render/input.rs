//! Reading `render`'s input: files, directories and stdin; YAML documents (and `List`s) as
//! objects; an object's kind; decoding an object into its Kubernetes type.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

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
pub(super) struct Object {
    pub(super) file: String,
    pub(super) document: usize,
    pub(super) value: Value,
}

pub(super) fn documents(input: &Input) -> Result<Vec<Object>, InputError> {
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

pub(super) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

pub(super) fn kind_of(v: &Value) -> (String, String) {
    let api_version = str_at(v, &["apiVersion"]).unwrap_or_default().to_string();
    let group = api_version
        .split_once('/')
        .map(|(g, _)| g.to_string())
        .unwrap_or_default();
    (group, str_at(v, &["kind"]).unwrap_or_default().to_string())
}

/// Decode with the failing field's path and no value (serde's messages can quote input).
pub(super) fn decode<T: DeserializeOwned>(object: &Object, kind: &str) -> Result<T, InputError> {
    serde_path_to_error::deserialize::<_, T>(object.value.clone()).map_err(|e| {
        let path = e.path().to_string();
        InputError::Document {
            file: object.file.clone(),
            document: object.document,
            message: format!("{kind}: field {path} does not match the {kind} schema"),
        }
    })
}
