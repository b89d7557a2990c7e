//! The `paddock` binary: every role of Paddock in one executable.
//!
//! `paddock serve` runs the API server (see `paddock_server`); `paddock run` and `paddock ps`
//! drive the embedded runtime directly; the client commands (`create`, `exec`, ...) talk to a
//! server over HTTP (see `cli`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use paddock_core::{Limits, parse_size};
use paddock_runtime::{CreateSpec, ExecRequest, Runtime, RuntimeConfig};

mod cli;

#[derive(Parser)]
#[command(
    name = "paddock",
    version,
    about = "Isolated Linux sandboxes in milliseconds"
)]
struct Cli {
    /// Data directory (templates, writable layers) of `serve`, `run` and `ps`; the client
    /// commands never open it.
    #[arg(long, env = "PADDOCK_DATA_DIR", default_value = "/var/lib/paddock")]
    data_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once at start; the size of the `serve` flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run the API server (REST /v1) on the embedded defaults: SQLite in the data
    /// directory, native isolation, 127.0.0.1:7070.
    Serve(ServeCmd),
    /// Run a node of a fleet: sandboxes on this host, registered in the fleet's database,
    /// reachable by control planes only (docs/fleet.md).
    Node(NodeArgs),
    /// Run a control plane of a fleet: the whole API, no runtime; any number of replicas
    /// (docs/fleet.md).
    Control(ControlArgs),
    /// Create a sandbox, run one command in it, print its output, destroy it.
    Run {
        /// Template to start from.
        #[arg(long, default_value = "base")]
        template: String,
        /// Memory limit, e.g. 512M.
        #[arg(long, default_value = "512M")]
        memory: String,
        /// CPU limit in cores, e.g. 1 or 0.5.
        #[arg(long, default_value_t = 1.0)]
        cpus: f64,
        /// Disk limit of the writable layer, e.g. 2G.
        #[arg(long, default_value = "2G")]
        disk: String,
        /// Kill the command after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Run as this user (default `user`).
        #[arg(long)]
        user: Option<String>,
        /// Environment variables, KEY=VALUE.
        #[arg(long = "env", short = 'e')]
        env: Vec<String>,
        /// Isolation backend: native or gvisor.
        #[arg(long, default_value = "native", value_parser = cli::parse_isolation)]
        isolation: paddock_core::Isolation,
        #[command(flatten)]
        data: DataDir,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, required = true)]
        argv: Vec<String>,
    },
    /// List sandboxes present on this host (for reconciliation and debugging).
    Ps {
        #[command(flatten)]
        data: DataDir,
    },
    #[command(flatten)]
    Client(cli::ClientCmd),
}

/// `--data-dir` after the subcommand, for the commands that use it (it overrides the one
/// before the subcommand and `PADDOCK_DATA_DIR`). Client commands do not take it.
#[derive(Args, Debug)]
struct DataDir {
    /// Data directory (templates, writable layers); default `PADDOCK_DATA_DIR` or
    /// /var/lib/paddock.
    #[arg(long = "data-dir", value_name = "DATA_DIR")]
    dir: Option<PathBuf>,
}

