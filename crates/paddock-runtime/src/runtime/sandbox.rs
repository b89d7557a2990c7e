//! [`Sandbox`]: exec, stats, files through the agent, and its ports.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use connectrpc::client::CallOptions;
use paddock_core::{NetworkMode, NetworkPolicy};
use paddock_envd::process::__buffa::oneof::process_event::Event;
use paddock_envd::process::__buffa::oneof::process_event::data_event::Output;
use paddock_envd::process::__buffa::oneof::process_input::Input;
use paddock_envd::process::__buffa::oneof::process_selector::Selector;
use paddock_envd::process::{
    CloseStdinRequest, ProcessConfig, ProcessInput, ProcessSelector, SendInputRequest, StartRequest,
};

use super::{ExecRequest, ExecResult, ListeningPort, Runtime, Sandbox, Stats, pid_start_time};
use crate::error::{Result, RuntimeError};

impl Sandbox {
    /// Runs a command to completion and collects its output (see [`ExecRequest`]).
    pub async fn exec(&self, req: ExecRequest) -> Result<ExecResult> {
        self.exec_with(req, |_, _| {}).await
    }

    /// [`Sandbox::exec`], also handing every chunk of output to `on_output` as it arrives
    /// (`true` for stderr), e.g. to stream a build's log.
    pub async fn exec_with(
        &self,
        req: ExecRequest,
        mut on_output: impl FnMut(bool, &[u8]),
    ) -> Result<ExecResult> {
        let Some((cmd, args)) = req.argv.split_first() else {
            return Err(RuntimeError::InvalidArgument {
                what: "command",
                reason: "empty command".into(),
            });
        };
        let cap = req.max_output.unwrap_or(16 << 20);
        let start_req = StartRequest {
            process: ProcessConfig {
                cmd: cmd.clone(),
                args: args.to_vec(),
                envs: req
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                cwd: req.cwd.clone(),
                ..Default::default()
            }
            .into(),
            stdin: Some(req.stdin.is_some()),
            ..Default::default()
        };
        let mut opts = self.call_options(req.user.as_deref());
        if let Some(t) = req.timeout {
            opts = opts.with_timeout(t);
        }
        let oom_before = self.oom_kills();
        let t0 = Instant::now();
        let mut stream = self
            .agent
            .process
            .start_with_options(start_req, opts)
            .await?;
        let mut res = ExecResult::default();
        loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m.to_owned_message(),
                Ok(None) => break,
                Err(e) if e.code == connectrpc::ErrorCode::DeadlineExceeded => {
                    res.timed_out = true;
                    res.status = "timeout".into();
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            let Some(ev) = msg.event.as_option().and_then(|e| e.event.clone()) else {
                continue;
            };
            match ev {
                Event::Start(s) => {
                    res.pid = s.pid;
                    if let Some(input) = &req.stdin {
                        self.feed_stdin(s.pid, input.clone(), req.user.as_deref())
                            .await?;
                    }
                }
                Event::Data(d) => match d.output {
                    Some(Output::Stdout(b)) => {
                        on_output(false, &b);
                        append(&mut res.stdout, &mut res.stdout_truncated, &b, cap)
                    }
                    Some(Output::Stderr(b)) | Some(Output::Pty(b)) => {
                        on_output(true, &b);
                        append(&mut res.stderr, &mut res.stderr_truncated, &b, cap)
                    }
                    None => {}
                },
                Event::End(e) => {
                    res.exit_code = e.exited.then_some(e.exit_code);
                    res.status = e.status.clone();
                }
                Event::Keepalive(_) => {}
            }
        }
        res.duration = t0.elapsed();
        res.oom_killed = self.oom_kills() > oom_before;
        Ok(res)
    }

    async fn feed_stdin(&self, pid: u32, data: Vec<u8>, user: Option<&str>) -> Result<()> {
        let sel = || ProcessSelector {
            selector: Some(Selector::Pid(pid)),
            ..Default::default()
        };
        if !data.is_empty() {
            let req = SendInputRequest {
                process: sel().into(),
                input: ProcessInput {
                    input: Some(Input::Stdin(data)),
                    ..Default::default()
                }
                .into(),
                ..Default::default()
            };
            self.agent
                .process
                .send_input_with_options(req, self.call_options(user))
                .await?;
        }
        let req = CloseStdinRequest {
            process: sel().into(),
            ..Default::default()
        };
        self.agent
            .process
            .close_stdin_with_options(req, self.call_options(user))
            .await?;
        Ok(())
    }

    /// Call options that act as `user` (or the sandbox's default user).
    pub fn call_options(&self, user: Option<&str>) -> CallOptions {
        use base64::Engine;
        let u = user.unwrap_or(&self.user);
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:"));
        CallOptions::default().with_header(http::header::AUTHORIZATION, format!("Basic {b}"))
    }

