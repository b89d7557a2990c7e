//! A volume's files from the host: stat, list, read, write, make directories, remove and
//! change owners or modes, for the volume content API (`docs/volumes.md`).
//!
//! The tree is written by sandboxes, which are hostile: any component may be a symlink (to
//! `/etc`, say), and may be swapped for one between two calls. So nothing here takes a path
//! to the host's filesystem. Every path is resolved from a descriptor of the volume's data
//! directory with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`: a
//! symlink is followed as if the volume were the whole filesystem (an absolute target starts
//! at the volume's root, `..` stops there), and nothing on another mount is reached. The
//! last component is then acted on from its parent's descriptor with the `*at` calls and
//! `O_NOFOLLOW`, so a symlink there is acted on itself, never followed. A write goes to a
//! new file beside the target and is renamed over it: a failed upload leaves the old file
//! whole, and a symlink at the path is replaced, not written through.
//!
//! Owners are in template id space, as on disk (`user` is 1000, root 0); the sandboxes see
//! them id-mapped onto their own ranges.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{
    AtFlags, Dir, FileType, Gid, Mode, OFlags, ResolveFlags, Stat, Uid, fchmod, fchown, fstat,
    mkdirat, openat, openat2, readlinkat, renameat, statat, unlinkat,
};
use rustix::io::Errno;

/// Owner of what the API creates when the request names none: the templates' `user`.
pub const DEFAULT_OWNER: u32 = 1000;
/// Mode of a new file when the request names none.
pub const DEFAULT_FILE_MODE: u32 = 0o644;
/// Mode of a new directory when the request names none.
pub const DEFAULT_DIR_MODE: u32 = 0o755;
/// Highest uid or gid the API sets: the sandboxes map 65,536 ids.
pub const MAX_ID: u32 = 65_535;
/// Deepest listing.
pub const MAX_DEPTH: u32 = 32;
/// Most entries one listing returns.
pub const MAX_ENTRIES: usize = 10_000;
/// Longest path accepted.
pub const MAX_PATH: usize = 4096;

/// What can go wrong; each maps to one HTTP status in the API.
#[derive(Debug, thiserror::Error)]
pub enum VolFsError {
    /// Nothing at the path (or the volume itself is gone).
    #[error("{0} not found")]
    NotFound(String),
    /// Something is already at the path.
    #[error("{0} already exists")]
    Exists(String),
    /// The request cannot be carried out as asked (a bad path, a directory where a file is
    /// needed, an id out of range).
    #[error("{0}")]
    Invalid(String),
    /// The volume's quota is used up.
    #[error("the volume is full (its quota is used up)")]
    Full,
    /// Any other failure of the filesystem.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, VolFsError>;

/// The kind of an entry, as the E2B wire names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    File,
    Symlink,
    Unknown,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Directory => "directory",
            EntryKind::File => "file",
            EntryKind::Symlink => "symlink",
            EntryKind::Unknown => "unknown",
        }
    }
}

/// One entry's metadata.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The last component ("" for the volume's root).
    pub name: String,
    /// From the volume's root, starting with `/`.
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Permission bits (`0o7777` of `st_mode`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds and nanoseconds since the epoch.
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    /// A symlink's target, as stored.
    pub target: Option<String>,
}

/// Owner and mode a request sets; None keeps what is there (or the default for new entries).
#[derive(Debug, Clone, Copy, Default)]
pub struct Attrs {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
}

impl Attrs {
    /// Refuses ids over [`MAX_ID`] and modes with bits beyond `0o1777` (set-id bits would
    /// make a file that changes who runs it inside a sandbox; the sandbox's own users can
    /// set them, the API does not).
    pub fn check(&self) -> Result<()> {
        for (what, v) in [("uid", self.uid), ("gid", self.gid)] {
            if let Some(v) = v
                && v > MAX_ID
            {
                return Err(VolFsError::Invalid(format!(
                    "{what} {v} is out of range (0 to {MAX_ID})"
                )));
            }
        }
        if let Some(m) = self.mode
            && m & !0o1777 != 0
        {
            return Err(VolFsError::Invalid(format!(
                "mode {m:o} is not allowed: use permission bits and the sticky bit (at most 1777 octal)"
            )));
        }
        Ok(())
    }
}

/// A volume's data directory, open.
#[derive(Debug)]
pub struct VolumeFiles {
    root: OwnedFd,
}

