//! Paddock's MCP server: the sandbox tools of `docs/mcp.md`, built with the official `rmcp`
//! SDK, and the two ways to serve them.
//!
//! - [`serve_stdio`]: `paddock mcp`, for desktop agents; its [`Backend`] sends REST requests
//!   to a server with the configured key.
//! - [`http_service`]: the streamable-HTTP endpoint the server mounts at `/mcp`; its
//!   [`Backend`] hands each REST request to the server's own router with the credentials of
//!   the HTTP request that carried the MCP message.
//!
//! **Invariant:** a tool does nothing but documented REST calls through its [`Backend`], so
//! auth, tenancy, limits and audit are REST's; this crate never depends on the server.

mod backend;
mod code;
pub mod limits;
mod params;
mod tools;

use std::sync::Arc;

pub use backend::{
    ApiRequest, ApiResponse, Backend, BackendError, BackendFuture, BoxBody, BoxError, read_capped,
};
pub use tools::PaddockTools;

use rmcp::ServiceExt as _;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

/// Why the stdio server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("MCP session over stdio failed to start: {0}")]
    Start(String),
    #[error("MCP session over stdio: {0}")]
    Session(String),
}

/// Serves the tools over stdin/stdout until the client closes them.
pub async fn serve_stdio(backend: Arc<dyn Backend>) -> Result<(), Error> {
    let running = PaddockTools::new(backend)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| Error::Start(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| Error::Session(e.to_string()))?;
    Ok(())
}

/// The MCP streamable-HTTP endpoint as a tower service (mount it at `/mcp` behind the API
/// key check). Stateless: no MCP sessions are kept; every POST is answered on its own, as
/// JSON. The `Host` header is not checked here (the server's key check stands in front).
pub fn http_service(
    backend: Arc<dyn Backend>,
) -> StreamableHttpService<PaddockTools, NeverSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .disable_allowed_hosts()
        .with_max_request_body_bytes(limits::MCP_BODY_CAP);
    StreamableHttpService::new(
        move || Ok(PaddockTools::new(backend.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}
