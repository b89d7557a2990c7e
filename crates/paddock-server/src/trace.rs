//! Request spans: every request runs inside a `request` span carrying its request id, its
//! method and path, and the sandbox it names, so an error logged while serving it (an
//! internal error's detail, an agent failure) can be traced back to the request.
//!
//! The request id is the client's `x-request-id` if it is well-formed (1 to
//! [`MAX_REQUEST_ID`] characters of `[A-Za-z0-9._-]`), else a generated one (32 hex
//! digits); it is returned in `x-request-id` on every response, and a 500's JSON body
//! carries it as `request_id` (see [`current`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header::HeaderName};
use axum::middleware::Next;
use axum::response::Response;
use rand::Rng;
use tracing::Instrument;

use paddock_service::state::AppState;

/// The header that carries the request id, both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id taken from a client; a longer one is replaced.
pub const MAX_REQUEST_ID: usize = 128;

use crate::request_id::CURRENT;
pub use crate::request_id::current;

/// Whether a client's request id is used as is.
fn well_formed(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= MAX_REQUEST_ID
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then_some(s)
}

fn generate() -> String {
    let n: u128 = rand::rng().random();
    format!("{n:032x}")
}

/// The sandbox a request names: `/v1/sandboxes/{id}`, E2B's `/sandboxes/{id}`,
/// `/proxy/{id}/`, or the data plane's `E2b-Sandbox-Id` header or `{port}-{id}` host.
fn sandbox_of(req: &Request, domain: &str) -> Option<String> {
    let mut segs = req.uri().path().split('/').filter(|s| !s.is_empty());
    let named = match (segs.next(), segs.next(), segs.next()) {
        (Some("v1"), Some("sandboxes"), Some(id)) => Some(id),
        (Some("sandboxes" | "proxy"), Some(id), _) => Some(id),
        (Some("v2"), Some("sandboxes"), Some(id)) => Some(id),
        _ => None,
    };
    let id = match named {
        Some(id) => id.to_owned(),
        None => crate::e2b::target::target(req.headers(), req.uri(), domain)?.id,
    };
    // Only ids that look like ids reach the log.
    id.parse::<paddock_core::SandboxId>().ok().map(|_| id)
}

/// The outermost middleware: the request's span and its id.
pub async fn request_span(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let id = match req.headers().get(REQUEST_ID).and_then(well_formed) {
        Some(s) => s.to_owned(),
        None => generate(),
    };
    let sandbox = sandbox_of(&req, &state.cfg.domain);
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        sandbox = sandbox.as_deref().unwrap_or("-"),
    );
    // Upstream (the proxy, the agent) sees the id that is answered.
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID, v);
    }
    let mut resp = CURRENT
        .scope(id.clone(), next.run(req).instrument(span))
        .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_ids_are_taken() {
        let ok = |s: &str| well_formed(&HeaderValue::from_str(s).expect("header")).is_some();
        assert!(ok("abc123"));
        assert!(ok("a.b_c-D"));
        assert!(!ok(""));
        assert!(!ok("has space"));
        assert!(!ok("semi;colon"));
        assert!(!ok(&"x".repeat(MAX_REQUEST_ID + 1)));
        assert!(ok(&"x".repeat(MAX_REQUEST_ID)));
        let g = generate();
        assert_eq!(g.len(), 32);
        assert!(ok(&g));
    }
}
