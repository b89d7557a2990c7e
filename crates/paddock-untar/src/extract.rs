//! The extraction loop: extension headers, entry headers, dispatch by type, directory
//! attributes at the end.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{Mode, OFlags};

use crate::header::{Pending, apply_pax, read_extension, until_nul};
use crate::path::{errno, open_beneath, refused, relative_path, resolve_beneath, timestamps};
use crate::{
    COPY_BUFFER, Error, MAX_DEFERRED_DIR_BYTES, MAX_ENTRIES, MAX_PATH_LEN, MAX_PAX_BYTES, Policy,
};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// Owner, mode and mtime of one entry, as the policy keeps them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    /// The archive's mode, masked by [`Policy::mode_mask`].
    pub(crate) mode: u32,
    /// The archive's uid and gid when the policy keeps owners.
    pub(crate) owner: Option<(u32, u32)>,
    pub(crate) mtime: i64,
}

/// A directory whose attributes wait for the end of the extraction.
struct DeferredDir {
    rel: PathBuf,
    meta: Meta,
}

/// An extraction in progress beneath one directory. [`crate::extract`] is the usual way in;
/// this is for callers that drive the `tar::Archive` themselves.
pub struct Extractor {
    /// Descriptor of the target directory; everything is created beneath it.
    pub(crate) root: OwnedFd,
    pub(crate) policy: Policy,
    /// The last parent directory used, since archives list siblings together.
    pub(crate) parent: Option<(PathBuf, Rc<OwnedFd>)>,
    deferred: Vec<DeferredDir>,
    deferred_bytes: usize,
    entries: u64,
    pub(crate) bytes: u64,
    pub(crate) buf: Vec<u8>,
}

impl Extractor {
    /// An extractor creating entries beneath `root` (a descriptor of the target directory;
    /// `O_PATH` is enough) under `policy`.
    pub fn new(root: OwnedFd, policy: Policy) -> Extractor {
        Extractor {
            root,
            policy,
            parent: None,
            deferred: Vec::new(),
            deferred_bytes: 0,
            entries: 0,
            bytes: 0,
            buf: vec![0; COPY_BUFFER],
        }
    }

    /// Entries created so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// File bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Maps a filesystem error on entry `rel`: leaving the target through a symlink is a
    /// refusal, anything else is the kernel's error.
    pub(crate) fn fs_error(&self, e: io::Error, rel: &Path) -> Error {
        match errno(&e) {
            Some(rustix::io::Errno::XDEV | rustix::io::Errno::LOOP) => refused(
                rel.as_os_str().as_bytes(),
                &format!(
                    "resolves outside {} (through a symlink)",
                    self.policy.place()
                ),
            ),
            _ => Error::Fs {
                path: rel.to_path_buf(),
                source: e,
            },
        }
    }

    /// Reads `archive` up to its end-of-archive marker, creating every entry. Stops at the
    /// first error.
    pub fn run<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<(), Error> {
        let mut pending = Pending::default();
        let entries = archive.entries().map_err(Error::Read)?.raw(true);
        for entry in entries {
            let mut entry = entry.map_err(Error::Read)?;
            let kind = entry.header().entry_type().as_byte();
            match kind {
                b'L' => {
                    if pending.long_name.is_some() {
                        return Err(Error::Malformed("two long names for one entry".into()));
                    }
                    let v = read_extension(&mut entry, MAX_PATH_LEN as u64 + 1, "long name")?;
                    pending.long_name = Some(until_nul(v));
                    pending.any = true;
                }
                b'K' => {
                    if pending.long_link.is_some() {
                        return Err(Error::Malformed("two long link names for one entry".into()));
                    }
                    let v = read_extension(&mut entry, MAX_PATH_LEN as u64 + 1, "long link")?;
                    pending.long_link = Some(until_nul(v));
                    pending.any = true;
                }
                b'x' => {
                    let v = read_extension(&mut entry, MAX_PAX_BYTES, "pax header")?;
                    apply_pax(&v, &mut pending, self.policy)?;
                    pending.any = true;
                }
                b'g' => {
                    // Global pax headers carry defaults (mostly comments); they are skipped.
                    read_extension(&mut entry, MAX_PAX_BYTES, "pax global header")?;
                }
                _ => {
                    let p = std::mem::take(&mut pending);
                    self.entry(&mut entry, kind, p)?;
                    self.entries += 1;
                }
            }
        }
        if pending.any {
            return Err(Error::Malformed(
                "extension header without an entry after it".into(),
            ));
        }
        Ok(())
    }

