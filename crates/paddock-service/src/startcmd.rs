//! A template's start command and ready check, run on a sandbox that has just started
//! (`lifecycle::create`) and callable again on an existing sandbox ([`run_start`], e.g. when a
//! paused sandbox resumes).
//!
//! The start command is an ordinary background process of the agent (tag [`START_TAG`]): it
//! is in the process list, its output is kept and replayable like any background exec's, and
//! it lives as long as the sandbox. Its outcome goes to the exec history and to a
//! `start_exited` event. The ready check is polled with a growing pause (10 ms, at most
//! [`MAX_POLL`]) until it passes, the start command fails, or its timeout ends. A start
//! command that exits 0 is not a failure by itself (it may have started a daemon): the ready
//! check still decides.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connectrpc::ConnectError;
use paddock_envd::process::__buffa::oneof::process_event::Event;
use paddock_envd::process::__buffa::oneof::process_event::data_event::Output;
use paddock_envd::process::{ProcessConfig, StartRequest};
use paddock_runtime::template::{ReadyCheck, StartCommand, Template};
use paddock_runtime::{ExecRequest, Sandbox};
use paddock_store::{ExecRecord, SandboxRecord, now_ms};
use serde_json::json;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::event_kind::EventKind;
use crate::state::AppState;

/// The process tag of a template's start command.
pub const START_TAG: &str = "start";
/// Bytes of the start command's output (stdout and stderr as they came) a failure shows.
pub const OUTPUT_TAIL: usize = 4096;
/// Longest pause between two ready checks.
pub const MAX_POLL: Duration = Duration::from_millis(200);
/// Longest a single ready command may run (the check's own timeout bounds it too).
pub const READY_CMD_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of a ready command's output a failure shows.
const READY_OUTPUT_TAIL: usize = 512;

/// How the start command ended.
#[derive(Debug, Clone)]
struct Exit {
    exit_code: Option<i32>,
    status: String,
}

/// Runs template `t`'s start command (if any) on `sbx` and waits for its ready check (if
/// any). Errors are [`Error::StartFailed`] naming the check that failed, with the end of
/// the start command's output; the caller decides what happens to the sandbox (a create
/// destroys it).
pub async fn run_start(
    state: &Arc<AppState>,
    rec: &SandboxRecord,
    sbx: &Arc<Sandbox>,
    t: &Template,
) -> Result<()> {
    let started = Instant::now();
    let start = match &t.config.start {
        Some(s) => Some(spawn_start(state, rec, sbx, s).await?),
        None => None,
    };
    let Some(ready) = &t.config.ready else {
        return Ok(());
    };
    let user = t.config.start.as_ref().and_then(|s| s.user.clone());
    let cwd = t.config.start.as_ref().and_then(|s| s.cwd.clone());
    let res = wait_ready(
        sbx,
        ready,
        user,
        cwd,
        start.as_ref().map(|s| s.exit.clone()),
    )
    .await;
    match res {
        Ok(()) => {
            tracing::debug!(sandbox = %rec.id, ms = started.elapsed().as_millis() as u64, "ready");
            Ok(())
        }
        Err(why) => {
            let output = start.map(|s| s.tail()).unwrap_or_default();
            Err(Error::StartFailed(if output.is_empty() {
                why
            } else {
                format!("{why}; the start command's output (last {OUTPUT_TAIL} bytes):\n{output}")
            }))
        }
    }
}

/// A started start command: its outcome once it ends, and its output's tail.
struct Started {
    exit: watch::Receiver<Option<Exit>>,
    tail: Arc<Mutex<Vec<u8>>>,
}

