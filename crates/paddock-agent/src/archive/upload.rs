//! `POST /archive`: the request body, decompressed and capped, extracted by
//! `paddock-untar` under its upload policy (see the module doc of [`super`]).

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use axum::extract::Query;
use axum::extract::Request;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use paddock_untar::Policy;
use rustix::fs::{Mode, OFlags};
use tokio::sync::mpsc;

use super::{
    ArchiveQuery, BODY_CHANNEL_CHUNKS, DRAIN_TIMEOUT, Format, MAX_RATIO, MAX_STREAM_BYTES,
    RATIO_GRACE_BYTES, ZSTD_WINDOW_LOG_MAX, parse_query, user_of,
};
use crate::files::ApiError;
use crate::fs as agent_fs;
use crate::users;

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

/// A failed upload: the error plus what had been written before it.
pub(super) struct Failure {
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

pub(super) async fn upload(
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

    let outcome = paddock_untar::extract(root, limited, Policy::Upload);
    match outcome.result {
        Ok(()) => Ok(Summary {
            entries: outcome.entries,
            bytes: outcome.bytes,
        }),
        Err(e) => Err(Failure {
            error: untar_error(e, dir),
            entries: outcome.entries,
            bytes: outcome.bytes,
        }),
    }
}

/// Maps an extraction error to the answer: a refused entry or a broken archive is 400, a
/// crossed cap 413, a filesystem error on an entry what `/files` says for it (507 for a full
/// disk or quota).
fn untar_error(e: paddock_untar::Error, dir: &Path) -> ApiError {
    use paddock_untar::Error as E;
    match e {
        E::Malformed(_) | E::Refused(_) => ApiError::bad_request(e.to_string()),
        E::Limit(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, m),
        E::Read(e) => read_error(e),
        E::Fs { path, source } => ApiError::io(&source, &dir.join(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

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
}
