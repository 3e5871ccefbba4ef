//! Secret material lives in [`SecretBytes`]: it never prints, serialises or compares in
//! ways that could leak the value, and it is zeroed when dropped.

use std::fmt;
use zeroize::Zeroizing;

/// Bytes of a secret value or credential. `Debug` shows only the length; there is no
/// `Display` and no `Serialize`, so a value cannot reach a log line or an error by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn from_string(value: String) -> Self {
        Self::new(value.into_bytes())
    }

    /// Deliberately named: every caller that needs the value says so.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value as UTF-8, when it is text.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<redacted {} bytes>)", self.0.len())
    }
}

/// A bearer credential (ServiceAccount JWT, Vault token). Same guarantees as [`SecretBytes`].
#[derive(Clone)]
pub struct SecretToken(Zeroizing<String>);

impl SecretToken {
    pub fn new(token: String) -> Self {
        Self(Zeroizing::new(token))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(<redacted>)")
    }
}

/// Removes anything credential-shaped from text that came from outside (backend error
/// bodies, transport errors) before it is put into a message a user or a log can see.
pub fn scrub(text: &str) -> String {
    const MAX: usize = 300;
    let mut out = String::with_capacity(text.len().min(MAX));
    for word in text.split_inclusive(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
        let core = word.trim_end_matches(|c: char| c.is_whitespace() || c == '"' || c == '\'');
        let tail = &word[core.len()..];
        if looks_like_credential(core) {
            out.push_str("<redacted>");
        } else {
            out.push_str(core);
        }
        out.push_str(tail);
    }
    if out.len() > MAX {
        let mut cut = MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

fn looks_like_credential(word: &str) -> bool {
    let w = word.trim_matches(|c: char| matches!(c, ',' | '.' | ';' | ':' | '(' | ')' | '[' | ']'));
    // JWTs (three base64url segments starting with a JSON header), Vault service/batch/recovery
    // tokens, AWS session tokens and long opaque base64 runs.
    w.starts_with("eyJ")
        || ["hvs.", "hvb.", "hvr.", "s.", "b.", "r."]
            .iter()
            .any(|p| w.starts_with(p) && w.len() >= 20)
        || w.starts_with("ASIA") && w.len() >= 16
        || (w.len() >= 40
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '-' | '_')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let v = SecretBytes::from_string("hunter2-sentinel".into());
        let shown = format!("{v:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("16 bytes"));
        let t = SecretToken::new("eyJhbGciOiJSUzI1NiJ9.payload.sig".into());
        assert!(!format!("{t:?}").contains("eyJ"));
    }

    #[test]
    fn scrub_removes_credentials_and_keeps_the_rest() {
        let text = "permission denied for token hvs.CAESIJ3x7aQ9vLmN0pQrStUvWxYz and jwt eyJhbGciOiJSUzI1NiJ9.e30.c2ln, role payments";
        let s = scrub(text);
        assert!(!s.contains("hvs.CAES"), "{s}");
        assert!(!s.contains("eyJhbGci"), "{s}");
        assert!(s.contains("permission denied"));
        assert!(s.contains("role payments"));
    }

    #[test]
    fn scrub_truncates_long_bodies() {
        let s = scrub(&"word ".repeat(200));
        assert!(s.chars().count() <= 301);
    }
}
