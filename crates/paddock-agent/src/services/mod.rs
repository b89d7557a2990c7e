//! Supervised services: named long-running processes that PID 1 keeps running.
//!
//! Supervision lives here, in the agent, not in the server: the agent is PID 1 of the
//! sandbox, so it sees every exit at once (it reaps them), it survives a server restart (the
//! runtime adopts the sandbox and the services never notice), and it dies with the sandbox,
//! taking every service with it: a service cannot outlive its sandbox.
//!
//! Each service has one task ([`supervise`]) that starts its process (a listed process of
//! the table, tag `service:NAME`, so it also shows in the process list), copies its output
//! into the service's bounded log ([`LOG_CAP`], across restarts, sequence-numbered for
//! replay), and on exit restarts it per the policy (`always`; `on-failure`: not after exit
//! 0) after a pause that doubles from [`BACKOFF_INITIAL`] to [`BACKOFF_MAX`] and starts over
//! once a run lasted [`BACKOFF_RESET`]. Stopping sends SIGTERM to the process group and
//! SIGKILL to the whole tree after [`STOP_GRACE`]. An optional health check (a shell
//! command that must exit 0, or a port on `127.0.0.1` that must accept a connection) runs
//! every interval while the process runs and marks the service `healthy` or `unhealthy`; it
//! does not restart it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt as _;
use paddock_envd::process::__buffa::oneof::process_event::Event;
use paddock_envd::process::__buffa::oneof::process_event::data_event::Output;
use paddock_envd::process::{ProcessConfig, StartRequest};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::lock;
use crate::procs::Procs;
use crate::users;

mod health;
mod http;

pub use http::router;

/// Most services per sandbox.
pub const MAX_SERVICES: usize = 32;
/// Bytes of output kept per service (all its runs together; the oldest go first).
pub const LOG_CAP: usize = 1 << 20;
/// First pause before a restart.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(250);
/// Longest pause before a restart.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run this long resets the pause to [`BACKOFF_INITIAL`].
pub const BACKOFF_RESET: Duration = Duration::from_secs(10);
/// Time between SIGTERM and SIGKILL when a service is stopped.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Health check interval bounds and default (milliseconds).
pub const HEALTH_INTERVAL_MIN_MS: u64 = 1000;
pub const HEALTH_INTERVAL_MAX_MS: u64 = 3_600_000;
pub const HEALTH_INTERVAL_DEFAULT_MS: u64 = 10_000;

/// When a service's process is started again after it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// After every exit.
    Always,
    /// After an exit with a non-zero status or by a signal.
    OnFailure,
}

/// A health check: exactly one of `cmd` (shell) and `port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
}

fn default_interval() -> u64 {
    HEALTH_INTERVAL_DEFAULT_MS
}

/// What a service runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub name: String,
    /// Program and arguments.
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub restart: Policy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

/// Whether `name` can name a service: 1 to 63 of `[a-z0-9._-]`, starting with a letter or
/// digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

impl Spec {
    /// Checks the fields; the message names the one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !valid_name(&self.name) {
            return Err(format!(
                "{:?} cannot name a service: use 1 to 63 of a-z 0-9 . _ -, starting with a letter or digit",
                self.name
            ));
        }
        if self.cmd.first().is_none_or(String::is_empty) {
            return Err("cmd must not be empty".into());
        }
        let nul = self.cmd.iter().any(|a| a.contains('\0'))
            || self
                .env
                .iter()
                .any(|(k, v)| k.contains('\0') || v.contains('\0'))
            || self.cwd.as_deref().is_some_and(|c| c.contains('\0'));
        if nul {
            return Err("cmd, env and cwd must not contain NUL bytes".into());
        }
        if let Some(h) = &self.health {
            match (&h.cmd, h.port) {
                (Some(c), None) if !c.trim().is_empty() && !c.contains('\0') => {}
                (None, Some(p)) if p > 0 => {}
                _ => {
                    return Err(
                        "health takes exactly one of cmd (a shell command) and port (1 to 65535)"
                            .into(),
                    );
                }
            }
            if !(HEALTH_INTERVAL_MIN_MS..=HEALTH_INTERVAL_MAX_MS).contains(&h.interval_ms) {
                return Err(format!(
                    "health.interval_ms must be {HEALTH_INTERVAL_MIN_MS} to {HEALTH_INTERVAL_MAX_MS}"
                ));
            }
        }
        Ok(())
    }
}

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Its process runs.
    Running,
    /// Its process ended; it starts again after a pause.
    Backoff,
    /// Stopped on request.
    Stopped,
    /// Ended and not restarted (`on-failure` after exit 0).
    Exited,
}

