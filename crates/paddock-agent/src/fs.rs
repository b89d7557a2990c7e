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

// The generated service trait returns `impl Encodable`; returning the concrete message is
// the intended use.
#![allow(refining_impl_trait)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use buffa::MessageField;
use buffa_types::google::protobuf::Timestamp;
use connectrpc::{
    ConnectError, RequestContext, Response, ServiceRequest, ServiceResult, ServiceStream,
};
use futures::StreamExt;
use inotify::{EventMask, EventStream, Inotify, WatchDescriptor, WatchMask, Watches};
use paddock_envd::filesystem::*;
use tokio::sync::mpsc;

use crate::lock;
use crate::rpc::{keepalive, user_of};

use crate::users::{self, User};

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

// ---------------------------------------------------------------------------------------
// Entry information
// ---------------------------------------------------------------------------------------

/// Owner and group names looked up once per request rather than once per entry.
#[derive(Default)]
struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    fn user(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| users::name_of(uid, false))
            .clone()
    }

    fn group(&mut self, gid: u32) -> String {
        self.groups
            .entry(gid)
            .or_insert_with(|| users::name_of(gid, true))
            .clone()
    }
}

/// `permissions` as Go's `FileMode.String()` prints it (what envd sends): one letter per
/// set type or special bit in the order `dalTLDpSugct?` (or `-` if none), then `rwxrwxrwx`.
pub(crate) fn permissions_string(st_mode: u32) -> String {
    let fmt = st_mode & libc::S_IFMT;
    let mut s = String::with_capacity(12);
    // Go's flags in its output order; Append, Exclusive and Temporary have no Unix
    // equivalent and are never set from a stat result.
    let flags = [
        ('d', fmt == libc::S_IFDIR),
        ('L', fmt == libc::S_IFLNK),
        ('D', fmt == libc::S_IFBLK || fmt == libc::S_IFCHR),
        ('p', fmt == libc::S_IFIFO),
        ('S', fmt == libc::S_IFSOCK),
        ('u', st_mode & libc::S_ISUID != 0),
        ('g', st_mode & libc::S_ISGID != 0),
        ('c', fmt == libc::S_IFCHR),
        ('t', st_mode & libc::S_ISVTX != 0),
    ];
    for (c, set) in flags {
        if set {
            s.push(c);
        }
    }
    if s.is_empty() {
        s.push('-');
    }
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if st_mode & (1 << (8 - i)) != 0 {
            c
        } else {
            '-'
        });
    }
    s
}

fn file_type(meta: &std::fs::Metadata) -> FileType {
    if meta.is_dir() {
        FileType::FILE_TYPE_DIRECTORY
    } else if meta.is_file() {
        FileType::FILE_TYPE_FILE
    } else {
        FileType::FILE_TYPE_UNSPECIFIED
    }
}

