//! `GET /files` (download) and `POST /files` (upload), envd's plain HTTP file endpoints.
//!
//! Both stream: a download is read from the file in chunks (gzip-compressed on the fly when
//! the client accepts it) and an upload is written to disk as it arrives, so neither ever
//! holds a whole file in memory. The file is opened on a blocking thread inside
//! [`users::as_user`], so the kernel makes the access decision and new files belong to the
//! user; the open descriptor then carries that decision while tokio streams the data.
//!
//! Users come from the `username` query parameter (unknown ⇒ 401), paths from `path`
//! resolved by [`users::resolve_path`]. Errors are JSON `{"code": <status>, "message": …}`,
//! which the SDKs read.
//!
//! Uploads accept `multipart/form-data` (one part per file, field name `file`, the
//! part's filename is the target path; the `path` parameter, when given, names the target
//! instead) and raw bodies (`application/octet-stream`, `path` required), either optionally
//! `Content-Encoding: gzip`. `X-Metadata-<Key>` headers replace the uploaded files'
//! metadata (stored as xattrs `user.e2b.<key>`); they must be printable ASCII.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Query, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use flate2::Compression;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fs as agent_fs;
use crate::users::{self, User};

mod raw;
pub use raw::{LENGTH_HEADER as RAW_LENGTH_HEADER, UPGRADE as RAW_UPGRADE};

/// Largest single file `POST /files` accepts: 16 GiB, after decompression. A larger
/// upload is refused with 413 (up front when `Content-Length` already says so, otherwise
/// as soon as the limit is crossed, and the partly written new file is removed). The
/// sandbox's disk quota is the real limit; this cap only bounds a single runaway request.
pub const MAX_UPLOAD_BYTES: u64 = 16 << 30;

/// Chunk size for reading downloads.
const READ_CHUNK: usize = 512 * 1024;
/// Compressed bytes fed to the gzip decoder at a time. Deflate expands at most ~1:1032,
/// so one step can produce about 4 MiB, which bounds a decompression bomb's memory.
const GUNZIP_STEP: usize = 4 * 1024;

/// Routes for `/files`.
pub fn router() -> Router {
    Router::new()
        .route("/files", get(download).post(upload))
        // Uploads are streamed to disk and capped per file by MAX_UPLOAD_BYTES, so axum's
        // whole-body limit (2 MiB by default, applied to multipart) must not apply.
        .layer(DefaultBodyLimit::disable())
}

/// An error response: `{"code": <status>, "message": <one line>}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("file exceeds the upload limit of {MAX_UPLOAD_BYTES} bytes"),
        )
    }

    /// Maps an I/O error on `path`. Paths are quoted with `{:?}` so a client-chosen name
    /// cannot break the message over lines.
    pub(crate) fn io(e: &io::Error, path: &Path) -> Self {
        let p = path.as_os_str();
        if p.as_encoded_bytes().contains(&0) {
            // The kernel never saw it: a C string cannot hold it. The client's mistake.
            return Self::new(StatusCode::BAD_REQUEST, "path must not contain NUL bytes");
        }
        let (status, message) = match e.raw_os_error() {
            Some(libc::ENOENT) => (StatusCode::NOT_FOUND, format!("path not found: {p:?}")),
            Some(libc::EACCES | libc::EPERM) => {
                (StatusCode::FORBIDDEN, format!("permission denied: {p:?}"))
            }
            Some(libc::EROFS) => (
                StatusCode::FORBIDDEN,
                format!("read-only file system: {p:?}"),
            ),
            Some(libc::ENOSPC | libc::EDQUOT) => (
                StatusCode::INSUFFICIENT_STORAGE,
                "not enough disk space available".to_owned(),
            ),
            Some(libc::EFBIG) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("file too large for the file system: {p:?}"),
            ),
            Some(libc::ENOTDIR | libc::EEXIST) => (
                StatusCode::BAD_REQUEST,
                format!("a component of the path is not a directory: {p:?}"),
            ),
            Some(libc::EISDIR) => (
                StatusCode::BAD_REQUEST,
                format!("path is a directory: {p:?}"),
            ),
            Some(libc::ELOOP) => (
                StatusCode::BAD_REQUEST,
                format!("too many levels of symbolic links: {p:?}"),
            ),
            Some(libc::ENAMETOOLONG) => (StatusCode::BAD_REQUEST, "path is too long".to_owned()),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("file operation on {p:?} failed: {e}"),
            ),
        };
        Self::new(status, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "code": self.status.as_u16(),
            "message": self.message,
        });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<connectrpc::ConnectError> for ApiError {
    fn from(e: connectrpc::ConnectError) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.message.unwrap_or_else(|| "internal error".to_owned()),
        )
    }
}

