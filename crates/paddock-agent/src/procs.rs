//! Processes: spawning with pipes or a PTY, output kept for replay, signals, stdin, reaping.
//!
//! Every process the agent starts gets its own session (so a signal can reach its whole
//! group) and is made a child subreaper, so that daemons it double-forks stay its
//! descendants and are found when it is killed on timeout. It is signalled only through a
//! pidfd held in the table from spawn until it is reaped (module `signals`).
//!
//! The table's and the logs' mutexes are taken with [`crate::lock`], which recovers from
//! poisoning: one panic under a lock must not break PID 1 for the rest of the sandbox's life.
//!
//! Output is kept per process in a bounded log of chunks numbered from 0 ([`OUTPUT_CAP`]
//! bytes; the oldest chunks are dropped first). A client that reconnects with
//! `process.Connect` and the header `paddock-replay-from: N` gets the chunks from `N` on (or
//! from the oldest still kept) and the response header `paddock-first-seq` says where the
//! replay starts; each following data event is the next sequence number.

// The generated service traits return `impl Encodable`; returning the concrete message is
// the intended use.
#![allow(refining_impl_trait)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use connectrpc::{
    ConnectError, RequestContext, Response, ServiceRequest, ServiceResult, ServiceStream,
};
use futures::StreamExt;
use paddock_envd::process::__buffa::oneof::process_event::Event;
use paddock_envd::process::__buffa::oneof::process_event::data_event::Output;
use paddock_envd::process::__buffa::oneof::process_input::Input;
use paddock_envd::process::__buffa::oneof::process_selector::Selector;
use paddock_envd::process::__buffa::oneof::stream_input_request::Event as InEvent;
use paddock_envd::process::*;

use crate::sys::spawn::Creds;
use tokio::sync::Notify;

use crate::lock;
use crate::rpc::{header_u64, keepalive, user_of};
use crate::signals::{self, Scope};
use crate::users::{self, User};

/// Bytes of output kept per process for replay.
pub const OUTPUT_CAP: usize = 8 * 1024 * 1024;
/// Finished processes whose output and exit status are kept for late readers.
const KEEP_EXITED: usize = 64;
/// Largest single data event.
const CHUNK: usize = 32 * 1024;

type Shared<T> = Arc<Mutex<T>>;

/// Which stream a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    Pty,
}

#[derive(Debug, Clone)]
pub(crate) struct Exit {
    pub(crate) code: i32,
    pub(crate) exited: bool,
    pub(crate) status: String,
}

#[derive(Default)]
struct OutLog {
    chunks: VecDeque<(u64, Stream, Bytes)>,
    bytes: usize,
    next_seq: u64,
    /// Output descriptors still being read.
    open: usize,
    exit: Option<Exit>,
}

impl OutLog {
    fn push(&mut self, kind: Stream, data: Bytes) {
        self.bytes += data.len();
        self.chunks.push_back((self.next_seq, kind, data));
        self.next_seq += 1;
        while self.bytes > OUTPUT_CAP {
            match self.chunks.pop_front() {
                Some((_, _, d)) => self.bytes -= d.len(),
                None => break,
            }
        }
    }

    fn first_seq(&self) -> u64 {
        self.chunks.front().map_or(self.next_seq, |c| c.0)
    }

    /// The process is finished for readers once it exited and its output is drained.
    fn ended(&self) -> Option<&Exit> {
        self.exit.as_ref().filter(|_| self.open == 0)
    }
}

/// One process started by the agent.
pub struct Proc {
    pid: u32,
    /// Start time (clock ticks since boot), to recognise the process in `/proc`.
    start: u64,
    /// The pidfd every signal goes through; taken (closed) when the process is reaped.
    pidfd: Mutex<Option<OwnedFd>>,
    config: ProcessConfig,
    tag: Option<String>,
    stdin: tokio::sync::Mutex<Option<std::fs::File>>,
    pty: Option<OwnedFd>,
    log: Mutex<OutLog>,
    changed: Notify,
    /// Fired once when the process exits, so output pumps drain and stop.
    exited: Notify,
}

#[derive(Default)]
struct Table {
    live: HashMap<u32, Arc<Proc>>,
    done: VecDeque<Arc<Proc>>,
    /// Children started outside the process table (`sudo`), waiting for their exit status.
    waiters: HashMap<u32, tokio::sync::oneshot::Sender<Exit>>,
}

