//! The `paddock` binary: every role of Paddock in one executable.
//!
//! So far it drives the embedded native runtime directly (`paddock run`); the API server
//! (`paddock serve`) and the client commands build on the same runtime.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use paddock_core::{Limits, parse_size};
use paddock_runtime::{CreateSpec, ExecRequest, Runtime, RuntimeConfig};

#[derive(Parser)]
#[command(
    name = "paddock",
    version,
    about = "Isolated Linux sandboxes in milliseconds"
)]
struct Cli {
    /// Data directory (templates, writable layers).
    #[arg(
        long,
        env = "PADDOCK_DATA_DIR",
        default_value = "/var/lib/paddock",
        global = true
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, required = true)]
        argv: Vec<String>,
    },
    /// List sandboxes present on this host (for reconciliation and debugging).
    Ps,
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
    let runtime = Runtime::open(RuntimeConfig::new(&cli.data_dir)).context("opening runtime")?;
    match cli.cmd {
        Cmd::Run {
            template,
            memory,
            cpus,
            disk,
            timeout,
            user,
            env,
            argv,
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
        Cmd::Ps => {
            for h in runtime.list_host() {
                println!(
                    "{}\tpid={:?}\tcgroup={}\tlayer={}",
                    h.id, h.pid, h.has_cgroup, h.has_layer
                );
            }
            Ok(0)
        }
    }
}