    /// Cumulative CPU time (ns) and memory in use (bytes): cheap (cgroup files only), unlike
    /// [`Sandbox::stats`], whose disk figure asks btrfs.
    pub fn cpu_and_memory(&self) -> (u64, u64) {
        let c = self.cgroups.stats(self.id.as_str());
        (c.cpu_usage_ns, c.memory_bytes)
    }

    /// How many times the OOM killer struck in the sandbox (one cgroup file).
    pub fn oom_kills(&self) -> u64 {
        self.cgroups.oom_kills(self.id.as_str())
    }

    /// What metering adds besides CPU and memory: bytes the sandbox's layer references (the
    /// qgroup's figure as of the last commit, [`crate::layers::Layers::referenced`]) and
    /// bytes the sandbox sent out of its network link (the host end's received bytes; 0
    /// without a link). Cheap: sysfs files and two ioctls.
    pub fn disk_and_egress(&self, runtime: &Runtime) -> (u64, u64) {
        let disk = runtime.layers.referenced(self.id.as_str()).unwrap_or(0);
        let egress = std::fs::read_to_string(format!(
            "/sys/class/net/{}/statistics/rx_bytes",
            crate::net::ifname(self.slot)
        ))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
        (disk, egress)
    }

    /// Current usage.
    pub fn stats(&self, runtime: &Runtime) -> Stats {
        let c = self.cgroups.stats(self.id.as_str());
        Stats {
            cpu_usage_ns: c.cpu_usage_ns,
            memory_bytes: c.memory_bytes,
            pids: c.pids,
            oom_kills: c.oom_kills,
            disk_bytes: runtime.layers.usage(self.id.as_str()),
        }
    }

    /// Reads a file inside the sandbox as `user` (agent `GET /files`). The agent resolves the
    /// path inside the sandbox root, so symlinks cannot lead to host files.
    pub async fn read_file(&self, path: &str, user: Option<&str>) -> Result<Vec<u8>> {
        let uri = files_uri(path, user.unwrap_or(&self.user));
        let req = http::Request::get(uri)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .map_err(|e| RuntimeError::InvalidArgument {
                what: "file path",
                reason: e.to_string(),
            })?;
        self.files_request(req).await
    }

    /// Writes a file inside the sandbox as `user` (agent `POST /files`, octet-stream),
    /// creating parent directories.
    pub async fn write_file(&self, path: &str, data: Vec<u8>, user: Option<&str>) -> Result<()> {
        let uri = files_uri(path, user.unwrap_or(&self.user));
        let req = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(http_body_util::Full::new(bytes::Bytes::from(data)))
            .map_err(|e| RuntimeError::InvalidArgument {
                what: "file path",
                reason: e.to_string(),
            })?;
        self.files_request(req).await.map(|_| ())
    }

