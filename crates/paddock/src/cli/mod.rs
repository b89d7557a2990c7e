//! The client commands of the `paddock` binary: they talk to a Paddock server over its REST
//! API (`/v1`) and never touch the local data directory.
//!
//! Every client command takes `--url` (`PADDOCK_URL`) and `--api-key` (`PADDOCK_API_KEY`).
//! Errors end as one line on stderr, `paddock: <message> [<code>]`, and exit code 1; `exec`
//! and `shell` exit with the remote command's code, `test` with 0 or 1.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

mod admin;
mod alerts;
mod api;
mod code;
mod desktop;
mod exec;
mod files;
mod format;
mod logs;
mod mcp;
mod network;
mod nodes;
mod pause;
mod rollout;
mod sandbox;
pub(crate) use sandbox::parse_isolation;
mod pools;
mod secret;
mod service;
mod shell;
mod snapshot;
mod sync;
mod template;
mod testcmd;
mod usage;
mod volume;

/// How to reach the server. Flattened into every client command.
#[derive(Args, Debug, Clone)]
pub(crate) struct Conn {
    /// URL of the Paddock server.
    #[arg(long, env = "PADDOCK_URL", default_value = "http://127.0.0.1:7070")]
    pub(crate) url: String,
    /// API key (the environment variable is safer: flags are visible in `ps`).
    #[arg(long, env = "PADDOCK_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,
}

/// The client commands, flattened into the binary's top-level subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum ClientCmd {
    /// Create a sandbox on the server and print its id.
    #[command(visible_alias = "init")]
    Create(sandbox::CreateArgs),
    /// Run a command in a sandbox, streaming its output; exits with its exit code.
    Exec(exec::ExecArgs),
    /// Open an interactive terminal in a sandbox.
    Shell(shell::ShellArgs),
    /// Copy a local file or directory into a sandbox.
    Upload(files::UploadArgs),
    /// Copy a file or directory out of a sandbox.
    Download(files::DownloadArgs),
    /// Make a sandbox directory match a local one, or back: only changes, never credentials.
    Sync(sync::SyncArgs),
    /// Destroy sandboxes.
    Kill(sandbox::KillArgs),
    /// List sandboxes.
    Ls(sandbox::LsArgs),
    /// Show a sandbox's events and commands; `--follow` waits for new events.
    Logs(logs::LogsArgs),
    /// Run a project's tests in a sandbox and summarize them; exits 1 on failures.
    Test(testcmd::TestArgs),
    /// Run Python, JavaScript or bash in a sandbox's code interpreter (template
    /// code-interpreter); a REPL without CODE; exits 1 when the code raised.
    Code(code::CodeArgs),
    /// Print the proxy URL of a sandbox's port (with its access token unless the port is public).
    #[command(visible_alias = "get-host")]
    Url(sandbox::UrlArgs),
    /// Print (or --open) the live view URL of a desktop sandbox, starting the view if needed.
    Desktop(desktop::DesktopArgs),
    /// Show a sandbox's network policy, or set it: none, all, or allow --allow NAME_OR_CIDR.
    Network(network::NetworkArgs),
    /// Make a sandbox's port public (no access token) or private again; prints its URL.
    Port(network::PortArgs),
    /// Show the server's version, uptime and limits.
    Status(sandbox::StatusArgs),
    /// Set a sandbox's timeout, counted from now.
    Timeout(sandbox::TimeoutArgs),
    /// Pause a sandbox: `full` freezes it, `filesystem` stops it and keeps its files.
    Pause(pause::PauseArgs),
    /// Resume a paused sandbox.
    Resume(pause::ResumeArgs),
    /// Filesystem snapshots of sandboxes, usable as templates: create, ls, rm.
    Snapshot(snapshot::SnapshotArgs),
    /// Fork a running sandbox into N children (copy-on-write); prints their ids.
    Fork(snapshot::ForkArgs),
    /// Named persistent volumes of the tenant: create, ls, info, rm (mount them with
    /// `create --volume`).
    Volume(volume::VolumeArgs),
    /// The server's warm pools per template: ls, set TEMPLATE N|MIN..MAX, rm TEMPLATE
    /// (operator or admin).
    Pools(pools::PoolsArgs),
    /// Manage API keys (admin).
    Key(admin::KeyArgs),
    /// Show the audit trail (admin).
    Audit(admin::AuditArgs),
    /// Usage and cost per sandbox, key, tenant or template over a time range.
    Usage(usage::UsageArgs),
    /// Serve Paddock's MCP tools over stdin/stdout, for desktop agents (docs/mcp.md).
    Mcp(mcp::McpArgs),
    /// Manage the tenant's secrets: create, update, ls, info, rm, rotate-key (values are
    /// write-only).
    Secret(secret::SecretArgs),
    /// Manage templates: ls, show, build, pull, import, bootstrap, ready
    /// python|node|go|code-interpreter|desktop, log, rm, layers, prune.
    Template(template::TemplateArgs),
    /// Supervised services of a sandbox: ls, add, show, start, stop, restart, logs, rm.
    Service(service::ServiceArgs),
    /// The fleet's nodes (admin): ls, drain ID, undrain ID.
    Nodes(nodes::NodesArgs),
    /// Alerts: what is firing (ls), rules, add KIND URL, rm ID, test ID.
    Alerts(alerts::AlertsArgs),
    /// Rollouts: run a command or upload files on every sandbox matching a metadata
    /// selector, with a concurrency cap, max failures and a rollback: run, upload, ls, show,
    /// cancel.
    Rollout(rollout::RolloutArgs),
}