/// What the health check last found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// No check configured.
    None,
    /// Not checked since the process started.
    Unknown,
    Healthy,
    Unhealthy,
}

/// How the last run ended.
#[derive(Debug, Clone, Serialize)]
pub struct LastExit {
    pub exit_code: Option<i32>,
    pub status: String,
    pub at_unix_ms: u64,
}

/// A service's state as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub state: State,
    pub pid: Option<u32>,
    /// Times its process was started again after ending (not counting explicit starts).
    pub restarts: u64,
    pub started_at_unix_ms: Option<u64>,
    pub last_exit: Option<LastExit>,
    /// When the next start happens (`backoff`).
    pub next_start_in_ms: Option<u64>,
    pub health: HealthState,
    /// The last failing check's outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_detail: Option<String>,
}

/// One chunk of a service's output: (sequence number, run, stream, data).
pub type Chunk = (u64, u64, &'static str, Bytes);

/// The service's output log: chunks numbered from 0, each with its run (1 for the first
/// start) and stream.
#[derive(Default)]
struct Log {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    next_seq: u64,
}

impl Log {
    fn push(&mut self, run: u64, stream: &'static str, data: Bytes) {
        self.bytes += data.len();
        self.chunks.push_back((self.next_seq, run, stream, data));
        self.next_seq += 1;
        while self.bytes > LOG_CAP {
            match self.chunks.pop_front() {
                Some(c) => self.bytes -= c.3.len(),
                None => break,
            }
        }
    }
}

/// A request to a service's task.
enum Ctl {
    Start(oneshot::Sender<()>),
    Stop(oneshot::Sender<()>),
    Restart(oneshot::Sender<()>),
}

/// One supervised service.
pub struct Service {
    spec: Spec,
    status: Mutex<Status>,
    log: Mutex<Log>,
    ctl: mpsc::UnboundedSender<Ctl>,
    /// Ends the supervisor (and the health task) when the service is removed.
    gone: tokio_util::sync::CancellationToken,
}

/// The services of this sandbox.
#[derive(Clone)]
pub struct Services {
    procs: Arc<Procs>,
    all: Arc<Mutex<BTreeMap<String, Arc<Service>>>>,
}

/// Why a service request failed (the HTTP layer maps these to 400, 404, 409).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(String),
    #[error("service {0:?} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Services {
    pub fn new(procs: Arc<Procs>) -> Self {
        Services {
            procs,
            all: Arc::default(),
        }
    }

    /// Adds service `spec` and starts it; the receiver fires once the first start was tried.
    pub fn add(&self, spec: Spec) -> Result<(Arc<Service>, oneshot::Receiver<()>), ServiceError> {
        spec.validate().map_err(ServiceError::Invalid)?;
        users::by_name_or_default(spec.user.as_deref())
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let mut all = lock(&self.all);
        if all.contains_key(&spec.name) {
            return Err(ServiceError::Conflict(format!(
                "service {:?} already exists",
                spec.name
            )));
        }
        if all.len() >= MAX_SERVICES {
            return Err(ServiceError::Conflict(format!(
                "this sandbox has {MAX_SERVICES} services, the most it may have"
            )));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let svc = Arc::new(Service {
            status: Mutex::new(Status {
                state: State::Backoff,
                pid: None,
                restarts: 0,
                started_at_unix_ms: None,
                last_exit: None,
                next_start_in_ms: Some(0),
                health: if spec.health.is_some() {
                    HealthState::Unknown
                } else {
                    HealthState::None
                },
                health_detail: None,
            }),
            spec,
            log: Mutex::default(),
            ctl: tx,
            gone: tokio_util::sync::CancellationToken::new(),
        });
        all.insert(svc.spec.name.clone(), svc.clone());
        let (started_tx, started_rx) = oneshot::channel();
        tokio::spawn(supervise(self.procs.clone(), svc.clone(), rx, started_tx));
        if svc.spec.health.is_some() {
            tokio::spawn(health::watch(self.procs.clone(), svc.clone()));
        }
        Ok((svc, started_rx))
    }

    pub fn get(&self, name: &str) -> Result<Arc<Service>, ServiceError> {
        lock(&self.all)
            .get(name)
            .cloned()
            .ok_or_else(|| ServiceError::NotFound(name.to_owned()))
    }

    pub fn list(&self) -> Vec<Arc<Service>> {
        lock(&self.all).values().cloned().collect()
    }

    /// Stops service `name` and forgets it.
    pub async fn remove(&self, name: &str) -> Result<(), ServiceError> {
        let svc = self.get(name)?;
        svc.request(Ctl::Stop).await;
        svc.gone.cancel();
        lock(&self.all).remove(name);
        Ok(())
    }
}

impl Service {
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    /// Starts the service if it is stopped or exited (a no-op while it runs or waits to
    /// restart); answers once its process runs.
    pub async fn start(&self) {
        self.request(Ctl::Start).await;
    }

    /// Stops the service (SIGTERM, then SIGKILL after [`STOP_GRACE`]); answers once its
    /// process has ended.
    pub async fn stop(&self) {
        self.request(Ctl::Stop).await;
    }

    /// Stops the process if it runs and starts it again at once.
    pub async fn restart(&self) {
        self.request(Ctl::Restart).await;
    }

    async fn request(&self, make: impl FnOnce(oneshot::Sender<()>) -> Ctl) {
        let (tx, rx) = oneshot::channel();
        if self.ctl.send(make(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Output from sequence number `from` on (or from the oldest kept): (first sequence
    /// number returned, next sequence number, chunks as (seq, run, stream, data)).
    pub fn output(&self, from: u64) -> (u64, u64, Vec<Chunk>) {
        let log = lock(&self.log);
        let first = log.chunks.front().map_or(log.next_seq, |c| c.0);
        let start = from.max(first);
        let chunks = log
            .chunks
            .iter()
            .filter(|c| c.0 >= start)
            .cloned()
            .collect();
        (start, log.next_seq, chunks)
    }

    fn set(&self, f: impl FnOnce(&mut Status)) {
        f(&mut lock(&self.status));
    }
}

/// How one run ended, and what was asked meanwhile.
struct RunEnd {
    exit_code: Option<i32>,
    status: String,
    /// Stop requested: stay stopped.
    stop: bool,
    /// Restart requested: start again at once.
    restart: bool,
    replies: Vec<oneshot::Sender<()>>,
}

/// The supervisor of one service: see the module docs.
async fn supervise(
    procs: Arc<Procs>,
    svc: Arc<Service>,
    mut rx: mpsc::UnboundedReceiver<Ctl>,
    started: oneshot::Sender<()>,
) {
    let mut backoff = BACKOFF_INITIAL;
    let mut run = 0u64;
    // Replies owed once the process runs (the first start, start, restart).
    let mut on_running: Vec<oneshot::Sender<()>> = vec![started];
    loop {
        if svc.gone.is_cancelled() {
            return;
        }
        run += 1;
        let started = Instant::now();
        let end = match start_process(&procs, &svc) {
            Ok(p) => {
                svc.set(|s| {
                    s.state = State::Running;
                    s.pid = Some(p.pid());
                    s.started_at_unix_ms = Some(now_ms());
                    s.next_start_in_ms = None;
                    if s.health != HealthState::None {
                        s.health = HealthState::Unknown;
                    }
                });
                for r in on_running.drain(..) {
                    let _ = r.send(());
                }
                follow(&procs, &svc, p, run, &mut rx).await
            }
            Err(e) => {
                let msg = format!("could not start: {e}");
                lock(&svc.log).push(run, "stderr", Bytes::from(format!("paddock: {msg}\n")));
                for r in on_running.drain(..) {
                    let _ = r.send(());
                }
                RunEnd {
                    exit_code: None,
                    status: msg,
                    stop: false,
                    restart: false,
                    replies: Vec::new(),
                }
            }
        };
        let failed = end.exit_code != Some(0);
        svc.set(|s| {
            s.pid = None;
            s.last_exit = Some(LastExit {
                exit_code: end.exit_code,
                status: end.status.clone(),
                at_unix_ms: now_ms(),
            });
        });
        if started.elapsed() >= BACKOFF_RESET {
            backoff = BACKOFF_INITIAL;
        }
        let mut stopped = end.stop;
        let mut stay_down = stopped || (svc.spec.restart == Policy::OnFailure && !failed);
        let now = end.restart;
        for r in end.replies {
            if end.restart {
                on_running.push(r);
            } else {
                let _ = r.send(());
            }
        }
        if svc.gone.is_cancelled() {
            return;
        }
        if !stay_down && !now {
            // Wait out the pause, still answering requests.
            let wake = tokio::time::Instant::now() + backoff;
            svc.set(|s| {
                s.state = State::Backoff;
                s.next_start_in_ms = Some(backoff.as_millis() as u64);
            });
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = svc.gone.cancelled() => return,
                c = rx.recv() => match c {
                    None => return,
                    Some(Ctl::Stop(r)) => { let _ = r.send(()); stay_down = true; stopped = true; }
                    Some(Ctl::Start(r) | Ctl::Restart(r)) => on_running.push(r),
                },
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            if !stay_down {
                svc.set(|s| s.restarts += 1);
            }
        }
        if stay_down {
            svc.set(|s| {
                s.state = if stopped {
                    State::Stopped
                } else {
                    State::Exited
                };
                s.next_start_in_ms = None;
                if s.health != HealthState::None {
                    s.health = HealthState::Unknown;
                }
            });
            // Wait for a start or restart; stops are answered at once.
            loop {
                tokio::select! {
                    _ = svc.gone.cancelled() => return,
                    c = rx.recv() => match c {
                        None => return,
                        Some(Ctl::Stop(r)) => { let _ = r.send(()); }
                        Some(Ctl::Start(r) | Ctl::Restart(r)) => { on_running.push(r); break; }
                    },
                }
            }
            backoff = BACKOFF_INITIAL;
        }
    }
}

fn start_process(
    procs: &Procs,
    svc: &Service,
) -> Result<Arc<crate::procs::Proc>, connectrpc::ConnectError> {
    let user = users::by_name_or_default(svc.spec.user.as_deref())
        .map_err(|e| connectrpc::ConnectError::invalid_argument(e.to_string()))?;
    let (cmd, args) = svc
        .spec
        .cmd
        .split_first()
        .ok_or_else(|| connectrpc::ConnectError::invalid_argument("cmd is empty"))?;
    let req = StartRequest {
        process: ProcessConfig {
            cmd: cmd.clone(),
            args: args.to_vec(),
            envs: svc.spec.env.clone().into_iter().collect(),
            cwd: svc.spec.cwd.clone(),
            ..Default::default()
        }
        .into(),
        tag: Some(format!("service:{}", svc.spec.name)),
        stdin: Some(false),
        ..Default::default()
    };
    procs.start_listed(&req, &user)
}

/// Copies one run's output into the log until the process ends, answering requests: a stop
/// or restart sends SIGTERM to the group and SIGKILL to the tree after [`STOP_GRACE`].
async fn follow(
    procs: &Procs,
    svc: &Service,
    p: Arc<crate::procs::Proc>,
    run: u64,
    rx: &mut mpsc::UnboundedReceiver<Ctl>,
) -> RunEnd {
    let mut events = Box::pin(Procs::follow(p.clone()));
    let mut end = RunEnd {
        exit_code: None,
        status: "error".into(),
        stop: false,
        restart: false,
        replies: Vec::new(),
    };
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut gone = false;
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(pe)) => match pe.event {
                    Some(Event::Data(d)) => {
                        let (stream, b) = match d.output {
                            Some(Output::Stdout(b)) => ("stdout", b),
                            Some(Output::Stderr(b)) => ("stderr", b),
                            Some(Output::Pty(b)) => ("stdout", b),
                            None => continue,
                        };
                        lock(&svc.log).push(run, stream, Bytes::from(b));
                    }
                    Some(Event::End(e)) => {
                        end.exit_code = e.exited.then_some(e.exit_code);
                        end.status = e.status.clone();
                        return end;
                    }
                    _ => {}
                },
                Some(Err(e)) => {
                    end.status = format!("lost: {e}");
                    return end;
                }
                None => return end,
            },
            c = rx.recv(), if !gone => {
                let r = match c {
                    None => { gone = true; None }
                    Some(Ctl::Start(r)) => { let _ = r.send(()); None }
                    Some(Ctl::Stop(r)) => { end.stop = true; end.restart = false; Some(r) }
                    Some(Ctl::Restart(r)) => { end.restart = !end.stop; Some(r) }
                };
                if let Some(r) = r {
                    end.replies.push(r);
                    if kill_at.is_none() {
                        let _ = procs.signal_group(&p, libc::SIGTERM);
                        kill_at = Some(tokio::time::Instant::now() + STOP_GRACE);
                    }
                }
            }
            _ = svc.gone.cancelled(), if kill_at.is_none() => {
                end.stop = true;
                let _ = procs.signal_group(&p, libc::SIGTERM);
                kill_at = Some(tokio::time::Instant::now() + STOP_GRACE);
            }
            _ = async { tokio::time::sleep_until(kill_at.unwrap_or_else(tokio::time::Instant::now)).await }, if kill_at.is_some() => {
                p.kill_tree();
                let _ = procs.signal_group(&p, libc::SIGKILL);
                kill_at = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> Result<Spec, String> {
        let s: Spec = serde_json::from_value(v).map_err(|e| e.to_string())?;
        s.validate().map(|()| s)
    }

    #[test]
    fn specs_are_checked() {
        assert!(
            spec(serde_json::json!({"name": "web", "cmd": ["x"], "restart": "always"})).is_ok()
        );
        let h = spec(
            serde_json::json!({"name": "w", "cmd": ["x"], "restart": "on-failure",
            "health": {"port": 80}}),
        )
        .unwrap();
        assert_eq!(h.health.unwrap().interval_ms, HEALTH_INTERVAL_DEFAULT_MS);
        for (bad, needle) in [
            (
                serde_json::json!({"name": "web", "cmd": ["x"], "restart": "sometimes"}),
                "unknown variant",
            ),
            (
                serde_json::json!({"name": "Web", "cmd": ["x"], "restart": "always"}),
                "cannot name",
            ),
            (
                serde_json::json!({"name": "web", "cmd": [], "restart": "always"}),
                "empty",
            ),
            (
                serde_json::json!({"name": "web", "cmd": ["a\u{0}"], "restart": "always"}),
                "NUL",
            ),
            (
                serde_json::json!({"name": "web", "cmd": ["x"], "restart": "always",
                "health": {"port": 0}}),
                "exactly one",
            ),
            (
                serde_json::json!({"name": "web", "cmd": ["x"], "restart": "always",
                "health": {"cmd": "true", "interval_ms": 5}}),
                "interval_ms",
            ),
        ] {
            let e = spec(bad.clone()).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn the_log_is_bounded() {
        let mut log = Log::default();
        for i in 0..(LOG_CAP / 1024 + 10) {
            log.push(1 + (i as u64 % 3), "stdout", Bytes::from(vec![b'x'; 1024]));
        }
        assert!(log.bytes <= LOG_CAP);
        assert_eq!(log.next_seq as usize, LOG_CAP / 1024 + 10);
        assert_eq!(log.chunks.front().map(|c| c.0), Some(10));
    }
}
