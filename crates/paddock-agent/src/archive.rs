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
//! channel ([`BODY_CHANNEL_CHUNKS`] chunks), so it is never buffered whole. The `tar` crate
//! only parses (in raw mode: GNU long names and pax headers are read here, with size caps,
//! so a huge extension header cannot exhaust memory); its `unpack` is never used. Every
//! entry is created relative to an `O_PATH` descriptor of `DIR`, its parent resolved with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` and the entry itself created by name
//! in that parent, never following a final symlink. So:
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
//!   directories are created 0o700 and get their mode and mtime at the end, deepest first,
//!   so a read-only directory in the archive does not block its own contents; mtimes are
//!   applied to files, directories and symlinks;
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

use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures::StreamExt;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::files::ApiError;
use crate::fs as agent_fs;
use crate::users::{self, User};

/// Most entries one upload may contain (extension headers not counted).
pub const MAX_ENTRIES: u64 = 1_000_000;
/// Longest entry path or link target, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Most file bytes one upload may write, after decompression.
pub const MAX_TOTAL_BYTES: u64 = 16 << 30;
/// Most decompressed tar stream bytes (file data, headers, padding) one upload may carry.
pub const MAX_STREAM_BYTES: u64 = MAX_TOTAL_BYTES + (1 << 30);
/// Highest decompressed:compressed ratio accepted once [`RATIO_GRACE_BYTES`] have been
/// decompressed. Deflate cannot exceed about 1032:1, so only near-pure zeros trip it.
pub const MAX_RATIO: u64 = 1000;
/// Decompressed bytes after which [`MAX_RATIO`] is enforced.
pub const RATIO_GRACE_BYTES: u64 = 64 << 20;
/// Largest pax extended header (`x` or `g` entry).
pub const MAX_PAX_BYTES: u64 = 1 << 20;
/// Largest zstd window accepted (2^27 = 128 MiB, zstd's own default limit).
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// Request body chunks queued between the protocol thread and the extracting thread.
pub const BODY_CHANNEL_CHUNKS: usize = 16;
/// Size of the pieces a download is sent in.
pub const DOWNLOAD_CHUNK: usize = 256 * 1024;
/// Download pieces queued between the generating thread and the protocol thread.
pub const DOWNLOAD_CHANNEL_CHUNKS: usize = 8;
/// Path bytes of directories whose mode and mtime wait for the end of an upload; past this
/// budget a directory gets them at once (so an archive of a million deep directories cannot
/// make the list huge), at the price of a possibly later mtime.
const MAX_DEFERRED_DIR_BYTES: usize = 64 << 20;
/// Data allowed after the end-of-archive marker (tar pads to its record size).
const MAX_TRAILING_BYTES: u64 = 16 << 20;
/// How long the rest of a refused upload's body is still read (and discarded) after the
/// answer, so the client can finish sending and read the error instead of a broken pipe.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Buffer for copying entry data to files.
const COPY_BUFFER: usize = 256 * 1024;

/// Routes for `/archive`.
pub fn router() -> Router {
    Router::new()
        .route("/archive", get(download).post(upload))
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

fn unsupported(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
}

/// The upload format the headers declare; `None` means detect it from the bytes.
fn declared_format(headers: &HeaderMap) -> Result<Option<Format>, ApiError> {
    if let Some(enc) = headers.get(header::CONTENT_ENCODING) {
        let enc = enc.to_str().unwrap_or("").trim().to_ascii_lowercase();
        if !enc.is_empty() && enc != "identity" {
            return Err(unsupported(
                "Content-Encoding is not supported here; name the compression in Content-Type",
            ));
        }
    }
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let mime = ct
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "" | "application/octet-stream" => Ok(None),
        "application/x-tar" | "application/tar" => Ok(Some(Format::Tar)),
        "application/gzip" | "application/x-gzip" => Ok(Some(Format::Gzip)),
        "application/zstd" | "application/x-zstd" => Ok(Some(Format::Zstd)),
        _ => Err(unsupported(
            "unsupported Content-Type; supported: application/x-tar, application/gzip, \
             application/zstd, application/octet-stream (detected)",
        )),
    }
}

/// Detects the format from the first bytes of the body.
fn sniff(prefix: &[u8]) -> Result<Format, ApiError> {
    if prefix.starts_with(&[0x1f, 0x8b]) {
        Ok(Format::Gzip)
    } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Format::Zstd)
    } else if prefix.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) || prefix.starts_with(b"BZh") {
        Err(unsupported(
            "unsupported compression; supported: none, gzip, zstd",
        ))
    } else {
        Ok(Format::Tar)
    }
}

/// A short, one-line rendering of an entry name for messages.
fn show(raw: &[u8]) -> String {
    const SHOWN: usize = 200;
    let cut = &raw[..raw.len().min(SHOWN)];
    let s = format!("{:?}", OsStr::from_bytes(cut));
    if raw.len() > SHOWN {
        format!("{s}…")
    } else {
        s
    }
}

fn resolve_beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