fn lossy(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Builds the entry for `path` from its `lstat` result.
fn entry_from_meta(path: &Path, meta: &std::fs::Metadata, names: &mut Names) -> EntryInfo {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".to_owned());
    let mut e = EntryInfo {
        name,
        path: lossy(path),
        size: i64::try_from(meta.len()).unwrap_or(i64::MAX),
        permissions: permissions_string(meta.mode()),
        owner: names.user(meta.uid()),
        group: names.group(meta.gid()),
        modified_time: MessageField::some(Timestamp::from_unix(
            meta.mtime(),
            i32::try_from(meta.mtime_nsec()).unwrap_or(0),
        )),
        ..Default::default()
    };
    if meta.file_type().is_symlink() {
        e.is_symlink = true;
        match std::fs::canonicalize(path) {
            Ok(target) => {
                if let Ok(t) = std::fs::metadata(&target) {
                    e.r#type = file_type(&t).into();
                    e.mode = t.mode() & 0o777;
                }
                e.symlink_target = Some(lossy(&target));
            }
            // A dangling or looping link: report what it says.
            Err(_) => e.symlink_target = std::fs::read_link(path).ok().map(|t| lossy(&t)),
        }
    } else {
        e.r#type = file_type(meta).into();
        e.mode = meta.mode() & 0o777;
    }
    e.metadata = read_metadata(path).into_iter().collect();
    e
}

fn entry_info(path: &Path, names: &mut Names) -> io::Result<EntryInfo> {
    let meta = std::fs::symlink_metadata(path)?;
    Ok(entry_from_meta(path, &meta, names))
}

/// Calls an xattr syscall with a growing buffer until the result fits (the kernel caps
/// both lists and values at 64 KiB).
fn xattr_buf(mut call: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    loop {
        match call(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < 64 * 1024 => {
                let len = buf.len() * 4;
                buf.resize(len.min(64 * 1024), 0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The E2B metadata of `path` (following symlinks). Keys or values that are not UTF-8
/// (set by hand inside the sandbox) are skipped, since the protocol carries strings.
pub(crate) fn read_metadata(path: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(list) = xattr_buf(|b| rustix::fs::listxattr(path, b)) else {
        return out;
    };
    for name in list.split(|b| *b == 0) {
        let Some(key) = name.strip_prefix(XATTR_PREFIX.as_bytes()) else {
            continue;
        };
        let Ok(value) = xattr_buf(|b| rustix::fs::getxattr(path, name, b)) else {
            continue;
        };
        if let (Ok(k), Ok(v)) = (std::str::from_utf8(key), String::from_utf8(value)) {
            out.insert(k.to_owned(), v);
        }
    }
    out
}

/// Replaces the E2B metadata of an open file with `meta` (an empty map clears it, so an
/// overwritten file does not keep stale metadata; `O_TRUNC` leaves xattrs in place).
pub(crate) fn write_metadata(
    file: &std::fs::File,
    meta: &BTreeMap<String, String>,
) -> io::Result<()> {
    let list = xattr_buf(|b| rustix::fs::flistxattr(file, b))?;
    for name in list.split(|b| *b == 0) {
        let Some(key) = name.strip_prefix(XATTR_PREFIX.as_bytes()) else {
            continue;
        };
        let keep = std::str::from_utf8(key).is_ok_and(|k| meta.contains_key(k));
        if !keep {
            match rustix::fs::fremovexattr(file, name) {
                Ok(()) | Err(rustix::io::Errno::NODATA) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    for (k, v) in meta {
        let name = format!("{XATTR_PREFIX}{k}");
        rustix::fs::fsetxattr(file, &name, v.as_bytes(), rustix::fs::XattrFlags::empty())?;
    }
    Ok(())
}

/// Whether an xattr error means the filesystem cannot store xattrs at all.
pub(crate) fn xattr_unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

// ---------------------------------------------------------------------------------------
// Directory operations
// ---------------------------------------------------------------------------------------

/// Creates `dir` and any missing parents with mode `0o755` (set explicitly, so the agent's
/// umask cannot narrow it). Fails with `ENOTDIR` if an existing component is not a
/// directory.
pub(crate) fn ensure_dirs(dir: &Path) -> io::Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => return Err(errno(libc::ENOTDIR)),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        ensure_dirs(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => match std::fs::metadata(dir) {
            // Only when the umask narrowed it, to avoid a needless CHMOD event in watches.
            Ok(m) if m.mode() & 0o7777 == 0o755 => Ok(()),
            _ => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)),
        },
        // Created concurrently by someone else: fine if it is a directory.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Lists `root` (excluded) down to `depth` levels: depth first, names in byte order,
/// without following symlinks. Only an unreadable root is an error.
fn list_dir(root: &Path, depth: u32, names: &mut Names) -> io::Result<Vec<EntryInfo>> {
    let mut out = Vec::new();
    walk(root, depth.max(1), names, &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, depth: u32, names: &mut Names, out: &mut Vec<EntryInfo>) -> io::Result<()> {
    let mut children: Vec<OsString> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    children.sort();
    for name in children {
        let path = dir.join(&name);
        // An entry removed since readdir is simply not listed.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        out.push(entry_from_meta(&path, &meta, names));
        if meta.is_dir() && depth > 1 {
            // A subdirectory the user cannot read is listed but not entered.
            let _ = walk(&path, depth - 1, names, out);
        }
    }
    Ok(())
}

fn make_dir(path: &Path) -> Result<EntryInfo, ConnectError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(ConnectError::already_exists(format!(
                "directory already exists: {:?}",
                path.as_os_str()
            )));
        }
        Ok(_) => return Err(not_a_dir(path)),
        Err(e) if is_not_found(&e) => {
            // A dangling symlink is in the way of the new directory.
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(not_a_dir(path));
            }
        }
        Err(e) => return Err(fs_err(&e, path)),
    }
    ensure_dirs(path).map_err(|e| fs_err(&e, path))?;
    entry_info(path, &mut Names::default()).map_err(|e| fs_err(&e, path))
}

fn not_a_dir(path: &Path) -> ConnectError {
    ConnectError::invalid_argument(format!(
        "path already exists but it is not a directory: {:?}",
        path.as_os_str()
    ))
}

fn remove(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        // Removing what is not there succeeds, as with envd's os.RemoveAll.
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    let r = if meta.is_dir() {
        // std's remove_dir_all never follows symlinks inside the tree.
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match r {
        Err(e) if is_not_found(&e) => Ok(()),
        r => r,
    }
}

fn move_path(src: &Path, dst: &Path) -> Result<EntryInfo, ConnectError> {
    if let Err(e) = std::fs::symlink_metadata(src) {
        return Err(if is_not_found(&e) {
            ConnectError::not_found(format!("source not found: {:?}", src.as_os_str()))
        } else {
            fs_err(&e, src)
        });
    }
    if let Some(parent) = dst.parent() {
        ensure_dirs(parent).map_err(|e| fs_err(&e, parent))?;
    }
    match std::fs::rename(src, dst) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            move_across(src, dst).map_err(|e| fs_err(&e, dst))?
        }
        Err(e) if is_not_found(&e) => {
            return Err(ConnectError::not_found(format!(
                "source not found: {:?}",
                src.as_os_str()
            )));
        }
        Err(e) => return Err(fs_err(&e, dst)),
    }
    entry_info(dst, &mut Names::default()).map_err(|e| fs_err(&e, dst))
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A short unique name: a counter hashed with a per-process random key, so ids do not
/// repeat within a run and cannot be guessed from one another.
fn unique_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut h = KEY.get_or_init(Default::default).build_hasher();
    h.write_u64(UNIQUE.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", h.finish())
}

/// Moves across filesystems like `mv`: copy to a temporary name next to the destination,
/// rename it into place (so the destination is replaced atomically, with rename's rules),
/// then remove the source.
fn move_across(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    let parent = dst.parent().unwrap_or(Path::new("/"));
    let tmp = parent.join(format!(".paddock-move-{}", unique_hex()));
    if let Err(e) = copy_tree(src, &tmp, &meta).and_then(|()| std::fs::rename(&tmp, dst)) {
        let _ = remove(&tmp);
        return Err(e);
    }
    remove(src)
}

/// Copies a file, symlink or directory tree, keeping permission bits, modification times
/// and (when the caller may chown, i.e. root) ownership.
fn copy_tree(src: &Path, dst: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)?;
    } else if ft.is_dir() {
        // Private and writable while it fills; it gets the source's mode at the end.
        std::fs::DirBuilder::new().mode(0o700).create(dst)?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            let child_meta = std::fs::symlink_metadata(entry.path())?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()), &child_meta)?;
        }
    } else if ft.is_file() {
        std::fs::copy(src, dst)?;
    } else {
        // Devices, FIFOs and sockets cannot be recreated by copying their contents.
        return Err(errno(libc::EXDEV));
    }
    // Best effort, as `mv` does: only root may give a file away.
    let _ = std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()));
    if !ft.is_symlink() {
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    };
    let _ = rustix::fs::utimensat(
        rustix::fs::CWD,
        dst,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Watches
// ---------------------------------------------------------------------------------------

/// Filesystem types envd refuses to watch unless `allow_network_mounts` is set: inotify
/// does not see changes made by other machines there.
const NETWORK_FS: [i64; 5] = [
    0x6969,      // NFS
    0xFF53_4D42, // CIFS
    0x517B,      // SMB
    0xFE53_4D42, // SMB2
    0x6573_5546, // FUSE
];

/// Events a watched directory reports. `EXCL_UNLINK` drops events for files already
/// unlinked but still open.
fn watch_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MODIFY
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
        | WatchMask::EXCL_UNLINK
        | WatchMask::ONLYDIR
}

