//! `POST /archive` (extract a tar stream into a directory) and `GET /archive` (stream a
//! directory or a file as a tar), both as the requesting user.
//!
//! # Requests
//!
//! The user is the `username` query parameter, else the name in an `Authorization: Basic`
//! header, else the default user (unknown ⇒ 401); `path` is resolved by
//! [`users::resolve_path`] (relative paths are relative to the user's home). Errors are JSON
//! `{"code": <status>, "message": …}` like `/files`.
//!
//! - `POST /archive?path=DIR[&username=U]`: the body is a tar stream, plain, gzip or zstd.
//!   The format comes from `Content-Type` (`application/x-tar`, `application/gzip` or
//!   `application/x-gzip`, `application/zstd`), or from the first bytes when the type is
//!   `application/octet-stream` or missing; anything else is 415, and so is a
//!   `Content-Encoding` other than `identity`. `DIR` is created (with its parents, 0o755) if
//!   missing; an existing `DIR` is merged into. The answer is 200
//!   `{"entries": N, "bytes": M}`: entries extracted (the archive's own `./` included) and
//!   file bytes written. Errors: 400 (bad entry, invalid or truncated archive, more than
//!   16 MiB after the end marker), 401, 403, 413 (a limit), 415, 507 (disk full or quota),
//!   each with `entries` and `bytes` as far as extraction got. After an early error the
//!   rest of the body is still read and discarded for up to [`DRAIN_TIMEOUT`], so an
//!   HTTP/1.1 client that is still sending can finish and read the answer.
//! - `GET /archive?path=P[&format=tar|tar.gz|tar.zst][&username=U]`: a tar of directory `P`
//!   (entries relative to `P`, without an entry for `P` itself) or of file `P` (one entry,
//!   its base name). `Content-Type` is `application/x-tar`, `application/gzip` or
//!   `application/zstd`, with a quoted `Content-Disposition` filename (and an RFC 5987
//!   `filename*` for names that are not plain ASCII).
//!
//! # Extraction policy
//!
//! Extraction runs on one blocking thread inside [`users::as_user`], so the kernel makes
//! every access decision and everything created belongs to the user; the tar uid/gid and
//! names are ignored. The request body is bridged into that thread through a bounded
//! channel ([`BODY_CHANNEL_CHUNKS`] chunks), so it is never buffered whole. The extraction
//! itself is the `paddock-untar` crate under `Policy::Upload` (the layer store uses the same
//! code under `Policy::Layer`). The `tar` crate only parses (in raw mode: GNU long names and
//! pax headers are read there, with size caps, so a huge extension header cannot exhaust
//! memory); its `unpack` is never used. Every entry is created relative to an `O_PATH`
//! descriptor of `DIR`, its parent resolved with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS)` and the entry itself created by name in that parent, never
//! following a final symlink. So:
//! - paths that are absolute or contain `..` are refused (400, naming the entry); `./`
//!   prefixes and empty components are ignored;
//! - symlinks are created as they are, with any target, and never followed while
//!   extracting: a later entry below a symlink that leaves `DIR` (`l -> /`, then
//!   `l/etc/x`) fails with 400 because `RESOLVE_BENEATH` refuses to leave `DIR`; symlinks to
//!   places inside `DIR` are traversed like directories;
//! - hard links must name a target inside `DIR` (same rules as paths; the target's parent
//!   is resolved beneath `DIR` and the link made by name, so it cannot reach elsewhere);
//! - device nodes, FIFOs, sockets, GNU sparse files and other entry types are refused (400);
//! - modes keep only the permission bits (setuid, setgid and sticky are stripped);
//!   directories are created 0o700 and get their mode and mtime at the end, deepest first
//!   (the first 64 MiB of their paths; past that at once, with `u+rwx` kept), so a
//!   read-only directory in the archive does not block its own contents; mtimes are
//!   applied to files, directories and symlinks; pax xattrs are ignored;
//! - an existing non-directory at an entry's place is replaced (unlinked first); an existing
//!   directory is kept for a directory entry (its mode and mtime updated when the user may)
//!   and removed for another entry only if it is empty.
//!
//! **Errors abort the whole request** at the first bad entry or failure. Entries completed
//! before it stay on disk, the file being written when it happened is removed, and the
//! error JSON carries `"entries"` and `"bytes"` written so far next to `code` and
//! `message`. (Removing everything would need a journal of every created path, unbounded
//! in memory; the caps below bound what can be left instead.)
//!
//! # Limits
//!
//! [`MAX_ENTRIES`] entries, [`MAX_PATH_LEN`] bytes per path or link target,
//! [`MAX_TOTAL_BYTES`] file bytes written, [`MAX_STREAM_BYTES`] of decompressed tar stream
//! (data plus headers and padding), and a decompressed:compressed ratio of at most
//! [`MAX_RATIO`]:1 once more than [`RATIO_GRACE_BYTES`] have been decompressed (a bomb
//! stops after about that much output). Crossing one is 413. GNU long names/links are capped
//! at [`MAX_PATH_LEN`] and pax headers at [`MAX_PAX_BYTES`]; zstd frames may use a window of
//! at most 2^[`ZSTD_WINDOW_LOG_MAX`] bytes. A full disk or quota (`ENOSPC`, `EDQUOT`) is 507.
//!
//! # Downloads
//!
//! The archive is generated on a blocking thread as the user and streamed through a bounded
//! channel ([`DOWNLOAD_CHANNEL_CHUNKS`] × [`DOWNLOAD_CHUNK`] bytes), so memory does not grow
//! with the tree. The walk never follows symlinks: every entry is opened relative to the
//! directory with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, symlinks are stored as symlinks,
//! and sockets, FIFOs and devices are skipped without being opened (so a FIFO cannot block
//! the download). Hard-linked files are stored as separate copies. A file's size is taken
//! when it is opened; if it shrinks while being read, the rest is zero-filled so the
//! archive stays well-formed. Entries that vanish during the walk are skipped; any other
//! failure (an unreadable subdirectory, a relative path over 4095 bytes, a symlink swapped
//! into a walked path) ends the response body with an error, so the client sees a broken
//! transfer, never a silently incomplete archive. Errors found before streaming starts are
//! JSON: 400 (bad `format`, `P` is not a regular file or directory), 401, 403, 404.

