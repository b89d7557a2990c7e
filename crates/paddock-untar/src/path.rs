//! Entry paths and descriptor-relative opening.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

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
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(&dir, rel, flags | OFlags::CLOEXEC, mode, resolve) {
                Err(rustix::io::Errno::AGAIN) if tries < 8 => tries += 1,
                Err(rustix::io::Errno::NOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    break;
                }
                r => return r.map_err(Into::into),
            }
        }
    }
    open_walk(dir.as_fd(), rel, flags, mode)
}

/// Set once `openat2` answered `ENOSYS` (gVisor's Sentry does): [`open_walk`] from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// The fallback of [`open_beneath`] where `openat2` does not exist: one `openat` per
/// component, each with `O_NOFOLLOW` (directories as `O_PATH | O_DIRECTORY`), so no symlink
/// is ever followed, not even one that stays beneath `dir`, and `..` is refused with `EXDEV`.
/// That is stricter than `RESOLVE_BENEATH` (a path through an in-tree symlink fails with
/// `ELOOP` or `ENOTDIR` here) and never weaker: every step is relative to a descriptor already
/// beneath `dir`. `/proc` magic links are symlinks too, so they are never taken either.
fn open_walk(dir: BorrowedFd<'_>, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    use std::path::Component;
    let parts: Vec<&OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::CurDir => None,
            Component::Normal(n) => Some(Ok(n)),
            _ => Some(Err(io::Error::from_raw_os_error(libc_exdev()))),
        })
        .collect::<io::Result<_>>()?;
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let Some((last, walk)) = parts.split_last() else {
        return Ok(rustix::fs::openat(dir, ".", flags | OFlags::CLOEXEC, mode)?);
    };
    let mut cur: Option<OwnedFd> = None;
    for name in walk {
        let at = cur.as_ref().map_or(dir, |f| f.as_fd());
        cur = Some(rustix::fs::openat(at, *name, dir_flags, Mode::empty())?);
    }
    let at = cur.as_ref().map_or(dir, |f| f.as_fd());
    Ok(rustix::fs::openat(
        at,
        *last,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        mode,
    )?)
}

/// `EXDEV`, what `RESOLVE_BENEATH` answers for a path leaving its directory.
fn libc_exdev() -> i32 {
    rustix::io::Errno::XDEV.raw_os_error()
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