/// Directories a recursive watch never descends into: kernel interfaces whose contents
/// are not files and would exhaust the watch limit.
fn skip_recursive(abs: &Path) -> bool {
    abs == Path::new("/proc") || abs == Path::new("/sys")
}

/// What the client asked to watch.
#[derive(Clone)]
struct WatchSpec {
    user: User,
    root: PathBuf,
    recursive: bool,
    include_entry: bool,
}

/// A set-up watch: the inotify stream and which directory each watch descriptor is, as a
/// path relative to the watched root.
struct Watch {
    spec: WatchSpec,
    stream: EventStream<Vec<u8>>,
    watches: Watches,
    dirs: HashMap<WatchDescriptor, PathBuf>,
}

/// Adds watches for `rel` (relative to `root`) and, if `recursive`, every directory below
/// it, without following symlinks. Entries found below `rel` are appended to `found` so
/// the caller can report them as created. Runs as the user, on a blocking thread.
fn add_tree(
    watches: &mut Watches,
    spec: &WatchSpec,
    rel: &Path,
    added: &mut Vec<(WatchDescriptor, PathBuf)>,
    mut found: Option<&mut Vec<(PathBuf, Option<EntryInfo>)>>,
    names: &mut Names,
) {
    let abs = spec.root.join(rel);
    let Ok(wd) = watches.add(&abs, watch_mask() | WatchMask::DONT_FOLLOW) else {
        return;
    };
    added.push((wd, rel.to_path_buf()));
    if !spec.recursive || skip_recursive(&abs) {
        return;
    }
    let Ok(rd) = std::fs::read_dir(&abs) else {
        return;
    };
    let mut children: Vec<OsString> = rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
    children.sort();
    for name in children {
        let child_rel = rel.join(&name);
        let child_abs = abs.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&child_abs) else {
            continue;
        };
        if let Some(found) = found.as_deref_mut() {
            let entry = spec
                .include_entry
                .then(|| entry_from_meta(&child_abs, &meta, names));
            found.push((child_rel.clone(), entry));
        }
        if meta.is_dir() {
            add_tree(
                watches,
                spec,
                &child_rel,
                added,
                found.as_deref_mut(),
                names,
            );
        }
    }
}

