//! Tenant secrets: values sealed with AES-256-GCM under the server's master key, versioned,
//! write-only, and handed to sandboxes at create as env vars or files (`docs/secrets.md`).
//!
//! **Invariants:**
//! - The master key comes from `--secrets-key-file` or `PADDOCK_SECRETS_KEY` and lives only
//!   in memory; the store keeps a fingerprint of it (`key_id`) next to each sealed version.
//! - A value in clear exists only in a request body, in [`Secrets::open`]'s result on its way
//!   into a sandbox's setup, and in the sandbox. It is never logged, audited, put in an event,
//!   an error message or a metric, and no route returns it. Values travel in
//!   [`SecretValue`], whose `Debug` is `<redacted>`.
//! - Each sealed version is bound to its secret id and version number (the GCM associated
//!   data), so a ciphertext moved to another row does not open.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::RwLock;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use paddock_core::SecretValue;
use paddock_store::{SealedVersion, SecretRecord, now_ms};
use sha2::{Digest, Sha256};

use crate::auth::{Caller, random_id};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Largest secret value, in bytes.
pub const MAX_VALUE: usize = 64 * 1024;
/// Most secrets per tenant.
pub const MAX_PER_TENANT: u64 = 1000;
/// Versions kept per secret (older ones are deleted when a new one is written).
pub const KEEP_VERSIONS: u32 = 10;
/// Most secrets one sandbox may receive.
pub const MAX_PER_SANDBOX: usize = 64;
/// Metadata limits (E2B's): entries, key bytes, value bytes, total bytes.
pub const MAX_METADATA: usize = 32;
pub const MAX_METADATA_KEY: usize = 128;
pub const MAX_METADATA_VALUE: usize = 1024;
pub const MAX_METADATA_TOTAL: usize = 8192;

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
    key: RwLock<Option<MasterKey>>,
    /// Held while a version number is chosen and written, and during rotation (async: it is
    /// held across store calls).
    write: tokio::sync::Mutex<()>,
}

/// The answer of every secret route and every create naming secrets without a master key.
pub fn not_configured() -> ApiError {
    ApiError::Unavailable(
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

    fn key(&self) -> ApiResult<MasterKey> {
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

    async fn write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.write.lock().await
    }

    /// Seals `value` as version `version` of `secret_id`.
    fn seal_with(
        key: &MasterKey,
        secret_id: &str,
        version: i64,
        value: &[u8],
    ) -> ApiResult<SealedVersion> {
        let cipher = Aes256Gcm::new_from_slice(&key.key)
            .map_err(|_| ApiError::Internal("secrets key has the wrong length".into()))?;
        let nonce: [u8; 12] = rand::random();
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value,
                    aad: &aad(secret_id, version),
                },
            )
            .map_err(|_| ApiError::Internal("sealing a secret failed".into()))?;
        Ok(SealedVersion {
            secret_id: secret_id.to_owned(),
            version,
            key_id: key.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
            created_at: now_ms(),
        })
    }

    fn open_with(key: &MasterKey, v: &SealedVersion) -> ApiResult<Vec<u8>> {
        if v.key_id != key.id {
            return Err(ApiError::Unavailable(format!(
                "a secret is sealed under master key {}, not this server's key {}: start the \
                 server with the key it was sealed with",
                v.key_id, key.id
            )));
        }
        let cipher = Aes256Gcm::new_from_slice(&key.key)
            .map_err(|_| ApiError::Internal("secrets key has the wrong length".into()))?;
        if v.nonce.len() != 12 {
            return Err(ApiError::Internal("a sealed secret has a bad nonce".into()));
        }
        cipher
            .decrypt(
                Nonce::from_slice(&v.nonce),
                Payload {
                    msg: &v.ciphertext,
                    aad: &aad(&v.secret_id, v.version),
                },
            )
            .map_err(|_| ApiError::Internal("a sealed secret does not open".into()))
    }

    /// The current value of a secret.
    async fn open_current(&self, state: &AppState, s: &SecretRecord) -> ApiResult<SecretValue> {
        let key = self.key()?;
        let v = state
            .store
            .secret_version(&s.id, s.current_version)
            .await?
            .ok_or_else(|| ApiError::Internal("a secret has no current version".into()))?;
        let bytes = Self::open_with(&key, &v)?;
        String::from_utf8(bytes)
            .map(SecretValue)
            .map_err(|_| ApiError::Internal("a sealed secret is not UTF-8".into()))
    }
}

