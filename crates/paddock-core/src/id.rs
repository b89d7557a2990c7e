//! Sandbox ids: 20 characters of `[a-z0-9]`, the shape E2B uses.

use std::fmt;
use std::str::FromStr;

use rand::Rng;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const LEN: usize = 20;

/// A sandbox id. 20 random characters from a 36-letter alphabet carry 103 bits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SandboxId(String);

/// A string that is not a valid sandbox id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid sandbox id {0:?}: expected 20 characters of [a-z0-9]")]
pub struct IdError(pub String);

impl SandboxId {
    /// A fresh random id.
    pub fn random() -> Self {
        let mut rng = rand::rng();
        let s = (0..LEN)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        SandboxId(s)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SandboxId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.len() == LEN && s.bytes().all(|b| ALPHABET.contains(&b));
        if ok {
            Ok(SandboxId(s.to_owned()))
        } else {
            Err(IdError(s.to_owned()))
        }
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SandboxId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_parse_back() {
        let id = SandboxId::random();
        assert_eq!(id.as_str().parse::<SandboxId>().unwrap(), id);
    }

    #[test]
    fn rejects_bad_ids() {
        for bad in [
            "",
            "ABCDEFGHIJKLMNOPQRST",
            "../../../../../etc/x",
            "abc",
            "abcdefghij0123456789x",
        ] {
            assert!(bad.parse::<SandboxId>().is_err(), "{bad}");
        }
    }
}
