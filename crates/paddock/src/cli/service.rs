//! `paddock service ls|add|show|start|stop|restart|logs|rm ID [NAME]`
//! (`/v1/sandboxes/{id}/services`): supervised services, kept running by the sandbox's agent
//! with a restart policy and an optional health check (`docs/services.md`).

use anyhow::{Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::api::Api;
use super::format::{self, Table};
use super::{Conn, write_stdout};

/// `paddock service`.
#[derive(Args, Debug)]
pub(crate) struct ServiceArgs {
    #[command(subcommand)]
    pub(crate) cmd: ServiceCmd,
}

/// When a service is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Restart {
    /// After every exit.
    Always,
    /// After a non-zero exit or a signal, not after exit 0.
    OnFailure,
}

/// The `service` subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum ServiceCmd {
    /// List a sandbox's services.
    Ls {
        id: String,
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Add a service and start it: `paddock service add ID NAME -- python3 app.py` (one
    /// word after `--` is a shell command line, several are an argv).
    Add {
        id: String,
        name: String,
        /// The restart policy.
        #[arg(long, value_enum, default_value = "always")]
        restart: Restart,
        /// A health check command (a shell command line that must exit 0).
        #[arg(long, conflicts_with = "health_port")]
        health_cmd: Option<String>,
        /// A health check port (must accept a connection on the sandbox's 127.0.0.1).
        #[arg(long)]
        health_port: Option<u16>,
        /// Seconds between health checks (1 to 3600, default 10).
        #[arg(long)]
        health_interval: Option<u64>,
        /// Working directory.
        #[arg(long)]
        cwd: Option<String>,
        /// User to run as.
        #[arg(long)]
        user: Option<String>,
        /// KEY=VALUE (repeatable).
        #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
        env: Vec<String>,
        #[command(flatten)]
        conn: Conn,
        /// The command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show one service.
    Show {
        id: String,
        name: String,
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Start a stopped or exited service.
    Start {
        id: String,
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop a service (SIGTERM, SIGKILL after 5 s); it stays stopped until started.
    Stop {
        id: String,
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop a service if it runs and start it again.
    Restart {
        id: String,
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print a service's output (all its runs, the last 1 MiB); `--follow` keeps printing.
    Logs {
        id: String,
        name: String,
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop a service and remove it.
    Rm {
        id: String,
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Runs a `service` subcommand.
pub(crate) async fn run(a: ServiceArgs) -> Result<i32> {
    match a.cmd {
        ServiceCmd::Ls { id, json, conn } => {
            let api = Api::new(&conn)?;
            let v: Value = api.get_json(&["v1", "sandboxes", &id, "services"]).await?;
            let all = v["services"].as_array().cloned().unwrap_or_default();
            if json {
                write_stdout(&format!("{}\n", serde_json::to_string_pretty(&all)?))?;
                return Ok(0);
            }
            let mut t = Table::new(&[
                "NAME", "STATE", "PID", "RESTARTS", "HEALTH", "RESTART", "COMMAND",
            ]);
            for s in &all {
                t.row(vec![
                    format::cell(&s["name"]),
                    format::cell(&s["state"]),
                    format::cell(&s["pid"]),
                    format::cell(&s["restarts"]),
                    format::cell(&s["health"]),
                    format::cell(&s["restart"]),
                    format::one_line(&format::command(&s["cmd"])),
                ]);
            }
            write_stdout(&t.render())?;
            Ok(0)
        }
        ServiceCmd::Add {
            id,
            name,
            restart,
            health_cmd,
            health_port,
            health_interval,
            cwd,
            user,
            env,
            conn,
            command,
        } => {
            let api = Api::new(&conn)?;
            let mut body = json!({
                "name": name,
                "restart": match restart { Restart::Always => "always", Restart::OnFailure => "on-failure" },
            });
            if command.len() == 1 {
                body["command"] = command[0].clone().into();
            } else {
                body["cmd"] = command.into();
            }
            let mut envs = serde_json::Map::new();
            for kv in env {
                let Some((k, v)) = kv.split_once('=') else {
                    bail!("--env takes KEY=VALUE, not {kv:?}");
                };
                envs.insert(k.to_owned(), v.into());
            }
            body["env"] = envs.into();
            if let Some(c) = cwd {
                body["cwd"] = c.into();
            }
            if let Some(u) = user {
                body["user"] = u.into();
            }
            if health_cmd.is_some() || health_port.is_some() {
                let mut h = json!({});
                if let Some(c) = health_cmd {
                    h["cmd"] = c.into();
                }
                if let Some(p) = health_port {
                    h["port"] = p.into();
                }
                if let Some(s) = health_interval {
                    h["interval_ms"] = s.saturating_mul(1000).into();
                }
                body["health"] = h;
            } else if health_interval.is_some() {
                bail!("--health-interval needs --health-cmd or --health-port");
            }
            let v: Value = api
                .post_json(&["v1", "sandboxes", &id, "services"], &body)
                .await?;
            write_stdout(&status_line(&v))?;
            Ok(0)
        }
        ServiceCmd::Show {
            id,
            name,
            json,
            conn,
        } => {
            let api = Api::new(&conn)?;
            let v: Value = api
                .get_json(&["v1", "sandboxes", &id, "services", &name])
                .await?;
            if json {
                write_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            } else {
                write_stdout(&status_line(&v))?;
            }
            Ok(0)
        }
        ServiceCmd::Start { id, name, conn } => act(&conn, &id, &name, "start").await,
        ServiceCmd::Stop { id, name, conn } => act(&conn, &id, &name, "stop").await,
        ServiceCmd::Restart { id, name, conn } => act(&conn, &id, &name, "restart").await,
        ServiceCmd::Logs {
            id,
            name,
            follow,
            conn,
        } => {
            let api = Api::new(&conn)?;
            let mut from = 0u64;
            loop {
                let mut url = api.url(&["v1", "sandboxes", &id, "services", &name, "logs"]);
                url.query_pairs_mut()
                    .append_pair("from_seq", &from.to_string());
                let v: Value = api.json(api.request(reqwest::Method::GET, url)).await?;
                let entries = v["entries"].as_array().cloned().unwrap_or_default();
                let mut text = String::new();
                for e in &entries {
                    text.push_str(e["data"].as_str().unwrap_or_default());
                }
                if !text.is_empty() {
                    write_stdout(&text)?;
                }
                let next = v["next_seq"].as_u64().unwrap_or(from);
                let more = next > from && !entries.is_empty();
                from = next;
                if more {
                    continue;
                }
                if !follow {
                    return Ok(0);
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        ServiceCmd::Rm { id, name, conn } => {
            let api = Api::new(&conn)?;
            api.delete(&["v1", "sandboxes", &id, "services", &name])
                .await?;
            Ok(0)
        }
    }
}

async fn act(conn: &Conn, id: &str, name: &str, what: &str) -> Result<i32> {
    let api = Api::new(conn)?;
    let v: Value = api
        .post_json(&["v1", "sandboxes", id, "services", name, what], &json!({}))
        .await?;
    write_stdout(&status_line(&v))?;
    Ok(0)
}

/// `NAME: STATE (pid N, R restarts, health H; last exit ...)`.
fn status_line(v: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(p) = v["pid"].as_u64() {
        parts.push(format!("pid {p}"));
    }
    parts.push(format!("{} restarts", v["restarts"].as_u64().unwrap_or(0)));
    if let Some(h) = v["health"].as_str().filter(|h| *h != "none") {
        parts.push(format!("health {h}"));
    }
    if let Some(s) = v["last_exit"]["status"].as_str() {
        parts.push(format!("last exit: {s}"));
    }
    format!(
        "{}: {} ({})\n",
        v["name"].as_str().unwrap_or("?"),
        v["state"].as_str().unwrap_or("?"),
        parts.join(", ")
    )
}