#[derive(Debug, Deserialize)]
struct FilesQuery {
    path: Option<String>,
    username: Option<String>,
}

fn parse_query(q: Result<Query<FilesQuery>, QueryRejection>) -> Result<FilesQuery, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|_| ApiError::bad_request("invalid query string"))
}

fn user_of(q: &FilesQuery) -> Result<User, ApiError> {
    let name = q.username.as_deref().filter(|n| !n.is_empty());
    users::by_name_or_default(name)
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))
}

// ---------------------------------------------------------------------------------------
// Download
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

/// Picks the response encoding from `Accept-Encoding` like envd: the highest-quality
/// acceptable coding among gzip and identity, `*` meaning identity unless identity was
/// refused. `None` when the client refuses everything we can send (406).
fn choose_encoding(accept: Option<&str>) -> Option<Encoding> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(Encoding::Identity);
    };
    let mut offers: Vec<(String, f32)> = accept
        .split(',')
        .map(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| {
                    let p = p.trim();
                    p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="))
                })
                .find_map(|v| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (coding, q)
        })
        .collect();
    // Stable sort: among equal qualities the client's order decides.
    offers.sort_by(|a, b| b.1.total_cmp(&a.1));
    let identity_refused = offers.iter().any(|(c, q)| c == "identity" && *q <= 0.0);
    for (coding, q) in &offers {
        if *q <= 0.0 {
            continue;
        }
        match coding.as_str() {
            "gzip" | "x-gzip" => return Some(Encoding::Gzip),
            "identity" => return Some(Encoding::Identity),
            "*" if identity_refused => return Some(Encoding::Gzip),
            "*" => return Some(Encoding::Identity),
            _ => {}
        }
    }
    (!identity_refused).then_some(Encoding::Identity)
}

/// Opens a regular file for reading, as the user. Everything else is refused from its
/// `stat` before any open, so a FIFO or device can neither block nor be triggered;
/// `O_NONBLOCK` and a second check on the descriptor cover a swap between the two.
fn open_for_download(path: &Path) -> Result<(std::fs::File, u64), ApiError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR) => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("path does not exist: {:?}", path.as_os_str()),
        ),
        _ => ApiError::io(&e, path),
    })?;
    check_regular(&meta, path)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| ApiError::io(&e, path))?;
    let meta = file.metadata().map_err(|e| ApiError::io(&e, path))?;
    check_regular(&meta, path)?;
    Ok((file, meta.len()))
}

fn check_regular(meta: &std::fs::Metadata, path: &Path) -> Result<(), ApiError> {
    if meta.is_dir() {
        return Err(ApiError::bad_request(format!(
            "path is a directory: {:?}",
            path.as_os_str()
        )));
    }
    if !meta.is_file() {
        return Err(ApiError::bad_request(format!(
            "path is not a regular file: {:?}",
            path.as_os_str()
        )));
    }
    Ok(())
}

async fn download(
    query: Result<Query<FilesQuery>, QueryRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let (mut parts, _) = req.into_parts();
    let headers = &parts.headers;
    let q = parse_query(query)?;
    let user = user_of(&q)?;
    let path = users::resolve_path(&user, q.path.as_deref().unwrap_or(""));
    let accept = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let p = path.clone();
    let (file, size) = agent_fs::run_as(&user, move || open_for_download(&p)).await??;
    let encoding = choose_encoding(accept).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "no acceptable content encoding; supported: gzip, identity",
        )
    })?;
    if encoding == Encoding::Identity
        && size > 0
        && raw::wanted(headers)
        && let Some(on) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    {
        return Ok(raw::send_file(on, file, size));
    }

    let file = tokio::fs::File::from_std(file);
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::VARY, "accept-encoding");
    let body = match encoding {
        Encoding::Identity if size > 0 => {
            // Sending exactly the size stat reported keeps Content-Length truthful even if
            // the file grows while it is read.
            resp = resp.header(header::CONTENT_LENGTH, size);
            let s = tokio_util::io::ReaderStream::with_capacity(file.take(size), READ_CHUNK);
            Body::from_stream(s)
        }
        // Size 0 may be a generated file (as in /proc) whose length stat does not know.
        Encoding::Identity => Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            file, READ_CHUNK,
        )),
        Encoding::Gzip => {
            resp = resp.header(header::CONTENT_ENCODING, "gzip");
            let s = tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK);
            Body::from_stream(gzip_stream(s))
        }
    };
    resp.body(body)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "building the response"))
}

