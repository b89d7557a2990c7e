//! Entry paths and descriptor-relative opening.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags, Timespec, Timestamps};

use crate::{Error, MAX_PATH_LEN, Policy};

/// A short, one-line rendering of an entry name for messages.
pub fn show(raw: &[u8]) -> String {
    const SHOWN: usize = 200;
    let cut = &raw[..raw.len().min(SHOWN)];
    let s = format!("{:?}", OsStr::from_bytes(cut));
    if raw.len() > SHOWN {
        format!("{s}…")
    } else {
        s
    }
}

/// The refusal of entry `raw` for reason `why`.
pub(crate) fn refused(raw: &[u8], why: &str) -> Error {
    Error::Refused(format!("entry {}: {why}", show(raw)))
}

/// Checks an entry path (or hard link target) and returns it relative to the target, without
/// `.` or empty components; an empty result is the target itself. `..` components, NUL bytes
/// and paths over [`MAX_PATH_LEN`] are refused; absolute paths are refused unless `policy`
/// takes them relative to the target.
pub fn relative_path(raw: &[u8], policy: Policy) -> Result<PathBuf, Error> {
    if raw.len() > MAX_PATH_LEN {
        return Err(refused(
            raw,
            &format!("path longer than {MAX_PATH_LEN} bytes"),
        ));
    }
    if raw.contains(&0) {
        return Err(refused(raw, "path contains a NUL byte"));
    }
    if raw.starts_with(b"/") && !policy.absolute_paths_beneath() {
        return Err(refused(raw, "absolute paths are not allowed"));
    }
    let mut out = PathBuf::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(refused(raw, "'..' components are not allowed")),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

/// `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: resolution never leaves the starting directory
/// (absolute symlinks and `..` above it fail with `EXDEV`) and never takes `/proc` magic
/// links.
pub fn resolve_beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

/// `openat2` relative to `dir` with `resolve` (and `O_CLOEXEC`); an empty `rel` is `dir`
/// itself. Retries the `EAGAIN` the kernel returns when a rename raced with the lookup.
pub fn open_beneath(
    dir: impl AsFd,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
    resolve: ResolveFlags,
) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(&dir, rel, flags | OFlags::CLOEXEC, mode, resolve) {
            Err(rustix::io::Errno::AGAIN) if tries < 8 => tries += 1,
            r => return r.map_err(Into::into),
        }
    }
}

/// Access and modification time `secs`.
pub(crate) fn timestamps(secs: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// The errno of `e`, if it came from the kernel.
pub(crate) fn errno(e: &io::Error) -> Option<rustix::io::Errno> {
    rustix::io::Errno::from_io_error(e)
}