/// Checks a secret's name: 1 to 128 bytes of `[A-Za-z0-9_.-]`, starting with a letter or
/// digit (it may name a file under `/run/secrets`).
pub fn check_name(name: &str) -> ApiResult<()> {
    if paddock_core::valid_secret_name(name) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid secret name {:?}: 1 to 128 bytes of letters, digits, '_', '.' and '-', starting with a letter or digit",
            crate::state::truncate(name, 64)
        )))
    }
}

fn check_value(v: &str) -> ApiResult<()> {
    if v.len() > MAX_VALUE {
        return Err(ApiError::BadRequest(format!(
            "a secret value is at most {MAX_VALUE} bytes"
        )));
    }
    Ok(())
}

/// Checks metadata against E2B's limits.
pub fn check_metadata(m: &BTreeMap<String, String>) -> ApiResult<()> {
    if m.len() > MAX_METADATA {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_METADATA} metadata entries"
        )));
    }
    let mut total = 0;
    for (k, v) in m {
        if k.is_empty() || k.len() > MAX_METADATA_KEY || v.len() > MAX_METADATA_VALUE {
            return Err(ApiError::BadRequest(format!(
                "metadata keys must be 1 to {MAX_METADATA_KEY} bytes and values at most {MAX_METADATA_VALUE}"
            )));
        }
        total += k.len() + v.len();
    }
    if total > MAX_METADATA_TOTAL {
        return Err(ApiError::BadRequest(format!(
            "metadata is at most {MAX_METADATA_TOTAL} bytes in total"
        )));
    }
    Ok(())
}

/// The error for a secret that does not exist (or belongs to another tenant).
pub fn not_found(id_or_name: &str) -> ApiError {
    if paddock_core::valid_secret_name(id_or_name) {
        ApiError::NotFound(format!("unknown secret {id_or_name:?}"))
    } else {
        ApiError::NotFound("unknown secret".into())
    }
}

/// The secret's name for the audit trail: only a valid name, never other input.
fn audit_name(n: &str) -> Option<String> {
    paddock_core::valid_secret_name(n).then(|| n.to_owned())
}

/// Creates a secret of the caller's tenant with its first version (audited as `secret.create`).
pub async fn create(
    state: &AppState,
    caller: &Caller,
    name: &str,
    value: &str,
    metadata: BTreeMap<String, String>,
) -> ApiResult<SecretRecord> {
    let res = create_unaudited(state, caller, name, value, metadata).await;
    state
        .audited(caller, "secret.create", None, audit_name(name), res)
        .await
}

async fn create_unaudited(
    state: &AppState,
    caller: &Caller,
    name: &str,
    value: &str,
    metadata: BTreeMap<String, String>,
) -> ApiResult<SecretRecord> {
    let key = state.secrets.key()?;
    check_name(name)?;
    check_value(value)?;
    check_metadata(&metadata)?;
    let _g = state.secrets.write_lock().await;
    if state.store.count_secrets(caller.tenant()).await? >= MAX_PER_TENANT {
        return Err(ApiError::QuotaExceeded(format!(
            "a tenant has at most {MAX_PER_TENANT} secrets"
        )));
    }
    if state
        .store
        .get_secret(caller.tenant(), name)
        .await?
        .is_some()
    {
        return Err(ApiError::Conflict(format!(
            "secret {name:?} already exists"
        )));
    }
    let now = now_ms();
    let rec = SecretRecord {
        id: random_id("sec"),
        tenant: caller.tenant().to_owned(),
        name: name.to_owned(),
        current_version: 1,
        metadata,
        created_at: now,
        updated_at: now,
    };
    let sealed = Secrets::seal_with(&key, &rec.id, 1, value.as_bytes())?;
    state
        .store
        .insert_secret(&rec, &sealed)
        .await
        .map_err(|e| match e {
            paddock_store::StoreError::Conflict(_) => {
                ApiError::Conflict(format!("secret {name:?} already exists"))
            }
            other => other.into(),
        })?;
    tracing::debug!(secret = %rec.name, id = %rec.id, tenant = %rec.tenant, "secret created");
    Ok(rec)
}

