//! `paddock pools [ls | set TEMPLATE N|MIN..MAX | rm TEMPLATE]`: the server's warm pools
//! (`docs/pools.md`; operator or admin key).

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::api::Api;
use super::{Conn, format, write_stdout};

#[derive(Args, Debug)]
pub(crate) struct PoolsArgs {
    #[command(subcommand)]
    pub(crate) cmd: Option<PoolsCmd>,
    /// Print JSON instead of a table (for `ls`, the default).
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

#[derive(Subcommand, Debug)]
pub(crate) enum PoolsCmd {
    /// List the pools: size, target, ready, hits, misses, memory per pooled sandbox.
    Ls,
    /// Set a template's pool: N ready sandboxes, or MIN..MAX sized by the last minute's
    /// creates.
    Set {
        template: String,
        /// N or MIN..MAX (each 0 to 64).
        size: String,
    },
    /// Remove a template's pool and destroy its sandboxes.
    Rm { template: String },
}

pub(crate) async fn run(a: PoolsArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    match a.cmd.unwrap_or(PoolsCmd::Ls) {
        PoolsCmd::Ls => {
            let v: Value = api.get_json(&["v1", "pools"]).await?;
            if a.json {
                write_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
                return Ok(0);
            }
            let mut t = format::Table::new(&[
                "TEMPLATE",
                "MIN",
                "MAX",
                "TARGET",
                "READY",
                "HITS",
                "MISSES",
                "MEM/SANDBOX",
                "LAST ERROR",
            ]);
            for x in v["pools"].as_array().into_iter().flatten() {
                t.row(vec![
                    format::cell(&x["template"]),
                    format::cell(&x["min"]),
                    format::cell(&x["max"]),
                    format::cell(&x["target"]),
                    format::cell(&x["ready"]),
                    format::cell(&x["hits"]),
                    format::cell(&x["misses"]),
                    x["memory_bytes_per_sandbox"]
                        .as_u64()
                        .map_or_else(|| "-".into(), format::bytes),
                    format::cell(&x["last_error"]),
                ]);
            }
            write_stdout(&t.render())?;
        }
        PoolsCmd::Set { template, size } => {
            let body = match size.split_once("..") {
                Some((lo, hi)) => json!({ "min": num(lo)?, "max": num(hi)? }),
                None => json!({ "size": num(&size)? }),
            };
            let v: Value = api
                .json(
                    api.request(Method::PUT, api.url(&["v1", "pools", &template]))
                        .json(&body),
                )
                .await?;
            write_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
        }
        PoolsCmd::Rm { template } => api.delete(&["v1", "pools", &template]).await?,
    }
    Ok(0)
}

/// A size as typed; the server checks the range and names the limit.
fn num(s: &str) -> Result<i64> {
    match s.trim().parse() {
        Ok(n) => Ok(n),
        Err(_) => bail!("pool size {s:?} is not a whole number (N or MIN..MAX)"),
    }
}
