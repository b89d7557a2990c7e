//! E2B SDK conformance: the unmodified `e2b` Python SDK (pinned in `e2b/requirements.txt`)
//! drives a real `paddock serve` through the pytest suite in `tests/e2b/`.
//!
//! The suite runs in a venv at `/var/tmp/paddock-e2b-venv` (made with `python3 -m venv`,
//! so the host needs `python3-venv`), rebuilt only when `requirements.txt` changes: a hash
//! of that file and of the Python version is kept inside the venv. Installing needs PyPI.
//!
//! `tests/e2b-2.31/` holds a small second suite for the SDK 2.31 (venv
//! `/var/tmp/paddock-e2b-2.31-venv`), which refuses any API key that is not `e2b_` and hex:
//! it runs with the `e2b_` form of a Paddock key.

mod cluster;
mod server;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::venv::prepare_venv;
use server::*;

/// Where the suite's venv lives: outside the repository, shared by runs.
const VENV: &str = "/var/tmp/paddock-e2b-venv";
/// The venv of the SDK 2.31 suite (`tests/e2b-2.31/`).
const OLD_VENV: &str = "/var/tmp/paddock-e2b-2.31-venv";
/// The number of tests in `tests/e2b/` (pytest's count, parametrized cases included).
/// Every one must pass; raise this when adding tests.
const TESTS_WRITTEN: usize = 190;
/// The domain the server is started with and the SDK is told about.
const DOMAIN: &str = "paddock.test";
/// An upper bound for the whole pytest run (it takes well under a minute).
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2b")
}

fn old_suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2b-2.31")
}

/// Counts from pytest's final summary line, e.g. `2 failed, 171 passed, 1 error in 17.62s`.
#[derive(Debug, Default)]
struct Summary {
    passed: usize,
    failed: usize,
    errors: usize,
    skipped: usize,
}

fn parse_summary(line: &str) -> Option<Summary> {
    let line = line.trim().trim_matches('=').trim();
    let (counts, _) = line.rsplit_once(" in ")?;
    let mut s = Summary::default();
    let mut any = false;
    for part in counts.split(", ") {
        let Some((n, what)) = part.trim().split_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse::<usize>() else { continue };
        any = true;
        match what {
            "passed" => s.passed = n,
            "failed" => s.failed = n,
            "error" | "errors" => s.errors = n,
            "skipped" | "deselected" | "xfailed" | "xpassed" => s.skipped += n,
            _ => {}
        }
    }
    any.then_some(s)
}

