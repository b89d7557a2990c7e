//! Template start commands and ready checks through the API: `START`/`READY`, `CMD` and
//! `ENTRYPOINT` in build files (templates on `base`, so no download and no layer), a start
//! command serving a port before create answers, failures (start command exits, ready check
//! times out) that fail the create and leave nothing, the E2B shape of that failure, and bad
//! instructions that fail the build naming the line.

mod server;

use std::time::Instant;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::{Server, call, leftovers};

/// Builds template `name` from `file`; the last NDJSON event.
async fn build(s: &Server, name: &str, file: &str) -> Value {
    let r = s
        .req(Method::POST, &format!("/v1/templates/{name}/build"))
        .header("content-type", "text/plain")
        .body(file.to_owned())
        .send()
        .await
        .expect("build request");
    let st = r.status();
    let text = r.text().await.unwrap_or_default();
    if st != StatusCode::OK {
        return serde_json::from_str(&text).unwrap_or(Value::Null);
    }
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .expect("at least one event")
}

async fn build_ok(s: &Server, name: &str, file: &str) {
    let ev = build(s, name, file).await;
    assert_eq!(ev["event"], "done", "{name}: {ev}");
}

/// Runs `script` with `sh -c` in sandbox `id`; (exit code, stdout, stderr).
async fn sh(s: &Server, id: &str, script: &str) -> (i64, String, String) {
    let (st, r) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"cmd": ["/bin/sh", "-c", script], "timeout": 30})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    (
        r["exit_code"].as_i64().unwrap_or(-1),
        r["stdout"].as_str().unwrap_or("").to_owned(),
        r["stderr"].as_str().unwrap_or("").to_owned(),
    )
}

/// Tries a create of `template`; (status, body, seconds taken).
async fn try_create(s: &Server, template: &str) -> (StatusCode, Value, f64) {
    let t = Instant::now();
    let (st, v) = call(
        s.req(Method::POST, "/v1/sandboxes")
            .json(&json!({"template": template})),
    )
    .await;
    (st, v, t.elapsed().as_secs_f64())
}

/// The one sandbox of `template` the server knows (running or stopped), by listing them all.
async fn only_sandbox_of(s: &Server, template: &str) -> Value {
    let (st, v) = call(s.req(Method::GET, "/v1/sandboxes?state=all")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let of: Vec<Value> = v["sandboxes"]
        .as_array()
        .expect("sandboxes")
        .iter()
        .filter(|x| x["template"] == template)
        .cloned()
        .collect();
    assert_eq!(of.len(), 1, "{v}");
    of[0].clone()
}

/// Asserts that the failed create of `template` left a `failed` record, no host resource and
/// a `start_exited` event when `exited`.
async fn assert_failed_and_gone(s: &Server, template: &str, exited: bool) {
    let sb = only_sandbox_of(s, template).await;
    let id = sb["id"].as_str().expect("id").to_owned();
    assert_eq!(sb["state"], "stopped", "{sb}");
    assert_eq!(sb["stop_reason"], "failed", "{sb}");
    let left = leftovers(&id);
    assert!(left.is_empty(), "left on the host: {left:?}");
    let (_, logs) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/logs"))).await;
    let kinds: Vec<&str> = logs["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"failed"), "{kinds:?}");
    if exited {
        assert!(kinds.contains(&"start_exited"), "{kinds:?}");
        let execs = logs["execs"].as_array().expect("execs");
        assert!(
            execs.iter().any(|e| e["exit_code"] == 1),
            "the start command's exit is in the exec history: {execs:?}"
        );
    }
}

/// `START python3 -m http.server 8000` with `READY --port 8000`: create answers once the port
/// accepts connections, so an immediate request (exec and proxy) succeeds; the start command
/// is a background process tagged `start`; the template JSON and `template show` carry the
/// start command and the ready check.
#[tokio::test(flavor = "multi_thread")]
async fn start_command_serves_before_create_answers() {
    let s = Server::start(&[]);
    build_ok(
        &s,
        "web",
        "FROM base\nWORKDIR /tmp\nSTART python3 -m http.server 8000\nREADY --port 8000\n",
    )
    .await;
    let (st, t) = call(s.req(Method::GET, "/v1/templates/web")).await;
    assert_eq!(st, StatusCode::OK, "{t}");
    assert_eq!(
        t["start"],
        json!({"cmd": ["/bin/sh", "-c", "python3 -m http.server 8000"], "cwd": "/tmp"}),
        "{t}"
    );
    assert_eq!(
        t["ready"],
        json!({"port": 8000, "timeout_ms": 30000}),
        "{t}"
    );
    assert_eq!(
        t["layers"],
        json!([]),
        "a template on base has no layer: {t}"
    );

    let mut times = Vec::new();
    for _ in 0..3 {
        let (st, v, secs) = try_create(&s, "web").await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        times.push(secs);
        let id = v["id"].as_str().expect("id").to_owned();
        let (code, out, err) = sh(
            &s,
            &id,
            "python3 -c 'import urllib.request as u; print(u.urlopen(\"http://127.0.0.1:8000/\").status)'",
        )
        .await;
        assert_eq!((code, out.trim()), (0, "200"), "{err}");
        let r = s
            .req(Method::GET, &format!("/proxy/{id}/8000/"))
            .send()
            .await
            .expect("proxy request");
        assert_eq!(r.status(), StatusCode::OK);
        let (_, procs) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/processes"))).await;
        assert!(
            procs["processes"]
                .as_array()
                .expect("processes")
                .iter()
                .any(|p| p["tag"] == "start"),
            "{procs}"
        );
        let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
        assert_eq!(st, StatusCode::NO_CONTENT);
    }
    eprintln!("create with START + READY --port (python http.server): {times:.3?} s");

    let o = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["template", "show", "web"])
        .env("PADDOCK_URL", &s.url)
        .env("PADDOCK_API_KEY", &s.admin_key)
        .output()
        .expect("paddock template show");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("start      [\"/bin/sh\" \"-c\" \"python3 -m http.server 8000\"] in /tmp")
            && text.contains("ready      port 8000 (timeout 30000 ms)"),
        "{text}"
    );
}