/// `openat2` relative to `dir`, never leaving it; an empty `rel` is `dir` itself. Retries
/// the `EAGAIN` the kernel returns when a rename raced with the lookup.
fn open_beneath(
    dir: &OwnedFd,
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
        match rustix::fs::openat2(dir, rel, flags | OFlags::CLOEXEC, mode, resolve) {
            Err(rustix::io::Errno::AGAIN) if tries < 8 => tries += 1,
            r => return r.map_err(Into::into),
        }
    }
}

fn timestamps(secs: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

// ---------------------------------------------------------------------------------------
// Upload
// ---------------------------------------------------------------------------------------

/// A failed upload: the error plus what had been written before it.
struct Failure {
    error: ApiError,
    entries: u64,
    bytes: u64,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "code": self.error.status.as_u16(),
            "message": self.error.message,
            "entries": self.entries,
            "bytes": self.bytes,
        });
        (self.error.status, axum::Json(body)).into_response()
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Failure {
            error,
            entries: 0,
            bytes: 0,
        }
    }
}

/// One piece of the request body on its way to the extracting thread.
enum BodyMsg {
    Data(Bytes),
    End,
    Failed(String),
}

/// A limit was crossed while reading (413).
#[derive(Debug)]
struct LimitExceeded(String);

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LimitExceeded {}

/// The request body broke off (client gone, transfer error).
#[derive(Debug)]
struct BodyFailed(String);

impl std::fmt::Display for BodyFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyFailed {}

/// Maps an error from reading the archive (body, decompression, tar parsing).
fn read_error(e: io::Error) -> ApiError {
    if let Some(l) = e.get_ref().and_then(|i| i.downcast_ref::<LimitExceeded>()) {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, l.0.clone());
    }
    if let Some(b) = e.get_ref().and_then(|i| i.downcast_ref::<BodyFailed>()) {
        return ApiError::bad_request(format!("reading the request body failed: {}", b.0));
    }
    let msg = e.to_string().replace(['\n', '\r'], " ");
    ApiError::bad_request(format!("invalid archive: {msg}"))
}

fn limit(message: String) -> io::Error {
    io::Error::other(LimitExceeded(message))
}

/// Byte counters shared by the reader layers (all on the extracting thread).
#[derive(Default)]
struct Counters {
    /// Request body bytes consumed by the decompressor (exactly, not what it buffered
    /// ahead, which would blur the ratio).
    body: Cell<u64>,
    /// Decompressed tar stream bytes.
    stream: Cell<u64>,
}

/// The request body as a blocking `Read`, fed by the protocol thread through a bounded
/// channel.
struct ChannelReader {
    rx: mpsc::Receiver<BodyMsg>,
    cur: Bytes,
    ended: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.cur.is_empty() {
                let n = buf.len().min(self.cur.len());
                buf[..n].copy_from_slice(&self.cur.split_to(n));
                return Ok(n);
            }
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(BodyMsg::Data(b)) => self.cur = b,
                Some(BodyMsg::End) => self.ended = true,
                Some(BodyMsg::Failed(m)) => return Err(io::Error::other(BodyFailed(m))),
                None => {
                    return Err(io::Error::other(BodyFailed(
                        "the request body ended abruptly".into(),
                    )));
                }
            }
        }
    }
}

/// Counts the compressed bytes the decompressor actually consumes.
struct Consumed<R> {
    inner: R,
    counters: Rc<Counters>,
}

impl<R: BufRead> Read for Consumed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(buf.len());
            buf[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Consumed<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        let c = &self.counters.body;
        c.set(c.get() + n as u64);
        self.inner.consume(n);
    }
}

/// The decompressed stream, counted and held to [`MAX_STREAM_BYTES`] and [`MAX_RATIO`].
struct Limited<R> {
    inner: R,
    counters: Rc<Counters>,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let c = &self.counters;
        let total = c.stream.get() + n as u64;
        c.stream.set(total);
        if total > MAX_STREAM_BYTES {
            return Err(limit(format!(
                "archive stream exceeds {MAX_STREAM_BYTES} bytes"
            )));
        }
        if total > RATIO_GRACE_BYTES && total > MAX_RATIO.saturating_mul(c.body.get()) {
            return Err(limit(format!(
                "archive expands more than {MAX_RATIO}:1 (compression bomb?)"
            )));
        }
        Ok(n)
    }
}

async fn upload(
    query: Result<Query<ArchiveQuery>, QueryRejection>,
    req: Request,
) -> Result<axum::Json<serde_json::Value>, Failure> {
    let (parts, body) = req.into_parts();
    let mut body = body.into_data_stream();
    let result = upload_into(query, &parts.headers, &mut body).await;
    // Whatever the client still sends (after an early error) is read and discarded for a
    // while, so it can finish sending and read the answer instead of failing on a broken
    // pipe. After a complete upload the body is already at its end.
    tokio::spawn(async move {
        let discard = async { while let Some(Ok(_)) = body.next().await {} };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, discard).await;
    });
    result
}

