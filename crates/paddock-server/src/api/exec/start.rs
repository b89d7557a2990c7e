//! How an exec starts: its time limit, and the answer when its command cannot start (exit
//! codes 127 and 126 as a shell gives them, the failure recorded in the exec history).

use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use paddock_store::SandboxRecord;

use super::stream::frame;
use super::wire::{DataLine, EndLine, ExecResult, ProcessEvent};
use super::{Ended, Format, MAX_EXEC_TIMEOUT_SECS, record_end};
use crate::error::{ApiError, ApiResult};
use crate::wire::typed_response;
use paddock_service::state::AppState;

/// The time limit of an exec: `timeout` seconds (1 to [`MAX_EXEC_TIMEOUT_SECS`]), none for
/// `0`, and when absent the server's default for a foreground command and none for a
/// background one (it lives as long as the sandbox). The sandbox's own timeout always applies.
pub(super) fn exec_timeout(
    timeout: Option<u64>,
    background: bool,
    default: Duration,
) -> ApiResult<Option<Duration>> {
    match timeout {
        Some(0) => Ok(None),
        Some(s) if s > MAX_EXEC_TIMEOUT_SECS => Err(ApiError::BadRequest(format!(
            "timeout must be between 0 (no limit) and {MAX_EXEC_TIMEOUT_SECS} seconds"
        ))),
        Some(s) => Ok(Some(Duration::from_secs(s))),
        None if background => Ok(None),
        None => Ok(Some(default)),
    }
}

/// Exit code of a command that could not start, as a shell gives it: 127 when the command
/// was not found, 126 when it is not executable. `None` for any other failure (such as a bad
/// `cwd`), which is answered as an error.
fn start_exit_code(e: &paddock_runtime::RuntimeError) -> Option<(i32, String)> {
    let paddock_runtime::RuntimeError::Agent(ce) = e else {
        return None;
    };
    let msg = ce.message.clone().unwrap_or_default();
    if !msg.starts_with("command ") {
        return None;
    }
    match ce.code {
        connectrpc::ErrorCode::NotFound => Some((127, msg)),
        connectrpc::ErrorCode::PermissionDenied => Some((126, msg)),
        _ => None,
    }
}

/// Records a command that failed to start as failed, with the reason, in the exec history,
/// and answers: a result with exit code 127 or 126 (the reason also on stderr, as a shell
/// prints it) when the command was not found or not executable, else the error.
pub(super) async fn failed_start(
    state: &AppState,
    rec: &SandboxRecord,
    history_id: Option<i64>,
    command: &str,
    e: paddock_runtime::RuntimeError,
    format: Format,
) -> ApiResult<Response> {
    let code = start_exit_code(&e);
    let reason = match &code {
        Some((_, msg)) => msg.clone(),
        None => {
            let err = ApiError::from(e);
            let reason = err.to_string();
            record_end(
                state,
                rec,
                history_id,
                command,
                None,
                &Ended {
                    status: format!("failed: {reason}"),
                    ..Default::default()
                },
                Duration::ZERO,
                false,
            )
            .await;
            return Err(err);
        }
    };
    let exit = code.map(|c| c.0);
    record_end(
        state,
        rec,
        history_id,
        command,
        None,
        &Ended {
            exit_code: exit,
            status: format!("failed: {reason}"),
            timed_out: false,
        },
        Duration::ZERO,
        false,
    )
    .await;
    let stderr = format!("paddock: {reason}\n");
    if format == Format::Json {
        let v = ExecResult {
            pid: None,
            exit_code: exit,
            status: "failed to start".into(),
            stdout: None,
            stderr: None,
            stdout_b64: None,
            stderr_b64: None,
            stdout_truncated: false,
            stderr_truncated: false,
            duration_ms: 0,
            timed_out: false,
            oom_killed: false,
            error: Some(reason),
        }
        .with_output(b"", stderr.as_bytes());
        return Ok(typed_response(StatusCode::OK, &v));
    }
    let out = ProcessEvent::Stderr(DataLine::new(0, stderr.as_bytes()));
    let end = ProcessEvent::End(EndLine {
        exit_code: exit,
        status: "failed to start".into(),
        error: Some(reason),
        timed_out: Some(false),
        duration_ms: Some(0),
    });
    let mut body = frame(format, &out).to_vec();
    body.extend_from_slice(&frame(format, &end));
    let ct = match format {
        Format::Sse => "text/event-stream",
        _ => "application/x-ndjson",
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, ct)
        .body(Body::from(body))
        .map_err(|e| ApiError::Internal(e.to_string()))
}
