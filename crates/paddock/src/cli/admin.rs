//! Admin commands: `paddock key create|ls|revoke` (`/v1/keys`) and `paddock audit`
//! (`/v1/audit`). Both need an admin key.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::api::Api;
use super::format::{self, Table};
use super::{Conn, parse_timeout, write_stdout};

/// `paddock key`.
#[derive(Args, Debug)]
pub(crate) struct KeyArgs {
    #[command(subcommand)]
    pub(crate) cmd: KeyCmd,
}

/// The `key` subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum KeyCmd {
    /// Create an API key and print its secret (shown only this once).
    Create(KeyCreateArgs),
    /// List API keys.
    Ls(KeyLsArgs),
    /// Revoke an API key.
    Revoke(KeyRevokeArgs),
}

/// `paddock key create`.
#[derive(Args, Debug)]
pub(crate) struct KeyCreateArgs {
    /// A name for the key.
    pub(crate) name: String,
    /// The key's role (default developer; `user` is the old name of developer). See
    /// docs/roles.md.
    #[arg(long, value_parser = ["admin", "operator", "developer", "viewer", "user"])]
    pub(crate) role: Option<String>,
    /// An existing tenant id (default: a new tenant named after the key).
    #[arg(long)]
    pub(crate) tenant: Option<String>,
    /// Most sandboxes the key may run at once (default: the server's).
    #[arg(long)]
    pub(crate) max_sandboxes: Option<u32>,
    /// The key stops working after this long (90, 90s, 5m, 2h, 1d).
    #[arg(long, value_parser = parse_timeout)]
    pub(crate) expires_in: Option<Duration>,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// `paddock key ls`.
#[derive(Args, Debug)]
pub(crate) struct KeyLsArgs {
    /// Print the server's JSON array instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// `paddock key revoke`.
#[derive(Args, Debug)]
pub(crate) struct KeyRevokeArgs {
    /// The key's id (`key_...`, from `key ls`), not its secret.
    pub(crate) id: String,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// The `POST /v1/keys` body: only the flags given.
pub(crate) fn key_body(a: &KeyCreateArgs) -> Value {
    let mut b = json!({ "name": a.name });
    if let Some(r) = &a.role {
        b["role"] = r.clone().into();
    }
    if let Some(t) = &a.tenant {
        b["tenant"] = t.clone().into();
    }
    if let Some(m) = a.max_sandboxes {
        b["max_sandboxes"] = m.into();
    }
    if let Some(e) = a.expires_in {
        b["expires_in"] = e.as_secs().into();
    }
    b
}

/// Runs a `key` subcommand.
pub(crate) async fn key(a: KeyArgs) -> Result<i32> {
    match a.cmd {
        KeyCmd::Create(c) => {
            let api = Api::new(&c.conn)?;
            let v: Value = api.post_json(&["v1", "keys"], &key_body(&c)).await?;
            let Some(secret) = v["key"].as_str() else {
                bail!("the server's answer has no key");
            };
            write_stdout(&format!("{secret}\n"))?;
            eprintln!(
                "paddock: created key {} (role {}, tenant {}); its secret is shown only once",
                format::cell(&v["id"]),
                format::cell(&v["role"]),
                format::cell(&v["tenant"]),
            );
            if let Some(e) = v["e2b_key"].as_str() {
                eprintln!("paddock: for E2B SDKs, the same key: E2B_API_KEY={e}");
            }
        }
        KeyCmd::Ls(c) => {
            let api = Api::new(&c.conn)?;
            let v: Value = api.get_json(&["v1", "keys"]).await?;
            let keys = v["keys"].as_array().cloned().unwrap_or_default();
            if c.json {
                write_stdout(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&Value::Array(keys))?
                ))?;
            } else {
                write_stdout(&key_table(OffsetDateTime::now_utc(), &keys))?;
            }
        }
        KeyCmd::Revoke(c) => {
            let api = Api::new(&c.conn)?;
            api.delete(&["v1", "keys", &c.id]).await?;
        }
    }
    Ok(0)
}

/// The `key ls` table.
pub(crate) fn key_table(now: OffsetDateTime, keys: &[Value]) -> String {
    let mut t = Table::new(&[
        "ID", "NAME", "ROLE", "TENANT", "PREFIX", "MAX", "CREATED", "EXPIRES", "REVOKED",
    ]);
    for k in keys {
        t.row(vec![
            format::cell(&k["id"]),
            format::cell(&k["name"]),
            format::cell(&k["role"]),
            format::cell(&k["tenant"]),
            format::cell(&k["prefix"]),
            format::cell(&k["max_sandboxes"]),
            format::relative_json(now, &k["created_at"]),
            format::relative_json(now, &k["expires_at"]),
            format::relative_json(now, &k["revoked_at"]),
        ]);
    }
    t.render()
}

/// `paddock audit`.
#[derive(Args, Debug)]
pub(crate) struct AuditArgs {
    /// Only entries about this sandbox.
    #[arg(long)]
    pub(crate) sandbox: Option<String>,
    /// Most entries, newest first (1 to 1000; the server's default is 100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) limit: Option<u32>,
    /// Print the server's JSON array instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// Prints the audit trail.
pub(crate) async fn audit(a: AuditArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    let mut q: Vec<(&str, String)> = Vec::new();
    if let Some(s) = &a.sandbox {
        q.push(("sandbox_id", s.clone()));
    }
    if let Some(l) = a.limit {
        q.push(("limit", l.to_string()));
    }
    let v: Value = api
        .json(
            api.request(reqwest::Method::GET, api.url(&["v1", "audit"]))
                .query(&q),
        )
        .await?;
    let entries = v["entries"].as_array().cloned().unwrap_or_default();
    if a.json {
        write_stdout(&format!(
            "{}\n",
            serde_json::to_string_pretty(&Value::Array(entries))?
        ))?;
    } else {
        write_stdout(&audit_table(&entries))?;
    }
    Ok(0)
}

/// The `audit` table (times exact, as the server gives them).
pub(crate) fn audit_table(entries: &[Value]) -> String {
    let mut t = Table::new(&[
        "ID", "AT", "ACTOR", "TENANT", "ACTION", "SANDBOX", "OUTCOME", "DETAIL",
    ]);
    for e in entries {
        t.row(vec![
            format::cell(&e["id"]),
            format::cell(&e["at"]),
            format::cell(&e["actor"]),
            format::cell(&e["tenant"]),
            format::cell(&e["action"]),
            format::cell(&e["sandbox_id"]),
            format::cell(&e["outcome"]),
            format::cell(&e["detail"]),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bodies() {
        let a = KeyCreateArgs {
            name: "ci".into(),
            role: Some("admin".into()),
            tenant: None,
            max_sandboxes: Some(5),
            expires_in: Some(Duration::from_secs(86400)),
            conn: Conn {
                url: String::new(),
                api_key: None,
            },
        };
        assert_eq!(
            key_body(&a),
            json!({"name": "ci", "role": "admin", "max_sandboxes": 5, "expires_in": 86400})
        );
    }

    #[test]
    fn tables() {
        let now = format::parse_time("2025-01-02T00:00:00Z").unwrap();
        let keys = vec![json!({
            "id": "key_1", "name": "ci", "role": "user", "tenant": "tnt_1", "prefix": "pdk_abcd",
            "created_at": "2025-01-01T00:00:00Z", "expires_at": null, "revoked_at": null,
            "max_sandboxes": null,
        })];
        assert_eq!(
            key_table(now, &keys),
            "ID     NAME  ROLE  TENANT  PREFIX    MAX  CREATED  EXPIRES  REVOKED\n\
             key_1  ci    user  tnt_1   pdk_abcd  -    1d ago   -        -\n"
        );
        let entries = vec![json!({
            "id": 7, "at": "2025-01-01T00:00:00Z", "actor": "key_1", "tenant": "tnt_1",
            "action": "sandbox.create", "sandbox_id": "sbx_1", "outcome": "ok", "detail": null,
        })];
        assert_eq!(
            audit_table(&entries),
            "ID  AT                    ACTOR  TENANT  ACTION          SANDBOX  OUTCOME  DETAIL\n\
             7   2025-01-01T00:00:00Z  key_1  tnt_1   sandbox.create  sbx_1    ok       -\n"
        );
    }
}