/// The process table and the `process.Process` service.
#[derive(Clone)]
pub struct Procs {
    table: Shared<Table>,
    /// The sandbox's env vars: set at start, replaced once by the host when it hands a
    /// pooled sandbox out (`set_sandbox_env`).
    env: Arc<Mutex<Arc<BTreeMap<String, String>>>>,
}

impl Procs {
    pub fn new(env: BTreeMap<String, String>) -> Arc<Self> {
        Arc::new(Procs {
            table: Arc::default(),
            env: Arc::new(Mutex::new(Arc::new(env))),
        })
    }

    fn find(&self, sel: &ProcessSelector) -> Result<Arc<Proc>, ConnectError> {
        let t = lock(&self.table);
        let all = || t.live.values().chain(t.done.iter().rev());
        let found = match &sel.selector {
            Some(Selector::Pid(pid)) => all().find(|p| p.pid == *pid),
            Some(Selector::Tag(tag)) => all().find(|p| p.tag.as_deref() == Some(tag.as_str())),
            None => return Err(ConnectError::invalid_argument("process selector is empty")),
        };
        found
            .cloned()
            .ok_or_else(|| ConnectError::not_found(format!("process {sel:?} not found")))
    }

    fn find_live(&self, sel: &ProcessSelector) -> Result<Arc<Proc>, ConnectError> {
        let p = self.find(sel)?;
        if lock(&p.log).exit.is_some() {
            return Err(ConnectError::not_found(format!(
                "process {} has exited",
                p.pid
            )));
        }
        Ok(p)
    }

