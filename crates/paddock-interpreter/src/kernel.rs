//! One Jupyter kernel process and the client half of the messaging protocol: start (connection
//! file, spawn, connect, `kernel_info` until iopub is subscribed), execute with live events,
//! interrupt, shut down.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jupyter_protocol::{
    ConnectionInfo, ExecuteRequest, ExecutionState, JupyterMessage, JupyterMessageContent,
    KernelInfoRequest, ReplyStatus, Stdio as Stream, connection_info::Transport,
};
use jupyter_zmq_client::{ClientIoPubConnection, ClientShellConnection, RuntimeError};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::wire::{Event, ResultData, now_ns};
use crate::{Error, INTERRUPT_GRACE, KERNEL_START_TIMEOUT, Language, MAX_OUTPUT_BYTES};

/// Most bytes of a kernel's own stderr kept for a start failure's message.
const STDERR_TAIL: usize = 4096;

/// Where an execution's events go: counts output bytes, drops what is over the cap (with
/// one note) and whatever a gone client would have got.
pub(crate) struct Sink {
    tx: mpsc::Sender<Event>,
    sent: usize,
    capped: bool,
}

impl Sink {
    pub(crate) fn new(tx: mpsc::Sender<Event>) -> Sink {
        Sink {
            tx,
            sent: 0,
            capped: false,
        }
    }

    /// Sends `ev` unless the client is gone or the output cap is reached.
    pub(crate) async fn send(&mut self, ev: Event) {
        let size = match &ev {
            Event::Stdout { text, .. } | Event::Stderr { text, .. } => text.len(),
            Event::Result(r) => r.size(),
            _ => 0,
        };
        if size > 0 {
            if self.capped {
                return;
            }
            if self.sent + size > MAX_OUTPUT_BYTES {
                self.capped = true;
                let note = format!(
                    "paddock: output limit of {MAX_OUTPUT_BYTES} bytes per execution reached; \
                     further output of this execution is dropped\n"
                );
                let _ = self
                    .tx
                    .send(Event::Stderr {
                        text: note,
                        timestamp: now_ns(),
                    })
                    .await;
                return;
            }
            self.sent += size;
        }
        let _ = self.tx.send(ev).await;
    }

    /// A handle that resolves when the client went away.
    pub(crate) fn watcher(&self) -> mpsc::Sender<Event> {
        self.tx.clone()
    }
}

/// How an execution ended.
pub(crate) enum Outcome {
    /// The kernel went idle: ready for the next one.
    Done,
    /// The kernel did not go idle after an interrupt, or died: restart it.
    Broken(String),
}

/// A running kernel.
pub(crate) struct Kernel {
    language: Language,
    /// tslab drops every request it gets within 200 ms after a failed one (it resets its
    /// queue): the next execution waits until then.
    settle_until: Option<Instant>,
    child: Child,
    shell: ClientShellConnection,
    iopub: ClientIoPubConnection,
    dir: PathBuf,
}

/// Run in every Python kernel at its start (`IPKernelApp.exec_files`): chart data for
/// matplotlib figures (`application/vnd.e2b.chart+json`).
const PYTHON_SETUP: &str = include_str!("../kernel-setup/paddock_charts.py");
/// Loaded into tslab's Node before tslab (`node --require`): a cell's last expression
/// becomes its `execute_result` instead of a line on stdout.
const TSLAB_SETUP: &str = include_str!("../kernel-setup/paddock_tslab.js");

/// `name` as found on `PATH`, with symbolic links resolved.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok())
}

/// The command line of a language's kernel, given its connection file; the setup files it
/// loads are written next to the connection file, in the kernel's private directory.
fn command(language: Language, dir: &std::path::Path, file: &str) -> std::io::Result<Command> {
    let mut cmd;
    match language {
        Language::Python => {
            let setup = dir.join("paddock_charts.py");
            std::fs::write(&setup, PYTHON_SETUP)?;
            cmd = Command::new("python3");
            cmd.args(["-m", "ipykernel_launcher", "-f", file]);
            cmd.arg(format!("--IPKernelApp.exec_files={}", setup.display()));
        }
        Language::Bash => {
            cmd = Command::new("python3");
            cmd.args(["-m", "bash_kernel", "-f", file]);
        }
        Language::JavaScript => match which("tslab") {
            // tslab's own script run by Node with the setup preloaded.
            Some(tslab) => {
                let setup = dir.join("paddock_tslab.js");
                std::fs::write(&setup, TSLAB_SETUP)?;
                cmd = Command::new("node");
                cmd.arg("--require").arg(&setup).arg(tslab);
                cmd.args(["kernel", "--config-path", file, "--js"]);
            }
            // Not found: running it fails with the usual "not found" start error.
            None => {
                cmd = Command::new("tslab");
                cmd.args(["kernel", "--config-path", file, "--js"]);
            }
        },
    }
    Ok(cmd)
}