/// `paddock serve`: its settings and its database.
#[derive(Args, Debug)]
struct ServeCmd {
    #[command(flatten)]
    serve: ServeArgs,
    /// The database, postgres://USER:PASSWORD@HOST:PORT/DB (docs/database.md); without
    /// it, SQLite in the data directory.
    #[arg(long, env = "PADDOCK_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

/// `paddock serve` settings. Every flag also reads an environment variable.
#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    data: DataDir,
    /// Address to listen on.
    #[arg(long, env = "PADDOCK_LISTEN", default_value = "127.0.0.1:7070")]
    listen: std::net::SocketAddr,
    /// Default sandbox timeout, e.g. 300s, 5m, 1h.
    #[arg(long, env = "PADDOCK_DEFAULT_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    default_timeout: Duration,
    /// Largest timeout a client may ask for.
    #[arg(long, env = "PADDOCK_MAX_TIMEOUT", default_value = "24h", value_parser = parse_duration)]
    max_timeout: Duration,
    /// How long a paused sandbox is kept before it is destroyed, e.g. 30d, 12h.
    #[arg(long, env = "PADDOCK_PAUSED_RETENTION", default_value = "30d", value_parser = parse_duration)]
    paused_retention: Duration,
    /// Time limit of a REST exec that names none (`timeout` in the body); at most 24h. The
    /// CLI's `exec` and background execs have no limit of their own unless given one.
    #[arg(long, env = "PADDOCK_EXEC_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    exec_timeout: Duration,
    /// Timeout warnings, as fractions of the timeout (comma separated).
    #[arg(
        long,
        env = "PADDOCK_WARN_AT",
        default_value = "0.5,0.8333",
        value_delimiter = ','
    )]
    warn_at: Vec<f64>,
    /// Largest JSON request body, e.g. 1M.
    #[arg(long, env = "PADDOCK_MAX_JSON_BODY", default_value = "1M")]
    max_json_body: String,
    /// Largest output per stream an exec returning JSON captures, e.g. 4M.
    #[arg(long, env = "PADDOCK_MAX_OUTPUT", default_value = "4M")]
    max_output: String,
    /// Default maximum of concurrently running sandboxes per API key.
    #[arg(long, env = "PADDOCK_MAX_SANDBOXES_PER_KEY", default_value_t = 100)]
    max_sandboxes_per_key: u32,
    /// Requests per second each key may make on average.
    #[arg(long, env = "PADDOCK_RATE", default_value_t = 200.0)]
    rate: f64,
    /// Requests a key may make in a burst.
    #[arg(long, env = "PADDOCK_RATE_BURST", default_value_t = 400.0)]
    rate_burst: f64,
    /// Requests per second on average to each key's sandboxes through the E2B data plane
    /// and the port proxy (public ports without credentials: per sandbox).
    #[arg(long, env = "PADDOCK_DATA_RATE", default_value_t = 2000.0)]
    data_rate: f64,
    /// Data-plane requests a key may make in a burst.
    #[arg(long, env = "PADDOCK_DATA_RATE_BURST", default_value_t = 4000.0)]
    data_rate_burst: f64,
    /// Domain under which sandbox ports are served as {port}-{id}.{domain}.
    #[arg(long, env = "PADDOCK_DOMAIN", default_value = "localhost")]
    domain: String,
    /// What happens to running sandboxes when the server stops: keep (adopted at the next
    /// start) or destroy.
    #[arg(long, env = "PADDOCK_ON_SHUTDOWN", default_value = "keep", value_parser = ["keep", "destroy"])]
    on_shutdown: String,
    /// Time a client has to send a request's head before the connection is closed.
    #[arg(long, env = "PADDOCK_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// Longest a request body may pause between chunks.
    #[arg(long, env = "PADDOCK_BODY_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    body_idle_timeout: Duration,
    /// How often the CPU and memory of every running sandbox are sampled (the series E2B's
    /// get_metrics returns; the last 720 samples are kept).
    #[arg(long, env = "PADDOCK_METRICS_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    metrics_interval: Duration,
    /// Sign webhook deliveries with HMAC-SHA256 under this key (`X-Paddock-Signature`).
    #[arg(long, env = "PADDOCK_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Allow webhook URLs on loopback, private or link-local addresses.
    #[arg(long, env = "PADDOCK_ALLOW_PRIVATE_WEBHOOKS")]
    allow_private_webhooks: bool,
    /// DNS server (IP:port) that sandbox resolvers forward allowed names to; default: the
    /// host's first nameserver in /etc/resolv.conf.
    #[arg(long, env = "PADDOCK_DNS_UPSTREAM")]
    dns_upstream: Option<std::net::SocketAddr>,
    /// Prepared network slots (network namespace with its link) kept for networked creates
    /// without a pool, refilled in the background; 0 turns the stock off (docs/network.md).
    #[arg(long, env = "PADDOCK_NET_SLOTS", default_value_t = 4)]
    net_slots: usize,
    /// The URL clients reach this server at, when it is not the listen address (behind a
    /// proxy or TLS terminator, e.g. https://sandboxes.example.com): port URLs and the
    /// domain told to E2B clients take their scheme and port from it.
    #[arg(long, env = "PADDOCK_PUBLIC_URL")]
    public_url: Option<String>,
    /// Serve a DNS responder on this UDP address (e.g. 127.0.0.153:53) that answers every
    /// name under --domain with --dns-answer and refuses the rest, so the E2B SDKs'
    /// get_host names resolve without wildcard DNS (docs/e2b.md).
    #[arg(long, env = "PADDOCK_DNS_LISTEN")]
    dns_listen: Option<std::net::SocketAddr>,
    /// The IPv4 address the DNS responder answers with (default: the --listen address, or
    /// 127.0.0.1 when that is 0.0.0.0).
    #[arg(long, env = "PADDOCK_DNS_ANSWER", requires = "dns_listen")]
    dns_answer: Option<std::net::Ipv4Addr>,
    /// Isolation backend of sandboxes whose request and template name none: native or
    /// gvisor (docs/isolation.md).
    #[arg(long, env = "PADDOCK_ISOLATION_DEFAULT", default_value = "native",
          value_parser = cli::parse_isolation)]
    isolation_default: paddock_core::Isolation,
    /// A warm pool for a template, TEMPLATE=N (N ready sandboxes) or TEMPLATE=MIN..MAX
    /// (sized by the last minute's creates); repeatable (docs/pools.md).
    #[arg(long = "pool", value_name = "TEMPLATE=N", value_parser = parse_pool)]
    pool: Vec<(String, paddock_service::pools::PoolSize)>,
    /// TLS certificate chain (PEM). With --tls-key the server speaks HTTPS only, HTTP/2 and
    /// HTTP/1.1 by ALPN (a wildcard certificate for *.DOMAIN serves the port URLs).
    #[arg(long, env = "PADDOCK_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// TLS private key (PEM) for --tls-cert.
    #[arg(long, env = "PADDOCK_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// File holding the master key of tenant secrets: 32 random bytes as 64 hex digits or
    /// base64 (`openssl rand -hex 32 > FILE; chmod 600 FILE`). Or give the key itself in
    /// PADDOCK_SECRETS_KEY. Without either, the secret routes answer 503.
    #[arg(long, env = "PADDOCK_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
}

