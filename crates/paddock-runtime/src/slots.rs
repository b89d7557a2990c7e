//! Host-wide claims on uid ranges, so that two runtimes (two data directories) on one host
//! never give two sandboxes the same host uids.
//!
//! A claim is a file `/run/paddock/uid-slots/<slot>` created with `O_EXCL`, holding the
//! path of the owning sandbox's cgroup directory. A claim is stale, and may be taken over,
//! when that cgroup no longer exists and the file is older than [`GRACE`] (the grace covers
//! the moments between the claim and the cgroup's creation). A runtime releases its claims
//! on destroy; a crash leaves claims whose cgroups reconciliation removes, so they go stale.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The claims directory (its parent `/run/paddock` and it are 0700, claims 0600: a claim
/// names a sandbox's cgroup, so its id).
const DIR: &str = "/run/paddock/uid-slots";

/// Creates `dir` and its parent as root-only directories, and takes group and other access
/// away from them if they already exist (older versions made them 0755).
fn private_dir(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    for d in [dir.parent(), Some(dir)].into_iter().flatten() {
        fs::set_permissions(d, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// How long a fresh claim counts as live even before its cgroup exists.
const GRACE: Duration = Duration::from_secs(60);

/// The claims directory.
#[derive(Debug)]
pub(crate) struct SlotClaims {
    dir: Option<PathBuf>,
}

impl SlotClaims {
    /// Claims local to this runtime, with no directory (a detached runtime makes none).
    pub(crate) fn local() -> SlotClaims {
        SlotClaims { dir: None }
    }

    /// Opens (creating) the claims directory. Without one (read-only `/run`), claims are
    /// local to this runtime, and a warning says so.
    pub(crate) fn open() -> SlotClaims {
        let dir = PathBuf::from(DIR);
        match private_dir(&dir) {
            Ok(()) => SlotClaims { dir: Some(dir) },
            Err(e) => {
                tracing::warn!("uid ranges are not coordinated with other runtimes: {e}");
                SlotClaims { dir: None }
            }
        }
    }

    /// Whether some runtime on this host holds a live claim on `slot`.
    pub(crate) fn is_claimed(&self, slot: u32) -> bool {
        let Some(dir) = &self.dir else {
            return false;
        };
        let p = dir.join(slot.to_string());
        p.exists() && !is_stale(&p)
    }

    /// Claims `slot` for the sandbox whose cgroup will be `marker`. False if another
    /// sandbox on this host holds it.
    pub(crate) fn claim(&self, slot: u32, marker: &Path) -> bool {
        let Some(dir) = &self.dir else {
            return true;
        };
        let p = dir.join(slot.to_string());
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)
            {
                Ok(mut f) => return f.write_all(marker.as_os_str().as_encoded_bytes()).is_ok(),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if !is_stale(&p) {
                        return false;
                    }
                    let _ = fs::remove_file(&p);
                }
                Err(e) => {
                    tracing::warn!(slot, "claiming uid range: {e}");
                    return false;
                }
            }
        }
        false
    }

    /// Records an adopted sandbox's claim (after a restart), replacing whatever is there.
    pub(crate) fn reclaim(&self, slot: u32, marker: &Path) {
        if let Some(dir) = &self.dir {
            let p = dir.join(slot.to_string());
            let written = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&p)
                .and_then(|mut f| {
                    f.set_permissions(fs::Permissions::from_mode(0o600))?;
                    f.write_all(marker.as_os_str().as_encoded_bytes())
                });
            if let Err(e) = written {
                tracing::warn!(slot, "recording adopted uid range claim: {e}");
            }
        }
    }

    /// Releases `slot` if `marker` still holds it.
    pub(crate) fn release(&self, slot: u32, marker: &Path) {
        let Some(dir) = &self.dir else {
            return;
        };
        let p = dir.join(slot.to_string());
        if fs::read(&p).is_ok_and(|c| c == marker.as_os_str().as_encoded_bytes()) {
            let _ = fs::remove_file(&p);
        }
    }
}

impl SlotClaims {
    /// Removes the claims whose owner cgroup lies under `instance_dir` (this runtime's
    /// cgroup directory of the first controller) and no longer exists, unless `held` says
    /// this runtime holds the slot. A kill -9 between a destroy's last steps leaves such a
    /// claim with nothing else of its sandbox; without this sweep it stays until the host
    /// reboots (it is only taken over when another create needs that slot).
    pub(crate) fn sweep_instance(&self, instance_dir: &Path, held: &dyn Fn(u32) -> bool) {
        let Some(dir) = &self.dir else {
            return;
        };
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let Some(slot) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(content) = fs::read_to_string(e.path()) else {
                continue;
            };
            let owner = Path::new(content.trim());
            if owner.parent() == Some(instance_dir) && !held(slot) && !owner.exists() {
                tracing::info!(slot, "removing a stale uid range claim of this instance");
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

fn is_stale(p: &Path) -> bool {
    let Ok(content) = fs::read_to_string(p) else {
        return false;
    };
    let young = fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < GRACE);
    !young && !Path::new(content.trim()).exists()
}