    /// Spawns a process and registers it; see the module docs for the session and subreaper.
    fn spawn(&self, req: &StartRequest, user: &User) -> Result<Arc<Proc>, ConnectError> {
        let cfg = req.process.as_option().cloned().unwrap_or_default();
        if cfg.cmd.is_empty() {
            return Err(ConnectError::invalid_argument("process.cmd is empty"));
        }
        if let Some(field) = nul_field(&cfg) {
            // exec would fail in the child with nothing but "nul byte found" to show.
            return Err(ConnectError::invalid_argument(format!(
                "{field} must not contain NUL bytes"
            )));
        }
        let cwd = match cfg.cwd.as_deref() {
            Some(c) => check_cwd(user, c)?,
            None => users::default_cwd(user),
        };
        if !cwd.is_dir() {
            return Err(ConnectError::invalid_argument(format!(
                "cwd {} does not exist or is not a directory",
                cwd.display()
            )));
        }
        // Shell command lines arrive as `/bin/bash -l -c ...` (E2B's contract and ours);
        // images without bash (Alpine, busybox) run them with their POSIX `/bin/sh`.
        let program = if cfg.cmd == "/bin/bash" && !std::path::Path::new("/bin/bash").exists() {
            "/bin/sh"
        } else {
            cfg.cmd.as_str()
        };
        // The environment, later entries over earlier ones.
        let mut env: std::collections::BTreeMap<String, String> = BTreeMap::new();
        env.insert("PATH".into(), paddock_core::SANDBOX_PATH.into());
        env.insert("HOME".into(), user.home.clone());
        env.insert("USER".into(), user.name.clone());
        env.insert("LOGNAME".into(), user.name.clone());
        env.insert("SHELL".into(), user.shell.clone());
        let sandbox_env = self.sandbox_env();
        env.extend(sandbox_env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(cfg.envs.iter().map(|(k, v)| (k.clone(), v.clone())));
        // The shim directory stays first whatever PATH the template or request sets.
        let path = cfg
            .envs
            .get("PATH")
            .or_else(|| sandbox_env.get("PATH"))
            .map_or_else(|| paddock_core::SANDBOX_PATH.to_owned(), Clone::clone);
        if !path.split(':').any(|d| d == paddock_core::SHIM_DIR) {
            env.insert("PATH".into(), format!("{}:{path}", paddock_core::SHIM_DIR));
        }
        let mut cmd = Command::new(program);
        cmd.args(&cfg.args).env_clear().envs(&env);
        // Credentials and cwd are applied in the child (see `child_setup`): std applies its
        // own uid/gid before pre_exec closures, after which setgroups would be refused.
        let creds = Creds {
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
            cwd: std::ffi::CString::new(cwd.as_os_str().as_encoded_bytes())
                .map_err(|_| ConnectError::invalid_argument("cwd contains NUL"))?,
        };

        let pty_size = req
            .pty
            .as_option()
            .and_then(|p| p.size.as_option().cloned());
        let mut pty_master = None;
        let (mut out_r, mut err_r, mut stdin_w) = (None, None, None);
        // Without a PTY the command starts without copying the agent (`sys::vfork`);
        // std's fork below is the fallback, and the PTY path.
        let mut fast = None;
        if let Some(size) = pty_size {
            let (master, slave) = open_pty(size.cols, size.rows)
                .map_err(|e| ConnectError::internal(format!("opening pty: {e}")))?;
            cmd.stdin(Stdio::from(slave.try_clone().map_err(internal)?));
            cmd.stdout(Stdio::from(slave.try_clone().map_err(internal)?));
            cmd.stderr(Stdio::from(slave));
            if !cfg.envs.contains_key("TERM") {
                cmd.env("TERM", "xterm-256color");
            }
            crate::sys::spawn::prepare_child(&mut cmd, creds, true);
            pty_master = Some(master);
        } else {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            if req.stdin == Some(false) {
                cmd.stdin(Stdio::null());
            } else {
                cmd.stdin(Stdio::piped());
            }
            fast = crate::sys::vfork::Plan::new(
                program,
                &cfg.args,
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                env.get("PATH").map_or("", String::as_str),
                creds.uid,
                creds.gid,
                &creds.groups,
                &creds.cwd,
            )
            .zip(crate::sys::vfork::Pipes::new(req.stdin != Some(false)).ok());
            crate::sys::spawn::prepare_child(&mut cmd, creds, false);
        }

        // Spawn and register under the table lock, so the reaper cannot see the exit of a
        // process that is not in the table yet.
        let mut table = lock(&self.table);
        let started = fast.and_then(|(plan, pipes)| {
            let pid = crate::sys::vfork::spawn(&plan, pipes.child_ends()).ok()??;
            Some((pid, pipes))
        });
        let pid = if let Some((pid, pipes)) = started {
            out_r = Some(pipes.out_r);
            err_r = Some(pipes.err_r);
            stdin_w = pipes.in_w.map(std::fs::File::from);
            pid
        } else {
            let mut child = cmd
                .spawn()
                .map_err(|e| start_error(&e, &cfg.cmd, &cwd, user))?;
            if let Some(o) = child.stdout.take() {
                out_r = Some(OwnedFd::from(o));
            }
            if let Some(e) = child.stderr.take() {
                err_r = Some(OwnedFd::from(e));
            }
            if let Some(i) = child.stdin.take() {
                stdin_w = Some(std::fs::File::from(OwnedFd::from(i)));
            }
            // `child` is dropped without waiting: the reaper collects every exit status.
            child.id()
        };
        let (pidfd, start) = hold(pid)
            .map_err(|e| ConnectError::internal(format!("spawning {:?}: pidfd: {e}", cfg.cmd)))?;
        let mut readers: Vec<(OwnedFd, Stream)> = Vec::new();
        if let Some(m) = &pty_master {
            readers.push((m.try_clone().map_err(internal)?, Stream::Pty));
            stdin_w = Some(std::fs::File::from(m.try_clone().map_err(internal)?));
        }
        if let Some(o) = out_r {
            readers.push((o, Stream::Stdout));
        }
        if let Some(e) = err_r {
            readers.push((e, Stream::Stderr));
        }
        let proc = Arc::new(Proc {
            pid,
            start,
            pidfd: Mutex::new(Some(pidfd)),
            config: cfg,
            tag: req.tag.clone(),
            stdin: tokio::sync::Mutex::new(stdin_w),
            pty: pty_master,
            log: Mutex::new(OutLog {
                open: readers.len(),
                ..OutLog::default()
            }),
            changed: Notify::new(),
            exited: Notify::new(),
        });
        table.live.insert(pid, proc.clone());
        drop(table);
        for (fd, kind) in readers {
            tokio::spawn(pump(proc.clone(), fd, kind));
        }
        Ok(proc)
    }

    /// Called by the reaper, with the table locked, for every exit status it collects.
    fn exited(t: &mut Table, pid: u32, exit: Exit) {
        if let Some(w) = t.waiters.remove(&pid) {
            let _ = w.send(exit);
            return;
        }
        let Some(p) = t.live.remove(&pid) else { return };
        // Reaped: the pid number is free for reuse, and signals must not go anywhere.
        lock(&p.pidfd).take();
        lock(&p.log).exit = Some(exit);
        t.done.push_back(p.clone());
        while t.done.len() > KEEP_EXITED {
            t.done.pop_front();
        }
        p.exited.notify_waiters();
        p.exited.notify_one();
        p.changed.notify_waiters();
    }

    /// Builds the event stream for Start and Connect: optional start event, replay from
    /// `from`, live output, keepalives, exactly one end; kills the process at `deadline`.
    fn events(
        p: Arc<Proc>,
        from: u64,
        send_start: bool,
        keepalive: Option<Duration>,
        deadline: Option<Instant>,
    ) -> impl futures::Stream<Item = Result<ProcessEvent, ConnectError>> + Send + 'static {
        // The start event is ready at once, so the response's head and it leave in one write
        // (the rest comes from a task, one turn of the scheduler later).
        let start = send_start.then(|| {
            Ok(event(process_event::StartEvent {
                pid: p.pid,
                ..Default::default()
            }))
        });
        let rest = async_stream(move |tx| async move {
            let mut next = from;
            loop {
                let notified = p.changed.notified();
                let (batch, end) = {
                    let log = lock(&p.log);
                    next = next.max(log.first_seq());
                    let batch: Vec<_> = log
                        .chunks
                        .iter()
                        .filter(|c| c.0 >= next)
                        .map(|(s, k, d)| (*s, *k, d.clone()))
                        .collect();
                    (batch, log.ended().cloned())
                };
                for (seq, kind, data) in batch {
                    next = seq + 1;
                    tx.send(Ok(data_event(kind, data))).await?;
                }
                if let Some(exit) = end {
                    let end = process_event::EndEvent {
                        exit_code: exit.code,
                        exited: exit.exited,
                        status: exit.status,
                        ..Default::default()
                    };
                    tx.send(Ok(event(end))).await?;
                    return Some(());
                }
                let ka = keepalive.unwrap_or(Duration::from_secs(3600));
                let dl = deadline.map(tokio::time::Instant::from_std);
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(ka), if keepalive.is_some() => {
                        tx.send(Ok(event(process_event::KeepAlive::default()))).await?;
                    }
                    _ = async { tokio::time::sleep_until(dl.unwrap_or_else(tokio::time::Instant::now)).await }, if dl.is_some() => {
                        signals::kill_tree(p.pid, p.start);
                        tx.send(Err(ConnectError::deadline_exceeded(format!(
                            "process {} killed: deadline exceeded", p.pid
                        )))).await?;
                        return Some(());
                    }
                }
            }
        });
        futures::stream::iter(start).chain(rest)
    }
}

