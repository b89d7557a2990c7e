//! Supervised services through the API and the CLI: a service killed with `kill -9` comes
//! back (also after a server restart: the agent supervises), `on-failure` does not restart
//! after exit 0 and does after a failure with a growing pause, a failing health check marks
//! it unhealthy, logs are readable across runs, stop/start/restart, bad input (duplicate
//! name 409, unknown name 404, bad policy 400), and deleting the sandbox leaves no process.

mod server;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::{Server, call, leftovers, processes_of};

async fn sandbox(s: &Server) -> String {
    let v = s.create(json!({"template": "base"})).await;
    v["id"].as_str().expect("id").to_owned()
}

async fn add(s: &Server, id: &str, body: Value) -> Value {
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/services"))
            .json(&body),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v
}

async fn status(s: &Server, id: &str, name: &str) -> Value {
    let (st, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/services/{name}"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

/// Polls the service's status until `ok` holds (at most `secs` seconds); the status.
async fn wait_for(
    s: &Server,
    id: &str,
    name: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut pause = Duration::from_millis(20);
    loop {
        let v = status(s, id, name).await;
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name}: never {what}: {v}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

async fn sh(s: &Server, id: &str, script: &str) -> (i64, String) {
    let (st, r) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"cmd": ["/bin/sh", "-c", script], "user": "root", "timeout": 30})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    (
        r["exit_code"].as_i64().unwrap_or(-1),
        r["stdout"].as_str().unwrap_or("").to_owned(),
    )
}

async fn logs_text(s: &Server, id: &str, name: &str) -> (String, Vec<Value>) {
    let (st, v) = call(s.req(
        Method::GET,
        &format!("/v1/sandboxes/{id}/services/{name}/logs?from_seq=0"),
    ))
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let entries = v["entries"].as_array().cloned().unwrap_or_default();
    let text = entries
        .iter()
        .filter_map(|e| e["data"].as_str())
        .collect::<String>();
    (text, entries)
}

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

/// An `always` service with a port health check: killed with `kill -9` it comes back with a
/// new pid and one restart, healthy again; a stop ends it and keeps it down, start brings it
/// back; it is in the process list as `service:web`; the CLI lists it and prints its logs.
/// After a server restart (`kill -9` of the server) the agent still supervises it.
#[tokio::test(flavor = "multi_thread")]
async fn killed_service_comes_back() {
    let mut s = Server::start(&[]);
    let id = sandbox(&s).await;
    let v = add(
        &s,
        &id,
        json!({"name": "web", "command": "echo serving; exec python3 -m http.server 8000",
               "cwd": "/tmp", "health": {"port": 8000, "interval_ms": 1000}}),
    )
    .await;
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(v["restart"], "always", "{v}");
    let v = wait_for(&s, &id, "web", 20, "healthy", |v| v["health"] == "healthy").await;
    let pid = v["pid"].as_u64().expect("pid");
    let (_, procs) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/processes"))).await;
    assert!(
        procs["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .any(|p| p["tag"] == "service:web" && p["pid"] == pid),
        "{procs}"
    );

    let t = Instant::now();
    let (code, _) = sh(&s, &id, &format!("kill -9 {pid}")).await;
    assert_eq!(code, 0);
    let v = wait_for(&s, &id, "web", 20, "back", |v| {
        v["state"] == "running" && v["pid"].as_u64().is_some_and(|p| p != pid)
    })
    .await;
    eprintln!(
        "service back after kill -9 in {:.3} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(v["restarts"], 1, "{v}");
    assert_eq!(v["last_exit"]["status"], "signal: killed", "{v}");
    wait_for(&s, &id, "web", 20, "healthy again", |v| {
        v["health"] == "healthy"
    })
    .await;
    let (code, out) = sh(
        &s,
        &id,
        "python3 -c 'import urllib.request as u; print(u.urlopen(\"http://127.0.0.1:8000/\").status)'",
    )
    .await;
    assert_eq!((code, out.trim()), (0, "200"));
    let (text, entries) = logs_text(&s, &id, "web").await;
    assert_eq!(text.matches("serving").count(), 2, "{text}");
    assert!(entries.iter().any(|e| e["run"] == 2), "{entries:?}");

    // The agent supervises, not the server: it goes on across a server restart.
    let pid2 = v["pid"].as_u64().expect("pid");
    s.kill9();
    s.restart();
    let v = status(&s, &id, "web").await;
    assert_eq!(
        (v["state"].clone(), v["pid"].clone()),
        (json!("running"), json!(pid2))
    );
    let (code, _) = sh(&s, &id, &format!("kill -9 {pid2}")).await;
    assert_eq!(code, 0);
    wait_for(&s, &id, "web", 20, "back after the server restart", |v| {
        v["state"] == "running" && v["restarts"] == 2
    })
    .await;

    // Stop keeps it down; start brings it back.
    let (st, v) = call(s.req(
        Method::POST,
        &format!("/v1/sandboxes/{id}/services/web/stop"),
    ))
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (v["state"].clone(), v["pid"].clone()),
        (json!("stopped"), Value::Null),
        "{v}"
    );
    let (code, out) = sh(&s, &id, "pgrep -c -f '[h]ttp.server' || true").await;
    assert_eq!((code, out.trim()), (0, "0"));
    let (code, out, err) = cli(&s, &["service", "start", &id, "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("web: running (pid "), "{out}");
    let (code, out, err) = cli(&s, &["service", "ls", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("web") && out.contains("running"), "{out}");
    let (code, out, err) = cli(&s, &["service", "logs", &id, "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.matches("serving").count() >= 3, "{out}");
    let (code, out, err) = cli(&s, &["service", "restart", &id, "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("web: running (pid "), "{out}");
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

/// `on-failure`: exit 0 ends the service for good; a failing command is restarted with a
/// growing pause, each run's output in the log.
#[tokio::test(flavor = "multi_thread")]
async fn on_failure_policy() {
    let s = Server::start(&[]);
    let id = sandbox(&s).await;
    add(
        &s,
        &id,
        json!({"name": "once", "command": "echo done-once", "restart": "on-failure"}),
    )
    .await;
    let v = wait_for(&s, &id, "once", 10, "exited", |v| v["state"] == "exited").await;
    assert_eq!(v["restarts"], 0, "{v}");
    assert_eq!(v["last_exit"]["exit_code"], 0, "{v}");
    let (text, _) = logs_text(&s, &id, "once").await;
    assert_eq!(text, "done-once\n");

    let t = Instant::now();
    add(
        &s,
        &id,
        json!({"name": "flaky", "cmd": ["/bin/sh", "-c", "echo failing-run; exit 3"], "restart": "on-failure"}),
    )
    .await;
    let v = wait_for(&s, &id, "flaky", 20, "restarted twice", |v| {
        v["restarts"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    // Pauses of 250 ms then 500 ms at least.
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(v["last_exit"]["exit_code"], 3, "{v}");
    let (text, entries) = logs_text(&s, &id, "flaky").await;
    assert!(text.matches("failing-run").count() >= 3, "{text}");
    assert!(entries.iter().any(|e| e["run"] == 3), "{entries:?}");
    let (st, v) = call(s.req(
        Method::POST,
        &format!("/v1/sandboxes/{id}/services/flaky/stop"),
    ))
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "stopped", "{v}");
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

/// A health check that fails marks the service unhealthy (with why); once it passes the
/// service is healthy. The process is not restarted for it.
#[tokio::test(flavor = "multi_thread")]
async fn failing_health_check_marks_unhealthy() {
    let s = Server::start(&[]);
    let id = sandbox(&s).await;
    let v = add(
        &s,
        &id,
        json!({"name": "app", "cmd": ["sleep", "1000"],
               "health": {"cmd": "test -f /tmp/ok", "interval_ms": 1000}}),
    )
    .await;
    assert_eq!(v["health"], "unknown", "{v}");
    let pid = v["pid"].clone();
    let v = wait_for(&s, &id, "app", 20, "unhealthy", |v| {
        v["health"] == "unhealthy"
    })
    .await;
    assert_eq!(
        v["health_detail"], "the check ended with exit status 1",
        "{v}"
    );
    assert_eq!((v["pid"].clone(), v["restarts"].clone()), (pid, json!(0)));
    sh(&s, &id, "touch /tmp/ok").await;
    wait_for(&s, &id, "app", 20, "healthy", |v| v["health"] == "healthy").await;
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

/// Bad input: a name in use (409), unknown names (404), a bad policy, health, name, command
/// or field (400); none of it changes anything.
#[tokio::test(flavor = "multi_thread")]
async fn bad_service_requests() {
    let s = Server::start(&[]);
    let id = sandbox(&s).await;
    add(&s, &id, json!({"name": "one", "cmd": ["sleep", "1000"]})).await;
    let post = |body: Value| {
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/services"))
            .json(&body)
    };
    let (st, v) = call(post(json!({"name": "one", "cmd": ["true"]}))).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("already exists"),
        "{v}"
    );
    for (body, needle) in [
        (
            json!({"name": "x", "cmd": ["true"], "restart": "sometimes"}),
            "restart \"sometimes\" is not a policy",
        ),
        (
            json!({"name": "x", "cmd": ["true"], "health": {"port": 70000}}),
            "not a TCP port",
        ),
        (
            json!({"name": "x", "cmd": ["true"], "health": {"port": 80, "cmd": "true"}}),
            "exactly one of",
        ),
        (
            json!({"name": "x", "cmd": ["true"], "health": {"cmd": "true", "interval_ms": 10}}),
            "interval_ms",
        ),
        (json!({"name": "Bad Name", "cmd": ["true"]}), "service name"),
        (json!({"name": "x", "cmd": []}), "must not be empty"),
        (json!({"name": "x"}), "exactly one of `cmd`"),
        (
            json!({"name": "x", "cmd": ["true"], "user": "nobody-here"}),
            "nobody-here",
        ),
    ] {
        let (st, v) = call(post(body.clone())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(
            v["message"].as_str().unwrap_or("").contains(needle),
            "{body}: {v}"
        );
    }
    let (st, _) = call(post(json!({"name": "x", "cmd": ["true"], "bogus": 1}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    for (m, path) in [
        (Method::GET, "nope"),
        (Method::POST, "nope/start"),
        (Method::POST, "nope/stop"),
        (Method::POST, "nope/restart"),
        (Method::GET, "nope/logs"),
        (Method::DELETE, "nope"),
    ] {
        let (st, v) = call(s.req(m.clone(), &format!("/v1/sandboxes/{id}/services/{path}"))).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{m} {path}: {v}");
    }
    let (_, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/services"))).await;
    let names: Vec<&str> = v["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|x| x["name"].as_str())
        .collect();
    assert_eq!(names, ["one"], "{v}");
    let (code, _, err) = cli(&s, &["service", "start", &id, "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("not found"), "{err}");
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

/// Polls until `pgrep -c sleep` in the sandbox prints `n` (at most 10 s).
async fn wait_sleeps(s: &Server, id: &str, n: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pause = Duration::from_millis(20);
    loop {
        let (_, out) = sh(s, id, "pgrep -c -x sleep").await;
        if out.trim() == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sleep processes: {out} (want {n})"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// A service never outlives its sandbox: deleting the sandbox leaves no process (nor
/// anything else); removing a service ends its process tree, daemons included.
#[tokio::test(flavor = "multi_thread")]
async fn services_end_with_the_sandbox() {
    let s = Server::start(&[]);
    let id = sandbox(&s).await;
    add(
        &s,
        &id,
        json!({"name": "daemon", "command": "sleep 2000 & sleep 1000"}),
    )
    .await;
    add(&s, &id, json!({"name": "plain", "cmd": ["sleep", "1000"]})).await;
    // The shell starts its two sleeps after the service is reported running.
    wait_sleeps(&s, &id, "3").await;
    let (st, _) = call(s.req(
        Method::DELETE,
        &format!("/v1/sandboxes/{id}/services/daemon"),
    ))
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // The daemon's whole tree goes (its last exits are reaped just after the answer).
    wait_sleeps(&s, &id, "1").await;
    assert!(!processes_of(&id).is_empty());
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let left = leftovers(&id);
    assert!(left.is_empty(), "left on the host: {left:?}");
}
