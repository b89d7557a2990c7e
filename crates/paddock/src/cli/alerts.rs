//! `paddock alerts [ls | rules | add KIND URL | rm ID | test ID]`: alert rules and what is
//! firing (`/v1/alerts`, docs/alerts.md).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::api::Api;
use super::format::{self, Table};
use super::{Conn, write_stdout};

/// `paddock alerts`.
#[derive(Args, Debug)]
pub(crate) struct AlertsArgs {
    #[command(subcommand)]
    pub(crate) cmd: Option<AlertsCmd>,
    /// Print the server's JSON instead of a table (`ls`, `rules`).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// The `alerts` subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum AlertsCmd {
    /// What is firing now (the default); with --since, also what resolved since then.
    Ls {
        /// RFC 3339 or milliseconds since the epoch.
        #[arg(long)]
        since: Option<String>,
    },
    /// List the alert rules.
    Rules,
    /// Add a rule: KIND is node_down, sandbox_failed, sandbox_oom, create_failures,
    /// capacity or budget; parameters as NAME=VALUE (`--param count=3`).
    Add {
        kind: String,
        /// The webhook to deliver to.
        url: String,
        /// A parameter of the kind, NAME=VALUE (numbers and true/false are sent as such).
        #[arg(long = "param", short = 'p')]
        params: Vec<String>,
        /// json (default) or slack.
        #[arg(long)]
        format: Option<String>,
        /// The tenant the rule watches (admins only; default: yours).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Delete a rule (and its firings).
    Rm { id: String },
    /// Send a test message to a rule's webhook.
    Test { id: String },
}

/// `NAME=VALUE` pairs as a JSON object: numbers and booleans as such, the rest strings.
pub(crate) fn params(pairs: &[String]) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--param {p:?} is not NAME=VALUE"))?;
        let v = serde_json::from_str::<Value>(v)
            .ok()
            .filter(|j| j.is_number() || j.is_boolean())
            .unwrap_or_else(|| Value::String(v.to_owned()));
        m.insert(k.to_owned(), v);
    }
    Ok(m)
}

/// Runs `paddock alerts`.
pub(crate) async fn run(a: AlertsArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    match a.cmd.unwrap_or(AlertsCmd::Ls { since: None }) {
        AlertsCmd::Ls { since } => {
            let mut rb = api.request(reqwest::Method::GET, api.url(&["v1", "alerts"]));
            if let Some(s) = &since {
                rb = rb.query(&[("since", s)]);
            }
            let v: Value = api.json(rb).await?;
            let alerts = v["alerts"].as_array().cloned().unwrap_or_default();
            if a.json {
                write_stdout(&format!("{}\n", serde_json::to_string_pretty(&alerts)?))?;
            } else {
                write_stdout(&firing_table(OffsetDateTime::now_utc(), &alerts))?;
            }
        }
        AlertsCmd::Rules => {
            let v: Value = api.get_json(&["v1", "alerts", "rules"]).await?;
            let rules = v["rules"].as_array().cloned().unwrap_or_default();
            if a.json {
                write_stdout(&format!("{}\n", serde_json::to_string_pretty(&rules)?))?;
            } else {
                write_stdout(&rule_table(&rules))?;
            }
        }
        AlertsCmd::Add {
            kind,
            url,
            params: p,
            format,
            tenant,
        } => {
            let mut body = json!({"kind": kind, "url": url, "params": params(&p)?});
            if let Some(f) = format {
                body["format"] = f.into();
            }
            if let Some(t) = tenant {
                body["tenant"] = t.into();
            }
            let v: Value = api.post_json(&["v1", "alerts", "rules"], &body).await?;
            write_stdout(&format!("{}\n", format::cell(&v["id"])))?;
        }
        AlertsCmd::Rm { id } => {
            api.delete(&["v1", "alerts", "rules", &id]).await?;
            eprintln!("paddock: alert rule {id} deleted");
        }
        AlertsCmd::Test { id } => {
            let v: Value = api
                .post_json(&["v1", "alerts", "rules", &id, "test"], &json!({}))
                .await?;
            if v["delivered"] == true {
                eprintln!("paddock: delivered (HTTP {})", format::cell(&v["status"]));
            } else {
                eprintln!("paddock: not delivered: {}", format::cell(&v["error"]));
                return Ok(1);
            }
        }
    }
    Ok(0)
}

/// The `alerts ls` table.
pub(crate) fn firing_table(now: OffsetDateTime, alerts: &[Value]) -> String {
    let mut t = Table::new(&["STATE", "SINCE", "RULE", "SUBJECT", "SUMMARY"]);
    for a in alerts {
        t.row(vec![
            format::cell(&a["state"]),
            format::relative_json(now, &a["started_at"]),
            format::cell(&a["rule_id"]),
            format::cell(&a["subject"]),
            format::cell(&a["summary"]),
        ]);
    }
    t.render()
}

/// The `alerts rules` table.
pub(crate) fn rule_table(rules: &[Value]) -> String {
    let mut t = Table::new(&["ID", "KIND", "PARAMS", "FORMAT", "URL"]);
    for r in rules {
        t.row(vec![
            format::cell(&r["id"]),
            format::cell(&r["kind"]),
            r["params"].to_string(),
            format::cell(&r["format"]),
            format::cell(&r["url"]),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_keep_numbers_and_booleans() {
        let p = params(&[
            "count=3".into(),
            "resource=disk".into(),
            "degraded=false".into(),
        ])
        .expect("params");
        assert_eq!(
            Value::Object(p),
            json!({"count": 3, "resource": "disk", "degraded": false})
        );
        assert!(params(&["nope".into()]).is_err());
    }
}
