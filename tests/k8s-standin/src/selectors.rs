//! Label and field selectors, and the filter a list, watch or deletecollection applies.

use serde_json::{json, Map, Value};

use crate::object::{meta, meta_str, set_meta};
use crate::resources::ResourceInfo;
use crate::store::{EventKind, StoredEvent};

/// Which objects of one resource a list, watch or deletecollection sees.
pub(crate) struct ObjectFilter {
    pub(crate) info: &'static ResourceInfo,
    pub(crate) namespace: Option<String>,
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
}

impl ObjectFilter {
    pub(crate) fn matches(&self, object: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if meta_str(object, "namespace").unwrap_or("") != ns {
                return false;
            }
        }
        let empty = Map::new();
        let labels = meta(object)
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        self.labels.matches(labels) && self.fields.matches(object)
    }

    /// Turn a stored change into what this watcher should see, if anything.
    pub(crate) fn watch_event(&self, event: &StoredEvent) -> Option<(&'static str, Value)> {
        if event.resource != self.info.id {
            return None;
        }
        let now = self.matches(&event.object);
        match event.kind {
            EventKind::Added => now.then(|| ("ADDED", event.object.clone())),
            EventKind::Deleted => now.then(|| ("DELETED", event.object.clone())),
            EventKind::Modified => {
                let before = event.previous.as_ref().is_some_and(|p| self.matches(p));
                match (before, now) {
                    (true, true) => Some(("MODIFIED", event.object.clone())),
                    (false, true) => Some(("ADDED", event.object.clone())),
                    (true, false) => {
                        // The previous content, with this event's resourceVersion.
                        let mut gone = event.previous.clone().unwrap_or(Value::Null);
                        set_meta(&mut gone, "resourceVersion", json!(event.rv.to_string()));
                        Some(("DELETED", gone))
                    }
                    (false, false) => None,
                }
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum LabelOp {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Clone, Debug)]
struct Requirement {
    pub(crate) key: String,
    pub(crate) op: LabelOp,
    pub(crate) values: Vec<String>,
}

/// A parsed `labelSelector` (the full grammar of `labels.Parse`).
#[derive(Clone, Debug, Default)]
pub(crate) struct LabelSelector(Vec<Requirement>);

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Equals,
    DoubleEquals,
    NotEquals,
    Bang,
    Open,
    Close,
    Comma,
    Greater,
    Less,
}

impl LabelSelector {
    pub(crate) fn parse(selector: &str) -> Result<LabelSelector, String> {
        let tokens = Self::lex(selector)?;
        let mut requirements = Vec::new();
        let mut pos = 0;
        while pos < tokens.len() {
            let (requirement, next) = Self::requirement(&tokens, pos)?;
            requirements.push(requirement);
            pos = next;
            match tokens.get(pos) {
                None => break,
                Some(Token::Comma) => {
                    pos += 1;
                    if pos == tokens.len() {
                        return Err("found '', expected: identifier after ','".into());
                    }
                }
                Some(other) => return Err(format!("found {other:?}, expected: ','")),
            }
        }
        Ok(LabelSelector(requirements))
    }

    fn lex(selector: &str) -> Result<Vec<Token>, String> {
        let mut tokens = Vec::new();
        let mut chars = selector.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                ' ' | '\t' => {}
                ',' => tokens.push(Token::Comma),
                '(' => tokens.push(Token::Open),
                ')' => tokens.push(Token::Close),
                '>' => tokens.push(Token::Greater),
                '<' => tokens.push(Token::Less),
                '=' => {
                    if chars.peek() == Some(&'=') {
                        chars.next();
                        tokens.push(Token::DoubleEquals);
                    } else {
                        tokens.push(Token::Equals);
                    }
                }
                '!' => {
                    if chars.peek() == Some(&'=') {
                        chars.next();
                        tokens.push(Token::NotEquals);
                    } else {
                        tokens.push(Token::Bang);
                    }
                }
                _ => {
                    let mut ident = String::from(c);
                    while let Some(&next) = chars.peek() {
                        if " \t,()=!<>".contains(next) {
                            break;
                        }
                        ident.push(next);
                        chars.next();
                    }
                    tokens.push(Token::Ident(ident));
                }
            }
        }
        Ok(tokens)
    }

    fn requirement(tokens: &[Token], mut pos: usize) -> Result<(Requirement, usize), String> {
        let negated = tokens.get(pos) == Some(&Token::Bang);
        if negated {
            pos += 1;
        }
        let key = match tokens.get(pos) {
            Some(Token::Ident(key)) => key.clone(),
            other => return Err(format!("found {other:?}, expected: identifier")),
        };
        pos += 1;
        let at_end = matches!(tokens.get(pos), None | Some(Token::Comma));
        if negated {
            if !at_end {
                return Err(format!(
                    "found {:?}, expected: ',' or end of selector after '!{key}'",
                    tokens[pos]
                ));
            }
            let requirement = Requirement {
                key,
                op: LabelOp::DoesNotExist,
                values: vec![],
            };
            return Ok((requirement, pos));
        }
        if at_end {
            let requirement = Requirement {
                key,
                op: LabelOp::Exists,
                values: vec![],
            };
            return Ok((requirement, pos));
        }
        let op = match &tokens[pos] {
            Token::Equals | Token::DoubleEquals => LabelOp::Equals,
            Token::NotEquals => LabelOp::NotEquals,
            Token::Greater => LabelOp::GreaterThan,
            Token::Less => LabelOp::LessThan,
            Token::Ident(word) if word == "in" => LabelOp::In,
            Token::Ident(word) if word == "notin" => LabelOp::NotIn,
            other => {
                return Err(format!(
                    "found {other:?}, expected: in, notin, =, ==, !=, gt, lt"
                ))
            }
        };
        pos += 1;
        let mut values = Vec::new();
        match op {
            LabelOp::In | LabelOp::NotIn => {
                if tokens.get(pos) != Some(&Token::Open) {
                    return Err(format!("found {:?}, expected: '('", tokens.get(pos)));
                }
                pos += 1;
                loop {
                    match tokens.get(pos) {
                        Some(Token::Ident(value)) => {
                            values.push(value.clone());
                            pos += 1;
                        }
                        // An empty value, as in `a in (,x)` or `a in ()`.
                        Some(Token::Comma) | Some(Token::Close) => values.push(String::new()),
                        other => {
                            return Err(format!(
                                "found {other:?}, expected: ',', ')' or identifier"
                            ))
                        }
                    }
                    match tokens.get(pos) {
                        Some(Token::Comma) => pos += 1,
                        Some(Token::Close) => {
                            pos += 1;
                            break;
                        }
                        other => return Err(format!("found {other:?}, expected: ',' or ')'")),
                    }
                }
            }
            LabelOp::GreaterThan | LabelOp::LessThan => match tokens.get(pos) {
                Some(Token::Ident(value)) if value.parse::<i64>().is_ok() => {
                    values.push(value.clone());
                    pos += 1;
                }
                other => return Err(format!("found {other:?}, expected: an integer")),
            },
            _ => match tokens.get(pos) {
                Some(Token::Ident(value)) => {
                    values.push(value.clone());
                    pos += 1;
                }
                // `a=` selects an empty value.
                None | Some(Token::Comma) => values.push(String::new()),
                other => return Err(format!("found {other:?}, expected: identifier")),
            },
        }
        Ok((Requirement { key, op, values }, pos))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.0.iter().all(|r| {
            let value = labels.get(&r.key).and_then(Value::as_str);
            match r.op {
                LabelOp::Equals | LabelOp::In => {
                    value.is_some_and(|v| r.values.iter().any(|x| x == v))
                }
                LabelOp::NotEquals | LabelOp::NotIn => {
                    value.is_none_or(|v| !r.values.iter().any(|x| x == v))
                }
                LabelOp::Exists => value.is_some(),
                LabelOp::DoesNotExist => value.is_none(),
                LabelOp::GreaterThan | LabelOp::LessThan => {
                    let (Some(actual), Ok(bound)) = (
                        value.and_then(|v| v.parse::<i64>().ok()),
                        r.values[0].parse::<i64>(),
                    ) else {
                        return false;
                    };
                    if r.op == LabelOp::GreaterThan {
                        actual > bound
                    } else {
                        actual < bound
                    }
                }
            }
        })
    }
}

/// A parsed `fieldSelector`: `field=value`, `field==value`, `field!=value`, comma-joined.
#[derive(Clone, Debug, Default)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub(crate) fn parse(selector: &str, info: &ResourceInfo) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for term in split_unescaped(selector, ',') {
            if term.is_empty() {
                continue;
            }
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{selector}'; can't understand '{term}'"
                ));
            };
            let field = field.trim();
            let known = field == "metadata.name"
                || field == "metadata.namespace"
                || info.extra_field_labels().contains(&field);
            if !known {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_string(), equal, unescape(value)));
        }
        Ok(FieldSelector(terms))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, expected)| {
            let mut current = object;
            for part in field.split('.') {
                current = current.get(part).unwrap_or(&Value::Null);
            }
            let actual = match current {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == *expected) == *equal
        })
    }
}

fn split_unescaped(s: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            parts.last_mut().expect("non-empty").push('\\');
            parts.last_mut().expect("non-empty").push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == separator {
            parts.push(String::new());
        } else {
            parts.last_mut().expect("non-empty").push(c);
        }
    }
    parts
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}
