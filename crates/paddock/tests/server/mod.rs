//! Test harness for the API server: starts the real `paddock serve` binary on a free port
//! with a fresh data directory, and talks to it over HTTP.

#![allow(dead_code, unreachable_pub)] // Each test binary uses a different subset.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

pub mod e2b;
pub mod venv;

// A binary that uses both harnesses (network) gets two copies of it: harmless.
#[allow(clippy::duplicate_mod)]
#[path = "../support/mod.rs"]
mod support;
pub use support::*;

/// A running `paddock serve`.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    pub admin_key: String,
    pub data: PathBuf,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    pub http: reqwest::Client,
    /// Where the server's stderr goes (`start_capturing_stderr`); inherited otherwise.
    pub stderr_file: Option<PathBuf>,
}

/// A fresh data directory (removed, with its mounts, when the server is dropped).
fn fresh_data_dir() -> PathBuf {
    let id = paddock_core::SandboxId::random();
    let p = PathBuf::from(format!("/var/tmp/paddock-api-{}", &id.as_str()[..10]));
    std::fs::create_dir_all(&p).expect("creating data dir");
    p
}

impl Server {
    /// Starts a server with a fresh data directory and extra `serve` flags.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_with(extra, false)
    }

    /// Like `start`, with the server's stderr (its log) written to `stderr_file` (a file
    /// next to the data directory) so a test can read it.
    pub fn start_capturing_stderr(extra: &[&str]) -> Server {
        Server::start_with(extra, true)
    }

    fn start_with(extra: &[&str], capture: bool) -> Server {
        Server::start_with_env(extra, capture, &[])
    }

    /// Like `start` (or `start_capturing_stderr` with `capture`), with extra environment
    /// variables for the server (set after the harness's own, so they override them).
    pub fn start_with_env(extra: &[&str], capture: bool, env: &[(&str, &str)]) -> Server {
        let data = fresh_data_dir();
        let stderr_file = capture.then(|| data.with_extension("stderr"));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let (child, url, key) = spawn(&data, extra, stderr_file.as_deref(), &env);
        Server {
            env,
            stderr_file,
            child: Some(child),
            url,
            admin_key: key.expect("a fresh data dir prints the admin key"),
            data,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("http client"),
        }
    }

    /// Starts the server again on the same data directory (after `kill9` or `stop`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "server still running");
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let (child, url, key) = spawn(&self.data, &extra, self.stderr_file.as_deref(), &self.env);
        assert!(key.is_none(), "a restart must not make a new admin key");
        self.child = Some(child);
        self.url = url;
    }

    /// `kill -9` the server process.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let pid = rustix::process::Pid::from_raw(c.id() as i32)?;
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        for _ in 0..300 {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A request with the admin key.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.req_as(&self.admin_key, method, path)
    }

    /// A request with `key`.
    pub fn req_as(&self, key: &str, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(key)
    }

    /// Creates a sandbox with the admin key and returns its JSON.
    pub async fn create(&self, body: Value) -> Value {
        self.create_as(&self.admin_key, body).await
    }

    pub async fn create_as(&self, key: &str, body: Value) -> Value {
        let r = self
            .req_as(key, Method::POST, "/v1/sandboxes")
            .json(&body)
            .send()
            .await
            .expect("create request");
        let (st, v) = (r.status(), r.json::<Value>().await.expect("create json"));
        assert_eq!(st, StatusCode::CREATED, "create failed: {v}");
        v
    }

    /// Creates a key and returns (id, secret).
    pub async fn new_key(&self, body: Value) -> (String, String) {
        let r = self
            .req(Method::POST, "/v1/keys")
            .json(&body)
            .send()
            .await
            .expect("key request");
        let (st, v) = (r.status(), r.json::<Value>().await.expect("key json"));
        assert_eq!(st, StatusCode::CREATED, "key create failed: {v}");
        (
            v["id"].as_str().expect("id").to_owned(),
            v["key"].as_str().expect("key").to_owned(),
        )
    }
}

/// Sends a request and returns status and JSON body (Null if the body is not JSON).
pub async fn call(rb: RequestBuilder) -> (StatusCode, Value) {
    let r = rb.send().await.expect("request");
    let st = r.status();
    let text = r.text().await.unwrap_or_default();
    (st, serde_json::from_str(&text).unwrap_or(Value::Null))
}