fn check_cwd(user: &User, cwd: &str) -> Result<std::path::PathBuf, ConnectError> {
    // A cwd that climbs above the root with `..` is a client bug; refuse it rather than
    // silently clamping it to `/` as file paths are.
    let base = if cwd.starts_with('/') {
        ""
    } else {
        user.home.as_str()
    };
    let mut depth: usize = 0;
    for part in base.split('/').chain(cwd.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    ConnectError::invalid_argument(format!("cwd {cwd:?} escapes the sandbox root"))
                })?;
            }
            _ => depth += 1,
        }
    }
    Ok(users::resolve_path(user, cwd))
}

/// The error of a process that could not start. The server turns `not_found` and
/// `permission_denied` whose message starts with `command ` into exit codes 127 and 126, as
/// a shell does, so a working directory the user may not enter (its `chdir` runs in the
/// child, as the user, and fails the spawn the same way) is told apart first.
fn start_error(e: &std::io::Error, cmd: &str, cwd: &std::path::Path, user: &User) -> ConnectError {
    use std::os::unix::fs::MetadataExt;
    let enterable = std::fs::metadata(cwd).is_ok_and(|m| {
        let bits = if user.uid == 0 {
            0o111
        } else if m.uid() == user.uid {
            0o100
        } else if m.gid() == user.gid || user.groups.contains(&m.gid()) {
            0o010
        } else {
            0o001
        };
        m.is_dir() && m.mode() & bits != 0
    });
    if !enterable {
        return ConnectError::invalid_argument(format!(
            "cwd {} cannot be entered by user {:?}",
            cwd.display(),
            user.name
        ));
    }
    match e.raw_os_error() {
        Some(libc::ENOENT) => ConnectError::not_found(format!("command {cmd:?} not found")),
        Some(libc::EACCES | libc::EISDIR | libc::ENOEXEC | libc::EPERM | libc::ENOTDIR) => {
            ConnectError::permission_denied(format!(
                "command {cmd:?} is not executable: {}",
                std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(0))
                    .to_string()
                    .to_lowercase()
            ))
        }
        _ => ConnectError::internal(format!("starting {cmd:?}: {e}")),
    }
}

