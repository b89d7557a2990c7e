//! E2B metadata: the `user.e2b.<key>` extended attributes written by uploads.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use super::XATTR_PREFIX;

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
}
