//! Content-addressed store of unpacked image layers, in overlayfs *lower-layer* format.
//!
//! Layout: `root/<hex>` is the layer whose uncompressed tar stream (its OCI `diff_id`) has
//! SHA-256 `<hex>`; its id is `sha256:<hex>`. A layer is unpacked into `root/.tmp-<random>`,
//! synced to disk and renamed into place, so a layer directory is either complete or absent;
//! [`LayerStore::open`] removes the `.tmp-*` leftovers of a crash.
//!
//! Unpacking (the host-side counterpart of the agent's `archive` module, same approach):
//! - The `tar` crate only parses (raw mode, extension headers size-capped); every entry is
//!   created relative to an `O_PATH` descriptor of the layer with
//!   `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` and `O_NOFOLLOW`, so a symlink in the
//!   layer (pointing anywhere) is never written through, and `..` components are refused.
//!   Absolute paths are taken relative to the layer.
//! - OCI whiteouts: `DIR/.wh.NAME` becomes an overlay whiteout (character device 0:0 named
//!   `NAME`); `DIR/.wh..wh..opq` sets `trusted.overlay.opaque=y` on `DIR`. Other `.wh..wh.`
//!   names (aufs bookkeeping) are skipped.
//! - Numeric owners, modes (setuid, setgid, sticky included), mtimes, symlinks and hard links
//!   are kept, and of the pax extended attributes (`SCHILY.xattr.*`) file capabilities and
//!   `user.*` ones (never `trusted.overlay.*`: overlay metadata comes only from whiteouts).
//!   Device nodes other than whiteouts, FIFOs and sparse files are refused.
//! - Limits: [`MAX_ENTRIES`], [`MAX_PATH_LEN`], [`MAX_TOTAL_BYTES`] of file data,
//!   [`MAX_PAX_BYTES`] per extension header.
//! - The stream is hashed as it is read, to its very end (the end-of-archive blocks are part
//!   of the `diff_id`); if it differs from the expected id nothing is kept.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use sha2::{Digest, Sha256};

use crate::error::{Result, RuntimeError};

/// At most this many entries (headers other than extension headers) in one layer.
pub const MAX_ENTRIES: u64 = 1_000_000;
/// Longest entry path or link target, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// At most this many bytes of file data in one layer (64 GiB).
pub const MAX_TOTAL_BYTES: u64 = 64 << 30;
/// Largest pax extension header accepted.
pub const MAX_PAX_BYTES: u64 = 1 << 20;
/// Largest run of bytes accepted after the end-of-archive marker (still hashed).
const MAX_TRAILING_BYTES: u64 = 16 << 20;
const COPY_BUFFER: usize = 256 * 1024;
const TMP_PREFIX: &str = ".tmp-";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
const PAX_XATTR: &[u8] = b"SCHILY.xattr.";

/// Extended attributes taken from an image (pax `SCHILY.xattr.*`): file capabilities and the
/// `user.` namespace. Everything else is dropped, `trusted.overlay.*` above all (a layer
/// must not forge overlayfs metadata such as redirects or opaque markers other than by
/// whiteout files) and `security.selinux` (host policy).
fn xattr_kept(name: &str) -> bool {
    name == "security.capability" || name.starts_with("user.")
}

/// The store. Cheap to clone (it is a path).
#[derive(Debug, Clone)]
pub struct LayerStore {
    root: PathBuf,
}

impl LayerStore {
    /// Opens (creating if needed) the store at `root` and removes unfinished unpacks.
    pub fn open(root: impl Into<PathBuf>) -> Result<LayerStore> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(RuntimeError::io("create the layer store"))?;
        let entries = std::fs::read_dir(&root).map_err(RuntimeError::io("read the layer store"))?;
        for e in entries.flatten() {
            if e.file_name().as_bytes().starts_with(TMP_PREFIX.as_bytes()) {
                let p = e.path();
                // Temps in use (by this process or another) are locked: left alone.
                let Ok(_lock) = lock(&p) else { continue };
                let r = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                if let Err(err) = r {
                    tracing::warn!(path = %p.display(), %err, "cannot remove a leftover layer temp");
                }
            }
        }
        Ok(LayerStore { root })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of layer `id` (`sha256:<hex>`); it may not exist. An invalid id maps
    /// to a path that never exists.
    pub fn path(&self, id: &str) -> PathBuf {
        match hex_of(id) {
            Some(hex) => self.root.join(hex),
            None => self.root.join(".invalid"),
        }
    }

    /// Whether layer `id` is in the store.
    pub fn contains(&self, id: &str) -> bool {
        hex_of(id).is_some() && self.path(id).is_dir()
    }

