//! `/mcp`: Paddock's MCP tools over streamable HTTP (`docs/mcp.md`).
//!
//! The API key is checked first, exactly as for REST (401 before any MCP handling, one
//! token of the key's REST rate per MCP message). The tools themselves (`paddock-mcp`) run
//! as REST requests handed in-process to the server's own router ([`InProcess`]) with the
//! caller's key, so every tool call is authenticated, rate-limited, scoped to the tenant and
//! audited exactly like the same REST calls.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post_service;
use http_body_util::BodyExt as _;
use paddock_mcp::{Backend, BackendFuture, BoxError};
use tower::ServiceExt as _;

use crate::auth;
use crate::state::AppState;

/// `POST /mcp`, behind the key check (other methods are the API's 405). `rest` is the API
/// without `/mcp`, which the tools' requests go to.
pub fn routes(state: &Arc<AppState>, rest: Router) -> Router<Arc<AppState>> {
    let svc = paddock_mcp::http_service(Arc::new(InProcess { router: rest }));
    Router::new().route("/mcp", post_service(svc)).route_layer(
        axum::middleware::from_fn_with_state(state.clone(), require_key),
    )
}

/// 401 (the API's error body) unless the request presents a valid key within its rate.
async fn require_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    if let Err(e) = auth::authenticate(&state, auth::presented_key(&parts)).await {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// Hands a tool's REST request to the router with the MCP caller's key and `Host` (for the
/// URLs `get_url` returns) and its peer address. Nothing else of the caller's request is
/// passed on: no cookies, no authenticated identity (the key is checked again, and charged,
/// by the route like any REST request).
struct InProcess {
    router: Router,
}

impl Backend for InProcess {
    fn send<'a>(
        &'a self,
        req: http::Request<bytes::Bytes>,
        caller: Option<&'a http::request::Parts>,
    ) -> BackendFuture<'a> {
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            if let Some(c) = caller {
                for name in [header::AUTHORIZATION, header::HOST] {
                    if let Some(v) = c.headers.get(&name) {
                        parts.headers.insert(name, v.clone());
                    }
                }
                if let Some(v) = c.headers.get("x-api-key") {
                    parts.headers.insert("x-api-key", v.clone());
                }
                if let Some(peer) = c.extensions.get::<ConnectInfo<SocketAddr>>() {
                    parts.extensions.insert(*peer);
                }
            }
            let req = Request::from_parts(parts, axum::body::Body::from(body));
            let resp = match self.router.clone().oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()))
        })
    }
}