    /// Sends one HTTP/1.1 request to the sandbox's agent over its unix socket and returns
    /// the response as soon as its head arrives; both bodies stream, so neither side is
    /// ever buffered whole here. The primitive behind [`Sandbox::read_file`] and
    /// [`Sandbox::write_file`], and what the API server uses to forward `/files` and
    /// `/archive` requests.
    ///
    /// The request goes out as given: the caller sets the path and query (the URI's
    /// authority is ignored by the agent), the user (`username` parameter or
    /// [`Sandbox::call_options`]' `Authorization` header) and any content headers. It
    /// shares the envd clients' pool of kept-alive connections (`client`): an idle one is
    /// reused, so a request pays no connect or handshake; a connection whose response body
    /// was dropped unread is closed, not reused. Agent errors come back as ordinary responses (JSON
    /// `{"code", "message"}`); only a failure to reach the agent or a broken exchange is an
    /// `Err`.
    pub async fn agent_request<B>(
        &self,
        req: http::Request<B>,
    ) -> Result<http::Response<hyper::body::Incoming>>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use http_body_util::BodyExt as _;
        let failed = |e: crate::client::TransportError| RuntimeError::Io {
            what: "agent request".into(),
            source: std::io::Error::other(e),
        };
        // A body of at most this many bytes is read into memory and sent on the envd
        // clients' pooled connections (no connect or handshake per request once one is
        // idle), again on a new connection if the pooled one was closed under it; a larger
        // or unsized one streams through a connection of its own. The size is the body's
        // own bound, else the request's `Content-Length`: a forwarded request's body (the
        // E2B data plane's, behind the server's idle-timeout wrapper) has no bound of its
        // own, and its `process.Start` would otherwise pay a connect and a handshake.
        const BUFFERED_MAX: u64 = 1 << 20;
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if req
            .body()
            .size_hint()
            .upper()
            .or(declared)
            .is_some_and(|n| n <= BUFFERED_MAX)
        {
            let (head, body) = req.into_parts();
            // Never more than the bound, whatever the body turns out to hold.
            let body = http_body_util::Limited::new(body, BUFFERED_MAX as usize)
                .collect()
                .await
                .map_err(|e| RuntimeError::Io {
                    what: "agent request body".into(),
                    source: std::io::Error::other(e),
                })?
                .to_bytes();
            return self
                .agent
                .transport
                .send_buffered(&head, body)
                .await
                .map_err(failed);
        }
        let req = req.map(|b| {
            SyncBody(std::sync::Mutex::new(Box::pin(b)))
                .map_err(|e| connectrpc::ConnectError::internal(e.into().to_string()))
                .boxed()
        });
        self.agent
            .transport
            .send_streamed(req)
            .await
            .map_err(failed)
    }

    /// Replaces the env vars every process of the sandbox starts with from now on (a pooled
    /// sandbox being handed out).
    pub(super) async fn set_env(
        &self,
        env: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let body = serde_json::to_vec(env).map_err(RuntimeError::encode("sandbox env"))?;
        let req = http::Request::post("/paddock/env")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| RuntimeError::InvalidArgument {
                what: "sandbox env",
                reason: e.to_string(),
            })?;
        self.files_request(req).await.map(|_| ())
    }

    async fn files_request(
        &self,
        req: http::Request<http_body_util::Full<bytes::Bytes>>,
    ) -> Result<Vec<u8>> {
        use http_body_util::BodyExt;
        let resp = self.agent_request(req).await?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| RuntimeError::Io {
                what: "agent response".into(),
                source: std::io::Error::other(e),
            })?
            .to_bytes()
            .to_vec();
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            let code = match status.as_u16() {
                404 => connectrpc::ErrorCode::NotFound,
                400 => connectrpc::ErrorCode::InvalidArgument,
                401 => connectrpc::ErrorCode::Unauthenticated,
                403 => connectrpc::ErrorCode::PermissionDenied,
                507 => connectrpc::ErrorCode::ResourceExhausted,
                _ => connectrpc::ErrorCode::Internal,
            };
            return Err(RuntimeError::Agent(connectrpc::ConnectError::new(
                code, msg,
            )));
        }
        Ok(body)
    }

    /// The sandbox's current network policy.
    pub fn network(&self) -> NetworkPolicy {
        self.network.lock().expect("network poisoned").clone()
    }

    /// The sandbox's address on its link (`None` in mode `none`).
    pub fn address(&self) -> Option<std::net::Ipv4Addr> {
        (self.network().mode != NetworkMode::None).then(|| crate::net::sandbox_addr(self.slot))
    }

    /// Opens a TCP connection to `port` on the sandbox's own loopback, whatever its network
    /// mode (even with no network at all): the socket is created inside the sandbox's network
    /// namespace and then connected from here.
    ///
    /// The namespace switch happens on a short-lived thread of its own, so no thread that
    /// serves anything else is ever left in the sandbox's namespace, whatever fails.
    pub async fn connect_port(
        &self,
        port: u16,
        timeout: Duration,
    ) -> Result<tokio::net::TcpStream> {
        let ns = self.netns_fd()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("paddock-netns".into())
            .spawn(move || {
                let r = (|| -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
                    rustix::thread::move_into_link_name_space(
                        std::os::fd::AsFd::as_fd(&ns),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )?;
                    // One socket per family: a server bound to `localhost` may be on ::1 only.
                    let mk = |af| {
                        rustix::net::socket_with(
                            af,
                            rustix::net::SocketType::STREAM,
                            rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
                            None,
                        )
                    };
                    Ok((
                        mk(rustix::net::AddressFamily::INET)?,
                        mk(rustix::net::AddressFamily::INET6)?,
                    ))
                })();
                let _ = tx.send(r);
            })
            .map_err(RuntimeError::io("starting netns thread"))?;
        let (v4, v6) = rx
            .await
            .map_err(|_| RuntimeError::io("netns thread")(std::io::Error::other("thread died")))?
            .map_err(RuntimeError::io("socket in sandbox network"))?;
        let attempt = |fd: std::os::fd::OwnedFd, addr: std::net::SocketAddr| async move {
            let sock = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
            match tokio::time::timeout(timeout, sock.connect(addr)).await {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )),
            }
        };
        let first = attempt(v4, std::net::SocketAddr::from(([127, 0, 0, 1], port))).await;
        let r = match first {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => attempt(
                v6,
                std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
            )
            .await
            .map_err(|_| e),
            other => other,
        };
        match r {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(RuntimeError::PortClosed {
                port,
                reason: "connect timed out".into(),
            }),
            Err(e) => Err(RuntimeError::PortClosed {
                port,
                reason: e.kind().to_string(),
            }),
        }
    }

    /// A descriptor of the sandbox's network namespace: the pidfd of PID 1 when there is one
    /// (never a recycled pid), else `/proc/<pid>/ns/net`.
    fn netns_fd(&self) -> Result<std::os::fd::OwnedFd> {
        if let Some(fd) = &self.pidfd {
            return fd
                .try_clone()
                .map_err(RuntimeError::io("duplicating pidfd"));
        }
        std::fs::File::open(format!("/proc/{}/ns/net", self.pid))
            .map(std::os::fd::OwnedFd::from)
            .map_err(RuntimeError::io("opening network namespace"))
    }

    /// TCP ports something listens on inside the sandbox (IPv4 and IPv6), sorted, without
    /// duplicates. Read from the host through PID 1's `/proc/<pid>/net/tcp{,6}`, which show
    /// the sandbox's network namespace.
    pub fn listening_ports(&self) -> Result<Vec<ListeningPort>> {
        let mut out = Vec::new();
        for (file, v6) in [("tcp", false), ("tcp6", true)] {
            let text = match std::fs::read_to_string(format!("/proc/{}/net/{file}", self.pid)) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(RuntimeError::io("reading listening ports")(e)),
            };
            out.extend(parse_proc_net_tcp(&text, v6));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Whether the sandbox's PID 1 (its agent) is still running. A sandbox whose agent died
    /// (killed by the OOM killer, or crashed) can do nothing more and should be destroyed.
    pub fn is_alive(&self) -> bool {
        let Some(fd) = self.pidfd.as_ref() else {
            return pid_start_time(self.pid).is_some();
        };
        // A pidfd polls readable once its process has exited.
        let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        !matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
    }

    /// Path of the agent's unix socket on the host.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// Host cgroup directories of this sandbox.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.cgroups.dirs(self.id.as_str())
    }
}

