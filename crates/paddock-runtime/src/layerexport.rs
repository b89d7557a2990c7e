//! A layer of the store as a canonical tar stream, for copying it to a peer node of a fleet,
//! and the digest that stream is checked against.
//!
//! A layer's id is its OCI `diff_id` (pulled) or the hash of its build inputs (built), so
//! neither can check a copy made from the unpacked directory. The canonical stream can: it
//! is a function of the directory alone (entries depth first in byte order of their names,
//! GNU headers with numeric owners only, modes, mtimes, no user or group names, hard links
//! to the first path of their inode), so its SHA-256 (the layer's *transfer digest*) is the
//! same every time the same directory is read. The digest is computed when the layer is
//! made (pulled, built, fetched) and kept beside the store in `.digests/<hex>`; a layer
//! changed on disk afterwards no longer streams to its digest, and the receiving node
//! refuses it.
//!
//! The stream is in OCI layer form, so [`crate::layerstore::LayerStore::import`] unpacks it
//! with the same `Policy::Layer` extraction as a pulled layer: overlay whiteouts (character
//! devices 0:0) become `.wh.NAME` entries, an opaque directory (`trusted.overlay.opaque=y`)
//! is followed by its `.wh..wh..opq` entry, and of the extended attributes file
//! capabilities and `user.*` ones go as pax `SCHILY.xattr.*` records (what extraction
//! keeps). Device nodes other than whiteouts, FIFOs and sockets are refused: a layer of the
//! store never has them.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Result, RuntimeError};

/// Writes the canonical tar stream of layer directory `dir` to `out`.
pub fn write_canonical(dir: &Path, out: impl Write) -> Result<()> {
    let mut b = tar::Builder::new(out);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    walk(&mut b, dir, Path::new(""), &mut links).map_err(export_error)?;
    b.into_inner()
        .map_err(export_error)?
        .flush()
        .map_err(export_error)?;
    Ok(())
}

/// The transfer digest (`sha256:<hex>`) of layer directory `dir`: the SHA-256 of its
/// canonical stream.
pub fn digest(dir: &Path) -> Result<String> {
    let mut h = HashWriter(Sha256::new());
    write_canonical(dir, &mut h)?;
    Ok(format!("sha256:{:x}", h.0.finalize()))
}

/// Whether `d` is a well-formed `sha256:<64 lowercase hex>` digest.
pub fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn export_error(e: io::Error) -> RuntimeError {
    RuntimeError::io("export a layer")(e)
}

struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn walk<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &Path,
    rel: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort_by(|a, c| a.as_bytes().cmp(c.as_bytes()));
    for name in names {
        let path = dir.join(&name);
        let rel_path = rel.join(&name);
        let md = std::fs::symlink_metadata(&path)?;
        let ft = md.file_type();
        if ft.is_char_device() && md.rdev() == 0 {
            // An overlay whiteout: `.wh.NAME` in OCI form.
            let mut wh = OsStr::new(".wh.").to_os_string();
            wh.push(&name);
            let mut h = header(&md, tar::EntryType::Regular);
            h.set_size(0);
            b.append_data(&mut h, rel.join(wh), io::empty())?;
            continue;
        }
        let xattrs = kept_xattrs(&path)?;
        if !xattrs.is_empty() {
            b.append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        if ft.is_dir() {
            let mut h = header(&md, tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, &rel_path, io::empty())?;
            if is_opaque(&path)? {
                let mut h = header(&md, tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_data(&mut h, rel_path.join(".wh..wh..opq"), io::empty())?;
            }
            walk(b, &path, &rel_path, links)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path)?;
            let mut h = header(&md, tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, &rel_path, &target)?;
        } else if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = links.get(&(md.dev(), md.ino())) {
                    let mut h = header(&md, tar::EntryType::Link);
                    h.set_size(0);
                    let first = first.clone();
                    b.append_link(&mut h, &rel_path, &first)?;
                    continue;
                }
                links.insert((md.dev(), md.ino()), rel_path.clone());
            }
            let f = std::fs::File::open(&path)?;
            let mut h = header(&md, tar::EntryType::Regular);
            h.set_size(md.len());
            // A file that changes size while it is read fails the stream (the builder
            // checks the count).
            b.append_data(&mut h, &rel_path, f)?;
        } else {
            return Err(io::Error::other(format!(
                "{}: a device, FIFO or socket cannot be in a layer",
                rel_path.display()
            )));
        }
    }
    Ok(())
}

fn header(md: &std::fs::Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(md.mode() & 0o7777);
    h.set_uid(u64::from(md.uid()));
    h.set_gid(u64::from(md.gid()));
    h.set_mtime(u64::try_from(md.mtime()).unwrap_or(0));
    h
}

/// The extended attributes extraction keeps (`security.capability`, `user.*`), sorted, as
/// pax record names.
fn kept_xattrs(p: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut buf = vec![0u8; 65536];
    let n = match rustix::fs::llistxattr(p, &mut buf) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for name in buf[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name != b"security.capability" && !name.starts_with(b"user.") {
            continue;
        }
        let Ok(s) = std::str::from_utf8(name) else {
            continue;
        };
        let mut val = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(p, OsStr::from_bytes(name), &mut val)?;
        val.truncate(len);
        out.push((format!("SCHILY.xattr.{s}"), val));
    }
    out.sort();
    Ok(out)
}

fn is_opaque(p: &Path) -> io::Result<bool> {
    let mut v = [0u8; 8];
    match rustix::fs::lgetxattr(p, "trusted.overlay.opaque", &mut v) {
        Ok(n) => Ok(&v[..n] == b"y"),
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
