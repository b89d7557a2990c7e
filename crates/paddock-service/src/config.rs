//! Server configuration: the validated settings every other module trusts.
//!
//! The binary parses flags and environment variables (clap) into [`ServerConfig`] and calls
//! [`ServerConfig::validate`] once at start; later code never re-checks these values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default time a foreground command may run when it names no `timeout` (the server's
/// `--exec-timeout`).
pub const DEFAULT_EXEC_TIMEOUT_SECS: u64 = 60;
/// Longest time a command may run.
pub const MAX_EXEC_TIMEOUT_SECS: u64 = 24 * 3600;

/// Everything `paddock serve` can be told. Defaults are the embedded single-host setup.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address of the API listener.
    pub listen: SocketAddr,
    /// Data directory: the SQLite store, templates and sandbox layers.
    pub data_dir: PathBuf,
    /// Path of the agent binary started in every sandbox.
    pub agent_bin: PathBuf,
    /// Timeout of a sandbox whose create request names none.
    pub default_timeout: Duration,
    /// Largest timeout a client may ask for (create or set-timeout).
    pub max_timeout: Duration,
    /// How long a paused sandbox is kept before it is destroyed (reason `expired`).
    pub paused_retention: Duration,
    /// Time limit of a REST exec that names none (foreground only; a background exec has no
    /// limit of its own unless it names one).
    pub exec_timeout: Duration,
    /// Points of the timeout, as fractions of it, at which a `timeout_warning` event is sent.
    pub warn_at: Vec<f64>,
    /// Largest JSON request body.
    pub max_json_body: usize,
    /// Largest per-stream output an exec returning JSON captures (the rest is truncated).
    pub max_output: usize,
    /// Default maximum of concurrently running sandboxes per key (a key may override it).
    pub max_sandboxes_per_key: u32,
    /// Requests per second each key may make on average.
    pub rate_per_sec: f64,
    /// Requests a key may make in a burst above the average rate.
    pub rate_burst: f64,
    /// Requests per second on average to the sandboxes of each key through the E2B data
    /// plane and the port proxy (a bucket of its own, apart from the REST one).
    pub data_rate_per_sec: f64,
    /// Burst of the data-plane rate.
    pub data_rate_burst: f64,
    /// Time a client has to send the request head.
    pub header_timeout: Duration,
    /// Longest a request body may pause between chunks.
    pub body_idle_timeout: Duration,
    /// How often the CPU and memory of every running sandbox are sampled (E2B metrics).
    pub sample_interval: Duration,
    /// Domain under which sandbox ports are served as `{port}-{id}.{domain}`.
    pub domain: String,
    /// Base URL clients use to reach this server (for URLs the API prints).
    pub public_url: String,
    /// Limits of a sandbox whose create request names none.
    pub default_limits: paddock_core::Limits,
    /// Key of the HMAC-SHA256 signature on webhook deliveries (`X-Paddock-Signature`).
    pub webhook_secret: Option<String>,
    /// Upstream DNS server of sandbox resolvers (None: the host's first nameserver).
    pub dns_upstream: Option<SocketAddr>,
    /// Prepared network slots kept for networked creates (`docs/network.md`; 0: none, at
    /// most `paddock_runtime::MAX_NET_SLOTS`).
    pub net_slots: usize,
    /// Where the DNS responder for `*.{domain}` listens (None: no responder; `dns`).
    pub dns_listen: Option<SocketAddr>,
    /// The address the responder answers for every name under the domain (None: the
    /// listen address's IP when it is a specific IPv4 address, else 127.0.0.1).
    pub dns_answer: Option<std::net::Ipv4Addr>,
    /// Isolation backend of a sandbox whose request and template name none
    /// (`--isolation-default`).
    pub isolation_default: paddock_core::Isolation,
    /// TLS certificate chain and private key (PEM). With them the listener speaks HTTPS
    /// only, HTTP/2 and HTTP/1.1 by ALPN.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The master key of tenant secrets (`--secrets-key-file` or `PADDOCK_SECRETS_KEY`).
    /// None: the secret routes answer 503 saying how to configure one.
    pub secrets_key: Option<crate::secrets::keyring::MasterKey>,
    /// The store (`fleet::open_store`); None: `<data>/paddock.db`.
    pub database_url: Option<String>,
    /// Set when this server is a node of a fleet (`paddock node`).
    pub node: Option<crate::fleet::NodeConfig>,
    /// Warm pool sizes per template at start (`--pool TEMPLATE=N`, `crate::pools`).
    pub pools: std::collections::BTreeMap<String, crate::pools::PoolSize>,
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl ServerConfig {
    /// The defaults for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: data_dir.into(),
            agent_bin: paddock_runtime::default_agent_bin(),
            default_timeout: Duration::from_secs(300),
            max_timeout: Duration::from_secs(24 * 3600),
            paused_retention: Duration::from_secs(30 * 24 * 3600),
            exec_timeout: Duration::from_secs(DEFAULT_EXEC_TIMEOUT_SECS),
            warn_at: vec![0.5, 5.0 / 6.0],
            max_json_body: 1 << 20,
            max_output: 4 << 20,
            max_sandboxes_per_key: 100,
            rate_per_sec: 200.0,
            rate_burst: 400.0,
            data_rate_per_sec: 2000.0,
            data_rate_burst: 4000.0,
            header_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
            sample_interval: Duration::from_secs(5),
            domain: "localhost".into(),
            public_url: "http://127.0.0.1:7070".into(),
            default_limits: paddock_core::Limits::default(),
            webhook_secret: None,
            dns_upstream: None,
            net_slots: 4,
            dns_listen: None,
            dns_answer: None,
            isolation_default: paddock_core::Isolation::Native,
            tls: None,
            secrets_key: None,
            database_url: None,
            node: None,
            pools: std::collections::BTreeMap::new(),
        }
    }

    /// The address the DNS responder answers with (`dns_answer`, else the API's listen
    /// address when it is a specific IPv4 address, else loopback).
    pub fn dns_answer_ip(&self) -> std::net::Ipv4Addr {
        self.dns_answer.unwrap_or(match self.listen.ip() {
            std::net::IpAddr::V4(ip) if !ip.is_unspecified() => ip,
            _ => std::net::Ipv4Addr::LOCALHOST,
        })
    }

    /// Checks every setting; the message names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        if self.default_timeout.is_zero() || self.default_timeout > self.max_timeout {
            return bad(format!(
                "default timeout {}s must be between 1s and the maximum timeout {}s",
                self.default_timeout.as_secs(),
                self.max_timeout.as_secs()
            ));
        }
        if self.paused_retention.is_zero() {
            return bad("the paused retention must be at least 1s".into());
        }
        let max_exec = MAX_EXEC_TIMEOUT_SECS;
        if self.exec_timeout.is_zero() || self.exec_timeout.as_secs() > max_exec {
            return bad(format!(
                "exec timeout {}s must be between 1s and {max_exec}s",
                self.exec_timeout.as_secs()
            ));
        }
        if self.net_slots > paddock_runtime::MAX_NET_SLOTS {
            return bad(format!(
                "--net-slots {} is more than the maximum {}",
                self.net_slots,
                paddock_runtime::MAX_NET_SLOTS
            ));
        }
        if self.sample_interval < Duration::from_secs(1) {
            return bad("the metrics sampling interval must be at least 1s".into());
        }
        if let Some(w) = self.warn_at.iter().find(|w| !(**w > 0.0 && **w < 1.0)) {
            return bad(format!(
                "warning point {w} must be a fraction of the timeout between 0 and 1"
            ));
        }
        if self.max_json_body < 1024 {
            return bad("the JSON body limit must be at least 1024 bytes".into());
        }
        if self.max_output == 0 {
            return bad("the output limit must be positive".into());
        }
        if self.rate_per_sec.is_nan() || self.rate_per_sec <= 0.0 || self.rate_burst < 1.0 {
            return bad("the rate limit must be positive with a burst of at least 1".into());
        }
        if self.data_rate_per_sec.is_nan()
            || self.data_rate_per_sec <= 0.0
            || self.data_rate_burst < 1.0
        {
            return bad(
                "the data-plane rate limit must be positive with a burst of at least 1".into(),
            );
        }
        if self.domain.is_empty() || self.domain.contains(['/', ':', ' ']) {
            return bad(format!("domain {:?} is not a host name", self.domain));
        }
        match self.public_url.split_once("://") {
            Some(("http" | "https", rest)) if !rest.is_empty() && !rest.contains(' ') => {}
            _ => {
                return bad(format!(
                    "public URL {:?} must be http://HOST[:PORT] or https://HOST[:PORT]",
                    self.public_url
                ));
            }
        }
        if !self.agent_bin.is_file() {
            return bad(format!(
                "agent binary {} not found (build it with `cargo build --release`, or set PADDOCK_AGENT_BIN)",
                self.agent_bin.display()
            ));
        }
        self.default_limits
            .validate(u64::MAX)
            .map_err(|e| ConfigError(format!("default limits: {e}")))?;
        crate::pools::check_total(self.pools.values()).map_err(ConfigError)?;
        Ok(())
    }
}
