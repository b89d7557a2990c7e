//! `paddock rollout run|upload|ls|show|cancel` (`/v1/rollouts`, `docs/rollouts.md`): a
//! command or an upload on every sandbox matching a metadata selector. `run` and `upload`
//! follow the server's NDJSON progress: a bar with the counts on a terminal, one line per
//! change of a sandbox otherwise (both on stderr), then a table of the outcome on stdout;
//! they exit 1 unless the rollout succeeded.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde_json::{Value, json};

use super::api::Api;
use super::format::{self, Table};
use super::{Conn, kv_map, parse_kv, write_stdout};

/// `paddock rollout`.
#[derive(Args, Debug)]
pub(crate) struct RolloutArgs {
    #[command(subcommand)]
    pub(crate) cmd: RolloutCmd,
}

/// What every rollout takes.
#[derive(Args, Debug)]
pub(crate) struct Common {
    /// Metadata KEY=VALUE every target must have (repeatable; at least one).
    #[arg(long, short = 's', value_name = "KEY=VALUE", value_parser = parse_kv, required = true)]
    selector: Vec<(String, String)>,
    /// Sandboxes worked on at once (1 to 64; server default 4).
    #[arg(long, short = 'c')]
    concurrency: Option<u32>,
    /// Failures that stop the rollout and start the rollback (server default 1).
    #[arg(long)]
    max_failures: Option<u32>,
    /// A shell command line run on the sandboxes already changed when the rollout stops.
    #[arg(long)]
    rollback: Option<String>,
    /// Seconds per sandbox (1 to 3600; server default 300).
    #[arg(long)]
    timeout: Option<u64>,
    /// User to run as in the sandboxes.
    #[arg(long)]
    user: Option<String>,
    /// Print the finished rollout as the server's JSON instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// The `rollout` subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum RolloutCmd {
    /// Run a command on every matching sandbox: `paddock rollout run -s app=web -- make
    /// deploy` (one word after `--` is a shell command line, several are an argv).
    Run {
        #[command(flatten)]
        common: Common,
        /// The command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Copy a local file (to the path REMOTE, or into REMOTE/ when it ends with `/`) or a
    /// directory (its contents into the directory REMOTE) into every matching sandbox.
    Upload {
        #[command(flatten)]
        common: Common,
        local: PathBuf,
        remote: String,
    },
    /// List rollouts, newest first.
    Ls {
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a rollout and each sandbox's outcome; exits 1 unless it succeeded.
    Show {
        id: String,
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Cancel a running rollout: no sandbox starts after it.
    Cancel {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Runs a `rollout` subcommand.
pub(crate) async fn run(a: RolloutArgs) -> Result<i32> {
    match a.cmd {
        RolloutCmd::Run { common, command } => {
            let mut body = json!({});
            if command.len() == 1 {
                body["command"] = command[0].clone().into();
            } else {
                body["cmd"] = command.into();
            }
            start(common, body).await
        }
        RolloutCmd::Upload {
            common,
            local,
            remote,
        } => {
            let body = json!({ "upload": upload_body(&local, &remote)? });
            start(common, body).await
        }
        RolloutCmd::Ls { json, conn } => {
            let api = Api::new(&conn)?;
            let v: Value = api.get_json(&["v1", "rollouts"]).await?;
            let all = v["rollouts"].as_array().cloned().unwrap_or_default();
            if json {
                write_stdout(&format!("{}\n", serde_json::to_string_pretty(&all)?))?;
                return Ok(0);
            }
            let now = time::OffsetDateTime::now_utc();
            let mut t = Table::new(&["ID", "KIND", "STATE", "SELECTOR", "CREATED", "WHAT"]);
            for r in &all {
                t.row(vec![
                    format::cell(&r["id"]),
                    format::cell(&r["kind"]),
                    format::cell(&r["state"]),
                    format::pairs(&r["spec"]["selector"]),
                    format::relative_json(now, &r["created_at"]),
                    format::one_line(&what(&r["spec"])),
                ]);
            }
            write_stdout(&t.render())?;
            Ok(0)
        }
        RolloutCmd::Show { id, json, conn } => {
            let api = Api::new(&conn)?;
            let r: Value = api.get_json(&["v1", "rollouts", &id]).await?;
            if json {
                write_stdout(&format!("{}\n", serde_json::to_string_pretty(&r)?))?;
            } else {
                write_stdout(&report(&r))?;
            }
            Ok(exit_code(&r))
        }
        RolloutCmd::Cancel { id, conn } => {
            let api = Api::new(&conn)?;
            let _: Value = api
                .json(api.request(Method::POST, api.url(&["v1", "rollouts", &id, "cancel"])))
                .await?;
            eprintln!("rollout {id}: cancelled; sandboxes already running finish");
            Ok(0)
        }
    }
}

/// The request's `upload` for a local file or directory.
fn upload_body(local: &std::path::Path, remote: &str) -> Result<Value> {
    if !remote.starts_with('/') {
        bail!("REMOTE must be an absolute path in the sandbox, not {remote:?}");
    }
    let meta =
        std::fs::metadata(local).with_context(|| format!("cannot read {}", local.display()))?;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    if meta.is_dir() {
        let tar = super::files::write_tar(local, Vec::new())
            .with_context(|| format!("archiving {}", local.display()))?;
        let dir = match remote.trim_end_matches('/') {
            "" => "/",
            d => d,
        };
        Ok(json!({ "path": dir, "tar": b64(&tar) }))
    } else {
        let data =
            std::fs::read(local).with_context(|| format!("cannot read {}", local.display()))?;
        let path = super::files::upload_target(local, remote)?;
        Ok(json!({ "files": [{ "path": path, "content": b64(&data) }] }))
    }
}

/// A one-line description of what a rollout does.
fn what(spec: &Value) -> String {
    if spec["cmd"].is_array() {
        format::command(&spec["cmd"])
    } else if let Some(files) = spec["upload"]["files"].as_array() {
        let paths: Vec<&str> = files.iter().filter_map(|f| f["path"].as_str()).collect();
        format!("upload {}", paths.join(" "))
    } else {
        format!("upload into {}", format::cell(&spec["upload"]["path"]))
    }
}

/// Starts the rollout and follows its progress to the end.
async fn start(c: Common, mut body: Value) -> Result<i32> {
    body["selector"] = json!(kv_map(&c.selector));
    for (k, v) in [
        ("concurrency", c.concurrency.map(Value::from)),
        ("max_failures", c.max_failures.map(Value::from)),
        ("timeout", c.timeout.map(Value::from)),
        ("rollback", c.rollback.map(Value::from)),
        ("user", c.user.map(Value::from)),
    ] {
        if let Some(v) = v {
            body[k] = v;
        }
    }
    let api = Api::new(&c.conn)?;
    let rb = api
        .request(Method::POST, api.url(&["v1", "rollouts"]))
        .header("accept", "application/x-ndjson")
        .json(&body);
    let mut resp = api.send(rb).await?;
    let mut view = Progress::new();
    let mut buf = Vec::new();
    let mut end = None;
    while end.is_none() {
        let Some(chunk) = resp.chunk().await.map_err(|e| api.transport_error(e))? else {
            break;
        };
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            match v["type"].as_str() {
                Some("rollout") => view.started(&v["rollout"]),
                Some("sandbox") => view.sandbox(&v["sandbox"]),
                Some("end") => end = Some(v["rollout"].clone()),
                _ => {}
            }
        }
    }
    view.finish();
    let Some(r) = end else {
        bail!("the server ended the progress stream before the rollout's end");
    };
    if c.json {
        write_stdout(&format!("{}\n", serde_json::to_string_pretty(&r)?))?;
    } else {
        write_stdout(&report(&r))?;
    }
    Ok(exit_code(&r))
}

fn exit_code(r: &Value) -> i32 {
    i32::from(r["state"] != "succeeded")
}

/// The progress on stderr: a bar with the counts on a terminal, lines otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    states: std::collections::BTreeMap<String, String>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            bar: None,
            states: Default::default(),
        }
    }

    fn started(&mut self, r: &Value) {
        let total = r["counts"]["total"].as_u64().unwrap_or(0);
        if let Some(ts) = r["sandboxes"].as_array() {
            for t in ts {
                self.states
                    .insert(format::cell(&t["sandbox_id"]), format::cell(&t["state"]));
            }
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(format::cell(&r["id"]));
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            self.bar = Some(bar);
            self.redraw();
        } else {
            eprintln!(
                "rollout {}: {total} sandboxes, selector {}",
                format::cell(&r["id"]),
                format::pairs(&r["spec"]["selector"])
            );
        }
    }

    fn sandbox(&mut self, t: &Value) {
        let id = format::cell(&t["sandbox_id"]);
        let st = format::cell(&t["state"]);
        self.states.insert(id.clone(), st.clone());
        if self.bar.is_some() {
            self.redraw();
            return;
        }
        let mut line = format!("{id} {st}");
        if let Some(code) = t["exit_code"].as_i64() {
            line.push_str(&format!(" exit={code}"));
        }
        if let Some(ms) = t["duration_ms"].as_u64() {
            line.push_str(&format!(" {:.1}s", ms as f64 / 1000.0));
        }
        if let Some(e) = t["error"].as_str() {
            line.push_str(&format!(" ({e})"));
        }
        if st == "rolled_back" {
            let ok = t["rollback"]["ok"] == true;
            line.push_str(if ok {
                " rollback ok"
            } else {
                " rollback FAILED"
            });
        }
        eprintln!("{line}");
    }

    fn redraw(&self) {
        let Some(bar) = &self.bar else { return };
        let count = |s: &str| self.states.values().filter(|v| *v == s).count();
        let done = self
            .states
            .values()
            .filter(|v| !matches!(v.as_str(), "pending" | "running"))
            .count();
        bar.set_position(done as u64);
        bar.set_message(format!(
            "running {} ok {} failed {} rolled back {} skipped {}",
            count("running"),
            count("succeeded"),
            count("failed"),
            count("rolled_back"),
            count("skipped")
        ));
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The outcome as a table and a summary line.
fn report(r: &Value) -> String {
    let mut t = Table::new(&["SANDBOX", "STATE", "EXIT", "TIME", "ROLLBACK", "OUTPUT"]);
    for s in r["sandboxes"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let rollback = match &s["rollback"] {
            Value::Null => String::new(),
            rb if rb["ok"] == true => "ok".into(),
            rb => format!("failed ({})", format::cell(&rb["status"])),
        };
        let out = [&s["stderr_tail"], &s["stdout_tail"], &s["error"]]
            .into_iter()
            .filter_map(|v| v.as_str())
            .filter_map(|v| v.lines().rev().find(|l| !l.trim().is_empty()))
            .next()
            .unwrap_or("")
            .to_owned();
        t.row(vec![
            format::cell(&s["sandbox_id"]),
            format::cell(&s["state"]),
            format::cell(&s["exit_code"]),
            s["duration_ms"]
                .as_u64()
                .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                .unwrap_or_default(),
            rollback,
            format::one_line(&out),
        ]);
    }
    let reason = r["reason"]
        .as_str()
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    format!(
        "{}rollout {} {}{reason}\n",
        t.render(),
        format::cell(&r["id"]),
        format::cell(&r["state"])
    )
}