/// A request path split into components: relative, no `.`, `..` or empty parts.
fn components(path: &str) -> Result<Vec<&str>> {
    if path.len() > MAX_PATH {
        return Err(VolFsError::Invalid(format!(
            "a path is at most {MAX_PATH} bytes"
        )));
    }
    if path.as_bytes().contains(&0) {
        return Err(VolFsError::Invalid("a path cannot contain NUL".into()));
    }
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(VolFsError::Invalid(format!(
                    "{path:?}: a path in a volume cannot contain \"..\""
                )));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Whether `path` names the volume's root (`/`, empty, `.`, `//`...).
pub fn is_root(path: &str) -> bool {
    components(path).is_ok_and(|c| c.is_empty())
}

fn shown(comps: &[&str]) -> String {
    format!("/{}", comps.join("/"))
}

fn io_err(what: impl Into<String>) -> impl FnOnce(Errno) -> VolFsError {
    let what = what.into();
    move |e| match e {
        Errno::NOENT => VolFsError::NotFound(what),
        Errno::DQUOT | Errno::NOSPC => VolFsError::Full,
        Errno::EXIST => VolFsError::Exists(what),
        Errno::NOTDIR => VolFsError::Invalid(format!("{what}: a component is not a directory")),
        Errno::ISDIR => VolFsError::Invalid(format!("{what} is a directory")),
        Errno::LOOP => VolFsError::Invalid(format!("{what}: too many symlinks")),
        Errno::XDEV => VolFsError::Invalid(format!("{what} leads out of the volume")),
        Errno::NAMETOOLONG => VolFsError::Invalid(format!("{what}: a name is too long")),
        e => VolFsError::Io {
            what,
            source: e.into(),
        },
    }
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV
}

fn kind_of(st: &Stat) -> EntryKind {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => EntryKind::Directory,
        FileType::RegularFile => EntryKind::File,
        FileType::Symlink => EntryKind::Symlink,
        _ => EntryKind::Unknown,
    }
}

