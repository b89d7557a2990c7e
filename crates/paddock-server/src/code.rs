//! The way to a sandbox's code interpreter (the server on port 49999 that the
//! `code-interpreter` template starts, `paddock-interpreter`): one HTTP/1 request over
//! `Sandbox::connect_port`, as the port proxy reaches ports. The routes are `api::code`; the
//! port proxy names [`TEMPLATE`] when this port is closed.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, header};
use hyper_util::rt::TokioIo;

use crate::error::{ApiError, ApiResult};
use paddock_service::auth::keys::Caller;
use paddock_service::state::AppState;

/// The code interpreter's port in the sandbox (E2B's `JUPYTER_PORT`).
pub const INTERPRETER_PORT: u16 = 49999;
/// The template that has the interpreter.
pub const TEMPLATE: &str = "code-interpreter";
/// How long connecting to the interpreter may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one request to the sandbox's interpreter.
pub async fn upstream(
    state: &AppState,
    caller: &Caller,
    id: &str,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> ApiResult<hyper::Response<hyper::body::Incoming>> {
    let (_rec, sbx) = state.sandbox_for(caller, id).await?;
    let none = || {
        ApiError::NoInterpreter(format!(
            "sandbox {id} has no code interpreter (nothing listens on port {INTERPRETER_PORT}); \
             create it from template {TEMPLATE}"
        ))
    };
    let stream = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        sbx.connect_port(INTERPRETER_PORT, CONNECT_TIMEOUT),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(paddock_runtime::RuntimeError::PortClosed { .. })) | Err(_) => return Err(none()),
        Ok(Err(e)) => return Err(e.into()),
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Body>(TokioIo::new(stream))
        .await
        .map_err(|_| none())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, format!("127.0.0.1:{INTERPRETER_PORT}"));
    if body.is_some() {
        b = b.header(header::CONTENT_TYPE, "application/json");
    }
    let req = b
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    sender.send_request(req).await.map_err(|e| {
        ApiError::Agent(format!(
            "the code interpreter of sandbox {id} closed the connection: {e}"
        ))
    })
}