async fn upload_into(
    query: Result<Query<ArchiveQuery>, QueryRejection>,
    headers: &HeaderMap,
    body: &mut axum::body::BodyDataStream,
) -> Result<axum::Json<serde_json::Value>, Failure> {
    let q = parse_query(query)?;
    let user = user_of(&q, headers)?;
    let declared = declared_format(headers)?;
    let Some(target) = q.path.as_deref().filter(|p| !p.is_empty()) else {
        return Err(ApiError::bad_request("the path parameter is required").into());
    };
    let dir = users::resolve_path(&user, target);

    let (tx, rx) = mpsc::channel::<BodyMsg>(BODY_CHANNEL_CHUNKS);
    let u = user.clone();
    let mut task =
        tokio::task::spawn_blocking(move || users::as_user(&u, || extract(&dir, declared, rx)));
    let joined = {
        let pump = pump_body(body, tx);
        tokio::pin!(pump);
        // Feed the body until the extraction is done; if it stops early (an error), the rest
        // of the body is not waited for.
        tokio::select! {
            r = &mut task => r,
            () = &mut pump => task.await,
        }
    };
    let summary = joined.map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "archive extraction failed unexpectedly",
        )
    })??;
    Ok(axum::Json(serde_json::json!({
        "entries": summary.entries,
        "bytes": summary.bytes,
    })))
}

/// Feeds the request body to the extracting thread; stops when it ends, fails, or the
/// extraction no longer reads.
async fn pump_body(body: &mut axum::body::BodyDataStream, tx: mpsc::Sender<BodyMsg>) {
    while let Some(chunk) = body.next().await {
        let msg = match chunk {
            Ok(b) if b.is_empty() => continue,
            Ok(b) => BodyMsg::Data(b),
            Err(e) => {
                let _ = tx.send(BodyMsg::Failed(e.to_string())).await;
                return;
            }
        };
        if tx.send(msg).await.is_err() {
            return; // The extraction has stopped.
        }
    }
    let _ = tx.send(BodyMsg::End).await;
}

struct Summary {
    entries: u64,
    bytes: u64,
}

/// Extracts the body into `dir`. Runs on a blocking thread as the user.
fn extract(
    dir: &Path,
    declared: Option<Format>,
    rx: mpsc::Receiver<BodyMsg>,
) -> Result<Summary, Failure> {
    agent_fs::ensure_dirs(dir).map_err(|e| ApiError::io(&e, dir))?;
    let root = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ApiError::io(&e.into(), dir))?;

    let counters = Rc::new(Counters::default());
    let mut body = ChannelReader {
        rx,
        cur: Bytes::new(),
        ended: false,
    };
    // Read the first bytes to detect the format, then put them back in front.
    let mut magic = [0u8; 6];
    let mut got = 0;
    while got < magic.len() {
        match body.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(e).into()),
        }
    }
    if got == 0 {
        return Err(ApiError::bad_request("the request body is empty").into());
    }
    let format = match declared {
        Some(f) => f,
        None => sniff(&magic[..got])?,
    };
    let raw = Consumed {
        inner: BufReader::with_capacity(
            64 * 1024,
            io::Cursor::new(magic[..got].to_vec()).chain(body),
        ),
        counters: counters.clone(),
    };
    let decoded: Box<dyn Read> = match format {
        Format::Tar => Box::new(raw),
        Format::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
        Format::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(raw).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("zstd decoder: {e}"),
                )
            })?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("zstd decoder: {e}"),
                )
            })?;
            Box::new(d)
        }
    };
    let limited = Limited {
        inner: decoded,
        counters,
    };

    let mut ex = Extractor {
        root,
        dir: dir.to_path_buf(),
        parent: None,
        deferred: Vec::new(),
        deferred_bytes: 0,
        entries: 0,
        bytes: 0,
        buf: vec![0; COPY_BUFFER],
    };
    let mut archive = tar::Archive::new(limited);
    let result = ex.run(&mut archive);
    // Directory modes and mtimes are applied even after a failure, so what is left looks
    // like the archive said.
    let finished = ex.finish_dirs();
    let result = result.and(finished).and_then(|()| {
        // Read to the end: this checks the compressed stream's trailer (gzip CRC) and
        // consumes the whole body; a little padding after the end marker is normal.
        let rest = archive.into_inner();
        let n = io::copy(&mut rest.take(MAX_TRAILING_BYTES + 1), &mut io::sink())
            .map_err(read_error)?;
        if n > MAX_TRAILING_BYTES {
            return Err(ApiError::bad_request(
                "unexpected data after the end of the archive",
            ));
        }
        Ok(())
    });
    match result {
        Ok(()) => Ok(Summary {
            entries: ex.entries,
            bytes: ex.bytes,
        }),
        Err(error) => Err(Failure {
            error,
            entries: ex.entries,
            bytes: ex.bytes,
        }),
    }
}

/// Extension headers seen before the entry they describe.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_link: Option<Vec<u8>>,
    pax_size: Option<u64>,
    pax_mtime: Option<i64>,
    any: bool,
}

/// Checks an entry path (or hard link target) and returns it relative, without `.` or empty
/// components. An empty result means the directory itself.
fn relative_path(raw: &[u8]) -> Result<PathBuf, ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("entry {}: {why}", show(raw)));
    if raw.len() > MAX_PATH_LEN {
        return Err(bad(&format!("path longer than {MAX_PATH_LEN} bytes")));
    }
    if raw.contains(&0) {
        return Err(bad("path contains a NUL byte"));
    }
    if raw.starts_with(b"/") {
        return Err(bad("absolute paths are not allowed"));
    }
    let mut out = PathBuf::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(bad("'..' components are not allowed")),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