    /// One entry (not an extension header), with the extension headers before it.
    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: u8,
        p: Pending,
    ) -> Result<(), Error> {
        if self.entries >= MAX_ENTRIES {
            return Err(Error::Limit(format!(
                "archive has more than {MAX_ENTRIES} entries"
            )));
        }
        let header = entry.header();
        let raw_path: Vec<u8> = p
            .pax_path
            .or(p.long_name)
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let raw_link: Option<Vec<u8>> = p
            .pax_link
            .or(p.long_link)
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        let bad = |why: &str| refused(&raw_path, why);
        let invalid = |e: io::Error| {
            bad(&format!(
                "invalid header: {}",
                e.to_string().replace('\n', " ")
            ))
        };
        if let Some(size) = p.pax_size
            && size != entry.size()
        {
            return Err(bad(
                "pax size override is not supported (files over 8 GiB need GNU format)",
            ));
        }
        let owner = if self.policy.keeps_owners() {
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
            Some((uid, gid))
        } else {
            None
        };
        let meta = Meta {
            mode: header.mode().map_err(invalid)? & self.policy.mode_mask(),
            owner,
            mtime: match p.pax_mtime {
                Some(t) => t,
                None => i64::try_from(header.mtime().map_err(invalid)?).unwrap_or(i64::MAX),
            },
        };
        let rel = relative_path(&raw_path, self.policy)?;

        if self.policy.overlay_whiteouts() {
            // Whiteouts first: their entry type does not matter.
            let name = rel.file_name().map(|n| n.as_bytes()).unwrap_or_default();
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
                return self.whiteout(&rel.with_file_name(OsStr::from_bytes(target)));
            }
        }

        let is_dir_name = raw_path.ends_with(b"/");
        match kind {
            b'5' => self.dir(&rel, meta, &p.xattrs),
            // Pre-POSIX archives mark directories with a trailing slash on a file entry.
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

    /// Records directory `rel`'s attributes for the end or, past the
    /// [`MAX_DEFERRED_DIR_BYTES`] budget, applies them now (keeping the directory usable
    /// for the entries that follow).
    pub(crate) fn defer_dir(&mut self, rel: &Path, meta: Meta) -> Result<(), Error> {
        let bytes = rel.as_os_str().len();
        if self.deferred_bytes + bytes <= MAX_DEFERRED_DIR_BYTES {
            self.deferred_bytes += bytes;
            self.deferred.push(DeferredDir {
                rel: rel.to_path_buf(),
                meta,
            });
            return Ok(());
        }
        let mut now = meta;
        if self.policy.needs_owner_access() {
            now.mode |= 0o700;
        }
        self.apply_dir_attrs(rel, now)
    }

    /// Applies the deferred directory attributes, deepest first.
    pub fn finish_dirs(&mut self) -> Result<(), Error> {
        let mut dirs = std::mem::take(&mut self.deferred);
        self.deferred_bytes = 0;
        dirs.sort_by(|a, b| b.rel.as_os_str().cmp(a.rel.as_os_str()));
        for d in dirs {
            self.apply_dir_attrs(&d.rel, d.meta)?;
        }
        Ok(())
    }

    /// Sets directory `rel`'s owner (if kept), mode and mtime. A directory replaced meanwhile
    /// by a later entry is skipped; other failures are errors only under a strict policy
    /// (an upload's existing directory the user does not own keeps what it has).
    fn apply_dir_attrs(&self, rel: &Path, meta: Meta) -> Result<(), Error> {
        let strict = self.policy.strict_dir_attrs();
        let fd = match open_beneath(
            &self.root,
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            Mode::empty(),
            resolve_beneath(),
        ) {
            Ok(fd) => fd,
            Err(e) if !strict => {
                let _ = e;
                return Ok(());
            }
            // Replaced by a later entry (a file or symlink of the same name).
            Err(e)
                if matches!(
                    errno(&e),
                    Some(
                        rustix::io::Errno::NOTDIR
                            | rustix::io::Errno::NOENT
                            | rustix::io::Errno::LOOP
                    )
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(self.fs_error(e, rel)),
        };
        // Every step is tried; the first failure is reported (under a strict policy).
        let owned = match meta.owner {
            Some((uid, gid)) => rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            ),
            None => Ok(()),
        };
        let moded = rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.mode));
        let timed = rustix::fs::futimens(&fd, &timestamps(meta.mtime));
        match owned.and(moded).and(timed) {
            Err(e) if strict => Err(self.fs_error(e.into(), rel)),
            _ => Ok(()),
        }
    }
}
