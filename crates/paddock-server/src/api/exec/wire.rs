//! The wire types of exec and processes: the request of `POST .../exec`, its JSON result,
//! the lines of a process stream (NDJSON, SSE and the PTY's text frames), the process list
//! and the signal request. Each serialises to the bytes its `json!` body had (pinned by
//! `serialise_as_before` below): optional fields are omitted or null exactly as then.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::MAX_STDIN;

/// The path of a route about one process, for the OpenAPI document.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct ProcessPath {
    /// Sandbox id
    #[param(pattern = "^[a-z0-9]{20}$")]
    id: String,
    /// Process id inside the sandbox
    pid: u32,
}

/// The query of `GET .../processes/{pid}/output`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct OutputQuery {
    /// First sequence number to replay (or Last-Event-ID + 1)
    from_seq: Option<u64>,
}

/// The query of `GET .../pty` (WebSocket).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct PtyQuery {
    /// Command (default: login bash)
    cmd: Option<String>,
    /// Columns, 1 to 1000 (default 80)
    #[param(minimum = 1, maximum = 1000)]
    cols: Option<u32>,
    /// Rows, 1 to 1000 (default 24)
    #[param(minimum = 1, maximum = 1000)]
    rows: Option<u32>,
    /// User to act as (default: the sandbox's user)
    user: Option<String>,
    /// Working directory
    cwd: Option<String>,
    /// The key, for browsers that cannot set headers (prefer the header)
    api_key: Option<String>,
}

/// A PTY's size.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PtySize)]
pub(crate) struct PtySize {
    /// 1 to 1000
    #[schema(minimum = 1, maximum = 1000)]
    pub(super) cols: u32,
    /// 1 to 1000
    #[schema(minimum = 1, maximum = 1000)]
    pub(super) rows: u32,
}

/// `POST /v1/sandboxes/{id}/exec`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ExecRequest)]
pub(crate) struct ExecBody {
    /// argv; exactly one of cmd and command
    #[serde(default)]
    #[schema(nullable = false)]
    pub(super) cmd: Option<Vec<String>>,
    /// Shell command line, run with /bin/bash -l -c
    #[serde(default)]
    #[schema(nullable = false)]
    pub(super) command: Option<String>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    #[serde(default)]
    #[schema(nullable = false)]
    pub(super) cwd: Option<String>,
    #[serde(default)]
    #[schema(nullable = false)]
    pub(super) user: Option<String>,
    /// Written to the command's stdin, at most 1 MiB
    #[serde(default)]
    #[schema(nullable = false, max_length = 1048576)]
    pub(super) stdin: Option<String>,
    /// Seconds the command may run, 0 to 86400. 0: no limit of its own. Absent: the
    /// server's --exec-timeout (default 60) for a foreground command, no limit for a
    /// background one. The sandbox's timeout ends every command regardless.
    #[serde(default)]
    #[schema(nullable = false, maximum = 86400)]
    pub(super) timeout: Option<u64>,
    /// Bytes captured per stream (JSON mode), at most the server's --max-output
    #[serde(default)]
    #[schema(nullable = false, minimum = 1)]
    pub(super) max_output: Option<usize>,
    /// Answer 202 with the pid at once; the command keeps running (with no time limit of
    /// its own unless `timeout` is given)
    #[serde(default)]
    pub(super) background: bool,
    /// Run on a PTY of this size
    #[serde(default)]
    #[schema(nullable = false)]
    pub(super) pty: Option<PtySize>,
    /// A tag to find the process by in the process list
    #[serde(default)]
    #[schema(nullable = false)]
    pub(super) tag: Option<String>,
}

// The OpenAPI document states the stdin limit as a number; keep them together.
const _: () = assert!(MAX_STDIN == 1048576);

