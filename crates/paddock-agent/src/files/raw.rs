//! Raw transfers: `/files` with `Upgrade: paddock-raw`, the host's fast path for bulk bytes.
//!
//! The host (the API server, through the runtime) asks for a raw transfer by sending
//! `Connection: upgrade` and `Upgrade: paddock-raw` with an ordinary `/files` request. When
//! the request qualifies, the agent checks and opens the file exactly as for the ordinary
//! request (user, path, permissions, metadata headers), answers `101 Switching Protocols`
//! and then moves the bytes without HTTP framing and without copying them through user
//! memory:
//! - download (`GET`, identity encoding, a regular file whose size is known and non-zero):
//!   the 101 carries the size in `x-paddock-length`; the agent `sendfile`s exactly that
//!   many bytes from the file to the socket and closes it. A file that shrinks meanwhile
//!   ends the stream early, which the host reports as a broken transfer.
//! - upload (`POST`, a raw body, no `Content-Encoding`, `path` given): the request carries the
//!   size in `x-paddock-length` (at most [`super::MAX_UPLOAD_BYTES`]); after the 101 the host
//!   sends exactly that many bytes, which the agent `splice`s socket → pipe → file, and
//!   answers one JSON envelope `{"status": <http status>, "body": <the ordinary answer>}`
//!   before closing. A failed upload removes the file it created, as the ordinary path does.
//!
//! Everything else (gzip, multipart, unknown sizes, errors found before the 101) gets the
//! ordinary HTTP answer, so the host must handle both. Where the kernel refuses `splice` or
//! `sendfile` for these descriptors (`EINVAL`, `ENOSYS`, as under some gVisor versions) the
//! transfer falls back to a read/write copy.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::{ApiError, RemoveUnlessKept};
use crate::users::User;

/// The `Upgrade` protocol name of a raw transfer.
pub const UPGRADE: &str = "paddock-raw";
/// The header that carries a raw transfer's size in bytes.
pub const LENGTH_HEADER: &str = "x-paddock-length";
/// Longest the agent waits for the host's socket to move during a raw transfer.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Bytes moved per `splice` call (the pipe is grown to this size where the kernel allows).
const PIPE_CHUNK: usize = 1 << 20;
/// Send buffer asked for on the agent's end of a raw connection (capped by the kernel at
/// `net.core.wmem_max`): a download's `sendfile` then blocks, and wakes the host, once per
/// few MiB rather than once per 208 KiB (the default).
const SOCKET_BUFFER: usize = 4 << 20;

/// Whether the request asks for a raw transfer.
pub(super) fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(UPGRADE))
}

/// The size a raw upload announced: required, a decimal number.
pub(super) fn announced_length(headers: &HeaderMap) -> Result<u64, ApiError> {
    headers
        .get(LENGTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| ApiError::bad_request(format!("a raw upload needs {LENGTH_HEADER}")))
}

fn switching(length: Option<u64>) -> Response {
    let mut r = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static(UPGRADE));
    if let Some(n) = length {
        h.insert(LENGTH_HEADER, HeaderValue::from(n));
    }
    r
}

/// Waits for hyper to hand over the connection and returns it as a blocking socket with a
/// timeout both ways, plus whatever hyper had already read past the request head.
async fn take_socket(on: OnUpgrade) -> io::Result<(UnixStream, Bytes)> {
    let up = on.await.map_err(io::Error::other)?;
    let parts =
        hyper_util::server::conn::auto::upgrade::downcast::<TokioIo<tokio::net::UnixStream>>(up)
            .map_err(|_| io::Error::other("the upgraded connection is not the agent socket"))?;
    let sock = parts.io.into_inner().into_std()?;
    sock.set_nonblocking(false)?;
    // Best effort: the default buffer only means more wake-ups.
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&sock, SOCKET_BUFFER);
    sock.set_read_timeout(Some(IDLE_TIMEOUT))?;
    sock.set_write_timeout(Some(IDLE_TIMEOUT))?;
    Ok((sock, parts.read_buf))
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    )
}

/// Answers a download with 101 and sends `len` bytes of `file` once hyper lets go of the
/// socket.
pub(super) fn send_file(on: OnUpgrade, file: std::fs::File, len: u64) -> Response {
    tokio::spawn(async move {
        let Ok((sock, _)) = take_socket(on).await else {
            return;
        };
        let _ = tokio::task::spawn_blocking(move || send_all(&sock, &file, len)).await;
    });
    switching(Some(len))
}

