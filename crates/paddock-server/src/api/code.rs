//! `/v1/sandboxes/{id}/code`: run code in a sandbox's code interpreter (the server on port
//! 49999 that the `code-interpreter` template starts, `paddock-interpreter`), and manage its
//! contexts. The server reaches it through `Sandbox::connect_port`, as the port proxy does,
//! and streams its events as NDJSON: `stdout`, `stderr`, `result`, `error`,
//! `number_of_executions` and, last, `end` (the interpreter's `end_of_execution`).
//! Wire format: `docs/code-interpreter.md`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Json;
use crate::auth::Caller;
use crate::code::upstream;
use crate::error::{ApiError, ApiResult};
use crate::wire::{read_limited, typed_response};
use paddock_service::state::AppState;

/// Most bytes of code one request may carry (the interpreter's limit; the body may have
/// twice that for JSON escapes).
pub const MAX_CODE_BYTES: usize = 1024 * 1024;
/// How long a context request (create starts a kernel) may take.
const CONTEXT_TIMEOUT: Duration = Duration::from_secs(90);

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/sandboxes/{id}/code", post(run))
        .route(
            "/v1/sandboxes/{id}/code/contexts",
            get(list_contexts).post(create_context),
        )
        .route(
            "/v1/sandboxes/{id}/code/contexts/{ctx}",
            delete(delete_context),
        )
        .route(
            "/v1/sandboxes/{id}/code/contexts/{ctx}/restart",
            post(restart_context),
        )
        .route(
            "/v1/sandboxes/{id}/code/contexts/{ctx}/interrupt",
            post(interrupt_context),
        )
}

/// Code to run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RunCode)]
pub(crate) struct RunBody {
    #[schema(max_length = 1048576)]
    code: String,
    /// python (default), javascript or js, bash or sh
    #[serde(default)]
    #[schema(default = "python")]
    language: Option<String>,
    /// A context from POST .../code/contexts; default: the language's default context
    #[serde(default)]
    context_id: Option<String>,
    /// Environment variables for this execution only (at most 256)
    #[serde(default)]
    env: Option<std::collections::BTreeMap<String, String>>,
    /// Seconds; 0 or absent: none
    #[serde(default)]
    #[schema(minimum = 0, maximum = 86400)]
    timeout: Option<f64>,
}

/// A context's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContextLanguage {
    Python,
    Javascript,
    Bash,
}

/// A code interpreter context (its own kernel), as the interpreter answers it. Described
/// here for the document only: the interpreter's answer is passed through.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = CodeContext)]
pub(crate) struct ContextView {
    id: String,
    #[schema(inline)]
    language: ContextLanguage,
    cwd: String,
}

/// The kind of an event of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CodeEventType {
    Stdout,
    Stderr,
    Result,
    Error,
    NumberOfExecutions,
    End,
}

/// One NDJSON line of a run: `stdout`/`stderr` (`text`, `timestamp` in ns), `result` (a
/// MIME bundle as fields), `error` (`name`, `value`, `traceback`), `number_of_executions`
/// (`execution_count`) and `end` last. Described here for the document only: the
/// interpreter writes them.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CodeEvent {
    #[schema(inline)]
    r#type: CodeEventType,
}

#[derive(Serialize)]
struct UpstreamRun<'a> {
    code: &'a str,
    language: Option<&'a str>,
    context_id: Option<&'a str>,
    env_vars: Option<&'a std::collections::BTreeMap<String, String>>,
    timeout: Option<f64>,
}

/// The error body of an interpreter whose error answer is not JSON: its text as the message.
#[derive(Debug, Serialize)]
struct InterpreterError {
    /// Always `interpreter_error`.
    code: &'static str,
    message: String,
}

impl InterpreterError {
    fn of(body: &[u8]) -> InterpreterError {
        InterpreterError {
            code: "interpreter_error",
            message: String::from_utf8_lossy(body).trim().to_string(),
        }
    }
}

/// An interpreter's error answer, in the API's error format (its body already is
/// `{"code", "message"}`, and is passed on as it is).
async fn passthrough_error(resp: hyper::Response<hyper::body::Incoming>) -> Response {
    let status = resp.status();
    let body = match tokio::time::timeout(CONTEXT_TIMEOUT, resp.into_body().collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        _ => Bytes::new(),
    };
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => (status, axum::Json(v)).into_response(),
        Err(_) => typed_response(status, &InterpreterError::of(&body)),
    }
}