/// Reads an extension header's data, refusing more than `max` bytes.
fn read_extension<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    max: u64,
    what: &str,
) -> Result<Vec<u8>, ApiError> {
    let size = entry.size();
    if size > max {
        return Err(ApiError::bad_request(format!(
            "{what} of {size} bytes exceeds the limit of {max} bytes"
        )));
    }
    let mut v = Vec::with_capacity(size as usize);
    entry.read_to_end(&mut v).map_err(read_error)?;
    if v.len() as u64 != size {
        return Err(ApiError::bad_request("invalid archive: truncated"));
    }
    Ok(v)
}

/// A GNU long name or link: NUL-terminated.
fn until_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(i) = v.iter().position(|b| *b == 0) {
        v.truncate(i);
    }
    v
}

struct DeferredDir {
    rel: PathBuf,
    mode: u32,
    mtime: i64,
}

struct Extractor {
    /// `O_PATH` descriptor of the target directory; everything is created beneath it.
    root: OwnedFd,
    /// The target directory's path, for messages.
    dir: PathBuf,
    /// The last parent directory used, since archives list siblings together.
    parent: Option<(PathBuf, Rc<OwnedFd>)>,
    deferred: Vec<DeferredDir>,
    deferred_bytes: usize,
    entries: u64,
    bytes: u64,
    buf: Vec<u8>,
}

impl Extractor {
    /// Maps a filesystem error on entry `rel`.
    fn fs_error(&self, e: &io::Error, rel: &Path) -> ApiError {
        match e.raw_os_error() {
            Some(libc::EXDEV | libc::ELOOP) => ApiError::bad_request(format!(
                "entry {}: resolves outside the target directory (through a symlink)",
                show(rel.as_os_str().as_bytes())
            )),
            _ => ApiError::io(e, &self.dir.join(rel)),
        }
    }