fn start_err(language: Language, reason: impl Into<String>) -> Error {
    Error::KernelStart {
        language: language.name(),
        reason: reason.into(),
    }
}

impl Kernel {
    /// Starts a kernel for `language` in `cwd` and waits until it answers on shell and iopub.
    pub(crate) async fn start(language: Language, cwd: &str) -> Result<Kernel, Error> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("paddock-kernel-{id}"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| start_err(language, format!("creating {}: {e}", dir.display())))?;
        let cleanup = |e: Error| {
            let _ = std::fs::remove_dir_all(&dir);
            e
        };
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (ports, listeners) = jupyter_zmq_client::peek_ports_with_listeners(ip, 5)
            .await
            .map_err(|e| cleanup(start_err(language, format!("reserving ports: {e}"))))?;
        let info = ConnectionInfo {
            transport: Transport::TCP,
            ip: ip.to_string(),
            stdin_port: ports[0],
            control_port: ports[1],
            hb_port: ports[2],
            shell_port: ports[3],
            iopub_port: ports[4],
            signature_scheme: "hmac-sha256".to_string(),
            key: uuid::Uuid::new_v4().to_string(),
            kernel_name: Some(language.name().to_string()),
        };
        let file = dir.join("kernel.json");
        let json =
            serde_json::to_vec(&info).map_err(|e| cleanup(start_err(language, e.to_string())))?;
        std::fs::write(&file, json).map_err(|e| {
            cleanup(start_err(
                language,
                format!("writing the connection file: {e}"),
            ))
        })?;
        let mut cmd = command(language, &dir, &file.to_string_lossy()).map_err(|e| {
            cleanup(start_err(
                language,
                format!("writing the kernel's setup file: {e}"),
            ))
        })?;
        let cwd = if std::path::Path::new(cwd).is_dir() {
            cwd
        } else {
            "/"
        };
        cmd.current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            cleanup(start_err(
                language,
                format!("running {:?}: {e}", cmd.as_std().get_program()),
            ))
        })?;
        drop(listeners);
        let tail = Arc::new(Mutex::new(VecDeque::<u8>::new()));
        if let Some(mut err) = child.stderr.take() {
            let tail = tail.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                    t.extend(&buf[..n]);
                    let over = t.len().saturating_sub(STDERR_TAIL);
                    t.drain(..over);
                }
            });
        }
        let stderr_tail = || {
            let t = tail.lock().unwrap_or_else(|p| p.into_inner());
            String::from_utf8_lossy(&t.iter().copied().collect::<Vec<_>>())
                .trim()
                .to_string()
        };
        let deadline = Instant::now() + KERNEL_START_TIMEOUT;
        match connect(&info, &mut child, deadline).await {
            Ok((shell, iopub)) => Ok(Kernel {
                language,
                settle_until: None,
                child,
                shell,
                iopub,
                dir,
            }),
            Err(reason) => {
                let _ = child.start_kill();
                let _ = timeout(Duration::from_secs(2), child.wait()).await;
                let out = stderr_tail();
                let reason = if out.is_empty() {
                    reason
                } else {
                    format!("{reason}; kernel output: {out}")
                };
                Err(cleanup(start_err(language, reason)))
            }
        }
    }

    /// Sends SIGINT to the kernel (Jupyter's `interrupt_mode: signal`). The child is not
    /// reaped until [`Kernel::shutdown`], so its pid cannot have been reused.
    pub(crate) fn interrupt(&self) {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
    }

    /// Kills the kernel and removes its connection file.
    pub(crate) async fn shutdown(mut self) {
        let _ = self.child.start_kill();
        let _ = timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Runs `code`, sending its events to `sink` (none for a `silent` run), until the kernel
    /// is idle again. Past `deadline` (or when the client leaves) the kernel is interrupted
    /// and a `TimeoutError` is reported; then it has [`INTERRUPT_GRACE`] to go idle.
    pub(crate) async fn execute(
        &mut self,
        code: &str,
        silent: bool,
        sink: &mut Sink,
        deadline: Option<Instant>,
        cancel: &Notify,
    ) -> Outcome {
        let req = ExecuteRequest {
            code: code.to_string(),
            silent,
            store_history: !silent,
            user_expressions: None,
            allow_stdin: false,
            stop_on_error: true,
        };
        if let Some(t) = self.settle_until.take() {
            sleep_until(t).await;
        }
        let msg: JupyterMessage = req.into();
        let id = msg.header.msg_id.clone();
        if let Err(e) = self.shell.send(msg).await {
            return Outcome::Broken(format!("sending the code: {e}"));
        }
        let watch = sink.watcher();
        let cancelled = cancel.notified();
        tokio::pin!(cancelled);
        cancelled.as_mut().enable();
        let mut interrupted_at: Option<Instant> = None;
        let mut timed_out = false;
        // For kernels that report a failure only in the reply (tslab prints the exception
        // to stderr): the error event is made from the reply and this stderr.
        let mut errored = false;
        let mut stderr_text = String::new();
        loop {
            let grace = interrupted_at.map(|t| t + INTERRUPT_GRACE);
            tokio::select! {
                m = self.iopub.read() => {
                    let m = match m {
                        Ok(m) => m,
                        Err(RuntimeError::ParseError { .. } | RuntimeError::SerdeError(_)) => continue,
                        Err(e) => return Outcome::Broken(format!("reading output: {e}")),
                    };
                    if m.parent_header.as_ref().map(|h| h.msg_id.as_str()) != Some(id.as_str()) {
                        continue;
                    }
                    if let JupyterMessageContent::Status(s) = &m.content {
                        if s.execution_state == ExecutionState::Idle {
                            break;
                        }
                        continue;
                    }
                    if silent {
                        continue;
                    }
                    if let Some(ev) = event(m.content) {
                        match &ev {
                            Event::Error { .. } if timed_out => continue,
                            Event::Error { .. } => errored = true,
                            Event::Stderr { text, .. } if stderr_text.len() < STDERR_TAIL => {
                                stderr_text.push_str(text);
                            }
                            _ => {}
                        }
                        sink.send(ev).await;
                    }
                }
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() && interrupted_at.is_none() => {
                    self.interrupt();
                    interrupted_at = Some(Instant::now());
                    timed_out = true;
                    sink.send(Event::Error {
                        name: "TimeoutError".to_string(),
                        value: "execution timed out; the kernel was interrupted".to_string(),
                        traceback: String::new(),
                    }).await;
                }
                _ = &mut cancelled, if interrupted_at.is_none() => {
                    self.interrupt();
                    interrupted_at = Some(Instant::now());
                }
                _ = watch.closed(), if interrupted_at.is_none() => {
                    self.interrupt();
                    interrupted_at = Some(Instant::now());
                }
                _ = sleep_until(grace.unwrap_or_else(Instant::now)), if grace.is_some() => {
                    return Outcome::Broken("the kernel did not stop after an interrupt".to_string());
                }
                // A kernel that dies mid-execution (the sandbox's OOM killer, a crash) never
                // reports idle: without this the request would wait for the client to leave.
                st = self.child.wait() => {
                    return Outcome::Broken(exit_reason(st));
                }
            }
        }
        // The shell reply comes before idle; read it so the socket's queue stays empty.
        let reply = timeout(Duration::from_secs(2), async {
            loop {
                match self.shell.read().await {
                    Ok(r)
                        if r.parent_header.as_ref().map(|h| h.msg_id.as_str())
                            == Some(id.as_str()) =>
                    {
                        return Some(r.content);
                    }
                    Ok(_) | Err(RuntimeError::ParseError { .. } | RuntimeError::SerdeError(_)) => {}
                    Err(_) => return None,
                }
            }
        })
        .await
        .ok()
        .flatten();
        if let Some(JupyterMessageContent::ExecuteReply(r)) = &reply
            && r.status == ReplyStatus::Error
            && self.language == Language::JavaScript
        {
            self.settle_until = Some(Instant::now() + Duration::from_millis(250));
        }
        if let Some(JupyterMessageContent::ExecuteReply(r)) = reply
            && r.status == ReplyStatus::Error
            && !errored
            && !timed_out
            && !silent
        {
            let text = stderr_text.trim();
            let (name, value, traceback) = match r.error {
                Some(e) => (e.ename, e.evalue, e.traceback.join("\n")),
                None => {
                    let (name, value) = error_line(text);
                    (name, value, text.to_string())
                }
            };
            sink.send(Event::Error {
                name,
                value,
                traceback,
            })
            .await;
        }
        Outcome::Done
    }
}