/// Checks the request and sets up the watches, so that any error is returned before the
/// stream starts and every change after `start` is seen.
async fn start_watch(spec: WatchSpec, allow_network_mounts: bool) -> Result<Watch, ConnectError> {
    let inotify = Inotify::init().map_err(|e| fs_err(&e, &spec.root))?;
    let mut watches = inotify.watches();
    let s = spec.clone();
    let added = run_as(&spec.user, move || -> Result<_, ConnectError> {
        let meta = std::fs::metadata(&s.root).map_err(|e| fs_err(&e, &s.root))?;
        if !meta.is_dir() {
            return Err(ConnectError::invalid_argument(format!(
                "path is not a directory: {:?}",
                s.root.as_os_str()
            )));
        }
        if !allow_network_mounts {
            let st = rustix::fs::statfs(&s.root).map_err(|e| fs_err(&e.into(), &s.root))?;
            #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets.
            if NETWORK_FS.contains(&(st.f_type as i64)) {
                return Err(ConnectError::invalid_argument(format!(
                    "cannot watch a path on a network filesystem: {:?}",
                    s.root.as_os_str()
                )));
            }
        }
        // The root itself may be a symlink to the directory to watch.
        let wd = watches
            .add(&s.root, watch_mask())
            .map_err(|e| fs_err(&e, &s.root))?;
        let mut added = vec![(wd, PathBuf::new())];
        if s.recursive && !skip_recursive(&s.root) {
            let mut names = Names::default();
            let mut children: Vec<OsString> = std::fs::read_dir(&s.root)
                .map_err(|e| fs_err(&e, &s.root))?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            children.sort();
            for name in children {
                let rel = PathBuf::from(&name);
                if s.root
                    .join(&rel)
                    .symlink_metadata()
                    .is_ok_and(|m| m.is_dir())
                {
                    add_tree(&mut watches, &s, &rel, &mut added, None, &mut names);
                }
            }
        }
        Ok(added)
    })
    .await??;
    let stream = inotify
        .into_event_stream(vec![0u8; INOTIFY_BUFFER])
        .map_err(|e| fs_err(&e, &spec.root))?;
    let watches = stream.watches();
    Ok(Watch {
        spec,
        stream,
        watches,
        dirs: added.into_iter().collect(),
    })
}

fn fs_event(rel: &Path, kind: EventType, entry: Option<EntryInfo>) -> FilesystemEvent {
    FilesystemEvent {
        name: lossy(rel),
        r#type: kind.into(),
        entry: entry.map(MessageField::some).unwrap_or_default(),
        ..Default::default()
    }
}

