//! The operator's endpoint allowlist. A store names a server; only the operator decides which
//! servers the webhook may talk to. Checked by the validating webhook and again at runtime
//! before any TokenRequest or connection, because the webhook can be bypassed and stores can
//! predate a rule.
//!
//! Pattern grammar: `scheme://host[:port]`, where `host` is an exact name or IP, or `*.suffix`
//! (one or more leading labels), and `port` is a number or `*` (any). Without a port only the
//! scheme's default port matches. `http` is only possible when a pattern says `http`.

use std::str::FromStr;

use url::Url;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointPattern {
    scheme: String,
    host: HostPattern,
    port: PortPattern,
    text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum HostPattern {
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum PortPattern {
    Default,
    Any,
    Exact(u16),
}

impl FromStr for EndpointPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim().to_string();
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("{text:?}: expected scheme://host[:port]"))?;
        if scheme != "https" && scheme != "http" {
            return Err(format!("{text:?}: scheme must be https or http"));
        }
        let rest = rest.trim_end_matches('/');
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "{text:?}: only scheme://host[:port] is allowed (no path or credentials)"
            ));
        }
        // IPv6 literals keep their brackets: [fd00::1]:8200
        let (host, port) = if let Some(stripped) = rest.strip_prefix('[') {
            let (h, after) = stripped
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: unterminated IPv6 literal"))?;
            (format!("[{h}]"), after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        let port = match port {
            None => PortPattern::Default,
            Some("*") => PortPattern::Any,
            Some(p) => {
                PortPattern::Exact(p.parse().map_err(|_| format!("{text:?}: bad port {p:?}"))?)
            }
        };
        let host = host.to_ascii_lowercase();
        if host.is_empty() {
            return Err(format!("{text:?}: empty host"));
        }
        let host = match host.strip_prefix("*.") {
            Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => {
                HostPattern::Suffix(format!(".{suffix}"))
            }
            Some(_) => return Err(format!("{text:?}: bad wildcard")),
            None if host.contains('*') => {
                return Err(format!(
                    "{text:?}: '*' is only allowed as a leading '*.' label"
                ))
            }
            None => HostPattern::Exact(host),
        };
        Ok(Self {
            scheme: scheme.to_string(),
            host,
            port,
            text,
        })
    }
}

impl std::fmt::Display for EndpointPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl EndpointPattern {
    pub fn matches(&self, url: &Url) -> bool {
        if url.scheme() != self.scheme {
            return false;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        let host_ok = match &self.host {
            HostPattern::Exact(h) => *h == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        };
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Default => url.port().is_none(),
            PortPattern::Exact(p) => url.port_or_known_default() == Some(p),
        };
        host_ok && port_ok
    }
}

/// Which backend addresses stores may name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointPolicy {
    pub vault: Vec<EndpointPattern>,
    pub aws: Vec<EndpointPattern>,
}

/// The public AWS partitions' endpoints (commercial, China, GovCloud via amazonaws.com, and
/// the dual-stack `api.aws` names).
pub const DEFAULT_AWS_ENDPOINTS: &str =
    "https://*.amazonaws.com,https://*.amazonaws.com.cn,https://*.api.aws";

impl Default for EndpointPolicy {
    fn default() -> Self {
        Self {
            vault: Vec::new(),
            aws: parse_list(DEFAULT_AWS_ENDPOINTS).expect("built-in patterns parse"),
        }
    }
}

impl EndpointPolicy {
    /// Allow every Vault server matching these patterns, keeping the AWS defaults.
    pub fn with_vault(patterns: &[&str]) -> Self {
        Self {
            vault: patterns
                .iter()
                .map(|p| p.parse().expect("valid pattern"))
                .collect(),
            ..Self::default()
        }
    }
}

/// Comma-separated patterns (the flag format).
pub fn parse_list(text: &str) -> Result<Vec<EndpointPattern>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(EndpointPattern::from_str)
        .collect()
}

/// The allowlist check, with the message a denial carries.
pub fn check(url: &Url, patterns: &[EndpointPattern], flag: &str) -> Result<(), String> {
    if patterns.iter().any(|p| p.matches(url)) {
        return Ok(());
    }
    let origin = url.origin().ascii_serialization();
    if patterns.is_empty() {
        Err(format!(
            "{origin} is not allowed: the operator has not allowed any server yet ({flag})"
        ))
    } else {
        let allowed: Vec<String> = patterns.iter().map(ToString::to_string).collect();
        Err(format!(
            "{origin} is not in the operator's allowlist ({flag}: {})",
            allowed.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn pattern_matching() {
        let p: EndpointPattern = "https://vault.vault.svc:8200".parse().unwrap();
        assert!(p.matches(&url("https://vault.vault.svc:8200")));
        assert!(p.matches(&url("https://VAULT.vault.svc:8200/")));
        assert!(!p.matches(&url("https://vault.vault.svc:8201")));
        assert!(!p.matches(&url("http://vault.vault.svc:8200")));
        let wild: EndpointPattern = "https://*.amazonaws.com".parse().unwrap();
        assert!(wild.matches(&url("https://secretsmanager.eu-west-1.amazonaws.com")));
        assert!(!wild.matches(&url("https://amazonaws.com")));
        assert!(!wild.matches(&url("https://evil-amazonaws.com")));
        assert!(
            !wild.matches(&url("https://sts.amazonaws.com:8443")),
            "default port only"
        );
        assert!(!wild.matches(&url("https://sts.amazonaws.com.evil.io")));
        let any: EndpointPattern = "http://127.0.0.1:*".parse().unwrap();
        assert!(any.matches(&url("http://127.0.0.1:41234")));
        assert!(!any.matches(&url("http://127.0.0.2:41234")));
        let v6: EndpointPattern = "https://[fd00::10]:8200".parse().unwrap();
        assert!(v6.matches(&url("https://[fd00::10]:8200")));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "vault:8200",
            "ftp://x",
            "https://a/b",
            "https://u@h",
            "https://a.*.com",
            "https://*",
            "https://h:port",
        ] {
            assert!(bad.parse::<EndpointPattern>().is_err(), "{bad}");
        }
    }

    #[test]
    fn default_policy_allows_aws_and_no_vault() {
        let p = EndpointPolicy::default();
        assert!(p.vault.is_empty());
        assert!(check(
            &url("https://secretsmanager.us-east-1.amazonaws.com"),
            &p.aws,
            "--allowed-aws-endpoints"
        )
        .is_ok());
        let e = check(
            &url("https://vault:8200"),
            &p.vault,
            "--allowed-vault-servers",
        )
        .unwrap_err();
        assert!(e.contains("--allowed-vault-servers"), "{e}");
    }
}
