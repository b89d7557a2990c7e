//! Creating one entry of each kind beneath the target: always relative to a directory
//! descriptor resolved with `RESOLVE_BENEATH`, the entry itself made by name, never through
//! a final symlink.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::Error;
use crate::MAX_PATH_LEN;
use crate::extract::{Extractor, Meta};
use crate::path::{errno, open_beneath, refused, relative_path, resolve_beneath, timestamps};

impl Extractor {
    /// Opens directory `rel` beneath the root, creating it and its missing parents (0o755).
    /// Iterative, so a deep path cannot exhaust the thread's stack.
    fn ensure_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        let open = |p: &Path| {
            open_beneath(
                &self.root,
                p,
                OFlags::PATH | OFlags::DIRECTORY,
                Mode::empty(),
                resolve_beneath(),
            )
        };
        let is_enoent = |e: &io::Error| errno(e) == Some(rustix::io::Errno::NOENT);
        match open(rel) {
            Err(e) if is_enoent(&e) => {}
            r => return r,
        }
        let comps: Vec<&OsStr> = rel.iter().collect();
        // The deepest existing ancestor (the root itself always exists).
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
                    // Explicit mode, whatever the umask.
                    let d = open_beneath(
                        &fd,
                        Path::new(name),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                        Mode::empty(),
                        resolve_beneath(),
                    )?;
                    rustix::fs::fchmod(&d, Mode::from_raw_mode(0o755))?;
                    d
                }
                // Made meanwhile (or a symlink): resolve it from the root like any path.
                Err(rustix::io::Errno::EXIST) => open(&comps[..=i].iter().collect::<PathBuf>())?,
                Err(e) => return Err(e.into()),
            };
        }
        Ok(fd)
    }

    /// The parent directory of `rel` (created if missing) and `rel`'s last component.
    fn parent_of<'a>(&mut self, rel: &'a Path) -> io::Result<(Rc<OwnedFd>, &'a OsStr)> {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Err(rustix::io::Errno::INVAL.into());
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

    /// Makes room for a new entry `name` in `parent`: removes a non-directory, or a
    /// directory (with its contents only if the policy replaces non-empty directories).
    fn clear(&mut self, parent: &OwnedFd, name: &OsStr) -> io::Result<()> {
        self.parent = None;
        let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let flags = if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            if self.policy.replaces_nonempty_dirs() {
                let dir = open_beneath(
                    parent,
                    Path::new(name),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                    Mode::empty(),
                    resolve_beneath(),
                )?;
                clear_dir(&dir)?;
            }
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        match rustix::fs::unlinkat(parent, name, flags) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `make` (creating `name` in `parent`); if something is in the way, clears it
    /// and tries once more.
    fn replacing<T>(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        make: impl Fn() -> io::Result<T>,
    ) -> io::Result<T> {
        match make() {
            Err(e) if errno(&e) == Some(rustix::io::Errno::EXIST) => {
                self.clear(parent, name).and_then(|()| make())
            }
            r => r,
        }
    }

    /// A layer's whiteout: a 0:0 character device named `rel`.
    pub(crate) fn whiteout(&mut self, rel: &Path) -> Result<(), Error> {
        let (parent, name) = self.parent_of(rel).map_err(|e| self.fs_error(e, rel))?;
        let mk = || {
            rustix::fs::mknodat(
                &*parent,
                name,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(io::Error::from)
        };
        self.replacing(&parent, name, mk)
            .map_err(|e| self.fs_error(e, rel))
    }

    /// A layer's opaque marker on directory `dir`.
    pub(crate) fn opaque(&mut self, dir: &Path) -> Result<(), Error> {
        let fd = self.ensure_dir(dir).map_err(|e| self.fs_error(e, dir))?;
        // xattrs need a real descriptor, not O_PATH.
        let fd = open_beneath(
            &fd,
            Path::new(""),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
            resolve_beneath(),
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

    pub(crate) fn dir(
        &mut self,
        rel: &Path,
        meta: Meta,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<(), Error> {
        if rel.as_os_str().is_empty() {
            if !self.policy.sets_root_attrs() {
                return Ok(()); // `./`: the target directory itself, left as it is.
            }
        } else {
            let (parent, name) = self.parent_of(rel).map_err(|e| self.fs_error(e, rel))?;
            let made = match rustix::fs::mkdirat(&*parent, name, Mode::from_raw_mode(0o700)) {
                Err(rustix::io::Errno::EXIST) => {
                    let st = rustix::fs::statat(&*parent, name, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| self.fs_error(e.into(), rel))?;
                    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                        Ok(()) // Kept; its attributes are updated at the end.
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
                resolve_beneath(),
            )
            .map_err(|e| self.fs_error(e, rel))?;
            set_xattrs(&fd, xattrs).map_err(|e| self.fs_error(e, rel))?;
        }
        self.defer_dir(rel, meta)
    }

    pub(crate) fn file<R: Read>(
        &mut self,
        rel: &Path,
        raw: &[u8],
        entry: &mut tar::Entry<'_, R>,
        meta: Meta,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<(), Error> {
        if rel.as_os_str().is_empty() {
            return Err(refused(raw, "not a valid file name"));
        }
        let (parent, name) = self.parent_of(rel).map_err(|e| self.fs_error(e, rel))?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::NOCTTY;
        let create = || {
            open_beneath(
                &*parent,
                Path::new(name),
                flags,
                Mode::from_raw_mode(0o600),
                resolve_beneath(),
            )
        };
        let fd = self
            .replacing(&parent, name, create)
            .map_err(|e| self.fs_error(e, rel))?;
        let mut file = std::fs::File::from(fd);
        let done = self.fill(&mut file, rel, raw, entry, meta, xattrs);
        if done.is_err() {
            // Never leave a half-written file behind.
            drop(file);
            let _ = rustix::fs::unlinkat(&*parent, name, AtFlags::empty());
        }
        done
    }

    /// Writes a new file's data and attributes.
    fn fill<R: Read>(
        &mut self,
        file: &mut std::fs::File,
        rel: &Path,
        raw: &[u8],
        entry: &mut tar::Entry<'_, R>,
        meta: Meta,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<(), Error> {
        let n = self.copy(entry, file, rel)?;
        if n != entry.size() {
            return Err(refused(raw, "archive ends inside the entry's data"));
        }
        // Owner before mode and capabilities: chown clears setuid, setgid and file caps.
        let owned = match meta.owner {
            Some((uid, gid)) => rustix::fs::fchown(
                &*file,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            ),
            None => Ok(()),
        };
        owned
            .and_then(|()| rustix::fs::fchmod(&*file, Mode::from_raw_mode(meta.mode)))
            .map_err(io::Error::from)
            .and_then(|()| set_xattrs(&*file, xattrs))
            .and_then(|()| {
                rustix::fs::futimens(&*file, &timestamps(meta.mtime)).map_err(Into::into)
            })
            .map_err(|e| self.fs_error(e, rel))
    }

    /// Copies an entry's data into `out`, counting towards the policy's total.
    fn copy<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        out: &mut std::fs::File,
        rel: &Path,
    ) -> Result<u64, Error> {
        let max = self.policy.max_total_bytes();
        let mut n: u64 = 0;
        loop {
            let got = match entry.read(&mut self.buf) {
                Ok(0) => return Ok(n),
                Ok(g) => g,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Read(e)),
            };
            if self.bytes + got as u64 > max {
                return Err(Error::Limit(format!("archive contents exceed {max} bytes")));
            }
            out.write_all(&self.buf[..got])
                .map_err(|e| self.fs_error(e, rel))?;
            self.bytes += got as u64;
            n += got as u64;
        }
    }

    pub(crate) fn symlink(
        &mut self,
        rel: &Path,
        raw: &[u8],
        target: &[u8],
        meta: Meta,
    ) -> Result<(), Error> {
        if rel.as_os_str().is_empty() {
            return Err(refused(raw, "not a valid symlink name"));
        }
        if target.is_empty() || target.len() > MAX_PATH_LEN || target.contains(&0) {
            return Err(refused(raw, "invalid symlink target"));
        }
        // The target is stored as it is: it is resolved later by whoever uses the tree
        // (inside the sandbox), never while extracting (nothing here follows a symlink).
        let target = OsStr::from_bytes(target);
        let (parent, name) = self.parent_of(rel).map_err(|e| self.fs_error(e, rel))?;
        let mk = || rustix::fs::symlinkat(target, &*parent, name).map_err(io::Error::from);
        self.replacing(&parent, name, mk)
            .map_err(|e| self.fs_error(e, rel))?;
        let owned = match meta.owner {
            Some((uid, gid)) => rustix::fs::chownat(
                &*parent,
                name,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            ),
            None => Ok(()),
        };
        owned
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

    pub(crate) fn hardlink(&mut self, rel: &Path, raw: &[u8], target: &[u8]) -> Result<(), Error> {
        let place = self.policy.place();
        let target_rel = relative_path(target, self.policy).map_err(|_| {
            refused(
                raw,
                &format!("hard link target must be a relative path inside {place}"),
            )
        })?;
        if rel.as_os_str().is_empty() || target_rel.as_os_str().is_empty() {
            return Err(refused(raw, "not a valid hard link"));
        }
        if target_rel == rel {
            return Ok(()); // A link to itself: already there.
        }
        let (Some(tparent), Some(tname)) = (target_rel.parent(), target_rel.file_name()) else {
            return Err(refused(raw, "not a valid hard link"));
        };
        let missing = || refused(raw, &format!("hard link target does not exist in {place}"));
        let tdir = open_beneath(
            &self.root,
            tparent,
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
            resolve_beneath(),
        )
        .map_err(|e| match errno(&e) {
            Some(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => missing(),
            _ => self.fs_error(e, &target_rel),
        })?;
        let (parent, name) = self.parent_of(rel).map_err(|e| self.fs_error(e, rel))?;
        // Both ends are a directory descriptor plus one name, and no flag makes the kernel
        // follow a symlink at the target: the link cannot reach outside the directory.
        let link = || {
            rustix::fs::linkat(&tdir, tname, &*parent, name, AtFlags::empty())
                .map_err(io::Error::from)
        };
        self.replacing(&parent, name, link)
            .map_err(|e| match errno(&e) {
                Some(rustix::io::Errno::NOENT) => missing(),
                Some(rustix::io::Errno::PERM) => {
                    refused(raw, "hard link target is a directory or not permitted")
                }
                _ => self.fs_error(e, rel),
            })
    }
}

fn set_xattrs(fd: impl AsFd, xattrs: &[(String, Vec<u8>)]) -> io::Result<()> {
    for (name, value) in xattrs {
        rustix::fs::fsetxattr(&fd, name.as_str(), value, rustix::fs::XattrFlags::empty())?;
    }
    Ok(())
}

/// Removes everything inside `dir` without following symlinks. Recursive: its depth is
/// bounded by the tree an archive can make (paths of at most [`MAX_PATH_LEN`] bytes).
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
                resolve_beneath(),
            )?;
            clear_dir(&sub)?;
            rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
        } else {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
        }
    }
    Ok(())
}