/// The fleet token: a file, or `PADDOCK_FLEET_TOKEN`.
#[derive(Args, Debug)]
struct FleetArgs {
    /// The fleet's database: postgres://USER:PASSWORD@HOST:PORT/DB, or sqlite:PATH for a
    /// fleet on one host (docs/database.md).
    #[arg(long, env = "PADDOCK_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// File holding the fleet token shared by control planes and nodes (32 to 256
    /// printable characters, e.g. `openssl rand -hex 32`); or PADDOCK_FLEET_TOKEN.
    #[arg(long, env = "PADDOCK_FLEET_TOKEN_FILE")]
    fleet_token_file: Option<PathBuf>,
}

impl FleetArgs {
    fn token(&self) -> Result<paddock_service::fleet::FleetToken> {
        let env = std::env::var("PADDOCK_FLEET_TOKEN").ok();
        paddock_service::fleet::FleetToken::load(self.fleet_token_file.as_deref(), env.as_deref())
            .map_err(anyhow::Error::msg)
    }
}

/// `paddock node` settings: those of `serve`, and the fleet's.
#[derive(Args, Debug)]
struct NodeArgs {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    fleet: FleetArgs,
    /// The URL control planes reach this node at (default: http://LISTEN).
    #[arg(long, env = "PADDOCK_ADVERTISE")]
    advertise: Option<String>,
    /// The node's name (default: the host name).
    #[arg(long, env = "PADDOCK_NODE_NAME")]
    name: Option<String>,
    /// A label, KEY=VALUE (repeatable): creates choose nodes by `node_selector`.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Most sandboxes this node runs.
    #[arg(long, env = "PADDOCK_MAX_SANDBOXES", default_value_t = 256)]
    max_sandboxes: u32,
    /// CPU limits of the node's sandboxes may add up to this many times its CPUs.
    #[arg(long, env = "PADDOCK_CPU_OVERCOMMIT", default_value_t = 16.0)]
    cpu_overcommit: f64,
}