/// Stores a new version of a secret (and replaces its metadata if given); audited as
/// `secret.update`.
pub async fn update(
    state: &AppState,
    caller: &Caller,
    id_or_name: &str,
    value: &str,
    metadata: Option<BTreeMap<String, String>>,
) -> ApiResult<SecretRecord> {
    let res = update_unaudited(state, caller, id_or_name, value, metadata).await;
    state
        .audited(caller, "secret.update", None, audit_name(id_or_name), res)
        .await
}

async fn update_unaudited(
    state: &AppState,
    caller: &Caller,
    id_or_name: &str,
    value: &str,
    metadata: Option<BTreeMap<String, String>>,
) -> ApiResult<SecretRecord> {
    let key = state.secrets.key()?;
    check_value(value)?;
    if let Some(m) = &metadata {
        check_metadata(m)?;
    }
    let _g = state.secrets.write_lock().await;
    let rec = get(state, caller, id_or_name).await?;
    let version = rec.current_version + 1;
    let sealed = Secrets::seal_with(&key, &rec.id, version, value.as_bytes())?;
    if !state
        .store
        .add_secret_version(&sealed, metadata.as_ref(), KEEP_VERSIONS)
        .await?
    {
        return Err(not_found(id_or_name));
    }
    tracing::debug!(secret = %rec.name, version, "secret updated");
    get(state, caller, &rec.id).await
}

/// A secret of the caller's tenant by id or name.
pub async fn get(state: &AppState, caller: &Caller, id_or_name: &str) -> ApiResult<SecretRecord> {
    state.secrets.key()?;
    state
        .store
        .get_secret(caller.tenant(), id_or_name)
        .await?
        .ok_or_else(|| not_found(id_or_name))
}

/// Deletes a secret and every version of it (audited as `secret.delete`).
pub async fn delete(
    state: &AppState,
    caller: &Caller,
    id_or_name: &str,
) -> ApiResult<SecretRecord> {
    let res: ApiResult<SecretRecord> = async {
        let _g = state.secrets.write_lock().await;
        let rec = get(state, caller, id_or_name).await?;
        state.store.delete_secret(&rec.id).await?;
        Ok(rec)
    }
    .await;
    state
        .audited(caller, "secret.delete", None, audit_name(id_or_name), res)
        .await
}

/// Secrets of the caller's tenant by name, after `after`.
pub async fn list(
    state: &AppState,
    caller: &Caller,
    after: Option<&str>,
    limit: u32,
) -> ApiResult<Vec<SecretRecord>> {
    state.secrets.key()?;
    Ok(state
        .store
        .list_secrets(caller.tenant(), after, limit)
        .await?)
}

/// Re-encrypts every version of every secret under `new` and makes it the key in use. All or
/// nothing: one store transaction. Returns the number of versions re-encrypted.
pub async fn rotate(state: &AppState, new: MasterKey) -> ApiResult<usize> {
    let old = state.secrets.key()?;
    if old.id == new.id {
        return Err(ApiError::BadRequest(
            "the new secrets key is the key in use".into(),
        ));
    }
    let _g = state.secrets.write_lock().await;
    let versions = state.store.all_secret_versions().await?;
    let mut resealed = Vec::with_capacity(versions.len());
    for v in &versions {
        let value = Secrets::open_with(&old, v)?;
        let mut n = Secrets::seal_with(&new, &v.secret_id, v.version, &value)?;
        n.created_at = v.created_at;
        resealed.push(n);
    }
    state.store.reseal_secret_versions(&resealed).await?;
    tracing::info!(versions = resealed.len(), from = %old.id, to = %new.id, "secrets key rotated");
    *state
        .secrets
        .key
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(new);
    Ok(resealed.len())
}