impl Procs {
    /// Spawns `cmd` as `user` in `cwd`, in a new session, outside the process table (it is
    /// not listed or selectable over envd), and returns its pid and a receiver of its exit
    /// status. Spawned under the table lock like [`Procs::spawn`], so the reaper cannot
    /// collect the exit before the waiter exists.
    pub(crate) fn spawn_detached(
        &self,
        mut cmd: Command,
        user: &User,
        cwd: &std::path::Path,
    ) -> std::io::Result<(u32, OwnedFd, tokio::sync::oneshot::Receiver<Exit>)> {
        let creds = Creds {
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
            cwd: std::ffi::CString::new(cwd.as_os_str().as_encoded_bytes())
                .map_err(|_| std::io::Error::other("cwd contains NUL"))?,
        };
        crate::sys::spawn::prepare_child(&mut cmd, creds, false);
        let mut table = lock(&self.table);
        let child = cmd.spawn()?;
        let pid = child.id();
        // Dropped without waiting: the reaper collects the status and hands it to the waiter.
        drop(child);
        let (pidfd, _) = hold(pid)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        table.waiters.insert(pid, tx);
        Ok((pid, pidfd, rx))
    }

    /// Sends `sig` to the process group of a process started by [`Procs::spawn_detached`],
    /// through its pidfd.
    pub(crate) fn signal_detached(
        &self,
        pidfd: &OwnedFd,
        pid: u32,
        sig: i32,
    ) -> std::io::Result<()> {
        signals::signal(pidfd.as_fd(), pid, sig, Scope::Group, || lock(&self.table))
    }

    /// Signals a process of the table through its pidfd; `not_found` once it is reaped.
    fn signal(&self, p: &Proc, sig: i32, scope: Scope) -> Result<(), ConnectError> {
        let gone = || ConnectError::not_found(format!("process {} has exited", p.pid));
        // A duplicate, so the process's own lock is not held while `signals::signal` may
        // take the table's (the reaper takes them in the other order).
        let fd = match lock(&p.pidfd).as_ref() {
            Some(fd) => fd.try_clone().map_err(internal)?,
            None => return Err(gone()),
        };
        signals::signal(fd.as_fd(), p.pid, sig, scope, || lock(&self.table)).map_err(|e| {
            if e.raw_os_error() == Some(libc::ESRCH) {
                gone()
            } else {
                ConnectError::internal(format!("signalling process {}: {e}", p.pid))
            }
        })
    }

    /// The environment every process in the sandbox starts with (the sandbox's env vars).
    pub(crate) fn sandbox_env(&self) -> Arc<BTreeMap<String, String>> {
        lock(&self.env).clone()
    }

    /// Replaces the sandbox's env vars for every process started from now on (a pooled
    /// sandbox being handed out: `docs/pools.md`).
    pub(crate) fn set_sandbox_env(&self, env: BTreeMap<String, String>) {
        *lock(&self.env) = Arc::new(env);
    }
}

