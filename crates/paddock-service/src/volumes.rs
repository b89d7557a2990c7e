//! Volumes (`docs/volumes.md`): named persistent directories of a tenant, each a btrfs
//! subvolume with a quota (`paddock_runtime::Runtime::create_volume`), recorded in the store
//! ([`paddock_store::VolumeStore`]), mounted read-write or read-only into sandboxes at create.
//! Another tenant's volume is answered exactly like a missing one (404).

use std::sync::Arc;

use paddock_core::SandboxId;
use paddock_runtime::VolumeMount;
use paddock_store::{VolumeRecord, now_ms};
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::state::AppState;

/// A volume's quota when none is given: 1 GiB.
pub const DEFAULT_VOLUME_BYTES: u64 = 1 << 30;
/// Smallest quota: 1 MiB.
pub const MIN_VOLUME_BYTES: u64 = 1 << 20;
/// Largest quota: 64 GiB (the default size of the whole layer filesystem).
pub const MAX_VOLUME_BYTES: u64 = 64 << 30;
/// Most volumes one tenant may have.
pub const MAX_VOLUMES_PER_TENANT: usize = 100;
/// Most volumes one sandbox may mount.
pub const MAX_MOUNTS: usize = 16;

/// A volume a create asks for: by name (or id), at `path`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", schema(as = VolumeMount))]
pub struct VolumeUse {
    /// The volume's name or id.
    #[serde(alias = "volume")]
    pub name: String,
    /// Absolute path inside the sandbox.
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// Whether `name` can name a volume: 1 to 63 of `[a-zA-Z0-9._-]`, starting with a letter or
/// digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Creates volume `name` of `caller`'s tenant with a quota of `size` bytes (default
/// [`DEFAULT_VOLUME_BYTES`]).
pub async fn create(
    state: &Arc<AppState>,
    caller: &Caller,
    name: &str,
    size: Option<u64>,
) -> Result<VolumeRecord> {
    if !valid_name(name) {
        return Err(Error::BadRequest(format!(
            "{:?} cannot name a volume: use 1 to 63 of A-Z a-z 0-9 . _ -, starting with a letter or digit",
            crate::state::truncate(name, 64)
        )));
    }
    let size = size.unwrap_or(DEFAULT_VOLUME_BYTES);
    if !(MIN_VOLUME_BYTES..=MAX_VOLUME_BYTES).contains(&size) {
        return Err(Error::BadRequest(format!(
            "a volume's size must be {MIN_VOLUME_BYTES} to {MAX_VOLUME_BYTES} bytes, got {size}"
        )));
    }
    let tenant = caller.tenant().to_owned();
    if state.store.get_volume(&tenant, name).await?.is_some() {
        return Err(Error::Conflict(format!("volume {name} already exists")));
    }
    if state.store.list_volumes(Some(&tenant)).await?.len() >= MAX_VOLUMES_PER_TENANT {
        return Err(Error::QuotaExceeded(format!(
            "a tenant has at most {MAX_VOLUMES_PER_TENANT} volumes"
        )));
    }
    let rec = VolumeRecord {
        id: format!("vol-{}", SandboxId::random()),
        tenant,
        name: name.to_owned(),
        size_bytes: size,
        created_at: now_ms(),
        created_by: Some(caller.key.id.clone()),
    };
    let rt = state.runtime.clone();
    let id = rec.id.clone();
    tokio::task::spawn_blocking(move || rt.create_volume(&id, size))
        .await
        .map_err(|e| Error::Internal(format!("volume task: {e}")))??;
    if let Err(e) = state.store.insert_volume(&rec).await {
        let _ = state.runtime.remove_volume(&rec.id);
        return Err(e.into());
    }
    Ok(rec)
}

/// `caller`'s volume named (or with id) `name`; anything else is a 404.
pub async fn get(state: &AppState, caller: &Caller, name: &str) -> Result<VolumeRecord> {
    state
        .store
        .get_volume(caller.tenant(), name)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "unknown volume {:?}",
                crate::state::truncate(name, 64)
            ))
        })
}

/// `caller`'s volumes, oldest first.
pub async fn list(state: &AppState, caller: &Caller) -> Result<Vec<VolumeRecord>> {
    Ok(state.store.list_volumes(Some(caller.tenant())).await?)
}

/// Destroys `caller`'s volume `name` and its files: 404 if unknown, 409 while sandboxes
/// (running or paused) mount it.
pub async fn delete(state: &Arc<AppState>, caller: &Caller, name: &str) -> Result<()> {
    let rec = get(state, caller, name).await?;
    let rt = state.runtime.clone();
    let id = rec.id.clone();
    tokio::task::spawn_blocking(move || rt.remove_volume(&id))
        .await
        .map_err(|e| Error::Internal(format!("volume task: {e}")))??;
    state.store.delete_volume(&rec.id).await?;
    Ok(())
}

/// The volumes a create of `tenant` asks for, resolved to their ids: an unknown (or another
/// tenant's) volume is a 404; a bad or reserved path, a path used twice, too many: 400.
pub async fn resolve(
    state: &AppState,
    tenant: &str,
    uses: &[VolumeUse],
) -> Result<Vec<VolumeMount>> {
    if uses.len() > MAX_MOUNTS {
        return Err(Error::BadRequest(format!(
            "a sandbox mounts at most {MAX_MOUNTS} volumes"
        )));
    }
    let mut out: Vec<VolumeMount> = Vec::new();
    for u in uses {
        let path = paddock_core::check_mount_path(&u.path).map_err(Error::BadRequest)?;
        if out.iter().any(|m| m.path == path) {
            return Err(Error::BadRequest(format!(
                "two volumes are mounted at {path}"
            )));
        }
        let rec = state
            .store
            .get_volume(tenant, &u.name)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "unknown volume {:?}",
                    crate::state::truncate(&u.name, 64)
                ))
            })?;
        // On a fleet node, a volume of another node (placement sends creates to the node
        // holding their volumes; this is a create sent straight to a node, or a volume whose
        // node no heartbeat listed yet).
        if state.cfg.node.is_some() && !state.runtime.volume_ids().contains(&rec.id) {
            return Err(Error::Conflict(format!(
                "volume {:?} is on another node of the fleet",
                crate::state::truncate(&u.name, 64)
            )));
        }
        out.push(VolumeMount {
            volume: rec.id,
            path,
            read_only: u.read_only,
        });
    }
    Ok(out)
}