    fn run<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<(), ApiError> {
        let mut pending = Pending::default();
        let entries = archive.entries().map_err(read_error)?.raw(true);
        for entry in entries {
            let mut entry = entry.map_err(read_error)?;
            let kind = entry.header().entry_type().as_byte();
            match kind {
                b'L' => {
                    if pending.long_name.is_some() {
                        return Err(ApiError::bad_request(
                            "invalid archive: two long names for one entry",
                        ));
                    }
                    let v = read_extension(&mut entry, MAX_PATH_LEN as u64 + 1, "long name")?;
                    pending.long_name = Some(until_nul(v));
                    pending.any = true;
                }
                b'K' => {
                    if pending.long_link.is_some() {
                        return Err(ApiError::bad_request(
                            "invalid archive: two long link names for one entry",
                        ));
                    }
                    let v = read_extension(&mut entry, MAX_PATH_LEN as u64 + 1, "long link")?;
                    pending.long_link = Some(until_nul(v));
                    pending.any = true;
                }
                b'x' => {
                    let v = read_extension(&mut entry, MAX_PAX_BYTES, "pax header")?;
                    apply_pax(&v, &mut pending)?;
                    pending.any = true;
                }
                b'g' => {
                    // Global pax headers carry defaults (mostly comments); they are skipped.
                    read_extension(&mut entry, MAX_PAX_BYTES, "pax global header")?;
                }
                _ => {
                    let p = std::mem::take(&mut pending);
                    self.entry(&mut entry, kind, p)?;
                }
            }
        }
        if pending.any {
            return Err(ApiError::bad_request(
                "invalid archive: extension header without an entry after it",
            ));
        }
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: u8,
        p: Pending,
    ) -> Result<(), ApiError> {
        if self.entries >= MAX_ENTRIES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("archive has more than {MAX_ENTRIES} entries"),
            ));
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
        let bad = |why: &str| ApiError::bad_request(format!("entry {}: {why}", show(&raw_path)));
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
        let mode = header.mode().map_err(invalid)? & 0o777;
        let mtime = match p.pax_mtime {
            Some(t) => t,
            None => i64::try_from(header.mtime().map_err(invalid)?).unwrap_or(i64::MAX),
        };
        let rel = relative_path(&raw_path)?;
        let is_dir_name = raw_path.ends_with(b"/");
        match kind {
            b'5' => self.dir(&rel, mode, mtime)?,
            // Pre-POSIX archives mark directories with a trailing slash on a file entry.
            b'0' | 0 if is_dir_name => self.dir(&rel, mode, mtime)?,
            b'0' | 0 | b'7' => self.file(&rel, &raw_path, entry, mode, mtime)?,
            b'2' => {
                let target = raw_link.ok_or_else(|| bad("symlink without a target"))?;
                self.symlink(&rel, &raw_path, &target, mtime)?;
            }
            b'1' => {
                let target = raw_link.ok_or_else(|| bad("hard link without a target"))?;
                self.hardlink(&rel, &raw_path, &target)?;
            }
            b'3' | b'4' => return Err(bad("device nodes are not allowed")),
            b'6' => return Err(bad("FIFOs are not allowed")),
            b'S' => return Err(bad("GNU sparse files are not supported")),
            other => {
                return Err(bad(&format!(
                    "unsupported entry type {:?}",
                    char::from(other)
                )));
            }
        }
        self.entries += 1;
        Ok(())
    }

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
        let is_enoent = |e: &io::Error| e.raw_os_error() == Some(libc::ENOENT);
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
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
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

    /// Makes room for a new entry `name` in `parent`: removes a non-directory, or an empty
    /// directory.
    fn clear(&mut self, parent: &OwnedFd, name: &OsStr) -> io::Result<()> {
        self.parent = None;
        let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let flags = if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        match rustix::fs::unlinkat(parent, name, flags) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn dir(&mut self, rel: &Path, mode: u32, mtime: i64) -> Result<(), ApiError> {
        if rel.as_os_str().is_empty() {
            return Ok(()); // `./`: the target directory itself, left as it is.
        }
        let (parent, name) = self.parent_of(rel).map_err(|e| self.fs_error(&e, rel))?;
        let made = match rustix::fs::mkdirat(&*parent, name, Mode::from_raw_mode(0o700)) {
            Err(rustix::io::Errno::EXIST) => {
                let st = rustix::fs::statat(&*parent, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.fs_error(&e.into(), rel))?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    Ok(())
                } else {
                    self.clear(&parent, name).and_then(|()| {
                        rustix::fs::mkdirat(&*parent, name, Mode::from_raw_mode(0o700))
                            .map_err(Into::into)
                    })
                }
            }
            r => r.map_err(Into::into),
        };
        made.map_err(|e| self.fs_error(&e, rel))?;
        let bytes = rel.as_os_str().len();
        if self.deferred_bytes + bytes <= MAX_DEFERRED_DIR_BYTES {
            self.deferred_bytes += bytes;
            self.deferred.push(DeferredDir {
                rel: rel.to_path_buf(),
                mode,
                mtime,
            });
        } else {
            // Keep it usable for the entries that follow.
            set_dir_attrs(&self.root, rel, mode | 0o700, mtime);
        }
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        rel: &Path,
        raw: &[u8],
        entry: &mut tar::Entry<'_, R>,
        mode: u32,
        mtime: i64,
    ) -> Result<(), ApiError> {
        if rel.as_os_str().is_empty() {
            return Err(ApiError::bad_request(format!(
                "entry {}: not a valid file name",
                show(raw)
            )));
        }
        let (parent, name) = self.parent_of(rel).map_err(|e| self.fs_error(&e, rel))?;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let create = || {
            open_beneath(
                &parent,
                Path::new(name),
                flags | OFlags::NOCTTY,
                Mode::from_raw_mode(0o600),
                resolve_beneath(),
            )
        };
        let fd = match create() {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.clear(&parent, name).and_then(|()| create())
            }
            r => r,
        }
        .map_err(|e| self.fs_error(&e, rel))?;
        let mut file = std::fs::File::from(fd);
        let written = self.copy(entry, &mut file, rel);
        let done = written.and_then(|n| {
            if n != entry.size() {
                return Err(ApiError::bad_request(format!(
                    "entry {}: archive ends inside the entry's data",
                    show(raw)
                )));
            }
            rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
                .and_then(|()| rustix::fs::futimens(&file, &timestamps(mtime)))
                .map_err(|e| self.fs_error(&e.into(), rel))
        });
        if done.is_err() {
            // Never leave a half-written file behind.
            drop(file);
            let _ = rustix::fs::unlinkat(&*parent, name, AtFlags::empty());
        }
        done
    }

    /// Copies an entry's data into `out`, counting towards [`MAX_TOTAL_BYTES`].
    fn copy<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        out: &mut std::fs::File,
        rel: &Path,
    ) -> Result<u64, ApiError> {
        let mut n: u64 = 0;
        loop {
            let got = match entry.read(&mut self.buf) {
                Ok(0) => return Ok(n),
                Ok(g) => g,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(e)),
            };
            if self.bytes + got as u64 > MAX_TOTAL_BYTES {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("archive contents exceed {MAX_TOTAL_BYTES} bytes"),
                ));
            }
            out.write_all(&self.buf[..got])
                .map_err(|e| self.fs_error(&e, rel))?;
            self.bytes += got as u64;
            n += got as u64;
        }
    }

    fn symlink(
        &mut self,
        rel: &Path,
        raw: &[u8],
        target: &[u8],
        mtime: i64,
    ) -> Result<(), ApiError> {
        let bad = |why: &str| ApiError::bad_request(format!("entry {}: {why}", show(raw)));
        if rel.as_os_str().is_empty() {
            return Err(bad("not a valid symlink name"));
        }
        if target.is_empty() || target.len() > MAX_PATH_LEN || target.contains(&0) {
            return Err(bad("invalid symlink target"));
        }
        let target = OsStr::from_bytes(target);
        let (parent, name) = self.parent_of(rel).map_err(|e| self.fs_error(&e, rel))?;
        let made = match rustix::fs::symlinkat(target, &*parent, name) {
            Err(rustix::io::Errno::EXIST) => self
                .clear(&parent, name)
                .and_then(|()| rustix::fs::symlinkat(target, &*parent, name).map_err(Into::into)),
            r => r.map_err(Into::into),
        };
        made.map_err(|e| self.fs_error(&e, rel))?;
        rustix::fs::utimensat(
            &*parent,
            name,
            &timestamps(mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.fs_error(&e.into(), rel))
    }

    fn hardlink(&mut self, rel: &Path, raw: &[u8], target: &[u8]) -> Result<(), ApiError> {
        let bad = |why: &str| ApiError::bad_request(format!("entry {}: {why}", show(raw)));
        let target_rel = relative_path(target)
            .map_err(|_| bad("hard link target must be a relative path inside the directory"))?;
        if rel.as_os_str().is_empty() || target_rel.as_os_str().is_empty() {
            return Err(bad("not a valid hard link"));
        }
        if target_rel == rel {
            return Ok(()); // A link to itself: already there.
        }
        let (Some(tparent), Some(tname)) = (target_rel.parent(), target_rel.file_name()) else {
            return Err(bad("not a valid hard link"));
        };
        let tdir = open_beneath(
            &self.root,
            tparent,
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
            resolve_beneath(),
        )
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => bad("hard link target does not exist"),
            _ => self.fs_error(&e, &target_rel),
        })?;
        let (parent, name) = self.parent_of(rel).map_err(|e| self.fs_error(&e, rel))?;
        // Both ends are a directory descriptor plus one name, and no flag makes the kernel
        // follow a symlink at the target: the link cannot reach outside the directory.
        let link = || rustix::fs::linkat(&tdir, tname, &*parent, name, AtFlags::empty());
        let made = match link() {
            Err(rustix::io::Errno::EXIST) => self
                .clear(&parent, name)
                .and_then(|()| link().map_err(Into::into)),
            r => r.map_err(Into::into),
        };
        made.map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => bad("hard link target does not exist"),
            Some(libc::EPERM) => bad("hard link target is a directory or not permitted"),
            _ => self.fs_error(&e, rel),
        })
    }

    /// Applies the deferred directory modes and mtimes, deepest first.
    fn finish_dirs(&mut self) -> Result<(), ApiError> {
        let mut dirs = std::mem::take(&mut self.deferred);
        dirs.sort_by(|a, b| b.rel.as_os_str().cmp(a.rel.as_os_str()));
        for d in dirs {
            set_dir_attrs(&self.root, &d.rel, d.mode, d.mtime);
        }
        Ok(())
    }
}

