//! The REST API under `/v1`: the router, the JSON extractor, and the wire formats.
//!
//! Wire types live here and in the route modules; the store and runtime types are converted
//! at this edge. Every route but `/v1/health` and `/v1/openapi.json` needs an API key.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use paddock_store::{Event, Millis};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

pub mod admin;
pub mod code;
pub mod events;
pub mod exec;
pub mod files;
pub mod input;
pub mod mcp;
pub mod pause;
pub mod ports;
pub mod sandboxes;
pub mod secrets;
pub mod services;
pub mod session;
pub mod system;
pub mod templates;
pub mod tests;

/// The whole API: REST, E2B, the proxy and `/mcp`.
pub fn router(state: Arc<AppState>) -> Router {
    let mcp = mcp::routes(&state, routes(state.clone(), Router::new()));
    routes(state, mcp)
}

/// The API with `extra` routes merged in (`/mcp`, whose tools call the API without them).
fn routes(state: Arc<AppState>, extra: Router<Arc<AppState>>) -> Router {
    Router::new()
        .merge(extra)
        .merge(system::routes())
        .merge(sandboxes::routes())
        .merge(pause::routes())
        .merge(exec::routes())
        .merge(files::routes())
        .merge(ports::routes())
        .merge(events::routes())
        .merge(tests::routes())
        .merge(services::routes())
        .merge(code::routes())
        .merge(admin::routes())
        .merge(secrets::routes())
        .merge(templates::routes())
        .merge(crate::e2b::control::routes())
        .merge(session::routes())
        // The web console's files; every other path stays a JSON 404.
        .fallback(crate::console::fallback)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // REST and E2B control only: the data plane and the proxy forward targets as sent.
        .layer(axum::middleware::from_fn(input::reject_nul_in_target))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::e2b::envd::route,
        ))
        // Outside the data plane: refuses CONNECT, absolute-form targets and duplicate Host
        // for every request, and serves /proxy/ before any route is matched.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::proxy::route,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            system::count_requests,
        ))
        // Outermost: every request, proxied and data plane included, runs in its span.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::trace::request_span,
        ))
        .with_state(state)
}

/// A JSON body: `Content-Type: application/json`, at most the configured size, parsed
/// strictly (unknown fields and duplicate keys are errors; nesting deeper than 128 is an
/// error; a string with NUL is an error naming its field, see [`input`]). Rejections use the
/// API's error format.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let limit = state.cfg.max_json_body;
        let bytes = read_limited(req, limit, true).await?;
        let v = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::InvalidJson(format!("invalid JSON body: {e}")))?;
        if let Some(field) = input::nul_field(&bytes) {
            return Err(ApiError::BadRequest(input::nul_message(&field)));
        }
        Ok(Json(v))
    }
}

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
                crate::state::truncate(ct, 64)
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
    v.parse::<u32>().map(|n| n.clamp(1, 1000)).map_err(|_| {
        ApiError::BadRequest(format!(
            "limit {:?} is not a number",
            crate::state::truncate(v, 32)
        ))
    })
}

/// The error for a query parameter a route does not know.
pub fn unknown_param(name: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "unknown query parameter {:?}",
        crate::state::truncate(name, 64)
    ))
}

/// An RFC 3339 UTC timestamp, or null.
pub fn rfc3339(ms: Option<Millis>) -> serde_json::Value {
    let Some(ms) = ms else {
        return serde_json::Value::Null;
    };
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map_or(serde_json::Value::Null, serde_json::Value::String)
}

/// The wire form of an event (SSE, `/v1/events`, webhooks).
pub fn event_json(e: &Event) -> serde_json::Value {
    serde_json::json!({
        "seq": e.seq,
        "at": rfc3339(Some(e.at)),
        "sandbox_id": e.sandbox_id,
        "kind": e.kind,
        "data": e.data,
    })
}

/// A `201`/`200` JSON response.
pub fn json_response(status: axum::http::StatusCode, v: serde_json::Value) -> Response {
    (status, axum::Json(v)).into_response()
}

/// An empty `204`.
pub fn no_content() -> Response {
    Response::builder()
        .status(axum::http::StatusCode::NO_CONTENT)
        .body(Body::empty())
        .unwrap_or_default()
}