/// Opens a pidfd on a child just spawned, and reads its start time. Called with the table
/// locked: the reaper cannot have collected the child, so the number is still its own. If
/// either fails the child is killed (by that same still-valid number) and the error returned;
/// the reaper then collects it as a process nobody waits for.
fn hold(pid: u32) -> std::io::Result<(OwnedFd, u64)> {
    let opened = signals::pidfd_open(pid).and_then(|fd| {
        let st = signals::stat(pid).ok_or_else(|| std::io::Error::other("no /proc stat"))?;
        Ok((fd, st.start))
    });
    if opened.is_err() {
        // The child is unreaped (see above), so the number is still its.
        let _ = crate::sys::kill(pid as i32, libc::SIGKILL);
    }
    opened
}

fn internal(e: impl std::fmt::Display) -> ConnectError {
    ConnectError::internal(e.to_string())
}

fn event(e: impl Into<Option<Event>>) -> ProcessEvent {
    ProcessEvent {
        event: e.into(),
        ..Default::default()
    }
}

fn data_event(kind: Stream, data: Bytes) -> ProcessEvent {
    let v: Vec<u8> = data.to_vec();
    let output = match kind {
        Stream::Stdout => Output::Stdout(v),
        Stream::Stderr => Output::Stderr(v),
        Stream::Pty => Output::Pty(v),
    };
    event(process_event::DataEvent {
        output: Some(output),
        ..Default::default()
    })
}

/// Reads one output descriptor into the process's log until EOF or until the process has
/// exited and what it left in the pipe is drained. Daemons that inherited the pipe do not
/// hold the command open, as with envd.
async fn pump(p: Arc<Proc>, fd: OwnedFd, kind: Stream) {
    let _ = rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::NONBLOCK);
    let Ok(afd) = crate::sys::spawn::async_fd(fd) else {
        close_reader(&p);
        return;
    };
    let mut buf = vec![0u8; CHUNK];
    let mut exited = false;
    loop {
        let exit_wait = p.exited.notified();
        if !exited && lock(&p.log).exit.is_some() {
            exited = true;
        }
        if exited {
            // Drain what is buffered now, then stop.
            loop {
                match rustix::io::read(afd.get_ref(), &mut buf) {
                    Ok(n) if n > 0 => push(&p, kind, &buf[..n]),
                    _ => break,
                }
            }
            break;
        }
        tokio::select! {
            guard = afd.readable() => {
                let Ok(mut guard) = guard else { break };
                match rustix::io::read(afd.get_ref(), &mut buf) {
                    Ok(0) => break,
                    Ok(n) => push(&p, kind, &buf[..n]),
                    Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
                    Err(rustix::io::Errno::INTR) => {}
                    // EIO: the PTY's slave side is gone.
                    Err(_) => break,
                }
            }
            _ = exit_wait => { exited = true; }
        }
    }
    close_reader(&p);
}

fn push(p: &Proc, kind: Stream, data: &[u8]) {
    lock(&p.log).push(kind, Bytes::copy_from_slice(data));
    p.changed.notify_waiters();
}

fn close_reader(p: &Proc) {
    lock(&p.log).open -= 1;
    p.changed.notify_waiters();
}

/// PID 1's duty: collect every exit status in the sandbox, ours and orphans'.
pub async fn reap(procs: Arc<Procs>) {
    let mut sig = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGCHLD: {e}");
            return;
        }
    };
    loop {
        loop {
            // The table lock is held across waitpid: `spawn` holds it too, so the reaper can
            // never collect a child that std's `Command::spawn` is itself waiting for after a
            // failed exec (std panics when that child is already gone).
            let mut table = lock(&procs.table);
            // `waitpid(-1)`, any child (rustix's `waitpid(None)` is only our process group);
            // WNOHANG never blocks; no child left to collect (ECHILD) ends the round too.
            let Ok(Some((pid, status))) =
                rustix::process::wait(rustix::process::WaitOptions::NOHANG)
            else {
                break;
            };
            let pid = pid.as_raw_nonzero().get();
            let exit = if let Some(c) = status.exit_status() {
                Exit {
                    code: c,
                    exited: true,
                    status: format!("exit status {c}"),
                }
            } else {
                let s = status.terminating_signal().unwrap_or(0);
                Exit {
                    code: -1,
                    exited: false,
                    status: format!("signal: {}", signals::signal_name(s)),
                }
            };
            Procs::exited(&mut table, pid as u32, exit);
        }
        if sig.recv().await.is_none() {
            return;
        }
    }
}