/// Bytes as JSON text: `(Some(text), None)` when UTF-8, else `(None, Some(base64))`.
pub(super) fn text_or_b64(b: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(b) {
        Ok(s) => (Some(s.to_owned()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
    }
}

/// The JSON result of a foreground exec (or of a command that could not start).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = ExecResult)]
pub(crate) struct ExecResult {
    /// Null when the command could not start
    #[schema(required = true)]
    pub(crate) pid: Option<u32>,
    /// Null when it did not exit normally (killed by a signal, timed out)
    #[schema(required = true)]
    pub(crate) exit_code: Option<i32>,
    /// Go-style status, such as `exit status 1`, `signal: killed`, `failed to start`
    pub(crate) status: String,
    /// Captured stdout; null when it is not UTF-8 (then `stdout_b64`)
    #[schema(required = true)]
    pub(crate) stdout: Option<String>,
    /// Captured stderr; null when it is not UTF-8 (then `stderr_b64`)
    #[schema(required = true)]
    pub(crate) stderr: Option<String>,
    /// Captured stdout, base64, only when it is not UTF-8
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) stdout_b64: Option<String>,
    /// Captured stderr, base64, only when it is not UTF-8
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) stderr_b64: Option<String>,
    pub(crate) stdout_truncated: bool,
    pub(crate) stderr_truncated: bool,
    pub(crate) duration_ms: u64,
    pub(crate) timed_out: bool,
    pub(crate) oom_killed: bool,
    /// Why the command could not start (only then)
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) error: Option<String>,
}

impl ExecResult {
    /// Sets `stdout`/`stdout_b64` and `stderr`/`stderr_b64` from the captured bytes.
    pub(super) fn with_output(mut self, stdout: &[u8], stderr: &[u8]) -> ExecResult {
        (self.stdout, self.stdout_b64) = text_or_b64(stdout);
        (self.stderr, self.stderr_b64) = text_or_b64(stderr);
        self
    }
}

/// A background (or JSON-less) exec, started.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = ExecStarted)]
pub(crate) struct Started {
    pub(crate) pid: u32,
}

/// A chunk of a process's output.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct DataLine {
    /// Sequence number of the chunk (replay with `from_seq`)
    pub(crate) seq: u64,
    /// The bytes as text; null when they are not UTF-8 (then `data_b64`)
    #[schema(required = true)]
    pub(crate) data: Option<String>,
    /// The bytes, base64, only when they are not UTF-8
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) data_b64: Option<String>,
}

impl DataLine {
    pub(super) fn new(seq: u64, b: &[u8]) -> DataLine {
        let (data, data_b64) = text_or_b64(b);
        DataLine {
            seq,
            data,
            data_b64,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct EndLine {
    /// Null when it did not exit normally
    #[schema(required = true)]
    pub(crate) exit_code: Option<i32>,
    pub(crate) status: String,
    /// Why it failed, when it did
    #[schema(required = true)]
    pub(crate) error: Option<String>,
    /// Killed because its `timeout` elapsed (a stream's end)
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) timed_out: Option<bool>,
    /// How long it ran (the end of a stream of an exec)
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) duration_ms: Option<u64>,
}

/// One line of a process stream (NDJSON line, or SSE event named by `type` with `id` =
/// `seq`), or a text frame of the PTY WebSocket (`exit`, `error`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum ProcessEvent {
    /// The process started
    Start { pid: u32 },
    /// Standard output
    Stdout(DataLine),
    /// Standard error
    Stderr(DataLine),
    /// Terminal output (a PTY exec)
    Pty(DataLine),
    /// Sent after 15 s of silence
    Keepalive,
    /// The process ended: exactly one per stream, last
    End(EndLine),
    /// The PTY's shell ended (WebSocket text frame)
    Exit(EndLine),
    /// The PTY's shell could not start (WebSocket text frame)
    Error { message: String },
}

impl ProcessEvent {
    /// The line as JSON, its keys sorted as the `json!` lines it replaced had them.
    pub(super) fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// One process of a sandbox.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Process)]
pub(crate) struct ProcessView {
    pub(crate) pid: u32,
    /// The tag given at exec
    #[schema(required = true)]
    pub(crate) tag: Option<String>,
    pub(crate) cmd: String,
    pub(crate) args: Vec<String>,
    #[schema(required = true)]
    pub(crate) cwd: Option<String>,
}

/// A sandbox's processes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ProcessList {
    pub(crate) processes: Vec<ProcessView>,
}

/// A signal: SIGTERM or SIGKILL (also `TERM`, `15`, `KILL`, `9`).
#[allow(dead_code)] // A schema only: the request reads the name and its aliases as text.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub(crate) enum SignalWire {
    #[serde(rename = "SIGTERM")]
    Sigterm,
    #[serde(rename = "SIGKILL")]
    Sigkill,
}

/// What a signal reaches.
#[allow(dead_code)] // A schema only: the request reads the target as text.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SignalTargetWire {
    Group,
    Process,
    Tree,
}

