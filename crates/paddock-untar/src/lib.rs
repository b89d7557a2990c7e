//! Confined tar extraction, the one implementation behind the agent's archive upload
//! (`POST /archive`, as the sandbox user) and the runtime's layer store (image layers, as
//! host root). What differs between the two is a [`Policy`]; everything that keeps an
//! extraction inside its target is shared, so a fix lands in both at once.
//!
//! # Confinement (both policies)
//!
//! The `tar` crate only parses, in raw mode: GNU long names/links and pax headers are read
//! here, size-capped, and its `unpack` is never used. Every entry is created relative to an
//! `O_PATH` descriptor of the target directory: the entry's parent is resolved with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` and the entry itself created by name in
//! that parent (`O_CREAT | O_EXCL | O_NOFOLLOW`, `mkdirat`, `symlinkat`, `linkat` without
//! `AT_SYMLINK_FOLLOW`, `mknodat`), so:
//! - `..` components are refused (absolute paths are refused or taken relative to the
//!   target, by policy); `./` prefixes and empty components are ignored;
//! - symlinks are created as they are, with any target, and never written through: a later
//!   entry below a symlink that leaves the target (`l -> /`, then `l/etc/x`) fails because
//!   `RESOLVE_BENEATH` refuses to leave it; symlinks to places inside are traversed like
//!   directories;
//! - hard links must name a target inside the target directory (resolved the same way,
//!   never following a final symlink);
//! - device nodes, FIFOs, sockets, GNU sparse files and other entry types are refused (the
//!   layer policy's whiteouts are made by this crate, never taken from the archive's type);
//! - directories are created 0o700 and get their mode and mtime at the end, deepest first
//!   (up to [`MAX_DEFERRED_DIR_BYTES`] of their paths; past that at once), so a read-only
//!   directory does not block its own contents;
//! - an existing non-directory at an entry's place is replaced (unlinked first), never
//!   written through.
//!
//! # Limits (both policies)
//!
//! [`MAX_ENTRIES`] entries (extension headers not counted), [`MAX_PATH_LEN`] bytes per path
//! or link target, [`Policy::max_total_bytes`] of file data, [`MAX_PAX_BYTES`] per pax
//! header, [`MAX_TRAILING_BYTES`] after the end-of-archive marker. Decompression (and its
//! ratio cap) is the caller's: this crate reads a plain tar stream.
//!
//! # Errors
//!
//! The first bad entry or failure stops the extraction ([`Error`]); what was created before
//! stays (the file being written is removed), and [`Outcome`] says how far it got. The
//! callers map [`Error`] to their own (HTTP statuses, `RuntimeError`).
//!
//! This crate has no `unsafe`: every system call goes through `rustix`'s safe wrappers.

#![forbid(unsafe_code)]

mod entry;
mod extract;
mod header;
mod path;
#[cfg(test)]
mod tests;

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

pub use extract::Extractor;
pub use path::{open_beneath, relative_path, resolve_beneath, show};

/// Most entries one archive may contain (extension headers not counted).
pub const MAX_ENTRIES: u64 = 1_000_000;
/// Longest entry path or link target, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Largest pax extended header (`x` or `g` entry).
pub const MAX_PAX_BYTES: u64 = 1 << 20;
/// Data allowed after the end-of-archive marker (tar pads to its record size).
pub const MAX_TRAILING_BYTES: u64 = 16 << 20;
/// Most file bytes one upload ([`Policy::Upload`]) may write.
pub const UPLOAD_MAX_TOTAL_BYTES: u64 = 16 << 30;
/// Most file bytes one image layer ([`Policy::Layer`]) may hold.
pub const LAYER_MAX_TOTAL_BYTES: u64 = 64 << 30;
/// Path bytes of directories whose attributes wait for the end of the extraction; past this
/// budget a directory gets them at once (so an archive of a million deep directories cannot
/// make the list huge), at the price of a possibly later mtime.
pub const MAX_DEFERRED_DIR_BYTES: usize = 64 << 20;
/// Buffer for copying entry data to files.
const COPY_BUFFER: usize = 256 * 1024;

/// What an extraction keeps of the archive. Every difference between an upload and a layer
/// is a method here; everything else is the same code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// A user's upload into a directory of the sandbox, extracted as that user (the caller
    /// switches the fsuid): owners are the user's (the archive's uid/gid are ignored),
    /// modes keep only the permission bits (setuid, setgid and sticky stripped), absolute
    /// paths are refused, pax xattrs are ignored, an existing directory is replaced only if
    /// empty, the target directory's own attributes are left alone, and directory
    /// attributes are applied best effort (a directory the user does not own keeps its own).
    Upload,
    /// An image layer unpacked by host root into overlayfs lower-layer format: numeric
    /// owners and full modes (setuid, setgid, sticky) are kept, absolute paths are taken
    /// relative to the layer, OCI whiteouts become overlay whiteouts (`.wh.NAME` ⇒ a 0:0
    /// character device `NAME`, `.wh..wh..opq` ⇒ `trusted.overlay.opaque=y` on its
    /// directory, other `.wh..wh.` names skipped), file capabilities and `user.*` pax xattrs
    /// are kept, a later entry replaces a whole directory tree, the archive's `./` sets the
    /// layer root's attributes, and failing to apply them is an error.
    Layer,
}