/// Runs a client command; the result is the process's exit code.
pub(crate) async fn run(cmd: ClientCmd) -> Result<i32> {
    match cmd {
        ClientCmd::Create(a) => sandbox::create(a).await,
        ClientCmd::Exec(a) => exec::run(a).await,
        ClientCmd::Shell(a) => shell::run(a).await,
        ClientCmd::Upload(a) => files::upload(a).await,
        ClientCmd::Download(a) => files::download(a).await,
        ClientCmd::Sync(a) => sync::run(a).await,
        ClientCmd::Kill(a) => sandbox::kill(a).await,
        ClientCmd::Ls(a) => sandbox::ls(a).await,
        ClientCmd::Logs(a) => logs::run(a).await,
        ClientCmd::Test(a) => testcmd::run(a).await,
        ClientCmd::Code(a) => code::run(a).await,
        ClientCmd::Url(a) => sandbox::url(a).await,
        ClientCmd::Desktop(a) => desktop::run(a).await,
        ClientCmd::Network(a) => network::network(a).await,
        ClientCmd::Port(a) => network::port(a).await,
        ClientCmd::Status(a) => sandbox::status(a).await,
        ClientCmd::Timeout(a) => sandbox::timeout(a).await,
        ClientCmd::Pause(a) => pause::pause(a).await,
        ClientCmd::Resume(a) => pause::resume(a).await,
        ClientCmd::Snapshot(a) => snapshot::run(a).await,
        ClientCmd::Fork(a) => snapshot::fork(a).await,
        ClientCmd::Volume(a) => volume::run(a).await,
        ClientCmd::Pools(a) => pools::run(a).await,
        ClientCmd::Key(a) => admin::key(a).await,
        ClientCmd::Audit(a) => admin::audit(a).await,
        ClientCmd::Usage(a) => usage::usage(a).await,
        ClientCmd::Secret(a) => secret::run(a).await,
        ClientCmd::Template(a) => template::run(a).await,
        ClientCmd::Mcp(a) => mcp::run(a).await,
        ClientCmd::Service(a) => service::run(a).await,
        ClientCmd::Nodes(a) => nodes::run(a).await,
        ClientCmd::Alerts(a) => alerts::run(a).await,
        ClientCmd::Rollout(a) => rollout::run(a).await,
    }
}

/// Writes to stdout and flushes; a failure (such as a closed pipe) is an error.
pub(crate) fn write_stdout(s: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| anyhow::anyhow!("writing to stdout: {e}"))
}

/// Parses `90`, `90s`, `5m`, `2h`, `1d` (a whole number and at most one unit).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("invalid duration {s:?}: expected e.g. 90, 90s, 5m, 2h or 1d");
    let (num, mul) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1),
        Some((i, 'm')) => (&t[..i], 60),
        Some((i, 'h')) => (&t[..i], 3600),
        Some((i, 'd')) => (&t[..i], 86400),
        Some(_) => (t, 1),
        None => return Err(bad()),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = n
        .checked_mul(mul)
        .ok_or_else(|| format!("duration {s:?} is too long"))?;
    Ok(Duration::from_secs(secs))
}

/// Parses a duration that must be at least one second (timeouts).
pub(crate) fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("timeout {s:?} must be at least 1s"));
    }
    Ok(d)
}

/// Checks a size such as `512M` or `2G` (sent to the server as written).
pub(crate) fn parse_size_arg(s: &str) -> Result<String, String> {
    paddock_core::parse_size(s)
        .map(|_| s.trim().to_owned())
        .map_err(|e| e.to_string())
}

