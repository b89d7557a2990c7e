//! The code interpreter (`templates/code-interpreter.Paddockfile`, `paddock-interpreter`):
//! built on the `python` template that `templates.rs` has just made, then driven through the
//! native API (`/v1/sandboxes/{id}/code`), the CLI (`paddock code`) and the unmodified
//! E2B code interpreter SDKs: the pytest suite in `tests/code-interpreter/` (venv under
//! `/var/tmp`, PyPI) and the node suite in `tests/code-interpreter-js/` (`npm ci`); then MCP's
//! `run_code` against a real interpreter (`tests/mcp/client.py interp`, the MCP venv of
//! `tests/mcp.rs`), here because this is where the template is built.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::server::venv::prepare_venv;
use crate::server::{Server, call, e2b_env};

const VENV: &str = "/var/tmp/paddock-code-interpreter-venv";
const JS_DIR: &str = "/var/tmp/paddock-code-interpreter-js";
/// Tests in `tests/code-interpreter/test_code_interpreter.py`.
const PY_TESTS: usize = 22;
/// Tests in `tests/code-interpreter-js/code_interpreter.test.mjs`.
const JS_TESTS: usize = 7;

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn run(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs code through the native API; returns the events.
async fn code(s: &Server, id: &str, body: Value) -> (StatusCode, Vec<Value>) {
    let r = s
        .req(Method::POST, &format!("/v1/sandboxes/{id}/code"))
        .json(&body)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("code request");
    let st = r.status();
    let text = r.text().await.unwrap_or_default();
    let events = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (st, events)
}

fn of_type<'a>(ev: &'a [Value], t: &str) -> Vec<&'a Value> {
    ev.iter().filter(|e| e["type"] == t).collect()
}