/// Sets a directory's mode and mtime, best effort: a directory the user does not own (it
/// existed before) or that was replaced meanwhile keeps what it has.
fn set_dir_attrs(root: &OwnedFd, rel: &Path, mode: u32, mtime: i64) {
    let Ok(fd) = open_beneath(
        root,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        Mode::empty(),
        resolve_beneath(),
    ) else {
        return;
    };
    let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode));
    let _ = rustix::fs::futimens(&fd, &timestamps(mtime));
}

/// Reads the records of a pax header that matter here.
fn apply_pax(data: &[u8], p: &mut Pending) -> Result<(), ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("invalid archive: pax header: {why}"));
    for rec in paddock_core::pax_records(data) {
        let (key, value) = rec.map_err(|_| bad("malformed record"))?;
        match key {
            b"path" => p.pax_path = Some(value.to_vec()),
            b"linkpath" => p.pax_link = Some(value.to_vec()),
            b"size" => {
                let s = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| bad("invalid size"))?;
                p.pax_size = Some(s);
            }
            b"mtime" => {
                let s = std::str::from_utf8(value).map_err(|_| bad("invalid mtime"))?;
                let secs = s.split('.').next().unwrap_or("");
                let t = if secs.is_empty() || secs == "-" {
                    0
                } else {
                    secs.parse::<i64>().map_err(|_| bad("invalid mtime"))?
                };
                p.pax_mtime = Some(t);
            }
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Download
// ---------------------------------------------------------------------------------------

/// What `GET /archive` packs.
enum Source {
    /// A directory, opened for reading.
    Dir(OwnedFd),
    /// A single regular file with its stat, stored under `name`.
    File {
        file: std::fs::File,
        stat: rustix::fs::Stat,
        name: OsString,
    },
}

/// Opens the download's source as the user (following symlinks in `path`, like `/files`).
fn open_source(path: &Path) -> Result<Source, ApiError> {
    let st = rustix::fs::stat(path).map_err(|e| match e {
        rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("path does not exist: {:?}", path.as_os_str()),
        ),
        e => ApiError::io(&e.into(), path),
    })?;
    let io_err = |e: rustix::io::Errno| ApiError::io(&e.into(), path);
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {
            let fd = rustix::fs::open(
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io_err)?;
            Ok(Source::Dir(fd))
        }
        FileType::RegularFile => {
            let fd = rustix::fs::open(
                path,
                OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io_err)?;
            let stat = rustix::fs::fstat(&fd).map_err(io_err)?;
            if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
                return Err(ApiError::bad_request(format!(
                    "path is not a regular file or directory: {:?}",
                    path.as_os_str()
                )));
            }
            let name = path
                .file_name()
                .map(OsStr::to_os_string)
                .unwrap_or_else(|| "file".into());
            Ok(Source::File {
                file: std::fs::File::from(fd),
                stat,
                name,
            })
        }
        _ => Err(ApiError::bad_request(format!(
            "path is not a regular file or directory: {:?}",
            path.as_os_str()
        ))),
    }
}

