//! Templates through the API: the `debian` bootstrap and the ready `python`, `node`, `go` and
//! `code-interpreter` (module `interp`) templates built from the files in `templates/`, each passing a smoke test (install a
//! package with the language's package manager, run a test suite); build caching, COPY from
//! a context, failing and malformed builds, and deletion rules.
//!
//! Needs `debootstrap` and the Debian mirror, PyPI and npm registries (the package
//! registries CI may reach); sandboxes reach them through their own network policy.

mod interp;
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

/// Runs the `paddock` CLI against `s` with stdout and stderr piped (so not a terminal);
/// returns (exit code, stdout, stderr).
fn cli(s: &Server, args: &[&str]) -> (i32, String, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(args)
        .env("PADDOCK_URL", &s.url)
        .env("PADDOCK_API_KEY", &s.admin_key)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running paddock");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The seconds of a summary line `paddock: <prefix><secs> s`, checking the prefix.
fn summary_seconds(line: &str, prefix: &str) -> f64 {
    let rest = line
        .strip_prefix("paddock: ")
        .and_then(|l| l.strip_prefix(prefix))
        .and_then(|l| l.strip_suffix(" s"))
        .unwrap_or_else(|| panic!("summary {line:?} does not start with {prefix:?}"));
    rest.parse().unwrap_or_else(|_| panic!("summary {line:?}"))
}

/// The whole first hour of templates: bootstrap (trixie) and the ready templates through the
/// CLI and the API, their toolchains, `pip install` and `paddock test` on `python`, build
/// progress, summaries, logs and failure messages, caching, COPY, failures and deletion.
/// Takes about 8 minutes on the dev machine (most of it debootstrap and apt), plus about 3 for
/// removing the data directory.
#[tokio::test(flavor = "multi_thread")]
async fn ready_templates_builds_and_their_rules() {
    let started = std::time::Instant::now();
    let s = Server::start_capturing_stderr(&[]);
    // Bad input first: it changes nothing.
    let (st, v) = call(
        s.req(Method::POST, "/v1/templates/bad/build")
            .header("content-type", "text/plain")
            .body("FROM debian\nSHELL [\"x\"]\n"),
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

    // Failures of each kind say what failed, and leave their log on the server.
    let (code, _, err) = cli(
        &s,
        &[
            "template",
            "pull",
            "nothere",
            "127.0.0.1:1/none:latest",
            "--insecure",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("paddock: pull failed") && !err.contains("build failed"),
        "{err}"
    );
    assert!(err.contains("paddock template log nothere"), "{err}");
    let (code, log, err) = cli(&s, &["template", "log", "nothere"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        log.contains("[1/1] pull ") && log.contains("error: "),
        "{log}"
    );
    let (code, _, err) = cli(&s, &["template", "bootstrap", "deb2", "--suite", "nosuch"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("bootstrap failed") && err.contains("does not know the suite"),
        "{err}"
    );
    let (code, _, err) = cli(&s, &["template", "log", "never-built"]);
    assert!(code != 0 && err.contains("no build log"), "{err}");

    // debian through the CLI, not on a terminal: plain step lines, none of debootstrap's
    // output, a true summary; the full output is in the server's build log, not its stderr.
    let t0 = std::time::Instant::now();
    let (code, _, err) = cli(&s, &["template", "bootstrap"]);
    let wall = t0.elapsed().as_secs_f64();
    eprintln!("bootstrap (trixie): {wall:.1} s");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with("[1/1] debootstrap --variant=minbase trixie "),
        "{err}"
    );
    assert!(lines[1].starts_with("[1/1] done in "), "{err}");
    let secs = summary_seconds(
        lines[2],
        "template debian ready: 1 step (0 cached), 1 layer, ",
    );
    // The summary is rounded to 0.1 s and measured inside the server: within the CLI's wall.
    assert!(
        secs > 1.0 && secs <= wall + 0.05 && secs > wall - 10.0,
        "{secs} of {wall}: {err}"
    );
    assert!(!err.contains('\x1b') && !err.contains('\r'), "{err:?}");
    let (code, log, _) = cli(&s, &["template", "log", "debian"]);
    assert_eq!(code, 0);
    assert!(
        log.contains("I: Base system installed successfully.")
            && log.contains("Updating certificates")
            && log.contains("done: template debian"),
        "{log}"
    );
    let server_log = std::fs::read_to_string(s.stderr_file.as_ref().unwrap()).unwrap();
    for noise in ["I: ", "W: ", "E: ", "debconf", "certificates", "useradd"] {
        assert!(
            !server_log.lines().any(|l| l.contains(noise)),
            "{noise:?} in the server's log:\n{server_log}"
        );
    }

    // python through the CLI (the summary counts FROM and ENV as cached: they need no
    // work), node and go through the API, from the shipped files.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../templates");
    let t0 = std::time::Instant::now();
    let (code, _, err) = cli(&s, &["template", "ready", "python"]);
    eprintln!("ready python: {:.1} s", t0.elapsed().as_secs_f64());
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("[1/4] FROM debian (cached)\n[2/4] RUN apt-get "),
        "{err}"
    );
    assert!(
        err.contains("[2/4] done in ") && err.contains("[3/4] done in "),
        "{err}"
    );
    assert!(
        !err.contains("Setting up"),
        "apt's output without --verbose: {err}"
    );
    let last_line = err.lines().last().unwrap();
    summary_seconds(
        last_line,
        "template python ready: 4 steps (2 cached), 3 layers, ",
    );
    for t in ["node", "go"] {
        let file = std::fs::read_to_string(format!("{root}/{t}.Paddockfile")).unwrap();
        let t0 = std::time::Instant::now();
        let ev = build_text(&s, t, &file).await;
        eprintln!("build {t}: {:.1} s", t0.elapsed().as_secs_f64());
        let done = last(&ev);
        assert_eq!(done["event"], "done", "{t}: {ev:?}");
        let steps = ev.iter().filter(|e| e["event"] == "step").count();
        let cached = ev
            .iter()
            .filter(|e| e["event"] == "step" && e["cached"] == true)
            .count();
        assert_eq!(
            (done["steps"].as_u64(), done["cached_steps"].as_u64()),
            (Some(steps as u64), Some(cached as u64)),
            "{t}: {ev:?}"
        );
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

    // The code interpreter on python: its template, API, CLI and both SDKs (removed after).
    interp::check(&s).await;

    // Current toolchains, with git, curl and a C compiler in each.
    for (t, check) in [
        (
            "python",
            "python3 -c 'import sys; assert sys.version_info >= (3, 13), sys.version'",
        ),
        (
            "node",
            "node -e 'const m = +process.versions.node.split(\".\")[0]; if (m < 20) { console.log(process.version); process.exit(1) }'",
        ),
        (
            "go",
            "v=$(go env GOVERSION); m=${v#go1.}; m=${m%%.*}; [ \"$m\" -ge 24 ] || { echo $v; exit 1; }",
        ),
    ] {
        let (code, out, err) = smoke(
            &s,
            t,
            json!({"mode": "none"}),
            &format!("set -e; {check}; git --version >/dev/null; curl --version >/dev/null; cc --version >/dev/null; echo ok"),
        )
        .await;
        assert_eq!((code, out.as_str()), (0, "ok\n"), "{t}: {out}{err}");
    }

    // python: `pip install` as user just works (the virtualenv first on PATH), pytest is
    // there, and `paddock test` passes on a plain pytest project and uses a project's .venv.
    let v = s
        .create(json!({"template": "python", "network": {"mode": "allow", "allow": ["pypi.org", "files.pythonhosted.org"]}}))
        .await;
    let id = v["id"].as_str().unwrap().to_owned();
    let (code, out, err) = cli(
        &s,
        &[
            "exec",
            &id,
            "--",
            "bash",
            "-lc",
            "set -e; pip install -q six; python -c 'import six; print(six.__name__)'; command -v pip pytest; id -un; \
             mkdir -p ~/p ~/v; printf 'def test_add():\\n    assert 1 + 1 == 2\\n' > ~/p/test_a.py; \
             cd ~/v; python3 -m venv .venv; .venv/bin/pip install -q pytest; \
             printf 'import sys\\ndef test_venv():\\n    assert sys.prefix.endswith(\"/v/.venv\"), sys.prefix\\n' > test_v.py",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out, "six\n/opt/venv/bin/pip\n/opt/venv/bin/pytest\nuser\n",
        "{err}"
    );
    let (code, out, err) = cli(&s, &["test", &id, "--cwd", "/home/user/p"]);
    assert_eq!(code, 0, "paddock test on python: {out}{err}");
    let (code, out, err) = cli(&s, &["test", &id, "--cwd", "/home/user/v", "--json"]);
    assert_eq!(code, 0, "paddock test with a .venv: {out}{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["passed"], 1, "{r}");
    assert!(
        r["command"]
            .as_str()
            .unwrap()
            .starts_with(".venv/bin/python -m pytest"),
        "{r}"
    );
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);

    // node and go install from their registries and run a test suite.
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

    // A second build of an unchanged file is all cache, and the summary says so.
    let t0 = std::time::Instant::now();
    let (code, _, err) = cli(
        &s,
        &[
            "template",
            "build",
            "python",
            &format!("{root}/python.Paddockfile"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "a cached rebuild took {:?}",
        t0.elapsed()
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 5, "{err}");
    assert!(lines[..4].iter().all(|l| l.ends_with(" (cached)")), "{err}");
    summary_seconds(
        lines[4],
        "template python ready: 4 steps (4 cached), 3 layers, ",
    );
    let file = std::fs::read_to_string(format!("{root}/python.Paddockfile")).unwrap();
    let ev = build_text(&s, "python", &file).await;
    assert_eq!(last(&ev)["event"], "done", "{ev:?}");
    assert!(
        ev.iter()
            .filter(|e| e["event"] == "step")
            .all(|e| e["cached"] == true),
        "{ev:?}"
    );
    assert_eq!(last(&ev)["cached_steps"], 4, "{ev:?}");

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
    eprintln!("templates test: {:.1} s", started.elapsed().as_secs_f64());
}