fn event_kind(mask: EventMask) -> Option<EventType> {
    if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
        Some(EventType::EVENT_TYPE_CREATE)
    } else if mask.contains(EventMask::MODIFY) {
        Some(EventType::EVENT_TYPE_WRITE)
    } else if mask.contains(EventMask::DELETE) {
        Some(EventType::EVENT_TYPE_REMOVE)
    } else if mask.contains(EventMask::MOVED_FROM) {
        Some(EventType::EVENT_TYPE_RENAME)
    } else if mask.contains(EventMask::ATTRIB) {
        Some(EventType::EVENT_TYPE_CHMOD)
    } else {
        None
    }
}

impl Watch {
    /// Turns one inotify event into protocol events, keeping the watch set in step with
    /// the tree (new directories gain watches, directories moved away lose theirs).
    async fn process(&mut self, ev: inotify::EventOwned) -> Vec<FilesystemEvent> {
        if ev.mask.contains(EventMask::IGNORED) {
            self.dirs.remove(&ev.wd);
            return Vec::new();
        }
        if ev.mask.contains(EventMask::Q_OVERFLOW) {
            tracing::warn!("inotify queue overflowed; some filesystem events were lost");
            return Vec::new();
        }
        let (Some(dir), Some(name)) = (self.dirs.get(&ev.wd), ev.name.as_ref()) else {
            return Vec::new();
        };
        let rel = dir.join(name);
        let Some(kind) = event_kind(ev.mask) else {
            return Vec::new();
        };
        let is_dir = ev.mask.contains(EventMask::ISDIR);
        if self.spec.recursive && is_dir && kind == EventType::EVENT_TYPE_RENAME {
            // The directory left this place: its watches would report under a stale name.
            let gone: Vec<WatchDescriptor> = self
                .dirs
                .iter()
                .filter(|(_, p)| p.starts_with(&rel))
                .map(|(wd, _)| wd.clone())
                .collect();
            for wd in gone {
                self.dirs.remove(&wd);
                let _ = self.watches.remove(wd);
            }
        }
        let descend = self.spec.recursive && is_dir && kind == EventType::EVENT_TYPE_CREATE;
        let want_entry = self.spec.include_entry
            && !matches!(
                kind,
                EventType::EVENT_TYPE_REMOVE | EventType::EVENT_TYPE_RENAME
            );
        if !descend && !want_entry {
            return vec![fs_event(&rel, kind, None)];
        }
        let spec = self.spec.clone();
        let mut watches = self.watches.clone();
        let rel2 = rel.clone();
        let work = run_as(&self.spec.user, move || {
            let mut names = Names::default();
            let entry = if want_entry {
                entry_info(&spec.root.join(&rel2), &mut names).ok()
            } else {
                None
            };
            let mut added = Vec::new();
            let mut found = Vec::new();
            if descend {
                add_tree(
                    &mut watches,
                    &spec,
                    &rel2,
                    &mut added,
                    Some(&mut found),
                    &mut names,
                );
            }
            (entry, added, found)
        })
        .await;
        let (entry, added, found) = work.unwrap_or_default();
        self.dirs.extend(added);
        let mut out = vec![fs_event(&rel, kind, entry)];
        out.extend(
            found
                .into_iter()
                .map(|(r, e)| fs_event(&r, EventType::EVENT_TYPE_CREATE, e)),
        );
        out
    }
}

fn watch_response(
    e: impl Into<Option<paddock_envd::filesystem::__buffa::oneof::watch_dir_response::Event>>,
) -> WatchDirResponse {
    WatchDirResponse {
        event: e.into(),
        ..Default::default()
    }
}

/// Feeds a `WatchDir` stream: `start`, then events, a keepalive after each `keepalive` of
/// silence, and a `deadline_exceeded` error when the client's timeout is reached. Ends
/// when the client goes away.
async fn stream_watch(
    mut w: Watch,
    tx: mpsc::Sender<Result<WatchDirResponse, ConnectError>>,
    keepalive: Option<Duration>,
    deadline: Option<tokio::time::Instant>,
) {
    if tx
        .send(Ok(
            watch_response(watch_dir_response::StartEvent::default()),
        ))
        .await
        .is_err()
    {
        return;
    }
    let ka = keepalive.unwrap_or(Duration::from_secs(3600));
    let mut idle_until = tokio::time::Instant::now() + ka;
    loop {
        tokio::select! {
            ev = w.stream.next() => {
                let ev = match ev {
                    Some(Ok(ev)) => ev,
                    Some(Err(e)) => {
                        let _ = tx.send(Err(ConnectError::internal(format!("watch failed: {e}")))).await;
                        return;
                    }
                    None => return,
                };
                for e in w.process(ev).await {
                    if tx.send(Ok(watch_response(e))).await.is_err() {
                        return;
                    }
                    idle_until = tokio::time::Instant::now() + ka;
                }
            }
            _ = tokio::time::sleep_until(idle_until), if keepalive.is_some() => {
                if tx.send(Ok(watch_response(watch_dir_response::KeepAlive::default()))).await.is_err() {
                    return;
                }
                idle_until = tokio::time::Instant::now() + ka;
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(idle_until)), if deadline.is_some() => {
                let _ = tx.send(Err(ConnectError::deadline_exceeded("watch deadline exceeded"))).await;
                return;
            }
            _ = tx.closed() => return,
        }
    }
}

