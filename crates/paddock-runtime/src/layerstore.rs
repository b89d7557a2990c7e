//! Content-addressed store of unpacked image layers, in overlayfs *lower-layer* format.
//!
//! Layout: `root/<hex>` is the layer whose uncompressed tar stream (its OCI `diff_id`) has
//! SHA-256 `<hex>`; its id is `sha256:<hex>`. A layer is unpacked into `root/.tmp-<random>`,
//! synced to disk and renamed into place, so a layer directory is either complete or absent;
//! [`LayerStore::open`] removes the `.tmp-*` leftovers of a crash.
//!
//! Unpacking is the `paddock-untar` crate under `Policy::Layer` (the agent's archive upload
//! runs the same code under `Policy::Upload`):
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
//!   [`MAX_PAX_BYTES`] per extension header, 16 MiB after the end-of-archive marker.
//! - The stream is hashed as it is read, to its very end (the end-of-archive blocks are part
//!   of the `diff_id`); if it differs from the expected id nothing is kept.

use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use paddock_untar::Policy;
use rustix::fs::{Mode, OFlags};
use sha2::{Digest, Sha256};

use crate::error::{Result, RuntimeError};

pub use paddock_untar::{MAX_ENTRIES, MAX_PATH_LEN, MAX_PAX_BYTES};
/// At most this many bytes of file data in one layer (64 GiB).
pub const MAX_TOTAL_BYTES: u64 = paddock_untar::LAYER_MAX_TOTAL_BYTES;
const TMP_PREFIX: &str = ".tmp-";
/// The directory of transfer digests, `<root>/.digests/<hex>` (not a layer: ids are hex).
const DIGESTS: &str = ".digests";

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
    /// If the layer exists already, the stream is only verified. A new layer's transfer
    /// digest is recorded ([`LayerStore::transfer_digest`]).
    pub fn unpack(&self, tar: impl Read, expect: Option<&str>) -> Result<String> {
        if let Some(e) = expect
            && hex_of(e).is_none()
        {
            return Err(RuntimeError::BadImage {
                reason: format!("invalid layer id {e:?}"),
            });
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
        let (id, new) = self.unpack_checked(&mut hashed, |got| {
            if let Some(e) = expect {
                check_expected(&got, e)?;
            }
            Ok(got)
        })?;
        if new {
            self.record_digest(&id)?;
        }
        Ok(id)
    }

    /// Imports layer `id` from its canonical stream ([`crate::layerexport`]), as copied from
    /// a peer node: the stream's SHA-256 must be `digest`, else nothing is kept (the error
    /// names both). A layer already in the store is left as it is (the stream is not read).
    pub fn import(&self, id: &str, digest: &str, tar: impl Read) -> Result<()> {
        if hex_of(id).is_none() || !crate::layerexport::valid_digest(digest) {
            return Err(RuntimeError::BadImage {
                reason: format!("invalid layer id {id:?} or digest {digest:?}"),
            });
        }
        if self.contains(id) {
            return Ok(());
        }
        let mut hashed = Hashing {
            inner: tar,
            hasher: Sha256::new(),
        };
        let (_, new) = self.unpack_checked(&mut hashed, |got| {
            if got != digest {
                return Err(RuntimeError::BadImage {
                    reason: format!(
                        "layer {id} does not match its digest: expected {digest}, got {got}"
                    ),
                });
            }
            Ok(id.to_owned())
        })?;
        if new {
            self.write_digest(id, digest)?;
        }
        Ok(())
    }

    /// Unpacks `stream` into a temp directory and, once `finish` accepts the stream's
    /// SHA-256 by naming the layer id, renames it into place. Returns the id and whether
    /// this call stored it (false: it appeared meanwhile). Nothing is kept on error.
    fn unpack_checked<R: Read>(
        &self,
        hashed: &mut Hashing<R>,
        finish: impl FnOnce(String) -> Result<String>,
    ) -> Result<(String, bool)> {
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
        let result = self.unpack_into(&tmp, hashed).and_then(|()| {
            let got = format!("sha256:{:x}", hashed.hasher.clone().finalize());
            let id = finish(got)?;
            let dest = self.path(&id);
            let new = match std::fs::rename(&tmp, &dest) {
                Ok(()) => true,
                // Unpacked meanwhile by someone else: theirs is the same content.
                Err(e) if dest.is_dir() => {
                    tracing::debug!(%e, "layer appeared while unpacking");
                    remove_tree(&tmp);
                    false
                }
                Err(e) => return Err(RuntimeError::io("store the layer")(e)),
            };
            sync_dir(&self.root);
            Ok((id, new))
        });
        if result.is_err() {
            remove_tree(&tmp);
        }
        result
    }

    /// Where the transfer digest of layer `id` is kept.
    fn digest_path(&self, id: &str) -> PathBuf {
        self.root
            .join(DIGESTS)
            .join(hex_of(id).unwrap_or(".invalid"))
    }

    fn write_digest(&self, id: &str, digest: &str) -> Result<()> {
        let p = self.digest_path(id);
        let dir = self.root.join(DIGESTS);
        std::fs::create_dir_all(&dir).map_err(RuntimeError::io("record a layer digest"))?;
        let tmp = dir.join(format!("{TMP_PREFIX}{:016x}", rand::random::<u64>()));
        std::fs::write(&tmp, format!("{digest}\n"))
            .and_then(|()| std::fs::rename(&tmp, &p))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                RuntimeError::io("record a layer digest")(e)
            })
    }

    /// Computes and records the transfer digest of layer `id` (made just now: pulled,
    /// built or imported) and returns it.
    pub fn record_digest(&self, id: &str) -> Result<String> {
        let d = crate::layerexport::digest(&self.path(id))?;
        self.write_digest(id, &d)?;
        Ok(d)
    }

    /// The transfer digest of layer `id` ([`crate::layerexport`]): the one recorded when it
    /// was made, or, for a layer made before digests were recorded, computed now and
    /// recorded.
    pub fn transfer_digest(&self, id: &str) -> Result<String> {
        if !self.contains(id) {
            return Err(RuntimeError::InvalidArgument {
                what: "layer id",
                reason: format!("layer {id} is not in the store"),
            });
        }
        if let Ok(s) = std::fs::read_to_string(self.digest_path(id))
            && crate::layerexport::valid_digest(s.trim())
        {
            return Ok(s.trim().to_owned());
        }
        self.record_digest(id)
    }

    /// Drops the recorded transfer digest of layer `id` (its directory was removed).
    pub(crate) fn forget_digest(&self, id: &str) {
        let _ = std::fs::remove_file(self.digest_path(id));
    }

    /// Writes the canonical stream of layer `id` to `out` ([`crate::layerexport`]).
    pub fn export(&self, id: &str, out: impl io::Write) -> Result<()> {
        if !self.contains(id) {
            return Err(RuntimeError::InvalidArgument {
                what: "layer id",
                reason: format!("layer {id} is not in the store"),
            });
        }
        crate::layerexport::write_canonical(&self.path(id), out)
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
        // A second descriptor of the layer, for the sync once it is complete.
        let sync_root = root
            .try_clone()
            .map_err(RuntimeError::io("open a layer directory"))?;
        // The rest of the stream (end-of-archive blocks, padding) is read too: it is part of
        // the diff_id.
        paddock_untar::extract(root, &mut *stream, Policy::Layer)
            .result
            .map_err(untar_error)?;
        let fd = paddock_untar::open_beneath(
            &sync_root,
            Path::new(""),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
            paddock_untar::resolve_beneath(),
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
            return Err(RuntimeError::InvalidArgument {
                what: "layer id",
                reason: format!("invalid layer id {id:?}"),
            });
        }
        let p = self.path(id);
        // Renamed out of the way first, so a half-removed layer is never taken as whole.
        let tmp = self.temp_name("rm-");
        match std::fs::rename(&p, &tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(RuntimeError::io("remove a layer")(e)),
        }
        let _ = std::fs::remove_file(self.digest_path(id));
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
        Err(RuntimeError::BadImage {
            reason: format!(
                "layer content does not match its diff_id: expected {expect}, got {got}"
            ),
        })
    }
}