impl Policy {
    /// How messages name the target directory.
    pub const fn place(self) -> &'static str {
        match self {
            Policy::Upload => "the target directory",
            Policy::Layer => "the layer",
        }
    }

    /// Whether absolute entry paths and hard link targets are taken relative to the target
    /// (else refused).
    pub const fn absolute_paths_beneath(self) -> bool {
        matches!(self, Policy::Layer)
    }

    /// Whether the archive's numeric uid/gid are applied (else everything belongs to the
    /// extracting process's fsuid/fsgid, and the archive's owner fields are not read).
    pub const fn keeps_owners(self) -> bool {
        matches!(self, Policy::Layer)
    }

    /// The mode bits kept from the archive.
    pub const fn mode_mask(self) -> u32 {
        match self {
            Policy::Upload => 0o777,
            Policy::Layer => 0o7777,
        }
    }

    /// Whether OCI whiteout names become overlayfs whiteouts and opaque markers.
    pub const fn overlay_whiteouts(self) -> bool {
        matches!(self, Policy::Layer)
    }

    /// Whether pax `SCHILY.xattr.*` records are read at all.
    pub const fn reads_xattrs(self) -> bool {
        matches!(self, Policy::Layer)
    }

    /// Whether pax xattr `name` is applied: for layers, file capabilities and the `user.`
    /// namespace. Everything else is dropped, `trusted.overlay.*` above all (a layer must not
    /// forge overlayfs metadata such as redirects or opaque markers other than by whiteout
    /// files) and `security.selinux` (host policy).
    pub fn xattr_kept(self, name: &str) -> bool {
        self.reads_xattrs() && (name == "security.capability" || name.starts_with("user."))
    }

    /// Whether an entry may replace a non-empty directory (removing its tree).
    pub const fn replaces_nonempty_dirs(self) -> bool {
        matches!(self, Policy::Layer)
    }

    /// Whether the archive's entry for `./` sets the target directory's own attributes.
    pub const fn sets_root_attrs(self) -> bool {
        matches!(self, Policy::Layer)
    }

    /// Whether failing to set a directory's attributes is an error (else best effort).
    pub const fn strict_dir_attrs(self) -> bool {
        matches!(self, Policy::Layer)
    }

    /// Whether the extracting process needs a directory's owner permission bits to create
    /// entries in it (an unprivileged user does; host root does not). A directory whose
    /// attributes are applied early (past [`MAX_DEFERRED_DIR_BYTES`]) then keeps `u+rwx`.
    pub const fn needs_owner_access(self) -> bool {
        matches!(self, Policy::Upload)
    }

    /// Most file bytes one extraction may write.
    pub const fn max_total_bytes(self) -> u64 {
        match self {
            Policy::Upload => UPLOAD_MAX_TOTAL_BYTES,
            Policy::Layer => LAYER_MAX_TOTAL_BYTES,
        }
    }
}

/// Why an extraction stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The archive's structure is broken (extension headers, pax records, truncation).
    #[error("invalid archive: {0}")]
    Malformed(String),
    /// An entry is refused (its path, type, link target, header fields) or leaves the
    /// target; the message names the entry.
    #[error("{0}")]
    Refused(String),
    /// A cap was crossed (entries, file bytes).
    #[error("{0}")]
    Limit(String),
    /// Reading the stream failed; the error is the reader's own (callers find their
    /// decompression or body errors inside it).
    #[error("cannot read the archive: {0}")]
    Read(#[source] io::Error),
    /// A filesystem operation on entry `path` (relative to the target) failed.
    #[error("entry {}: {source}", show(path.as_os_str().as_encoded_bytes()))]
    Fs {
        /// The entry, relative to the target directory.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
}

/// What [`extract`] did: the counts as far as it got, and how it ended.
#[derive(Debug)]
pub struct Outcome {
    /// Entries created (the archive's own `./` included; extension headers not counted).
    pub entries: u64,
    /// File bytes written.
    pub bytes: u64,
    /// `Ok` once the whole stream, end-of-archive marker and trailing padding included, has
    /// been read and every entry created.
    pub result: Result<(), Error>,
}

/// Extracts the tar stream `stream` beneath `root` (a descriptor of the target directory,
/// `O_PATH` is enough) under `policy`, then reads the stream to its end (at most
/// [`MAX_TRAILING_BYTES`] after the end-of-archive marker). Directory attributes are applied
/// even after a failure, so what is left looks like the archive said.
pub fn extract<R: Read>(root: OwnedFd, stream: R, policy: Policy) -> Outcome {
    let mut ex = Extractor::new(root, policy);
    let mut archive = tar::Archive::new(stream);
    let result = ex.run(&mut archive);
    let finished = ex.finish_dirs();
    let result = result
        .and(finished)
        .and_then(|()| read_trailer(archive.into_inner()));
    Outcome {
        entries: ex.entries(),
        bytes: ex.bytes(),
        result,
    }
}

/// Reads what follows the end-of-archive marker (checking a compressed stream's trailer on
/// the way), refusing more than [`MAX_TRAILING_BYTES`].
fn read_trailer<R: Read>(rest: R) -> Result<(), Error> {
    let n =
        io::copy(&mut rest.take(MAX_TRAILING_BYTES + 1), &mut io::sink()).map_err(Error::Read)?;
    if n > MAX_TRAILING_BYTES {
        return Err(Error::Refused(
            "unexpected data after the end of the archive".into(),
        ));
    }
    Ok(())
}
