//! `paddock secret create|update|ls|info|rm|rotate-key` (`/v1/secrets`, docs/secrets.md).
//! A value is read from a file or stdin, never from the command line (visible in `ps`), and
//! never printed: the server does not return values.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::api::Api;
use super::format::{self, Table};
use super::{Conn, write_stdout};

/// `paddock secret`.
#[derive(Args, Debug)]
pub(crate) struct SecretArgs {
    #[command(subcommand)]
    pub(crate) cmd: SecretCmd,
}

/// The `secret` subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum SecretCmd {
    /// Create a secret; its value comes from --from-file or stdin, byte for byte.
    Create(SecretWriteArgs),
    /// Store a new version of a secret's value (from --from-file or stdin).
    Update(SecretWriteArgs),
    /// List the tenant's secrets (names, versions, metadata; never values).
    Ls(SecretLsArgs),
    /// Show one secret's metadata.
    Info(SecretNameArgs),
    /// Delete a secret and every version of it.
    Rm(SecretNameArgs),
    /// Re-encrypt every secret under a new master key (admin). The file is read by the
    /// server, on its host; restart the server with that key afterwards.
    RotateKey(RotateArgs),
}

/// `secret create` and `secret update`.
#[derive(Args, Debug)]
pub(crate) struct SecretWriteArgs {
    /// The secret's name (or, for update, its id).
    pub(crate) name: String,
    /// Read the value from this file instead of stdin.
    #[arg(long)]
    pub(crate) from_file: Option<PathBuf>,
    /// Metadata `KEY=VALUE` (repeatable; on update it replaces the stored metadata).
    #[arg(long = "meta", value_parser = parse_kv)]
    pub(crate) meta: Vec<(String, String)>,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// `secret ls`.
#[derive(Args, Debug)]
pub(crate) struct SecretLsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// `secret info` and `secret rm`.
#[derive(Args, Debug)]
pub(crate) struct SecretNameArgs {
    /// The secret's name or id.
    pub(crate) name: String,
    /// Print JSON instead of text (info).
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// `secret rotate-key`.
#[derive(Args, Debug)]
pub(crate) struct RotateArgs {
    /// The new key's file, as a path on the server's host (mode 0600 or 0400).
    #[arg(long)]
    pub(crate) key_file: String,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// The value: the file's bytes, or stdin's (which must not be a terminal).
fn read_value(from: Option<&PathBuf>) -> Result<String> {
    let bytes = match from {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => {
            use std::io::IsTerminal as _;
            if std::io::stdin().is_terminal() {
                bail!(
                    "give the value on stdin (e.g. `printf %s \"$VALUE\" | paddock secret create NAME`) or with --from-file"
                );
            }
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .context("reading the value from stdin")?;
            b
        }
    };
    String::from_utf8(bytes).context("a secret value must be UTF-8 text")
}

/// Runs a `secret` subcommand.
pub(crate) async fn run(a: SecretArgs) -> Result<i32> {
    match a.cmd {
        SecretCmd::Create(c) => {
            let value = read_value(c.from_file.as_ref())?;
            let api = Api::new(&c.conn)?;
            let mut b = json!({ "name": c.name, "value": value });
            if !c.meta.is_empty() {
                b["metadata"] = meta(&c.meta);
            }
            let v: Value = api.post_json(&["v1", "secrets"], &b).await?;
            eprintln!(
                "paddock: created secret {} ({}), version {}",
                format::cell(&v["name"]),
                format::cell(&v["id"]),
                format::cell(&v["version"])
            );
        }
        SecretCmd::Update(c) => {
            let value = read_value(c.from_file.as_ref())?;
            let api = Api::new(&c.conn)?;
            let mut b = json!({ "value": value });
            if !c.meta.is_empty() {
                b["metadata"] = meta(&c.meta);
            }
            let v: Value = api
                .json(
                    api.request(reqwest::Method::PUT, api.url(&["v1", "secrets", &c.name]))
                        .json(&b),
                )
                .await?;
            eprintln!(
                "paddock: secret {} is at version {}",
                format::cell(&v["name"]),
                format::cell(&v["version"])
            );
        }
        SecretCmd::Ls(c) => {
            let api = Api::new(&c.conn)?;
            let mut all = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let mut q = vec![("limit", "1000".to_owned())];
                if let Some(a) = &after {
                    q.push(("after", a.clone()));
                }
                let v: Value = api
                    .json(
                        api.request(reqwest::Method::GET, api.url(&["v1", "secrets"]))
                            .query(&q),
                    )
                    .await?;
                all.extend(v["secrets"].as_array().cloned().unwrap_or_default());
                match v["next"].as_str() {
                    Some(n) => after = Some(n.to_owned()),
                    None => break,
                }
            }
            if c.json {
                write_stdout(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&Value::Array(all))?
                ))?;
            } else {
                write_stdout(&secret_table(OffsetDateTime::now_utc(), &all))?;
            }
        }
        SecretCmd::Info(c) => {
            let api = Api::new(&c.conn)?;
            let v: Value = api.get_json(&["v1", "secrets", &c.name]).await?;
            if c.json {
                write_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            } else {
                write_stdout(&secret_table(OffsetDateTime::now_utc(), &[v]))?;
            }
        }
        SecretCmd::Rm(c) => {
            let api = Api::new(&c.conn)?;
            api.delete(&["v1", "secrets", &c.name]).await?;
        }
        SecretCmd::RotateKey(c) => {
            let api = Api::new(&c.conn)?;
            let v: Value = api
                .post_json(
                    &["v1", "secret-key", "rotate"],
                    &json!({ "key_file": c.key_file }),
                )
                .await?;
            eprintln!(
                "paddock: re-encrypted {} secret versions under key {}; restart the server with the new key",
                format::cell(&v["reencrypted"]),
                format::cell(&v["key_id"])
            );
        }
    }
    Ok(0)
}

fn meta(kv: &[(String, String)]) -> Value {
    Value::Object(
        kv.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// The `secret ls` table.
pub(crate) fn secret_table(now: OffsetDateTime, secrets: &[Value]) -> String {
    let mut t = Table::new(&["NAME", "ID", "VERSION", "UPDATED", "METADATA"]);
    for s in secrets {
        t.row(vec![
            format::cell(&s["name"]),
            format::cell(&s["id"]),
            format::cell(&s["version"]),
            format::relative_json(now, &s["updated_at"]),
            format::pairs(&s["metadata"]),
        ]);
    }
    t.render()
}