/// How a sandbox receives one secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretUse {
    /// The secret's name (or id).
    pub secret: String,
    /// As a file `/run/secrets/<key>` instead of an env var `<key>`.
    pub file: bool,
}

/// The values a sandbox receives: env vars and files.
#[derive(Debug, Default)]
pub struct Resolved {
    pub env: BTreeMap<String, SecretValue>,
    pub files: BTreeMap<String, SecretValue>,
}

/// Checks the names of a create request's secrets (before anything is looked up).
pub fn check_uses(uses: &BTreeMap<String, SecretUse>) -> ApiResult<()> {
    if uses.len() > MAX_PER_SANDBOX {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_PER_SANDBOX} secrets per sandbox"
        )));
    }
    for (k, u) in uses {
        if u.file {
            if !paddock_core::valid_secret_name(k) {
                return Err(ApiError::BadRequest(format!(
                    "secret file name {:?} is invalid: 1 to 128 bytes of letters, digits, '_', '.' and '-', starting with a letter or digit",
                    crate::state::truncate(k, 64)
                )));
            }
        } else if k.is_empty() || k.len() > 256 || k.contains(['=', '\0']) {
            return Err(ApiError::BadRequest(format!(
                "invalid env name {:?} for a secret",
                crate::state::truncate(k, 64)
            )));
        }
        if u.secret.is_empty() || u.secret.len() > 128 {
            return Err(not_found(&u.secret));
        }
    }
    Ok(())
}

/// Opens the current version of every secret a sandbox of `tenant` asks for. An unknown
/// secret is a 400 naming it, so nothing is created.
pub async fn resolve(
    state: &AppState,
    tenant: &str,
    uses: &BTreeMap<String, SecretUse>,
) -> ApiResult<Resolved> {
    let mut out = Resolved::default();
    if uses.is_empty() {
        return Ok(out);
    }
    check_uses(uses)?;
    state.secrets.key()?;
    let mut total = 0usize;
    for (k, u) in uses {
        let rec = state
            .store
            .get_secret(tenant, &u.secret)
            .await?
            .ok_or_else(|| match not_found(&u.secret) {
                ApiError::NotFound(m) => ApiError::BadRequest(m),
                e => e,
            })?;
        let v = state.secrets.open_current(state, &rec).await?;
        tracing::debug!(secret = %rec.name, version = rec.current_version, target = %k, file = u.file, "secret opened for a sandbox");
        if u.file {
            total += v.0.len();
            out.files.insert(k.clone(), v);
        } else {
            if v.0.contains('\0') {
                return Err(ApiError::BadRequest(format!(
                    "secret {:?} contains NUL and cannot be an env var",
                    rec.name
                )));
            }
            out.env.insert(k.clone(), v);
        }
    }
    if total > paddock_core::MAX_SECRET_FILES_BYTES {
        return Err(ApiError::BadRequest(format!(
            "secret files of one sandbox are at most {} bytes in total",
            paddock_core::MAX_SECRET_FILES_BYTES
        )));
    }
    Ok(out)
}

/// Reads the master key from `--secrets-key-file` or `PADDOCK_SECRETS_KEY` (not both).
pub fn load_key(file: Option<&Path>, env: Option<&str>) -> Result<Option<MasterKey>, String> {
    match (file, env) {
        (Some(_), Some(_)) => Err(
            "give the secrets key either with --secrets-key-file or PADDOCK_SECRETS_KEY, not both"
                .into(),
        ),
        (Some(f), None) => MasterKey::from_file(f).map(Some),
        (None, Some(k)) => MasterKey::parse(k)
            .map(Some)
            .map_err(|e| format!("PADDOCK_SECRETS_KEY: {e}")),
        (None, None) => Ok(None),
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
