//! Directory operations: list, make, move (across filesystems too) and remove.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use connectrpc::ConnectError;
use paddock_envd::filesystem::*;

use super::entry::{Names, entry_from_meta, entry_info};
use super::{errno, fs_err, is_not_found};

/// Creates `dir` and any missing parents with mode `0o755` (set explicitly, so the agent's
/// umask cannot narrow it). Fails with `ENOTDIR` if an existing component is not a
/// directory.
pub(crate) fn ensure_dirs(dir: &Path) -> io::Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => return Err(errno(libc::ENOTDIR)),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        ensure_dirs(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => match std::fs::metadata(dir) {
            // Only when the umask narrowed it, to avoid a needless CHMOD event in watches.
            Ok(m) if m.mode() & 0o7777 == 0o755 => Ok(()),
            _ => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)),
        },
        // Created concurrently by someone else: fine if it is a directory.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Lists `root` (excluded) down to `depth` levels: depth first, names in byte order,
/// without following symlinks. Only an unreadable root is an error.
pub(super) fn list_dir(root: &Path, depth: u32, names: &mut Names) -> io::Result<Vec<EntryInfo>> {
    let mut out = Vec::new();
    walk(root, depth.max(1), names, &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, depth: u32, names: &mut Names, out: &mut Vec<EntryInfo>) -> io::Result<()> {
    let mut children: Vec<OsString> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    children.sort();
    for name in children {
        let path = dir.join(&name);
        // An entry removed since readdir is simply not listed.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        out.push(entry_from_meta(&path, &meta, names));
        if meta.is_dir() && depth > 1 {
            // A subdirectory the user cannot read is listed but not entered.
            let _ = walk(&path, depth - 1, names, out);
        }
    }
    Ok(())
}

pub(super) fn make_dir(path: &Path) -> Result<EntryInfo, ConnectError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(ConnectError::already_exists(format!(
                "directory already exists: {:?}",
                path.as_os_str()
            )));
        }
        Ok(_) => return Err(not_a_dir(path)),
        Err(e) if is_not_found(&e) => {
            // A dangling symlink is in the way of the new directory.
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(not_a_dir(path));
            }
        }
        Err(e) => return Err(fs_err(&e, path)),
    }
    ensure_dirs(path).map_err(|e| fs_err(&e, path))?;
    entry_info(path, &mut Names::default()).map_err(|e| fs_err(&e, path))
}

fn not_a_dir(path: &Path) -> ConnectError {
    ConnectError::invalid_argument(format!(
        "path already exists but it is not a directory: {:?}",
        path.as_os_str()
    ))
}

pub(super) fn remove(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        // Removing what is not there succeeds, as with envd's os.RemoveAll.
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    let r = if meta.is_dir() {
        // std's remove_dir_all never follows symlinks inside the tree.
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match r {
        Err(e) if is_not_found(&e) => Ok(()),
        r => r,
    }
}

pub(super) fn move_path(src: &Path, dst: &Path) -> Result<EntryInfo, ConnectError> {
    if let Err(e) = std::fs::symlink_metadata(src) {
        return Err(if is_not_found(&e) {
            ConnectError::not_found(format!("source not found: {:?}", src.as_os_str()))
        } else {
            fs_err(&e, src)
        });
    }
    if let Some(parent) = dst.parent() {
        ensure_dirs(parent).map_err(|e| fs_err(&e, parent))?;
    }
    match std::fs::rename(src, dst) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            move_across(src, dst).map_err(|e| fs_err(&e, dst))?
        }
        Err(e) if is_not_found(&e) => {
            return Err(ConnectError::not_found(format!(
                "source not found: {:?}",
                src.as_os_str()
            )));
        }
        Err(e) => return Err(fs_err(&e, dst)),
    }
    entry_info(dst, &mut Names::default()).map_err(|e| fs_err(&e, dst))
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A short unique name: a counter hashed with a per-process random key, so ids do not
/// repeat within a run and cannot be guessed from one another.
pub(super) fn unique_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut h = KEY.get_or_init(Default::default).build_hasher();
    h.write_u64(UNIQUE.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", h.finish())
}

/// Moves across filesystems like `mv`: copy to a temporary name next to the destination,
/// rename it into place (so the destination is replaced atomically, with rename's rules),
/// then remove the source.
fn move_across(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    let parent = dst.parent().unwrap_or(Path::new("/"));
    let tmp = parent.join(format!(".paddock-move-{}", unique_hex()));
    if let Err(e) = copy_tree(src, &tmp, &meta).and_then(|()| std::fs::rename(&tmp, dst)) {
        let _ = remove(&tmp);
        return Err(e);
    }
    remove(src)
}