/// Compresses a byte stream with gzip as it flows. The fast level keeps the CPU cost per
/// chunk small, since compression runs on the protocol thread.
fn gzip_stream<S>(input: S) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static
where
    S: Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static,
{
    let enc = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
    futures::stream::unfold(Some((input, enc)), |state| async move {
        let (mut input, mut enc) = state?;
        loop {
            match input.next().await {
                Some(Ok(chunk)) => {
                    if let Err(e) = enc.write_all(&chunk) {
                        return Some((Err(e), None));
                    }
                    let out = std::mem::take(enc.get_mut());
                    if !out.is_empty() {
                        return Some((Ok(Bytes::from(out)), Some((input, enc))));
                    }
                }
                Some(Err(e)) => return Some((Err(e), None)),
                None => {
                    return match enc.finish() {
                        Ok(rest) => Some((Ok(Bytes::from(rest)), None)),
                        Err(e) => Some((Err(e), None)),
                    };
                }
            }
        }
    })
}

/// Decompresses a gzip byte stream (one or more members) as it flows, feeding the decoder
/// [`GUNZIP_STEP`] bytes at a time so its output per step stays bounded. Corrupt or
/// truncated input ends the stream with an `InvalidData` error.
fn gunzip_stream<S>(input: S) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static
where
    S: Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static,
{
    let dec = flate2::write::MultiGzDecoder::new(Vec::new());
    futures::stream::unfold(Some((input, dec, Bytes::new())), |state| async move {
        let (mut input, mut dec, mut pending) = state?;
        let invalid = |e: io::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        loop {
            if !pending.is_empty() {
                let piece = pending.split_to(pending.len().min(GUNZIP_STEP));
                if let Err(e) = dec.write_all(&piece).and_then(|()| dec.flush()) {
                    return Some((Err(invalid(e)), None));
                }
                let out = std::mem::take(dec.get_mut());
                if !out.is_empty() {
                    return Some((Ok(Bytes::from(out)), Some((input, dec, pending))));
                }
                continue;
            }
            match input.next().await {
                Some(Ok(chunk)) => pending = chunk,
                Some(Err(e)) => return Some((Err(e), None)),
                None => {
                    return match dec.try_finish() {
                        Err(e) => Some((Err(invalid(e)), None)),
                        Ok(()) => {
                            let out = std::mem::take(dec.get_mut());
                            (!out.is_empty()).then(|| (Ok(Bytes::from(out)), None))
                        }
                    };
                }
            }
        }
    })
}

// ---------------------------------------------------------------------------------------
// Upload
// ---------------------------------------------------------------------------------------

/// One uploaded file in the response.
#[derive(Debug, Serialize)]
struct Uploaded {
    path: String,
    name: String,
    r#type: &'static str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
}

