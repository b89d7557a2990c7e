//! E2B metadata: the `user.e2b.<key>` extended attributes written by uploads.
//!
//! Where the file system keeps no user xattrs (`EOPNOTSUPP`: every gofer-backed path of a
//! gVisor sandbox, tmpfs before Linux 6.6), the metadata is kept in PID 1's memory instead
//! ([`Kept`]), keyed by the file's device and inode and valid while its change time is the one
//! it had when the metadata was written: a file changed, renamed or replaced since (or a new
//! file on a reused inode) has none. At most [`MAX_KEPT`] files; lost when PID 1 restarts.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::sync::Mutex;

use super::XATTR_PREFIX;

/// The most files whose metadata is kept in memory; the oldest entry goes first.
pub(crate) const MAX_KEPT: usize = 65_536;

/// A file's identity and the change time that proves it unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
}

struct KeptEntry {
    ctime: (i64, u64),
    seq: u64,
    meta: BTreeMap<String, String>,
}

/// Metadata of files whose file system has no user xattrs.
#[derive(Default)]
struct Kept {
    files: HashMap<FileKey, KeptEntry>,
    seq: u64,
}

static KEPT: Mutex<Option<Kept>> = Mutex::new(None);

fn key_of(st: &rustix::fs::Stat) -> (FileKey, (i64, u64)) {
    (
        FileKey {
            dev: st.st_dev,
            ino: st.st_ino,
        },
        (st.st_ctime, st.st_ctime_nsec),
    )
}

/// Keeps `meta` for the open `file` (an empty map forgets it).
fn keep(file: &std::fs::File, meta: &BTreeMap<String, String>) -> io::Result<()> {
    let (key, ctime) = key_of(&rustix::fs::fstat(file)?);
    let mut guard = crate::lock(&KEPT);
    let kept = guard.get_or_insert_with(Kept::default);
    if meta.is_empty() {
        kept.files.remove(&key);
        return Ok(());
    }
    if kept.files.len() >= MAX_KEPT && !kept.files.contains_key(&key) {
        let oldest = kept
            .files
            .iter()
            .min_by_key(|(_, e)| e.seq)
            .map(|(k, _)| *k);
        if let Some(k) = oldest {
            kept.files.remove(&k);
        }
    }
    kept.seq += 1;
    let seq = kept.seq;
    kept.files.insert(
        key,
        KeptEntry {
            ctime,
            seq,
            meta: meta.clone(),
        },
    );
    Ok(())
}

/// The metadata kept for `path` (following symlinks), if it is unchanged since.
fn kept_for(path: &Path) -> BTreeMap<String, String> {
    // Most sandboxes keep nothing here: no stat for them.
    if crate::lock(&KEPT)
        .as_ref()
        .is_none_or(|k| k.files.is_empty())
    {
        return BTreeMap::new();
    }
    let Ok(st) = rustix::fs::stat(path) else {
        return BTreeMap::new();
    };
    let (key, ctime) = key_of(&st);
    let mut guard = crate::lock(&KEPT);
    let Some(kept) = guard.as_mut() else {
        return BTreeMap::new();
    };
    match kept.files.get(&key) {
        Some(e) if e.ctime == ctime => e.meta.clone(),
        Some(_) => {
            kept.files.remove(&key);
            BTreeMap::new()
        }
        None => BTreeMap::new(),
    }
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
    let list = match xattr_buf(|b| rustix::fs::listxattr(path, b)) {
        Ok(list) => list,
        Err(e) if xattr_unsupported(&e) => return kept_for(path),
        Err(_) => return out,
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
    if out.is_empty() {
        return kept_for(path);
    }
    out
}

/// Replaces the E2B metadata of an open file with `meta` (an empty map clears it, so an
/// overwritten file does not keep stale metadata; `O_TRUNC` leaves xattrs in place). Call
/// it after the file's content is written: kept in memory, it is valid only while the change
/// time stays.
pub(crate) fn write_metadata(
    file: &std::fs::File,
    meta: &BTreeMap<String, String>,
) -> io::Result<()> {
    let list = match xattr_buf(|b| rustix::fs::flistxattr(file, b)) {
        Ok(list) => list,
        Err(e) if xattr_unsupported(&e) => return keep(file, meta),
        Err(e) => return Err(e),
    };
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
        match rustix::fs::fsetxattr(file, &name, v.as_bytes(), rustix::fs::XattrFlags::empty()) {
            Ok(()) => {}
            // Listing works but storing does not (gVisor's gofer).
            Err(rustix::io::Errno::OPNOTSUPP) => return keep(file, meta),
            Err(e) => return Err(e.into()),
        }
    }
    if meta.is_empty() {
        // Forgets metadata kept in memory for this file, if any.
        keep(file, meta)?;
    }
    Ok(())
}

/// Whether an xattr error means the filesystem cannot store xattrs at all.
pub(crate) fn xattr_unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::tempdir;

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

    #[test]
    fn kept_metadata_holds_while_the_file_is_unchanged() {
        let d = tempdir("kept");
        let f = d.join("k");
        std::fs::write(&f, b"x").expect("write");
        let file = std::fs::File::open(&f).expect("open");
        let mut meta = BTreeMap::new();
        meta.insert("a".to_owned(), "1".to_owned());
        keep(&file, &meta).expect("keep");
        assert_eq!(kept_for(&f), meta);
        // Changed since (its change time moves, at the clock's granularity): forgotten,
        // never another file's.
        let before = key_of(&rustix::fs::stat(&f).expect("stat")).1;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while key_of(&rustix::fs::stat(&f).expect("stat")).1 == before {
            assert!(std::time::Instant::now() < deadline, "ctime never moved");
            std::fs::write(&f, b"changed").expect("rewrite");
        }
        assert!(kept_for(&f).is_empty());
        keep(&file, &meta).expect("keep again");
        keep(&file, &BTreeMap::new()).expect("forget");
        assert!(kept_for(&f).is_empty());
        std::fs::remove_dir_all(&d).expect("cleanup");
    }
}