/// `paddock control` settings.
#[derive(Args, Debug)]
struct ControlArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// Address to listen on.
    #[arg(long, env = "PADDOCK_LISTEN", default_value = "127.0.0.1:7070")]
    listen: std::net::SocketAddr,
    /// Domain under which sandbox ports are served, as given to the nodes.
    #[arg(long, env = "PADDOCK_DOMAIN", default_value = "localhost")]
    domain: String,
    /// Largest create body read for placement, e.g. 1M (as the nodes' --max-json-body).
    #[arg(long, env = "PADDOCK_MAX_JSON_BODY", default_value = "1M")]
    max_json_body: String,
    /// Time a client has to send a request's head.
    #[arg(long, env = "PADDOCK_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// Sign webhook deliveries (node.dead, lost) with HMAC-SHA256 under this key.
    #[arg(long, env = "PADDOCK_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Allow webhook URLs on loopback, private or link-local addresses.
    #[arg(long, env = "PADDOCK_ALLOW_PRIVATE_WEBHOOKS")]
    allow_private_webhooks: bool,
}

async fn control(a: ControlArgs) -> Result<i32> {
    let token = a.fleet.token()?;
    let store = paddock_service::fleet::open_store(&a.fleet.database_url)
        .await
        .map_err(anyhow::Error::msg)?;
    let cfg = paddock_server::fleet::control::ControlConfig {
        listen: a.listen,
        token,
        domain: a.domain,
        max_json_body: usize::try_from(parse_size(&a.max_json_body).context("--max-json-body")?)?,
        header_timeout: a.header_timeout,
        webhook_secret: a.webhook_secret,
        allow_private_webhooks: a.allow_private_webhooks,
    };
    paddock_server::fleet::control::serve_control(
        cfg,
        store,
        |ready| {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            if let Some(k) = &ready.admin_key {
                let _ = writeln!(
                    out,
                    "paddock: created the first admin API key (shown only once, store it now):\nPADDOCK_API_KEY={k}"
                );
                if let Some(e) = &ready.admin_key_e2b {
                    let _ = writeln!(out, "paddock: the same key for E2B SDKs:\nE2B_API_KEY={e}");
                }
            }
            let _ = writeln!(out, "paddock: control plane listening on http://{}", ready.addr);
            let _ = out.flush();
        },
        shutdown_signal(),
    )
    .await?;
    Ok(0)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("paddock: shutting down");
}

async fn node(data_dir: PathBuf, a: NodeArgs) -> Result<i32> {
    let token = a.fleet.token()?;
    let labels = paddock_service::fleet::parse_labels(&a.labels).map_err(anyhow::Error::msg)?;
    if !(a.cpu_overcommit.is_finite() && a.cpu_overcommit >= 1.0) {
        bail!("--cpu-overcommit must be at least 1");
    }
    if a.max_sandboxes == 0 {
        bail!("--max-sandboxes must be at least 1");
    }
    paddock_runtime::datadir::create_private(&data_dir)?;
    let id = paddock_service::fleet::node::node_id(&data_dir).context("the node id")?;
    let name = match a.name {
        Some(n) => n,
        None => rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
    };
    let advertise = a.advertise.clone();
    let node = paddock_service::fleet::NodeConfig {
        id,
        name,
        advertise,
        labels,
        token,
        max_sandboxes: a.max_sandboxes,
        cpu_overcommit: a.cpu_overcommit,
    };
    serve_with(data_dir, a.serve, Some(node), Some(a.fleet.database_url)).await
}

/// Parses `90`, `90s`, `5m`, `2h`, `1d`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86400),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 90s, 5m, 2h"))?;
    Ok(Duration::from_secs(n.saturating_mul(mul)))
}

