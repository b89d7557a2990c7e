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
use serde::Deserialize;
use tower::ServiceExt as _;
use utoipa::ToSchema;

use crate::auth;
use paddock_service::state::AppState;

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

/// A JSON-RPC 2.0 request or notification of the MCP protocol. Described here for the
/// document only: `paddock-mcp` parses the messages.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct JsonRpcRequest {
    #[schema(inline)]
    jsonrpc: JsonRpcVersion,
    #[schema(inline)]
    id: Option<JsonRpcId>,
    #[schema(example = "tools/call")]
    method: String,
    #[schema(value_type = Option<Object>)]
    params: Option<serde_json::Value>,
}

/// The JSON-RPC version, always `2.0`.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
enum JsonRpcVersion {
    #[serde(rename = "2.0")]
    V2,
}

/// A request's id.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
enum JsonRpcId {
    String(String),
    Integer(i64),
}

/// A JSON-RPC 2.0 response. Described here for the document only: `paddock-mcp` writes it.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct JsonRpcResponse {
    jsonrpc: String,
    #[schema(value_type = Object)]
    id: serde_json::Value,
    #[schema(value_type = Option<Object>)]
    result: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    error: Option<serde_json::Value>,
}

/// MCP endpoint (Model Context Protocol, streamable HTTP)
///
/// Paddock's MCP tools (create_sandbox, list_sandboxes, kill_sandbox, run_command, run_code,
/// write_file, read_file, list_files, get_url; see docs/mcp.md) over MCP streamable HTTP.
/// The body is one JSON-RPC 2.0 message; send `Accept: application/json,
/// text/event-stream`. The API key is checked first: without a valid one the answer is 401
/// with the API's error body and no MCP handling happens. Stateless: no `Mcp-Session-Id` is
/// issued; every request is answered on its own as `application/json` (a notification or
/// response: 202 with no body). Protocol versions 2024-11-05 to 2026-07-28. Each tool runs
/// as the documented REST calls with the caller's key (same tenant, rate limits, quotas and
/// audit). Tool failures are JSON-RPC results with `isError: true` carrying the API's code
/// and message. Body at most 8 MiB. `GET` and `DELETE` (session streams and session ends)
/// are 405: there are no sessions.
// The route is `paddock_mcp::http_service` behind `require_key`; this function only
// carries its description.
#[allow(dead_code)]
#[utoipa::path(
    post,
    path = "/mcp",
    tag = "mcp",
    operation_id = "mcp",
    request_body = JsonRpcRequest,
    responses(
        (status = 200, description = "The JSON-RPC response", body = JsonRpcResponse),
        (status = 202, description = "A notification or response was accepted (no body)"),
        (status = 401, description = "No or a bad key"),
        (status = 406, description = "`Accept` does not allow `application/json` and `text/event-stream`",
            body = String, content_type = "text/plain"),
        (status = 413, description = "The body is larger than 8 MiB",
            body = String, content_type = "text/plain"),
        (status = 415, description = "The body is not `application/json`, or not a JSON-RPC message",
            body = String, content_type = "text/plain"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) fn mcp() {}