/// `attachment; filename="…"` with a quoted ASCII fallback and, when the name is not plain
/// ASCII, an RFC 5987 `filename*`.
fn content_disposition(name: &OsStr, ext: &str) -> String {
    let full = format!("{}{ext}", String::from_utf8_lossy(name.as_bytes()));
    let ascii: String = full
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() || c == ' ') && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if ascii == full {
        format!("attachment; filename=\"{ascii}\"")
    } else {
        // RFC 5987 attr-char keeps these unescaped.
        const ATTR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'.')
            .remove(b'-')
            .remove(b'_')
            .remove(b'~');
        let encoded = percent_encoding::utf8_percent_encode(&full, ATTR);
        format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
    }
}

async fn download(
    query: Result<Query<ArchiveQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = parse_query(query)?;
    let user = user_of(&q, &headers)?;
    let format = match q.format.as_deref().unwrap_or("tar") {
        "" | "tar" => Format::Tar,
        "tar.gz" | "tgz" => Format::Gzip,
        "tar.zst" | "tzst" => Format::Zstd,
        other => {
            return Err(ApiError::bad_request(format!(
                "unsupported format {other:?}; supported: tar, tar.gz, tar.zst"
            )));
        }
    };
    let path = users::resolve_path(&user, q.path.as_deref().unwrap_or(""));
    let p = path.clone();
    let source = agent_fs::run_as(&user, move || open_source(&p)).await??;
    let name = match &source {
        Source::File { name, .. } => name.clone(),
        Source::Dir(_) => path
            .file_name()
            .map(OsStr::to_os_string)
            .unwrap_or_else(|| "archive".into()),
    };

    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(DOWNLOAD_CHANNEL_CHUNKS);
    tokio::task::spawn_blocking(move || {
        users::as_user(&user, || {
            let out = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(DOWNLOAD_CHUNK),
            };
            if let Err(e) = write_archive(source, format, out) {
                // Ends the body with an error: the client sees a broken transfer.
                let _ = tx.blocking_send(Err(e));
            }
        })
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let disposition = HeaderValue::from_str(&content_disposition(&name, format.extension()))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, format.content_type())
        .header(header::CONTENT_DISPOSITION, disposition)
        .body(Body::from_stream(stream))
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "building the response"))
}

/// Sends what is written in [`DOWNLOAD_CHUNK`] pieces through a bounded channel; a full
/// channel blocks the writer, a closed one (the client went away) fails it.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(DOWNLOAD_CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }

    fn finish(mut self) -> io::Result<()> {
        self.send()
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(DOWNLOAD_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= DOWNLOAD_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_archive(source: Source, format: Format, out: ChannelWriter) -> io::Result<()> {
    match format {
        Format::Tar => build(source, out)?.finish(),
        Format::Gzip => {
            let enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            build(source, enc)?.finish()?.finish()
        }
        Format::Zstd => {
            let enc = zstd::stream::write::Encoder::new(out, 3)?;
            build(source, enc)?.finish()?.finish()
        }
    }
}

fn header_for(st: &rustix::fs::Stat, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
    h.set_size(size);
    h
}

/// Exactly `size` bytes of `file`: zero-filled if it shrank, cut if it grew.
fn exact(file: std::fs::File, size: u64) -> impl Read {
    BufReader::with_capacity(COPY_BUFFER, file.take(size).chain(io::repeat(0)).take(size))
}

fn build<W: Write>(source: Source, out: W) -> io::Result<W> {
    let mut b = tar::Builder::new(out);
    match source {
        Source::File { file, stat, name } => {
            let size = u64::try_from(stat.st_size).unwrap_or(0);
            let mut h = header_for(&stat, tar::EntryType::Regular, size);
            b.append_data(&mut h, Path::new(&name), exact(file, size))?;
        }
        Source::Dir(root) => walk(&mut b, &root)?,
    }
    b.into_inner()
}

/// Appends a symlink with its target stored byte for byte (the `tar` crate's link-name
/// setter normalises paths, turning `/` into `//`), in a GNU long-link entry if it does not
/// fit the header.
fn append_symlink<W: Write>(
    b: &mut tar::Builder<W>,
    h: &mut tar::Header,
    rel: &Path,
    target: &[u8],
) -> io::Result<()> {
    let field = &mut h.as_old_mut().linkname;
    if target.len() <= field.len() {
        field.fill(0);
        field[..target.len()].copy_from_slice(target);
    } else {
        let mut long = tar::Header::new_gnu();
        long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        long.set_entry_type(tar::EntryType::GNULongLink);
        long.set_mode(0o644);
        long.set_size(target.len() as u64 + 1);
        long.set_cksum();
        b.append(&long, target.chain(&[0u8][..]))?;
    }
    b.append_data(h, rel, io::empty())
}

fn walk_resolve() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// The names in directory `rel` (beneath `root`), sorted bytewise.
fn list(root: &OwnedFd, rel: &Path) -> io::Result<Vec<PathBuf>> {
    let fd = open_beneath(
        root,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        Mode::empty(),
        walk_resolve(),
    )?;
    let mut dir = rustix::fs::Dir::read_from(&fd)?;
    let mut names = Vec::new();
    while let Some(ent) = dir.read() {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsString::from_vec(n.to_vec()));
        }
    }
    names.sort();
    Ok(names.into_iter().map(|n| rel.join(n)).collect())
}