/// Copies a file, symlink or directory tree, keeping permission bits, modification times
/// and (when the caller may chown, i.e. root) ownership.
fn copy_tree(src: &Path, dst: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)?;
    } else if ft.is_dir() {
        // Private and writable while it fills; it gets the source's mode at the end.
        std::fs::DirBuilder::new().mode(0o700).create(dst)?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            let child_meta = std::fs::symlink_metadata(entry.path())?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()), &child_meta)?;
        }
    } else if ft.is_file() {
        std::fs::copy(src, dst)?;
    } else {
        // Devices, FIFOs and sockets cannot be recreated by copying their contents.
        return Err(errno(libc::EXDEV));
    }
    // Best effort, as `mv` does: only root may give a file away.
    let _ = std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()));
    if !ft.is_symlink() {
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    };
    let _ = rustix::fs::utimensat(
        rustix::fs::CWD,
        dst,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::entry::lossy;
    use crate::fs::tempdir;

    #[test]
    fn listing_order_and_depth() {
        let d = tempdir("list");
        for f in ["b/y", "b/x/deep", "a", "c/z"] {
            let p = d.join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, b"1").expect("write");
        }
        std::os::unix::fs::symlink(d.join("b"), d.join("link")).expect("symlink");
        let names = |depth| -> Vec<String> {
            list_dir(&d, depth, &mut Names::default())
                .expect("list")
                .into_iter()
                .map(|e| e.path.trim_start_matches(&*lossy(&d)).to_owned())
                .collect()
        };
        assert_eq!(names(0), ["/a", "/b", "/c", "/link"]);
        assert_eq!(names(1), names(0));
        assert_eq!(
            names(2),
            ["/a", "/b", "/b/x", "/b/y", "/c", "/c/z", "/link"]
        );
        assert_eq!(
            names(9),
            [
                "/a",
                "/b",
                "/b/x",
                "/b/x/deep",
                "/b/y",
                "/c",
                "/c/z",
                "/link"
            ]
        );
        let entries = list_dir(&d, 1, &mut Names::default()).expect("list");
        let link = entries.iter().find(|e| e.name == "link").expect("link");
        assert!(link.is_symlink);
        assert_eq!(link.r#type.as_known(), Some(FileType::FILE_TYPE_DIRECTORY));
        assert_eq!(
            link.symlink_target.as_deref(),
            Some(&*lossy(&std::fs::canonicalize(d.join("b")).expect("canon")))
        );
        let a = entries.iter().find(|e| e.name == "a").expect("a");
        assert_eq!(a.r#type.as_known(), Some(FileType::FILE_TYPE_FILE));
        assert_eq!(a.size, 1);
        assert!(a.modified_time.is_set());
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn make_move_remove() {
        let d = tempdir("ops");
        let nested = d.join("x/y/z");
        let e = make_dir(&nested).expect("mkdir");
        assert_eq!(e.r#type.as_known(), Some(FileType::FILE_TYPE_DIRECTORY));
        assert_eq!(
            std::fs::metadata(&nested).expect("stat").mode() & 0o777,
            0o755
        );
        assert_eq!(
            make_dir(&nested).map_err(|e| e.code),
            Err(connectrpc::ErrorCode::AlreadyExists)
        );
        std::fs::write(d.join("file"), b"x").expect("write");
        assert_eq!(
            make_dir(&d.join("file")).map_err(|e| e.code),
            Err(connectrpc::ErrorCode::InvalidArgument)
        );
        assert_eq!(
            move_path(&d.join("missing"), &d.join("m2")).map_err(|e| e.code),
            Err(connectrpc::ErrorCode::NotFound)
        );
        let moved = move_path(&d.join("file"), &d.join("new/parent/file2")).expect("move");
        assert_eq!(moved.name, "file2");
        remove(&d.join("x")).expect("remove dir");
        assert!(!d.join("x").exists());
        remove(&d.join("x")).expect("removing a missing path succeeds");
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn copy_fallback_moves_trees() {
        let d = tempdir("copy");
        std::fs::create_dir_all(d.join("src/sub")).expect("mkdir");
        std::fs::write(d.join("src/sub/f"), b"data").expect("write");
        std::os::unix::fs::symlink("sub/f", d.join("src/l")).expect("symlink");
        move_across(&d.join("src"), &d.join("dst")).expect("move across");
        assert!(!d.join("src").exists());
        assert_eq!(std::fs::read(d.join("dst/sub/f")).expect("read"), b"data");
        assert_eq!(
            std::fs::read_link(d.join("dst/l")).expect("readlink"),
            Path::new("sub/f")
        );
        std::fs::remove_dir_all(&d).expect("cleanup");
    }
}
