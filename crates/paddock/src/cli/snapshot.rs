//! `paddock snapshot create|ls|rm` and `paddock fork ID -n N` (`docs/persistence.md`).

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::api::Api;
use super::{Conn, format, write_stdout};

#[derive(Args, Debug)]
pub(crate) struct SnapshotArgs {
    #[command(subcommand)]
    pub(crate) cmd: SnapshotCmd,
}

#[derive(Subcommand, Debug)]
pub(crate) enum SnapshotCmd {
    /// Take a filesystem snapshot of a sandbox; prints its id, usable as a template.
    Create(SnapshotCreateArgs),
    /// List snapshots.
    Ls(SnapshotLsArgs),
    /// Delete a snapshot (refused while sandboxes use it).
    Rm(SnapshotRmArgs),
}

#[derive(Args, Debug)]
pub(crate) struct SnapshotCreateArgs {
    /// The sandbox.
    pub(crate) id: String,
    /// The snapshot's name (a template name); default `snap-<random>`.
    #[arg(long)]
    pub(crate) name: Option<String>,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

#[derive(Args, Debug)]
pub(crate) struct SnapshotLsArgs {
    /// Only the snapshots of this sandbox.
    #[arg(long)]
    pub(crate) sandbox: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

#[derive(Args, Debug)]
pub(crate) struct SnapshotRmArgs {
    /// The snapshot.
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

pub(crate) async fn run(a: SnapshotArgs) -> Result<i32> {
    match a.cmd {
        SnapshotCmd::Create(a) => {
            let api = Api::new(&a.conn)?;
            let mut body = json!({});
            if let Some(n) = &a.name {
                body["name"] = json!(n);
            }
            let v: Value = api
                .post_json(&["v1", "sandboxes", &a.id, "snapshots"], &body)
                .await?;
            write_stdout(&format!("{}\n", format::cell(&v["snapshot_id"])))?;
        }
        SnapshotCmd::Ls(a) => {
            let api = Api::new(&a.conn)?;
            let mut url = api.url(&["v1", "snapshots"]);
            if let Some(s) = &a.sandbox {
                url.query_pairs_mut().append_pair("sandbox_id", s);
            }
            let v: Value = api.json(api.request(reqwest::Method::GET, url)).await?;
            if a.json {
                write_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            } else {
                let mut t =
                    format::Table::new(&["SNAPSHOT", "SANDBOX", "TEMPLATE", "CREATED", "IN USE"]);
                for s in v["snapshots"].as_array().into_iter().flatten() {
                    t.row(vec![
                        format::cell(&s["snapshot_id"]),
                        format::cell(&s["sandbox_id"]),
                        format::cell(&s["template"]),
                        format::cell(&s["created_at"]),
                        format::cell(&s["running_sandboxes"]),
                    ]);
                }
                write_stdout(&t.render())?;
            }
        }
        SnapshotCmd::Rm(a) => {
            let api = Api::new(&a.conn)?;
            api.delete(&["v1", "snapshots", &a.name]).await?;
        }
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub(crate) struct ForkArgs {
    /// The sandbox to fork (it keeps running).
    pub(crate) id: String,
    /// How many children (1 to 20).
    #[arg(short = 'n', long, default_value_t = 1)]
    pub(crate) count: i64,
    /// The children's timeout in seconds; default the parent's.
    #[arg(long)]
    pub(crate) timeout: Option<u64>,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// Forks a sandbox; prints each child's id (or its error) on a line of its own, and exits 1
/// if any child failed.
pub(crate) async fn fork(a: ForkArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    let mut body = json!({ "count": a.count });
    if let Some(t) = a.timeout {
        body["timeout"] = json!(t);
    }
    let v: Value = api
        .post_json(&["v1", "sandboxes", &a.id, "fork"], &body)
        .await?;
    let mut out = String::new();
    let mut failed = false;
    for c in v["sandboxes"].as_array().into_iter().flatten() {
        match c.get("id") {
            Some(id) => out.push_str(&format!("{}\n", format::cell(id))),
            None => {
                failed = true;
                out.push_str(&format!("error: {}\n", format::cell(&c["error"])));
            }
        }
    }
    write_stdout(&out)?;
    Ok(i32::from(failed))
}
