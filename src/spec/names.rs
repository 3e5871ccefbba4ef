//! Kubernetes name grammars, as the API server validates them.

/// DNS-1123 subdomain as the API server checks it: dot-separated runs of lowercase
/// alphanumerics and '-', each starting and ending with an alphanumeric, at most 253
/// characters in all (Secret names, store names). Like the API server, no per-label limit.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// DNS-1123 label: like a subdomain segment, at most 63 characters (volume and container
/// names, namespaces).
pub fn is_dns1123_label(s: &str) -> bool {
    !s.contains('.') && s.len() <= 63 && is_dns1123_subdomain(s)
}

/// Portable environment variable names (C identifiers), which every runtime and shell accepts.
pub fn is_env_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A Secret data key: `[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..`.
pub fn is_secret_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammars() {
        assert!(is_dns1123_subdomain("payments-api-injected"));
        assert!(is_dns1123_subdomain("a.b-c"));
        assert!(!is_dns1123_subdomain("Payments"));
        assert!(!is_dns1123_subdomain("-a"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_label("a.b"));
        assert!(is_env_var_name("DB_PASSWORD"));
        assert!(is_env_var_name("_x1"));
        assert!(!is_env_var_name("1X"));
        assert!(!is_env_var_name("DB-PASSWORD"));
        assert!(!is_env_var_name(""));
        assert!(is_secret_key("tls.crt"));
        assert!(!is_secret_key(".."));
        assert!(!is_secret_key("a/b"));
    }
}
