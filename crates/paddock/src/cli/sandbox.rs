//! Sandbox lifecycle commands: `create`, `kill`, `ls`, `url`, `timeout`, and the server's
//! `status`.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::api::Api;
use super::format::{self, Table};
use super::network::port_url;
use super::{Conn, kv_map, parse_kv, parse_size_arg, parse_timeout, write_stdout};

/// `paddock create`.
#[derive(Args, Debug)]
pub(crate) struct CreateArgs {
    /// Template to start from.
    #[arg(long, default_value = "base")]
    pub(crate) template: String,
    /// Destroy the sandbox after this long (90, 90s, 5m, 2h, 1d); default: the server's.
    #[arg(long, value_parser = parse_timeout)]
    pub(crate) timeout: Option<Duration>,
    /// Memory limit, e.g. 512M.
    #[arg(long, value_parser = parse_size_arg)]
    pub(crate) memory: Option<String>,
    /// CPU limit in cores, e.g. 1 or 0.5.
    #[arg(long, value_parser = parse_cpus)]
    pub(crate) cpus: Option<f64>,
    /// Disk limit of the writable layer, e.g. 2G.
    #[arg(long, value_parser = parse_size_arg)]
    pub(crate) disk: Option<String>,
    /// Most processes at once.
    #[arg(long)]
    pub(crate) pids: Option<u32>,
    /// Environment variable of every command, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_parser = parse_kv)]
    pub(crate) env: Vec<(String, String)>,
    /// Metadata, KEY=VALUE (repeatable); `ls --metadata` filters on it.
    #[arg(long, value_parser = parse_kv)]
    pub(crate) metadata: Vec<(String, String)>,
    /// Default user of commands.
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// Network: none (loopback only, the default), all (the internet, never the host,
    /// other sandboxes or private ranges), or allow (only the --allow entries).
    #[arg(long, value_enum)]
    pub(crate) network: Option<super::network::Mode>,
    /// An IPv4 CIDR or a name (`*.example.com` for subdomains) the sandbox may reach
    /// (repeatable, at most 256; alone it means --network allow).
    #[arg(long, value_name = "NAME_OR_CIDR")]
    pub(crate) allow: Vec<String>,
    /// Send this sandbox's events (created, timeout warnings, oom, killed...) to this URL.
    #[arg(long, value_name = "URL")]
    pub(crate) webhook: Option<String>,
    /// A tenant secret as an environment variable, ENV=SECRET (repeatable).
    #[arg(long = "secret-env", value_parser = parse_kv, value_name = "ENV=SECRET")]
    pub(crate) secret_env: Vec<(String, String)>,
    /// A tenant secret as the file /run/secrets/FILE, FILE or FILE=SECRET (repeatable).
    #[arg(long = "secret-file", value_name = "FILE[=SECRET]")]
    pub(crate) secret_file: Vec<String>,
    /// Isolation backend: native or gvisor (default: the template's, else the server's).
    #[arg(long, value_parser = parse_isolation)]
    pub(crate) isolation: Option<paddock_core::Isolation>,
    /// A volume mounted at PATH, read-only with `:ro` (repeatable).
    #[arg(long = "volume", value_parser = super::volume::parse_mount, value_name = "NAME:PATH[:ro]")]
    pub(crate) volume: Vec<Value>,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

pub(crate) fn parse_isolation(s: &str) -> Result<paddock_core::Isolation, String> {
    s.parse()
        .map_err(|e: paddock_core::UnknownIsolation| e.to_string())
}

fn parse_cpus(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(c) if c.is_finite() && c > 0.0 => Ok(c),
        _ => Err(format!("expected a positive number of cores, got {s:?}")),
    }
}