    /// Unpacks an uncompressed tar stream into a new layer and returns its id (see the
    /// module doc). If `expect` is given and the stream's SHA-256 differs, nothing is kept.
    /// If the layer exists already, the stream is only verified.
    pub fn unpack(&self, tar: impl Read, expect: Option<&str>) -> Result<String> {
        if let Some(e) = expect
            && hex_of(e).is_none()
        {
            return Err(RuntimeError::BadImage(format!("invalid layer id {e:?}")));
        }
        let mut hashed = Hashing {
            inner: tar,
            hasher: Sha256::new(),
        };
        if let Some(e) = expect
            && self.contains(e)
        {
            io::copy(&mut hashed, &mut io::sink()).map_err(read_error)?;
            let got = format!("sha256:{:x}", hashed.hasher.finalize());
            check_expected(&got, e)?;
            return Ok(got);
        }
        let tmp = self.temp_name("");
        std::fs::create_dir(&tmp).map_err(RuntimeError::io("create a layer directory"))?;
        // Held until the layer is in place or removed, so `open` elsewhere leaves it alone.
        let _lock = match lock(&tmp) {
            Ok(l) => l,
            Err(e) => {
                remove_tree(&tmp);
                return Err(RuntimeError::io("lock a layer directory")(e));
            }
        };
        let result = self.unpack_into(&tmp, &mut hashed).and_then(|()| {
            let got = format!("sha256:{:x}", hashed.hasher.clone().finalize());
            if let Some(e) = expect {
                check_expected(&got, e)?;
            }
            let dest = self.path(&got);
            match std::fs::rename(&tmp, &dest) {
                Ok(()) => {}
                // Unpacked meanwhile by someone else: theirs is the same content.
                Err(e) if dest.is_dir() => {
                    tracing::debug!(%e, "layer appeared while unpacking");
                    remove_tree(&tmp);
                }
                Err(e) => return Err(RuntimeError::io("store the layer")(e)),
            }
            sync_dir(&self.root);
            Ok(got)
        });
        if result.is_err() {
            remove_tree(&tmp);
        }
        result
    }

    fn unpack_into<R: Read>(&self, tmp: &Path, stream: &mut Hashing<R>) -> Result<()> {
        // 0755 unless the archive has an entry for `./`.
        std::fs::set_permissions(tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(RuntimeError::io("create a layer directory"))?;
        let root = rustix::fs::open(
            tmp,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RuntimeError::io("open a layer directory")(e.into()))?;
        let mut ex = Extractor {
            root,
            parent: None,
            dirs: Vec::new(),
            entries: 0,
            bytes: 0,
            buf: vec![0; COPY_BUFFER],
        };
        let mut archive = tar::Archive::new(&mut *stream);
        ex.run(&mut archive)?;
        ex.finish_dirs()?;
        // Hash the rest (end-of-archive blocks, padding) too: it is part of the diff_id.
        let rest = archive.into_inner();
        let n = io::copy(&mut rest.take(MAX_TRAILING_BYTES + 1), &mut io::sink())
            .map_err(read_error)?;
        if n > MAX_TRAILING_BYTES {
            return Err(bad_layer("unexpected data after the end of the archive"));
        }
        let fd = open_beneath(
            &ex.root,
            Path::new(""),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .map_err(RuntimeError::io("open a layer directory"))?;
        rustix::fs::syncfs(&fd).map_err(|e| RuntimeError::io("sync a layer")(e.into()))?;
        Ok(())
    }

    fn temp_name(&self, kind: &str) -> PathBuf {
        self.root
            .join(format!("{TMP_PREFIX}{kind}{:016x}", rand::random::<u64>()))
    }

    /// A new locked temp file in the store's root (for downloads), removed by `open` once
    /// no one holds it; the caller removes it when done.
    pub(crate) fn temp_file(&self) -> Result<(PathBuf, std::fs::File)> {
        let p = self.temp_name("blob-");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&p)
            .map_err(RuntimeError::io("create a layer download file"))?;
        if let Err(e) = rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        {
            let _ = std::fs::remove_file(&p);
            return Err(RuntimeError::io("lock a layer download file")(e.into()));
        }
        Ok((p, f))
    }

    /// Removes layer `id` (no error if it is absent).
    pub fn remove(&self, id: &str) -> Result<()> {
        if hex_of(id).is_none() {
            return Err(RuntimeError::InvalidArgument(format!(
                "invalid layer id {id:?}"
            )));
        }
        let p = self.path(id);
        // Renamed out of the way first, so a half-removed layer is never taken as whole.
        let tmp = self.temp_name("rm-");
        match std::fs::rename(&p, &tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(RuntimeError::io("remove a layer")(e)),
        }
        std::fs::remove_dir_all(&tmp).map_err(RuntimeError::io("remove a layer"))
    }

    /// Every layer with its disk usage in bytes (allocated blocks; hard links counted once).
    pub fn list(&self) -> Result<Vec<(String, u64)>> {
        Ok(self
            .ids()?
            .into_iter()
            .map(|id| {
                let bytes = self.size(&id);
                (id, bytes)
            })
            .collect())
    }

    /// Every layer's id, sorted.
    pub fn ids(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let entries =
            std::fs::read_dir(&self.root).map_err(RuntimeError::io("read the layer store"))?;
        for e in entries {
            let e = e.map_err(RuntimeError::io("read the layer store"))?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let id = format!("sha256:{name}");
            if hex_of(&id).is_some() {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Disk usage of layer `id` in bytes (allocated blocks; hard links counted once); 0 if
    /// it is absent.
    pub fn size(&self, id: &str) -> u64 {
        disk_usage(&self.path(id))
    }
}

/// `<hex>` of a well-formed `sha256:<64 lowercase hex>` id.
fn hex_of(id: &str) -> Option<&str> {
    let hex = id.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

fn check_expected(got: &str, expect: &str) -> Result<()> {
    if got == expect {
        Ok(())
    } else {
        Err(RuntimeError::BadImage(format!(
            "layer content does not match its diff_id: expected {expect}, got {got}"
        )))
    }
}

fn bad_layer(why: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::BadImage(format!("invalid layer: {why}"))
}

fn read_error(e: io::Error) -> RuntimeError {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::Other => {
            bad_layer(format!("cannot read the archive: {e}").replace('\n', " "))
        }
        _ => RuntimeError::io("read a layer")(e),
    }
}

/// Opens `p` (a file or directory) and takes an exclusive `flock` on it without waiting.
fn lock(p: &Path) -> io::Result<std::fs::File> {
    let f = std::fs::File::open(p)?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive)?;
    Ok(f)
}

fn remove_tree(p: &Path) {
    if let Err(e) = std::fs::remove_dir_all(p)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %p.display(), %e, "cannot remove a layer temp");
    }
}

fn sync_dir(p: &Path) {
    if let Ok(f) = std::fs::File::open(p) {
        let _ = f.sync_all();
    }
}

fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        total += md.blocks() * 512;
        if md.is_dir()
            && let Ok(rd) = std::fs::read_dir(&p)
        {
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
    total
}

/// Hashes everything read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn resolve_beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

/// `openat2` relative to `dir`, never leaving it; an empty `rel` is `dir` itself.
fn open_beneath(dir: &OwnedFd, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dir, rel, flags | OFlags::CLOEXEC, mode, resolve_beneath()) {
            Err(rustix::io::Errno::AGAIN) if tries < 8 => tries += 1,
            r => return r.map_err(Into::into),
        }
    }
}