/// A start command that exits 1 before the ready check passes fails the create with 422
/// `start_failed`, its output in the message; the sandbox is recorded `failed`, nothing is
/// left on the host, and the exit is an event and in the exec history. Through E2B, the same
/// failure has E2B's error shape.
#[tokio::test(flavor = "multi_thread")]
async fn failing_start_command_fails_the_create() {
    let s = Server::start(&[]);
    build_ok(
        &s,
        "boom",
        "FROM base\nSTART echo the-start-said-this; echo and-this >&2; exit 1\nREADY --port 8000\n",
    )
    .await;
    let (st, v, secs) = try_create(&s, "boom").await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["code"], "start_failed", "{v}");
    let msg = v["message"].as_str().expect("message");
    assert!(
        msg.contains(
            "the start command ended (exit status 1) before the ready check (port 8000) passed"
        ) && msg.contains("the-start-said-this")
            && msg.contains("and-this"),
        "{msg}"
    );
    assert!(
        secs < 10.0,
        "the exit is seen at once, not at the timeout: {secs} s"
    );
    assert_failed_and_gone(&s, "boom", true).await;

    // E2B: `{"code": 422, "message": ...}`.
    let r = s
        .e2b_api(Method::POST, "/v2/sandboxes")
        .json(&json!({"templateID": "boom", "timeout": 60}))
        .send()
        .await
        .expect("e2b create");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["code"], 422, "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("the-start-said-this")),
        "{v}"
    );
    server::assert_no_sandboxes_left(&s, "failed creates").await;
}

/// A ready check that never passes fails the create after its timeout, saying which check
/// and what it printed last; nothing is left.
#[tokio::test(flavor = "multi_thread")]
async fn ready_check_that_never_passes_times_out() {
    let s = Server::start(&[]);
    build_ok(
        &s,
        "never",
        "FROM base\nSTART echo waiting; sleep 1000\nREADY --timeout 2s echo not-yet >&2; test -f /nonexistent\n",
    )
    .await;
    let (st, v, secs) = try_create(&s, "never").await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let msg = v["message"].as_str().expect("message");
    assert!(
        msg.contains("did not pass within 2s")
            && msg.contains("not-yet")
            && msg.contains("waiting"),
        "{msg}"
    );
    assert!((2.0..10.0).contains(&secs), "took {secs} s");
    assert_failed_and_gone(&s, "never", false).await;
}

