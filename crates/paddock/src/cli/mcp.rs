//! `paddock mcp`: Paddock's MCP tools over stdin/stdout for desktop agents (`docs/mcp.md`).
//! The tools live in `paddock-mcp`; here is their [`Backend`]: REST requests to `--url` with
//! `--api-key`, exactly as the other client commands send them.

use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use http_body_util::BodyExt as _;
use paddock_mcp::{Backend, BackendError, BackendFuture, BoxError};

use super::Conn;
use super::api::Api;

/// `paddock mcp`.
#[derive(Args, Debug)]
pub(crate) struct McpArgs {
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// Sends the tools' REST requests to the server over HTTP.
struct RestBackend {
    api: Api,
}

impl Backend for RestBackend {
    fn send<'a>(
        &'a self,
        req: http::Request<bytes::Bytes>,
        _caller: Option<&'a http::request::Parts>,
    ) -> BackendFuture<'a> {
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let target = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let base = self.api.base().as_str().trim_end_matches('/');
            let url = reqwest::Url::parse(&format!("{base}{target}"))
                .map_err(|e| BackendError::Request(format!("{base}{target}: {e}")))?;
            let mut rb = self.api.request(parts.method, url).body(body);
            for (name, value) in &parts.headers {
                rb = rb.header(name, value);
            }
            let resp = rb
                .send()
                .await
                .map_err(|e| BackendError::Unreachable(self.api.transport_error(e).to_string()))?;
            let resp: http::Response<reqwest::Body> = resp.into();
            Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()))
        })
    }
}

/// Serves the MCP tools on stdin/stdout until the client closes stdin.
pub(crate) async fn run(a: McpArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    paddock_mcp::serve_stdio(Arc::new(RestBackend { api })).await?;
    Ok(0)
}