/// Feeds a `CreateWatcher` buffer until the watcher is removed (the task is aborted).
async fn buffer_watch(mut w: Watch, buffer: Arc<Mutex<Buffered>>) {
    loop {
        let ev = match w.stream.next().await {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                lock(&buffer).error = Some(ConnectError::internal(format!("watch failed: {e}")));
                return;
            }
            None => return,
        };
        let events = w.process(ev).await;
        let mut b = lock(&buffer);
        b.events.extend(events);
        while b.events.len() > MAX_BUFFERED_EVENTS {
            b.events.pop_front();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------

impl Filesystem for FsService {
    async fn stat(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, StatRequest>,
    ) -> ServiceResult<StatResponse> {
        let req = request.to_owned_message();
        let user = user_of(&ctx)?;
        let path = users::resolve_path(&user, &req.path);
        let entry = run_as(&user, move || {
            entry_info(&path, &mut Names::default()).map_err(|e| match e.raw_os_error() {
                // A path through a regular file does not exist either (`exists` ⇒ False).
                Some(libc::ENOENT | libc::ENOTDIR) => {
                    ConnectError::not_found(format!("file not found: {:?}", path.as_os_str()))
                }
                _ => fs_err(&e, &path),
            })
        })
        .await??;
        Response::ok(StatResponse {
            entry: MessageField::some(entry),
            ..Default::default()
        })
    }

    async fn make_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, MakeDirRequest>,
    ) -> ServiceResult<MakeDirResponse> {
        let req = request.to_owned_message();
        let user = user_of(&ctx)?;
        let path = users::resolve_path(&user, &req.path);
        let entry = run_as(&user, move || make_dir(&path)).await??;
        Response::ok(MakeDirResponse {
            entry: MessageField::some(entry),
            ..Default::default()
        })
    }

    async fn r#move(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, MoveRequest>,
    ) -> ServiceResult<MoveResponse> {
        let req = request.to_owned_message();
        let user = user_of(&ctx)?;
        let src = users::resolve_path(&user, &req.source);
        let dst = users::resolve_path(&user, &req.destination);
        let entry = run_as(&user, move || move_path(&src, &dst)).await??;
        Response::ok(MoveResponse {
            entry: MessageField::some(entry),
            ..Default::default()
        })
    }

    async fn list_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, ListDirRequest>,
    ) -> ServiceResult<ListDirResponse> {
        let req = request.to_owned_message();
        let user = user_of(&ctx)?;
        let path = users::resolve_path(&user, &req.path);
        let depth = req.depth;
        let entries = run_as(&user, move || {
            // `metadata` follows a symlinked root, as envd does.
            let meta = std::fs::metadata(&path).map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) => {
                    ConnectError::not_found(format!("directory not found: {:?}", path.as_os_str()))
                }
                _ => fs_err(&e, &path),
            })?;
            if !meta.is_dir() {
                return Err(ConnectError::invalid_argument(format!(
                    "path is not a directory: {:?}",
                    path.as_os_str()
                )));
            }
            list_dir(&path, depth, &mut Names::default()).map_err(|e| fs_err(&e, &path))
        })
        .await??;
        Response::ok(ListDirResponse {
            entries,
            ..Default::default()
        })
    }

    async fn remove(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, RemoveRequest>,
    ) -> ServiceResult<RemoveResponse> {
        let req = request.to_owned_message();
        let user = user_of(&ctx)?;
        let path = users::resolve_path(&user, &req.path);
        run_as(&user, move || remove(&path).map_err(|e| fs_err(&e, &path))).await??;
        Response::ok(RemoveResponse::default())
    }

    async fn watch_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, WatchDirRequest>,
    ) -> ServiceResult<ServiceStream<WatchDirResponse>> {
        let req = request.to_owned_message();
        let user = user_of(&ctx)?;
        let spec = WatchSpec {
            root: users::resolve_path(&user, &req.path),
            user,
            recursive: req.recursive,
            include_entry: req.include_entry,
        };
        let w = start_watch(spec, req.allow_network_mounts).await?;
        let (tx, rx) = mpsc::channel(64);
        let deadline = ctx.deadline().map(tokio::time::Instant::from_std);
        tokio::spawn(stream_watch(w, tx, keepalive(&ctx), deadline));
        let s =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) });
        Ok(Response::new(Box::pin(s) as ServiceStream<WatchDirResponse>))
    }

    async fn create_watcher(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, CreateWatcherRequest>,
    ) -> ServiceResult<CreateWatcherResponse> {
        let req = request.to_owned_message();
        let user = user_of(&ctx)?;
        if lock(&self.watchers).len() >= MAX_WATCHERS {
            return Err(ConnectError::resource_exhausted(
                "too many watchers; remove some first",
            ));
        }
        let spec = WatchSpec {
            root: users::resolve_path(&user, &req.path),
            user,
            recursive: req.recursive,
            include_entry: req.include_entry,
        };
        let w = start_watch(spec, req.allow_network_mounts).await?;
        let buffer = Arc::new(Mutex::new(Buffered::default()));
        let task = tokio::spawn(buffer_watch(w, buffer.clone())).abort_handle();
        let id = format!("w{}", unique_hex());
        lock(&self.watchers).insert(id.clone(), Watcher { buffer, task });
        Response::ok(CreateWatcherResponse {
            watcher_id: id,
            ..Default::default()
        })
    }

    async fn get_watcher_events(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, GetWatcherEventsRequest>,
    ) -> ServiceResult<GetWatcherEventsResponse> {
        let req = request.to_owned_message();
        let buffer = lock(&self.watchers)
            .get(&req.watcher_id)
            .map(|w| w.buffer.clone())
            .ok_or_else(|| watcher_not_found(&req.watcher_id))?;
        let mut b = lock(&buffer);
        if let Some(e) = &b.error {
            return Err(e.clone());
        }
        let events = b.events.drain(..).collect();
        drop(b);
        Response::ok(GetWatcherEventsResponse {
            events,
            ..Default::default()
        })
    }

    async fn remove_watcher(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, RemoveWatcherRequest>,
    ) -> ServiceResult<RemoveWatcherResponse> {
        let req = request.to_owned_message();
        // Dropping the watcher aborts its task.
        lock(&self.watchers)
            .remove(&req.watcher_id)
            .ok_or_else(|| watcher_not_found(&req.watcher_id))?;
        Response::ok(RemoveWatcherResponse::default())
    }
}

