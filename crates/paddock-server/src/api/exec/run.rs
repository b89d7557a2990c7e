//! `POST /v1/sandboxes/{id}/exec`: the request, its checks, the one-shot JSON exec, and the
//! start of a streaming, background or PTY exec.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use connectrpc::ConnectError;
use connectrpc::client::CallOptions;
use paddock_envd::process::__buffa::oneof::process_event::Event;
use paddock_envd::process::{PTY, ProcessConfig, StartRequest};
use paddock_runtime::{ExecRequest, Sandbox};
use paddock_store::{ExecRecord, SandboxRecord, now_ms};
use tokio::sync::mpsc;

use super::processes::send_stdin;
use super::start::{exec_timeout, failed_start};
use super::stream::{stream_response, to_end};
use super::wire::{ExecBody, ExecResult, ProcessEvent, PtySize, Started};
use super::{Ended, Finish, Format, MAX_STDIN, command_line, format_of, record_end};
use crate::api::Json;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::wire::typed_response;
use paddock_service::state::{AppState, Metrics, audit_entry};

impl ExecBody {
    fn argv(&self) -> ApiResult<Vec<String>> {
        crate::wire::command_argv(self.cmd.clone(), self.command.clone())
    }
}

/// Run a command
///
/// Runs to completion and answers its result as JSON (`Accept: application/json`, the
/// default), or streams its events (`Accept: application/x-ndjson` or `text/event-stream`):
/// NDJSON lines (or SSE events named by `type`, `id` = seq) `{type:start,pid}`,
/// `{type:stdout|stderr|pty,seq,data|data_b64}`, `{type:keepalive}`, exactly one
/// `{type:end,exit_code,status,timed_out,duration_ms}`. `background: true` answers 202 with
/// the pid at once. A command that cannot start because it is not found or not executable
/// is answered like a shell does: exit_code 127 or 126, pid null, status "failed to
/// start", the reason in `error` and on stderr (a stream sends one stderr line and the end,
/// without a start line; a background exec answers 200 with this JSON). Other start
/// failures, such as a cwd that does not exist or the user may not enter, are 400. Either
/// way the exec history records the command as `failed: <reason>`. A client that leaves a
/// stream does not stop the command: replay its output with `GET .../processes/{pid}/output`.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/exec",
    operation_id = "exec",
    tag = "exec",
    params(crate::api::sandbox_view::SandboxIdPath),
    request_body = ExecBody,
    responses(
        (status = 200, description = "The result (JSON), or the stream of its events (NDJSON lines or SSE events)", content(
            (ExecResult = "application/json"),
            (ProcessEvent = "application/x-ndjson"),
            (ProcessEvent = "text/event-stream"),
        )),
        (status = 202, description = "Started in the background", body = Started),
        (status = 400, description = "Bad input, or the command cannot start (such as a missing cwd)"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox"),
        (status = 409, description = "The sandbox is not running"),
        (status = 413, description = "`stdin` over 1 MiB"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn exec(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<ExecBody>,
) -> ApiResult<Response> {
    let argv = body.argv();
    let detail = argv.as_ref().ok().map(|a| command_line(a));
    match start_exec(&state, &caller, &id, format_of(&headers), body, argv).await {
        // A one-shot exec that ran writes its audit entry with its history row.
        Ok(Answer::Audited(r)) => Ok(r),
        // Behind the answer: the audit entry is not on the round trip (`paddock_service::hotpath`).
        res => state.audited_behind(&caller, "exec", Some(&id), detail, res.map(Answer::into)),
    }
}

/// An exec's answer, and whether its audit entry is already on its way.
enum Answer {
    /// Written with the exec's history row (a one-shot JSON exec that ran).
    Audited(Response),
    /// Still to be written by the caller.
    Plain(Response),
}

impl From<Answer> for Response {
    fn from(a: Answer) -> Response {
        match a {
            Answer::Audited(r) | Answer::Plain(r) => r,
        }
    }
}

/// A one-shot JSON exec still running after this long gets its history row (`running`)
/// then, so `GET .../logs` shows it while it runs; one that ends sooner gets its finished
/// row and its audit entry in one write behind the answer (`paddock_service::hotpath`).
pub(super) const HISTORY_RUNNING_AFTER: Duration = Duration::from_millis(200);

/// An exec whose request passed the checks and whose history row is written (or, for the
/// one-shot JSON exec, being written behind).
struct Accepted<'a, H> {
    state: &'a Arc<AppState>,
    rec: SandboxRecord,
    sbx: Arc<Sandbox>,
    history_id: H,
    command: String,
    timeout: Option<Duration>,
}

async fn start_exec(
    state: &Arc<AppState>,
    caller: &Caller,
    id: &str,
    format: Format,
    body: ExecBody,
    argv: ApiResult<Vec<String>>,
) -> ApiResult<Answer> {
    let (rec, sbx) = state.sandbox_for(caller, id).await?;
    let argv = argv?;
    let (timeout, max_output) = check_limits(state, &body)?;
    let command = command_line(&argv);
    Metrics::inc(&state.metrics.execs);
    // The simple case: run to completion and answer JSON. Its history row is written after
    // the answer, or while it runs if it runs long (`HISTORY_RUNNING_AFTER`).
    if format == Format::Json && !body.background && body.pty.is_none() && body.tag.is_none() {
        let x = Accepted {
            state,
            rec,
            sbx,
            history_id: (),
            command,
            timeout,
        };
        return run_to_end(x, caller, body, argv, max_output).await;
    }
    let history_id = insert_history(state, &rec, &command, now_ms()).await;
    let x = Accepted {
        state,
        rec,
        sbx,
        history_id,
        command,
        timeout,
    };
    start_process(x, format, body, argv)
        .await
        .map(Answer::Plain)
}

/// Checks the request's limits: the time limit and the output cap it asks for, its stdin
/// size and its PTY size.
fn check_limits(state: &AppState, body: &ExecBody) -> ApiResult<(Option<Duration>, usize)> {
    let timeout = exec_timeout(body.timeout, body.background, state.cfg.exec_timeout)?;
    let max_output = body.max_output.unwrap_or(state.cfg.max_output);
    if max_output == 0 || max_output > state.cfg.max_output {
        return Err(ApiError::BadRequest(format!(
            "max_output must be between 1 and {} bytes",
            state.cfg.max_output
        )));
    }
    if body.stdin.as_ref().is_some_and(|s| s.len() > MAX_STDIN) {
        return Err(ApiError::PayloadTooLarge(MAX_STDIN));
    }
    if let Some(p) = &body.pty
        && (p.cols == 0 || p.rows == 0 || p.cols > 1000 || p.rows > 1000)
    {
        return Err(ApiError::BadRequest(
            "pty cols and rows must be 1 to 1000".into(),
        ));
    }
    Ok((timeout, max_output))
}

/// Writes the exec's history row as `running`, started `at`; `None` when the store
/// refused it.
async fn insert_history(
    state: &AppState,
    rec: &SandboxRecord,
    command: &str,
    at: i64,
) -> Option<i64> {
    state
        .store
        .insert_exec(&ExecRecord {
            id: 0,
            sandbox_id: rec.id.clone(),
            at,
            command: command.to_owned(),
            pid: None,
            exit_code: None,
            status: "running".into(),
            duration_ms: None,
        })
        .await
        .ok()
}

/// Runs the command to completion and answers its result as JSON.
async fn run_to_end(
    x: Accepted<'_, ()>,
    caller: &Caller,
    body: ExecBody,
    argv: Vec<String>,
    max_output: usize,
) -> ApiResult<Answer> {
    let Accepted {
        state,
        rec,
        sbx,
        command,
        timeout,
        ..
    } = x;
    let at = now_ms();
    let run = sbx.exec(ExecRequest {
        argv,
        env: body.env,
        cwd: body.cwd,
        user: body.user,
        stdin: body.stdin.map(String::into_bytes),
        timeout,
        max_output: Some(max_output),
    });
    tokio::pin!(run);
    // The `running` row, written once the command has run `HISTORY_RUNNING_AFTER`.
    let mut running = None;
    let r = tokio::select! {
        r = &mut run => r,
        () = tokio::time::sleep(HISTORY_RUNNING_AFTER) => {
            let (st, rec, command) = (state.clone(), rec.clone(), command.clone());
            running = Some(state.behind.spawn(async move {
                insert_history(&st, &rec, &command, at).await
            }));
            run.await
        }
    };
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            let history_id = match running {
                Some(h) => h.await.ok().flatten(),
                None => insert_history(state, &rec, &command, at).await,
            };
            return failed_start(state, &rec, history_id, &command, e, Format::Json)
                .await
                .map(Answer::Plain);
        }
    };
    let end = Ended {
        exit_code: r.exit_code,
        status: r.status.clone(),
        timed_out: r.timed_out,
    };
    {
        let (st, pid, took, oom) = (state.clone(), r.pid, r.duration, r.oom_killed);
        let audit = audit_entry(
            Some(caller),
            "exec",
            Some(&rec.id),
            "ok",
            Some(command.clone()),
        );
        state.behind.spawn(async move {
            let Some(running) = running else {
                let row = ExecRecord {
                    id: 0,
                    sandbox_id: rec.id.clone(),
                    at,
                    command: command.clone(),
                    pid: Some(pid),
                    exit_code: end.exit_code,
                    status: end.status.clone(),
                    duration_ms: Some(i64::try_from(took.as_millis()).unwrap_or(i64::MAX)),
                };
                if let Err(e) = st.store.insert_exec_audited(&row, &audit).await {
                    tracing::error!("storing exec history and audit entry: {e}");
                }
                record_end(&st, &rec, None, &command, Some(pid), &end, took, oom).await;
                return;
            };
            let history_id = running.await.ok().flatten();
            record_end(&st, &rec, history_id, &command, Some(pid), &end, took, oom).await;
            if let Err(e) = st.store.insert_audit(&audit).await {
                tracing::error!("storing audit entry exec: {e}");
            }
        });
    }
    let v = ExecResult {
        pid: Some(r.pid),
        exit_code: r.exit_code,
        status: r.status,
        stdout: None,
        stderr: None,
        stdout_b64: None,
        stderr_b64: None,
        stdout_truncated: r.stdout_truncated,
        stderr_truncated: r.stderr_truncated,
        duration_ms: r.duration.as_millis() as u64,
        timed_out: r.timed_out,
        oom_killed: r.oom_killed,
        error: None,
    }
    .with_output(&r.stdout, &r.stderr);
    Ok(Answer::Audited(typed_response(StatusCode::OK, &v)))
}

