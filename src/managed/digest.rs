//! The keyed digest (HMAC-SHA256) recorded on managed Secrets: a digest of secret data
//! without a key could be brute-forced for short values, so only a keyed digest ever leaves
//! the process.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::redact::SecretBytes;

/// Key for the HMAC recorded on managed Secrets.
#[derive(Clone)]
pub struct DigestKey(SecretBytes);

impl DigestKey {
    pub fn new(key: SecretBytes) -> Self {
        Self(key)
    }

    pub fn random() -> Self {
        let mut bytes = vec![0u8; 32];
        rand::Rng::fill(&mut rand::rng(), bytes.as_mut_slice());
        Self(SecretBytes::new(bytes))
    }

    /// HMAC-SHA256 over the sorted, length-prefixed entries, hex-encoded.
    pub fn digest(&self, data: &BTreeMap<String, SecretBytes>) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose())
            .expect("HMAC takes any key length");
        for (k, v) in data {
            mac.update(&(k.len() as u64).to_be_bytes());
            mac.update(k.as_bytes());
            mac.update(&(v.len() as u64).to_be_bytes());
            mac.update(v.expose());
        }
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_keyed_and_order_independent() {
        let a = DigestKey::new(SecretBytes::new(b"key-a".to_vec()));
        let b = DigestKey::new(SecretBytes::new(b"key-b".to_vec()));
        let data: BTreeMap<String, SecretBytes> = [("x", "1"), ("y", "2")]
            .iter()
            .map(|(k, v)| (k.to_string(), SecretBytes::new(v.as_bytes().to_vec())))
            .collect();
        assert_eq!(a.digest(&data).len(), 64);
        assert_ne!(a.digest(&data), b.digest(&data));
        // Length prefixes: ("ab","c") and ("a","bc") must differ.
        let d1: BTreeMap<_, _> = [("ab".to_string(), SecretBytes::new(b"c".to_vec()))].into();
        let d2: BTreeMap<_, _> = [("a".to_string(), SecretBytes::new(b"bc".to_vec()))].into();
        assert_ne!(a.digest(&d1), a.digest(&d2));
    }
}