/// `POST .../processes/{pid}/signal`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SignalRequest)]
pub(crate) struct SignalBody {
    #[schema(inline, value_type = SignalWire)]
    pub(super) signal: String,
    /// `group` (default: the process and what it started in its session), `process`, or
    /// `tree` (SIGKILL only: every descendant).
    #[serde(default)]
    #[schema(inline, value_type = Option<SignalTargetWire>, nullable = false)]
    pub(super) target: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn text(v: &impl Serialize) -> String {
        serde_json::to_value(v).unwrap().to_string()
    }

    /// The JSON result is the `json!` body it replaced: `stdout`/`stderr` null with a
    /// `_b64` twin when not UTF-8, `error` only for a command that could not start.
    #[test]
    fn exec_results_serialise_as_before() {
        let r = ExecResult {
            pid: Some(7),
            exit_code: Some(0),
            status: "exit status 0".into(),
            stdout: None,
            stderr: None,
            stdout_b64: None,
            stderr_b64: None,
            stdout_truncated: false,
            stderr_truncated: true,
            duration_ms: 12,
            timed_out: false,
            oom_killed: false,
            error: None,
        }
        .with_output(b"hi\n", &[0xff, 0]);
        assert_eq!(
            text(&r),
            r#"{"duration_ms":12,"exit_code":0,"oom_killed":false,"pid":7,"status":"exit status 0","stderr":null,"stderr_b64":"/wA=","stderr_truncated":true,"stdout":"hi\n","stdout_truncated":false,"timed_out":false}"#
        );
        let failed = ExecResult {
            pid: None,
            exit_code: Some(127),
            status: "failed to start".into(),
            error: Some("command not found".into()),
            duration_ms: 0,
            ..r
        }
        .with_output(b"", b"paddock: command not found\n");
        assert_eq!(
            serde_json::to_value(&failed).unwrap(),
            json!({"pid": null, "exit_code": 127, "status": "failed to start",
                "error": "command not found", "stdout": "", "stderr": "paddock: command not found\n",
                "stdout_truncated": false, "stderr_truncated": true, "duration_ms": 0,
                "timed_out": false, "oom_killed": false})
        );
        assert_eq!(text(&Started { pid: 3 }), r#"{"pid":3}"#);
    }

    /// Stream lines and PTY frames are the `json!` lines they replaced.
    #[test]
    fn process_events_serialise_as_before() {
        let line = |e: ProcessEvent| e.to_value().to_string();
        assert_eq!(
            line(ProcessEvent::Start { pid: 9 }),
            r#"{"pid":9,"type":"start"}"#
        );
        assert_eq!(
            line(ProcessEvent::Stdout(DataLine::new(4, b"ok"))),
            r#"{"data":"ok","seq":4,"type":"stdout"}"#
        );
        assert_eq!(
            line(ProcessEvent::Pty(DataLine::new(0, &[0xc3]))),
            r#"{"data":null,"data_b64":"ww==","seq":0,"type":"pty"}"#
        );
        assert_eq!(line(ProcessEvent::Keepalive), r#"{"type":"keepalive"}"#);
        let end = EndLine {
            exit_code: None,
            status: "error".into(),
            error: None,
            timed_out: None,
            duration_ms: None,
        };
        assert_eq!(
            line(ProcessEvent::End(end.clone())),
            r#"{"error":null,"exit_code":null,"status":"error","type":"end"}"#
        );
        let end = EndLine {
            exit_code: Some(1),
            timed_out: Some(false),
            duration_ms: Some(5),
            ..end
        };
        assert_eq!(
            line(ProcessEvent::End(end.clone())),
            r#"{"duration_ms":5,"error":null,"exit_code":1,"status":"error","timed_out":false,"type":"end"}"#
        );
        assert_eq!(
            line(ProcessEvent::Exit(end)),
            r#"{"duration_ms":5,"error":null,"exit_code":1,"status":"error","timed_out":false,"type":"exit"}"#
        );
        assert_eq!(
            line(ProcessEvent::Error {
                message: "no".into()
            }),
            r#"{"message":"no","type":"error"}"#
        );
    }

    #[test]
    fn process_lists_serialise_as_before() {
        let l = ProcessList {
            processes: vec![ProcessView {
                pid: 1,
                tag: None,
                cmd: "sleep".into(),
                args: vec!["9".into()],
                cwd: None,
            }],
        };
        assert_eq!(
            serde_json::to_value(&l).unwrap(),
            json!({"processes": [{"pid": 1, "tag": null, "cmd": "sleep", "args": ["9"], "cwd": null}]})
        );
    }
}
