//! The HTTP side of the client: the server's base URL, the API key, request building, and
//! turning failures (unreachable server, error bodies `{"code","message"}`) into one-line
//! errors.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;

use super::Conn;

/// An error answered by the server. Displays as `<message> [<code>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: u16,
    pub(crate) code: String,
    pub(crate) message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// Builds the error from a response's status and body: the API's JSON error if the body
    /// is one, else the HTTP status and the start of the body.
    pub(crate) fn from_body(status: u16, body: &[u8]) -> ApiError {
        #[derive(serde::Deserialize)]
        struct Body {
            code: String,
            message: String,
        }
        if let Ok(b) = serde_json::from_slice::<Body>(body) {
            return ApiError {
                status,
                code: b.code,
                message: b.message,
            };
        }
        let reason = reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error");
        let text = String::from_utf8_lossy(body);
        let text: String = text
            .trim()
            .chars()
            .take(200)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let message = if text.is_empty() {
            format!("HTTP {status} {reason}")
        } else {
            format!("HTTP {status} {reason}: {text}")
        };
        ApiError {
            status,
            code: format!("http_{status}"),
            message,
        }
    }
}

/// A connection to one server with one key.
#[derive(Clone)]
pub(crate) struct Api {
    base: Url,
    key: String,
    http: reqwest::Client,
}

/// The user agent of every request.
pub(crate) const USER_AGENT: &str = concat!("paddock-cli/", env!("CARGO_PKG_VERSION"));

impl Api {
    /// Checks the URL and the key and builds the HTTP client. Sends nothing yet.
    pub(crate) fn new(conn: &Conn) -> Result<Api> {
        let key = match conn.api_key.as_deref().map(str::trim) {
            Some(k) if !k.is_empty() => k.to_owned(),
            _ => bail!("no API key: set PADDOCK_API_KEY or pass --api-key"),
        };
        let base = parse_base_url(&conn.url)?;
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        Ok(Api { base, key, http })
    }

    /// The API key.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The server's base URL.
    pub(crate) fn base(&self) -> &Url {
        &self.base
    }

    /// `base` + the path segments (each percent-encoded as needed).
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        join_url(&self.base, segments)
    }

    /// A request with the key as a bearer token.
    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.http.request(method, url).bearer_auth(&self.key)
    }

    /// Sends a request; a non-2xx answer becomes an [`ApiError`].
    pub(crate) async fn send(&self, rb: RequestBuilder) -> Result<Response> {
        let resp = rb.send().await.map_err(|e| self.transport_error(e))?;
        check(resp).await
    }

    /// Sends a request and parses a JSON answer.
    pub(crate) async fn json<T: DeserializeOwned>(&self, rb: RequestBuilder) -> Result<T> {
        let resp = self.send(rb).await?;
        let url = resp.url().path().to_owned();
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(e))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("the server's answer to {url} is not the expected JSON"))
    }

    /// `GET` a JSON document.
    pub(crate) async fn get_json<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T> {
        self.json(self.request(Method::GET, self.url(segments)))
            .await
    }

    /// `POST` a JSON body and parse the JSON answer.
    pub(crate) async fn post_json<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &serde_json::Value,
    ) -> Result<T> {
        self.json(self.request(Method::POST, self.url(segments)).json(body))
            .await
    }

    /// `DELETE`, expecting no body.
    pub(crate) async fn delete(&self, segments: &[&str]) -> Result<()> {
        self.send(self.request(Method::DELETE, self.url(segments)))
            .await?;
        Ok(())
    }

    /// A transport failure as a readable error naming the server.
    pub(crate) fn transport_error(&self, e: reqwest::Error) -> anyhow::Error {
        let root = root_cause(&e);
        if e.is_connect() {
            anyhow!("cannot connect to {}: {root}", self.base)
        } else if e.is_timeout() {
            anyhow!("request to {} timed out", self.base)
        } else if e.is_body() || e.is_decode() {
            anyhow!("the connection to {} broke: {root}", self.base)
        } else {
            anyhow!("request to {} failed: {root}", self.base)
        }
    }
}

/// The innermost cause of an error chain (the useful part of reqwest's errors).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Turns a non-2xx response into an [`ApiError`] (reading at most 64 KiB of its body).
pub(crate) async fn check(resp: Response) -> Result<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let mut body = Vec::new();
    let mut resp = resp;
    while body.len() < 64 * 1024 {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            _ => break,
        }
    }
    Err(ApiError::from_body(status.as_u16(), &body).into())
}

/// Parses `--url`: http or https, no query or fragment.
pub(crate) fn parse_base_url(s: &str) -> Result<Url> {
    let url = Url::parse(s.trim()).with_context(|| format!("invalid --url {s:?}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("invalid --url {s:?}: the scheme must be http or https");
    }
    if url.cannot_be_a_base() || url.host_str().is_none() {
        bail!("invalid --url {s:?}: no host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("invalid --url {s:?}: it may not have a query or fragment");
    }
    Ok(url)
}

/// Appends path segments to `base` (keeping a path prefix such as `/paddock`).
pub(crate) fn join_url(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut p) = url.path_segments_mut() {
        p.pop_if_empty();
        p.extend(segments);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_bodies() {
        let e = ApiError::from_body(
            404,
            br#"{"code":"not_found","message":"sandbox sbx_1 not found"}"#,
        );
        assert_eq!(e.to_string(), "sandbox sbx_1 not found [not_found]");
        assert_eq!(e.status, 404);
        let e = ApiError::from_body(502, b"<html>bad\ngateway</html>");
        assert_eq!(
            e.to_string(),
            "HTTP 502 Bad Gateway: <html>bad gateway</html> [http_502]"
        );
        let e = ApiError::from_body(500, b"");
        assert_eq!(e.to_string(), "HTTP 500 Internal Server Error [http_500]");
        let long = "x".repeat(1000);
        let e = ApiError::from_body(500, long.as_bytes());
        assert!(e.message.len() < 260);
    }

    #[test]
    fn urls() {
        let b = parse_base_url("http://127.0.0.1:7070").unwrap();
        assert_eq!(
            join_url(&b, &["v1", "sandboxes", "sbx_1", "exec"]).as_str(),
            "http://127.0.0.1:7070/v1/sandboxes/sbx_1/exec"
        );
        let b = parse_base_url("https://h.example/paddock/").unwrap();
        assert_eq!(
            join_url(&b, &["v1", "keys", "a/b c"]).as_str(),
            "https://h.example/paddock/v1/keys/a%2Fb%20c"
        );
        assert!(parse_base_url("ftp://h").is_err());
        assert!(parse_base_url("127.0.0.1:7070").is_err());
        assert!(parse_base_url("http://h/?x=1").is_err());
        assert!(parse_base_url("nonsense").is_err());
    }

    #[test]
    fn key_is_required() {
        let conn = Conn {
            url: "http://127.0.0.1:7070".into(),
            api_key: None,
        };
        let err = Api::new(&conn).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("no API key: set PADDOCK_API_KEY or pass --api-key")
        );
        let conn = Conn {
            api_key: Some("  ".into()),
            ..conn
        };
        assert!(Api::new(&conn).is_err());
        let conn = Conn {
            api_key: Some("pdk_x".into()),
            ..conn
        };
        assert_eq!(Api::new(&conn).unwrap().key(), "pdk_x");
    }
}
