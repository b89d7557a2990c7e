//! Directories and files the setup stage makes inside the template's root before
//! `pivot_root`, where it is host root with the host's filesystem reachable: nothing here
//! follows a symlink of the root.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Context, Error, Result, bail};

/// `path` (absolute, in the sandbox) inside `root` as a directory, made (mode 0755, host
/// root's) where missing. Everything before `pivot_root` runs as host root with the host's
/// filesystem reachable, and the root's files come from images and from writable layers a
/// sandbox's root has changed: a symlink on the way (`/opt/paddock -> /etc`) would make a
/// mkdir or a write here land on the host. So no component is followed: a symlink or a
/// non-directory on the way refuses the start, naming the path.
pub(crate) fn dir_in_root(root: &Path, path: &str) -> Result<PathBuf> {
    let mut dir = root.to_path_buf();
    let mut shown = String::new();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            bail!("{path} is not a plain path in the sandbox");
        }
        dir.push(part);
        shown.push('/');
        shown.push_str(part);
        match dir.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::Template {
                    reason: format!(
                        "the template's {shown} is a symlink; the sandbox's {path} must be a real directory (refused: it could lead out of the sandbox before it starts)"
                    ),
                });
            }
            Ok(_) => {
                return Err(Error::Template {
                    reason: format!(
                        "the template's {shown} is not a directory; {path} needs it to be one"
                    ),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&dir).with_context(|| format!("creating {shown}"))?
            }
            Err(e) => return Err(Error::from(e)).with_context(|| format!("checking {shown}")),
        }
    }
    Ok(dir)
}

/// `path` inside `root` as a regular file to mount over: its directory made by
/// [`dir_in_root`], the file created empty where missing and never truncated or followed (a
/// symlink there refuses the start).
pub(crate) fn file_in_root(root: &Path, path: &str) -> Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let (parent, name) = path
        .rsplit_once('/')
        .filter(|(_, n)| !n.is_empty() && *n != "." && *n != "..")
        .with_context(|| format!("{path} names no file"))?;
    let file = dir_in_root(root, parent)?.join(name);
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&file);
    match f {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => Ok(file),
        Ok(_) => Err(Error::Template {
            reason: format!("the template's {path} is not a regular file"),
        }),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(Error::Template {
            reason: format!(
                "the template's {path} is a symlink; refused (it could lead out of the sandbox before it starts)"
            ),
        }),
        Err(e) => Err(Error::from(e)).with_context(|| format!("creating {path}")),
    }
}
