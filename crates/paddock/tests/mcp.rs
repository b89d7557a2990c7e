//! MCP: the official MCP Python SDK (`mcp`, pinned in `tests/mcp/requirements.txt`) drives
//! Paddock's tools through `paddock mcp` (stdio, the real binary pointed at a real
//! `paddock serve`) and through the server's `/mcp` (streamable HTTP), with the scenario in
//! `tests/mcp/client.py`: the tool list, a sandbox's whole life, errors carrying the API's
//! message, and a second tenant that sees nothing of the first one's sandbox. The venv is
//! `/var/tmp/paddock-mcp-venv` (see `server/venv.rs`).

mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::venv::prepare_venv;
use server::*;

const VENV: &str = "/var/tmp/paddock-mcp-venv";
/// An upper bound for one run of the scenario (it takes seconds).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(300);

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp")
}

/// Whether the server's OpenAPI document has the code interpreter route: `run_code` must
/// then work through it, else say clearly that the server has none.
async fn has_code_route(s: &Server) -> bool {
    let (st, doc) = call(s.http.get(format!("{}/v1/openapi.json", s.url))).await;
    assert_eq!(st, StatusCode::OK);
    doc["paths"].get("/v1/sandboxes/{id}/code").is_some()
}

/// Runs `client.py` with `args` and the two tenants' keys; panics with its output unless
/// it passes.
fn run_client(python: &Path, args: &[&str], key_a: &str, key_b: &str, code_route: bool) {
    let mut child = Command::new(python)
        .arg(suite_dir().join("client.py"))
        .args(args)
        .env("PADDOCK_MCP_CODE_ROUTE", if code_route { "1" } else { "0" })
        .env("PADDOCK_MCP_KEY_A", key_a)
        .env("PADDOCK_MCP_KEY_B", key_b)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the MCP client");
    let status = wait_or_kill(&mut child, SCENARIO_TIMEOUT);
    let status =
        status.unwrap_or_else(|| panic!("the MCP client did not end in {SCENARIO_TIMEOUT:?}"));
    assert!(
        status.success(),
        "the MCP scenario {args:?} failed ({status})"
    );
}

/// Two keys of two tenants: (id of the first, the first, the second).
async fn tenants(s: &Server) -> (String, String, String) {
    let (a_id, a) = s.new_key(json!({"name": "mcp-a"})).await;
    let (_, b) = s.new_key(json!({"name": "mcp-b"})).await;
    (a_id, a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_python_sdk_over_stdio() {
    let python = tokio::task::spawn_blocking(|| prepare_venv(VENV, &suite_dir()))
        .await
        .expect("venv task");
    let s = Server::start(&[]);
    let (_, a, b) = tenants(&s).await;
    let url = s.url.clone();
    let code = has_code_route(&s).await;
    tokio::task::spawn_blocking(move || {
        run_client(
            &python,
            &["stdio", env!("CARGO_BIN_EXE_paddock"), &url],
            &a,
            &b,
            code,
        )
    })
    .await
    .expect("client task");
    assert_no_sandboxes_left(&s, "the MCP scenario over stdio").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_python_sdk_over_streamable_http() {
    let python = tokio::task::spawn_blocking(|| prepare_venv(VENV, &suite_dir()))
        .await
        .expect("venv task");
    let s = Server::start(&[]);
    let (a_id, a, b) = tenants(&s).await;
    let url = format!("{}/mcp", s.url);
    let code = has_code_route(&s).await;
    tokio::task::spawn_blocking(move || run_client(&python, &["http", &url], &a, &b, code))
        .await
        .expect("client task");
    assert_no_sandboxes_left(&s, "the MCP scenario over /mcp").await;

    // The tools' REST calls are audited like REST's own, under the caller's key.
    let (st, v) = call(s.req(Method::GET, &format!("/v1/audit?actor={a_id}"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let actions: Vec<&str> = v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for want in ["sandbox.create", "sandbox.delete"] {
        assert!(
            actions.contains(&want),
            "no {want} by the MCP caller's key: {actions:?}"
        );
    }
}

/// `/mcp` answers 401 with the API's error before any MCP handling when the key is missing,
/// malformed or revoked: an `initialize` never reaches the MCP service.
#[tokio::test(flavor = "multi_thread")]
async fn mcp_endpoint_needs_a_key() {
    let s = Server::start(&[]);
    let init = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "0"}}
    });
    let post = |key: Option<&str>| {
        let mut rb = s
            .http
            .post(format!("{}/mcp", s.url))
            .header("accept", "application/json, text/event-stream")
            .json(&init);
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        rb
    };
    let (id, key) = s.new_key(json!({"name": "mcp-revoked"})).await;
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/keys/{id}"))).await;
    assert!(st.is_success(), "revoking: {st}");
    for (what, key) in [
        ("no key", None),
        ("a malformed key", Some("nope")),
        ("a revoked key", Some(key.as_str())),
    ] {
        let (st, v) = call(post(key)).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{what}: {v}");
        assert_eq!(v["code"], "unauthorized", "{what}: {v}");
    }
    // There are no sessions: no GET stream, no DELETE (the API's 405).
    for m in [Method::GET, Method::DELETE] {
        let (st, v) = call(s.req(m.clone(), "/mcp")).await;
        assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED, "{m}: {v}");
    }
    // A body over the 8 MiB cap is refused without being read whole.
    let big = vec![b' '; 8 * 1024 * 1024 + 1];
    let (st, _) = call(
        s.req(Method::POST, "/mcp")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(big),
    )
    .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    // With the key, the same request is an MCP answer.
    let r = post(Some(&s.admin_key)).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.expect("initialize answer");
    assert_eq!(v["result"]["serverInfo"]["name"], "paddock", "{v}");
}

/// `paddock mcp` without a key stops at once with the CLI's error, before reading stdin.
#[test]
fn stdio_server_needs_a_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["mcp", "--url", "http://127.0.0.1:9"])
        .env_remove("PADDOCK_API_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("running paddock mcp");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no API key"), "{err}");
    assert!(out.stdout.is_empty(), "nothing but MCP may go to stdout");
}
