//! Exec and processes: `POST /v1/sandboxes/{id}/exec` (JSON result, NDJSON or SSE stream,
//! or background), the process list, output replay, stdin, signals, and an interactive PTY
//! over WebSocket.
//!
//! A client that disconnects from a streaming exec does not stop the command: the agent
//! keeps it running and keeps its output (8 MiB per process), so
//! `GET .../processes/{pid}/output?from_seq=N` can replay it. The command's own `timeout`
//! still applies. Closing the PTY WebSocket kills the shell.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine as _;
use bytes::Bytes;
use connectrpc::ConnectError;
use connectrpc::client::CallOptions;
use paddock_envd::process::__buffa::oneof::process_event::Event;
use paddock_envd::process::__buffa::oneof::process_event::data_event::Output;
use paddock_envd::process::__buffa::oneof::process_input::Input;
use paddock_envd::process::__buffa::oneof::process_selector::Selector;
use paddock_envd::process::{
    CloseStdinRequest, ConnectRequest, ListRequest, PTY, ProcessConfig, ProcessInput,
    ProcessSelector, SendInputRequest, SendSignalRequest, Signal, StartRequest, UpdateRequest,
};
use paddock_runtime::{ExecRequest, Sandbox};
use paddock_store::{ExecRecord, SandboxRecord, now_ms};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::exec_start::{exec_timeout, failed_start};
use super::sandboxes::form_urlencoded_pairs;
use super::{Json, json_response, no_content, read_limited};
use crate::auth::{Caller, authenticate};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Metrics, truncate};

/// Default time a foreground command may run when it names no `timeout` (the server's
/// `--exec-timeout`).
pub const DEFAULT_EXEC_TIMEOUT_SECS: u64 = 60;
/// Longest time a command may run.
pub const MAX_EXEC_TIMEOUT_SECS: u64 = 24 * 3600;
/// Largest stdin body (`POST .../stdin`) and `stdin` field of an exec.
pub const MAX_STDIN: usize = 1 << 20;
/// A streaming response sends a keepalive after this much silence.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// Bytes of a command line kept in the exec history and audit trail.
const HISTORY_COMMAND: usize = 1024;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/sandboxes/{id}/exec", post(exec))
        .route("/v1/sandboxes/{id}/processes", get(list))
        .route("/v1/sandboxes/{id}/processes/{pid}/output", get(output))
        .route("/v1/sandboxes/{id}/processes/{pid}/stdin", post(stdin))
        .route(
            "/v1/sandboxes/{id}/processes/{pid}/stdin/close",
            post(close_stdin),
        )
        .route("/v1/sandboxes/{id}/processes/{pid}/signal", post(signal))
        .route("/v1/sandboxes/{id}/pty", get(pty))
}

/// How a response carries process output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    Json,
    Ndjson,
    Sse,
}

