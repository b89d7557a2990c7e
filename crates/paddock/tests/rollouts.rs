//! Rollouts (`docs/rollouts.md`) against the real `paddock serve` and real sandboxes: a
//! command reaches exactly the sandboxes matching the selector, at most `concurrency` at
//! once (timestamps written inside the sandboxes), with a per-sandbox report; a failing
//! command stops after `max_failures` and the rollback's effect is visible in the sandboxes
//! it changed; uploads (files and a tar) land in each matching sandbox; a rollout survives a
//! restart in the store and one running at a `kill -9` is `interrupted`; bad input (a
//! selector matching nothing, no command, bad concurrency, the wrong role) is refused and
//! records nothing; the CLI prints progress lines and exits non-zero on a failed rollout.

mod server;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::{Server, call};

async fn sandbox(s: &Server, key: &str, metadata: Value) -> String {
    let v = s
        .create_as(key, json!({"template": "base", "metadata": metadata}))
        .await;
    v["id"].as_str().expect("id").to_owned()
}

/// Runs `script` as root in the sandbox; (exit code, stdout).
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

/// A file's content in the sandbox, or None if it does not exist.
async fn file(s: &Server, id: &str, path: &str) -> Option<String> {
    let (code, out) = sh(s, id, &format!("cat {path} 2>/dev/null || echo MISSING")).await;
    assert_eq!(code, 0);
    (out != "MISSING\n").then_some(out)
}

async fn rollout(s: &Server, body: Value) -> Value {
    let (st, v) = call(s.req(Method::POST, "/v1/rollouts?wait=true").json(&body)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

fn by_sandbox<'a>(r: &'a Value, id: &str) -> &'a Value {
    r["sandboxes"]
        .as_array()
        .expect("sandboxes")
        .iter()
        .find(|t| t["sandbox_id"] == id)
        .unwrap_or_else(|| panic!("{id} is not a target of {r}"))
}

