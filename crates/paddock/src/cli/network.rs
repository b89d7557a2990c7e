//! Network commands: `paddock network` (show or set a sandbox's policy,
//! `/v1/sandboxes/{id}/network`), `paddock port` (make a port public or private,
//! `/v1/sandboxes/{id}/ports/{port}/public`), and the hint `exec` prints when a command
//! fails to resolve a name in a sandbox without network.

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::api::Api;
use super::{Conn, write_stdout};

/// A sandbox's network mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Loopback only (the default).
    None,
    /// The internet (never the host, other sandboxes, metadata or private ranges); `--allow`
    /// opens listed private ranges.
    All,
    /// Only the `--allow` entries: IPv4 CIDRs and names (`*.` wildcards), through a
    /// filtering resolver.
    Allow,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::All => "all",
            Mode::Allow => "allow",
        }
    }
}

/// The `network` object of a create body or `PUT .../network`: `--allow` alone means mode
/// `allow`; `--allow` with mode `none` is refused (it would be ignored).
pub(crate) fn policy(mode: Option<Mode>, allow: &[String]) -> Result<Option<Value>> {
    let mode = match (mode, allow.is_empty()) {
        (None, true) => return Ok(None),
        (None, false) => Mode::Allow,
        (Some(Mode::None), false) => bail!("--allow needs --network allow or all, not none"),
        (Some(m), _) => m,
    };
    Ok(Some(json!({ "mode": mode.as_str(), "allow": allow })))
}