/// Starts a streaming, background or PTY exec: the process, its stdin, then the answer (a
/// stream of its events, or `202` with its pid while its outcome is drained in the
/// background).
async fn start_process(
    x: Accepted<'_, Option<i64>>,
    format: Format,
    body: ExecBody,
    argv: Vec<String>,
) -> ApiResult<Response> {
    let Accepted {
        state,
        rec,
        sbx,
        history_id,
        command,
        timeout,
    } = x;
    let Some((cmd, args)) = argv.split_first() else {
        return Err(ApiError::BadRequest("cmd must not be empty".into()));
    };
    let with_stdin = body.stdin.is_some() || body.background || body.pty.is_some();
    let req = start_request(
        cmd,
        args,
        body.env,
        body.cwd,
        body.pty.as_ref(),
        body.tag,
        with_stdin,
    );
    let mut opts = sbx.call_options(body.user.as_deref());
    if let Some(t) = timeout {
        opts = opts.with_timeout(t);
    }
    let oom_before = sbx.oom_kills();
    let started = Instant::now();
    // A failed start answers in the format asked for; a background start as JSON.
    let fail_format = if body.background {
        Format::Json
    } else {
        format
    };
    let (rx, pid) = match spawn(&sbx, req, opts).await {
        Ok(s) => s,
        Err(e) => {
            return failed_start(state, &rec, history_id, &command, e, fail_format).await;
        }
    };
    if let Some(input) = body.stdin {
        send_stdin(
            &sbx,
            pid,
            body.user.as_deref(),
            input.into_bytes(),
            !body.background && body.pty.is_none(),
        )
        .await?;
    }
    let finish = Finish {
        state: state.clone(),
        sandbox: sbx.clone(),
        record: rec,
        history_id,
        command,
        started,
        oom_before,
    };
    Ok(answer(format, body.background, rx, pid, finish))
}