/// A tiny channel-backed stream: the producer future gets a sender; the stream ends when the
/// producer returns or the receiver is dropped (client gone).
fn async_stream<T, F, Fut>(f: F) -> impl futures::Stream<Item = T> + Send + 'static
where
    T: Send + 'static,
    F: FnOnce(Sender<T>) -> Fut,
    Fut: std::future::Future<Output = Option<()>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(Sender(tx)));
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

struct Sender<T>(tokio::sync::mpsc::Sender<T>);

impl<T> Sender<T> {
    /// Sends one item; `None` (via `?`) when the client has gone away.
    async fn send(&self, v: T) -> Option<()> {
        self.0.send(v).await.ok()
    }
}

type EventResult = Result<ProcessEvent, ConnectError>;

fn wrap<T>(
    s: impl futures::Stream<Item = EventResult> + Send + 'static,
    f: fn(ProcessEvent) -> T,
) -> ServiceStream<T>
where
    T: Send + 'static,
{
    Box::pin(s.map(move |r| r.map(f)))
}

impl Process for Procs {
    async fn list(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, ListRequest>,
    ) -> ServiceResult<ListResponse> {
        let t = lock(&self.table);
        let mut processes: Vec<ProcessInfo> = t
            .live
            .values()
            .map(|p| ProcessInfo {
                config: p.config.clone().into(),
                pid: p.pid,
                tag: p.tag.clone(),
                ..Default::default()
            })
            .collect();
        processes.sort_by_key(|p| p.pid);
        Response::ok(ListResponse {
            processes,
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, ConnectRequest>,
    ) -> ServiceResult<ServiceStream<ConnectResponse>> {
        let req = request.to_owned_message();
        let sel = req.process.as_option().cloned().unwrap_or_default();
        let p = self.find(&sel)?;
        let replay = header_u64(&ctx, "paddock-replay-from");
        let from = match replay {
            Some(n) => n,
            None => lock(&p.log).next_seq,
        };
        let first = from.max(lock(&p.log).first_seq());
        let s = Procs::events(p, from, true, keepalive(&ctx), None);
        let s = wrap(s, |e| ConnectResponse {
            event: e.into(),
            ..Default::default()
        });
        Ok(Response::new(s).with_header("paddock-first-seq", first.to_string()))
    }

    async fn start(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, StartRequest>,
    ) -> ServiceResult<ServiceStream<StartResponse>> {
        let req = request.to_owned_message();
        let user = user_of(&ctx)?;
        // Without a PTY the command starts by `sys::vfork` right here: this thread waits
        // only until the child has exec'd, less than a hop to the blocking pool and back
        // costs (issue 17's exec round trip). A PTY's start forks the agent (std): that
        // runs on the blocking pool.
        let p = if req.pty.as_option().is_some_and(|p| p.size.is_set()) {
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.spawn(&req, &user))
                .await
                .map_err(internal)??
        } else {
            self.spawn(&req, &user)?
        };
        let s = Procs::events(p, 0, true, keepalive(&ctx), ctx.deadline());
        let s = wrap(s, |e| StartResponse {
            event: e.into(),
            ..Default::default()
        });
        Ok(Response::new(s).with_header("paddock-first-seq", "0"))
    }

    async fn update(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, UpdateRequest>,
    ) -> ServiceResult<UpdateResponse> {
        let req = request.to_owned_message();
        let p = self.find_live(&req.process.as_option().cloned().unwrap_or_default())?;
        if let Some(size) = req.pty.as_option().and_then(|p| p.size.as_option()) {
            let Some(master) = &p.pty else {
                return Err(ConnectError::invalid_argument("process has no pty"));
            };
            set_winsize(master.as_fd(), size.cols, size.rows).map_err(internal)?;
        }
        Response::ok(UpdateResponse::default())
    }

    async fn stream_input(
        &self,
        _ctx: RequestContext,
        mut requests: connectrpc::InboundStream<StreamInputRequest>,
    ) -> ServiceResult<StreamInputResponse> {
        let mut target: Option<Arc<Proc>> = None;
        while let Some(msg) = requests.next().await {
            let msg = msg?.to_owned_message();
            match msg.event {
                Some(InEvent::Start(s)) => {
                    target =
                        Some(self.find_live(&s.process.as_option().cloned().unwrap_or_default())?);
                }
                Some(InEvent::Data(d)) => {
                    let Some(p) = &target else {
                        return Err(ConnectError::invalid_argument("data before start"));
                    };
                    if let Some(input) = d.input.as_option() {
                        write_input(p, input).await?;
                    }
                }
                Some(InEvent::Keepalive(_)) | None => {}
            }
        }
        Response::ok(StreamInputResponse::default())
    }

    async fn send_input(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, SendInputRequest>,
    ) -> ServiceResult<SendInputResponse> {
        let req = request.to_owned_message();
        let p = self.find_live(&req.process.as_option().cloned().unwrap_or_default())?;
        if let Some(input) = req.input.as_option() {
            write_input(&p, input).await?;
        }
        Response::ok(SendInputResponse::default())
    }

    async fn send_signal(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, SendSignalRequest>,
    ) -> ServiceResult<SendSignalResponse> {
        let req = request.to_owned_message();
        let p = self.find_live(&req.process.as_option().cloned().unwrap_or_default())?;
        let sig = match req.signal.as_known() {
            Some(Signal::SIGNAL_SIGKILL) => libc::SIGKILL,
            Some(Signal::SIGNAL_SIGTERM) => libc::SIGTERM,
            _ => return Err(ConnectError::invalid_argument("unsupported signal")),
        };
        // Default: the whole process group (the command and what it started in its
        // session). `paddock-signal-target: process` limits it to the process itself, and
        // `tree` also reaches descendants that left the group.
        let target = ctx
            .headers()
            .get("paddock-signal-target")
            .and_then(|v| v.to_str().ok());
        match target {
            Some("process") => self.signal(&p, sig, Scope::Process)?,
            Some("tree") if sig == libc::SIGKILL => signals::kill_tree(p.pid, p.start),
            _ => self.signal(&p, sig, Scope::Group)?,
        }
        Response::ok(SendSignalResponse::default())
    }

    async fn close_stdin(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, CloseStdinRequest>,
    ) -> ServiceResult<CloseStdinResponse> {
        let req = request.to_owned_message();
        let p = self.find_live(&req.process.as_option().cloned().unwrap_or_default())?;
        if p.pty.is_some() {
            // For a terminal, end of input is the EOF character, not closing the master.
            let mut g = p.stdin.lock().await;
            if let Some(f) = g.as_mut() {
                let _ = f.write_all(&[4]);
            }
        } else {
            p.stdin.lock().await.take();
        }
        Response::ok(CloseStdinResponse::default())
    }
}

async fn write_input(p: &Arc<Proc>, input: &ProcessInput) -> Result<(), ConnectError> {
    let data = match &input.input {
        Some(Input::Stdin(d)) => d.clone(),
        Some(Input::Pty(d)) => d.clone(),
        None => return Ok(()),
    };
    let p = p.clone();
    tokio::task::spawn_blocking(move || {
        let mut g = p.stdin.blocking_lock();
        let Some(f) = g.as_mut() else {
            return Err(ConnectError::failed_precondition("stdin is closed"));
        };
        f.write_all(&data)
            .map_err(|e| ConnectError::failed_precondition(format!("writing stdin: {e}")))
    })
    .await
    .map_err(internal)?
}

/// The first field of a process's configuration that holds a NUL byte (none of them can:
/// they become C strings for execve), named as the request names it.
fn nul_field(cfg: &paddock_envd::process::ProcessConfig) -> Option<String> {
    let nul = |s: &str| s.contains('\0');
    if nul(&cfg.cmd) {
        return Some("process.cmd".into());
    }
    if let Some(i) = cfg.args.iter().position(|a| nul(a)) {
        return Some(format!("process.args[{i}]"));
    }
    for (k, v) in &cfg.envs {
        if nul(k) {
            return Some("a key of process.envs".into());
        }
        if nul(v) {
            return Some(format!("process.envs.{k}"));
        }
    }
    cfg.cwd
        .as_deref()
        .is_some_and(nul)
        .then(|| "process.cwd".into())
}

mod handle;
mod pty;
use pty::{open_pty, set_winsize};
#[cfg(test)]
mod tests;