/// The `POST /v1/sandboxes` body of `create`: only the flags given (and the template).
pub(crate) fn create_body(a: &CreateArgs) -> Value {
    let mut b = json!({ "template": a.template });
    if let Some(t) = a.timeout {
        b["timeout"] = t.as_secs().into();
    }
    if let Some(m) = &a.memory {
        b["memory"] = m.clone().into();
    }
    if let Some(c) = a.cpus {
        b["cpus"] = c.into();
    }
    if let Some(d) = &a.disk {
        b["disk"] = d.clone().into();
    }
    if let Some(p) = a.pids {
        b["pids"] = p.into();
    }
    if !a.env.is_empty() {
        b["env"] = json!(kv_map(&a.env));
    }
    if !a.metadata.is_empty() {
        b["metadata"] = json!(kv_map(&a.metadata));
    }
    if let Some(u) = &a.user {
        b["user"] = u.clone().into();
    }
    if !a.volume.is_empty() {
        b["volumes"] = Value::Array(a.volume.clone());
    }
    if let Some(w) = &a.webhook {
        b["webhook_url"] = w.clone().into();
    }
    if let Some(i) = a.isolation {
        b["isolation"] = i.as_str().into();
    }
    if !a.secret_env.is_empty() || !a.secret_file.is_empty() {
        let mut m = serde_json::Map::new();
        for (env, secret) in &a.secret_env {
            m.insert(env.clone(), secret.clone().into());
        }
        for f in &a.secret_file {
            let (file, secret) = f.split_once('=').unwrap_or((f, f));
            m.insert(file.to_owned(), json!({ "secret": secret, "file": true }));
        }
        b["secrets"] = Value::Object(m);
    }
    // Checked at parse time by `create`; a bad combination is simply not sent here.
    if let Ok(Some(n)) = super::network::policy(a.network, &a.allow) {
        b["network"] = n;
    }
    b
}

/// Creates a sandbox; stdout gets its id alone.
pub(crate) async fn create(a: CreateArgs) -> Result<i32> {
    super::network::policy(a.network, &a.allow)?;
    let api = Api::new(&a.conn)?;
    let v: Value = api
        .post_json(&["v1", "sandboxes"], &create_body(&a))
        .await?;
    let Some(id) = v.get("id").and_then(Value::as_str) else {
        bail!("the server's answer has no sandbox id");
    };
    write_stdout(&format!("{id}\n"))?;
    Ok(0)
}