/// Runs pytest with the SDK pointed at `url`, echoing its output; returns (success, last
/// summary line seen).
fn run_pytest(
    python: &Path,
    dir: &Path,
    url: &str,
    key: &str,
    extra: &[&str],
) -> (bool, Option<Summary>) {
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE"])
        .arg(dir)
        .args(extra)
        // For chasing one test locally, e.g. `PADDOCK_E2B_PYTEST_ARGS="-k pty -x"`; the summary
        // check below still wants every test to pass, so a filtered run reports a failure.
        .args(
            std::env::var("PADDOCK_E2B_PYTEST_ARGS")
                .map(|a| a.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .unwrap_or_default(),
        )
        .current_dir(dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    e2b_env(&mut cmd, url, key, Some(DOMAIN));
    let mut child = cmd.spawn().expect("starting pytest");
    let stdout = child.stdout.take().expect("pytest stdout");
    let reader = std::thread::spawn(move || {
        let mut summary = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            println!("{line}");
            if let Some(s) = parse_summary(&line) {
                summary = Some(s);
            }
        }
        summary
    });
    let status = wait_or_kill(&mut child, SUITE_TIMEOUT);
    let summary = reader.join().expect("pytest output reader");
    let Some(status) = status else {
        panic!("the E2B suite did not finish within {SUITE_TIMEOUT:?}");
    };
    (status.success(), summary)
}

#[tokio::test(flavor = "multi_thread")]
async fn e2b_python_sdk_conformance() {
    let python = tokio::task::spawn_blocking(|| prepare_venv(VENV, &suite_dir()))
        .await
        .expect("venv task");
    let s = Server::start(&["--domain", DOMAIN, "--metrics-interval", "1s"]);
    let (_, key) = s.new_key(json!({"name": "e2b-sdk"})).await;

    let url = s.url.clone();
    let (ok, summary) =
        tokio::task::spawn_blocking(move || run_pytest(&python, &suite_dir(), &url, &key, &[]))
            .await
            .expect("pytest task");
    let summary = summary.expect(
        "pytest ended without a summary line (a test hung past its hard timeout: see the \
         stack dump above)",
    );
    println!(
        "e2b conformance: {} passed, {} failed",
        summary.passed,
        summary.failed + summary.errors
    );
    assert!(ok, "the E2B suite failed: {summary:?}");
    assert_eq!(
        (summary.failed, summary.errors, summary.skipped),
        (0, 0, 0),
        "{summary:?}"
    );
    assert!(
        summary.passed >= TESTS_WRITTEN,
        "only {} tests passed, the suite has {TESTS_WRITTEN}",
        summary.passed
    );

    // Every sandbox the suite made was killed (by the test or its fixture).
    assert_no_sandboxes_left(&s, "the E2B suite").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn e2b_python_sdk_2_31_takes_the_e2b_form_of_a_key() {
    let python = tokio::task::spawn_blocking(|| prepare_venv(OLD_VENV, &old_suite_dir()))
        .await
        .expect("venv task");
    let s = Server::start(&["--domain", DOMAIN]);
    let r = s
        .req(Method::POST, "/v1/keys")
        .json(&json!({"name": "e2b-sdk-2.31"}))
        .send()
        .await
        .expect("key request");
    let v: serde_json::Value = r.json().await.expect("key json");
    let key = v["e2b_key"]
        .as_str()
        .expect("an e2b_ form of the key")
        .to_owned();
    let url = s.url.clone();
    let (ok, summary) =
        tokio::task::spawn_blocking(move || run_pytest(&python, &old_suite_dir(), &url, &key, &[]))
            .await
            .expect("pytest task");
    let summary = summary.expect("pytest ended without a summary line");
    assert!(ok, "the SDK 2.31 suite failed: {summary:?}");
    assert_eq!(
        (
            summary.passed,
            summary.failed,
            summary.errors,
            summary.skipped
        ),
        (2, 0, 0, 0),
        "{summary:?}"
    );
    let (st, v) = call(s.req(Method::GET, "/v1/sandboxes")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["sandboxes"], json!([]), "the suite killed its sandbox");
}

#[test]
fn pytest_summary_lines_parse() {
    let s = parse_summary("1 failed, 174 passed in 17.62s").expect("summary");
    assert_eq!((s.passed, s.failed, s.errors), (174, 1, 0));
    let s = parse_summary("===== 175 passed, 2 errors in 3.10s =====").expect("summary");
    assert_eq!((s.passed, s.errors), (175, 2));
    let s = parse_summary("3 passed, 1 skipped, 2 warnings in 0:01:02").expect("summary");
    assert_eq!((s.passed, s.skipped), (3, 1));
    assert!(parse_summary("test_wire.py ....... in progress").is_none());
    assert!(parse_summary("....F.... [ 41%]").is_none());
}

/// What the gVisor run leaves out (`--deselect` pairs): each is a difference of this runsc
/// that Paddock cannot close, listed in docs/isolation.md ("What is different on gVisor"):
/// - the Sentry lists the network interfaces it saw at start (loopback), not the `eth0` the
///   runtime adds afterwards (traffic goes through it all the same: the network tests pass);
/// - the Sentry's terminal does not turn ^C into SIGINT.
const GVISOR_DESELECT: &[&str] = &[
    "--deselect",
    "test_network.py::test_internet_access_is_the_default_and_false_means_loopback_only",
    "--deselect",
    "test_pty.py::test_pty_ctrl_c_interrupts",
];

/// The same suite with every sandbox on gVisor (`serve --isolation-default gvisor`;
/// docs/isolation.md), less [`GVISOR_DESELECT`]. Skips, loudly, where runsc is not installed
/// (CI installs it).
#[tokio::test(flavor = "multi_thread")]
async fn e2b_python_sdk_conformance_on_gvisor() {
    if !std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("runsc").is_file())
    {
        eprintln!("SKIP: runsc is not installed (apt-get install runsc)");
        assert!(std::env::var_os("CI").is_none(), "CI must have runsc");
        return;
    }
    let python = tokio::task::spawn_blocking(|| prepare_venv(VENV, &suite_dir()))
        .await
        .expect("venv task");
    let s = Server::start(&[
        "--domain",
        DOMAIN,
        "--metrics-interval",
        "1s",
        "--isolation-default",
        "gvisor",
    ]);
    let (_, key) = s.new_key(json!({"name": "e2b-sdk"})).await;
    let url = s.url.clone();
    let (ok, summary) = tokio::task::spawn_blocking(move || {
        run_pytest(&python, &suite_dir(), &url, &key, GVISOR_DESELECT)
    })
    .await
    .expect("pytest task");
    let summary = summary.expect("pytest ended without a summary line");
    println!(
        "e2b conformance on gVisor: {} passed, {} failed",
        summary.passed,
        summary.failed + summary.errors
    );
    assert!(ok, "the E2B suite failed on gVisor: {summary:?}");
    let left_out = GVISOR_DESELECT.len() / 2;
    assert_eq!((summary.failed, summary.errors), (0, 0), "{summary:?}");
    assert_eq!(summary.skipped, left_out, "{summary:?}");
    assert!(
        summary.passed >= TESTS_WRITTEN - left_out,
        "only {} tests passed, the suite has {TESTS_WRITTEN} less {left_out} left out",
        summary.passed
    );
    // They ran on gVisor: every sandbox the suite made says so.
    let (st, v) = call(s.req(Method::GET, "/v1/sandboxes?state=stopped&limit=1000")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let all = v["sandboxes"].as_array().expect("list");
    assert!(all.len() > 50, "{} sandboxes", all.len());
    let native: Vec<&Value> = all.iter().filter(|s| s["isolation"] != "gvisor").collect();
    assert!(native.is_empty(), "not on gVisor: {native:?}");
    assert_no_sandboxes_left(&s, "the E2B suite on gVisor").await;
}

/// The same suite through a control plane of a fleet with two nodes (`docs/fleet.md`): the
/// SDK's control API, data plane (by `E2b-Sandbox-Id`) and port URLs all reach the node
/// holding each sandbox, and creates mounting a volume go to the node holding it.
#[tokio::test(flavor = "multi_thread")]
async fn e2b_python_sdk_conformance_through_a_control_plane() {
    let python = tokio::task::spawn_blocking(|| prepare_venv(VENV, &suite_dir()))
        .await
        .expect("venv task");
    let f = cluster::Fleet::start_with(
        1,
        &[&[], &[]],
        &["--domain", DOMAIN],
        // The suite runs many sandboxes at once; a single host does not count CPU limits.
        &[
            "--domain",
            DOMAIN,
            "--metrics-interval",
            "1s",
            "--cpu-overcommit",
            "64",
        ],
    );
    let (st, v) = call(
        f.req(0, Method::POST, "/v1/keys")
            .json(&json!({"name": "e2b-sdk"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let key = v["key"].as_str().expect("key").to_owned();
    let url = f.controls[0].url.clone();
    let (ok, summary) =
        tokio::task::spawn_blocking(move || run_pytest(&python, &suite_dir(), &url, &key, &[]))
            .await
            .expect("pytest task");
    let summary = summary.expect("pytest ended without a summary line");
    println!(
        "e2b conformance through a control plane: {} passed, {} failed",
        summary.passed,
        summary.failed + summary.errors
    );
    assert!(ok, "the E2B suite failed through the fleet: {summary:?}");
    assert!(summary.passed >= TESTS_WRITTEN, "{summary:?}");
    // Both nodes served some of them.
    let (st, v) = call(f.req(0, Method::GET, "/v1/sandboxes?state=stopped&limit=1000")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let nodes: std::collections::BTreeSet<&str> = v["sandboxes"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["node"].as_str())
        .collect();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
}

/// The agent's accepted connections for sandbox `id` (inodes of connected sockets bound to
/// its `agent.sock`, from `/proc/net/unix`).
fn agent_connections(id: &str) -> std::collections::BTreeSet<u64> {
    let suffix = format!("/{id}/agent.sock");
    std::fs::read_to_string("/proc/net/unix")
        .expect("/proc/net/unix")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode Path; St 03 is connected.
            (f.len() == 8 && f[5] == "03" && f[7].ends_with(&suffix)).then(|| f[6].parse().ok())?
        })
        .collect()
}

/// `process.Start` over the data plane goes to the agent on the pooled connections the
/// native exec uses (issue 17: no connection set-up per request). Each start's connection
/// is looked at while its response is open, so a connection per request would show as a
/// new socket every time.
#[tokio::test(flavor = "multi_thread")]
async fn data_plane_process_starts_reuse_pooled_agent_connections() {
    let s = Server::start(&[]);
    let r = s
        .http
        .post(format!("{}/sandboxes", s.url))
        .header("X-API-KEY", &s.admin_key)
        .json(&json!({"templateID": "base", "timeout": 600, "secure": true}))
        .send()
        .await
        .expect("e2b create");
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.expect("json");
    let id = v["sandboxID"].as_str().expect("id").to_owned();
    let token = v["envdAccessToken"].as_str().expect("token").to_owned();
    let msg = br#"{"process":{"cmd":"/bin/echo","args":["pooled"]}}"#;
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(msg);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20 {
        let r = s
            .http
            .post(format!("{}/process.Process/Start", s.url))
            .header("E2b-Sandbox-Id", &id)
            .header("X-Access-Token", &token)
            .header("Content-Type", "application/connect+json")
            .header("Connect-Protocol-Version", "1")
            .body(body.clone())
            .send()
            .await
            .expect("process.Start");
        assert_eq!(r.status(), StatusCode::OK, "start {i}");
        seen.extend(agent_connections(&id));
        let out = r.bytes().await.expect("stream");
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("\"end\""), "start {i}: {out}");
    }
    // Two can be in use at once: a response's last bytes may still be in flight when the
    // next request starts.
    assert!(
        seen.len() <= 3,
        "20 starts used {} agent connections",
        seen.len()
    );
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}