/// Appends the tree under `root` depth first in name order, without following symlinks.
fn walk<W: Write>(b: &mut tar::Builder<W>, root: &OwnedFd) -> io::Result<()> {
    let mut stack: Vec<PathBuf> = list(root, Path::new(""))?;
    stack.reverse();
    while let Some(rel) = stack.pop() {
        let opath = match open_beneath(
            root,
            &rel,
            OFlags::PATH | OFlags::NOFOLLOW,
            Mode::empty(),
            walk_resolve(),
        ) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue, // Gone meanwhile.
            Err(e) => return Err(e),
        };
        let st = rustix::fs::fstat(&opath)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let mut h = header_for(&st, tar::EntryType::Directory, 0);
                b.append_data(&mut h, &rel, io::empty())?;
                let mut children = match list(root, &rel) {
                    Ok(c) => c,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(e),
                };
                children.reverse();
                stack.append(&mut children);
            }
            FileType::RegularFile => {
                let fd = match open_beneath(
                    root,
                    &rel,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY,
                    Mode::empty(),
                    walk_resolve(),
                ) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(e),
                };
                let st = rustix::fs::fstat(&fd)?;
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                    continue; // Swapped for something else meanwhile.
                }
                let size = u64::try_from(st.st_size).unwrap_or(0);
                let mut h = header_for(&st, tar::EntryType::Regular, size);
                b.append_data(&mut h, &rel, exact(std::fs::File::from(fd), size))?;
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(&opath, "", Vec::new())?;
                let mut h = header_for(&st, tar::EntryType::Symlink, 0);
                append_symlink(b, &mut h, &rel, target.as_bytes())?;
            }
            // Sockets, FIFOs and devices are not archived (and never opened).
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        let ok = |s: &[u8]| relative_path(s).map_err(|e| e.message);
        assert_eq!(ok(b"a/b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(ok(b"./a//b/./").unwrap(), PathBuf::from("a/b"));
        assert_eq!(ok(b"./").unwrap(), PathBuf::new());
        assert!(ok(b"../x").unwrap_err().contains("'..'"));
        assert!(ok(b"a/../../x").is_err());
        assert!(ok(b"/etc/passwd").unwrap_err().contains("absolute"));
        assert!(ok(b"a\0b").is_err());
        assert!(ok(&vec![b'a'; MAX_PATH_LEN + 1]).is_err());
        assert!(ok(b"a\nb/\xff").is_ok());
    }

    #[test]
    fn formats() {
        let mut h = HeaderMap::new();
        assert_eq!(declared_format(&h).ok(), Some(None));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/gzip"),
        );
        assert_eq!(declared_format(&h).ok(), Some(Some(Format::Gzip)));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/X-Tar; charset=binary"),
        );
        assert_eq!(declared_format(&h).ok(), Some(Some(Format::Tar)));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(
            declared_format(&h).map_err(|e| e.status).err(),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(sniff(&[0x1f, 0x8b, 8]).ok(), Some(Format::Gzip));
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]).ok(), Some(Format::Zstd));
        assert_eq!(sniff(b"hello.txt").ok(), Some(Format::Tar));
        assert!(sniff(b"BZh91AY").is_err());
    }

    #[test]
    fn disposition_is_quoted() {
        assert_eq!(
            content_disposition(OsStr::new("data"), ".tar"),
            "attachment; filename=\"data.tar\""
        );
        let d = content_disposition(OsStr::from_bytes(b"a\"b\n\xffc"), ".tar.gz");
        assert!(d.starts_with("attachment; filename=\"a_b__c.tar.gz\"; filename*=UTF-8''"));
        assert!(HeaderValue::from_str(&d).is_ok());
    }

    #[test]
    fn pax_records() {
        let mut p = Pending::default();
        let rec = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            let mut len = body.len();
            while len.to_string().len() + body.len() != len {
                len = len.to_string().len() + body.len();
            }
            format!("{len}{body}")
        };
        let data = format!(
            "{}{}{}",
            rec("path", "x/y"),
            rec("mtime", "1700000000.5"),
            rec("size", "12")
        );
        apply_pax(data.as_bytes(), &mut p).expect("pax");
        assert_eq!(p.pax_path.as_deref(), Some(&b"x/y"[..]));
        assert_eq!(p.pax_mtime, Some(1_700_000_000));
        assert_eq!(p.pax_size, Some(12));
    }
}