mod download;
mod upload;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde::Deserialize;

use crate::files::ApiError;
use crate::users::{self, User};

pub use paddock_untar::{MAX_ENTRIES, MAX_PATH_LEN, MAX_PAX_BYTES};
/// Most file bytes one upload may write, after decompression.
pub const MAX_TOTAL_BYTES: u64 = paddock_untar::UPLOAD_MAX_TOTAL_BYTES;
/// Most decompressed tar stream bytes (file data, headers, padding) one upload may carry.
pub const MAX_STREAM_BYTES: u64 = MAX_TOTAL_BYTES + (1 << 30);
/// Highest decompressed:compressed ratio accepted once [`RATIO_GRACE_BYTES`] have been
/// decompressed. Deflate cannot exceed about 1032:1, so only near-pure zeros trip it.
pub const MAX_RATIO: u64 = 1000;
/// Decompressed bytes after which [`MAX_RATIO`] is enforced.
pub const RATIO_GRACE_BYTES: u64 = 64 << 20;
/// Largest zstd window accepted (2^27 = 128 MiB, zstd's own default limit).
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// Request body chunks queued between the protocol thread and the extracting thread.
pub const BODY_CHANNEL_CHUNKS: usize = 16;
/// Size of the pieces a download is sent in.
pub const DOWNLOAD_CHUNK: usize = 256 * 1024;
/// Download pieces queued between the generating thread and the protocol thread.
pub const DOWNLOAD_CHANNEL_CHUNKS: usize = 8;
/// How long the rest of a refused upload's body is still read (and discarded) after the
/// answer, so the client can finish sending and read the error instead of a broken pipe.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Buffer for reading files into a download.
const COPY_BUFFER: usize = 256 * 1024;

/// Routes for `/archive`.
pub fn router() -> Router {
    Router::new()
        .route("/archive", get(download::download).post(upload::upload))
        .layer(DefaultBodyLimit::disable())
}

#[derive(Debug, Deserialize)]
struct ArchiveQuery {
    path: Option<String>,
    username: Option<String>,
    format: Option<String>,
}

fn parse_query(q: Result<Query<ArchiveQuery>, QueryRejection>) -> Result<ArchiveQuery, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|_| ApiError::bad_request("invalid query string"))
}

/// The `username` parameter, else the Basic auth user, else the default user.
fn user_of(q: &ArchiveQuery, headers: &HeaderMap) -> Result<User, ApiError> {
    match q.username.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => users::lookup(n),
        None => users::from_headers(headers),
    }
    .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Tar,
    Gzip,
    Zstd,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Tar => "application/x-tar",
            Format::Gzip => "application/gzip",
            Format::Zstd => "application/zstd",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Tar => ".tar",
            Format::Gzip => ".tar.gz",
            Format::Zstd => ".tar.zst",
        }
    }
}