/// Builds `code-interpreter`, runs every check, removes the template again.
pub(crate) async fn check(s: &Server) {
    let t0 = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["template", "ready", "code-interpreter"])
        .env("PADDOCK_URL", &s.url)
        .env("PADDOCK_API_KEY", &s.admin_key)
        .stdin(Stdio::null())
        .output()
        .expect("paddock template ready code-interpreter");
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!(
        "ready code-interpreter: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(o.status.success(), "{err}");

    let (_, t) = call(s.req(Method::GET, "/v1/templates/code-interpreter")).await;
    assert_eq!(t["aliases"], json!(["code-interpreter-v1"]), "{t}");
    assert_eq!(
        t["ready"]["cmd"], "curl -sf --max-time 9 http://127.0.0.1:49999/ready",
        "{t}"
    );

    native_api(s).await;
    cli(s).await;
    // From here on creates of the template come from a warm pool, the SDK suites' too.
    let hits = pooled(s).await;
    python_sdk(s);
    let (_, p) = call(s.req(Method::GET, "/v1/pools/code-interpreter")).await;
    assert!(
        p["hits"].as_u64().unwrap() > hits,
        "the SDK's create missed the pool: {p}"
    );
    js_sdk(s);
    mcp_run_code(s);
    let (st, _) = call(s.req(Method::DELETE, "/v1/pools/code-interpreter")).await;
    assert_eq!(st, StatusCode::NO_CONTENT);

    let (st, v) = call(s.req(Method::DELETE, "/v1/templates/code-interpreter")).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    eprintln!(
        "code interpreter checks: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

async fn native_api(s: &Server) {
    // Through the alias, as the SDKs ask for it.
    let t0 = Instant::now();
    let v = s.create(json!({"template": "code-interpreter-v1"})).await;
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["template"], "code-interpreter", "{v}");
    let (st, ev) = code(s, &id, json!({"code": "x = 41\nprint('hi')\nx + 1"})).await;
    eprintln!(
        "code interpreter: create to first result {:.0} ms",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(st, StatusCode::OK, "{ev:?}");
    assert_eq!(of_type(&ev, "stdout")[0]["text"], "hi\n", "{ev:?}");
    assert_eq!(of_type(&ev, "result")[0]["text"], "42", "{ev:?}");
    assert_eq!(ev.last().unwrap()["type"], "end", "{ev:?}");

    let (_, ev) = code(s, &id, json!({"code": "1/0"})).await;
    let e = of_type(&ev, "error");
    assert_eq!(e[0]["name"], "ZeroDivisionError", "{ev:?}");
    assert!(
        e[0]["traceback"]
            .as_str()
            .unwrap()
            .contains("ZeroDivisionError")
    );

    // A timeout interrupts; the state survives.
    let t1 = Instant::now();
    let (_, ev) = code(
        s,
        &id,
        json!({"code": "import time\ntime.sleep(60)", "timeout": 1}),
    )
    .await;
    assert!(t1.elapsed() < Duration::from_secs(15), "{:?}", t1.elapsed());
    assert_eq!(of_type(&ev, "error")[0]["name"], "TimeoutError", "{ev:?}");
    let (_, ev) = code(s, &id, json!({"code": "x"})).await;
    assert_eq!(of_type(&ev, "result")[0]["text"], "41", "{ev:?}");

    // Contexts: a bash one, listed, deleted.
    let (st, ctx) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/code/contexts"))
            .json(&json!({"language": "bash"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{ctx}");
    let cid = ctx["id"].as_str().unwrap().to_owned();
    let (_, ev) = code(s, &id, json!({"code": "echo $((6*7))", "context_id": cid})).await;
    assert_eq!(of_type(&ev, "stdout")[0]["text"], "42\n", "{ev:?}");
    let (_, list) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/code/contexts"))).await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == cid.as_str()),
        "{list}"
    );
    let (st, _) = call(s.req(
        Method::DELETE,
        &format!("/v1/sandboxes/{id}/code/contexts/{cid}"),
    ))
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);

    // Bad input.
    let (st, ev) = code(s, &id, json!({"code": "x", "language": "cobol"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(ev[0]["code"], "unknown_language", "{ev:?}");
    let (st, ev) = code(s, &id, json!({"code": "x", "context_id": "nope"})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(ev[0]["code"], "context_not_found", "{ev:?}");
    let big = "#".repeat(1024 * 1024 + 1);
    let (st, ev) = code(s, &id, json!({"code": big})).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{ev:?}");
    assert_eq!(ev[0]["code"], "code_too_large", "{ev:?}");
    let (st, ev) = code(s, &id, json!({"code": "x", "timeout": -1})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{ev:?}");
    // The same for contexts: an unknown language, an unknown context.
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/code/contexts"))
            .json(&json!({"language": "cobol"})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["code"], "unknown_language", "{v}");
    for (m, path) in [
        (Method::DELETE, "nope"),
        (Method::POST, "nope/restart"),
        (Method::POST, "nope/interrupt"),
    ] {
        let (st, v) = call(s.req(m, &format!("/v1/sandboxes/{id}/code/contexts/{path}"))).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{path}: {v}");
        assert_eq!(v["code"], "context_not_found", "{path}: {v}");
    }

    // A sandbox without the interpreter is told which template has one.
    let plain = s.create(json!({"template": "python"})).await;
    let pid = plain["id"].as_str().unwrap().to_owned();
    let (st, ev) = code(s, &pid, json!({"code": "print(1)"})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{ev:?}");
    assert_eq!(ev[0]["code"], "no_interpreter", "{ev:?}");
    assert!(
        ev[0]["message"]
            .as_str()
            .unwrap()
            .contains("create it from template code-interpreter"),
        "{ev:?}"
    );
    for i in [&id, &pid] {
        let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{i}"))).await;
        assert_eq!(st, StatusCode::NO_CONTENT);
    }
}

/// Whether a process whose command line contains `needle` runs in sandbox `id`.
async fn runs_process(s: &Server, id: &str, needle: &str) -> bool {
    let script = format!(
        "import os\nprint(any({needle:?} in open(f'/proc/{{p}}/cmdline').read() \
         for p in os.listdir('/proc') if p.isdigit()))"
    );
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"cmd": ["python3", "-c", script]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["stdout"] == "True\n"
}

/// A warm pool of the template (`docs/pools.md`): its sandboxes have the code server and the
/// default Python kernel running before their create; creates as the SDKs make them (the
/// alias, an empty env, metadata, a timeout, the network open) are hits; `run_code` works on
/// each and their states are their own. Leaves the pool of 2 in place; returns its hits.
async fn pooled(s: &Server) -> u64 {
    let (st, v) = call(
        s.req(Method::PUT, "/v1/pools/code-interpreter")
            .json(&json!({"size": 2})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, p) = call(s.req(Method::GET, "/v1/pools/code-interpreter")).await;
        if p["ready"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the pool never filled: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ids = Vec::new();
    for n in [1, 2] {
        let v = s
            .create(json!({
                "template": "code-interpreter-v1",
                "env": {},
                "metadata": {"n": n.to_string()},
                "timeout": 300,
                "network": {"mode": "all"},
            }))
            .await;
        let id = v["id"].as_str().unwrap().to_owned();
        assert!(
            runs_process(s, &id, "ipykernel").await,
            "no kernel before the first run_code"
        );
        let (st, ev) = code(s, &id, json!({"code": format!("mine = {n}\nmine")})).await;
        assert_eq!(st, StatusCode::OK, "{ev:?}");
        assert_eq!(of_type(&ev, "result")[0]["text"], n.to_string(), "{ev:?}");
        ids.push(id);
    }
    let (_, p) = call(s.req(Method::GET, "/v1/pools/code-interpreter")).await;
    assert_eq!(
        (p["hits"].as_u64(), p["misses"].as_u64()),
        (Some(2), Some(0)),
        "{p}"
    );
    for (n, id) in [(1, &ids[0]), (2, &ids[1])] {
        let (_, ev) = code(s, id, json!({"code": "mine"})).await;
        assert_eq!(of_type(&ev, "result")[0]["text"], n.to_string(), "{ev:?}");
        let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
        assert_eq!(st, StatusCode::NO_CONTENT);
    }
    p["hits"].as_u64().unwrap()
}

async fn cli(s: &Server) {
    let v = s.create(json!({"template": "code-interpreter"})).await;
    let id = v["id"].as_str().unwrap().to_owned();
    let out = tempfile::tempdir().unwrap();
    let paddock = |args: &[&str], stdin: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_paddock"));
        c.arg("code")
            .arg(&id)
            .args(args)
            .env("PADDOCK_URL", &s.url)
            .env("PADDOCK_API_KEY", &s.admin_key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("paddock code");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            use std::io::Write;
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let o = child.wait_with_output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (c, o, e) = paddock(&["print('hi')\n6 * 7"], None);
    assert_eq!((c, o.as_str()), (0, "hi\n42\n"), "{e}");
    let (c, _, e) = paddock(&["1/0"], None);
    assert_eq!(c, 1, "{e}");
    assert!(e.contains("ZeroDivisionError"), "{e}");
    let dir = out.path().to_str().unwrap();
    let (c, _, e) = paddock(
        &[
            "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()",
            "--out-dir",
            dir,
        ],
        None,
    );
    assert_eq!(c, 0, "{e}");
    let png = out.path().join(format!("{id}-result-1.png"));
    assert!(
        e.contains(&format!("saved a PNG result to {}", png.display())),
        "{e}"
    );
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let (c, o, e) = paddock(&["console.log(1 + 1)", "--language", "js"], None);
    assert_eq!((c, o.as_str()), (0, "2\n"), "{e}");
    // The REPL: one context, a trailing backslash continues, a block ends at a blank line.
    let (c, o, e) = paddock(
        &[],
        Some("y = 2 + \\\n3\nfor i in range(2):\n    print(i * y)\n\ny * 10\n"),
    );
    assert_eq!((c, o.as_str()), (0, "0\n5\n50\n"), "{e}");
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

/// Makes (or reuses) the venv with the pinned SDKs (shared with `tests/tls.rs`).
fn venv() -> PathBuf {
    prepare_venv(VENV, &tests_dir().join("code-interpreter"))
}

fn python_sdk(s: &Server) {
    let python = venv();
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "pytest",
        "-q",
        "-o",
        "addopts=",
        "-p",
        "no:cacheprovider",
    ])
    .current_dir(tests_dir().join("code-interpreter"));
    e2b_env(&mut cmd, &s.url, &s.admin_key, None);
    let t0 = Instant::now();
    let out = cmd.output().expect("running pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "code interpreter python SDK: {:.1} s\n{stdout}",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("{PY_TESTS} passed")), "{stdout}");
}

fn js_sdk(s: &Server) {
    let src = tests_dir().join("code-interpreter-js");
    std::fs::create_dir_all(JS_DIR).unwrap();
    let lock = std::fs::read(src.join("package-lock.json")).unwrap();
    let stamp = Path::new(JS_DIR).join("paddock-lock.json");
    for f in [
        "package.json",
        "package-lock.json",
        "code_interpreter.test.mjs",
    ] {
        std::fs::copy(src.join(f), Path::new(JS_DIR).join(f)).unwrap();
    }
    if std::fs::read(&stamp).ok() != Some(lock.clone()) {
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(JS_DIR),
            "npm ci",
        );
        std::fs::write(&stamp, lock).unwrap();
    }
    let mut cmd = Command::new("node");
    cmd.args(["--test", "code_interpreter.test.mjs"])
        .current_dir(JS_DIR);
    e2b_env(&mut cmd, &s.url, &s.admin_key, None);
    let t0 = Instant::now();
    let out = cmd.output().expect("running node --test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "code interpreter JS SDK: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("# pass {JS_TESTS}")), "{stdout}");
}

/// MCP's `run_code` over `/mcp` against a real `code-interpreter` sandbox, with the official
/// MCP Python SDK (`tests/mcp/client.py interp`; `tests/mcp.rs` checks everything else of MCP
/// against a stand-in interpreter, without this template).
fn mcp_run_code(s: &Server) {
    let dir = tests_dir().join("mcp");
    let python = prepare_venv("/var/tmp/paddock-mcp-venv", &dir);
    let t0 = Instant::now();
    let out = Command::new(python)
        .arg(dir.join("client.py"))
        .args(["interp", &format!("{}/mcp", s.url)])
        .env("PADDOCK_MCP_KEY_A", &s.admin_key)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .stdin(Stdio::null())
        .output()
        .expect("running the MCP client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "code interpreter through MCP: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("MCP run_code against the real interpreter passed"),
        "{stdout}"
    );
}
