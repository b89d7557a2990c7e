//! Exec and processes: `POST /v1/sandboxes/{id}/exec` (JSON result, NDJSON or SSE stream,
//! or background), the process list, output replay, stdin, signals, and an interactive PTY
//! over WebSocket.
//!
//! A client that disconnects from a streaming exec does not stop the command: the agent
//! keeps it running and keeps its output (8 MiB per process), so
//! `GET .../processes/{pid}/output?from_seq=N` can replay it. The command's own `timeout`
//! still applies. Closing the PTY WebSocket kills the shell.
//!
//! - `run`: `POST .../exec`, the one-shot JSON exec and the start of streaming, background
//!   and PTY execs.
//! - `start`: an exec's time limit and the answer to a command that cannot start.
//! - `stream`: process events as NDJSON lines or SSE events.
//! - `processes`: the process list, output replay, stdin and signals.
//! - `pty`: the interactive PTY over WebSocket.
//! - `wire`: the request and response bodies and the stream lines, as typed wire types.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, header};
use axum::routing::{get, post};
use paddock_envd::process::__buffa::oneof::process_selector::Selector;
use paddock_envd::process::ProcessSelector;
use paddock_runtime::Sandbox;
use paddock_store::{ExecRecord, SandboxRecord};
use serde_json::json;

use paddock_service::event_kind::EventKind;
use paddock_service::state::{AppState, truncate};

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

pub(crate) mod processes;
pub(crate) mod pty;
pub(crate) mod run;
mod start;
mod stream;
pub(crate) mod wire;

pub use paddock_service::config::{DEFAULT_EXEC_TIMEOUT_SECS, MAX_EXEC_TIMEOUT_SECS};
/// Largest stdin body (`POST .../stdin`) and `stdin` field of an exec.
pub const MAX_STDIN: usize = 1 << 20;
/// A streaming response sends a keepalive after this much silence.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// Bytes of a command line kept in the exec history and audit trail.
const HISTORY_COMMAND: usize = 1024;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/sandboxes/{id}/exec", post(run::exec))
        .route("/v1/sandboxes/{id}/processes", get(processes::list))
        .route(
            "/v1/sandboxes/{id}/processes/{pid}/output",
            get(processes::output),
        )
        .route(
            "/v1/sandboxes/{id}/processes/{pid}/stdin",
            post(processes::stdin),
        )
        .route(
            "/v1/sandboxes/{id}/processes/{pid}/stdin/close",
            post(processes::close_stdin),
        )
        .route(
            "/v1/sandboxes/{id}/processes/{pid}/signal",
            post(processes::signal),
        )
        .route("/v1/sandboxes/{id}/pty", get(pty::pty))
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
        let sbx = self.sandbox.clone();
        let oom_after = tokio::task::spawn_blocking(move || sbx.oom_kills())
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
        )
        .await;
        oom
    }
}

#[allow(clippy::too_many_arguments)] // One call site per exec mode; a struct would only rename them.
pub(super) async fn record_end(
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
        let _ = state
            .store
            .update_exec(&ExecRecord {
                id: hid,
                sandbox_id: rec.id.clone(),
                at: 0,
                command: command.to_owned(),
                pid,
                exit_code: end.exit_code,
                status: end.status.clone(),
                duration_ms: Some(i64::try_from(took.as_millis()).unwrap_or(i64::MAX)),
            })
            .await;
    }
    if oom {
        state
            .emit(
                &rec.tenant,
                Some(&rec.id),
                EventKind::Oom,
                json!({ "command": command, "pid": pid }),
                rec.webhook_url.as_deref(),
            )
            .await;
    }
}