/// Why a kernel process ended, for the user: a SIGKILL is most often the sandbox's OOM
/// killer, so that case names the memory limit.
fn exit_reason(st: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match st {
        Ok(st) if st.signal() == Some(9) => "the kernel was killed (SIGKILL; most often the sandbox ran out of memory: give it a larger memory limit or fewer contexts)".to_string(),
        Ok(st) => format!("the kernel exited ({st})"),
        Err(e) => format!("the kernel could not be waited for: {e}"),
    }
}

/// The exception's name and message from a kernel's stderr: the first `Name: message` line
/// whose name ends in `Error` or `Exception` (as Node prints `Error: boom`), else `Error` and
/// the first line (a type checker's message).
fn error_line(text: &str) -> (String, String) {
    for line in text.lines() {
        if let Some((name, value)) = line.split_once(": ")
            && !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            && (name.ends_with("Error") || name.ends_with("Exception"))
        {
            return (name.to_string(), value.trim().to_string());
        }
    }
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("the code failed");
    ("Error".to_string(), first.trim().to_string())
}

/// The wire event for an iopub message, if it is one the SDKs show.
fn event(content: JupyterMessageContent) -> Option<Event> {
    let bundle = |data: &jupyter_protocol::Media| match serde_json::to_value(data) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    Some(match content {
        JupyterMessageContent::StreamContent(s) => match s.name {
            Stream::Stdout => Event::Stdout {
                text: s.text,
                timestamp: now_ns(),
            },
            Stream::Stderr => Event::Stderr {
                text: s.text,
                timestamp: now_ns(),
            },
        },
        JupyterMessageContent::ExecuteResult(r) => {
            Event::Result(Box::new(ResultData::from_bundle(bundle(&r.data), true)))
        }
        JupyterMessageContent::DisplayData(d) => {
            Event::Result(Box::new(ResultData::from_bundle(bundle(&d.data), false)))
        }
        JupyterMessageContent::ErrorOutput(e) => Event::Error {
            name: e.ename,
            value: e.evalue,
            traceback: e.traceback.join("\n"),
        },
        JupyterMessageContent::ExecuteInput(i) => Event::NumberOfExecutions {
            execution_count: i.execution_count.value() as i64,
        },
        _ => return None,
    })
}

