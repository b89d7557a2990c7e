//! Serves the web console (`paddock-console`'s embedded files) at `/`.
//!
//! It is the router's fallback, so it runs only after the proxy and E2B data-plane
//! middleware have let a request through (a Host-routed request always reaches its sandbox)
//! and no API route matched. Only `GET`/`HEAD` of an embedded file is answered: `/` (the
//! `index.html`), `/assets/*` (content-hashed, cached as immutable) and the few root files.
//! The console routes with the URL fragment (`/#/sandboxes/ID`), so there is no catch-all:
//! every other path, and anything under `/v1/`, stays the API's JSON 404.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Where the console may load from and talk to: this server only (no fonts, CDNs or
/// analytics); inline styles for xterm.js and uPlot.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The console's CSP: [`CSP`], and frames only from host-routed sandbox ports under the
/// server's domain (the live view of a desktop sandbox, `docs/desktop.md`).
/// A domain of other characters than letters, digits, dots and dashes gets no frames.
fn csp(domain: &str) -> String {
    if domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        format!("{CSP}; frame-src http://*.{domain}:* https://*.{domain}:*")
    } else {
        CSP.to_owned()
    }
}

/// The router's fallback: a console file, or the API's 404.
pub async fn fallback(
    axum::extract::State(state): axum::extract::State<
        std::sync::Arc<paddock_service::state::AppState>,
    >,
    req: Request,
) -> Response {
    serve(&req, &state.cfg.domain)
        .unwrap_or_else(|| ApiError::NotFound("no such route".into()).into_response())
}

/// The console file a `GET`/`HEAD` asks for (outside `/v1/`), with its headers; `None` for
/// anything else. The control plane calls it too, for requests naming no sandbox.
pub fn serve(req: &Request, domain: &str) -> Option<Response> {
    let path = req.uri().path();
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    let api = path == "/v1" || path.starts_with("/v1/");
    if !get || api {
        return None;
    }
    let a = paddock_console::asset(path)?;
    let body = if req.method() == Method::HEAD {
        Body::empty()
    } else {
        Body::from(a.bytes)
    };
    Some(
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, a.content_type)
            .header(header::CONTENT_LENGTH, a.bytes.len())
            .header(header::CACHE_CONTROL, a.cache_control)
            .header(header::CONTENT_SECURITY_POLICY, csp(domain))
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .header(header::X_FRAME_OPTIONS, "DENY")
            // A window another page opens on the console gets no handle back to it.
            .header("cross-origin-opener-policy", "same-origin")
            .header(header::REFERRER_POLICY, "no-referrer")
            .body(body)
            .unwrap_or_default(),
    )
}