impl Started {
    fn tail(&self) -> String {
        let b = lock(&self.tail).clone();
        String::from_utf8_lossy(&b).into_owned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts the command as a background process tagged `start` and drains its events in a task
/// that keeps the output's tail and records the outcome (exec history, `start_exited`).
async fn spawn_start(
    state: &Arc<AppState>,
    rec: &SandboxRecord,
    sbx: &Arc<Sandbox>,
    s: &StartCommand,
) -> Result<Started> {
    let Some((cmd, args)) = s.cmd.split_first() else {
        return Err(Error::StartFailed("the start command is empty".into()));
    };
    let command = crate::state::truncate(&shell_words(&s.cmd), 1024);
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
        .await
        .ok();
    let req = StartRequest {
        process: ProcessConfig {
            cmd: cmd.clone(),
            args: args.to_vec(),
            cwd: s.cwd.clone(),
            ..Default::default()
        }
        .into(),
        tag: Some(START_TAG.to_owned()),
        stdin: Some(false),
        ..Default::default()
    };
    let opts = sbx.call_options(s.user.as_deref());
    let begun = Instant::now();
    let stream = sbx.agent.process.start_with_options(req, opts).await;
    let mut stream = match stream {
        Ok(st) => st,
        Err(e) => {
            let why = ce_message(&e);
            finish_history(state, rec, history_id, &command, None, None, &why, begun).await;
            return Err(Error::StartFailed(format!(
                "the start command could not start: {why}"
            )));
        }
    };
    // The first event is the start event with the pid.
    let pid = loop {
        match stream.message().await {
            Ok(Some(m)) => match m
                .to_owned_message()
                .event
                .as_option()
                .and_then(|e| e.event.clone())
            {
                Some(Event::Start(st)) => break st.pid,
                Some(_) | None => continue,
            },
            Ok(None) => {
                finish_history(state, rec, history_id, &command, None, None, "error", begun).await;
                return Err(Error::StartFailed("the start command did not start".into()));
            }
            Err(e) => {
                let why = ce_message(&e);
                finish_history(state, rec, history_id, &command, None, None, &why, begun).await;
                return Err(Error::StartFailed(format!(
                    "the start command could not start: {why}"
                )));
            }
        }
    };
    let (tx, rx) = watch::channel(None);
    let tail = Arc::new(Mutex::new(Vec::new()));
    let (state2, rec2, tail2) = (state.clone(), rec.clone(), tail.clone());
    tokio::spawn(async move {
        let exit = loop {
            let item: Result<Option<Event>, ConnectError> = match stream.message().await {
                Ok(Some(m)) => Ok(m
                    .to_owned_message()
                    .event
                    .as_option()
                    .and_then(|e| e.event.clone())),
                Ok(None) => {
                    break Exit {
                        exit_code: None,
                        status: "error".into(),
                    };
                }
                Err(e) => Err(e),
            };
            match item {
                Ok(Some(Event::Data(d))) => {
                    let Some(Output::Stdout(b) | Output::Stderr(b) | Output::Pty(b)) = d.output
                    else {
                        continue;
                    };
                    let mut t = lock(&tail2);
                    t.extend_from_slice(&b);
                    if t.len() > OUTPUT_TAIL {
                        let cut = t.len() - OUTPUT_TAIL;
                        t.drain(..cut);
                    }
                }
                Ok(Some(Event::End(e))) => {
                    break Exit {
                        exit_code: e.exited.then_some(e.exit_code),
                        status: e.status.clone(),
                    };
                }
                Ok(_) => {}
                Err(e) => {
                    // The stream ends with the sandbox (or the server); the agent keeps the
                    // process and its log either way.
                    tracing::debug!(sandbox = %rec2.id, "start command stream: {e}");
                    break Exit {
                        exit_code: None,
                        status: "error".into(),
                    };
                }
            }
        };
        finish_history(
            &state2,
            &rec2,
            history_id,
            &command,
            Some(pid),
            exit.exit_code,
            &exit.status,
            begun,
        )
        .await;
        // A sandbox being destroyed ends the stream without an end event: no event then.
        if exit.status != "error" {
            state2
                .emit(
                    &rec2.tenant,
                    Some(&rec2.id),
                    EventKind::StartExited,
                    json!({ "pid": pid, "exit_code": exit.exit_code, "status": exit.status }),
                    rec2.webhook_url.as_deref(),
                )
                .await;
        }
        let _ = tx.send(Some(exit));
    });
    Ok(Started { exit: rx, tail })
}

#[allow(clippy::too_many_arguments)] // The exec history row's fields.
async fn finish_history(
    state: &AppState,
    rec: &SandboxRecord,
    history_id: Option<i64>,
    command: &str,
    pid: Option<u32>,
    exit_code: Option<i32>,
    status: &str,
    begun: Instant,
) {
    if let Some(id) = history_id {
        let _ = state
            .store
            .update_exec(&ExecRecord {
                id,
                sandbox_id: rec.id.clone(),
                at: 0,
                command: command.to_owned(),
                pid,
                exit_code,
                status: status.to_owned(),
                duration_ms: Some(i64::try_from(begun.elapsed().as_millis()).unwrap_or(i64::MAX)),
            })
            .await;
    }
}

fn ce_message(e: &ConnectError) -> String {
    e.message.clone().unwrap_or_else(|| format!("{:?}", e.code))
}

/// Polls `ready` until it passes; `Err` says why it did not.
async fn wait_ready(
    sbx: &Sandbox,
    ready: &ReadyCheck,
    user: Option<String>,
    cwd: Option<String>,
    mut exit: Option<watch::Receiver<Option<Exit>>>,
) -> Result<(), String> {
    let timeout = Duration::from_millis(ready.timeout_ms);
    let deadline = Instant::now() + timeout;
    let what = match (ready.port, &ready.cmd) {
        (Some(p), _) => format!("the ready check (port {p})"),
        (None, Some(c)) => format!("the ready check ({})", crate::state::truncate(c, 200)),
        (None, None) => "the ready check".into(),
    };
    let mut pause = Duration::from_millis(10);
    let mut last_cmd: Option<String> = None;
    loop {
        let ended = exit.as_ref().and_then(|rx| rx.borrow().clone());
        if let Some(e) = ended {
            if e.exit_code != Some(0) {
                return Err(format!(
                    "the start command ended ({}) before {what} passed",
                    e.status
                ));
            }
            // Exited 0: perhaps a daemon was started; the check decides.
            exit = None;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "{what} did not pass within {}{}",
                paddock_templates::show_ms(ready.timeout_ms),
                last_cmd
                    .map(|o| format!(" (its last run: {o})"))
                    .unwrap_or_default()
            ));
        }
        let passed = match (ready.port, &ready.cmd) {
            (Some(p), _) => sbx
                .connect_port(p, left.min(Duration::from_secs(1)))
                .await
                .is_ok(),
            (None, Some(c)) => {
                let r = sbx
                    .exec(ExecRequest {
                        argv: vec!["/bin/sh".into(), "-c".into(), c.clone()],
                        user: user.clone(),
                        cwd: cwd.clone(),
                        timeout: Some(left.min(READY_CMD_TIMEOUT)),
                        max_output: Some(READY_OUTPUT_TAIL * 4),
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(r) if r.exit_code == Some(0) => true,
                    Ok(r) => {
                        let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
                        out.push_str(&String::from_utf8_lossy(&r.stderr));
                        let out = out.trim();
                        let cut = out
                            .char_indices()
                            .map(|(i, _)| i)
                            .find(|i| out.len() - i <= READY_OUTPUT_TAIL)
                            .unwrap_or(out.len());
                        last_cmd = Some(if out.is_empty() {
                            r.status.clone()
                        } else {
                            format!("{}: {}", r.status, &out[cut..])
                        });
                        false
                    }
                    Err(e) => {
                        last_cmd = Some(e.to_string());
                        false
                    }
                }
            }
            (None, None) => true,
        };
        if passed {
            return Ok(());
        }
        let nap = pause.min(deadline.saturating_duration_since(Instant::now()));
        match &mut exit {
            // Wake at once when the start command ends.
            Some(rx) => {
                let _ = tokio::time::timeout(nap, rx.changed()).await;
            }
            None => tokio::time::sleep(nap).await,
        }
        pause = (pause * 3 / 2).min(MAX_POLL);
    }
}

/// An argv as a shell would show it: `sh -c` scripts as the script, else words joined.
fn shell_words(argv: &[String]) -> String {
    if argv.len() == 3 && argv[0] == "/bin/sh" && argv[1] == "-c" {
        argv[2].clone()
    } else {
        argv.join(" ")
    }
}

/// Runs the start command and ready check of the sandbox's template, if it has them.
pub async fn start_template(
    state: &Arc<AppState>,
    rec: &SandboxRecord,
    sbx: &Arc<paddock_runtime::Sandbox>,
) -> Result<()> {
    let Some(t) = state.runtime.template(&rec.template) else {
        return Ok(());
    };
    if t.config.start.is_none() && t.config.ready.is_none() {
        return Ok(());
    }
    run_start(state, rec, sbx, &t).await
}