async fn serve_with(
    data_dir: PathBuf,
    a: ServeArgs,
    node: Option<paddock_service::fleet::NodeConfig>,
    database_url: Option<String>,
) -> Result<i32> {
    let mut cfg = paddock_service::ServerConfig::new(&data_dir);
    cfg.node = node;
    cfg.database_url = database_url;
    cfg.listen = a.listen;
    cfg.default_timeout = a.default_timeout;
    cfg.max_timeout = a.max_timeout;
    cfg.paused_retention = a.paused_retention;
    cfg.exec_timeout = a.exec_timeout;
    cfg.warn_at = a.warn_at;
    cfg.max_json_body = usize::try_from(parse_size(&a.max_json_body).context("--max-json-body")?)?;
    cfg.max_output = usize::try_from(parse_size(&a.max_output).context("--max-output")?)?;
    cfg.max_sandboxes_per_key = a.max_sandboxes_per_key;
    cfg.rate_per_sec = a.rate;
    cfg.rate_burst = a.rate_burst;
    cfg.data_rate_per_sec = a.data_rate;
    cfg.data_rate_burst = a.data_rate_burst;
    cfg.domain = a.domain;
    cfg.header_timeout = a.header_timeout;
    cfg.webhook_secret = a.webhook_secret;
    cfg.dns_upstream = a.dns_upstream;
    cfg.net_slots = a.net_slots;
    cfg.body_idle_timeout = a.body_idle_timeout;
    cfg.sample_interval = a.metrics_interval;
    let scheme = if a.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    cfg.public_url = a
        .public_url
        .unwrap_or_else(|| format!("{scheme}://{}", a.listen));
    cfg.dns_listen = a.dns_listen;
    cfg.dns_answer = a.dns_answer;
    cfg.isolation_default = a.isolation_default;
    for (t, size) in a.pool {
        if cfg.pools.insert(t.clone(), size).is_some() {
            anyhow::bail!("--pool names template {t} twice");
        }
    }
    cfg.tls = a.tls_cert.zip(a.tls_key);
    let key_env = std::env::var("PADDOCK_SECRETS_KEY").ok();
    cfg.secrets_key =
        paddock_service::secrets::load_key(a.secrets_key_file.as_deref(), key_env.as_deref())
            .map_err(anyhow::Error::msg)?;
    let policy = if a.on_shutdown == "destroy" {
        paddock_server::ShutdownPolicy::Destroy
    } else {
        paddock_server::ShutdownPolicy::Keep
    };
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("paddock: shutting down");
    };
    paddock_server::serve(
        cfg,
        policy,
        a.allow_private_webhooks,
        |ready| {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            if let Some(k) = &ready.admin_key {
                let _ = writeln!(
                    out,
                    "paddock: created the first admin API key (shown only once, store it now):\nPADDOCK_API_KEY={k}"
                );
                if let Some(e) = &ready.admin_key_e2b {
                    let _ = writeln!(
                        out,
                        "paddock: the same key for E2B SDKs (some accept only this form):\nE2B_API_KEY={e}"
                    );
                }
            }
            let _ = writeln!(out, "paddock: listening on {scheme}://{}", ready.addr);
            let _ = out.flush();
        },
        shutdown,
    )
    .await?;
    Ok(0)
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PADDOCK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("paddock: {e:#}");
            std::process::exit(1)
        }
    }
}

async fn run(cli: Cli) -> Result<i32> {
    if let Cmd::Serve(a) = cli.cmd {
        let dir = a.serve.data.dir.clone().unwrap_or(cli.data_dir);
        return serve_with(dir, a.serve, None, a.database_url).await;
    }
    if let Cmd::Node(a) = cli.cmd {
        let dir = a.serve.data.dir.clone().unwrap_or(cli.data_dir);
        return node(dir, a).await;
    }
    if let Cmd::Control(a) = cli.cmd {
        return control(a).await;
    }
    // Client commands talk to a server and never open the local data directory.
    if let Cmd::Client(c) = cli.cmd {
        return cli::run(c).await;
    }
    let dir = match &cli.cmd {
        Cmd::Run { data, .. } | Cmd::Ps { data } => data.dir.clone(),
        _ => None,
    }
    .unwrap_or(cli.data_dir);
    let runtime = Runtime::open(RuntimeConfig::new(&dir)).context("opening runtime")?;
    let res = local(cli.cmd, &runtime).await;
    // With no sandbox left, nothing of the instance stays on the host but the data dir.
    let rt = runtime.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || rt.close()).await? {
        eprintln!("paddock: taking the instance down: {e}");
    }
    res
}

