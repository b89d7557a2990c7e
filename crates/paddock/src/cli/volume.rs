//! `paddock volume create|ls|info|rm` (`docs/volumes.md`); mounted with
//! `paddock create --volume NAME:PATH[:ro]`.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::api::Api;
use super::{Conn, format, write_stdout};

#[derive(Args, Debug)]
pub(crate) struct VolumeArgs {
    #[command(subcommand)]
    pub(crate) cmd: VolumeCmd,
}

#[derive(Subcommand, Debug)]
pub(crate) enum VolumeCmd {
    /// Create a volume; prints its id.
    Create(VolumeCreateArgs),
    /// List the tenant's volumes.
    Ls(VolumeLsArgs),
    /// Show a volume as JSON (size, bytes used, the sandboxes mounting it).
    Info(VolumeNameArgs),
    /// Destroy a volume and its files (refused while sandboxes mount it).
    Rm(VolumeNameArgs),
}

#[derive(Args, Debug)]
pub(crate) struct VolumeCreateArgs {
    /// The volume's name.
    pub(crate) name: String,
    /// Its quota (`512M`, `2G`; default 1G).
    #[arg(long)]
    pub(crate) size: Option<String>,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

#[derive(Args, Debug)]
pub(crate) struct VolumeLsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

#[derive(Args, Debug)]
pub(crate) struct VolumeNameArgs {
    /// The volume's name or id.
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

pub(crate) async fn run(a: VolumeArgs) -> Result<i32> {
    match a.cmd {
        VolumeCmd::Create(a) => {
            let api = Api::new(&a.conn)?;
            let mut body = json!({ "name": a.name });
            if let Some(s) = &a.size {
                body["size"] = json!(s);
            }
            let v: Value = api.post_json(&["v1", "volumes"], &body).await?;
            write_stdout(&format!("{}\n", format::cell(&v["id"])))?;
        }
        VolumeCmd::Ls(a) => {
            let api = Api::new(&a.conn)?;
            let v: Value = api.get_json(&["v1", "volumes"]).await?;
            if a.json {
                write_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            } else {
                let mut t = format::Table::new(&["NAME", "ID", "SIZE", "USED", "MOUNTED BY"]);
                for x in v["volumes"].as_array().into_iter().flatten() {
                    t.row(vec![
                        format::cell(&x["name"]),
                        format::cell(&x["id"]),
                        format::bytes(x["size_bytes"].as_u64().unwrap_or(0)),
                        x["used_bytes"]
                            .as_u64()
                            .map_or_else(|| "-".into(), format::bytes),
                        x["mounted_by"]
                            .as_array()
                            .map(|m| m.iter().map(format::cell).collect::<Vec<_>>().join(","))
                            .unwrap_or_default(),
                    ]);
                }
                write_stdout(&t.render())?;
            }
        }
        VolumeCmd::Info(a) => {
            let api = Api::new(&a.conn)?;
            let v: Value = api.get_json(&["v1", "volumes", &a.name]).await?;
            write_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
        }
        VolumeCmd::Rm(a) => {
            let api = Api::new(&a.conn)?;
            api.delete(&["v1", "volumes", &a.name]).await?;
        }
    }
    Ok(0)
}

/// Parses `NAME:PATH[:ro|:rw]` of `paddock create --volume`.
pub(crate) fn parse_mount(s: &str) -> Result<Value> {
    let (name, rest) = s
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("--volume {s:?}: expected NAME:PATH[:ro]"))?;
    let (path, ro) = match rest.rsplit_once(':') {
        Some((p, "ro")) => (p, true),
        Some((p, "rw")) => (p, false),
        _ => (rest, false),
    };
    if name.is_empty() || !path.starts_with('/') {
        bail!("--volume {s:?}: expected NAME:PATH[:ro] with an absolute PATH");
    }
    Ok(json!({ "name": name, "path": path, "read_only": ro }))
}
