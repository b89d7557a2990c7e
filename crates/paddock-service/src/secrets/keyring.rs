//! The master key of tenant secrets and the sealing (AES-256-GCM bound to the secret's id and
//! version), held by the server's state. What is sealed, and the routes, are [`super`].

use std::path::Path;
use std::sync::RwLock;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use paddock_store::{SealedVersion, now_ms};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The master key: 32 bytes, and its fingerprint.
#[derive(Clone)]
pub struct MasterKey {
    key: [u8; 32],
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

const KEY_FORMAT: &str =
    "32 random bytes written as 64 hex digits or as base64 (e.g. `openssl rand -hex 32`)";

impl MasterKey {
    /// Parses a key: 64 hex digits or base64 of 32 bytes, surrounding whitespace ignored.
    pub fn parse(text: &str) -> Result<MasterKey, String> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(t).map_err(|_| format!("the secrets key must be {KEY_FORMAT}"))?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(|_| format!("the secrets key must be {KEY_FORMAT}"))?
        };
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("the secrets key must be {KEY_FORMAT}"))?;
        let mut h = Sha256::new();
        h.update(b"paddock secrets key id\0");
        h.update(key);
        let id = hex::encode(&h.finalize()[..8]);
        Ok(MasterKey { key, id })
    }

    /// Reads a key file, which must not be readable by group or others.
    pub fn from_file(path: &Path) -> Result<MasterKey, String> {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("secrets key file {}: {e}", path.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "secrets key file {} is readable by others (mode {:o}); make it 0600 or 0400",
                path.display(),
                meta.permissions().mode() & 0o777
            ));
        }
        if meta.len() > 4096 {
            return Err(format!("secrets key file {} is not a key", path.display()));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("secrets key file {}: {e}", path.display()))?;
        MasterKey::parse(&text).map_err(|e| format!("secrets key file {}: {e}", path.display()))
    }

    /// The fingerprint stored next to what this key seals.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The server's secrets engine: the master key (if configured) and a lock ordering writes.
#[derive(Debug)]
pub struct Secrets {
    pub(super) key: RwLock<Option<MasterKey>>,
    /// Held while a version number is chosen and written, and during rotation (async: it is
    /// held across store calls).
    write: tokio::sync::Mutex<()>,
}

/// The answer of every secret route and every create naming secrets without a master key.
pub fn not_configured() -> Error {
    Error::Unavailable(
        "secrets are not configured on this server: start it with --secrets-key-file FILE or \
         PADDOCK_SECRETS_KEY (32 random bytes as 64 hex digits, e.g. `openssl rand -hex 32`)"
            .into(),
    )
}

fn aad(secret_id: &str, version: i64) -> Vec<u8> {
    format!("paddock-secret\0{secret_id}\0{version}").into_bytes()
}

impl Secrets {
    pub fn new(key: Option<MasterKey>) -> Secrets {
        Secrets {
            key: RwLock::new(key),
            write: tokio::sync::Mutex::new(()),
        }
    }

    pub(super) fn key(&self) -> Result<MasterKey> {
        self.key
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(not_configured)
    }

    /// Whether a master key is configured.
    pub fn configured(&self) -> bool {
        self.key().is_ok()
    }

    pub(super) async fn write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.write.lock().await
    }

    /// Seals `value` as version `version` of `secret_id`.
    pub(super) fn seal_with(
        key: &MasterKey,
        secret_id: &str,
        version: i64,
        value: &[u8],
    ) -> Result<SealedVersion> {
        let cipher = Aes256Gcm::new_from_slice(&key.key)
            .map_err(|_| Error::Internal("secrets key has the wrong length".into()))?;
        let nonce: [u8; 12] = rand::random();
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value,
                    aad: &aad(secret_id, version),
                },
            )
            .map_err(|_| Error::Internal("sealing a secret failed".into()))?;
        Ok(SealedVersion {
            secret_id: secret_id.to_owned(),
            version,
            key_id: key.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
            created_at: now_ms(),
        })
    }

    pub(super) fn open_with(key: &MasterKey, v: &SealedVersion) -> Result<Vec<u8>> {
        if v.key_id != key.id {
            return Err(Error::Unavailable(format!(
                "a secret is sealed under master key {}, not this server's key {}: start the \
                 server with the key it was sealed with",
                v.key_id, key.id
            )));
        }
        let cipher = Aes256Gcm::new_from_slice(&key.key)
            .map_err(|_| Error::Internal("secrets key has the wrong length".into()))?;
        if v.nonce.len() != 12 {
            return Err(Error::Internal("a sealed secret has a bad nonce".into()));
        }
        cipher
            .decrypt(
                Nonce::from_slice(&v.nonce),
                Payload {
                    msg: &v.ciphertext,
                    aad: &aad(&v.secret_id, v.version),
                },
            )
            .map_err(|_| Error::Internal("a sealed secret does not open".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_from_hex_and_base64_only() {
        let hex = "00".repeat(32);
        let a = MasterKey::parse(&format!("  {hex}\n")).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode([0u8; 32]);
        assert_eq!(MasterKey::parse(&b64).unwrap().id(), a.id());
        for bad in ["", "abc", &"00".repeat(31), &"zz".repeat(32)] {
            assert!(MasterKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(!format!("{a:?}").contains(&hex));
    }

    #[test]
    fn sealed_values_open_only_in_their_row_and_under_their_key() {
        let k1 = MasterKey::parse(&"11".repeat(32)).unwrap();
        let k2 = MasterKey::parse(&"22".repeat(32)).unwrap();
        let v = Secrets::seal_with(&k1, "sec_a", 1, b"hunter2").unwrap();
        assert!(!v.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(Secrets::open_with(&k1, &v).unwrap(), b"hunter2");
        let moved = SealedVersion {
            secret_id: "sec_b".into(),
            ..v.clone()
        };
        assert!(Secrets::open_with(&k1, &moved).is_err());
        let other_version = SealedVersion {
            version: 2,
            ..v.clone()
        };
        assert!(Secrets::open_with(&k1, &other_version).is_err());
        let wrong_key = SealedVersion {
            key_id: k2.id().to_owned(),
            ..v
        };
        assert!(Secrets::open_with(&k2, &wrong_key).is_err());
    }
}