fn timestamps(secs: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn show(raw: &[u8]) -> String {
    const SHOWN: usize = 200;
    let cut = &raw[..raw.len().min(SHOWN)];
    let s = format!("{:?}", OsStr::from_bytes(cut));
    if raw.len() > SHOWN {
        format!("{s}…")
    } else {
        s
    }
}

/// Checks an entry path (or hard link target) and returns it relative to the layer, without
/// `.` or empty components. Absolute paths are taken relative to the layer; `..` is refused.
fn relative_path(raw: &[u8]) -> Result<PathBuf> {
    let bad = |why: &str| bad_layer(format!("entry {}: {why}", show(raw)));
    if raw.len() > MAX_PATH_LEN {
        return Err(bad(&format!("path longer than {MAX_PATH_LEN} bytes")));
    }
    if raw.contains(&0) {
        return Err(bad("path contains a NUL byte"));
    }
    let mut out = PathBuf::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(bad("'..' components are not allowed")),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

/// Extension headers seen before the entry they describe.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_link: Option<Vec<u8>>,
    pax_size: Option<u64>,
    pax_mtime: Option<i64>,
    pax_uid: Option<u32>,
    pax_gid: Option<u32>,
    xattrs: Vec<(String, Vec<u8>)>,
    any: bool,
}

fn read_extension<R: Read>(entry: &mut tar::Entry<'_, R>, max: u64, what: &str) -> Result<Vec<u8>> {
    let size = entry.size();
    if size > max {
        return Err(bad_layer(format!(
            "{what} of {size} bytes exceeds the limit of {max} bytes"
        )));
    }
    let mut v = Vec::with_capacity(size as usize);
    entry.read_to_end(&mut v).map_err(read_error)?;
    if v.len() as u64 != size {
        return Err(bad_layer("truncated archive"));
    }
    Ok(v)
}

fn until_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(i) = v.iter().position(|b| *b == 0) {
        v.truncate(i);
    }
    v
}