fn targets(r: &Value) -> Vec<String> {
    let mut v: Vec<String> = r["sandboxes"]
        .as_array()
        .expect("sandboxes")
        .iter()
        .map(|t| t["sandbox_id"].as_str().expect("id").to_owned())
        .collect();
    v.sort();
    v
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| (*s).clone()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_rollout_reaches_the_matching_sandboxes_under_the_cap_and_rolls_back() {
    let mut s = Server::start(&[]);
    let key = s.admin_key.clone();
    let web1 = sandbox(&s, &key, json!({"app": "web"})).await;
    let web2 = sandbox(&s, &key, json!({"app": "web", "zone": "b"})).await;
    let web3 = sandbox(&s, &key, json!({"app": "web"})).await;
    let db = sandbox(&s, &key, json!({"app": "db"})).await;
    let plain = sandbox(&s, &key, json!({})).await;

    // The command on exactly the three, two at a time, each writing when it ran.
    let r = rollout(
        &s,
        json!({
            "selector": {"app": "web"},
            "cmd": ["/bin/sh", "-c",
                "date +%s%N > /tmp/ro-start; sleep 1; date +%s%N > /tmp/ro-end; echo done; echo warn >&2"],
            "concurrency": 2,
        }),
    )
    .await;
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(targets(&r), sorted(&[&web1, &web2, &web3]));
    assert_eq!(r["counts"]["succeeded"], 3, "{r}");
    for id in [&web1, &web2, &web3] {
        let t = by_sandbox(&r, id);
        assert_eq!(t["state"], "succeeded", "{t}");
        assert_eq!(t["exit_code"], 0, "{t}");
        assert_eq!(t["stdout_tail"], "done\n", "{t}");
        assert_eq!(t["stderr_tail"], "warn\n", "{t}");
        assert!(t["duration_ms"].as_u64().unwrap() >= 1000, "{t}");
        assert!(
            t["started_at"].is_string() && t["finished_at"].is_string(),
            "{t}"
        );
    }
    for id in [&db, &plain] {
        assert_eq!(
            file(&s, id, "/tmp/ro-start").await,
            None,
            "{id} was reached"
        );
    }
    // The cap: no more than two ran at any moment, and two did run together.
    let mut spans = Vec::new();
    for id in [&web1, &web2, &web3] {
        let start: u128 = file(&s, id, "/tmp/ro-start")
            .await
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let end: u128 = file(&s, id, "/tmp/ro-end")
            .await
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        spans.push((start, end));
    }
    let most = spans
        .iter()
        .map(|(t, _)| spans.iter().filter(|(a, b)| a <= t && t < b).count())
        .max()
        .unwrap();
    assert_eq!(most, 2, "at most 2 at once, and 2 together: {spans:?}");

    // A command that fails on web2 and web3; max_failures 1, one at a time in creation
    // order: web1 succeeds, web2 fails and stops it, web3 is skipped; the rollback runs on
    // web1 and web2 (both were changed).
    for id in [&web2, &web3] {
        sh(&s, id, "touch /tmp/bad").await;
    }
    let r = rollout(
        &s,
        json!({
            "selector": {"app": "web"},
            "cmd": ["/bin/sh", "-c", "echo new > /tmp/v; if [ -e /tmp/bad ]; then echo broken >&2; exit 3; fi"],
            "rollback": ["/bin/sh", "-c", "echo old > /tmp/v"],
            "concurrency": 1,
            "max_failures": 1,
        }),
    )
    .await;
    assert_eq!(r["state"], "failed", "{r}");
    assert!(
        r["reason"].as_str().unwrap().contains("max_failures 1"),
        "{r}"
    );
    let (t1, t2, t3) = (
        by_sandbox(&r, &web1),
        by_sandbox(&r, &web2),
        by_sandbox(&r, &web3),
    );
    assert_eq!(t1["state"], "rolled_back", "{t1}");
    assert_eq!(t1["outcome_before_rollback"], "succeeded", "{t1}");
    assert_eq!(t2["state"], "rolled_back", "{t2}");
    assert_eq!(t2["outcome_before_rollback"], "failed", "{t2}");
    assert_eq!(t2["exit_code"], 3, "{t2}");
    assert_eq!(t2["stderr_tail"], "broken\n", "{t2}");
    assert_eq!(t1["rollback"]["ok"], true, "{t1}");
    assert_eq!(t2["rollback"]["exit_code"], 0, "{t2}");
    assert_eq!(t3["state"], "skipped", "{t3}");
    assert_eq!(file(&s, &web1, "/tmp/v").await.as_deref(), Some("old\n"));
    assert_eq!(file(&s, &web2, "/tmp/v").await.as_deref(), Some("old\n"));
    assert_eq!(file(&s, &web3, "/tmp/v").await, None, "web3 was skipped");
    let failed_id = r["id"].as_str().unwrap().to_owned();

    // Uploads: files at paths, and a tar into a directory.
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let r = rollout(
        &s,
        json!({
            "selector": {"app": "web"},
            "upload": {"files": [{"path": "/tmp/up/hello.txt", "content": b64(b"hello\n")}]},
        }),
    )
    .await;
    assert_eq!(r["state"], "succeeded", "{r}");
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "conf/app.ini", &b"x=1\n"[..])
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let r = rollout(
        &s,
        json!({"selector": {"zone": "b"}, "upload": {"path": "/tmp/t", "tar": b64(&tar)}}),
    )
    .await;
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(targets(&r), vec![web2.clone()]);
    for id in [&web1, &web2, &web3] {
        assert_eq!(
            file(&s, id, "/tmp/up/hello.txt").await.as_deref(),
            Some("hello\n")
        );
    }
    assert_eq!(file(&s, &db, "/tmp/up/hello.txt").await, None);
    assert_eq!(
        file(&s, &web2, "/tmp/t/conf/app.ini").await.as_deref(),
        Some("x=1\n")
    );
    assert_eq!(file(&s, &web1, "/tmp/t/conf/app.ini").await, None);

    // A rollout left running by a kill -9 is `interrupted` after the restart; finished
    // ones read back as they were.
    let (st, v) = call(s.req(Method::POST, "/v1/rollouts").json(&json!({
        "selector": {"app": "web"}, "cmd": ["sleep", "60"], "concurrency": 1,
    })))
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["state"], "running", "{v}");
    let running_id = v["id"].as_str().unwrap().to_owned();
    s.kill9();
    s.restart();
    let (st, v) = call(s.req(Method::GET, &format!("/v1/rollouts/{running_id}"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "interrupted", "{v}");
    assert!(v["finished_at"].is_string(), "{v}");
    assert!(
        v["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "interrupted"),
        "{v}"
    );
    let (st, v) = call(s.req(Method::GET, &format!("/v1/rollouts/{failed_id}"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(by_sandbox(&v, &web1)["state"], "rolled_back", "{v}");
    let (st, v) = call(s.req(Method::GET, "/v1/rollouts")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["rollouts"].as_array().unwrap().len(), 5, "{v}");
    assert_eq!(
        v["rollouts"][0]["id"],
        running_id.as_str(),
        "newest first: {v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_rollouts_are_refused_and_change_nothing() {
    let s = Server::start(&[]);
    let key = s.admin_key.clone();
    let web = sandbox(&s, &key, json!({"app": "web"})).await;
    let (_, viewer) = s.new_key(json!({"name": "v", "role": "viewer"})).await;
    let (_, dev) = s.new_key(json!({"name": "d", "role": "developer"})).await;
    let count = || async {
        let (st, v) = call(s.req(Method::GET, "/v1/rollouts")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v["rollouts"].as_array().unwrap().len()
    };
    let touch = json!(["/bin/sh", "-c", "touch /tmp/touched"]);
    let cases = [
        (
            json!({"selector": {"app": "nothing"}, "cmd": touch}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_match",
            "matches no running sandbox",
        ),
        (
            json!({"selector": {"app": "web"}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "needs a command",
        ),
        (
            json!({"selector": {}, "cmd": touch}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "selector needs at least one",
        ),
        (
            json!({"selector": {"app": "web"}, "cmd": touch, "concurrency": 0}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "concurrency must be 1 to 64",
        ),
        (
            json!({"selector": {"app": "web"}, "cmd": touch, "concurrency": 65}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "concurrency must be 1 to 64",
        ),
        (
            json!({"selector": {"app": "web"}, "cmd": touch, "max_failures": 0}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "max_failures",
        ),
        (
            json!({"selector": {"app": "web"}, "cmd": touch, "upload": {"files": []}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "not both",
        ),
        (
            json!({"selector": {"app": "web"}, "upload": {"files": [{"path": "rel", "content": ""}]}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "absolute path",
        ),
        (
            json!([{"app": "web"}, touch]),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "expected a JSON object",
        ),
        (
            json!({"selector": {"app": "web"}, "cmd": touch, "colour": "red"}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "unknown field",
        ),
    ];
    for (body, status, code, msg) in cases {
        let (st, v) = call(s.req(Method::POST, "/v1/rollouts").json(&body)).await;
        assert_eq!(st, status, "{body}: {v}");
        assert_eq!(v["code"], code, "{body}: {v}");
        assert!(v["message"].as_str().unwrap().contains(msg), "{body}: {v}");
    }
    // The wrong role: a viewer reads, but may not start or cancel.
    let (st, v) = call(
        s.req_as(&viewer, Method::POST, "/v1/rollouts")
            .json(&json!({"selector": {"app": "web"}, "cmd": touch})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["code"], "forbidden", "{v}");
    let (st, _) = call(s.req_as(&viewer, Method::GET, "/v1/rollouts")).await;
    assert_eq!(st, StatusCode::OK);
    // A developer reaches only their own sandboxes: the admin's `web` is not theirs.
    let (st, v) = call(
        s.req_as(&dev, Method::POST, "/v1/rollouts")
            .json(&json!({"selector": {"app": "web"}, "cmd": touch})),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(count().await, 0, "a refused rollout is not recorded");
    assert_eq!(file(&s, &web, "/tmp/touched").await, None, "nothing ran");

    let own = sandbox(&s, &dev, json!({"app": "web"})).await;
    let (st, v) = call(
        s.req_as(&dev, Method::POST, "/v1/rollouts?wait=true")
            .json(&json!({"selector": {"app": "web"}, "cmd": touch})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(targets(&v), vec![own.clone()], "only the developer's own");
    assert_eq!(file(&s, &web, "/tmp/touched").await, None);
    // Another key's rollout is invisible to a developer; a finished one cannot be cancelled.
    let (st, admins) = call(
        s.req(Method::POST, "/v1/rollouts?wait=true")
            .json(&json!({"selector": {"app": "web"}, "cmd": ["true"]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{admins}");
    let aid = admins["id"].as_str().unwrap();
    let (st, _) = call(s.req_as(&dev, Method::GET, &format!("/v1/rollouts/{aid}"))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = call(s.req(Method::POST, &format!("/v1/rollouts/{aid}/cancel"))).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (st, v) = call(s.req(Method::GET, "/v1/rollouts/ro_nonesuch")).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_rollout_can_be_cancelled() {
    let s = Server::start(&[]);
    let key = s.admin_key.clone();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(sandbox(&s, &key, json!({"app": "slow"})).await);
    }
    let (st, v) = call(s.req(Method::POST, "/v1/rollouts").json(&json!({
        "selector": {"app": "slow"},
        "cmd": ["/bin/sh", "-c", "touch /tmp/started; sleep 2"],
        "concurrency": 1,
    })))
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let (st, v) = call(s.req(Method::POST, &format!("/v1/rollouts/{id}/cancel"))).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let (_, v) = call(s.req(Method::GET, &format!("/v1/rollouts/{id}"))).await;
        if v["state"] != "running" {
            break v;
        }
        assert!(Instant::now() < deadline, "never ended: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(v["state"], "cancelled", "{v}");
    assert!(v["counts"]["skipped"].as_u64().unwrap() >= 2, "{v}");
    let mut started = 0;
    for sid in &ids {
        started += usize::from(file(&s, sid, "/tmp/started").await.is_some());
    }
    assert!(
        started <= 1,
        "a cancelled rollout started {started} sandboxes"
    );
}

fn paddock(s: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(args)
        .env("PADDOCK_URL", &s.url)
        .env("PADDOCK_API_KEY", &s.admin_key)
        .env_remove("PADDOCK_DATA_DIR")
        .output()
        .expect("running paddock")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_runs_and_uploads_with_progress_lines_and_exit_codes() {
    let s = Server::start(&[]);
    let key = s.admin_key.clone();
    let a = sandbox(&s, &key, json!({"tier": "edge"})).await;
    let b = sandbox(&s, &key, json!({"tier": "edge"})).await;
    let other = sandbox(&s, &key, json!({"tier": "core"})).await;

    let o = paddock(
        &s,
        &[
            "rollout",
            "run",
            "-s",
            "tier=edge",
            "-c",
            "2",
            "--",
            "/bin/sh",
            "-c",
            "echo hi-$((40+2))",
        ],
    );
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    // Not a terminal: one line per change of each sandbox on stderr, the table on stdout.
    assert!(err.contains("2 sandboxes, selector tier=edge"), "{err}");
    for id in [&a, &b] {
        assert!(err.contains(&format!("{id} running")), "{err}");
        assert!(err.contains(&format!("{id} succeeded exit=0")), "{err}");
        assert!(out.contains(id), "{out}");
    }
    assert!(!out.contains(&other) && !err.contains(&other), "{out}{err}");
    assert!(out.contains("hi-42"), "{out}");
    assert!(out.trim_end().ends_with("succeeded"), "{out}");

    // A failing command: exit code 1, the rollback reported.
    sh(&s, &b, "touch /tmp/bad").await;
    let o = paddock(
        &s,
        &[
            "rollout",
            "run",
            "-s",
            "tier=edge",
            "-c",
            "1",
            "--max-failures",
            "1",
            "--rollback",
            "rm -f /tmp/ran",
            "--",
            "/bin/sh",
            "-c",
            "touch /tmp/ran; ! test -e /tmp/bad",
        ],
    );
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains(&format!("{b} failed exit=1")), "{err}");
    assert!(
        err.contains("rolled_back") && err.contains("rollback ok"),
        "{err}"
    );
    assert!(out.contains("failed"), "{out}");
    assert_eq!(file(&s, &a, "/tmp/ran").await, None, "rolled back");

    // An upload of a local file and of a directory.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("one.txt"), "one\n").unwrap();
    std::fs::create_dir(dir.path().join("tree")).unwrap();
    std::fs::write(dir.path().join("tree/two.txt"), "two\n").unwrap();
    let one = dir.path().join("one.txt");
    let o = paddock(
        &s,
        &[
            "rollout",
            "upload",
            "-s",
            "tier=edge",
            one.to_str().unwrap(),
            "/tmp/srv/",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let tree = dir.path().join("tree");
    let o = paddock(
        &s,
        &[
            "rollout",
            "upload",
            "-s",
            "tier=edge",
            tree.to_str().unwrap(),
            "/tmp/srv/tree",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for id in [&a, &b] {
        assert_eq!(
            file(&s, id, "/tmp/srv/one.txt").await.as_deref(),
            Some("one\n")
        );
        assert_eq!(
            file(&s, id, "/tmp/srv/tree/two.txt").await.as_deref(),
            Some("two\n")
        );
    }
    assert_eq!(file(&s, &other, "/tmp/srv/one.txt").await, None);

    // ls and show; show exits 1 for the failed rollout.
    let o = paddock(&s, &["rollout", "ls"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(out.lines().count(), 5, "a header and 4 rollouts: {out}");
    let failed = out
        .lines()
        .find(|l| l.contains(" failed "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    let o = paddock(&s, &["rollout", "show", &failed]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("rolled_back"));
    // Bad input from the CLI: a clear message and exit 1.
    let o = paddock(&s, &["rollout", "run", "-s", "tier=none", "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no_match"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `cargo test -p paddock --test rollouts -- --ignored --nocapture twenty`: how long a
/// rollout over 20 sandboxes takes at concurrency 4 and 20 (recorded in docs/rollouts.md).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a test"]
async fn twenty_sandboxes_at_concurrency_4_and_20() {
    let s = Server::start(&[]);
    let key = s.admin_key.clone();
    for _ in 0..20 {
        sandbox(&s, &key, json!({"bench": "yes"})).await;
    }
    for cmd in [json!(["true"]), json!(["sleep", "1"])] {
        for c in [4, 20] {
            let t0 = Instant::now();
            let r = rollout(
                &s,
                json!({"selector": {"bench": "yes"}, "cmd": cmd, "concurrency": c}),
            )
            .await;
            assert_eq!(r["state"], "succeeded", "{r}");
            println!("{cmd} at concurrency {c}: {:?}", t0.elapsed());
        }
    }
}