/// `paddock network`.
#[derive(Args, Debug)]
pub(crate) struct NetworkArgs {
    /// The sandbox.
    pub(crate) id: String,
    /// The new mode; without it, the current policy is shown.
    #[arg(value_enum)]
    pub(crate) mode: Option<Mode>,
    /// An IPv4 CIDR or a name (`*.example.com` for subdomains) the sandbox may reach
    /// (repeatable, at most 256); replaces the current list.
    #[arg(long, value_name = "NAME_OR_CIDR")]
    pub(crate) allow: Vec<String>,
    /// Print the server's JSON.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// Shows or sets the policy; prints the policy in force afterwards.
pub(crate) async fn network(a: NetworkArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    let path = ["v1", "sandboxes", a.id.as_str(), "network"];
    let v: Value = match policy(a.mode, &a.allow)? {
        None => api.get_json(&path).await?,
        Some(p) => {
            api.json(api.request(reqwest::Method::PUT, api.url(&path)).json(&p))
                .await?
        }
    };
    if a.json {
        write_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
    } else {
        write_stdout(&policy_text(&v))?;
    }
    Ok(0)
}

/// The readable form of `GET .../network`.
pub(crate) fn policy_text(v: &Value) -> String {
    let n = &v["network"];
    let mode = n["mode"].as_str().unwrap_or("none");
    let allow: Vec<&str> = n["allow"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut s = format!("mode     {mode}\n");
    if !allow.is_empty() {
        s.push_str(&format!("allow    {}\n", allow.join(" ")));
    }
    if let Some(addr) = v["address"].as_str() {
        s.push_str(&format!("address  {addr}\n"));
    }
    s
}

/// `paddock port`.
#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("visibility").required(true))]
pub(crate) struct PortArgs {
    /// The sandbox.
    pub(crate) id: String,
    /// The port inside the sandbox.
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) port: u16,
    /// Anyone with the URL may use the port (no access token).
    #[arg(long, group = "visibility")]
    pub(crate) public: bool,
    /// The port needs the sandbox's access token again.
    #[arg(long, group = "visibility")]
    pub(crate) private: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// Makes a port public or private; prints its URL (with the token when private).
pub(crate) async fn port(a: PortArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    let port = a.port.to_string();
    let url = api.url(&["v1", "sandboxes", &a.id, "ports", &port, "public"]);
    let method = if a.public {
        reqwest::Method::POST
    } else {
        reqwest::Method::DELETE
    };
    let _: Value = api.json(api.request(method, url)).await?;
    // The port's own answer carries the access token a private port's URL needs.
    let v: Value = api
        .get_json(&["v1", "sandboxes", &a.id, "ports", &port])
        .await?;
    let public = v["public"].as_bool().unwrap_or(a.public);
    let Some(base) = v["url"].as_str() else {
        bail!("the server did not give the URL of port {}", a.port);
    };
    let token = (!public).then(|| v["access_token"].as_str()).flatten();
    write_stdout(&format!("{}\n", port_url(base, token)))?;
    eprintln!(
        "paddock: port {} is {}",
        a.port,
        if public {
            "public: anyone with the URL may use it"
        } else {
            "private: it needs the access token"
        }
    );
    Ok(0)
}

/// Whether a command's stderr shows a failure to resolve a host name.
pub(crate) fn resolution_failed(stderr: &[u8]) -> bool {
    const SIGNS: [&str; 6] = [
        "temporary failure in name resolution",
        "could not resolve host",
        "getaddrinfo",
        "name or service not known",
        "no address associated with hostname",
        "eai_again",
    ];
    let s = String::from_utf8_lossy(stderr).to_ascii_lowercase();
    SIGNS.iter().any(|p| s.contains(p))
}

/// The hint for a sandbox without network, when its command failed to resolve a name.
pub(crate) fn no_network_hint(id: &str) -> String {
    format!(
        "paddock: hint: sandbox {id} has no network (mode none), so names do not resolve; \
         enable it with `paddock network {id} all` (or `paddock network {id} allow --allow NAME`)"
    )
}

/// Prints [`no_network_hint`] when the sandbox's mode is `none` (asked of the server; any
/// failure to ask prints nothing).
pub(crate) async fn hint_if_offline(api: &Api, id: &str) {
    let mode = api
        .get_json::<Value>(&["v1", "sandboxes", id, "network"])
        .await
        .ok()
        .and_then(|v| v["network"]["mode"].as_str().map(str::to_owned));
    if mode.as_deref() == Some("none") {
        eprintln!("{}", no_network_hint(id));
    }
}

/// `base`, with `?paddock_token=TOKEN` when a token is given.
pub(crate) fn port_url(base: &str, token: Option<&str>) -> String {
    match token {
        Some(t) => format!("{base}?paddock_token={t}"),
        None => base.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert_eq!(policy(None, &[]).unwrap(), None);
        assert_eq!(
            policy(None, &["pypi.org".into()]).unwrap(),
            Some(json!({"mode": "allow", "allow": ["pypi.org"]}))
        );
        assert_eq!(
            policy(Some(Mode::All), &[]).unwrap(),
            Some(json!({"mode": "all", "allow": []}))
        );
        assert!(policy(Some(Mode::None), &["1.2.3.4/32".into()]).is_err());
        assert_eq!(
            policy_text(
                &json!({"network": {"mode": "allow", "allow": ["a.com", "10.0.0.0/8"]}, "address": "10.200.0.2"})
            ),
            "mode     allow\nallow    a.com 10.0.0.0/8\naddress  10.200.0.2\n"
        );
        assert_eq!(
            policy_text(&json!({"network": {"mode": "none", "allow": []}, "address": null})),
            "mode     none\n"
        );
    }

    #[test]
    fn resolution_failures() {
        for s in [
            "curl: (6) Could not resolve host: example.com",
            "socket.gaierror: [Errno -3] Temporary failure in name resolution",
            "Error: getaddrinfo EAI_AGAIN registry.npmjs.org",
            "ping: example.com: Name or service not known",
        ] {
            assert!(resolution_failed(s.as_bytes()), "{s}");
        }
        assert!(!resolution_failed(b"Connection refused"));
        assert!(!resolution_failed(b""));
        assert!(no_network_hint("abc").contains("`paddock network abc all`"));
    }
}