fn files_uri(path: &str, user: &str) -> String {
    use std::fmt::Write as _;
    let mut q = String::new();
    for (i, (k, v)) in [("path", path), ("username", user)].iter().enumerate() {
        let _ = write!(q, "{}{k}=", if i == 0 { "" } else { "&" });
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                q.push(b as char);
            } else {
                let _ = write!(q, "%{b:02X}");
            }
        }
    }
    format!("http://agent/files?{q}")
}

fn append(buf: &mut Vec<u8>, truncated: &mut bool, data: &[u8], cap: usize) {
    let room = cap.saturating_sub(buf.len());
    if data.len() > room {
        *truncated = true;
    }
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

/// Parses the LISTEN (state `0A`) rows of `/proc/net/tcp` or `tcp6`.
fn parse_proc_net_tcp(text: &str, v6: bool) -> Vec<ListeningPort> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[3] != "0A" {
            continue;
        }
        let Some((addr, port)) = f[1].split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port, 16) else {
            continue;
        };
        // The kernel prints each 32-bit word in host (little-endian) byte order.
        let words: Vec<u32> = (0..addr.len() / 8)
            .filter_map(|i| u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok())
            .collect();
        let address = if v6 && words.len() == 4 {
            let mut b = [0u8; 16];
            for (i, w) in words.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            std::net::IpAddr::from(b)
        } else if !v6 && words.len() == 1 {
            std::net::IpAddr::from(words[0].to_le_bytes())
        } else {
            continue;
        };
        out.push(ListeningPort { port, address });
    }
    out
}

/// A request body made `Sync` (the pooled transport's boxed body must be; an axum body is
/// only `Send`): only ever polled through `&mut`, so the mutex is never contended.
struct SyncBody<B>(std::sync::Mutex<std::pin::Pin<Box<B>>>);

impl<B: http_body::Body> http_body::Body for SyncBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<http_body::Frame<B::Data>, B::Error>>> {
        self.get_mut()
            .0
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
            .poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .size_hint()
    }
}

#[cfg(test)]
mod proc_net_tests {
    use super::*;

    #[test]
    fn parses_listen_rows() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1\n   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1\n   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 3 1\n";
        let p = parse_proc_net_tcp(v4, false);
        assert_eq!(
            p,
            vec![
                ListeningPort {
                    port: 8080,
                    address: "127.0.0.1".parse().unwrap()
                },
                ListeningPort {
                    port: 22,
                    address: "0.0.0.0".parse().unwrap()
                },
            ]
        );
        let v6 = "  sl  local_address                         remote_address                        st\n   0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 0\n";
        let p = parse_proc_net_tcp(v6, true);
        assert_eq!(
            p,
            vec![ListeningPort {
                port: 3000,
                address: "::1".parse().unwrap()
            }]
        );
    }
}
