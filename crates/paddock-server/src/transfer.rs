//! Bulk file transfers through a sandbox's agent, for `/v1/sandboxes/{id}/files` and the
//! E2B data plane's `/files`: the raw path (`paddock_runtime::RawExchange`), where the agent
//! hands over its socket and the bytes move without HTTP framing on that hop.
//!
//! - Download: the agent `sendfile`s the file into its socket; on a plain HTTP/1.1 client
//!   connection the server splices that socket into the client's ([`crate::splice`]), so the
//!   bytes never enter user memory on the host; over TLS or HTTP/2 they are read in
//!   512 KiB chunks and written as body frames (one copy each way).
//! - Upload (a body with `Content-Length`, no `Content-Encoding`): the server writes the
//!   client's body frames into the agent socket, the agent splices them into the file and
//!   answers one JSON envelope. The server side of an upload copies once: hyper reads the
//!   request into user memory and a request body cannot be spliced past hyper's parser.
//!
//! Whatever the agent does not take raw (gzip, multipart, unknown sizes, errors found before
//! it switches) comes back as its ordinary HTTP answer, which callers handle as before.

use std::io;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt as _;
use http::{HeaderValue, StatusCode, header};
use paddock_runtime::{RAW_LENGTH_HEADER, RawExchange, RuntimeError, Sandbox};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::splice::{Source, SpliceBody, SpliceSlot, copy_body};

/// Longest the agent's socket may stay silent during a spliced download.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Most of a client's body read and dropped after the agent stopped taking it (disk full),
/// so the client can read the error instead of a reset connection.
const DRAIN_MAX: u64 = 64 << 20;
/// Largest answer read back from the agent after a raw upload.
const MAX_ENVELOPE: u64 = 64 << 10;

/// Why a raw transfer failed.
#[derive(Debug)]
pub enum Failure {
    /// The agent could not be reached, broke the exchange or answered nonsense.
    Agent(RuntimeError),
    /// The client's body broke off or did not match its `Content-Length`.
    Client(String),
}

impl From<RuntimeError> for Failure {
    fn from(e: RuntimeError) -> Self {
        Failure::Agent(e)
    }
}

fn agent_io(what: &str, e: io::Error) -> Failure {
    Failure::Agent(RuntimeError::Io {
        what: what.into(),
        source: e,
    })
}

/// How a download came back.
pub enum Download {
    /// The file, streaming: 200 with `Content-Length`.
    Raw(Response),
    /// The agent's ordinary answer (an error, gzip, a file of unknown size).
    Answered(http::Response<hyper::body::Incoming>),
}

/// Asks the agent for `req` (a `GET /files`) raw. `slot` is the client connection's splice
/// slot, when it has one.
pub async fn download(
    sbx: &Sandbox,
    req: http::Request<http_body_util::Empty<Bytes>>,
    slot: Option<&SpliceSlot>,
) -> Result<Download, Failure> {
    let (stream, read_ahead, length) = match sbx.agent_raw(req).await? {
        RawExchange::Answered(r) => return Ok(Download::Answered(r)),
        RawExchange::Upgraded {
            stream,
            read_ahead,
            length,
        } => (stream, read_ahead, length),
    };
    let len = length.ok_or_else(|| {
        agent_io(
            "agent raw download",
            io::Error::other("the agent announced no length"),
        )
    })?;
    if read_ahead.len() as u64 > len {
        return Err(agent_io(
            "agent raw download",
            io::Error::other("the agent sent more than it announced"),
        ));
    }
    let rest = len - read_ahead.len() as u64;
    let body = match slot {
        Some(slot) => Body::new(
            SpliceBody::new(
                slot.clone(),
                Source::Unix(stream),
                read_ahead,
                rest,
                IDLE_TIMEOUT,
            )
            .map_err(|e| agent_io("splice pipe", e))?,
        ),
        None => Body::from_stream(copy_body(stream, read_ahead, rest)),
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    Ok(Download::Raw(resp))
}

/// How an upload came back.
pub enum Upload {
    /// The agent's answer after a raw upload: the HTTP status and JSON body its ordinary
    /// answer would have had.
    Done { status: StatusCode, body: Bytes },
    /// The agent's ordinary answer (it refused before switching).
    Answered(http::Response<hyper::body::Incoming>),
}

/// The client's upload size when it can go raw: `Content-Length` given and no
/// `Content-Encoding` (gzip bodies are decoded by the agent's ordinary path).
pub fn raw_upload_length(headers: &http::HeaderMap) -> Option<u64> {
    if headers.contains_key(header::CONTENT_ENCODING)
        || headers.contains_key(header::TRANSFER_ENCODING)
    {
        return None;
    }
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Sends `body` (exactly `len` bytes) raw to the agent for `req` (a `POST /files`).
pub async fn upload(
    sbx: &Sandbox,
    mut req: http::Request<http_body_util::Empty<Bytes>>,
    body: Body,
    len: u64,
) -> Result<Upload, Failure> {
    req.headers_mut()
        .insert(RAW_LENGTH_HEADER, HeaderValue::from(len));
    let mut stream = match sbx.agent_raw(req).await? {
        RawExchange::Answered(r) => return Ok(Upload::Answered(r)),
        RawExchange::Upgraded { stream, .. } => stream,
    };
    let mut frames = body.into_data_stream();
    let mut sent = 0u64;
    // A write that fails means the agent stopped reading (disk full, say): its envelope
    // says why, so it is read either way.
    let mut write_failed = None;
    while let Some(chunk) = frames.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            // Dropping the stream without the whole body makes the agent remove the file.
            Err(e) => {
                return Err(Failure::Client(format!(
                    "reading the request body failed: {e}"
                )));
            }
        };
        sent += chunk.len() as u64;
        if sent > len {
            return Err(Failure::Client(
                "the request body is longer than its Content-Length".into(),
            ));
        }
        if let Err(e) = stream.write_all(&chunk).await {
            write_failed = Some(e);
            break;
        }
    }
    if write_failed.is_some() {
        // Read on (up to DRAIN_MAX) so a client still sending gets the answer rather than a
        // reset connection.
        let mut drained = 0u64;
        while drained < DRAIN_MAX
            && let Some(Ok(chunk)) = frames.next().await
        {
            drained += chunk.len() as u64;
        }
    }
    if write_failed.is_none() && sent < len {
        return Err(Failure::Client(
            "the request body is shorter than its Content-Length".into(),
        ));
    }
    // The envelope is read up to EOF or an error: an agent that closes with some of the
    // body unread resets the connection after its answer, which is still good.
    let mut answer = Vec::new();
    let _ = (&mut stream)
        .take(MAX_ENVELOPE)
        .read_to_end(&mut answer)
        .await;
    let parsed = serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| {
            let status =
                StatusCode::from_u16(u16::try_from(v.get("status")?.as_u64()?).ok()?).ok()?;
            let body = serde_json::to_vec(v.get("body")?).ok()?;
            Some((status, body))
        });
    match (parsed, write_failed) {
        (Some((status, body)), _) => Ok(Upload::Done {
            status,
            body: Bytes::from(body),
        }),
        (None, Some(e)) => Err(agent_io("agent raw upload", e)),
        (None, None) => Err(agent_io(
            "agent raw upload",
            io::Error::other("the agent's answer is not an envelope"),
        )),
    }
}