/// `paddock kill`.
#[derive(Args, Debug)]
pub(crate) struct KillArgs {
    /// Sandboxes to destroy.
    #[arg(required = true)]
    pub(crate) ids: Vec<String>,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// Destroys each sandbox; prints nothing on success. With several ids, every one is tried
/// and each failure reported.
pub(crate) async fn kill(a: KillArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    if let [id] = a.ids.as_slice() {
        api.delete(&["v1", "sandboxes", id]).await?;
        return Ok(0);
    }
    let mut code = 0;
    for id in &a.ids {
        if let Err(e) = api.delete(&["v1", "sandboxes", id]).await {
            eprintln!("paddock: {id}: {e:#}");
            code = 1;
        }
    }
    Ok(code)
}

/// `paddock ls`.
#[derive(Args, Debug)]
pub(crate) struct LsArgs {
    /// Which sandboxes: running, stopped or all (default: starting and running).
    #[arg(long, value_parser = ["starting", "running", "stopped", "all"])]
    pub(crate) state: Option<String>,
    /// Only sandboxes with this metadata, KEY=VALUE (repeatable; all must match).
    #[arg(long, value_parser = parse_kv)]
    pub(crate) metadata: Vec<(String, String)>,
    /// Print a JSON array of the sandboxes instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also list creates that failed (the sandbox never ran), as state `failed`.
    #[arg(long)]
    pub(crate) failed: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// Whether a record is a create that failed: stopped for `failed` without ever being ready.
pub(crate) fn failed_create(s: &Value) -> bool {
    s["stop_reason"] == "failed" && s["ready_at"].is_null()
}

/// Lists sandboxes (following the server's pages).
pub(crate) async fn ls(a: LsArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut q: Vec<(String, String)> = Vec::new();
        if let Some(s) = &a.state {
            q.push(("state".into(), s.clone()));
        }
        for (k, v) in &a.metadata {
            q.push((format!("metadata.{k}"), v.clone()));
        }
        if let Some(n) = &after {
            q.push(("after".into(), n.clone()));
        }
        let page: Value = api
            .json(
                api.request(reqwest::Method::GET, api.url(&["v1", "sandboxes"]))
                    .query(&q),
            )
            .await?;
        let items = page
            .get("sandboxes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let empty = items.is_empty();
        all.extend(items);
        match page.get("next").and_then(Value::as_str) {
            Some(n) if !empty && after.as_deref() != Some(n) => after = Some(n.to_owned()),
            _ => break,
        }
    }
    let failed = all.iter().filter(|s| failed_create(s)).count();
    if !a.failed {
        all.retain(|s| !failed_create(s));
    }
    if a.json {
        write_stdout(&format!(
            "{}\n",
            serde_json::to_string_pretty(&Value::Array(all))?
        ))?;
    } else {
        write_stdout(&sandbox_table(OffsetDateTime::now_utc(), &all))?;
    }
    if failed > 0 && !a.failed {
        eprintln!("paddock: {failed} failed creates not shown (--failed lists them)");
    }
    Ok(0)
}

/// The `ls` table.
pub(crate) fn sandbox_table(now: OffsetDateTime, items: &[Value]) -> String {
    let mut t = Table::new(&["ID", "TEMPLATE", "STATE", "CREATED", "EXPIRES", "METADATA"]);
    for s in items {
        let state = if failed_create(s) {
            "failed".to_owned()
        } else {
            format::cell(&s["state"])
        };
        let expires = if state == "stopped" {
            "-".to_owned()
        } else {
            format::relative_json(now, &s["expires_at"])
        };
        t.row(vec![
            format::cell(&s["id"]),
            format::cell(&s["template"]),
            state,
            format::relative_json(now, &s["created_at"]),
            expires,
            format::pairs(&s["metadata"]),
        ]);
    }
    t.render()
}

/// `paddock url`.
#[derive(Args, Debug)]
pub(crate) struct UrlArgs {
    /// The sandbox.
    pub(crate) id: String,
    /// The port inside the sandbox.
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) port: u16,
    /// Print the path-routed URL ({server}/proxy/{id}/{port}/), which needs no wildcard DNS.
    #[arg(long)]
    pub(crate) path: bool,
    /// Leave the access token out of the URL of a private port.
    #[arg(long)]
    pub(crate) no_token: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// Prints the proxy URL of a port: `http://{port}-{id}.{domain}[:port]/` (or the path form),
/// with `?paddock_token=` for a private port; notes on stderr when nothing listens yet.
pub(crate) async fn url(a: UrlArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    let port = a.port.to_string();
    let v: Value = api
        .get_json(&["v1", "sandboxes", a.id.as_str(), "ports", port.as_str()])
        .await?;
    let key = if a.path { "path_url" } else { "url" };
    let Some(base) = v.get(key).and_then(Value::as_str) else {
        bail!("the server did not give the URL of port {}", a.port);
    };
    let public = v.get("public").and_then(Value::as_bool).unwrap_or(false);
    let token = v.get("access_token").and_then(Value::as_str);
    write_stdout(&format!(
        "{}\n",
        port_url(base, (!public && !a.no_token).then_some(token).flatten())
    ))?;
    if v.get("listening").and_then(Value::as_bool) == Some(false) {
        eprintln!(
            "paddock: note: nothing listens on port {} in the sandbox yet",
            a.port
        );
    }
    Ok(0)
}

/// `paddock status`.
#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    /// Print the server's JSON as is.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// Prints the server's status.
pub(crate) async fn status(a: StatusArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    let v: Value = api.get_json(&["v1", "status"]).await?;
    if a.json {
        write_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
    } else {
        write_stdout(&status_text(api.base().as_str(), &v))?;
    }
    Ok(0)
}

/// The readable form of `GET /v1/status`.
pub(crate) fn status_text(server: &str, v: &Value) -> String {
    let mut t = Table::new(&["server", server.trim_end_matches('/')]);
    t.row(vec!["version".into(), format::cell(&v["version"])]);
    if let Some(u) = v["uptime_secs"].as_u64() {
        t.row(vec!["uptime".into(), format::short_duration(u)]);
    }
    if !v["sandboxes_running"].is_null() {
        t.row(vec![
            "sandboxes running".into(),
            format::cell(&v["sandboxes_running"]),
        ]);
    }
    for k in ["runtime", "domain"] {
        if !v[k].is_null() {
            t.row(vec![k.into(), format::cell(&v[k])]);
        }
    }
    for (label, value) in load_rows(&v["load"]) {
        t.row(vec![label.into(), value]);
    }
    t.row(vec![
        "port proxy".into(),
        if v["proxy"].as_bool() == Some(true) {
            "yes".into()
        } else {
            "no".into()
        },
    ]);
    if let Some(limits) = v["limits"].as_object() {
        for (k, val) in limits {
            t.row(vec![limit_label(k), limit_value(k, val)]);
        }
    }
    t.render()
}

/// The host's load from `status.load`: load averages with the CPU count, memory, disk,
/// and what the sandboxes use. Rows whose figures the server did not give are left out.
fn load_rows(load: &Value) -> Vec<(&'static str, String)> {
    let mut rows = Vec::new();
    let cpus = load["cpus"].as_u64().unwrap_or(0);
    if let Some(avg) = load["load_avg"].as_array().filter(|a| a.len() == 3) {
        let avg: Vec<String> = avg
            .iter()
            .map(|x| format!("{:.2}", x.as_f64().unwrap_or(0.0)))
            .collect();
        rows.push((
            "load (1/5/15 min)",
            format!("{} on {cpus} cpus", avg.join(" ")),
        ));
    }
    let free_of = |free: &Value, total: &Value| match (free.as_u64(), total.as_u64()) {
        (Some(f), Some(t)) => Some(format!("{} free of {}", format::bytes(f), format::bytes(t))),
        _ => None,
    };
    if let Some(m) = free_of(&load["memory_available_bytes"], &load["memory_total_bytes"]) {
        rows.push(("memory", m));
    }
    if let Some(d) = free_of(&load["disk_free_bytes"], &load["disk_total_bytes"]) {
        rows.push(("sandbox disk", d));
    }
    if let (Some(c), Some(m)) = (
        load["sandbox_cpu_cores"].as_f64(),
        load["sandbox_memory_bytes"].as_u64(),
    ) {
        rows.push((
            "sandboxes use",
            format!("{c:.2} cpus, {} memory", format::bytes(m)),
        ));
    }
    rows
}

/// `max_timeout_secs` → `max timeout`.
fn limit_label(k: &str) -> String {
    let k = ["_secs", "_bytes"]
        .iter()
        .find_map(|s| k.strip_suffix(s))
        .unwrap_or(k);
    k.replace('_', " ")
}

/// Seconds and bytes in units; other values as they are.
fn limit_value(k: &str, v: &Value) -> String {
    match v.as_u64() {
        Some(n) if k.ends_with("_secs") => format::short_duration(n),
        Some(n) if k.ends_with("_bytes") => format::bytes(n),
        _ => format::cell(v),
    }
}

/// `paddock timeout`.
#[derive(Args, Debug)]
pub(crate) struct TimeoutArgs {
    /// The sandbox.
    pub(crate) id: String,
    /// The new timeout, counted from now (90, 90s, 5m, 2h, 1d).
    #[arg(value_parser = parse_timeout)]
    pub(crate) duration: Duration,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// Sets the timeout; prints the new expiry time (RFC 3339).
pub(crate) async fn timeout(a: TimeoutArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    let v: Value = api
        .post_json(
            &["v1", "sandboxes", &a.id, "timeout"],
            &json!({ "timeout": a.duration.as_secs() }),
        )
        .await?;
    write_stdout(&format!("{}\n", format::cell(&v["expires_at"])))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_table() {
        let now = format::parse_time("2025-01-01T12:00:00Z").unwrap();
        let items = vec![
            json!({"id": "sbx_a", "template": "base", "state": "running",
                   "created_at": "2025-01-01T11:58:00Z", "expires_at": "2025-01-01T12:28:00Z",
                   "metadata": {"team": "x", "ci": "1"}}),
            json!({"id": "sbx_bb", "template": "python", "state": "stopped",
                   "created_at": "2024-12-31T12:00:00Z", "expires_at": "2024-12-31T12:05:00Z",
                   "metadata": {}}),
        ];
        assert_eq!(
            sandbox_table(now, &items),
            "ID      TEMPLATE  STATE    CREATED  EXPIRES  METADATA\n\
             sbx_a   base      running  2m ago   in 28m   ci=1,team=x\n\
             sbx_bb  python    stopped  1d ago   -        -\n"
        );
        let failed = json!({"id": "sbx_f", "template": "base", "state": "stopped",
            "stop_reason": "failed", "ready_at": null, "created_at": "2025-01-01T11:59:00Z",
            "metadata": {}});
        assert!(failed_create(&failed));
        assert!(
            !failed_create(&items[1]),
            "a sandbox that ran and stopped is listed"
        );
        let t = sandbox_table(now, &[failed]);
        assert_eq!(
            t.lines().nth(1).and_then(|l| l.split_whitespace().nth(2)),
            Some("failed"),
            "{t}"
        );
        assert_eq!(
            sandbox_table(now, &[]),
            "ID  TEMPLATE  STATE  CREATED  EXPIRES  METADATA\n"
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            port_url("http://8080-a.localhost:7070/", Some("t0k")),
            "http://8080-a.localhost:7070/?paddock_token=t0k"
        );
        assert_eq!(
            port_url("http://h/proxy/a/3000/", None),
            "http://h/proxy/a/3000/"
        );
    }

    #[test]
    fn status_output() {
        let v = json!({
            "version": "0.1.0", "uptime_secs": 3725, "sandboxes_running": 2, "runtime": "native",
            "domain": "localhost",
            "load": {"load_avg": [0.5, 0.25, 1.0], "cpus": 2,
                     "memory_total_bytes": 25769803776u64, "memory_available_bytes": 21474836480u64,
                     "disk_total_bytes": 107374182400u64, "disk_free_bytes": 53687091200u64,
                     "sandbox_cpu_cores": 0.5, "sandbox_memory_bytes": 134217728},
            "limits": {"max_timeout_secs": 86400, "max_json_body_bytes": 1048576,
                       "max_sandboxes_per_key": 100, "rate_per_sec": 200.0},
        });
        assert_eq!(
            status_text("http://127.0.0.1:7070/", &v),
            "server                 http://127.0.0.1:7070\n\
             version                0.1.0\n\
             uptime                 1h2m\n\
             sandboxes running      2\n\
             runtime                native\n\
             domain                 localhost\n\
             load (1/5/15 min)      0.50 0.25 1.00 on 2 cpus\n\
             memory                 20 GiB free of 24 GiB\n\
             sandbox disk           50 GiB free of 100 GiB\n\
             sandboxes use          0.50 cpus, 128 MiB memory\n\
             port proxy             no\n\
             max json body          1 MiB\n\
             max sandboxes per key  100\n\
             max timeout            1d\n\
             rate per sec           200.0\n"
        );
    }
}