/// Parses `KEY=VALUE` (the value may be empty and may contain `=`).
pub(crate) fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Collects repeated `KEY=VALUE` flags; a later key replaces an earlier one.
pub(crate) fn kv_map(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// A stand-in for the binary's top level, to parse client commands in tests.
    #[derive(Parser, Debug)]
    #[command(name = "paddock")]
    struct TestCli {
        #[command(subcommand)]
        cmd: ClientCmd,
    }

    fn parse(args: &[&str]) -> Result<ClientCmd, clap::Error> {
        let mut v = vec!["paddock"];
        v.extend_from_slice(args);
        TestCli::try_parse_from(v).map(|c| c.cmd)
    }

    #[test]
    fn cli_definition_is_valid() {
        TestCli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration(" 30m "), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in [
            "",
            "s",
            "m",
            "-5m",
            "5x",
            "1.5h",
            "5 m",
            "1h30m",
            "+5",
            "abc",
            "18446744073709551615d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_timeout("0s").is_err());
        assert_eq!(parse_timeout("1"), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn sizes_and_pairs() {
        assert_eq!(parse_size_arg("512M").as_deref(), Ok("512M"));
        assert_eq!(parse_size_arg("2G").as_deref(), Ok("2G"));
        assert_eq!(parse_size_arg("1048576").as_deref(), Ok("1048576"));
        assert!(parse_size_arg("12Q").is_err());
        assert!(parse_size_arg("lots").is_err());
        assert_eq!(parse_kv("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_kv("A="), Ok(("A".into(), String::new())));
        assert!(parse_kv("=x").is_err());
        assert!(parse_kv("novalue").is_err());
        let m = kv_map(&[("a".into(), "1".into()), ("a".into(), "2".into())]);
        assert_eq!(m.get("a").map(String::as_str), Some("2"));
    }

    #[test]
    fn create_flags() {
        let ClientCmd::Create(a) = parse(&[
            "create",
            "--template",
            "py",
            "--timeout",
            "30m",
            "--memory",
            "1G",
            "--cpus",
            "0.5",
            "--disk",
            "4G",
            "--pids",
            "64",
            "--env",
            "A=1",
            "--env",
            "B=2",
            "--metadata",
            "team=x",
            "--user",
            "root",
            "--url",
            "http://h:1",
            "--api-key",
            "k",
        ])
        .unwrap() else {
            panic!("not create")
        };
        let body = sandbox::create_body(&a);
        assert_eq!(
            body,
            serde_json::json!({
                "template": "py", "timeout": 1800, "memory": "1G", "cpus": 0.5, "disk": "4G",
                "pids": 64, "env": {"A": "1", "B": "2"}, "metadata": {"team": "x"}, "user": "root",
            })
        );
        assert_eq!(a.conn.url, "http://h:1");
        assert_eq!(a.conn.api_key.as_deref(), Some("k"));
        // Defaults: only the template is sent; the server fills in the rest.
        let ClientCmd::Create(a) = parse(&["init"]).unwrap() else {
            panic!("init is an alias of create")
        };
        assert_eq!(
            sandbox::create_body(&a),
            serde_json::json!({"template": "base"})
        );
        let ClientCmd::Create(a) = parse(&[
            "create",
            "--network",
            "allow",
            "--allow",
            "pypi.org",
            "--allow",
            "10.1.0.0/16",
            "--webhook",
            "https://hooks.example.com/x",
        ])
        .unwrap() else {
            panic!("not create")
        };
        assert_eq!(
            sandbox::create_body(&a),
            serde_json::json!({"template": "base", "webhook_url": "https://hooks.example.com/x",
                "network": {"mode": "allow", "allow": ["pypi.org", "10.1.0.0/16"]}})
        );
        let ClientCmd::Create(a) = parse(&["create", "--network", "all"]).unwrap() else {
            panic!("not create")
        };
        assert_eq!(
            sandbox::create_body(&a)["network"],
            serde_json::json!({"mode": "all", "allow": []})
        );
        assert!(parse(&["create", "--network", "some"]).is_err());
        assert!(parse(&["create", "--memory", "lots"]).is_err());
        assert!(parse(&["create", "--timeout", "0"]).is_err());
        assert!(parse(&["create", "--cpus", "-1"]).is_err());
        assert!(parse(&["create", "--env", "NOEQUALS"]).is_err());
    }

    #[test]
    fn exec_flags() {
        let ClientCmd::Exec(a) = parse(&[
            "exec",
            "sbx_1",
            "--env",
            "X=1",
            "--cwd",
            "/tmp",
            "--timeout",
            "60s",
            "--",
            "ls",
            "-la",
            "--color",
        ])
        .unwrap() else {
            panic!("not exec")
        };
        assert_eq!(a.id, "sbx_1");
        assert_eq!(a.cmd, ["ls", "-la", "--color"]);
        assert_eq!(
            exec::exec_body(&a, None),
            serde_json::json!({"cmd": ["ls", "-la", "--color"], "env": {"X": "1"}, "cwd": "/tmp", "timeout": 60})
        );
        // Without `--`, everything after the command is its arguments.
        let ClientCmd::Exec(a) = parse(&["exec", "sbx_1", "echo", "-n", "hi"]).unwrap() else {
            panic!("not exec")
        };
        assert_eq!(a.cmd, ["echo", "-n", "hi"]);
        assert!(!a.stdin);
        assert_eq!(
            exec::exec_body(&a, Some("in".into())),
            serde_json::json!({"cmd": ["echo", "-n", "hi"], "stdin": "in", "timeout": 0}),
            "without --timeout the CLI asks for no limit of the command's own"
        );
        assert!(parse(&["exec", "sbx_1"]).is_err(), "a command is required");
    }

    #[test]
    fn other_commands_parse() {
        assert!(
            matches!(parse(&["shell", "sbx_1", "--cmd", "/bin/sh"]), Ok(ClientCmd::Shell(a)) if a.cmd == "/bin/sh")
        );
        assert!(
            matches!(parse(&["shell", "sbx_1"]), Ok(ClientCmd::Shell(a)) if a.cmd == "/bin/bash -l")
        );
        assert!(matches!(
            parse(&["upload", "sbx_1", "a", "/b"]),
            Ok(ClientCmd::Upload(_))
        ));
        assert!(matches!(
            parse(&["download", "sbx_1", "/b", "a"]),
            Ok(ClientCmd::Download(_))
        ));
        assert!(
            matches!(parse(&["kill", "sbx_1", "sbx_2"]), Ok(ClientCmd::Kill(a)) if a.ids.len() == 2)
        );
        assert!(parse(&["kill"]).is_err());
        assert!(matches!(
            parse(&["ls", "--state", "all", "--metadata", "a=b", "--json"]),
            Ok(ClientCmd::Ls(a)) if a.json && a.state.as_deref() == Some("all") && a.metadata.len() == 1
        ));
        assert!(parse(&["ls", "--state", "bogus"]).is_err());
        assert!(matches!(parse(&["logs", "sbx_1", "-f"]), Ok(ClientCmd::Logs(a)) if a.follow));
        assert!(matches!(
            parse(&["test", "sbx_1", "--framework", "pytest", "--cwd", "/w", "--json"]),
            Ok(ClientCmd::Test(a)) if a.json && a.framework.as_deref() == Some("pytest")
        ));
        assert!(parse(&["test", "sbx_1", "--framework", "mocha"]).is_err());
        assert!(
            matches!(parse(&["url", "sbx_1", "8080"]), Ok(ClientCmd::Url(a)) if a.port == 8080)
        );
        assert!(matches!(
            parse(&["get-host", "sbx_1", "3000"]),
            Ok(ClientCmd::Url(_))
        ));
        assert!(parse(&["url", "sbx_1", "0"]).is_err());
        assert!(parse(&["url", "sbx_1", "70000"]).is_err());
        assert!(matches!(parse(&["status"]), Ok(ClientCmd::Status(_))));
        assert!(
            matches!(parse(&["network", "sbx_1"]), Ok(ClientCmd::Network(a)) if a.mode.is_none())
        );
        assert!(matches!(
            parse(&["network", "sbx_1", "allow", "--allow", "a.com"]),
            Ok(ClientCmd::Network(a)) if a.allow == ["a.com"]
        ));
        assert!(parse(&["network", "sbx_1", "open"]).is_err());
        assert!(matches!(
            parse(&["port", "sbx_1", "8080", "--public"]),
            Ok(ClientCmd::Port(a)) if a.public && a.port == 8080
        ));
        assert!(
            parse(&["port", "sbx_1", "8080"]).is_err(),
            "--public or --private"
        );
        assert!(parse(&["port", "sbx_1", "8080", "--public", "--private"]).is_err());
        assert!(matches!(
            parse(&["timeout", "sbx_1", "2h"]),
            Ok(ClientCmd::Timeout(a)) if a.duration == Duration::from_secs(7200)
        ));
        assert!(parse(&["timeout", "sbx_1", "soon"]).is_err());
        assert!(matches!(
            parse(&[
                "key",
                "create",
                "ci",
                "--role",
                "admin",
                "--max-sandboxes",
                "5"
            ]),
            Ok(ClientCmd::Key(_))
        ));
        assert!(parse(&["key", "create", "ci", "--role", "root"]).is_err());
        assert!(matches!(parse(&["key", "ls"]), Ok(ClientCmd::Key(_))));
        assert!(matches!(
            parse(&["key", "revoke", "key_1"]),
            Ok(ClientCmd::Key(_))
        ));
        assert!(matches!(
            parse(&["audit", "--sandbox", "sbx_1", "--limit", "5"]),
            Ok(ClientCmd::Audit(a)) if a.limit == Some(5)
        ));
    }
}
