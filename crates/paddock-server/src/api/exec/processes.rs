//! The processes of a sandbox: the list, output replay (`from_seq`), stdin and signals.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::Response;
use connectrpc::ConnectError;
use connectrpc::client::CallOptions;
use paddock_envd::process::__buffa::oneof::process_event::Event;
use paddock_envd::process::__buffa::oneof::process_input::Input;
use paddock_envd::process::{
    CloseStdinRequest, ConnectRequest, ListRequest, ProcessInput, SendInputRequest,
    SendSignalRequest, Signal,
};
use paddock_runtime::Sandbox;
use tokio::sync::mpsc;

use super::stream::stream_response;
use super::wire::{OutputQuery, ProcessEvent, ProcessList, ProcessPath, ProcessView, SignalBody};
use super::{Format, MAX_STDIN, format_of, selector};
use crate::api::Json;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::wire::form_urlencoded_pairs;
use crate::wire::{no_content, read_limited, typed_response};
use paddock_service::state::{AppState, truncate};

fn parse_pid(s: &str) -> ApiResult<u32> {
    s.parse()
        .map_err(|_| ApiError::NotFound("process not found".into()))
}

/// List processes
///
/// The processes the sandbox's agent started (execs, background commands, PTYs), with
/// their tags.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/processes",
    operation_id = "list_processes",
    tag = "exec",
    params(crate::api::sandbox_view::SandboxIdPath),
    responses(
        (status = 200, description = "Processes", body = ProcessList),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox or process"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (_, sbx) = state.sandbox_for(&caller, &id).await?;
    let r = sbx
        .agent
        .process
        .list_with_options(ListRequest::default(), sbx.call_options(None))
        .await
        .map_err(|e| ApiError::from(paddock_runtime::RuntimeError::from(e)))?
        .into_owned();
    let processes = r
        .processes
        .iter()
        .map(|p| {
            let c = p.config.as_option().cloned().unwrap_or_default();
            ProcessView {
                pid: p.pid,
                tag: p.tag.clone(),
                cmd: c.cmd,
                args: c.args,
                cwd: c.cwd,
            }
        })
        .collect();
    Ok(typed_response(StatusCode::OK, &ProcessList { processes }))
}

/// Replay a process's output from a sequence number, then follow it
///
/// `GET .../processes/{pid}/output?from_seq=N` (or `Last-Event-ID: N-1`): the output the
/// agent kept (8 MiB per process) from chunk N on, then what follows, as NDJSON lines (or
/// SSE events named by `type`, `id` = seq): `{type:stdout|stderr|pty,seq,data|data_b64}`,
/// `{type:keepalive}`, exactly one `{type:end,exit_code,status,timed_out}`.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/processes/{pid}/output",
    operation_id = "process_output",
    tag = "exec",
    params(ProcessPath, OutputQuery),
    responses(
        (status = 200, description = "The stream of its events", content(
            (ProcessEvent = "application/x-ndjson"),
            (ProcessEvent = "text/event-stream"),
        )),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox or process"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn output(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let (_, sbx) = state.sandbox_for(&caller, &id).await?;
    let pid = parse_pid(&pid)?;
    let mut from: Option<u64> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map(|s| s + 1);
    for (k, v) in form_urlencoded_pairs(q.as_deref().unwrap_or("")) {
        match k.as_str() {
            "from_seq" => {
                from = Some(v.parse().map_err(|_| {
                    ApiError::BadRequest(format!("from_seq {:?} is not a number", truncate(&v, 32)))
                })?)
            }
            other => return Err(crate::wire::unknown_param(other)),
        }
    }
    let mut opts = sbx.call_options(None);
    if let Some(f) = from {
        opts = opts.with_header("paddock-replay-from", f.to_string());
    }
    let req = ConnectRequest {
        process: selector(pid).into(),
        ..Default::default()
    };
    let stream = sbx
        .agent
        .process
        .connect_with_options(req, opts)
        .await
        .map_err(|e| ApiError::from(paddock_runtime::RuntimeError::from(e)))?;
    let first_seq = stream
        .headers()
        .get("paddock-first-seq")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let format = match format_of(&headers) {
        Format::Json => Format::Ndjson,
        f => f,
    };
    let rx = pump!(stream);
    Ok(stream_response(format, rx, first_seq, None, None))
}