/// Collects `X-Metadata-<Key>` headers (keys lower-cased, as HTTP header names already
/// are) and checks them like envd: printable ASCII, key at most 246 bytes, 4 KiB in all.
fn metadata_from_headers(headers: &HeaderMap) -> Result<BTreeMap<String, String>, ApiError> {
    let printable = |b: &[u8]| b.iter().all(|c| (0x20..=0x7e).contains(c));
    let mut out = BTreeMap::new();
    let mut total = 0;
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix("x-metadata-") else {
            continue;
        };
        if key.is_empty() || key.len() > agent_fs::MAX_METADATA_KEY || !printable(key.as_bytes()) {
            return Err(ApiError::bad_request(format!(
                "invalid metadata key {key:?}: must be 1 to {} printable ASCII characters",
                agent_fs::MAX_METADATA_KEY
            )));
        }
        if !printable(value.as_bytes()) {
            return Err(ApiError::bad_request(format!(
                "metadata value for {key:?} must be printable ASCII"
            )));
        }
        // Header values are valid ASCII here, so this conversion cannot lose anything.
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        total += agent_fs::XATTR_PREFIX.len() + key.len() + value.len();
        out.insert(key.to_ascii_lowercase(), value);
    }
    if total > agent_fs::MAX_METADATA_TOTAL {
        return Err(ApiError::bad_request(format!(
            "metadata exceeds {} bytes in total",
            agent_fs::MAX_METADATA_TOTAL
        )));
    }
    Ok(out)
}

fn content_is_gzip(headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(v) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(false);
    };
    let v = v.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match v.as_str() {
        "" | "identity" => Ok(false),
        "gzip" | "x-gzip" => Ok(true),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported Content-Encoding; supported: gzip, identity",
        )),
    }
}

type ByteStream<'a> = std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'a>>;

async fn upload(
    query: Result<Query<FilesQuery>, QueryRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let q = parse_query(query)?;
    let user = user_of(&q)?;
    let (parts, body) = req.into_parts();
    let metadata = metadata_from_headers(&parts.headers)?;
    let gzip = content_is_gzip(&parts.headers)?;
    let multipart = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    let target = q.path.as_deref().filter(|p| !p.is_empty());

    if !gzip
        && !multipart
        && raw::wanted(&parts.headers)
        && let Some(target) = target
    {
        let len = raw::announced_length(&parts.headers)?;
        if len > MAX_UPLOAD_BYTES {
            return Err(ApiError::too_large());
        }
        let mut parts = parts;
        let Some(on) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return Err(ApiError::bad_request("this connection cannot be upgraded"));
        };
        let path = users::resolve_path(&user, target);
        let p = path.clone();
        let (file, created) = agent_fs::run_as(&user, move || open_for_upload(&p)).await??;
        let cleanup = RemoveUnlessKept {
            user: user.clone(),
            path: created.then(|| path.clone()),
        };
        return Ok(raw::receive_file(
            on,
            raw::Upload {
                user,
                path,
                file,
                cleanup,
                metadata,
                len,
            },
        ));
    }

    if !gzip && !multipart {
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_UPLOAD_BYTES) {
            return Err(ApiError::too_large());
        }
    }
    let raw = body.into_data_stream().map_err(io::Error::other);
    let stream: ByteStream<'static> = if gzip {
        Box::pin(gunzip_stream(raw))
    } else {
        Box::pin(raw)
    };

    if !multipart {
        let Some(target) = target else {
            return Err(ApiError::bad_request(
                "the path parameter is required for a non-multipart upload",
            ));
        };
        let path = users::resolve_path(&user, target);
        let done = write_file(&user, path, stream, &metadata).await?;
        return Ok(axum::Json(vec![done]).into_response());
    }

    // The (possibly decompressed) body goes back into the request so axum's multipart
    // parser sees the original headers (the boundary) and extensions (the disabled body
    // limit).
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = SharedBody(std::sync::Arc::new(std::sync::Mutex::new(stream)));
    let inner = Request::from_parts(parts, Body::from_stream(body.clone()));
    // Parsed in a block so that the rest of the body is read whatever the outcome: an
    // answer given with bytes unread (after the closing boundary, or after a refused part)
    // closes the connection under a client still sending them, which then sees a failed
    // write instead of the answer.
    let parsed = async {
        let mut form = Multipart::from_request(inner, &())
            .await
            .map_err(|e| ApiError::bad_request(format!("invalid multipart body: {}", e.body_text())))?;
        let mut done: Vec<Uploaded> = Vec::new();
        loop {
            let field = match form.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    return Err(ApiError::new(
                        e.status(),
                        format!("invalid multipart body: {}", e.body_text()),
                    ));
                }
            };
            if field.name() != Some("file") {
                continue;
            }
            let Some(name) = target.or(field.file_name()).filter(|n| !n.is_empty()) else {
                return Err(ApiError::bad_request(
                    "a file part needs a filename or the path parameter",
                ));
            };
            let path = users::resolve_path(&user, name);
            let abs = path.to_string_lossy();
            if done.iter().any(|d| d.path == abs) {
                return Err(ApiError::bad_request(format!(
                    "cannot upload several files to the same path {abs:?} in one request; only the first was written"
                )));
            }
            let s: ByteStream<'_> = Box::pin(field.map_err(io::Error::other));
            done.push(write_file(&user, path, s, &metadata).await?);
        }
        if done.is_empty() {
            return Err(ApiError::bad_request(
                "the multipart body has no part named \"file\"",
            ));
        }
        Ok(done)
    }
    .await;
    body.drain_epilogue().await;
    Ok(axum::Json(parsed?).into_response())
}

