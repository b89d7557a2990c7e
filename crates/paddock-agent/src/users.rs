//! Users of the sandbox, read from the sandbox's own `/etc/passwd` and `/etc/group`, and
//! running file operations with a user's filesystem credentials.

use std::fs;

use rustix::thread::Gid;

/// A resolved sandbox user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
    /// Supplementary groups, from `/etc/group`.
    pub groups: Vec<u32>,
}

/// The user does not exist in the sandbox's `/etc/passwd`.
#[derive(Debug, thiserror::Error)]
#[error("user {0:?} does not exist in the sandbox")]
pub struct UnknownUser(pub String);

/// Looks a user up by name (or numeric uid) in the sandbox's `/etc/passwd`.
///
/// Every command start and file operation looks its user up, so the answers are kept while
/// `/etc/passwd` and `/etc/group` stay the same files, unchanged: two `stat`s instead of
/// opening and reading both (`useradd`, `usermod` and editors replace or rewrite them, which
/// changes the inode, size or modification time).
pub fn lookup(name: &str) -> Result<User, UnknownUser> {
    use std::sync::Mutex;
    type Cache = Option<([Stamp; 2], std::collections::HashMap<String, User>)>;
    static CACHE: Mutex<Cache> = Mutex::new(None);
    // Both files must be there to be trusted as unchanged; without, read every time.
    let stamp = Stamp::of("/etc/passwd")
        .zip(Stamp::of("/etc/group"))
        .map(|(p, g)| [p, g]);
    if let Some(stamp) = &stamp {
        let cache = crate::lock(&CACHE);
        if let Some((s, users)) = cache.as_ref()
            && s == stamp
            && let Some(u) = users.get(name)
        {
            return Ok(u.clone());
        }
    }
    let user = lookup_uncached(name)?;
    if let Some(stamp) = stamp {
        let mut cache = crate::lock(&CACHE);
        match cache.as_mut() {
            Some((s, users)) if s == &stamp => {
                users.insert(name.to_owned(), user.clone());
            }
            _ => *cache = Some((stamp, [(name.to_owned(), user.clone())].into())),
        }
    }
    Ok(user)
}

/// What identifies a file's contents without reading it: device, inode, size and
/// modification time (nanoseconds). `None` when it cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp(u64, u64, u64, i64, i64);

impl Stamp {
    fn of(path: &str) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt as _;
        let m = fs::metadata(path).ok()?;
        Some(Stamp(m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
    }
}

fn lookup_uncached(name: &str) -> Result<User, UnknownUser> {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let by_uid: Option<u32> = name.parse().ok();
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            continue;
        }
        let (Ok(uid), Ok(gid)) = (f[2].parse::<u32>(), f[3].parse::<u32>()) else {
            continue;
        };
        if f[0] == name || by_uid == Some(uid) {
            return Ok(User {
                name: f[0].to_owned(),
                uid,
                gid,
                home: f[5].to_owned(),
                shell: f[6].to_owned(),
                groups: groups_of(f[0], gid),
            });
        }
    }
    Err(UnknownUser(name.to_owned()))
}

fn groups_of(name: &str, primary: u32) -> Vec<u32> {
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    let mut out = vec![primary];
    for line in group.lines() {
        let f: Vec<&str> = line.split(':').collect();
        let member = f.len() >= 4 && f[3].split(',').any(|m| m == name);
        if let Some(g) = f
            .get(2)
            .and_then(|g| g.parse::<u32>().ok())
            .filter(|g| member && !out.contains(g))
        {
            out.push(g);
        }
    }
    out
}

/// Name of a uid or gid for display (`ls -l` style), falling back to the number.
pub fn name_of(id: u32, group: bool) -> String {
    let file = if group { "/etc/group" } else { "/etc/passwd" };
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 3 && f[2].parse() == Ok(id)).then(|| f[0].to_owned())
        })
        .unwrap_or_else(|| id.to_string())
}

/// Runs `f` on the current thread with `user`'s filesystem identity: fsuid, fsgid and
/// supplementary groups are switched for this thread only, so permission checks (and the
/// owner of created files) are exactly what that user would get. Call it from a blocking
/// thread (`tokio::task::spawn_blocking`), never from an async task.
pub fn as_user<T>(user: &User, f: impl FnOnce() -> T) -> T {
    // Per-thread credential changes: the raw syscalls, not libc's process-wide wrappers.
    let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    let _ = rustix::thread::set_thread_groups(&groups);
    set_fs_ids(user.uid, user.gid);
    // Restore root's identity even if `f` panics: blocking threads are reused.
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            set_fs_ids(0, 0);
            let _ = rustix::thread::set_thread_groups(&[]);
        }
    }
    let _restore = Restore;
    f()
}

fn set_fs_ids(uid: u32, gid: u32) {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Set once `setfsgid` answered `ENOSYS` (gVisor's Sentry has no filesystem ids).
    static NO_FSIDS: AtomicBool = AtomicBool::new(false);
    if !NO_FSIDS.load(Ordering::Relaxed) {
        if crate::sys::set_thread_fs_ids(uid, gid) {
            return;
        }
        NO_FSIDS.store(true, Ordering::Relaxed);
    }
    // Without filesystem ids: this thread's effective ids, which the filesystem ids follow.
    // The real and saved ids stay 0, so the thread can always return to root; a non-zero
    // effective uid drops the thread's effective capabilities, and returning to 0 restores
    // them. Raw syscalls change the calling thread only (the Sentry keeps credentials per
    // task, as Linux does).
    crate::sys::set_thread_effective_ids(uid, gid);
}

/// The user a request acts as: the username of an `Authorization: Basic` header (how the
/// E2B SDK names a user on RPCs), else the default user `user`, else `root` for templates
/// that have no `user`.
pub fn from_headers(headers: &http::HeaderMap) -> Result<User, UnknownUser> {
    use base64::Engine;
    let named = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|d| String::from_utf8(d).ok())
        .map(|s| s.split(':').next().unwrap_or_default().to_owned())
        .filter(|s| !s.is_empty());
    by_name_or_default(named.as_deref())
}

/// Resolves an optional user name; `None` means the default user.
pub fn by_name_or_default(name: Option<&str>) -> Result<User, UnknownUser> {
    match name {
        Some(n) => lookup(n),
        None => lookup(paddock_core::DEFAULT_USER).or_else(|_| lookup("root")),
    }
}

/// Resolves a client path the way envd does: empty means the user's home, `~` and `~/x` are
/// relative to the home, other relative paths are joined to the home. The result is absolute
/// and lexically normalised; `..` never climbs above `/`. The kernel then resolves it inside
/// the sandbox root, so it cannot name a host file whatever it contains.
/// Where a process starts when the request names no cwd: the template's working directory
/// (`PADDOCK_WORKDIR`, set by the setup stage) if it exists, else the user's home.
pub fn default_cwd(user: &User) -> std::path::PathBuf {
    match std::env::var("PADDOCK_WORKDIR") {
        Ok(w) if !w.is_empty() => {
            let p = resolve_path(user, &w);
            if p.is_dir() {
                p
            } else {
                resolve_path(user, "")
            }
        }
        _ => resolve_path(user, ""),
    }
}

pub fn resolve_path(user: &User, path: &str) -> std::path::PathBuf {
    use std::path::{Component, Path, PathBuf};
    let joined: PathBuf = if path.is_empty() || path == "~" {
        PathBuf::from(&user.home)
    } else if let Some(rest) = path.strip_prefix("~/") {
        Path::new(&user.home).join(rest)
    } else if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        Path::new(&user.home).join(path)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}
