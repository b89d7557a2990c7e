//! `paddock nodes [ls | drain ID | undrain ID]`: the fleet's nodes (`/v1/nodes`, admin).

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::api::Api;
use super::format::{self, Table};
use super::{Conn, write_stdout};

/// `paddock nodes`.
#[derive(Args, Debug)]
pub(crate) struct NodesArgs {
    #[command(subcommand)]
    pub(crate) cmd: Option<NodesCmd>,
    /// Print the server's JSON instead of a table (`ls`).
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// The `nodes` subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum NodesCmd {
    /// List the nodes (the default).
    Ls,
    /// Stop placing new sandboxes on a node; its sandboxes run until they end.
    Drain { id: String },
    /// Place new sandboxes on a drained node again.
    Undrain { id: String },
}

/// Runs `paddock nodes`.
pub(crate) async fn run(a: NodesArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    match a.cmd.unwrap_or(NodesCmd::Ls) {
        NodesCmd::Ls => {
            let v: Value = api.get_json(&["v1", "nodes"]).await?;
            let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
            if a.json {
                write_stdout(&format!("{}\n", serde_json::to_string_pretty(&nodes)?))?;
            } else {
                write_stdout(&node_table(OffsetDateTime::now_utc(), &nodes))?;
            }
        }
        NodesCmd::Drain { id } => {
            let v: Value = api
                .post_json(&["v1", "nodes", &id, "drain"], &json!({}))
                .await?;
            eprintln!(
                "paddock: node {} is {}",
                format::cell(&v["name"]),
                format::cell(&v["state"])
            );
        }
        NodesCmd::Undrain { id } => {
            let v: Value = api
                .post_json(&["v1", "nodes", &id, "undrain"], &json!({}))
                .await?;
            eprintln!(
                "paddock: node {} is {}",
                format::cell(&v["name"]),
                format::cell(&v["state"])
            );
        }
    }
    Ok(0)
}

/// The `nodes ls` table.
pub(crate) fn node_table(now: OffsetDateTime, nodes: &[Value]) -> String {
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "STATE",
        "ADDRESS",
        "SANDBOXES",
        "LABELS",
        "HEARTBEAT",
    ]);
    for n in nodes {
        t.row(vec![
            format::cell(&n["id"]),
            format::cell(&n["name"]),
            format::cell(&n["state"]),
            format::cell(&n["address"]),
            format::cell(&n["sandboxes"]),
            format::pairs(&n["labels"]),
            format::relative_json(now, &n["last_heartbeat"]),
        ]);
    }
    t.render()
}