/// Run code in the sandbox's code interpreter (NDJSON stream)
///
/// For sandboxes of template `code-interpreter` (alias `code-interpreter-v1`): runs Python,
/// JavaScript or bash in a stateful context and streams its events as NDJSON, one a line:
/// `stdout`/`stderr` (`text`, `timestamp` in ns), `result` (a MIME bundle as fields: `text`,
/// `html`, `markdown`, `svg`, `png` and `jpeg` base64, `pdf`, `latex`, `json`,
/// `javascript`, `chart`, `data`, `extra`, `is_main_result`), `error` (`name`, `value`,
/// `traceback`), `number_of_executions` (`execution_count`) and `end` last. Past `timeout`
/// the kernel is interrupted (an `error` `TimeoutError`) and keeps its state; a client
/// leaving interrupts it too. Code at most 1 MiB (413 `code_too_large`), output at most
/// 32 MiB per execution. See docs/code-interpreter.md.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/code",
    tag = "code",
    operation_id = "run_code",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = RunBody,
    responses(
        (status = 200, description = "The events", body = CodeEvent, content_type = "application/x-ndjson"),
        (status = 400, description = "Unknown language (`unknown_language`), bad timeout, invalid body"),
        (status = 404, description = "No such sandbox, or no such context (`context_not_found`)"),
        (status = 409, description = "`no_interpreter`: nothing listens on port 49999; create the sandbox from template code-interpreter"),
        (status = 413, description = "Code over 1 MiB (`code_too_large`)"),
        (status = 503, description = "The context's kernel cannot start (`kernel_unavailable`)"),
    )
)]
pub(crate) async fn run(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    // The body may be larger than the API's JSON limit: the code alone may have 1 MiB.
    let raw = read_limited(req, 2 * MAX_CODE_BYTES + 64 * 1024, true).await?;
    let body: RunBody = super::json::parse(&raw)?;
    // The code's own limit is the interpreter's: 413 `code_too_large`, passed through.
    if let Some(t) = body.timeout
        && !(t.is_finite() && (0.0..=86_400.0).contains(&t))
    {
        return Err(ApiError::BadRequest(
            "timeout must be between 0 and 86400 seconds (0: none)".into(),
        ));
    }
    let up = UpstreamRun {
        code: &body.code,
        language: body.language.as_deref(),
        context_id: body.context_id.as_deref(),
        env_vars: body.env.as_ref(),
        timeout: body.timeout,
    };
    let payload = serde_json::to_vec(&up).map_err(|e| ApiError::Internal(e.to_string()))?;
    let resp = upstream(
        &state,
        &caller,
        &id,
        Method::POST,
        "/execute",
        Some(payload),
    )
    .await?;
    if !resp.status().is_success() {
        return Ok(passthrough_error(resp).await);
    }
    // Line by line: the interpreter's `end_of_execution` becomes `end`.
    let mut pending: Vec<u8> = Vec::new();
    let mut frames = resp.into_body().into_data_stream();
    let stream = async_stream(move |tx| async move {
        while let Some(chunk) = frames.next().await {
            let Ok(chunk) = chunk else { break };
            pending.extend_from_slice(&chunk);
            while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                let out = if line.starts_with(br#"{"type":"end_of_execution""#) {
                    b"{\"type\":\"end\"}\n".to_vec()
                } else {
                    line
                };
                if tx.send(Bytes::from(out)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// A stream fed by a task: the task ends (and drops the upstream) when the client leaves.
fn async_stream<F, Fut>(f: F) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(f(tx));
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok)))
}

/// Forwards a context request and its answer.
async fn context_call(
    state: &AppState,
    caller: &Caller,
    id: &str,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> ApiResult<Response> {
    let resp = tokio::time::timeout(
        CONTEXT_TIMEOUT,
        upstream(state, caller, id, method, path, body),
    )
    .await
    .map_err(|_| {
        ApiError::Agent(format!(
            "the code interpreter of sandbox {id} did not answer"
        ))
    })??;
    if !resp.status().is_success() {
        return Ok(passthrough_error(resp).await);
    }
    let status = resp.status();
    let body = tokio::time::timeout(CONTEXT_TIMEOUT, resp.into_body().collect())
        .await
        .map_err(|_| ApiError::Agent("the code interpreter did not answer".into()))?
        .map_err(|e| ApiError::Agent(format!("reading the code interpreter's answer: {e}")))?
        .to_bytes();
    if body.is_empty() {
        return Ok(status.into_response());
    }
    Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A context id as the interpreter makes them (a UUID), checked before it goes in a path.
fn ctx_id(ctx: &str) -> ApiResult<&str> {
    if !ctx.is_empty()
        && ctx.len() <= 64
        && ctx.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(ctx)
    } else {
        Err(ApiError::NotFound(format!("context {ctx:?} not found")))
    }
}

/// A new context.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(default = "python")]
    language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(default = "/home/user")]
    cwd: Option<String>,
}

