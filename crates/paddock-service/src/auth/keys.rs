//! API keys: their form, hashing and minting, the server's own secret, and [`Caller`], the
//! key a request was authenticated as. Nothing here reads a request.

use paddock_store::{ApiKey, Role, SandboxFilter, SandboxRecord, Store, Tenant, now_ms};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const KEY_PREFIX: &str = "pdk_";
/// The prefix E2B SDKs expect; `e2b_<hex>` names the same key as `pdk_<hex>`.
pub const E2B_KEY_PREFIX: &str = "e2b_";
const KEY_CHARS: usize = 40;

/// A new random secret key: `pdk_` and 40 lowercase hex digits.
pub fn generate_key() -> String {
    let mut bytes = [0u8; KEY_CHARS / 2];
    rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// Whether `s` looks like a Paddock key in either form (for the proxy, which must never
/// forward one to a sandbox).
pub fn looks_like_key(s: &str) -> bool {
    s.starts_with(KEY_PREFIX) || s.starts_with(E2B_KEY_PREFIX)
}

/// The E2B form (`e2b_<hex>`) of a key whose material is hex; `None` for older base62 keys.
pub fn e2b_form(key: &str) -> Option<String> {
    let tail = key.strip_prefix(KEY_PREFIX)?;
    is_hex_tail(tail).then(|| format!("{E2B_KEY_PREFIX}{tail}"))
}

fn is_hex_tail(t: &str) -> bool {
    t.len() == KEY_CHARS
        && t.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The stored form of a presented key: `e2b_<hex>` becomes `pdk_<hex>`; `None` when the key
/// is not well formed.
pub fn canonical(key: &str) -> Option<std::borrow::Cow<'_, str>> {
    if let Some(tail) = key.strip_prefix(E2B_KEY_PREFIX) {
        return is_hex_tail(tail).then(|| format!("{KEY_PREFIX}{tail}").into());
    }
    let tail = key.strip_prefix(KEY_PREFIX)?;
    (tail.len() == KEY_CHARS && tail.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then_some(key.into())
}

/// Hex SHA-256 of a secret key: what the store keeps.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A random public id with a prefix, e.g. `key_8f3k...`.
pub fn random_id(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &paddock_core::SandboxId::random().as_str()[..16]
    )
}

/// The server's 32-byte secret, kept in `<data>/secret.key` (mode 0600), made on first use.
pub fn server_secret(data_dir: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let p = data_dir.join("secret.key");
    match std::fs::read(&p) {
        Ok(s) if s.len() == 32 => return Ok(s),
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} is not 32 bytes; remove it to make a new one (E2B access tokens change)",
                p.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut secret = vec![0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut secret[..]);
    let tmp = data_dir.join("secret.key.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&secret)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &p)?;
    Ok(secret)
}

/// The authenticated key of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKey,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.key.role == Role::Admin
    }
    pub fn tenant(&self) -> &str {
        &self.key.tenant
    }
    /// Whether this caller may see a resource of `tenant`. Admins see every tenant.
    pub fn may_access(&self, tenant: &str) -> bool {
        self.is_admin() || self.key.tenant == tenant
    }
    /// Whether this caller may see sandbox `r`: admins every sandbox, operators and viewers
    /// those of their tenant, developers only those their own key created.
    pub fn sees(&self, r: &SandboxRecord) -> bool {
        self.may_access(&r.tenant) && (self.key.role != Role::Developer || r.key_id == self.key.id)
    }
    /// Narrows a sandbox listing to what [`Caller::sees`].
    pub fn scope(&self, f: &mut SandboxFilter) {
        if !self.is_admin() {
            f.tenant = Some(self.key.tenant.clone());
        }
        if self.key.role == Role::Developer {
            f.key_id = Some(self.key.id.clone());
        }
    }
}

/// Creates a key (and its tenant, if new) in `store`: for the API (`api::admin::new_key`), at
/// first start, and the control plane's first admin key.
pub async fn new_key_in(
    store: &dyn Store,
    name: &str,
    role: Role,
    tenant: Option<&str>,
    max_sandboxes: Option<u32>,
    expires_at: Option<i64>,
    webhook_url: Option<String>,
) -> Result<(ApiKey, String)> {
    let tenant = match tenant {
        Some(t) => {
            store
                .get_tenant(t)
                .await?
                .ok_or_else(|| Error::BadRequest(format!("unknown tenant {t:?}")))?
                .id
        }
        None => {
            let t = Tenant {
                id: random_id("tnt"),
                name: name.to_owned(),
                created_at: now_ms(),
            };
            store.insert_tenant(&t).await?;
            t.id
        }
    };
    let secret = generate_key();
    let k = ApiKey {
        id: random_id("key"),
        tenant,
        name: name.to_owned(),
        role,
        hash: hash_key(&secret),
        prefix: secret[..8].to_owned(),
        created_at: now_ms(),
        expires_at,
        revoked_at: None,
        max_sandboxes,
        webhook_url,
    };
    store.insert_key(&k).await?;
    Ok((k, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hex_and_have_an_e2b_form() {
        let k = generate_key();
        assert_eq!(k.len(), 44);
        let tail = k.strip_prefix("pdk_").expect("pdk_ prefix");
        assert!(
            tail.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let e = e2b_form(&k).expect("an e2b form");
        assert_eq!(e, format!("e2b_{tail}"));
        // Both forms are the same stored key.
        assert_eq!(canonical(&e).as_deref(), Some(k.as_str()));
        assert_eq!(canonical(&k).as_deref(), Some(k.as_str()));
        assert_ne!(generate_key(), k);
    }

    #[test]
    fn old_base62_keys_keep_working_in_their_pdk_form_only() {
        let old = "pdk_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789ABCD";
        assert_eq!(canonical(old).as_deref(), Some(old));
        assert_eq!(e2b_form(old), None);
        assert_eq!(
            canonical("e2b_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789ABCD"),
            None
        );
        for bad in [
            "",
            "pdk_",
            "e2b_abc",
            "pdk_x",
            "xyz_0123456789012345678901234567890123456789",
        ] {
            assert_eq!(canonical(bad), None, "{bad}");
        }
        assert_eq!(
            canonical("e2b_0123456789ABCDEF0123456789abcdef01234567"),
            None
        );
    }
}