// The child is waited for by `Server::stop`/`kill9`/`Drop`.
#[allow(clippy::zombie_processes)]
fn spawn(
    data: &Path,
    extra: &[&str],
    stderr: Option<&Path>,
    env: &[(String, String)],
) -> (Child, String, Option<String>) {
    require_root("this test binary (a real `paddock serve`)");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_paddock"));
    cmd.arg("--data-dir")
        .arg(data)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--on-shutdown", "destroy"])
        .args(extra)
        .env("PADDOCK_AGENT_BIN", env!("CARGO_BIN_EXE_paddock-agent"))
        .env("PADDOCK_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(match stderr {
            Some(p) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .expect("server stderr file"),
            ),
            None => Stdio::inherit(),
        });
    let mut child = cmd.spawn().expect("spawning paddock serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Keep draining so the server never blocks on a full pipe.
                continue;
            }
        }
    });
    let mut key = None;
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("paddock serve did not print its address within 60 s");
        if let Some(k) = line.strip_prefix("PADDOCK_API_KEY=") {
            key = Some(k.to_owned());
        }
        if let Some(u) = line.strip_prefix("paddock: listening on ") {
            return (child, u.to_owned(), key);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        // The runtime leaves its btrfs image mounted; unmount it so the directory can go.
        let layers = self.data.join("layers");
        let _ = Command::new("umount").arg("-l").arg(&layers).status();
        let _ = std::fs::remove_dir_all(&self.data);
        if let Some(f) = &self.stderr_file {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Cgroup directories of sandbox `id` anywhere under Paddock's prefixes.
pub fn cgroups_of(id: &str) -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup/paddock")];
    for c in ["memory", "pids", "cpu", "cpuacct", "freezer"] {
        roots.push(PathBuf::from(format!("/sys/fs/cgroup/{c}/paddock")));
    }
    let mut out = Vec::new();
    for r in roots {
        for inst in std::fs::read_dir(&r).into_iter().flatten().flatten() {
            let p = inst.path().join(id);
            if p.exists() {
                out.push(p);
            }
        }
    }
    out
}

/// Whether `pid` is a zombie (exited, waiting for its parent to reap it).
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s[s.rfind(')')? + 2..].starts_with('Z')))
        .unwrap_or(true)
}

/// Live host processes whose cgroup path names sandbox `id`.
pub fn processes_of(id: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|c| c.contains(&format!("/{id}")))
                && !is_zombie(*pid)
        })
        .collect()
}

/// Mounts whose line names sandbox `id`.
pub fn mounts_of(id: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(id))
        .map(str::to_owned)
        .collect()
}

/// Everything of sandbox `id` left on the host.
pub fn leftovers(id: &str) -> Vec<String> {
    let mut v: Vec<String> = cgroups_of(id)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    v.extend(processes_of(id).iter().map(|p| format!("process {p}")));
    v.extend(mounts_of(id));
    v
}

/// Waits for `child` at most `timeout`, killing it past that; `None` when it was killed.
pub fn wait_or_kill(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("waiting for a child") {
            return Some(st);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Asserts that within 10 s the server lists no sandbox (every one `what` made was killed).
pub async fn assert_no_sandboxes_left(s: &Server, what: &str) {
    eventually(
        Duration::from_secs(10),
        &format!("sandboxes left running after {what}"),
        || async {
            let (st, v) = call(s.req(Method::GET, "/v1/sandboxes")).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            let left = &v["sandboxes"];
            done_when(left.as_array().is_some_and(Vec::is_empty), left)
        },
    )
    .await;
}

/// Points an E2B SDK program at the server: `E2B_API_URL` and `E2B_SANDBOX_URL` are `url`,
/// `E2B_API_KEY` is `key`, `E2B_DOMAIN` is `domain` (or unset); the SDKs' debug and token
/// overrides are unset, and so are proxies from the environment (everything goes to
/// 127.0.0.1, nothing may get in between).
pub fn e2b_env(cmd: &mut Command, url: &str, key: &str, domain: Option<&str>) {
    cmd.env("E2B_API_URL", url)
        .env("E2B_SANDBOX_URL", url)
        // The SDKs' volume content API defaults to `https://api.{domain}`; here it is the
        // same server (docs/volumes.md).
        .env("E2B_VOLUME_API_URL", url)
        .env("E2B_API_KEY", key);
    match domain {
        Some(d) => cmd.env("E2B_DOMAIN", d),
        None => cmd.env_remove("E2B_DOMAIN"),
    };
    for var in [
        "E2B_DEBUG",
        "E2B_ACCESS_TOKEN",
        "NODE_OPTIONS",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
}

/// One PTY session over the websocket at `url` (`ws://…/v1/sandboxes/{id}/pty?…`) with the
/// API key `key`: sends `frames` (JSON text frames are control messages, binary frames
/// input), then reads until the server closes or no frame comes for 20 s. Returns the
/// output as text and the `exit` frame, if one came.
pub async fn pty_session(
    url: &str,
    key: &str,
    frames: Vec<tokio_tungstenite::tungstenite::Message>,
) -> (String, Option<Value>) {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .expect("ws request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("ws connect");
    for f in frames {
        ws.send(f).await.expect("sending a frame");
    }
    let (mut out, mut exit) = (Vec::new(), None);
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
        match m {
            Message::Binary(b) => out.extend_from_slice(&b),
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).expect("text frame json");
                if v["type"] == "exit" {
                    exit = Some(v);
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), exit)
}