fn apply_pax(data: &[u8], p: &mut Pending) -> Result<()> {
    let bad = |why: &str| bad_layer(format!("pax header: {why}"));
    let num = |v: &[u8], what: &str| -> Result<u64> {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| bad(&format!("invalid {what}")))
    };
    for rec in paddock_core::pax_records(data) {
        let (key, value) = rec.map_err(|_| bad("malformed record"))?;
        match key {
            b"path" => p.pax_path = Some(value.to_vec()),
            b"linkpath" => p.pax_link = Some(value.to_vec()),
            b"size" => p.pax_size = Some(num(value, "size")?),
            b"uid" => {
                p.pax_uid = Some(u32::try_from(num(value, "uid")?).map_err(|_| bad("invalid uid"))?)
            }
            b"gid" => {
                p.pax_gid = Some(u32::try_from(num(value, "gid")?).map_err(|_| bad("invalid gid"))?)
            }
            k if k.starts_with(PAX_XATTR) => {
                let name = std::str::from_utf8(&k[PAX_XATTR.len()..])
                    .map_err(|_| bad("invalid xattr name"))?;
                if xattr_kept(name) {
                    p.xattrs.push((name.to_string(), value.to_vec()));
                }
            }
            b"mtime" => {
                let s = std::str::from_utf8(value).map_err(|_| bad("invalid mtime"))?;
                let secs = s.split('.').next().unwrap_or("");
                p.pax_mtime = Some(if secs.is_empty() || secs == "-" {
                    0
                } else {
                    secs.parse::<i64>().map_err(|_| bad("invalid mtime"))?
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Attributes of a directory, applied after everything inside it is written.
struct DirAttrs {
    rel: PathBuf,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

/// Owner, mode and mtime of one entry.
#[derive(Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

struct Extractor {
    /// `O_PATH` descriptor of the layer directory; everything is created beneath it.
    root: OwnedFd,
    /// The last parent directory used, since archives list siblings together.
    parent: Option<(PathBuf, Rc<OwnedFd>)>,
    dirs: Vec<DirAttrs>,
    entries: u64,
    bytes: u64,
    buf: Vec<u8>,
}

impl Extractor {
    fn fs_error(&self, e: io::Error, rel: &Path) -> RuntimeError {
        let shown = show(rel.as_os_str().as_bytes());
        match e.raw_os_error() {
            Some(libc::EXDEV | libc::ELOOP) => bad_layer(format!(
                "entry {shown}: resolves outside the layer (through a symlink)"
            )),
            Some(libc::ENOTDIR) => bad_layer(format!("entry {shown}: a parent is not a directory")),
            _ => RuntimeError::io(format!("unpack entry {shown}"))(e),
        }
    }

    fn run<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<()> {
        let mut pending = Pending::default();
        let entries = archive.entries().map_err(read_error)?.raw(true);
        for entry in entries {
            let mut entry = entry.map_err(read_error)?;
            let kind = entry.header().entry_type().as_byte();
            match kind {
                b'L' => {
                    if pending.long_name.is_some() {
                        return Err(bad_layer("two long names for one entry"));
                    }
                    let v = read_extension(&mut entry, MAX_PATH_LEN as u64 + 1, "long name")?;
                    pending.long_name = Some(until_nul(v));
                    pending.any = true;
                }
                b'K' => {
                    if pending.long_link.is_some() {
                        return Err(bad_layer("two long link names for one entry"));
                    }
                    let v = read_extension(&mut entry, MAX_PATH_LEN as u64 + 1, "long link")?;
                    pending.long_link = Some(until_nul(v));
                    pending.any = true;
                }
                b'x' => {
                    let v = read_extension(&mut entry, MAX_PAX_BYTES, "pax header")?;
                    apply_pax(&v, &mut pending)?;
                    pending.any = true;
                }
                b'g' => {
                    read_extension(&mut entry, MAX_PAX_BYTES, "pax global header")?;
                }
                _ => {
                    let p = std::mem::take(&mut pending);
                    self.entry(&mut entry, kind, p)?;
                }
            }
        }
        if pending.any {
            return Err(bad_layer("extension header without an entry after it"));
        }
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: u8,
        p: Pending,
    ) -> Result<()> {
        if self.entries >= MAX_ENTRIES {
            return Err(bad_layer(format!("more than {MAX_ENTRIES} entries")));
        }
        self.entries += 1;
        let header = entry.header();
        let raw_path: Vec<u8> = p
            .pax_path
            .or(p.long_name)
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let raw_link: Option<Vec<u8>> = p
            .pax_link
            .or(p.long_link)
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        let bad = |why: &str| bad_layer(format!("entry {}: {why}", show(&raw_path)));
        let invalid = |e: io::Error| {
            bad(&format!(
                "invalid header: {}",
                e.to_string().replace('\n', " ")
            ))
        };
        if let Some(size) = p.pax_size
            && size != entry.size()
        {
            return Err(bad("pax size override is not supported"));
        }
        let uid = match p.pax_uid {
            Some(u) => u,
            None => u32::try_from(header.uid().map_err(invalid)?)
                .map_err(|_| bad("uid out of range"))?,
        };
        let gid = match p.pax_gid {
            Some(g) => g,
            None => u32::try_from(header.gid().map_err(invalid)?)
                .map_err(|_| bad("gid out of range"))?,
        };
        let meta = Meta {
            mode: header.mode().map_err(invalid)? & 0o7777,
            uid,
            gid,
            mtime: match p.pax_mtime {
                Some(t) => t,
                None => i64::try_from(header.mtime().map_err(invalid)?).unwrap_or(i64::MAX),
            },
        };
        let rel = relative_path(&raw_path)?;
        let name = rel.file_name().map(|n| n.as_bytes()).unwrap_or_default();

        // Whiteouts first: their entry type does not matter.
        if name == OPAQUE {
            return self.opaque(rel.parent().unwrap_or(Path::new("")));
        }
        if name.starts_with(WHITEOUT_META_PREFIX) {
            return Ok(()); // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): skipped.
        }
        if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
            if target.is_empty() {
                return Err(bad("empty whiteout name"));
            }
            let target_rel = rel.with_file_name(OsStr::from_bytes(target));
            return self.whiteout(&target_rel);
        }

        let is_dir_name = raw_path.ends_with(b"/");
        match kind {
            b'5' => self.dir(&rel, meta, &p.xattrs),
            b'0' | 0 if is_dir_name => self.dir(&rel, meta, &p.xattrs),
            b'0' | 0 | b'7' => self.file(&rel, &raw_path, entry, meta, &p.xattrs),
            b'2' => {
                let target = raw_link.ok_or_else(|| bad("symlink without a target"))?;
                self.symlink(&rel, &raw_path, &target, meta)
            }
            b'1' => {
                let target = raw_link.ok_or_else(|| bad("hard link without a target"))?;
                self.hardlink(&rel, &raw_path, &target)
            }
            b'3' | b'4' => Err(bad("device nodes are not allowed")),
            b'6' => Err(bad("FIFOs are not allowed")),
            b'S' => Err(bad("GNU sparse files are not supported")),
            other => Err(bad(&format!(
                "unsupported entry type {:?}",
                char::from(other)
            ))),
        }
    }

    /// Opens directory `rel` beneath the root, creating it and its missing parents (0o755).
    fn ensure_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        let open = |p: &Path| {
            open_beneath(
                &self.root,
                p,
                OFlags::PATH | OFlags::DIRECTORY,
                Mode::empty(),
            )
        };
        let is_enoent = |e: &io::Error| e.raw_os_error() == Some(libc::ENOENT);
        match open(rel) {
            Err(e) if is_enoent(&e) => {}
            r => return r,
        }
        let comps: Vec<&OsStr> = rel.iter().collect();
        let mut k = comps.len().saturating_sub(1);
        let mut fd = loop {
            let prefix: PathBuf = comps[..k].iter().collect();
            match open(&prefix) {
                Err(e) if is_enoent(&e) && k > 0 => k -= 1,
                r => break r?,
            }
        };
        for i in k..comps.len() {
            let name = comps[i];
            fd = match rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(0o755)) {
                Ok(()) => {
                    let d = open_beneath(
                        &fd,
                        Path::new(name),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                        Mode::empty(),
                    )?;
                    rustix::fs::fchmod(&d, Mode::from_raw_mode(0o755))?;
                    d
                }
                Err(rustix::io::Errno::EXIST) => open(&comps[..=i].iter().collect::<PathBuf>())?,
                Err(e) => return Err(e.into()),
            };
        }
        Ok(fd)
    }

    fn parent_of<'a>(&mut self, rel: &'a Path) -> io::Result<(Rc<OwnedFd>, &'a OsStr)> {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        if let Some((p, fd)) = &self.parent
            && p == parent
        {
            return Ok((fd.clone(), name));
        }
        let fd = Rc::new(self.ensure_dir(parent)?);
        self.parent = Some((parent.to_path_buf(), fd.clone()));
        Ok((fd, name))
    }

    /// Makes room for `name` in `parent`: removes whatever is there (a directory with its
    /// contents, since a later entry replaces an earlier one in the same layer).
    fn clear(&mut self, parent: &OwnedFd, name: &OsStr) -> io::Result<()> {
        self.parent = None;
        let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let dir = open_beneath(
                parent,
                Path::new(name),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                Mode::empty(),
            )?;
            clear_dir(&dir)?;
            rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
        } else {
            match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn whiteout(&mut self, rel: &Path) -> Result<()> {
        let (parent, name) = self.parent_of(rel).map_err(|e| self.fs_error(e, rel))?;
        let mk = || {
            rustix::fs::mknodat(
                &*parent,
                name,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
        };
        let made = match mk() {
            Err(rustix::io::Errno::EXIST) => self
                .clear(&parent, name)
                .and_then(|()| mk().map_err(Into::into)),
            r => r.map_err(Into::into),
        };
        made.map_err(|e| self.fs_error(e, rel))
    }

    fn opaque(&mut self, dir: &Path) -> Result<()> {
        let fd = self.ensure_dir(dir).map_err(|e| self.fs_error(e, dir))?;
        // xattrs need a real descriptor, not O_PATH.
        let fd = open_beneath(
            &fd,
            Path::new(""),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .map_err(|e| self.fs_error(e, dir))?;
        rustix::fs::fsetxattr(
            &fd,
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(|e| self.fs_error(e.into(), dir))
    }

    fn dir(&mut self, rel: &Path, meta: Meta, xattrs: &[(String, Vec<u8>)]) -> Result<()> {
        if !rel.as_os_str().is_empty() {
            let (parent, name) = self.parent_of(rel).map_err(|e| self.fs_error(e, rel))?;
            let made = match rustix::fs::mkdirat(&*parent, name, Mode::from_raw_mode(0o700)) {
                Err(rustix::io::Errno::EXIST) => {
                    let st = rustix::fs::statat(&*parent, name, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| self.fs_error(e.into(), rel))?;
                    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                        Ok(())
                    } else {
                        self.clear(&parent, name).and_then(|()| {
                            rustix::fs::mkdirat(&*parent, name, Mode::from_raw_mode(0o700))
                                .map_err(Into::into)
                        })
                    }
                }
                r => r.map_err(Into::into),
            };
            made.map_err(|e| self.fs_error(e, rel))?;
        }
        if !xattrs.is_empty() {
            let fd = open_beneath(
                &self.root,
                rel,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                Mode::empty(),
            )
            .map_err(|e| self.fs_error(e, rel))?;
            set_xattrs(&fd, xattrs).map_err(|e| self.fs_error(e, rel))?;
        }
        self.dirs.push(DirAttrs {
            rel: rel.to_path_buf(),
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
        });
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        rel: &Path,
        raw: &[u8],
        entry: &mut tar::Entry<'_, R>,
        meta: Meta,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<()> {
        if rel.as_os_str().is_empty() {
            return Err(bad_layer(format!(
                "entry {}: not a valid file name",
                show(raw)
            )));
        }
        let (parent, name) = self.parent_of(rel).map_err(|e| self.fs_error(e, rel))?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::NOCTTY;
        let create = || open_beneath(&parent, Path::new(name), flags, Mode::from_raw_mode(0o600));
        let fd = match create() {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.clear(&parent, name).and_then(|()| create())
            }
            r => r,
        }
        .map_err(|e| self.fs_error(e, rel))?;
        let mut file = std::fs::File::from(fd);
        let n = self.copy(entry, &mut file, rel)?;
        if n != entry.size() {
            return Err(bad_layer(format!(
                "entry {}: archive ends inside the entry's data",
                show(raw)
            )));
        }
        // Owner before mode and capabilities: chown clears setuid, setgid and file caps.
        rustix::fs::fchown(
            &file,
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
        )
        .and_then(|()| rustix::fs::fchmod(&file, Mode::from_raw_mode(meta.mode)))
        .map_err(io::Error::from)
        .and_then(|()| set_xattrs(&file, xattrs))
        .and_then(|()| rustix::fs::futimens(&file, &timestamps(meta.mtime)).map_err(Into::into))
        .map_err(|e| self.fs_error(e, rel))
    }

    fn copy<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        out: &mut std::fs::File,
        rel: &Path,
    ) -> Result<u64> {
        use std::io::Write;
        let mut n: u64 = 0;
        loop {
            let got = match entry.read(&mut self.buf) {
                Ok(0) => return Ok(n),
                Ok(g) => g,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(e)),
            };
            if self.bytes + got as u64 > MAX_TOTAL_BYTES {
                return Err(bad_layer(format!(
                    "contents exceed {MAX_TOTAL_BYTES} bytes"
                )));
            }
            out.write_all(&self.buf[..got])
                .map_err(|e| self.fs_error(e, rel))?;
            self.bytes += got as u64;
            n += got as u64;
        }
    }

    fn symlink(&mut self, rel: &Path, raw: &[u8], target: &[u8], meta: Meta) -> Result<()> {
        let bad = |why: &str| bad_layer(format!("entry {}: {why}", show(raw)));
        if rel.as_os_str().is_empty() {
            return Err(bad("not a valid symlink name"));
        }
        if target.is_empty() || target.len() > MAX_PATH_LEN || target.contains(&0) {
            return Err(bad("invalid symlink target"));
        }
        // The target is stored as it is: it is resolved inside the sandbox's root, never
        // by the host (nothing here follows a symlink).
        let target = OsStr::from_bytes(target);
        let (parent, name) = self.parent_of(rel).map_err(|e| self.fs_error(e, rel))?;
        let made = match rustix::fs::symlinkat(target, &*parent, name) {
            Err(rustix::io::Errno::EXIST) => self
                .clear(&parent, name)
                .and_then(|()| rustix::fs::symlinkat(target, &*parent, name).map_err(Into::into)),
            r => r.map_err(Into::into),
        };
        made.map_err(|e| self.fs_error(e, rel))?;
        rustix::fs::chownat(
            &*parent,
            name,
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .and_then(|()| {
            rustix::fs::utimensat(
                &*parent,
                name,
                &timestamps(meta.mtime),
                AtFlags::SYMLINK_NOFOLLOW,
            )
        })
        .map_err(|e| self.fs_error(e.into(), rel))
    }

    fn hardlink(&mut self, rel: &Path, raw: &[u8], target: &[u8]) -> Result<()> {
        let bad = |why: &str| bad_layer(format!("entry {}: {why}", show(raw)));
        let target_rel = relative_path(target)?;
        if rel.as_os_str().is_empty() || target_rel.as_os_str().is_empty() {
            return Err(bad("not a valid hard link"));
        }
        if target_rel == rel {
            return Ok(());
        }
        let (Some(tparent), Some(tname)) = (target_rel.parent(), target_rel.file_name()) else {
            return Err(bad("not a valid hard link"));
        };
        let tdir = open_beneath(
            &self.root,
            tparent,
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => {
                bad("hard link target does not exist in the layer")
            }
            _ => self.fs_error(e, &target_rel),
        })?;
        let (parent, name) = self.parent_of(rel).map_err(|e| self.fs_error(e, rel))?;
        // Directory descriptor plus one name on both ends, no AT_SYMLINK_FOLLOW: a symlink
        // target is linked as the symlink itself, never followed.
        let link = || rustix::fs::linkat(&tdir, tname, &*parent, name, AtFlags::empty());
        let made = match link() {
            Err(rustix::io::Errno::EXIST) => self
                .clear(&parent, name)
                .and_then(|()| link().map_err(Into::into)),
            r => r.map_err(Into::into),
        };
        made.map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => bad("hard link target does not exist in the layer"),
            Some(libc::EPERM) => bad("hard link target is a directory"),
            _ => self.fs_error(e, rel),
        })
    }

    /// Applies directory owners, modes and mtimes, deepest first.
    fn finish_dirs(&mut self) -> Result<()> {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by(|a, b| b.rel.as_os_str().cmp(a.rel.as_os_str()));
        for d in dirs {
            let fd = match open_beneath(
                &self.root,
                &d.rel,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                // Replaced by a later entry (a file or symlink of the same name).
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOTDIR | libc::ENOENT | libc::ELOOP)
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(self.fs_error(e, &d.rel)),
            };
            rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::from_raw(d.uid)),
                Some(rustix::fs::Gid::from_raw(d.gid)),
            )
            .and_then(|()| rustix::fs::fchmod(&fd, Mode::from_raw_mode(d.mode)))
            .and_then(|()| rustix::fs::futimens(&fd, &timestamps(d.mtime)))
            .map_err(|e| self.fs_error(e.into(), &d.rel))?;
        }
        Ok(())
    }
}

