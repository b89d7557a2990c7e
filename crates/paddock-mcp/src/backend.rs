//! How the tools reach the REST API: one HTTP request at a time through a [`Backend`].
//!
//! `paddock mcp` sends the requests over the network with its key; the server's `/mcp`
//! hands them to its own router in-process with the MCP caller's credentials. Either way a
//! tool is exactly a sequence of documented REST calls, so auth, tenancy, rate limits and the
//! audit trail are REST's.

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, header};
use http_body::Body;
use http_body_util::BodyExt as _;

/// A boxed response body, as a [`Backend`] returns it.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
/// The error type of a [`BoxBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The future a [`Backend`] returns.
pub type BackendFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Response<BoxBody>, BackendError>> + Send + 'a>>;

/// Why a request did not get an HTTP answer at all.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The server could not be reached or the connection broke.
    #[error("cannot reach the Paddock server: {0}")]
    Unreachable(String),
    /// A request could not be built (a bug or a bad server URL).
    #[error("bad request to the Paddock server: {0}")]
    Request(String),
}

/// Sends one REST request and returns the server's response.
///
/// `req` has a path-and-query URI (`/v1/...`), the body and `Content-Type`/`Accept` headers;
/// no credentials. `caller` is the HTTP request that carried the MCP message when the tool
/// runs behind the streamable-HTTP endpoint (`None` over stdio): an in-process backend takes
/// the caller's credentials from it.
pub trait Backend: Send + Sync + 'static {
    /// Sends `req` on behalf of `caller`.
    fn send<'a>(
        &'a self,
        req: Request<Bytes>,
        caller: Option<&'a http::request::Parts>,
    ) -> BackendFuture<'a>;
}

/// A REST response read into memory, at most a cap.
#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
    /// The body was longer than the cap and was cut there.
    pub truncated: bool,
}

impl ApiResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A REST request under construction.
#[derive(Debug)]
pub struct ApiRequest {
    method: Method,
    path: String,
    body: Bytes,
    content_type: Option<&'static str>,
    accept: &'static str,
}

impl ApiRequest {
    /// A request for `path` (already encoded, see [`segment`] and [`query`]).
    pub fn new(method: Method, path: String) -> ApiRequest {
        ApiRequest {
            method,
            path,
            body: Bytes::new(),
            content_type: None,
            accept: "application/json",
        }
    }

    /// A JSON body.
    pub fn json(mut self, v: &serde_json::Value) -> ApiRequest {
        self.body = Bytes::from(v.to_string());
        self.content_type = Some("application/json");
        self
    }

    /// A raw body.
    pub fn raw(mut self, body: Bytes) -> ApiRequest {
        self.body = body;
        self.content_type = Some("application/octet-stream");
        self
    }

    /// The `Accept` header (default `application/json`).
    pub fn accept(mut self, accept: &'static str) -> ApiRequest {
        self.accept = accept;
        self
    }

    fn build(self) -> Result<Request<Bytes>, BackendError> {
        let mut b = Request::builder()
            .method(self.method)
            .uri(&self.path)
            .header(header::ACCEPT, HeaderValue::from_static(self.accept));
        if let Some(ct) = self.content_type {
            b = b.header(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        b.body(self.body)
            .map_err(|e| BackendError::Request(e.to_string()))
    }
}

/// Sends `req` through `backend` and reads at most `cap` bytes of the answer.
pub(crate) async fn call(
    backend: &dyn Backend,
    caller: Option<&http::request::Parts>,
    req: ApiRequest,
    cap: usize,
) -> Result<ApiResponse, BackendError> {
    let resp = backend.send(req.build()?, caller).await?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let (body, truncated) = read_capped(resp.into_body(), cap).await?;
    Ok(ApiResponse {
        status,
        content_type,
        body,
        truncated,
    })
}

/// Reads a body up to `cap` bytes; the rest is not read (the body is dropped).
pub async fn read_capped<B>(body: B, cap: usize) -> Result<(Bytes, bool), BackendError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut body = body;
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| BackendError::Unreachable(format!("reading the answer: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let room = cap - buf.len();
        if data.len() > room {
            buf.extend_from_slice(&data[..room]);
            return Ok((buf.freeze(), true));
        }
        buf.extend_from_slice(&data);
    }
    Ok((buf.freeze(), false))
}

/// One path segment, percent-encoded (everything but RFC 3986 unreserved characters).
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string (`?a=1&b=2`) from pairs, each side percent-encoded.
pub(crate) fn query(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(&segment(k));
        out.push('=');
        out.push_str(&segment(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding() {
        assert_eq!(segment("abc-1._~"), "abc-1._~");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        assert_eq!(segment("é"), "%C3%A9");
        assert_eq!(
            query(&[("path", "/tmp/a b"), ("depth", "1")]),
            "?path=%2Ftmp%2Fa%20b&depth=1"
        );
    }

    #[tokio::test]
    async fn capped_reads_stop_at_the_cap() {
        let body = http_body_util::Full::new(Bytes::from_static(b"0123456789"));
        let (b, cut) = read_capped(body, 4).await.unwrap_or_default();
        assert_eq!((&b[..], cut), (&b"0123"[..], true));
        let body = http_body_util::Full::new(Bytes::from_static(b"0123"));
        let (b, cut) = read_capped(body, 4).await.unwrap_or_default();
        assert_eq!((&b[..], cut), (&b"0123"[..], false));
    }
}
