//! Templates through the API: the `debian` bootstrap and the ready `python`, `node` and `go`
//! templates built from the files in `templates/`, each passing a smoke test (install a
//! package with the language's package manager, run a test suite); build caching, COPY from
//! a context, failing and malformed builds, and deletion rules.
//!
//! Needs `debootstrap` and the Debian mirror, PyPI and npm registries (the package
//! registries CI may reach); sandboxes reach them through their own network policy.

mod server;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::{Server, call};

/// Sends a build request and returns its NDJSON events.
async fn events(s: &Server, rb: reqwest::RequestBuilder) -> Vec<Value> {
    let r = rb.send().await.expect("build request");
    let st = r.status();
    let text = r.text().await.unwrap_or_default();
    assert_eq!(st, StatusCode::OK, "{text}");
    let _ = s;
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn last(ev: &[Value]) -> &Value {
    ev.last().expect("at least one event")
}

async fn build_text(s: &Server, name: &str, file: &str) -> Vec<Value> {
    events(
        s,
        s.req(Method::POST, &format!("/v1/templates/{name}/build"))
            .header("content-type", "text/plain")
            .body(file.to_owned())
            .timeout(Duration::from_secs(1800)),
    )
    .await
}

/// Creates a sandbox of `template` with `network`, runs `script` with `bash -lc`, returns
/// (exit code, stdout, stderr) and destroys the sandbox.
async fn smoke(s: &Server, template: &str, network: Value, script: &str) -> (i64, String, String) {
    let v = s
        .create(json!({"template": template, "network": network}))
        .await;
    let id = v["id"].as_str().unwrap().to_owned();
    let (st, r) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"cmd": ["bash", "-lc", script], "timeout": 600}))
            .timeout(Duration::from_secs(700)),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    (
        r["exit_code"].as_i64().unwrap_or(-1),
        r["stdout"].as_str().unwrap_or("").to_owned(),
        r["stderr"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_templates_builds_and_their_rules() {
    let s = Server::start(&[]);
    // Bad input first: it changes nothing.
    let (st, v) = call(
        s.req(Method::POST, "/v1/templates/bad/build")
            .header("content-type", "text/plain")
            .body("FROM debian\nCMD [\"x\"]\n"),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("line 2"), "{v}");
    let (st, v) = call(
        s.req(Method::POST, "/v1/sandboxes")
            .json(&json!({"template": "nope"})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = call(
        s.req(Method::POST, "/v1/templates/base/build")
            .header("content-type", "text/plain")
            .body("FROM debian\n"),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let ev = build_text(&s, "early", "FROM debian\nRUN true\n").await;
    assert_eq!(
        last(&ev)["event"],
        "error",
        "FROM of a missing template: {ev:?}"
    );

    // debian, then the three ready templates from the shipped files.
    let ev = events(
        &s,
        s.req(Method::POST, "/v1/templates/debian/bootstrap")
            .timeout(Duration::from_secs(1800)),
    )
    .await;
    assert_eq!(last(&ev)["event"], "done", "{ev:?}");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../templates");
    for t in ["python", "node", "go"] {
        let file = std::fs::read_to_string(format!("{root}/{t}.Paddockfile")).unwrap();
        let ev = build_text(&s, t, &file).await;
        assert_eq!(last(&ev)["event"], "done", "{t}: {ev:?}");
    }
    let (_, list) = call(s.req(Method::GET, "/v1/templates")).await;
    let names: Vec<&str> = list["templates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for t in ["base", "debian", "python", "node", "go"] {
        assert!(names.contains(&t), "{names:?}");
    }
    // The ready templates share the debian layer on disk.
    let (_, py) = call(s.req(Method::GET, "/v1/templates/python")).await;
    let (_, deb) = call(s.req(Method::GET, "/v1/templates/debian")).await;
    assert_eq!(py["layers"][0], deb["layers"][0]);

    // Smoke tests: the language's package manager installs from its registry (through an
    // allow list of names), then a test suite runs.
    let (code, out, err) = smoke(
        &s,
        "python",
        json!({"mode": "allow", "allow": ["pypi.org", "files.pythonhosted.org"]}),
        "set -e; python3 -m venv ~/venv; ~/venv/bin/pip install -q pytest; mkdir -p ~/p; cd ~/p; \
         printf 'def test_add():\\n    assert 1 + 1 == 2\\n' > test_a.py; ~/venv/bin/pytest -q 2>&1 | tail -1; id -un; pwd",
    )
    .await;
    assert_eq!(code, 0, "python: {out}{err}");
    assert!(
        out.contains("1 passed") && out.contains("user\n/home/user/p"),
        "{out}"
    );
    let (code, out, err) = smoke(
        &s,
        "node",
        json!({"mode": "allow", "allow": ["registry.npmjs.org"]}),
        "set -e; mkdir -p ~/p; cd ~/p; npm init -y >/dev/null; npm install --silent is-number@7; \
         printf 'const t = require(\"node:test\"); const a = require(\"node:assert\");\\nt.test(\"n\", () => a.ok(require(\"is-number\")(5)));\\n' > a.test.js; \
         node --test 2>&1 | grep -E '^# (pass|fail)'",
    )
    .await;
    assert_eq!(code, 0, "node: {out}{err}");
    assert!(
        out.contains("# pass 1") && out.contains("# fail 0"),
        "{out}"
    );
    // Go modules need proxy.golang.org, which CI cannot reach; Go packages from Debian
    // (apt, through sudo) work in GOPATH mode.
    let (code, out, err) = smoke(
        &s,
        "go",
        json!({"mode": "all"}),
        "set -e; sudo apt-get update -qq >/dev/null; sudo apt-get install -y -qq golang-github-google-go-cmp-dev >/dev/null; \
         mkdir -p ~/go/src/adder; cd ~/go/src/adder; \
         printf 'package adder\\nfunc Add(a, b int) int { return a + b }\\n' > adder.go; \
         printf 'package adder\\nimport (\"testing\"; \"github.com/google/go-cmp/cmp\")\\nfunc TestAdd(t *testing.T) { if d := cmp.Diff(3, Add(1, 2)); d != \"\" { t.Fatal(d) } }\\n' > adder_test.go; \
         GO111MODULE=off GOPATH=$HOME/go:/usr/share/gocode go test . 2>&1 | tail -1",
    )
    .await;
    assert_eq!(code, 0, "go: {out}{err}");
    assert!(out.starts_with("ok"), "{out}");

    // A second build of an unchanged file is all cache.
    let file = std::fs::read_to_string(format!("{root}/python.Paddockfile")).unwrap();
    let t0 = std::time::Instant::now();
    let ev = build_text(&s, "python", &file).await;
    assert_eq!(last(&ev)["event"], "done", "{ev:?}");
    assert!(
        ev.iter()
            .filter(|e| e["event"] == "step")
            .all(|e| e["cached"] == true),
        "{ev:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "a cached rebuild took {:?}",
        t0.elapsed()
    );

    // COPY from a context tar; WORKDIR and USER become the template's defaults.
    let mut b = tar::Builder::new(Vec::new());
    let add = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
    };
    add(&mut b, "Paddockfile", b"FROM python\nCOPY app /srv/app\nWORKDIR /srv/app\nRUN python3 main.py > built.txt\nUSER user\nEXPOSE 8000\n");
    add(&mut b, "app/main.py", b"print('built from the context')\n");
    let ctx = b.into_inner().unwrap();
    let ev = events(
        &s,
        s.req(Method::POST, "/v1/templates/myapp/build")
            .header("content-type", "application/x-tar")
            .body(ctx)
            .timeout(Duration::from_secs(600)),
    )
    .await;
    assert_eq!(last(&ev)["event"], "done", "{ev:?}");
    let (code, out, _) = smoke(
        &s,
        "myapp",
        json!({"mode": "none"}),
        "pwd; cat built.txt; id -un",
    )
    .await;
    assert_eq!(
        (code, out.as_str()),
        (0, "/srv/app\nbuilt from the context\nuser\n")
    );

    // A failing step names its line, status and output, and makes no template.
    let ev = build_text(
        &s,
        "broken",
        "FROM python\n\nRUN echo about to fail >&2; exit 3\n",
    )
    .await;
    let e = last(&ev);
    assert_eq!(
        (e["event"].as_str(), e["line"].as_u64()),
        (Some("error"), Some(3)),
        "{ev:?}"
    );
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("exit status 3") && msg.contains("about to fail"),
        "{msg}"
    );
    let (st, _) = call(s.req(Method::GET, "/v1/templates/broken")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // A template in use cannot be deleted; once free it can, and shared layers stay.
    let v = s.create(json!({"template": "myapp"})).await;
    let id = v["id"].as_str().unwrap().to_owned();
    let (st, v) = call(s.req(Method::DELETE, "/v1/templates/myapp")).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = call(s.req(Method::DELETE, "/v1/templates/myapp")).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (code, out, _) = smoke(
        &s,
        "python",
        json!({"mode": "none"}),
        "python3 -c 'print(6*7)'",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "42\n"), "python lost a layer");
}