impl VolumeFiles {
    /// Opens the data directory `data` of a volume (the caller's path, which is ours).
    pub fn open(data: &Path) -> Result<Self> {
        let root = rustix::fs::open(
            data,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(io_err("the volume"))?;
        Ok(Self { root })
    }

    /// A directory inside the volume, resolved in it; `comps` empty is the root.
    fn dir(&self, comps: &[&str], flags: OFlags) -> Result<OwnedFd> {
        let rel = if comps.is_empty() {
            ".".to_owned()
        } else {
            comps.join("/")
        };
        openat2(
            &self.root,
            rel.as_str(),
            flags | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            resolve_flags(),
        )
        .map_err(io_err(shown(comps)))
    }

    /// The parent of `comps` (which must not be empty) and the last component.
    fn parent<'a>(&self, comps: &[&'a str]) -> Result<(OwnedFd, &'a str)> {
        let (last, up) = comps
            .split_last()
            .ok_or_else(|| VolFsError::Invalid("the volume's root cannot be changed".into()))?;
        Ok((self.dir(up, OFlags::PATH)?, last))
    }

    fn entry_at(&self, parent: &OwnedFd, name: &str, comps: &[&str]) -> Result<Entry> {
        let st = statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io_err(shown(comps)))?;
        let kind = kind_of(&st);
        let target = if kind == EntryKind::Symlink {
            readlinkat(parent, name, Vec::new())
                .ok()
                .map(|t| String::from_utf8_lossy(t.as_bytes()).into_owned())
        } else {
            None
        };
        Ok(entry_from(&st, name, shown(comps), kind, target))
    }

    /// Metadata of the entry at `path` (a symlink's own, with its target).
    pub fn stat(&self, path: &str) -> Result<Entry> {
        let comps = components(path)?;
        if comps.is_empty() {
            let st = fstat(&self.root).map_err(io_err("/"))?;
            return Ok(entry_from(&st, "", "/".into(), EntryKind::Directory, None));
        }
        let (parent, name) = self.parent(&comps)?;
        self.entry_at(&parent, name, &comps)
    }

    /// The entries under directory `path`, `depth` levels down (1: its children). Symlinks
    /// to directories are listed, not entered.
    pub fn list(&self, path: &str, depth: u32) -> Result<Vec<Entry>> {
        if depth == 0 || depth > MAX_DEPTH {
            return Err(VolFsError::Invalid(format!(
                "depth must be 1 to {MAX_DEPTH}, got {depth}"
            )));
        }
        let comps = components(path)?;
        let dir = self.dir(&comps, OFlags::RDONLY)?;
        let base: Vec<String> = comps.iter().map(|s| (*s).to_owned()).collect();
        let mut out = Vec::new();
        self.list_into(dir, &base, depth, &mut out)?;
        Ok(out)
    }

    fn list_into(
        &self,
        dir: OwnedFd,
        base: &[String],
        depth: u32,
        out: &mut Vec<Entry>,
    ) -> Result<()> {
        let mut names: Vec<String> = Vec::new();
        let shown_base = format!("/{}", base.join("/"));
        let mut it = Dir::read_from(&dir).map_err(io_err(shown_base.clone()))?;
        while let Some(e) = it.read() {
            let e = e.map_err(io_err(shown_base.clone()))?;
            let n = e.file_name().to_bytes();
            if n == b"." || n == b".." {
                continue;
            }
            names.push(String::from_utf8_lossy(n).into_owned());
        }
        names.sort();
        for n in names {
            if out.len() >= MAX_ENTRIES {
                return Err(VolFsError::Invalid(format!(
                    "more than {MAX_ENTRIES} entries: list a subdirectory or use a smaller depth"
                )));
            }
            let mut path: Vec<String> = base.to_vec();
            path.push(n.clone());
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            // An entry removed since the directory was read is skipped.
            let entry = match self.entry_at(&dir, &n, &refs) {
                Ok(e) => e,
                Err(VolFsError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let is_dir = entry.kind == EntryKind::Directory;
            out.push(entry);
            if is_dir && depth > 1 {
                // O_NOFOLLOW: a directory swapped for a symlink since the stat is not entered.
                match openat(
                    &dir,
                    n.as_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(sub) => self.list_into(sub, &path, depth - 1, out)?,
                    Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => {}
                    Err(e) => return Err(io_err(shown(&refs))(e)),
                }
            }
        }
        Ok(())
    }

    /// The regular file at `path`, open for reading, and its size.
    pub fn open_file(&self, path: &str) -> Result<(File, u64)> {
        let comps = components(path)?;
        if comps.is_empty() {
            return Err(VolFsError::Invalid("/ is a directory".into()));
        }
        let fd = openat2(
            &self.root,
            comps.join("/").as_str(),
            // NONBLOCK: a FIFO planted by a sandbox must not hang the request.
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
            resolve_flags(),
        )
        .map_err(io_err(shown(&comps)))?;
        let st = fstat(&fd).map_err(io_err(shown(&comps)))?;
        match kind_of(&st) {
            EntryKind::File => {}
            EntryKind::Directory => {
                return Err(VolFsError::Invalid(format!(
                    "{} is a directory",
                    shown(&comps)
                )));
            }
            _ => {
                return Err(VolFsError::Invalid(format!(
                    "{} is not a regular file",
                    shown(&comps)
                )));
            }
        }
        Ok((File::from(fd), st.st_size as u64))
    }

    /// Makes the directories of `comps` that are missing, each owned and moded per `attrs`
    /// (defaults for what is not given); existing ones are kept as they are.
    fn make_parents(&self, comps: &[&str], attrs: Attrs) -> Result<()> {
        for i in 1..=comps.len() {
            let (parent, name) = self.parent(&comps[..i])?;
            match self.mkdir_at(&parent, name, &comps[..i], attrs) {
                Ok(()) | Err(VolFsError::Exists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn mkdir_at(&self, parent: &OwnedFd, name: &str, comps: &[&str], attrs: Attrs) -> Result<()> {
        let mode = attrs.mode.unwrap_or(DEFAULT_DIR_MODE);
        mkdirat(parent, name, Mode::from_raw_mode(0o700)).map_err(io_err(shown(comps)))?;
        let fd = openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err(shown(comps)))?;
        set_owner_mode(
            &fd,
            attrs.uid.unwrap_or(DEFAULT_OWNER),
            attrs.gid.unwrap_or(DEFAULT_OWNER),
            mode,
            &shown(comps),
        )
    }

    /// Makes directory `path`; with `parents`, also the missing ones above it, and an
    /// existing directory is no error.
    pub fn make_dir(&self, path: &str, attrs: Attrs, parents: bool) -> Result<Entry> {
        attrs.check()?;
        let comps = components(path)?;
        if comps.is_empty() {
            return Err(VolFsError::Exists("/".into()));
        }
        if parents {
            self.make_parents(&comps[..comps.len() - 1], attrs)?;
        }
        let (parent, name) = self.parent(&comps)?;
        match self.mkdir_at(&parent, name, &comps, attrs) {
            Err(VolFsError::Exists(_)) if parents => {
                let e = self.entry_at(&parent, name, &comps)?;
                if e.kind != EntryKind::Directory {
                    return Err(VolFsError::Exists(shown(&comps)));
                }
                Ok(e)
            }
            Err(e) => Err(e),
            Ok(()) => self.entry_at(&parent, name, &comps),
        }
    }

    /// Starts a write of the file at `path`: a new file beside it that [`Upload::commit`]
    /// renames over it. With `parents`, missing directories are made first.
    pub fn begin_write(&self, path: &str, attrs: Attrs, parents: bool) -> Result<Upload> {
        attrs.check()?;
        let comps = components(path)?;
        if comps.is_empty() {
            return Err(VolFsError::Invalid("/ is a directory".into()));
        }
        if parents {
            self.make_parents(&comps[..comps.len() - 1], Attrs::default())?;
        }
        let (parent, name) = self.parent(&comps)?;
        // What is there now decides the owner and mode kept, and a directory is refused.
        let old = match statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if kind_of(&st) == EntryKind::Directory => {
                return Err(VolFsError::Invalid(format!(
                    "{} is a directory",
                    shown(&comps)
                )));
            }
            Ok(st) if kind_of(&st) == EntryKind::File => Some(st),
            Ok(_) | Err(Errno::NOENT) => None,
            Err(e) => return Err(io_err(shown(&comps))(e)),
        };
        let tmp = format!(".paddock-upload-{:016x}", rand::random::<u64>());
        let fd = openat(
            &parent,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(io_err(shown(&comps)))?;
        let uid = attrs
            .uid
            .or(old.as_ref().map(|s| s.st_uid))
            .unwrap_or(DEFAULT_OWNER);
        let gid = attrs
            .gid
            .or(old.as_ref().map(|s| s.st_gid))
            .unwrap_or(DEFAULT_OWNER);
        let mode = attrs
            .mode
            .or(old.as_ref().map(|s| s.st_mode & 0o1777))
            .unwrap_or(DEFAULT_FILE_MODE);
        let up = Upload {
            file: Some(File::from(fd)),
            parent,
            tmp,
            name: name.to_owned(),
            shown: shown(&comps),
            uid,
            gid,
            mode,
        };
        Ok(up)
    }

    /// Removes the entry at `path`; a directory with everything in it.
    pub fn remove(&self, path: &str) -> Result<()> {
        let comps = components(path)?;
        let (parent, name) = self.parent(&comps)?;
        let st = statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io_err(shown(&comps)))?;
        if kind_of(&st) == EntryKind::Directory {
            remove_tree(&parent, OsStr::new(name), &shown(&comps))
        } else {
            unlinkat(&parent, name, AtFlags::empty()).map_err(io_err(shown(&comps)))
        }
    }

    /// Sets the owner and mode of the entry at `path` (a symlink's own owner; a symlink has
    /// no mode of its own to set).
    pub fn set_attrs(&self, path: &str, attrs: Attrs) -> Result<Entry> {
        attrs.check()?;
        let comps = components(path)?;
        if comps.is_empty() {
            let fd = self.dir(&[], OFlags::RDONLY)?;
            apply(&fd, attrs, &comps)?;
            return self.stat("/");
        }
        let (parent, name) = self.parent(&comps)?;
        let st = statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io_err(shown(&comps)))?;
        if kind_of(&st) == EntryKind::Symlink {
            if attrs.mode.is_some() {
                return Err(VolFsError::Invalid(format!(
                    "{} is a symlink, which has no mode of its own",
                    shown(&comps)
                )));
            }
            rustix::fs::chownat(
                &parent,
                name,
                attrs.uid.map(Uid::from_raw),
                attrs.gid.map(Gid::from_raw),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(io_err(shown(&comps)))?;
        } else {
            // O_NOFOLLOW: swapped for a symlink since the stat, it fails rather than follow.
            // NONBLOCK: a FIFO opens at once; a socket cannot be opened and is refused.
            let fd = openat(
                &parent,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io_err(shown(&comps)))?;
            apply(&fd, attrs, &comps)?;
        }
        self.entry_at(&parent, name, &comps)
    }
}

fn apply(fd: &OwnedFd, attrs: Attrs, comps: &[&str]) -> Result<()> {
    if attrs.uid.is_some() || attrs.gid.is_some() {
        fchown(
            fd,
            attrs.uid.map(Uid::from_raw),
            attrs.gid.map(Gid::from_raw),
        )
        .map_err(io_err(shown(comps)))?;
    }
    if let Some(m) = attrs.mode {
        fchmod(fd, Mode::from_raw_mode(m)).map_err(io_err(shown(comps)))?;
    }
    Ok(())
}

fn set_owner_mode(fd: impl AsFd, uid: u32, gid: u32, mode: u32, what: &str) -> Result<()> {
    fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(io_err(what))?;
    // After the chown, which clears set-id bits.
    fchmod(&fd, Mode::from_raw_mode(mode)).map_err(io_err(what))
}

/// Removes directory `name` of `parent` and everything under it, never following a symlink.
fn remove_tree(parent: &OwnedFd, name: &OsStr, shown_path: &str) -> Result<()> {
    match openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(dir) => {
            let mut names = Vec::new();
            let mut it = Dir::read_from(&dir).map_err(io_err(shown_path))?;
            while let Some(e) = it.read() {
                let e = e.map_err(io_err(shown_path))?;
                let n = e.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push((n.to_vec(), e.file_type()));
                }
            }
            for (n, t) in names {
                let n = OsStr::from_bytes(&n);
                let child = format!("{shown_path}/{}", n.to_string_lossy());
                let r = if t == FileType::Directory {
                    remove_tree(&dir, n, &child)
                } else {
                    unlinkat(&dir, n, AtFlags::empty()).map_err(io_err(child.clone()))
                };
                match r {
                    // Gone already, or a directory now (raced): try the other way once.
                    Ok(()) | Err(VolFsError::NotFound(_)) => {}
                    Err(VolFsError::Invalid(_)) if t != FileType::Directory => {
                        remove_tree(&dir, n, &child)?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        // Swapped for a symlink or a file: removed as what it is now.
        Err(Errno::LOOP | Errno::NOTDIR) => {
            return unlinkat(parent, name, AtFlags::empty()).map_err(io_err(shown_path));
        }
        Err(e) => return Err(io_err(shown_path)(e)),
    }
    unlinkat(parent, name, AtFlags::REMOVEDIR).map_err(io_err(shown_path))
}

fn entry_from(
    st: &Stat,
    name: &str,
    path: String,
    kind: EntryKind,
    target: Option<String>,
) -> Entry {
    Entry {
        name: name.to_owned(),
        path,
        kind,
        size: st.st_size as u64,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        atime: (st.st_atime, st.st_atime_nsec as u32),
        mtime: (st.st_mtime, st.st_mtime_nsec as u32),
        ctime: (st.st_ctime, st.st_ctime_nsec as u32),
        target,
    }
}

/// A file being written: bytes go to a new file beside the target; [`Upload::commit`] sets
/// its owner and mode and renames it over the target; dropped uncommitted, it is removed.
#[derive(Debug)]
pub struct Upload {
    file: Option<File>,
    parent: OwnedFd,
    tmp: String,
    name: String,
    shown: String,
    uid: u32,
    gid: u32,
    mode: u32,
}

impl Upload {
    /// Appends `buf`.
    pub fn write(&mut self, buf: &[u8]) -> Result<()> {
        let f = self
            .file
            .as_mut()
            .expect("an upload is written before commit");
        f.write_all(buf).map_err(|e| match e.raw_os_error() {
            Some(libc::EDQUOT | libc::ENOSPC) => VolFsError::Full,
            _ => VolFsError::Io {
                what: format!("writing {}", self.shown),
                source: e,
            },
        })
    }

    /// Makes the written file the one at the path and returns its metadata.
    pub fn commit(mut self) -> Result<Entry> {
        let f = self.file.take().expect("committed once");
        set_owner_mode(&f, self.uid, self.gid, self.mode, &self.shown)?;
        f.sync_data().map_err(|e| match e.raw_os_error() {
            Some(libc::EDQUOT | libc::ENOSPC) => VolFsError::Full,
            _ => VolFsError::Io {
                what: format!("writing {}", self.shown),
                source: e,
            },
        })?;
        drop(f);
        renameat(
            &self.parent,
            self.tmp.as_str(),
            &self.parent,
            self.name.as_str(),
        )
        .map_err(|e| match e {
            Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST => {
                VolFsError::Invalid(format!("{} is a directory", self.shown))
            }
            e => io_err(self.shown.clone())(e),
        })?;
        self.tmp.clear();
        let st = statat(&self.parent, self.name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_err(self.shown.clone()))?;
        let name = self.name.clone();
        Ok(entry_from(
            &st,
            &name,
            self.shown.clone(),
            kind_of(&st),
            None,
        ))
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.tmp.is_empty() {
            let _ = unlinkat(&self.parent, self.tmp.as_str(), AtFlags::empty());
        }
    }
}

impl AsFd for VolumeFiles {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.root.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, VolumeFiles) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("data")).unwrap();
        let vf = VolumeFiles::open(&d.path().join("data")).unwrap();
        (d, vf)
    }

    fn write(vf: &VolumeFiles, path: &str, data: &[u8], parents: bool) -> Result<Entry> {
        let mut up = vf.begin_write(path, Attrs::default(), parents)?;
        up.write(data)?;
        up.commit()
    }

    #[test]
    fn symlinks_stay_inside_the_volume() {
        let (d, vf) = setup();
        let outside = d.path().join("outside");
        std::fs::write(&outside, "host").unwrap();
        let data = d.path().join("data");
        std::os::unix::fs::symlink(&outside, data.join("abs")).unwrap();
        std::os::unix::fs::symlink("../outside", data.join("rel")).unwrap();
        std::os::unix::fs::symlink(d.path(), data.join("dir")).unwrap();
        // Followed inside the volume only: none reaches the host file.
        assert!(matches!(vf.open_file("/abs"), Err(VolFsError::NotFound(_))));
        assert!(matches!(vf.open_file("/rel"), Err(VolFsError::NotFound(_))));
        assert!(matches!(
            vf.open_file("/dir/outside"),
            Err(VolFsError::NotFound(_))
        ));
        assert!(matches!(
            write(&vf, "/dir/outside", b"x", false),
            Err(VolFsError::NotFound(_))
        ));
        // Writing at a symlink replaces it; removing a symlinked dir removes the link.
        write(&vf, "/abs", b"mine", false).unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "host");
        assert_eq!(vf.stat("/abs").unwrap().kind, EntryKind::File);
        vf.remove("/dir").unwrap();
        assert!(d.path().join("outside").exists());
        assert_eq!(
            vf.stat("/rel").unwrap().target.as_deref(),
            Some("../outside")
        );
        assert!(matches!(vf.stat("/a/../b"), Err(VolFsError::Invalid(_))));
    }

    #[test]
    fn writes_lists_and_removes() {
        let (_d, vf) = setup();
        assert!(matches!(
            write(&vf, "/a/b/c.txt", b"x", false),
            Err(VolFsError::NotFound(_))
        ));
        let e = write(&vf, "/a/b/c.txt", b"hello", true).unwrap();
        assert_eq!(
            (e.size, e.mode, e.uid),
            (5, DEFAULT_FILE_MODE, DEFAULT_OWNER)
        );
        let all: Vec<String> = vf
            .list("/", 3)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(all, ["/a", "/a/b", "/a/b/c.txt"]);
        assert_eq!(vf.list("/", 1).unwrap().len(), 1);
        // A dropped upload leaves the old file and no stray file.
        let mut up = vf
            .begin_write("/a/b/c.txt", Attrs::default(), false)
            .unwrap();
        up.write(b"partial").unwrap();
        drop(up);
        assert_eq!(vf.list("/a/b", 1).unwrap().len(), 1);
        let (mut f, size) = vf.open_file("/a/b/c.txt").unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut f, &mut s).unwrap();
        assert_eq!((s.as_str(), size), ("hello", 5));
        assert!(matches!(
            vf.make_dir("/a", Attrs::default(), false),
            Err(VolFsError::Exists(_))
        ));
        vf.make_dir("/a", Attrs::default(), true).unwrap();
        vf.remove("/a").unwrap();
        assert!(vf.list("/", 1).unwrap().is_empty());
        assert!(matches!(vf.remove("/"), Err(VolFsError::Invalid(_))));
    }

    #[test]
    fn fifos_are_refused_not_waited_on_and_set_id_modes_refused() {
        let (d, vf) = setup();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.path().join("data/fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert!(matches!(vf.open_file("/fifo"), Err(VolFsError::Invalid(_))));
        vf.set_attrs(
            "/fifo",
            Attrs {
                mode: Some(0o600),
                ..Attrs::default()
            },
        )
        .unwrap();
        let bad = Attrs {
            mode: Some(0o4755),
            ..Attrs::default()
        };
        assert!(matches!(
            vf.begin_write("/x", bad, false),
            Err(VolFsError::Invalid(_))
        ));
    }
}
