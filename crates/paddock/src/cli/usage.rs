//! `paddock usage`: usage and cost over a time range (`GET /v1/usage`, docs/cost.md).

use anyhow::Result;
use clap::Args;
use serde_json::Value;

use super::api::Api;
use super::format::{self, Table};
use super::{Conn, write_stdout};

/// `paddock usage`.
#[derive(Args, Debug)]
pub(crate) struct UsageArgs {
    /// Start of the range: RFC 3339 or milliseconds since the epoch (default: 24 h before
    /// --to).
    #[arg(long)]
    pub(crate) from: Option<String>,
    /// End of the range (default: now).
    #[arg(long)]
    pub(crate) to: Option<String>,
    /// Group by sandbox, key, tenant or template.
    #[arg(long, default_value = "sandbox", value_parser = ["sandbox", "key", "tenant", "template"])]
    pub(crate) by: String,
    /// Print the server's JSON report instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

pub(crate) async fn usage(a: UsageArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    let mut q: Vec<(&str, String)> = vec![("by", a.by.clone())];
    if let Some(f) = &a.from {
        q.push(("from", f.clone()));
    }
    if let Some(t) = &a.to {
        q.push(("to", t.clone()));
    }
    let v: Value = api
        .json(
            api.request(reqwest::Method::GET, api.url(&["v1", "usage"]))
                .query(&q),
        )
        .await?;
    if a.json {
        write_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
    } else {
        write_stdout(&usage_table(&v))?;
    }
    Ok(0)
}

/// The report as a table, one row per group and a total.
pub(crate) fn usage_table(v: &Value) -> String {
    let by = v["by"].as_str().unwrap_or("sandbox");
    let by_head = by.to_uppercase();
    let mut t = Table::new(&[
        &by_head,
        "CPU-S",
        "MEM GIB-H",
        "DISK GIB-H",
        "EGRESS B",
        "COST",
    ]);
    let groups = v["groups"].as_array().cloned().unwrap_or_default();
    for g in groups.iter().chain(std::iter::once(&v["total"])) {
        let name = if std::ptr::eq(g, &v["total"]) {
            "TOTAL".to_owned()
        } else {
            format::cell(&g[by])
        };
        t.row(vec![
            name,
            format::cell(&g["cpu_seconds"]),
            format::cell(&g["memory_gib_hours"]),
            format::cell(&g["disk_gib_hours"]),
            format::cell(&g["egress_bytes"]),
            format::cell(&g["cost"]),
        ]);
    }
    t.render()
}
