//! The `filesystem.Filesystem` Connect service: stat, list, make, move, remove and watch.
//!
//! Every filesystem syscall made for a client runs on a blocking thread inside
//! [`users::as_user`], so permission checks and the owner of anything created are exactly
//! what the requesting user would get from the kernel. Paths come from
//! [`users::resolve_path`] and are resolved by the kernel inside the sandbox root (see the
//! crate docs), so nothing here interprets symlinks itself except to report them.
//!
//! Semantics follow E2B's envd, which is what the SDKs were written against:
//! - [`EntryInfo`] reports `mode` as the permission bits (`0o644` ⇒ 420) and `permissions`
//!   in Go's `FileMode.String()` form (`-rw-r--r--`, `drwxr-xr-x`, `Lrwxrwxrwx`,
//!   `dtrwxrwxrwx`). For a symlink, `type` and `mode` describe its target, `is_symlink` is
//!   set and `symlink_target` is the fully resolved target (or the raw link text when the
//!   link dangles). `metadata` holds the user xattrs `user.e2b.<key>` written by uploads.
//! - `ListDir` walks depth first in byte-wise name order, excludes the root, never descends
//!   through symlinks, and lists (without entering) subdirectories it cannot read.
//! - `Remove` of a missing path succeeds, like Go's `os.RemoveAll`.
//! - `Move` creates the destination's parents and, when source and destination are on
//!   different filesystems (for example `/tmp` is its own tmpfs), falls back to copying and
//!   then removing the source, the way `mv` does.
//! - Watches map inotify events the way fsnotify (used by envd) does: `IN_CREATE` and
//!   `IN_MOVED_TO` ⇒ CREATE, `IN_MODIFY` ⇒ WRITE, `IN_DELETE` ⇒ REMOVE, `IN_MOVED_FROM` ⇒
//!   RENAME, `IN_ATTRIB` ⇒ CHMOD. Event names are relative to the watched directory.
//!   Recursive watches add a watch to every new subdirectory and report whatever was
//!   already inside it when that watch was added as CREATE events, so nothing created in
//!   between is missed.
//!
//! The parts: `entry` (what `Stat` and `ListDir` report), `metadata` (E2B metadata in
//! xattrs), `ops` (list, make, move, remove), `watch` (inotify watches) and `service` (the
//! Connect service itself).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use connectrpc::ConnectError;
use paddock_envd::filesystem::*;

use crate::users::{self, User};

mod entry;
mod metadata;
mod ops;
mod service;
mod watch;

pub(crate) use metadata::{write_metadata, xattr_unsupported};
pub(crate) use ops::ensure_dirs;

/// Prefix of the extended attributes that hold a file's E2B metadata. `user.` is the only
/// namespace unprivileged users may write; `e2b.` keeps the keys apart from other tools.
pub(crate) const XATTR_PREFIX: &str = "user.e2b.";
/// Longest metadata key: the kernel limits a whole xattr name to 255 bytes.
pub(crate) const MAX_METADATA_KEY: usize = 255 - XATTR_PREFIX.len();
/// Budget for all metadata of one file (names with prefix plus values). ext4 keeps every
/// xattr of an inode in one 4 KiB block, so more could not be stored anyway.
pub(crate) const MAX_METADATA_TOTAL: usize = 4096;

/// Live `CreateWatcher` watchers per agent; each holds an inotify instance, and the kernel
/// allows only a limited number of those per user.
const MAX_WATCHERS: usize = 64;
/// Events kept for a `CreateWatcher` watcher nobody polls; the oldest are dropped first.
const MAX_BUFFERED_EVENTS: usize = 10_000;
/// Size of the buffer inotify events are read into (many events fit in one read).
const INOTIFY_BUFFER: usize = 16 * 1024;

/// The filesystem service. Holds the watchers created by `CreateWatcher`, which outlive the
/// request that created them until `RemoveWatcher`.
#[derive(Debug, Default)]
pub struct FsService {
    watchers: Mutex<HashMap<String, Watcher>>,
}

impl FsService {
    pub fn new() -> Self {
        FsService::default()
    }
}

/// A `CreateWatcher` watcher: its event buffer and the task that fills it.
#[derive(Debug)]
struct Watcher {
    buffer: Arc<Mutex<Buffered>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Stopping the task drops the inotify instance, which removes all its watches.
        self.task.abort();
    }
}

#[derive(Debug, Default)]
struct Buffered {
    events: VecDeque<FilesystemEvent>,
    error: Option<ConnectError>,
}

/// Runs `f` on a blocking thread with `user`'s filesystem identity.
pub(crate) async fn run_as<T, F>(user: &User, f: F) -> Result<T, ConnectError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let user = user.clone();
    tokio::task::spawn_blocking(move || users::as_user(&user, f))
        .await
        .map_err(|_| ConnectError::internal("file operation failed unexpectedly"))
}

/// Maps an I/O error on `path` to the Connect code the SDKs expect. The path is quoted with
/// `{:?}` so that a client-chosen name cannot break the message over several lines.
fn fs_err(e: &io::Error, path: &Path) -> ConnectError {
    let p = path.as_os_str();
    if p.as_encoded_bytes().contains(&0) {
        // The kernel never saw it: a C string cannot hold it. The client's mistake.
        return ConnectError::invalid_argument("path must not contain NUL bytes");
    }
    match e.raw_os_error() {
        Some(libc::ENOENT) => ConnectError::not_found(format!("path not found: {p:?}")),
        Some(libc::EACCES | libc::EPERM) => {
            ConnectError::permission_denied(format!("permission denied: {p:?}"))
        }
        Some(libc::EROFS) => {
            ConnectError::permission_denied(format!("read-only file system: {p:?}"))
        }
        Some(libc::ENOTDIR) => ConnectError::invalid_argument(format!(
            "a component of the path is not a directory: {p:?}"
        )),
        Some(libc::EISDIR) => ConnectError::invalid_argument(format!("path is a directory: {p:?}")),
        Some(libc::ELOOP) => {
            ConnectError::invalid_argument(format!("too many levels of symbolic links: {p:?}"))
        }
        Some(libc::ENAMETOOLONG) => ConnectError::invalid_argument("path is too long"),
        Some(libc::EINVAL) => ConnectError::invalid_argument(format!("invalid path: {p:?}")),
        Some(libc::EEXIST) => ConnectError::already_exists(format!("path already exists: {p:?}")),
        Some(libc::ENOTEMPTY) => {
            ConnectError::failed_precondition(format!("directory is not empty: {p:?}"))
        }
        Some(libc::EBUSY) => ConnectError::failed_precondition(format!("path is busy: {p:?}")),
        Some(libc::ENOSPC | libc::EDQUOT) => {
            ConnectError::resource_exhausted(format!("not enough disk space for {p:?}"))
        }
        Some(libc::EMFILE | libc::ENFILE) => {
            ConnectError::resource_exhausted("too many open files or watches")
        }
        _ => ConnectError::internal(format!("operation on {p:?} failed: {e}")),
    }
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn is_not_found(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOENT)
}

/// A fresh directory for a unit test.
#[cfg(test)]
fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "paddock-fs-test-{tag}-{}-{}",
        std::process::id(),
        ops::unique_hex()
    ));
    std::fs::create_dir_all(&d).expect("creating test dir");
    d
}