fn watcher_not_found(id: &str) -> ConnectError {
    ConnectError::not_found(format!("watcher {id:?} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "paddock-fs-test-{tag}-{}-{}",
            std::process::id(),
            unique_hex()
        ));
        std::fs::create_dir_all(&d).expect("creating test dir");
        d
    }

    #[test]
    fn permissions_like_go() {
        assert_eq!(permissions_string(libc::S_IFREG | 0o644), "-rw-r--r--");
        assert_eq!(permissions_string(libc::S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(permissions_string(libc::S_IFLNK | 0o777), "Lrwxrwxrwx");
        assert_eq!(permissions_string(libc::S_IFDIR | 0o1777), "dtrwxrwxrwx");
        assert_eq!(permissions_string(libc::S_IFCHR | 0o666), "Dcrw-rw-rw-");
        assert_eq!(permissions_string(libc::S_IFIFO | 0o600), "prw-------");
        assert_eq!(permissions_string(libc::S_IFREG | 0o4755), "urwxr-xr-x");
        assert_eq!(permissions_string(libc::S_IFREG), "----------");
    }

    #[test]
    fn listing_order_and_depth() {
        let d = tempdir("list");
        for f in ["b/y", "b/x/deep", "a", "c/z"] {
            let p = d.join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, b"1").expect("write");
        }
        std::os::unix::fs::symlink(d.join("b"), d.join("link")).expect("symlink");
        let names = |depth| -> Vec<String> {
            list_dir(&d, depth, &mut Names::default())
                .expect("list")
                .into_iter()
                .map(|e| e.path.trim_start_matches(&*lossy(&d)).to_owned())
                .collect()
        };
        assert_eq!(names(0), ["/a", "/b", "/c", "/link"]);
        assert_eq!(names(1), names(0));
        assert_eq!(
            names(2),
            ["/a", "/b", "/b/x", "/b/y", "/c", "/c/z", "/link"]
        );
        assert_eq!(
            names(9),
            [
                "/a",
                "/b",
                "/b/x",
                "/b/x/deep",
                "/b/y",
                "/c",
                "/c/z",
                "/link"
            ]
        );
        let entries = list_dir(&d, 1, &mut Names::default()).expect("list");
        let link = entries.iter().find(|e| e.name == "link").expect("link");
        assert!(link.is_symlink);
        assert_eq!(link.r#type.as_known(), Some(FileType::FILE_TYPE_DIRECTORY));
        assert_eq!(
            link.symlink_target.as_deref(),
            Some(&*lossy(&std::fs::canonicalize(d.join("b")).expect("canon")))
        );
        let a = entries.iter().find(|e| e.name == "a").expect("a");
        assert_eq!(a.r#type.as_known(), Some(FileType::FILE_TYPE_FILE));
        assert_eq!(a.size, 1);
        assert!(a.modified_time.is_set());
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn entry_mode_and_permissions() {
        let d = tempdir("entry");
        let f = d.join("f.txt");
        std::fs::write(&f, b"abcd").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = entry_info(&f, &mut Names::default()).expect("entry");
        assert_eq!(e.mode, 420);
        assert_eq!(e.permissions, "-rw-r--r--");
        assert_eq!(e.name, "f.txt");
        assert_eq!(e.size, 4);
        let root = entry_info(Path::new("/"), &mut Names::default()).expect("root");
        assert_eq!(root.name, "/");
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn make_move_remove() {
        let d = tempdir("ops");
        let nested = d.join("x/y/z");
        let e = make_dir(&nested).expect("mkdir");
        assert_eq!(e.r#type.as_known(), Some(FileType::FILE_TYPE_DIRECTORY));
        assert_eq!(
            std::fs::metadata(&nested).expect("stat").mode() & 0o777,
            0o755
        );
        assert_eq!(
            make_dir(&nested).map_err(|e| e.code),
            Err(connectrpc::ErrorCode::AlreadyExists)
        );
        std::fs::write(d.join("file"), b"x").expect("write");
        assert_eq!(
            make_dir(&d.join("file")).map_err(|e| e.code),
            Err(connectrpc::ErrorCode::InvalidArgument)
        );
        assert_eq!(
            move_path(&d.join("missing"), &d.join("m2")).map_err(|e| e.code),
            Err(connectrpc::ErrorCode::NotFound)
        );
        let moved = move_path(&d.join("file"), &d.join("new/parent/file2")).expect("move");
        assert_eq!(moved.name, "file2");
        remove(&d.join("x")).expect("remove dir");
        assert!(!d.join("x").exists());
        remove(&d.join("x")).expect("removing a missing path succeeds");
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn copy_fallback_moves_trees() {
        let d = tempdir("copy");
        std::fs::create_dir_all(d.join("src/sub")).expect("mkdir");
        std::fs::write(d.join("src/sub/f"), b"data").expect("write");
        std::os::unix::fs::symlink("sub/f", d.join("src/l")).expect("symlink");
        move_across(&d.join("src"), &d.join("dst")).expect("move across");
        assert!(!d.join("src").exists());
        assert_eq!(std::fs::read(d.join("dst/sub/f")).expect("read"), b"data");
        assert_eq!(
            std::fs::read_link(d.join("dst/l")).expect("readlink"),
            Path::new("sub/f")
        );
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn metadata_round_trip() {
        let d = tempdir("xattr");
        let f = d.join("m");
        std::fs::write(&f, b"x").expect("write");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .expect("open");
        let mut meta = BTreeMap::new();
        meta.insert("owner".to_owned(), "me".to_owned());
        match write_metadata(&file, &meta) {
            Err(e) if xattr_unsupported(&e) => {} // e.g. tmpfs before Linux 6.6
            r => {
                r.expect("write metadata");
                assert_eq!(read_metadata(&f), meta);
                write_metadata(&file, &BTreeMap::new()).expect("clear");
                assert!(read_metadata(&f).is_empty());
            }
        }
        std::fs::remove_dir_all(&d).expect("cleanup");
    }
}