/// `sendfile` from offset 0 until `len` bytes went out; a copy where `sendfile` is refused.
fn send_all(sock: &UnixStream, file: &std::fs::File, len: u64) -> io::Result<()> {
    let mut off = 0u64;
    while off < len {
        let want = usize::try_from(len - off)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::sendfile(sock, file, Some(&mut off), want) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if off == 0 && unsupported(&e.into()) => return copy_out(sock, file, len),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn copy_out(mut sock: &UnixStream, file: &std::fs::File, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; PIPE_CHUNK];
    let mut left = len;
    let mut file = file;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        sock.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Which side of an upload failed.
enum Failed {
    /// The host's socket: the transfer broke or stalled.
    Socket(io::Error),
    /// The file: disk full, quota, I/O.
    File(io::Error),
}

/// What a raw upload needs to finish like an ordinary one.
pub(super) struct Upload {
    pub(super) user: User,
    pub(super) path: PathBuf,
    pub(super) file: std::fs::File,
    pub(super) cleanup: RemoveUnlessKept,
    pub(super) metadata: BTreeMap<String, String>,
    pub(super) len: u64,
}

/// Answers an upload with 101, then receives its bytes into the file and answers the
/// envelope.
pub(super) fn receive_file(on: OnUpgrade, up: Upload) -> Response {
    tokio::spawn(async move {
        let Ok((sock, pre)) = take_socket(on).await else {
            // Dropping `up` removes a file this upload created.
            return;
        };
        let Upload {
            user,
            path,
            file,
            cleanup,
            metadata,
            len,
        } = up;
        let moved = tokio::task::spawn_blocking(move || {
            let r = receive_all(&sock, &pre, &file, len);
            (sock, file, r)
        })
        .await;
        let Ok((sock, file, moved)) = moved else {
            return;
        };
        let answer = match moved {
            Ok(()) => super::finish_upload(&user, path, file, &metadata, cleanup)
                .await
                .map(|done| serde_json::json!([done])),
            Err(failed) => {
                cleanup.discard().await;
                Err(match failed {
                    Failed::File(e) => ApiError::io(&e, &path),
                    Failed::Socket(e) => {
                        ApiError::bad_request(format!("reading the request body failed: {e}"))
                    }
                })
            }
        };
        let envelope = match answer {
            Ok(body) => serde_json::json!({"status": 200, "body": body}),
            Err(e) => serde_json::json!({
                "status": e.status.as_u16(),
                "body": {"code": e.status.as_u16(), "message": e.message},
            }),
        };
        let bytes = serde_json::to_vec(&envelope).unwrap_or_default();
        let _ = tokio::task::spawn_blocking(move || {
            let mut s = &sock;
            let _ = s.write_all(&bytes);
            let _ = sock.shutdown(std::net::Shutdown::Both);
        })
        .await;
    });
    switching(None)
}

/// Moves `len` bytes (the first ones already in `pre`) from the socket into the file:
/// `splice` through a pipe, or a copy where the kernel refuses it.
fn receive_all(
    sock: &UnixStream,
    pre: &[u8],
    mut file: &std::fs::File,
    len: u64,
) -> Result<(), Failed> {
    let pre = &pre[..pre.len().min(usize::try_from(len).unwrap_or(usize::MAX))];
    file.write_all(pre).map_err(Failed::File)?;
    let mut left = len - pre.len() as u64;
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Failed::File(e.into()))?;
    // Best effort: the default pipe (64 KiB) only means more calls.
    let _ = rustix::pipe::fcntl_setpipe_size(&w, PIPE_CHUNK);
    let flags = rustix::pipe::SpliceFlags::MOVE;
    let mut first = true;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(PIPE_CHUNK);
        let n = match rustix::pipe::splice(sock, None, &w, None, want, flags) {
            Ok(0) => return Err(Failed::Socket(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => n,
            Err(e) if first && unsupported(&e.into()) => return copy_in(sock, file, left),
            Err(e) => return Err(Failed::Socket(e.into())),
        };
        first = false;
        let mut in_pipe = n;
        while in_pipe > 0 {
            match rustix::pipe::splice(&r, None, file, None, in_pipe, flags) {
                Ok(0) => return Err(Failed::File(io::ErrorKind::WriteZero.into())),
                Ok(k) => in_pipe -= k,
                Err(e) => return Err(Failed::File(e.into())),
            }
        }
        left -= n as u64;
    }
    Ok(())
}

fn copy_in(mut sock: &UnixStream, mut file: &std::fs::File, len: u64) -> Result<(), Failed> {
    let mut buf = vec![0u8; PIPE_CHUNK];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = sock.read(&mut buf[..want]).map_err(Failed::Socket)?;
        if n == 0 {
            return Err(Failed::Socket(io::ErrorKind::UnexpectedEof.into()));
        }
        file.write_all(&buf[..n]).map_err(Failed::File)?;
        left -= n as u64;
    }
    Ok(())
}
