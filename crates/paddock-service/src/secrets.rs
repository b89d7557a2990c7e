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

use paddock_core::SecretValue;
use paddock_store::{SecretRecord, now_ms};

use crate::auth::{Caller, random_id};
use crate::error::{Error, Result};
use crate::state::AppState;

pub mod keyring;

pub use self::keyring::{MasterKey, Secrets, not_configured};

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

impl Secrets {
    /// The current value of a secret.
    async fn open_current(&self, state: &AppState, s: &SecretRecord) -> Result<SecretValue> {
        let key = self.key()?;
        let v = state
            .store
            .secret_version(&s.id, s.current_version)
            .await?
            .ok_or_else(|| Error::Internal("a secret has no current version".into()))?;
        let bytes = Secrets::open_with(&key, &v)?;
        String::from_utf8(bytes)
            .map(SecretValue)
            .map_err(|_| Error::Internal("a sealed secret is not UTF-8".into()))
    }
}

/// Checks a secret's name: 1 to 128 bytes of `[A-Za-z0-9_.-]`, starting with a letter or
/// digit (it may name a file under `/run/secrets`).
pub fn check_name(name: &str) -> Result<()> {
    if paddock_core::valid_secret_name(name) {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "invalid secret name {:?}: 1 to 128 bytes of letters, digits, '_', '.' and '-', starting with a letter or digit",
            crate::state::truncate(name, 64)
        )))
    }
}

fn check_value(v: &str) -> Result<()> {
    if v.len() > MAX_VALUE {
        return Err(Error::BadRequest(format!(
            "a secret value is at most {MAX_VALUE} bytes"
        )));
    }
    Ok(())
}

/// Checks metadata against E2B's limits.
pub fn check_metadata(m: &BTreeMap<String, String>) -> Result<()> {
    if m.len() > MAX_METADATA {
        return Err(Error::BadRequest(format!(
            "at most {MAX_METADATA} metadata entries"
        )));
    }
    let mut total = 0;
    for (k, v) in m {
        if k.is_empty() || k.len() > MAX_METADATA_KEY || v.len() > MAX_METADATA_VALUE {
            return Err(Error::BadRequest(format!(
                "metadata keys must be 1 to {MAX_METADATA_KEY} bytes and values at most {MAX_METADATA_VALUE}"
            )));
        }
        total += k.len() + v.len();
    }
    if total > MAX_METADATA_TOTAL {
        return Err(Error::BadRequest(format!(
            "metadata is at most {MAX_METADATA_TOTAL} bytes in total"
        )));
    }
    Ok(())
}

/// The error for a secret that does not exist (or belongs to another tenant).
pub fn not_found(id_or_name: &str) -> Error {
    if paddock_core::valid_secret_name(id_or_name) {
        Error::NotFound(format!("unknown secret {id_or_name:?}"))
    } else {
        Error::NotFound("unknown secret".into())
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
) -> Result<SecretRecord> {
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
) -> Result<SecretRecord> {
    let key = state.secrets.key()?;
    check_name(name)?;
    check_value(value)?;
    check_metadata(&metadata)?;
    let _g = state.secrets.write_lock().await;
    if state.store.count_secrets(caller.tenant()).await? >= MAX_PER_TENANT {
        return Err(Error::QuotaExceeded(format!(
            "a tenant has at most {MAX_PER_TENANT} secrets"
        )));
    }
    if state
        .store
        .get_secret(caller.tenant(), name)
        .await?
        .is_some()
    {
        return Err(Error::Conflict(format!("secret {name:?} already exists")));
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
                Error::Conflict(format!("secret {name:?} already exists"))
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
) -> Result<SecretRecord> {
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
) -> Result<SecretRecord> {
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
pub async fn get(state: &AppState, caller: &Caller, id_or_name: &str) -> Result<SecretRecord> {
    state.secrets.key()?;
    state
        .store
        .get_secret(caller.tenant(), id_or_name)
        .await?
        .ok_or_else(|| not_found(id_or_name))
}

/// Deletes a secret and every version of it (audited as `secret.delete`).
pub async fn delete(state: &AppState, caller: &Caller, id_or_name: &str) -> Result<SecretRecord> {
    let res: Result<SecretRecord> = async {
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
) -> Result<Vec<SecretRecord>> {
    state.secrets.key()?;
    Ok(state
        .store
        .list_secrets(caller.tenant(), after, limit)
        .await?)
}

/// Re-encrypts every version of every secret under `new` and makes it the key in use. All or
/// nothing: one store transaction. Returns the number of versions re-encrypted.
pub async fn rotate(state: &AppState, new: MasterKey) -> Result<usize> {
    let old = state.secrets.key()?;
    if old.id() == new.id() {
        return Err(Error::BadRequest(
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
    tracing::info!(versions = resealed.len(), from = %old.id(), to = %new.id(), "secrets key rotated");
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
pub fn check_uses(uses: &BTreeMap<String, SecretUse>) -> Result<()> {
    if uses.len() > MAX_PER_SANDBOX {
        return Err(Error::BadRequest(format!(
            "at most {MAX_PER_SANDBOX} secrets per sandbox"
        )));
    }
    for (k, u) in uses {
        if u.file {
            if !paddock_core::valid_secret_name(k) {
                return Err(Error::BadRequest(format!(
                    "secret file name {:?} is invalid: 1 to 128 bytes of letters, digits, '_', '.' and '-', starting with a letter or digit",
                    crate::state::truncate(k, 64)
                )));
            }
        } else if k.is_empty() || k.len() > 256 || k.contains(['=', '\0']) {
            return Err(Error::BadRequest(format!(
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
) -> Result<Resolved> {
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
                Error::NotFound(m) => Error::BadRequest(m),
                e => e,
            })?;
        let v = state.secrets.open_current(state, &rec).await?;
        tracing::debug!(secret = %rec.name, version = rec.current_version, target = %k, file = u.file, "secret opened for a sandbox");
        if u.file {
            total += v.0.len();
            out.files.insert(k.clone(), v);
        } else {
            if v.0.contains('\0') {
                return Err(Error::BadRequest(format!(
                    "secret {:?} contains NUL and cannot be an env var",
                    rec.name
                )));
            }
            out.env.insert(k.clone(), v);
        }
    }
    if total > paddock_core::MAX_SECRET_FILES_BYTES {
        return Err(Error::BadRequest(format!(
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