/// Most of a multipart body's rest read before the answer: its epilogue after the closing
/// boundary (RFC 2046: clients send a CRLF, or nothing), or what follows a refused part.
const EPILOGUE_MAX: usize = 64 << 10;

/// The body under the multipart parser, shared so that its rest can be read once the
/// parser is done (the parser stops at the closing boundary).
#[derive(Clone)]
struct SharedBody(std::sync::Arc<std::sync::Mutex<ByteStream<'static>>>);

impl Stream for SharedBody {
    type Item = io::Result<Bytes>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        crate::lock(&self.0).as_mut().poll_next(cx)
    }
}

impl SharedBody {
    /// Reads the rest of the body, up to [`EPILOGUE_MAX`] bytes and for at most a second;
    /// a body longer or slower than that is left (its connection is then closed).
    async fn drain_epilogue(mut self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            let mut seen = 0;
            while let Some(Ok(chunk)) = self.next().await {
                seen += chunk.len();
                if seen > EPILOGUE_MAX {
                    break;
                }
            }
        })
        .await;
    }
}

/// Opens `path` for an upload as the user: creates missing parent directories (0o755),
/// refuses directories and non-regular files (checked before opening and again on the
/// descriptor, with `O_NONBLOCK` so a FIFO swapped in cannot block), truncates an existing
/// file and creates a new one with mode 0o644 whatever the umask. Returns whether the file
/// was created, so a failed upload can remove it again.
fn open_for_upload(path: &Path) -> Result<(std::fs::File, bool), ApiError> {
    if let Some(parent) = path.parent() {
        agent_fs::ensure_dirs(parent).map_err(|e| ApiError::io(&e, parent))?;
    }
    match std::fs::metadata(path) {
        Ok(m) => check_regular(&m, path)?,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(ApiError::io(&e, path)),
    }
    let flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(flags)
        .open(path);
    let (file, created) = match created {
        Ok(f) => {
            // Only when the umask narrowed it: a needless chmod would show up in watches
            // as an extra CHMOD event.
            let mode = f.metadata().map_err(|e| ApiError::io(&e, path))?.mode();
            if mode & 0o7777 != 0o644 {
                f.set_permissions(std::fs::Permissions::from_mode(0o644))
                    .map_err(|e| ApiError::io(&e, path))?;
            }
            (f, true)
        }
        // It exists (or is a dangling symlink, which the open below creates through).
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .custom_flags(flags)
                .open(path)
                .map_err(|e| ApiError::io(&e, path))?;
            (f, false)
        }
        Err(e) => return Err(ApiError::io(&e, path)),
    };
    let meta = file.metadata().map_err(|e| ApiError::io(&e, path))?;
    check_regular(&meta, path)?;
    // Writes to a regular file never block; clear the flag anyway so the descriptor is
    // an ordinary one.
    rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::empty())
        .map_err(|e| ApiError::io(&e.into(), path))?;
    Ok((file, created))
}

/// Removes the file an upload created unless the upload completes. It acts on drop, so an
/// upload abandoned half-way is cleaned up too, including when the client disconnects and
/// the server drops the request handler at an await point.
struct RemoveUnlessKept {
    user: User,
    path: Option<PathBuf>,
}

impl RemoveUnlessKept {
    fn keep(mut self) {
        self.path = None;
    }

    /// Removes the file now and waits for it, so an answer sent afterwards never races the
    /// removal.
    async fn discard(mut self) {
        if let Some(path) = self.path.take() {
            let _ = agent_fs::run_as(&self.user, move || std::fs::remove_file(&path)).await;
        }
    }
}