/// The agent's start request for a streaming, background or PTY exec.
fn start_request(
    cmd: &str,
    args: &[String],
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    pty: Option<&PtySize>,
    tag: Option<String>,
    with_stdin: bool,
) -> StartRequest {
    StartRequest {
        process: ProcessConfig {
            cmd: cmd.to_owned(),
            args: args.to_vec(),
            envs: env.into_iter().collect(),
            cwd,
            ..Default::default()
        }
        .into(),
        pty: pty
            .map(|p| PTY {
                size: paddock_envd::process::pty::Size {
                    cols: p.cols,
                    rows: p.rows,
                    ..Default::default()
                }
                .into(),
                ..Default::default()
            })
            .into(),
        tag,
        stdin: Some(with_stdin),
        ..Default::default()
    }
}

/// Starts the process and waits for its start event: the event stream and the pid.
async fn spawn(
    sbx: &Sandbox,
    req: StartRequest,
    opts: CallOptions,
) -> Result<(mpsc::Receiver<Result<Event, ConnectError>>, u32), paddock_runtime::RuntimeError> {
    let stream = sbx.agent.process.start_with_options(req, opts).await?;
    let mut rx = pump!(stream);
    // The first event is the start event, with the pid.
    let pid = match rx.recv().await {
        Some(Ok(Event::Start(s))) => s.pid,
        Some(Err(e)) => return Err(e.into()),
        _ => {
            return Err(paddock_runtime::RuntimeError::Unsupported {
                resource: "process",
                reason: "the process did not start".into(),
            });
        }
    };
    Ok((rx, pid))
}

/// The answer to a started process: `202` with its pid for a background or JSON exec (the
/// stream is drained in the background so the exec history gets the outcome), else the
/// stream of its events.
fn answer(
    format: Format,
    background: bool,
    mut rx: mpsc::Receiver<Result<Event, ConnectError>>,
    pid: u32,
    finish: Finish,
) -> Response {
    if background || format == Format::Json {
        // Drain the stream in the background so the exec history gets the outcome.
        tokio::spawn(async move {
            let mut seq = 0;
            let mut end = Ended::default();
            while let Some(item) = rx.recv().await {
                if let Some(e) = to_end(item, &mut seq).1 {
                    end = e;
                    break;
                }
            }
            finish.done(Some(pid), &end).await;
        });
        return typed_response(StatusCode::ACCEPTED, &Started { pid });
    }
    let first = ProcessEvent::Start { pid };
    stream_response(format, rx, 0, Some(first), Some((finish, pid)))
}
