//! An object's uid as the owner index keeps it: the API server's uids are UUIDs in one form
//! (lowercase, hyphenated), kept as their 16 bytes; anything else is kept as it was written.
//! It compares and prints exactly as the string it was made from.

use std::fmt;

#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Uid {
    Uuid([u8; 16]),
    Other(Box<str>),
}

/// Where the hyphens of a UUID's text are.
const HYPHENS: [usize; 4] = [8, 13, 18, 23];

/// The 16 bytes of `s` when it is a UUID in lowercase, hyphenated form.
fn uuid(s: &str) -> Option<[u8; 16]> {
    let s = s.as_bytes();
    if s.len() != 36 || HYPHENS.iter().any(|&i| s[i] != b'-') {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut digits = s.iter().enumerate().filter(|(i, _)| !HYPHENS.contains(i));
    let mut out = [0u8; 16];
    for byte in &mut out {
        let (_, hi) = digits.next()?;
        let (_, lo) = digits.next()?;
        *byte = nibble(*hi)? << 4 | nibble(*lo)?;
    }
    Some(out)
}

impl From<&str> for Uid {
    fn from(s: &str) -> Uid {
        match uuid(s) {
            Some(bytes) => Uid::Uuid(bytes),
            None => Uid::Other(s.into()),
        }
    }
}

impl PartialEq<str> for Uid {
    fn eq(&self, other: &str) -> bool {
        match self {
            Uid::Uuid(bytes) => uuid(other).as_ref() == Some(bytes),
            Uid::Other(s) => **s == *other,
        }
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uid::Uuid(bytes) => {
                for (i, b) in bytes.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
            Uid::Other(s) => f.write_str(s),
        }
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_and_prints_as_the_string_it_was_made_from() {
        for s in [
            "0f7b7a52-3c1e-4a55-9d2e-5b6f0e1c2d3a",
            "0F7B7A52-3C1E-4A55-9D2E-5B6F0E1C2D3A",
            "0f7b7a52-3c1e-4a55-9d2e-5b6f0e1c2d3",
            "0f7b7a52x3c1e-4a55-9d2e-5b6f0e1c2d3a",
            "0f7b7a52-3c1e-4a55-9d2e-5b6f0e1c2d3g",
            "u-1",
            "",
        ] {
            let uid = Uid::from(s);
            assert_eq!(uid.to_string(), s);
            assert!(uid == *s, "{s}");
            assert!(uid != *"0f7b7a52-3c1e-4a55-9d2e-5b6f0e1c2d3b");
        }
        assert!(matches!(
            Uid::from("0f7b7a52-3c1e-4a55-9d2e-5b6f0e1c2d3a"),
            Uid::Uuid(_)
        ));
        // Not the canonical form: kept (and compared) as written.
        let upper = Uid::from("0F7B7A52-3C1E-4A55-9D2E-5B6F0E1C2D3A");
        assert!(matches!(upper, Uid::Other(_)));
        assert!(upper != *"0f7b7a52-3c1e-4a55-9d2e-5b6f0e1c2d3a");
        assert_eq!(std::mem::size_of::<Uid>(), 24);
    }
}