/// `CMD` and `ENTRYPOINT` combine as in Docker (exec form: the entrypoint gets the command's
/// words as arguments; a later ENTRYPOINT keeps a CMD of the same file); the last of
/// START/CMD/ENTRYPOINT wins; the start command runs as the USER and in the WORKDIR in force
/// where it appears, with the template's ENV and the sandbox's env vars.
#[tokio::test(flavor = "multi_thread")]
async fn cmd_entrypoint_and_exec_form() {
    let s = Server::start(&[]);
    build_ok(
        &s,
        "combo",
        "FROM base\nENV GREETING=hi\nSTART [\"false\"]\nCMD [\"hello\", \"world\"]\nWORKDIR /tmp\nUSER root\n\
         ENTRYPOINT [\"/bin/sh\", \"-c\", \"echo \\\"$GREETING $EXTRA $0 $1 $(id -un) $(pwd)\\\" > /tmp/started.tmp && mv /tmp/started.tmp /tmp/started; exec sleep 1000\"]\n\
         USER user\nREADY test -s /tmp/started\n",
    )
    .await;
    let (_, t) = call(s.req(Method::GET, "/v1/templates/combo")).await;
    assert_eq!(t["start"]["cmd"][3], "hello", "{t}");
    assert_eq!(t["start"]["user"], "root", "{t}");
    let (st, v) = call(
        s.req(Method::POST, "/v1/sandboxes")
            .json(&json!({"template": "combo", "env": {"EXTRA": "there"}})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().expect("id").to_owned();
    let (code, out, _) = sh(&s, &id, "cat /tmp/started").await;
    assert_eq!((code, out.trim()), (0, "hi there hello world root /tmp"));

    // Exec form of START, the last instruction winning over an earlier CMD.
    build_ok(
        &s,
        "exec-form",
        "FROM base\nCMD [\"false\"]\nSTART [\"python3\", \"-c\", \"import socket,time; s=socket.socket(); s.bind(('127.0.0.1', 7000)); s.listen(); time.sleep(1000)\"]\nREADY --timeout 20s --port 7000\n",
    )
    .await;
    let (st, v, _) = try_create(&s, "exec-form").await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id2 = v["id"].as_str().expect("id").to_owned();
    let (code, out, _) = sh(
        &s,
        &id2,
        "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 7000)); print(1)'",
    )
    .await;
    assert_eq!((code, out.trim()), (0, "1"));
    for i in [id, id2] {
        let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{i}"))).await;
        assert_eq!(st, StatusCode::NO_CONTENT);
    }
}

/// Bad START/READY/CMD instructions fail the build with 400 naming the line; RUN on base
/// fails naming its line.
#[tokio::test(flavor = "multi_thread")]
async fn bad_start_instructions_name_the_line() {
    let s = Server::start(&[]);
    for (file, needle) in [
        (
            "FROM base\nREADY --port 99999\n",
            "line 2: READY: --port \"99999\" is not a TCP port",
        ),
        (
            "FROM base\n\nREADY --timeout -1 true\n",
            "line 3: READY: --timeout \"-1\" is not a duration",
        ),
        (
            "FROM base\nREADY --timeout 11m --port 80\n",
            "line 2: READY: --timeout \"11m\"",
        ),
        (
            "FROM base\nREADY --port 80 curl x\n",
            "line 2: READY takes either --port N or a command",
        ),
        (
            "FROM base\nSTART [\"a\", 1]\n",
            "line 2: START: the exec form is a JSON array",
        ),
        ("FROM base\nSTART\n", "line 2: START needs a command"),
    ] {
        let (st, v) = call(
            s.req(Method::POST, "/v1/templates/bad/build")
                .header("content-type", "text/plain")
                .body(file),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{file}: {v}");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{file}: {msg}");
    }
    let ev = build(&s, "bad", "FROM base\nENV A=1\nRUN true\n").await;
    assert_eq!(ev["event"], "error", "{ev}");
    assert_eq!(ev["line"], 3, "{ev}");
    let (st, _) = call(s.req(Method::GET, "/v1/templates/bad")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

/// A sandbox adopted after a server restart keeps its start process; nothing runs it again.
#[tokio::test(flavor = "multi_thread")]
async fn adopted_sandbox_keeps_its_start_process() {
    let mut s = Server::start(&[]);
    build_ok(
        &s,
        "counter",
        "FROM base\nSTART echo started >> /tmp/starts; exec sleep 1000\nREADY test -s /tmp/starts\n",
    )
    .await;
    let (st, v, _) = try_create(&s, "counter").await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().expect("id").to_owned();
    s.kill9();
    s.restart();
    let (code, out, _) = sh(&s, &id, "cat /tmp/starts; pgrep -c sleep").await;
    assert_eq!((code, out.as_str()), (0, "started\n1\n"));
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}