impl Drop for RemoveUnlessKept {
    fn drop(&mut self) {
        let Some(path) = self.path.take() else {
            return;
        };
        let user = self.user.clone();
        // Drop runs on the protocol thread: the removal goes to a blocking thread, as the
        // user like every other file operation.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn_blocking(move || users::as_user(&user, || std::fs::remove_file(&path)));
        }
    }
}

/// Streams one upload into `path` and applies `metadata`. If anything fails, a file this
/// upload created is removed again, so a refused or broken upload leaves nothing
/// half-written (an existing file was already truncated and stays so).
async fn write_file(
    user: &User,
    path: PathBuf,
    mut body: ByteStream<'_>,
    metadata: &BTreeMap<String, String>,
) -> Result<Uploaded, ApiError> {
    let p = path.clone();
    let (file, created) = agent_fs::run_as(user, move || open_for_upload(&p)).await??;
    let cleanup = RemoveUnlessKept {
        user: user.clone(),
        path: created.then(|| path.clone()),
    };
    // Body frames are small (tens of KiB); batching them into large writes keeps the
    // number of blocking-thread hops per GiB low.
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file));
    let mut written: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(body_error)?;
        written += chunk.len() as u64;
        if written > MAX_UPLOAD_BYTES {
            return Err(ApiError::too_large());
        }
        out.write_all(&chunk)
            .await
            .map_err(|e| ApiError::io(&e, &path))?;
    }
    // tokio writes in the background; flushing waits for the last write and surfaces its
    // error (ENOSPC shows up here).
    out.flush().await.map_err(|e| ApiError::io(&e, &path))?;
    let file = out.into_inner().into_std().await;
    finish_upload(user, path, file, metadata, cleanup).await
}

/// Applies `metadata` to a fully written upload and keeps the file.
async fn finish_upload(
    user: &User,
    path: PathBuf,
    file: std::fs::File,
    metadata: &BTreeMap<String, String>,
    cleanup: RemoveUnlessKept,
) -> Result<Uploaded, ApiError> {
    let meta = metadata.clone();
    let stored = agent_fs::run_as(user, move || agent_fs::write_metadata(&file, &meta)).await?;
    let metadata = match stored {
        Ok(()) => metadata.clone(),
        // Like envd, metadata is best effort where xattrs are unsupported; the response
        // then does not claim any was stored.
        Err(e) if agent_fs::xattr_unsupported(&e) => {
            tracing::debug!("metadata not stored: file system has no user xattrs");
            BTreeMap::new()
        }
        Err(e) => return Err(ApiError::io(&e, &path)),
    };
    cleanup.keep();
    Ok(Uploaded {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: path.to_string_lossy().into_owned(),
        r#type: "file",
        metadata,
    })
}