/// List the code interpreter's contexts
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/code/contexts",
    tag = "code",
    operation_id = "list_code_contexts",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "The contexts", body = Vec<ContextView>),
        (status = 409, description = "`no_interpreter`"),
    )
)]
pub(crate) async fn list_contexts(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    context_call(&state, &caller, &id, Method::GET, "/contexts", None).await
}

/// Create a code interpreter context (its own kernel)
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/code/contexts",
    tag = "code",
    operation_id = "create_code_context",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = CreateContext,
    responses(
        (status = 200, description = "The context, once its kernel answers", body = ContextView),
        (status = 400, description = "Unknown language, relative cwd"),
        (status = 409, description = "`no_interpreter`"),
        (status = 429, description = "`too_many_contexts`: at most 32"),
        (status = 503, description = "`kernel_unavailable`"),
    )
)]
pub(crate) async fn create_context(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<CreateContext>,
) -> ApiResult<Response> {
    let payload = serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.to_string()))?;
    context_call(
        &state,
        &caller,
        &id,
        Method::POST,
        "/contexts",
        Some(payload),
    )
    .await
}

/// Delete a context (its kernel is killed)
#[utoipa::path(
    delete,
    path = "/v1/sandboxes/{id}/code/contexts/{ctx}",
    tag = "code",
    operation_id = "delete_code_context",
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("ctx" = String, Path, description = "Context id"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such context"),
        (status = 409, description = "`no_interpreter`"),
    )
)]
pub(crate) async fn delete_context(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, ctx)): Path<(String, String)>,
) -> ApiResult<Response> {
    let path = format!("/contexts/{}", ctx_id(&ctx)?);
    context_call(&state, &caller, &id, Method::DELETE, &path, None).await
}

/// Restart a context's kernel (its state is lost)
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/code/contexts/{ctx}/restart",
    tag = "code",
    operation_id = "restart_code_context",
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("ctx" = String, Path, description = "Context id"),
    ),
    responses(
        (status = 204, description = "Restarted"),
        (status = 404, description = "No such context"),
        (status = 409, description = "`no_interpreter`"),
        (status = 503, description = "`kernel_unavailable`"),
    )
)]
pub(crate) async fn restart_context(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, ctx)): Path<(String, String)>,
) -> ApiResult<Response> {
    let path = format!("/contexts/{}/restart", ctx_id(&ctx)?);
    context_call(&state, &caller, &id, Method::POST, &path, None).await
}

/// Interrupt a context's running execution
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/code/contexts/{ctx}/interrupt",
    tag = "code",
    operation_id = "interrupt_code_context",
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("ctx" = String, Path, description = "Context id"),
    ),
    responses(
        (status = 204, description = "Interrupted (or nothing ran)"),
        (status = 404, description = "No such context"),
        (status = 409, description = "`no_interpreter`"),
    )
)]
pub(crate) async fn interrupt_context(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, ctx)): Path<(String, String)>,
) -> ApiResult<Response> {
    let path = format!("/contexts/{}/interrupt", ctx_id(&ctx)?);
    context_call(&state, &caller, &id, Method::POST, &path, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_ids_are_checked_before_they_reach_a_path() {
        assert!(ctx_id("0b7c1f6e-1f2a-4c7e-9a53-2b1d8d1a9f00").is_ok());
        assert!(ctx_id("../health").is_err());
        assert!(ctx_id("").is_err());
        assert!(ctx_id("a?b").is_err());
    }

    /// An interpreter's error that is not JSON is the `json!` body it replaced.
    #[test]
    fn an_interpreter_error_serialises_as_before() {
        let body = b"  kernel died\n";
        let old = serde_json::json!({
            "code": "interpreter_error",
            "message": String::from_utf8_lossy(body).trim().to_string(),
        });
        let new = serde_json::to_value(InterpreterError::of(body)).unwrap();
        assert_eq!(new.to_string(), old.to_string());
        assert_eq!(
            new.to_string(),
            r#"{"code":"interpreter_error","message":"kernel died"}"#
        );
    }
}
