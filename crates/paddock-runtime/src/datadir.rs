//! The data directory on the host: its mode, and the lock that decides which process may
//! take the instance's host resources down when it exits.
//!
//! The data directory is made root-only (0700): it holds the store, the server secret, the
//! sandboxes' writable layers and the layer store, none of which any other host user needs.
//! Sandboxes never reach it by path: their roots are mounts made by host root before the
//! setup stage enters the sandbox's user namespace.
//!
//! **Open lock.** Every process that opens a runtime on a data directory (`paddock serve`,
//! `paddock run`, `paddock ps`) holds a shared `flock` on `<data>/lock` for as long as the
//! runtime is open. At exit ([`crate::Runtime::close`]) a process takes the host resources
//! of the instance down (the loop mount of `layers.img`, the per-instance cgroup
//! directories) only if no sandbox is left and it can turn its lock exclusive, that is no
//! other process has the data directory open. A process that opens the directory meanwhile
//! waits for the exclusive holder to finish.

use std::fs;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use rustix::fs::{FlockOperation, flock};

use crate::error::{Result, RuntimeError};

/// Creates `dir` (and missing parents) as a root-only directory, and takes group and other
/// access away from it if it already exists.
pub fn create_private(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(RuntimeError::io("creating data dir"))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(RuntimeError::io("making the data dir private"))
}

/// A shared lock on `<data>/lock`, held while a runtime is open.
#[derive(Debug)]
pub(crate) struct OpenLock {
    file: fs::File,
}

impl OpenLock {
    /// Takes the shared lock, waiting while another process holds it exclusively (it is
    /// taking the instance down and will be done in moments).
    pub(crate) fn acquire(data_dir: &Path) -> Result<OpenLock> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(data_dir.join("lock"))
            .map_err(RuntimeError::io("opening the data dir lock"))?;
        flock(&file, FlockOperation::LockShared)
            .map_err(|e| RuntimeError::io("locking the data dir")(e.into()))?;
        Ok(OpenLock { file })
    }

    /// Turns the lock exclusive if no other process holds it; false if one does. (A failed
    /// conversion may drop the shared lock: only for a runtime that is closing.)
    pub(crate) fn try_exclusive(&self) -> bool {
        flock(&self.file, FlockOperation::NonBlockingLockExclusive).is_ok()
    }

    /// Whether this process is the only one with the data directory open. The lock stays
    /// shared either way.
    pub(crate) fn is_sole(&self) -> bool {
        let sole = self.try_exclusive();
        // Back to shared: from exclusive this cannot conflict; after a failed conversion it
        // waits only while another process holds the lock exclusively (closing).
        if let Err(e) = flock(&self.file, FlockOperation::LockShared) {
            tracing::warn!("re-taking the data dir lock: {e}");
        }
        sole
    }
}