/// Maps a failure to read the request body: a malformed multipart body keeps the status
/// axum gives it, corrupt gzip and broken transfers are the client's fault (400).
fn body_error(e: io::Error) -> ApiError {
    let multipart = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<axum::extract::multipart::MultipartError>());
    if let Some(m) = multipart {
        ApiError::new(
            m.status(),
            format!("invalid multipart body: {}", m.body_text()),
        )
    } else if e.kind() == io::ErrorKind::InvalidData {
        ApiError::bad_request(format!("invalid gzip body: {e}"))
    } else {
        ApiError::bad_request(format!("reading the request body failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(s: impl Stream<Item = io::Result<Bytes>>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut s = std::pin::pin!(s);
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    fn chunks(
        data: &[u8],
        size: usize,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static {
        let v: Vec<io::Result<Bytes>> = data
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(v)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    #[test]
    fn gzip_round_trip() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        rt().block_on(async {
            let gz = collect(gzip_stream(chunks(&data, 10_000)))
                .await
                .expect("gzip");
            assert!(gz.len() < data.len());
            // Readable by a standard decoder...
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain)
                .expect("decode");
            assert_eq!(plain, data);
            // ...and by ours, whatever the chunking.
            for size in [1, 7, 4096, 1 << 20] {
                let back = collect(gunzip_stream(chunks(&gz, size)))
                    .await
                    .expect("gunzip");
                assert_eq!(back, data);
            }
            // Empty input still makes a valid gzip file.
            let empty = collect(gzip_stream(chunks(b"", 1)))
                .await
                .expect("gzip empty");
            assert!(
                collect(gunzip_stream(chunks(&empty, 3)))
                    .await
                    .expect("x")
                    .is_empty()
            );
        });
    }

    #[test]
    fn gunzip_multi_member_and_corrupt() {
        let member = |s: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
            e.write_all(s).expect("write");
            e.finish().expect("finish")
        };
        let mut two = member(b"hello ");
        two.extend(member(b"world"));
        rt().block_on(async {
            assert_eq!(
                collect(gunzip_stream(chunks(&two, 5)))
                    .await
                    .expect("multi"),
                b"hello world"
            );
            let truncated = &two[..two.len() / 2];
            let err = collect(gunzip_stream(chunks(truncated, 5))).await;
            assert_eq!(
                err.map_err(|e| e.kind()).err(),
                Some(io::ErrorKind::InvalidData)
            );
            let garbage = collect(gunzip_stream(chunks(b"definitely not gzip", 4))).await;
            assert!(garbage.is_err());
        });
    }

    #[test]
    fn accept_encoding() {
        use Encoding::*;
        assert_eq!(choose_encoding(None), Some(Identity));
        assert_eq!(choose_encoding(Some("gzip, deflate")), Some(Gzip));
        assert_eq!(choose_encoding(Some("gzip")), Some(Gzip));
        assert_eq!(choose_encoding(Some("deflate, br")), Some(Identity));
        assert_eq!(
            choose_encoding(Some("identity;q=1, gzip;q=0.5")),
            Some(Identity)
        );
        assert_eq!(choose_encoding(Some("gzip;q=0")), Some(Identity));
        assert_eq!(choose_encoding(Some("*")), Some(Identity));
        assert_eq!(choose_encoding(Some("identity;q=0, *")), Some(Gzip));
        assert_eq!(choose_encoding(Some("br, identity;q=0")), None);
    }

    #[test]
    fn metadata_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-metadata-Owner", "me".parse().expect("value"));
        h.insert("x-metadata-env", "prod 1".parse().expect("value"));
        h.insert("content-type", "text/plain".parse().expect("value"));
        let m = metadata_from_headers(&h).expect("valid");
        assert_eq!(m.len(), 2);
        assert_eq!(m["owner"], "me");
        let mut bad = HeaderMap::new();
        bad.insert(
            "x-metadata-k",
            http::HeaderValue::from_bytes(b"caf\xc3\xa9").expect("value"),
        );
        assert_eq!(
            metadata_from_headers(&bad).map_err(|e| e.status).err(),
            Some(StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn upload_open_rules() {
        let d = std::env::temp_dir().join(format!("paddock-files-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let f = d.join("a/b/new.txt");
        let (_, created) = open_for_upload(&f).expect("create");
        assert!(created);
        assert_eq!(std::fs::metadata(&f).expect("stat").mode() & 0o777, 0o644);
        assert_eq!(
            std::fs::metadata(d.join("a/b")).expect("stat").mode() & 0o777,
            0o755
        );
        std::fs::write(&f, b"old contents").expect("write");
        let (_, created) = open_for_upload(&f).expect("truncate");
        assert!(!created);
        assert_eq!(std::fs::metadata(&f).expect("stat").len(), 0);
        assert_eq!(
            open_for_upload(&d.join("a")).map_err(|e| e.status).err(),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            open_for_upload(&f.join("below-a-file"))
                .map_err(|e| e.status)
                .err(),
            Some(StatusCode::BAD_REQUEST)
        );
        let fifo = d.join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .expect("mkfifo");
        assert_eq!(
            open_for_upload(&fifo).map_err(|e| e.status).err(),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            open_for_download(&fifo)
                .map(|_| ())
                .map_err(|e| e.status)
                .err(),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            open_for_download(&d.join("missing"))
                .map(|_| ())
                .map_err(|e| e.status)
                .err(),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            open_for_download(&d)
                .map(|_| ())
                .map_err(|e| e.status)
                .err(),
            Some(StatusCode::BAD_REQUEST)
        );
        std::fs::remove_dir_all(&d).expect("cleanup");
    }
}