fn format_of(h: &HeaderMap) -> Format {
    let accept = h
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("text/event-stream") {
        Format::Sse
    } else if accept.contains("application/x-ndjson") || accept.contains("application/jsonl") {
        Format::Ndjson
    } else {
        Format::Json
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PtySize {
    cols: u32,
    rows: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecBody {
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    max_output: Option<usize>,
    #[serde(default)]
    background: bool,
    #[serde(default)]
    pty: Option<PtySize>,
    #[serde(default)]
    tag: Option<String>,
}

impl ExecBody {
    fn argv(&self) -> ApiResult<Vec<String>> {
        match (&self.cmd, &self.command) {
            (Some(c), None) if !c.is_empty() && !c[0].is_empty() => Ok(c.clone()),
            (Some(_), None) => Err(ApiError::BadRequest("cmd must not be empty".into())),
            (None, Some(c)) if !c.is_empty() => Ok(vec![
                "/bin/bash".into(),
                "-l".into(),
                "-c".into(),
                c.clone(),
            ]),
            (None, Some(_)) => Err(ApiError::BadRequest("command must not be empty".into())),
            _ => Err(ApiError::BadRequest(
                "give exactly one of `cmd` (an argv array) and `command` (a shell command line)"
                    .into(),
            )),
        }
    }
}

/// Shell-like rendering of an argv for history and audit.
fn command_line(argv: &[String]) -> String {
    let s = if argv.len() == 4 && argv[0] == "/bin/bash" && argv[1] == "-l" && argv[2] == "-c" {
        argv[3].clone()
    } else {
        argv.join(" ")
    };
    truncate(&s, HISTORY_COMMAND)
}

fn selector(pid: u32) -> ProcessSelector {
    ProcessSelector {
        selector: Some(Selector::Pid(pid)),
        ..Default::default()
    }
}

/// Bytes as JSON: `data` when UTF-8, else `data_b64`.
pub(super) fn put_bytes(v: &mut Value, key: &str, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => v[key] = s.into(),
        Err(_) => {
            v[format!("{key}_b64")] = base64::engine::general_purpose::STANDARD.encode(b).into();
            v[key] = Value::Null;
        }
    }
}

/// Writes the agent's process events into a channel, one task per stream.
macro_rules! pump {
    ($stream:expr) => {{
        let mut stream = $stream;
        let (tx, rx) = mpsc::channel::<Result<Event, ConnectError>>(64);
        tokio::spawn(async move {
            loop {
                let item = match stream.message().await {
                    Ok(Some(m)) => {
                        let m = m.to_owned_message();
                        match m.event.as_option().and_then(|e| e.event.clone()) {
                            Some(ev) => Ok(ev),
                            None => continue,
                        }
                    }
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                let last = item.is_err();
                // A dropped receiver means the client is gone; the process keeps running.
                if tx.send(item).await.is_err() || last {
                    break;
                }
            }
        });
        rx
    }};
}

/// The outcome of a process, as far as a stream saw it.
#[derive(Debug, Default, Clone)]
pub(super) struct Ended {
    pub(super) exit_code: Option<i32>,
    pub(super) status: String,
    pub(super) timed_out: bool,
}

/// What a streaming exec records when it ends.
struct Finish {
    state: Arc<AppState>,
    sandbox: Arc<Sandbox>,
    record: SandboxRecord,
    history_id: Option<i64>,
    command: String,
    started: Instant,
    oom_before: u64,
}

impl Finish {
    async fn done(self, pid: Option<u32>, end: &Ended) -> bool {
        let rt = self.state.runtime.clone();
        let sbx = self.sandbox.clone();
        let oom_after = tokio::task::spawn_blocking(move || sbx.stats(&rt).oom_kills)
            .await
            .unwrap_or(self.oom_before);
        let oom = oom_after > self.oom_before;
        record_end(
            &self.state,
            &self.record,
            self.history_id,
            &self.command,
            pid,
            end,
            self.started.elapsed(),
            oom,
        );
        oom
    }
}

#[allow(clippy::too_many_arguments)] // One call site per exec mode; a struct would only rename them.
pub(super) fn record_end(
    state: &AppState,
    rec: &SandboxRecord,
    history_id: Option<i64>,
    command: &str,
    pid: Option<u32>,
    end: &Ended,
    took: Duration,
    oom: bool,
) {
    if let Some(hid) = history_id {
        let _ = state.store.update_exec(&ExecRecord {
            id: hid,
            sandbox_id: rec.id.clone(),
            at: 0,
            command: command.to_owned(),
            pid,
            exit_code: end.exit_code,
            status: end.status.clone(),
            duration_ms: Some(i64::try_from(took.as_millis()).unwrap_or(i64::MAX)),
        });
    }
    if oom {
        state.emit(
            &rec.tenant,
            Some(&rec.id),
            "oom",
            json!({ "command": command, "pid": pid }),
            rec.webhook_url.as_deref(),
        );
    }
}

async fn exec(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<ExecBody>,
) -> ApiResult<Response> {
    let argv = body.argv();
    let detail = argv.as_ref().ok().map(|a| command_line(a));
    let res = start_exec(&state, &caller, &id, format_of(&headers), body, argv).await;
    state.audited(&caller, "exec", Some(&id), detail, res)
}

async fn start_exec(
    state: &Arc<AppState>,
    caller: &Caller,
    id: &str,
    format: Format,
    body: ExecBody,
    argv: ApiResult<Vec<String>>,
) -> ApiResult<Response> {
    let (rec, sbx) = state.sandbox_for(caller, id)?;
    let argv = argv?;
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
    let command = command_line(&argv);
    Metrics::inc(&state.metrics.execs);
    let history_id = state
        .store
        .insert_exec(&ExecRecord {
            id: 0,
            sandbox_id: rec.id.clone(),
            at: now_ms(),
            command: command.clone(),
            pid: None,
            exit_code: None,
            status: "running".into(),
            duration_ms: None,
        })
        .ok();

    // The simple case: run to completion and answer JSON.
    if format == Format::Json && !body.background && body.pty.is_none() && body.tag.is_none() {
        let r = sbx
            .exec(ExecRequest {
                argv,
                env: body.env,
                cwd: body.cwd,
                user: body.user,
                stdin: body.stdin.map(String::into_bytes),
                timeout,
                max_output: Some(max_output),
            })
            .await;
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                return failed_start(state, &rec, history_id, &command, e, Format::Json);
            }
        };
        let end = Ended {
            exit_code: r.exit_code,
            status: r.status.clone(),
            timed_out: r.timed_out,
        };
        record_end(
            state,
            &rec,
            history_id,
            &command,
            Some(r.pid),
            &end,
            r.duration,
            r.oom_killed,
        );
        let mut v = json!({
            "pid": r.pid,
            "exit_code": r.exit_code,
            "status": r.status,
            "stdout_truncated": r.stdout_truncated,
            "stderr_truncated": r.stderr_truncated,
            "duration_ms": r.duration.as_millis() as u64,
            "timed_out": r.timed_out,
            "oom_killed": r.oom_killed,
        });
        put_bytes(&mut v, "stdout", &r.stdout);
        put_bytes(&mut v, "stderr", &r.stderr);
        return Ok(json_response(StatusCode::OK, v));
    }

    let Some((cmd, args)) = argv.split_first() else {
        return Err(ApiError::BadRequest("cmd must not be empty".into()));
    };
    let with_stdin = body.stdin.is_some() || body.background || body.pty.is_some();
    let req = StartRequest {
        process: ProcessConfig {
            cmd: cmd.clone(),
            args: args.to_vec(),
            envs: body.env.into_iter().collect(),
            cwd: body.cwd,
            ..Default::default()
        }
        .into(),
        pty: body
            .pty
            .as_ref()
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
        tag: body.tag,
        stdin: Some(with_stdin),
        ..Default::default()
    };
    let mut opts = sbx.call_options(body.user.as_deref());
    if let Some(t) = timeout {
        opts = opts.with_timeout(t);
    }
    let oom_before = sbx.stats(&state.runtime).oom_kills;
    let started = Instant::now();
    // A failed start answers in the format asked for; a background start as JSON.
    let fail_format = if body.background {
        Format::Json
    } else {
        format
    };
    let stream = match sbx.agent.process.start_with_options(req, opts).await {
        Ok(s) => s,
        Err(e) => {
            return failed_start(state, &rec, history_id, &command, e.into(), fail_format);
        }
    };
    let mut rx = pump!(stream);
    // The first event is the start event, with the pid.
    let pid = match rx.recv().await {
        Some(Ok(Event::Start(s))) => s.pid,
        Some(Err(e)) => {
            return failed_start(state, &rec, history_id, &command, e.into(), fail_format);
        }
        _ => {
            let e = paddock_runtime::RuntimeError::Unsupported("the process did not start".into());
            return failed_start(state, &rec, history_id, &command, e, fail_format);
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
    if body.background || format == Format::Json {
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
        return Ok(json_response(StatusCode::ACCEPTED, json!({ "pid": pid })));
    }
    let first = json!({ "type": "start", "pid": pid });
    Ok(stream_response(
        format,
        rx,
        0,
        Some(first),
        Some((finish, pid)),
    ))
}

/// Sends stdin to a process, then optionally closes it.
async fn send_stdin(
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

/// Converts one agent event into its JSON line, and reports the end.
fn to_end(item: Result<Event, ConnectError>, seq: &mut u64) -> (Option<Value>, Option<Ended>) {
    match item {
        Ok(Event::Start(s)) => (Some(json!({ "type": "start", "pid": s.pid })), None),
        Ok(Event::Data(d)) => {
            let (kind, b) = match d.output {
                Some(Output::Stdout(b)) => ("stdout", b),
                Some(Output::Stderr(b)) => ("stderr", b),
                Some(Output::Pty(b)) => ("pty", b),
                None => return (None, None),
            };
            let mut v = json!({ "type": kind, "seq": *seq });
            *seq += 1;
            put_bytes(&mut v, "data", &b);
            (Some(v), None)
        }
        Ok(Event::End(e)) => {
            let end = Ended {
                exit_code: e.exited.then_some(e.exit_code),
                status: e.status.clone(),
                timed_out: false,
            };
            (
                Some(
                    json!({ "type": "end", "exit_code": end.exit_code, "status": e.status, "error": e.error }),
                ),
                Some(end),
            )
        }
        Ok(Event::Keepalive(_)) => (None, None),
        Err(e) => {
            let timed_out = e.code == connectrpc::ErrorCode::DeadlineExceeded;
            let end = Ended {
                exit_code: None,
                status: if timed_out {
                    "timeout".into()
                } else {
                    "error".into()
                },
                timed_out,
            };
            let msg = if timed_out {
                "the command timed out and was killed".to_owned()
            } else {
                tracing::warn!("process stream: {e}");
                "the connection to the process was lost".to_owned()
            };
            (
                Some(
                    json!({ "type": "end", "exit_code": null, "status": end.status, "error": msg }),
                ),
                Some(end),
            )
        }
    }
}

/// One line (NDJSON) or event (SSE) of a stream.
pub(super) fn frame(format: Format, v: &Value) -> Bytes {
    match format {
        Format::Sse => {
            let kind = v["type"].as_str().unwrap_or("message");
            let id = v
                .get("seq")
                .and_then(Value::as_u64)
                .map(|s| format!("id: {s}\n"))
                .unwrap_or_default();
            Bytes::from(format!("event: {kind}\n{id}data: {v}\n\n"))
        }
        _ => Bytes::from(format!("{v}\n")),
    }
}

/// A streaming response over the process events in `rx`, data sequence numbers starting at
/// `seq`. Sends `first` before anything else, keepalives after silence, exactly one `end`.
fn stream_response(
    format: Format,
    mut rx: mpsc::Receiver<Result<Event, ConnectError>>,
    mut seq: u64,
    first: Option<Value>,
    finish: Option<(Finish, u32)>,
) -> Response {
    let (tx, body_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(32);
    tokio::spawn(async move {
        let mut client_gone = false;
        let send = async |v: &Value, gone: &mut bool| {
            if !*gone && tx.send(Ok(frame(format, v))).await.is_err() {
                *gone = true;
            }
        };
        if let Some(v) = first {
            send(&v, &mut client_gone).await;
        }
        let mut end = Ended::default();
        loop {
            match tokio::time::timeout(KEEPALIVE, rx.recv()).await {
                Err(_) => send(&json!({ "type": "keepalive" }), &mut client_gone).await,
                Ok(None) => {
                    end.status = "error".into();
                    let v = json!({ "type": "end", "exit_code": null, "status": "error", "error": "the process stream ended without an end event" });
                    send(&v, &mut client_gone).await;
                    break;
                }
                Ok(Some(item)) => {
                    let (v, e) = to_end(item, &mut seq);
                    if let Some(mut v) = v {
                        if let Some(e) = &e {
                            v["timed_out"] = e.timed_out.into();
                            if let Some((f, _)) = &finish {
                                v["duration_ms"] = (f.started.elapsed().as_millis() as u64).into();
                            }
                        }
                        send(&v, &mut client_gone).await;
                    }
                    if let Some(e) = e {
                        end = e;
                        break;
                    }
                }
            }
            // A client that left stops the stream; without a history to finish there is
            // nothing more to do.
            if client_gone && finish.is_none() {
                return;
            }
        }
        if let Some((f, pid)) = finish {
            f.done(Some(pid), &end).await;
        }
    });
    let ct = match format {
        Format::Sse => "text/event-stream",
        _ => "application/x-ndjson",
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, ct)
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(body_rx),
        ))
        .unwrap_or_default()
}

fn parse_pid(s: &str) -> ApiResult<u32> {
    s.parse()
        .map_err(|_| ApiError::NotFound("process not found".into()))
}

async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (_, sbx) = state.sandbox_for(&caller, &id)?;
    let r = sbx
        .agent
        .process
        .list_with_options(ListRequest::default(), sbx.call_options(None))
        .await
        .map_err(|e| ApiError::from(paddock_runtime::RuntimeError::from(e)))?
        .into_owned();
    let procs: Vec<Value> = r
        .processes
        .iter()
        .map(|p| {
            let c = p.config.as_option().cloned().unwrap_or_default();
            json!({ "pid": p.pid, "tag": p.tag, "cmd": c.cmd, "args": c.args, "cwd": c.cwd })
        })
        .collect();
    Ok(json_response(StatusCode::OK, json!({ "processes": procs })))
}

/// `GET .../processes/{pid}/output?from_seq=N`: replay then follow, as NDJSON or SSE.
async fn output(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let (_, sbx) = state.sandbox_for(&caller, &id)?;
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
            other => return Err(super::unknown_param(other)),
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

async fn stdin(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let res = async {
        let (_, sbx) = state.sandbox_for(&caller, &id)?;
        let pid = parse_pid(&pid)?;
        let data = read_limited(req, MAX_STDIN, false).await?;
        send_stdin(&sbx, pid, None, data.to_vec(), false).await
    }
    .await;
    state.audited(
        &caller,
        "process.stdin",
        Some(&id),
        Some(format!("pid={pid}")),
        res,
    )?;
    Ok(no_content())
}

async fn close_stdin(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
) -> ApiResult<Response> {
    let res = async {
        let (_, sbx) = state.sandbox_for(&caller, &id)?;
        send_stdin(&sbx, parse_pid(&pid)?, None, Vec::new(), true).await
    }
    .await;
    state.audited(
        &caller,
        "process.stdin_close",
        Some(&id),
        Some(format!("pid={pid}")),
        res,
    )?;
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalBody {
    signal: String,
    /// `group` (default: the process and what it started in its session), `process`, or
    /// `tree` (SIGKILL only: every descendant).
    #[serde(default)]
    target: Option<String>,
}

async fn signal(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
    Json(body): Json<SignalBody>,
) -> ApiResult<Response> {
    let detail = Some(format!("pid={pid} signal={}", truncate(&body.signal, 16)));
    let res = async {
        let (_, sbx) = state.sandbox_for(&caller, &id)?;
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
    state.audited(&caller, "process.signal", Some(&id), detail, res)?;
    Ok(no_content())
}

/// `GET /v1/sandboxes/{id}/pty` (WebSocket). Query: `cmd` (default an interactive login
/// bash), `cols`, `rows`, `user`, `cwd`, and `api_key` for browsers that cannot set headers
/// on a WebSocket (keys in URLs end up in logs; prefer the header).
async fn pty(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let params: BTreeMap<String, String> = form_urlencoded_pairs(q.as_deref().unwrap_or(""))
        .into_iter()
        .collect();
    let header_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            let a = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
            let (scheme, rest) = a.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let caller = authenticate(
        &state,
        header_key.or(params.get("api_key").map(String::as_str)),
    )?;
    let (rec, sbx) = state.sandbox_for(&caller, &id)?;
    let num = |k: &str, d: u32| -> ApiResult<u32> {
        match params.get(k) {
            None => Ok(d),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| ApiError::BadRequest(format!("{k} must be 1 to 1000"))),
        }
    };
    let (cols, rows) = (num("cols", 80)?, num("rows", 24)?);
    let argv: Vec<String> = match params.get("cmd") {
        Some(c) if !c.is_empty() => vec!["/bin/bash".into(), "-l".into(), "-c".into(), c.clone()],
        _ => vec!["/bin/bash".into(), "-l".into()],
    };
    let user = params.get("user").cloned();
    let cwd = params.get("cwd").cloned();
    state.audit(
        Some(&caller),
        "pty.open",
        Some(&id),
        "ok",
        Some(command_line(&argv)),
    );
    Ok(ws.on_upgrade(move |socket| async move {
        if let Err(e) = run_pty(state, rec, sbx, socket, argv, user, cwd, cols, rows).await {
            tracing::debug!("pty session: {e}");
        }
    }))
}

#[allow(clippy::too_many_arguments)] // The session's parameters, parsed once in `pty`.
async fn run_pty(
    state: Arc<AppState>,
    rec: SandboxRecord,
    sbx: Arc<Sandbox>,
    mut socket: WebSocket,
    argv: Vec<String>,
    user: Option<String>,
    cwd: Option<String>,
    cols: u32,
    rows: u32,
) -> Result<(), String> {
    let size = |cols, rows| PTY {
        size: paddock_envd::process::pty::Size {
            cols,
            rows,
            ..Default::default()
        }
        .into(),
        ..Default::default()
    };
    let req = StartRequest {
        process: ProcessConfig {
            cmd: argv[0].clone(),
            args: argv[1..].to_vec(),
            envs: [("TERM".to_owned(), "xterm-256color".to_owned())]
                .into_iter()
                .collect(),
            cwd,
            ..Default::default()
        }
        .into(),
        pty: Some(size(cols, rows)).into(),
        stdin: Some(true),
        ..Default::default()
    };
    let opts = sbx.call_options(user.as_deref());
    let stream = match sbx.agent.process.start_with_options(req, opts).await {
        Ok(s) => s,
        Err(e) => {
            let msg = json!({ "type": "error", "message": e.message.clone().unwrap_or_default() });
            let _ = socket.send(Message::text(msg.to_string())).await;
            return Err(e.to_string());
        }
    };
    let mut rx = pump!(stream);
    let pid = match rx.recv().await {
        Some(Ok(Event::Start(s))) => s.pid,
        _ => return Err("the shell did not start".into()),
    };
    let history_id = state
        .store
        .insert_exec(&ExecRecord {
            id: 0,
            sandbox_id: rec.id.clone(),
            at: now_ms(),
            command: format!("[pty] {}", command_line(&argv)),
            pid: Some(pid),
            exit_code: None,
            status: "running".into(),
            duration_ms: None,
        })
        .ok();
    let started = Instant::now();
    let mut end = Ended::default();
    let mut seq = 0;
    loop {
        tokio::select! {
            item = rx.recv() => {
                let Some(item) = item else { break };
                match item {
                    Ok(Event::Data(d)) => {
                        if let Some(Output::Pty(b) | Output::Stdout(b) | Output::Stderr(b)) = d.output
                            && socket.send(Message::binary(b)).await.is_err()
                        {
                            break;
                        }
                    }
                    other => {
                        if let (Some(v), Some(e)) = to_end(other, &mut seq) {
                            let mut v = v;
                            v["type"] = "exit".into();
                            let _ = socket.send(Message::text(v.to_string())).await;
                            let _ = socket.send(Message::Close(None)).await;
                            end = e;
                            break;
                        }
                    }
                }
            }
            msg = socket.recv() => {
                match msg {
                    Some(Ok(Message::Binary(b))) => {
                        let req = SendInputRequest {
                            process: selector(pid).into(),
                            input: ProcessInput { input: Some(Input::Pty(b.to_vec())), ..Default::default() }.into(),
                            ..Default::default()
                        };
                        if let Err(e) = sbx.agent.process.send_input_with_options(req, sbx.call_options(user.as_deref())).await {
                            tracing::debug!("pty input: {e}");
                        }
                    }
                    Some(Ok(Message::Text(t))) => {
                        let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                        if v["type"] == "resize" {
                            let c = v["cols"].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(cols).clamp(1, 1000);
                            let r = v["rows"].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(rows).clamp(1, 1000);
                            let req = UpdateRequest { process: selector(pid).into(), pty: Some(size(c, r)).into(), ..Default::default() };
                            let _ = sbx.agent.process.update_with_options(req, sbx.call_options(user.as_deref())).await;
                        } else if v["type"] == "input" && let Some(s) = v["data"].as_str() {
                            let req = SendInputRequest {
                                process: selector(pid).into(),
                                input: ProcessInput { input: Some(Input::Pty(s.as_bytes().to_vec())), ..Default::default() }.into(),
                                ..Default::default()
                            };
                            let _ = sbx.agent.process.send_input_with_options(req, sbx.call_options(user.as_deref())).await;
                        }
                    }
                    Some(Ok(_)) => {}
                    // The client left: the shell goes with it.
                    Some(Err(_)) | None => {
                        let req = SendSignalRequest { process: selector(pid).into(), signal: Signal::SIGNAL_SIGKILL.into(), ..Default::default() };
                        let _ = sbx.agent.process.send_signal_with_options(req, sbx.call_options(user.as_deref())).await;
                        end.status = "signal: killed (client disconnected)".into();
                        break;
                    }
                }
            }
        }
    }
    record_end(
        &state,
        &rec,
        history_id,
        "",
        Some(pid),
        &end,
        started.elapsed(),
        false,
    );
    Ok(())
}
