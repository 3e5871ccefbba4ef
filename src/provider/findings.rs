//! What checking one backend's section of a store collects: every problem with its field
//! path, and advice for the user. Backends fill it; the registry turns it into a verdict.

use url::Url;

use super::policy::{self, EndpointPattern};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

pub(crate) fn err(path: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// Problems and advice gathered while checking one backend's spec.
#[derive(Default)]
pub struct Findings {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
}

impl Findings {
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(err(path, message));
    }

    /// `raw` as a backend endpoint (see [`super::net::check_endpoint`]) that the operator's
    /// allowlist `patterns` admits; `flag` names the option that sets them.
    pub fn endpoint(
        &mut self,
        path: &str,
        raw: &str,
        patterns: &[EndpointPattern],
        flag: &str,
    ) -> Option<Url> {
        let url = match super::net::check_endpoint(raw) {
            Ok(url) => url,
            Err(m) => {
                self.error(path, m);
                return None;
            }
        };
        match policy::check(&url, patterns, flag) {
            Ok(()) => Some(url),
            Err(m) => {
                self.error(path, m);
                None
            }
        }
    }

    /// The configuration and the advice when nothing was wrong, else every problem.
    pub fn finish<C>(self, config: Option<C>) -> Result<(C, Vec<String>), Vec<FieldError>> {
        match config {
            Some(config) if self.errors.is_empty() => Ok((config, self.warnings)),
            _ => Err(self.errors),
        }
    }
}