fn bad_layer(why: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::BadImage {
        reason: format!("invalid layer: {why}"),
    }
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

/// Maps an extraction error: whatever the archive is to blame for is a bad layer.
fn untar_error(e: paddock_untar::Error) -> RuntimeError {
    use paddock_untar::Error as E;
    match e {
        E::Malformed(m) | E::Refused(m) | E::Limit(m) => bad_layer(m),
        E::Read(e) => read_error(e),
        E::Fs { path, source } => {
            let shown = paddock_untar::show(path.as_os_str().as_bytes());
            if source.raw_os_error() == Some(libc::ENOTDIR) {
                bad_layer(format!("entry {shown}: a parent is not a directory"))
            } else {
                RuntimeError::io(format!("unpack entry {shown}"))(source)
            }
        }
    }
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
        let mut v: Vec<String> = std::fs::read_dir(s.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != DIGESTS)
            .collect();
        // Digests of layers that are gone, and temps of digests.
        if let Ok(rd) = std::fs::read_dir(s.root().join(DIGESTS)) {
            for e in rd {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                if !s.root().join(&n).is_dir() {
                    v.push(format!("{DIGESTS}/{n}"));
                }
            }
        }
        v.sort();
        v
    }

    /// A layer copied to another store through its canonical stream arrives whole (owners,
    /// modes, setuid, whiteouts, opaque dirs, hard links, symlinks, `user.*` xattrs) and
    /// streams to the same digest there; a stream that does not match its digest leaves
    /// nothing.
    #[test]
    fn export_import_round_trip_and_corruption() {
        let (_d, s) = store();
        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, "etc/", tar::EntryType::Directory, b"", 0o751);
        add(&mut b, "bin/su", tar::EntryType::Regular, b"#!", 0o4755);
        link(&mut b, "bin/su2", tar::EntryType::Link, "bin/su");
        link(&mut b, "bin/sh", tar::EntryType::Symlink, "/usr/bin/dash");
        add(&mut b, "var/.wh.gone", tar::EntryType::Regular, b"", 0o644);
        add(
            &mut b,
            "opt/.wh..wh..opq",
            tar::EntryType::Regular,
            b"",
            0o644,
        );
        b.append_pax_extensions([("SCHILY.xattr.user.note", &b"hi"[..])])
            .unwrap();
        add(
            &mut b,
            "opt/f",
            tar::EntryType::Regular,
            &[5u8; 3000],
            0o600,
        );
        let data = b.into_inner().unwrap();
        let id = s.unpack(&data[..], Some(&sha(&data))).unwrap();
        let digest = s.transfer_digest(&id).unwrap();
        assert_eq!(crate::layerexport::digest(&s.path(&id)).unwrap(), digest);
        let mut stream = Vec::new();
        s.export(&id, &mut stream).unwrap();
        assert_eq!(sha(&stream), digest);

        let (_d2, t) = store();
        t.import(&id, &digest, &stream[..]).unwrap();
        let l = t.path(&id);
        let su = std::fs::metadata(l.join("bin/su")).unwrap();
        assert_eq!(su.permissions().mode() & 0o7777, 0o4755);
        assert_eq!((su.uid(), su.gid()), (1234, 5678));
        let su2 = std::fs::metadata(l.join("bin/su2")).unwrap();
        assert_eq!(su2.ino(), su.ino());
        assert_eq!(
            std::fs::read_link(l.join("bin/sh")).unwrap(),
            Path::new("/usr/bin/dash")
        );
        let wh = std::fs::symlink_metadata(l.join("var/gone")).unwrap();
        assert!(wh.file_type().is_char_device());
        let mut v = [0u8; 8];
        let n = rustix::fs::getxattr(l.join("opt"), "trusted.overlay.opaque", &mut v[..]).unwrap();
        assert_eq!(&v[..n], b"y");
        let n = rustix::fs::getxattr(l.join("opt/f"), "user.note", &mut v[..]).unwrap();
        assert_eq!(&v[..n], b"hi");
        assert_eq!(t.transfer_digest(&id).unwrap(), digest);
        assert_eq!(crate::layerexport::digest(&l).unwrap(), digest);

        // A changed file on the sending side: the stream no longer matches the digest
        // recorded when the layer was made, and the receiver keeps nothing.
        std::fs::write(s.path(&id).join("opt/f"), [6u8; 3000]).unwrap();
        let mut bad = Vec::new();
        s.export(&id, &mut bad).unwrap();
        assert_eq!(s.transfer_digest(&id).unwrap(), digest, "the recorded one");
        let (_d3, u) = store();
        let e = u.import(&id, &digest, &bad[..]).unwrap_err();
        assert!(e.to_string().contains("does not match its digest"), "{e}");
        assert!(!u.contains(&id));
        assert!(leftovers(&u).is_empty(), "{:?}", leftovers(&u));
        // Bad ids and digests are refused before anything is read.
        assert!(u.import("sha256:nope", &digest, &bad[..]).is_err());
        assert!(u.import(&id, "md5:x", &bad[..]).is_err());
    }

    /// The store end to end: unpacked under the layer policy (owners, setuid, whiteouts,
    /// opaque dirs; the policy itself is tested in `paddock-untar`), verified, reused,
    /// listed, removed.
    #[test]
    fn unpacks_verifies_lists_removes() {
        let (_d, s) = store();
        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, "etc/", tar::EntryType::Directory, b"", 0o751);
        add(&mut b, "bin/su", tar::EntryType::Regular, b"#!", 0o4755);
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
        let wh = std::fs::symlink_metadata(l.join("var/gone")).unwrap();
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        let opq = rustix::fs::getxattr(l.join("opt"), "trusted.overlay.opaque", &mut [0u8; 8][..])
            .unwrap();
        assert_eq!(opq, 1);
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

    /// A refused layer is a bad image (the caller's 400) and leaves nothing in the store or
    /// outside it. (The hostile archives themselves are `paddock-untar`'s tests.)
    #[test]
    fn refused_layers_leave_nothing() {
        let (d, s) = store();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();

        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, "../x", tar::EntryType::Regular, b"x", 0o644);
        let e = s.unpack(&b.into_inner().unwrap()[..], None).unwrap_err();
        assert!(matches!(e, RuntimeError::BadImage { .. }), "{e}");
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

        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, "dev/null", tar::EntryType::Char, b"", 0o666);
        let e = s.unpack(&b.into_inner().unwrap()[..], None).unwrap_err();
        assert!(e.to_string().contains("device nodes"), "{e}");

        // A parent that is a file.
        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, "f", tar::EntryType::Regular, b"x", 0o644);
        add(&mut b, "f/g", tar::EntryType::Regular, b"x", 0o644);
        let e = s.unpack(&b.into_inner().unwrap()[..], None).unwrap_err();
        assert!(e.to_string().contains("a parent is not a directory"), "{e}");

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