fn set_xattrs(fd: impl std::os::fd::AsFd, xattrs: &[(String, Vec<u8>)]) -> io::Result<()> {
    for (name, value) in xattrs {
        rustix::fs::fsetxattr(&fd, name.as_str(), value, rustix::fs::XattrFlags::empty())?;
    }
    Ok(())
}

/// Removes everything inside `dir` without following symlinks.
fn clear_dir(dir: &OwnedFd) -> io::Result<()> {
    let mut names = Vec::new();
    let d = rustix::fs::Dir::read_from(dir)?;
    for e in d {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push((n.to_vec(), e.file_type()));
        }
    }
    for (n, t) in names {
        let name = OsStr::from_bytes(&n);
        if t == FileType::Directory {
            let sub = open_beneath(
                dir,
                Path::new(name),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                Mode::empty(),
            )?;
            clear_dir(&sub)?;
            rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
        } else {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    fn header(path: &[u8], kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        // Written raw, so `..` and absolute names reach the extractor as they are.
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path);
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        h
    }

    fn add(
        b: &mut tar::Builder<Vec<u8>>,
        path: &str,
        kind: tar::EntryType,
        data: &[u8],
        mode: u32,
    ) {
        let h = header(path.as_bytes(), kind, data.len() as u64, mode);
        b.append(&h, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, target: &str) {
        let mut h = header(path.as_bytes(), kind, 0, 0o777);
        h.set_link_name(target).unwrap();
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }

    fn sha(data: &[u8]) -> String {
        format!("sha256:{:x}", Sha256::digest(data))
    }

    fn store() -> (tempfile::TempDir, LayerStore) {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let s = LayerStore::open(d.path().join("layers")).unwrap();
        (d, s)
    }

    fn leftovers(s: &LayerStore) -> Vec<String> {
        std::fs::read_dir(s.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn unpacks_with_whiteouts_owners_modes_links() {
        let (_d, s) = store();
        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, "etc/", tar::EntryType::Directory, b"", 0o751);
        add(
            &mut b,
            "etc/passwd",
            tar::EntryType::Regular,
            b"root:x:0:0\n",
            0o644,
        );
        add(&mut b, "bin/su", tar::EntryType::Regular, b"#!", 0o4755);
        link(&mut b, "etc/hard", tar::EntryType::Link, "etc/passwd");
        link(&mut b, "etc/sym", tar::EntryType::Symlink, "/etc/passwd");
        add(&mut b, "var/.wh.gone", tar::EntryType::Regular, b"", 0o644);
        add(
            &mut b,
            "opt/.wh..wh..opq",
            tar::EntryType::Regular,
            b"",
            0o644,
        );
        add(&mut b, "/abs/file", tar::EntryType::Regular, b"abs", 0o600);
        let data = b.into_inner().unwrap();
        let id = s.unpack(&data[..], Some(&sha(&data))).unwrap();
        assert_eq!(id, sha(&data));
        let l = s.path(&id);
        assert!(s.contains(&id));
        let md = std::fs::metadata(l.join("etc")).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o751);
        assert_eq!((md.uid(), md.gid()), (1234, 5678));
        let su = std::fs::metadata(l.join("bin/su")).unwrap();
        assert_eq!(su.permissions().mode() & 0o7777, 0o4755);
        assert_eq!(su.mtime(), 1_600_000_000);
        assert_eq!(
            std::fs::metadata(l.join("etc/hard")).unwrap().ino(),
            std::fs::metadata(l.join("etc/passwd")).unwrap().ino()
        );
        assert_eq!(
            std::fs::read_link(l.join("etc/sym")).unwrap(),
            Path::new("/etc/passwd")
        );
        let wh = std::fs::symlink_metadata(l.join("var/gone")).unwrap();
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        assert!(!l.join("var/.wh.gone").exists());
        let opq = rustix::fs::getxattr(l.join("opt"), "trusted.overlay.opaque", &mut [0u8; 8][..])
            .unwrap();
        assert_eq!(opq, 1);
        assert!(!l.join("opt/.wh..wh..opq").exists());
        assert_eq!(std::fs::read(l.join("abs/file")).unwrap(), b"abs");
        assert_eq!(
            leftovers(&s),
            vec![id.strip_prefix("sha256:").unwrap().to_string()]
        );
        // Again: verified, reused.
        assert_eq!(s.unpack(&data[..], Some(&id)).unwrap(), id);
        let listed = s.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].1 > 0);
        s.remove(&id).unwrap();
        assert!(!s.contains(&id));
        assert!(leftovers(&s).is_empty());
    }

    #[test]
    fn pax_xattrs_kept_and_overlay_ones_dropped() {
        let (_d, s) = store();
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("SCHILY.xattr.user.note", &b"hello"[..]),
            ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
            ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
        ])
        .unwrap();
        add(&mut b, "d/", tar::EntryType::Directory, b"", 0o755);
        b.append_pax_extensions([("SCHILY.xattr.user.f", &b"1"[..])])
            .unwrap();
        add(&mut b, "d/f", tar::EntryType::Regular, b"x", 0o644);
        let data = b.into_inner().unwrap();
        let id = s.unpack(&data[..], None).unwrap();
        let l = s.path(&id);
        let mut v = [0u8; 16];
        let n = rustix::fs::getxattr(l.join("d"), "user.note", &mut v[..]).unwrap();
        assert_eq!(&v[..n], b"hello");
        assert!(rustix::fs::getxattr(l.join("d"), "trusted.overlay.opaque", &mut v[..]).is_err());
        assert!(rustix::fs::getxattr(l.join("d"), "trusted.overlay.redirect", &mut v[..]).is_err());
        let n = rustix::fs::getxattr(l.join("d/f"), "user.f", &mut v[..]).unwrap();
        assert_eq!(&v[..n], b"1");
    }

    /// Pax records are framed by their length, not by newlines: a value holding newline
    /// bytes (a binary xattr, a file name) is read whole. The `tar` crate's own pax parser
    /// refused these layers.
    #[test]
    fn pax_values_with_newlines() {
        let (_d, s) = store();
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("SCHILY.xattr.user.bin", &b"a\nb\n\x00c"[..]),
            ("path", &b"dir/new\nline"[..]),
        ])
        .unwrap();
        add(&mut b, "placeholder", tar::EntryType::Regular, b"x", 0o644);
        let data = b.into_inner().unwrap();
        let id = s.unpack(&data[..], None).unwrap();
        let f = s.path(&id).join("dir/new\nline");
        assert_eq!(std::fs::read(&f).unwrap(), b"x");
        let mut v = [0u8; 16];
        let n = rustix::fs::getxattr(&f, "user.bin", &mut v[..]).unwrap();
        assert_eq!(&v[..n], b"a\nb\n\x00c");
    }

    #[test]
    fn open_removes_only_unlocked_temps() {
        let (_d, s) = store();
        let stale = s.root().join(".tmp-stale");
        std::fs::create_dir_all(stale.join("a/b")).unwrap();
        let busy = s.root().join(".tmp-busy");
        std::fs::create_dir(&busy).unwrap();
        let _held = lock(&busy).unwrap();
        let (blob, _f) = s.temp_file().unwrap();
        let s = LayerStore::open(s.root()).unwrap();
        assert!(!stale.exists());
        assert!(busy.exists());
        assert!(blob.exists());
        drop(_held);
        drop(_f);
        // Another test thread spawning a process copies this process's descriptors into
        // the child until it execs, and a flock belongs to the open file, so the child can
        // hold the released lock for a moment. `open` then rightly leaves the temp for a
        // later open; retry, bounded, until the lock is really free.
        for _ in 0..100 {
            LayerStore::open(s.root()).unwrap();
            if !busy.exists() && !blob.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!busy.exists());
        assert!(!blob.exists());
    }

    #[test]
    fn wrong_diff_id_leaves_nothing() {
        let (_d, s) = store();
        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, "a", tar::EntryType::Regular, b"a", 0o644);
        let data = b.into_inner().unwrap();
        let wrong = sha(b"other");
        let e = s.unpack(&data[..], Some(&wrong)).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        assert!(leftovers(&s).is_empty(), "{:?}", leftovers(&s));
    }

    #[test]
    fn refuses_escapes_and_devices() {
        let (d, s) = store();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();

        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, "../x", tar::EntryType::Regular, b"x", 0o644);
        let e = s.unpack(&b.into_inner().unwrap()[..], None).unwrap_err();
        assert!(e.to_string().contains("'..'"), "{e}");

        let mut b = tar::Builder::new(Vec::new());
        link(
            &mut b,
            "out",
            tar::EntryType::Symlink,
            outside.to_str().unwrap(),
        );
        add(&mut b, "out/pwned", tar::EntryType::Regular, b"x", 0o644);
        let e = s.unpack(&b.into_inner().unwrap()[..], None).unwrap_err();
        assert!(e.to_string().contains("outside the layer"), "{e}");
        assert!(!outside.join("pwned").exists());

        let mut b = tar::Builder::new(Vec::new());
        link(&mut b, "up", tar::EntryType::Symlink, "../../outside");
        add(&mut b, "up/pwned2", tar::EntryType::Regular, b"x", 0o644);
        assert!(s.unpack(&b.into_inner().unwrap()[..], None).is_err());
        assert!(!outside.join("pwned2").exists());

        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, "dev/null", tar::EntryType::Char, b"", 0o666);
        let e = s.unpack(&b.into_inner().unwrap()[..], None).unwrap_err();
        assert!(e.to_string().contains("device nodes"), "{e}");

        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, "fifo", tar::EntryType::Fifo, b"", 0o666);
        assert!(s.unpack(&b.into_inner().unwrap()[..], None).is_err());

        let mut b = tar::Builder::new(Vec::new());
        link(&mut b, "h", tar::EntryType::Link, "../../etc/passwd");
        assert!(s.unpack(&b.into_inner().unwrap()[..], None).is_err());

        assert!(leftovers(&s).is_empty(), "{:?}", leftovers(&s));
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn truncated_stream_is_refused() {
        let (_d, s) = store();
        let mut b = tar::Builder::new(Vec::new());
        add(
            &mut b,
            "big",
            tar::EntryType::Regular,
            &[7u8; 10_000],
            0o644,
        );
        let data = b.into_inner().unwrap();
        assert!(s.unpack(&data[..5000], None).is_err());
        assert!(leftovers(&s).is_empty());
    }
}
