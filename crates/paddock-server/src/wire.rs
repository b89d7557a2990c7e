//! Wire helpers shared by every edge (REST, E2B, webhooks, lifecycle events): timestamps,
//! the event form, query strings, small bodies and empty responses. Nothing here imports
//! a route module.

pub mod input;
pub mod json;
pub mod origin;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ApiResult};

/// Reads a whole small body: checks `Content-Type` (when `json`), rejects a declared
/// `Content-Length` above `limit` before reading, and stops reading at `limit`.
pub async fn read_limited(
    req: Request,
    limit: usize,
    json: bool,
) -> Result<bytes::Bytes, ApiError> {
    let headers = req.headers();
    if json {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "expected Content-Type application/json, got {:?}",
                truncate(ct, 64)
            )));
        }
    }
    if let Some(len) = content_length(headers)
        && len > limit as u64
    {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit")
            {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::BadRequest("could not read the request body".into())
            }
        })
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// A page size from a query (`limit`), clamped to 1..=1000.
pub fn parse_limit(v: &str) -> Result<u32, ApiError> {
    v.parse::<u32>()
        .map(|n| n.clamp(1, 1000))
        .map_err(|_| ApiError::BadRequest(format!("limit {:?} is not a number", truncate(v, 32))))
}

/// A time in a query: RFC 3339, or milliseconds since the epoch.
pub fn parse_time(name: &str, v: &str) -> ApiResult<i64> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "{name} {v:?} is not an RFC 3339 time or milliseconds since the epoch"
            ))
        })
}

/// The error for a query parameter a route does not know.
pub fn unknown_param(name: &str) -> ApiError {
    ApiError::BadRequest(format!("unknown query parameter {:?}", truncate(name, 64)))
}

pub use paddock_service::text::{EventView, event_json, rfc3339, truncate};

/// A `201`/`200` JSON response.
pub fn json_response(status: axum::http::StatusCode, v: serde_json::Value) -> Response {
    (status, axum::Json(v)).into_response()
}

/// A JSON response of a typed wire body. It goes through `serde_json::Value`, whose objects
/// keep their keys sorted, so the bytes are those the `json!` bodies it replaced produced.
pub fn typed_response<T: serde::Serialize>(status: axum::http::StatusCode, body: &T) -> Response {
    match serde_json::to_value(body) {
        Ok(v) => json_response(status, v),
        Err(e) => ApiError::Internal(format!("response body: {e}")).into_response(),
    }
}

/// An empty `204`.
pub fn no_content() -> Response {
    Response::builder()
        .status(axum::http::StatusCode::NO_CONTENT)
        .body(Body::empty())
        .unwrap_or_default()
}

/// Decodes `a=b&c=d` (percent-decoding, `+` as space).
pub fn form_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The argv of a request that names a command as `cmd` (an argv array) or `command` (a
/// shell command line, run by `bash -l -c`): exactly one of them, not empty. Shared by exec
/// and services.
pub fn command_argv(
    cmd: Option<Vec<String>>,
    command: Option<String>,
) -> Result<Vec<String>, ApiError> {
    paddock_service::text::command_argv(cmd, command).map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_store::Event;

    /// An event is the `json!` body it replaced: a null `sandbox_id` kept.
    #[test]
    fn an_event_serialises_as_before() {
        let e = Event {
            seq: 4,
            at: 2000,
            tenant: "t".into(),
            sandbox_id: None,
            kind: "created".into(),
            data: serde_json::json!({"template": "base"}),
        };
        assert_eq!(
            event_json(&e).to_string(),
            r#"{"at":"1970-01-01T00:00:02Z","data":{"template":"base"},"kind":"created","sandbox_id":null,"seq":4}"#
        );
        let e = Event {
            sandbox_id: Some("abc".into()),
            ..e
        };
        assert_eq!(
            event_json(&e).to_string(),
            r#"{"at":"1970-01-01T00:00:02Z","data":{"template":"base"},"kind":"created","sandbox_id":"abc","seq":4}"#
        );
    }
}