/// Connects shell and iopub, retrying until the kernel listens, then sends `kernel_info`
/// until both a reply and an iopub message arrived (iopub subscriptions are asynchronous:
/// output sent before the subscription reached the kernel would be lost).
async fn connect(
    info: &ConnectionInfo,
    child: &mut Child,
    deadline: Instant,
) -> Result<(ClientShellConnection, ClientIoPubConnection), String> {
    let session = uuid::Uuid::new_v4().to_string();
    let exited = |child: &mut Child| match child.try_wait() {
        Ok(Some(st)) => Some(format!("the kernel exited ({st})")),
        _ => None,
    };
    let mut last = String::new();
    let (mut shell, mut iopub) = loop {
        if let Some(e) = exited(child) {
            return Err(e);
        }
        if Instant::now() > deadline {
            return Err(format!("no answer within {KERNEL_START_TIMEOUT:?}: {last}"));
        }
        let iopub = jupyter_zmq_client::create_client_iopub_connection(info, "", &session).await;
        let shell = match jupyter_zmq_client::peer_identity_for_session(&session) {
            Ok(idn) => {
                jupyter_zmq_client::create_client_shell_connection_with_identity(
                    info, &session, idn,
                )
                .await
            }
            Err(e) => return Err(e.to_string()),
        };
        match (shell, iopub) {
            (Ok(s), Ok(i)) => break (s, i),
            (Err(e), _) | (_, Err(e)) => last = e.to_string(),
        }
        sleep(Duration::from_millis(20)).await;
    };
    let mut replied = false;
    loop {
        if let Some(e) = exited(child) {
            return Err(e);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no kernel_info reply within {KERNEL_START_TIMEOUT:?}"
            ));
        }
        let req: JupyterMessage = KernelInfoRequest {}.into();
        shell
            .send(req)
            .await
            .map_err(|e| format!("sending kernel_info: {e}"))?;
        let round = Instant::now() + Duration::from_millis(500);
        let mut heard = false;
        loop {
            tokio::select! {
                r = shell.read() => {
                    // Some kernels' replies lack fields the typed reply requires: any
                    // `kernel_info_reply` counts.
                    match r {
                        Ok(m) if matches!(m.content, JupyterMessageContent::KernelInfoReply(_)) => replied = true,
                        Err(RuntimeError::ParseError { msg_type, .. }) if msg_type == "kernel_info_reply" => replied = true,
                        _ => {}
                    }
                }
                m = iopub.read() => {
                    if m.is_ok() {
                        heard = true;
                    }
                }
                _ = sleep_until(round) => break,
            }
            if replied && heard {
                return Ok((shell, iopub));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::error_line;

    #[test]
    fn errors_are_read_from_node_stderr() {
        let node = "evalmachine.<anonymous>:2\nthrow new Error('boom');\n^\n\nError: boom\n    at evalmachine";
        assert_eq!(error_line(node), ("Error".into(), "boom".into()));
        let ty = "TypeError: x is not a function\n    at y";
        assert_eq!(
            error_line(ty),
            ("TypeError".into(), "x is not a function".into())
        );
        let check = "1:13 - Cannot find name 'xs'.\n";
        assert_eq!(
            error_line(check),
            ("Error".into(), "1:13 - Cannot find name 'xs'.".into())
        );
    }
}