/// `paddock run` and `paddock ps`, on an open runtime.
async fn local(cmd: Cmd, runtime: &std::sync::Arc<Runtime>) -> Result<i32> {
    match cmd {
        Cmd::Serve(_) | Cmd::Node(_) | Cmd::Control(_) | Cmd::Client(_) => {
            unreachable!("handled above")
        }
        Cmd::Run {
            template,
            memory,
            cpus,
            disk,
            timeout,
            user,
            env,
            isolation,
            argv,
            data: _,
        } => {
            let mut envs = BTreeMap::new();
            for kv in env {
                let Some((k, v)) = kv.split_once('=') else {
                    bail!("--env {kv:?}: expected KEY=VALUE")
                };
                envs.insert(k.to_owned(), v.to_owned());
            }
            let memory_bytes = parse_size(&memory)?;
            let limits = Limits {
                memory_bytes,
                // /tmp is charged to memory, so it can never be larger than the memory limit.
                tmp_bytes: Limits::default().tmp_bytes.min(memory_bytes / 2),
                cpu_millis: (cpus * 1000.0).round() as u32,
                disk_bytes: parse_size(&disk)?,
                ..Limits::default()
            };
            let sbx = runtime
                .create(CreateSpec {
                    template,
                    limits,
                    env: envs,
                    user: None,
                    id: None,
                    network: paddock_core::NetworkPolicy::none(),
                    isolation,
                    ..CreateSpec::default()
                })
                .await?;
            let res = sbx
                .exec(ExecRequest {
                    argv,
                    user,
                    timeout: timeout.map(Duration::from_secs),
                    ..Default::default()
                })
                .await;
            runtime.destroy(sbx.id.as_str()).await?;
            let res = res?;
            use std::io::Write;
            std::io::stdout().write_all(&res.stdout)?;
            std::io::stderr().write_all(&res.stderr)?;
            if res.timed_out {
                eprintln!("paddock: command timed out");
                return Ok(124);
            }
            if res.oom_killed {
                eprintln!("paddock: command was killed: out of memory");
            }
            Ok(res.exit_code.unwrap_or(137))
        }
        Cmd::Ps { .. } => {
            print!("{}", ps_table(&runtime.list_host()));
            Ok(0)
        }
    }
}

/// The `ps` table: a header, then one row per sandbox found on the host (`-` for no live PID 1).
fn ps_table(items: &[paddock_runtime::HostSandbox]) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let rows: Vec<[String; 4]> = items
        .iter()
        .map(|h| {
            [
                h.id.clone(),
                h.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                yes(h.has_cgroup).to_owned(),
                yes(h.has_layer).to_owned(),
            ]
        })
        .collect();
    let header = ["ID", "PID", "CGROUP", "LAYER"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `--pool TEMPLATE=N` or `TEMPLATE=MIN..MAX`.
fn parse_pool(s: &str) -> Result<(String, paddock_service::pools::PoolSize), String> {
    let (t, n) = s
        .split_once('=')
        .ok_or_else(|| format!("--pool {s:?} is not TEMPLATE=N or TEMPLATE=MIN..MAX"))?;
    if t.is_empty() {
        return Err(format!("--pool {s:?} names no template"));
    }
    Ok((t.to_owned(), paddock_service::pools::PoolSize::parse(n)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn ps_prints_a_table_with_a_header() {
        let items = [
            paddock_runtime::HostSandbox {
                id: "abcdefghij0123456789".into(),
                pid: Some(4242),
                has_cgroup: true,
                has_layer: true,
            },
            paddock_runtime::HostSandbox {
                id: "zzzzzzzzzz0123456789".into(),
                pid: None,
                has_cgroup: false,
                has_layer: true,
            },
        ];
        assert_eq!(
            ps_table(&items),
            "ID                    PID   CGROUP  LAYER\n\
             abcdefghij0123456789  4242  yes     yes\n\
             zzzzzzzzzz0123456789  -     no      yes\n"
        );
        assert_eq!(ps_table(&[]), "ID  PID  CGROUP  LAYER\n");
    }

    #[test]
    fn only_the_commands_that_open_the_data_directory_take_data_dir() {
        Cli::command().debug_assert();
        let mut cmd = Cli::command();
        for sub in cmd.get_subcommands_mut() {
            let has = sub.get_arguments().any(|a| a.get_id() == "dir");
            let uses = matches!(sub.get_name(), "serve" | "node" | "run" | "ps");
            assert_eq!(has, uses, "{}", sub.get_name());
        }
        // Before or after the subcommand.
        let c = Cli::try_parse_from(["paddock", "--data-dir", "/a", "ps"]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/a"));
        let c = Cli::try_parse_from(["paddock", "ps", "--data-dir", "/b"]).unwrap();
        assert!(matches!(c.cmd, Cmd::Ps { data } if data.dir == Some(PathBuf::from("/b"))));
        assert!(Cli::try_parse_from(["paddock", "ls", "--data-dir", "/b"]).is_err());
    }
}