/// Write to a process's stdin (raw body, at most 1 MiB)
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/processes/{pid}/stdin",
    operation_id = "process_stdin",
    tag = "exec",
    params(ProcessPath),
    request_body(content(
        (inline(crate::api::template_view::Binary) = "application/octet-stream"),
    )),
    responses(
        (status = 204, description = "Written"),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox or process"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
        (status = 413, description = "The body is over 1 MiB"),
    )
)]
pub(crate) async fn stdin(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let res = async {
        let (_, sbx) = state.sandbox_for(&caller, &id).await?;
        let pid = parse_pid(&pid)?;
        let data = read_limited(req, MAX_STDIN, false).await?;
        send_stdin(&sbx, pid, None, data.to_vec(), false).await
    }
    .await;
    state
        .audited(
            &caller,
            "process.stdin",
            Some(&id),
            Some(format!("pid={pid}")),
            res,
        )
        .await?;
    Ok(no_content())
}

/// Close a process's stdin
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/processes/{pid}/stdin/close",
    operation_id = "process_close_stdin",
    tag = "exec",
    params(ProcessPath),
    responses(
        (status = 204, description = "Closed"),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox or process"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn close_stdin(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
) -> ApiResult<Response> {
    let res = async {
        let (_, sbx) = state.sandbox_for(&caller, &id).await?;
        send_stdin(&sbx, parse_pid(&pid)?, None, Vec::new(), true).await
    }
    .await;
    state
        .audited(
            &caller,
            "process.stdin_close",
            Some(&id),
            Some(format!("pid={pid}")),
            res,
        )
        .await?;
    Ok(no_content())
}

/// Signal a process
///
/// SIGTERM or SIGKILL (also `TERM`, `15`, `KILL`, `9`), to the process's group (default),
/// the process alone, or (SIGKILL only) its whole tree.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/processes/{pid}/signal",
    operation_id = "signal_process",
    tag = "exec",
    params(ProcessPath),
    request_body = SignalBody,
    responses(
        (status = 204, description = "Sent"),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox or process"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn signal(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
    Json(body): Json<SignalBody>,
) -> ApiResult<Response> {
    let detail = Some(format!("pid={pid} signal={}", truncate(&body.signal, 16)));
    let res = async {
        let (_, sbx) = state.sandbox_for(&caller, &id).await?;
        let pid = parse_pid(&pid)?;
        let sig = match body
            .signal
            .trim_start_matches("SIG")
            .to_ascii_uppercase()
            .as_str()
        {
            "TERM" | "15" => Signal::SIGNAL_SIGTERM,
            "KILL" | "9" => Signal::SIGNAL_SIGKILL,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unsupported signal {:?}: SIGTERM and SIGKILL are supported",
                    truncate(other, 16)
                )));
            }
        };
        let mut opts: CallOptions = sbx.call_options(None);
        match body.target.as_deref() {
            None | Some("group") => {}
            Some(t @ ("process" | "tree")) => opts = opts.with_header("paddock-signal-target", t),
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "unknown target {:?}: expected group, process or tree",
                    truncate(other, 16)
                )));
            }
        }
        sbx.agent
            .process
            .send_signal_with_options(
                SendSignalRequest {
                    process: selector(pid).into(),
                    signal: sig.into(),
                    ..Default::default()
                },
                opts,
            )
            .await
            .map_err(|e| ApiError::from(paddock_runtime::RuntimeError::from(e)))?;
        Ok(())
    }
    .await;
    state
        .audited(&caller, "process.signal", Some(&id), detail, res)
        .await?;
    Ok(no_content())
}

/// Sends stdin to a process, then optionally closes it.
pub(super) async fn send_stdin(
    sbx: &Sandbox,
    pid: u32,
    user: Option<&str>,
    data: Vec<u8>,
    close: bool,
) -> ApiResult<()> {
    let agent_err = |e: ConnectError| ApiError::from(paddock_runtime::RuntimeError::from(e));
    if !data.is_empty() {
        sbx.agent
            .process
            .send_input_with_options(
                SendInputRequest {
                    process: selector(pid).into(),
                    input: ProcessInput {
                        input: Some(Input::Stdin(data)),
                        ..Default::default()
                    }
                    .into(),
                    ..Default::default()
                },
                sbx.call_options(user),
            )
            .await
            .map_err(agent_err)?;
    }
    if close {
        sbx.agent
            .process
            .close_stdin_with_options(
                CloseStdinRequest {
                    process: selector(pid).into(),
                    ..Default::default()
                },
                sbx.call_options(user),
            )
            .await
            .map_err(agent_err)?;
    }
    Ok(())
}
