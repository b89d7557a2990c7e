//! End-to-end tests of exec, processes, PTY and files over the REST API, against the real
//! `paddock serve`.

mod server;

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::*;

async fn sandbox(s: &Server) -> String {
    s.create(json!({"timeout": 600})).await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

async fn exec(s: &Server, id: &str, body: Value) -> (StatusCode, Value) {
    call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_returns_json_with_exit_codes_output_env_cwd_stdin_and_history() {
    let s = Server::start(&[]);
    let id = sandbox(&s).await;
    let (st, v) = exec(
        &s,
        &id,
        json!({"cmd": ["/bin/sh", "-c", "echo out; echo err >&2; pwd; echo $FOO; cat; exit 3"], "env": {"FOO": "bar"}, "cwd": "/tmp", "stdin": "piped"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["stdout"], "out\n/tmp\nbar\npiped");
    assert_eq!(v["stderr"], "err\n");
    assert_eq!(v["stdout_truncated"], false);
    assert!(v["duration_ms"].as_u64().is_some());
    // A shell command line, run by bash -l -c, as the default user.
    let (_, v) = exec(&s, &id, json!({"command": "whoami && echo $((6*7)) | cat"})).await;
    assert_eq!(v["stdout"], "user\n42\n", "{v}");
    let (_, v) = exec(&s, &id, json!({"command": "id -u", "user": "root"})).await;
    assert_eq!(v["stdout"], "0\n");
    // Killed by a signal.
    let (_, v) = exec(&s, &id, json!({"command": "kill -9 $$"})).await;
    assert!(v["exit_code"].is_null() || v["exit_code"] == 137, "{v}");
    assert!(
        v["status"].as_str().unwrap_or_default().contains("kill"),
        "{v}"
    );
    // Timeout.
    let (_, v) = exec(&s, &id, json!({"command": "sleep 30", "timeout": 1})).await;
    assert_eq!(v["timed_out"], true, "{v}");
    // Output cap.
    let (_, v) = exec(
        &s,
        &id,
        json!({"command": "head -c 100000 /dev/zero | tr '\\0' a", "max_output": 1000}),
    )
    .await;
    assert_eq!(v["stdout"].as_str().map(str::len), Some(1000));
    assert_eq!(v["stdout_truncated"], true);
    // Bad input.
    for body in [
        json!({}),
        json!({"cmd": []}),
        json!({"cmd": ["true"], "command": "true"}),
        json!({"cmd": ["true"], "timeout": 86401}),
        json!({"cmd": ["true"], "bogus": 1}),
    ] {
        let (st, v) = exec(&s, &id, body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
    }
    let (st, v) = exec(&s, &id, json!({"cmd": ["/no/such/binary"]})).await;
    assert_eq!((st, &v["exit_code"]), (StatusCode::OK, &json!(127)), "{v}");
    // History.
    let (_, logs) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/logs"))).await;
    let execs = logs["execs"].as_array().expect("execs");
    assert!(execs.len() >= 6, "{logs}");
    assert!(execs.iter().any(|e| e["exit_code"] == 3), "{logs}");
    // Exec in a killed sandbox is a conflict, in another tenant's a 404.
    let (_, other) = s.new_key(json!({"name": "other"})).await;
    let (st, _) = call(
        s.req_as(&other, Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"cmd": ["true"]})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = exec(&s, &id, json!({"cmd": ["true"]})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
}

/// Reads NDJSON lines from a streaming response.
async fn ndjson(resp: reqwest::Response) -> Vec<Value> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.expect("chunk"));
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            if line.len() > 1 {
                out.push(serde_json::from_slice(&line).expect("ndjson line"));
            }
        }
    }
    out
}

/// `GET .../processes/{pid}/output?from_seq=0` as NDJSON: the replay, then the live output.
async fn output_from_start(s: &Server, id: &str, pid: u64) -> reqwest::Response {
    let resp = s
        .req(
            Method::GET,
            &format!("/v1/sandboxes/{id}/processes/{pid}/output?from_seq=0"),
        )
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .expect("output");
    assert_eq!(resp.status(), StatusCode::OK);
    resp
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_background_replay_stdin_signal_and_process_list() {
    let s = Server::start(&[]);
    let id = sandbox(&s).await;
    // NDJSON stream: start first, output in order with sequence numbers, exactly one end.
    let resp = s
        .req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
        .header("accept", "application/x-ndjson")
        .json(&json!({"command": "for i in 1 2 3; do echo line$i; sleep 0.1; done; echo bye >&2"}))
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status(), StatusCode::OK);
    let lines = ndjson(resp).await;
    assert_eq!(lines[0]["type"], "start", "{lines:?}");
    let ends: Vec<_> = lines.iter().filter(|l| l["type"] == "end").collect();
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0]["exit_code"], 0);
    assert_eq!(lines.last().map(|l| l["type"].clone()), Some(json!("end")));
    let stdout: String = lines
        .iter()
        .filter(|l| l["type"] == "stdout")
        .map(|l| l["data"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(stdout, "line1\nline2\nline3\n");
    assert!(
        lines
            .iter()
            .any(|l| l["type"] == "stderr" && l["data"] == "bye\n")
    );

    // SSE of the same.
    let resp = s
        .req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
        .header("accept", "text/event-stream")
        .json(&json!({"command": "echo sse"}))
        .send()
        .await
        .expect("sse");
    let text = resp.text().await.expect("sse body");
    assert!(
        text.contains("event: start") && text.contains("event: end"),
        "{text}"
    );
    assert!(text.contains("sse\\n"), "{text}");

    // Background: 202 with a pid; it shows in the process list; replay its output; stdin
    // reaches it; a signal ends it.
    let (st, v) = exec(
        &s,
        &id,
        json!({"command": "echo ready; while read l; do echo got:$l; done", "background": true, "tag": "reader"}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let pid = v["pid"].as_u64().expect("pid");
    let (st, list) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/processes"))).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        list["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .any(|p| p["pid"] == pid && p["tag"] == "reader"),
        "{list}"
    );
    let (st, _) = call(
        s.req(
            Method::POST,
            &format!("/v1/sandboxes/{id}/processes/{pid}/stdin"),
        )
        .header("content-type", "application/octet-stream")
        .body("hello\n"),
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // Follow the output from the start; signal only once the line has come back, so a
    // slow machine cannot turn this into a race between stdin and the signal.
    let resp = output_from_start(&s, &id, pid).await;
    let mut stream = resp.bytes_stream();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while !String::from_utf8_lossy(&seen).contains("got:hello") {
            seen.extend_from_slice(&stream.next().await.expect("more output").expect("chunk"));
        }
    })
    .await
    .expect("stdin reached the background process");
    drop(stream);
    let (st, _) = call(
        s.req(
            Method::POST,
            &format!("/v1/sandboxes/{id}/processes/{pid}/signal"),
        )
        .json(&json!({"signal": "SIGTERM"})),
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let resp = output_from_start(&s, &id, pid).await;
    let lines = tokio::time::timeout(Duration::from_secs(20), ndjson(resp))
        .await
        .expect("replay ends when the process has ended");
    let out: String = lines
        .iter()
        .filter(|l| l["type"] == "stdout")
        .map(|l| l["data"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(out, "ready\ngot:hello\n", "{lines:?}");
    // Unknown pid.
    let (st, v) = call(
        s.req(
            Method::POST,
            &format!("/v1/sandboxes/{id}/processes/999999/signal"),
        )
        .json(&json!({"signal": "SIGKILL"})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pty_over_websocket() {
    let s = Server::start(&[]);
    let id = sandbox(&s).await;
    let url = format!(
        "{}/v1/sandboxes/{id}/pty?cols=100&rows=30",
        s.url.replace("http://", "ws://")
    );
    use tokio_tungstenite::tungstenite::Message;
    let frames = vec![
        Message::text(r#"{"type":"resize","cols":120,"rows":40}"#),
        Message::binary(b"stty size; tty; exit 7\n".to_vec()),
    ];
    let (text, exit) = pty_session(&url, &s.admin_key, frames).await;
    assert!(text.contains("40 120"), "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert_eq!(exit.expect("exit frame")["exit_code"], 7);
    // Without a key the upgrade is refused.
    let url = format!(
        "{}/v1/sandboxes/{id}/pty",
        s.url.replace("http://", "ws://")
    );
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn files_stream_both_ways_and_fs_operations() {
    let s = Server::start(&[]);
    let id = sandbox(&s).await;
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (st, v) = call(
        s.req(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/files?path=/home/user/dir/a.bin"),
        )
        .header("content-type", "application/octet-stream")
        .body(data.clone()),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let r = s
        .req(
            Method::GET,
            &format!("/v1/sandboxes/{id}/files?path=/home/user/dir/a.bin"),
        )
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("body").to_vec(), data);
    let (_, v) = exec(
        &s,
        &id,
        json!({"command": "stat -c '%U %s' /home/user/dir/a.bin"}),
    )
    .await;
    assert_eq!(v["stdout"], "user 3000000\n");

    let (st, v) = call(s.req(
        Method::GET,
        &format!("/v1/sandboxes/{id}/fs/stat?path=/home/user/dir/a.bin"),
    ))
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (v["type"].as_str(), v["size"].as_u64()),
        (Some("file"), Some(3_000_000))
    );
    let (st, _) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/fs/mkdir"))
            .json(&json!({"path": "/home/user/new/deep"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/fs/move"))
            .json(&json!({"from": "/home/user/dir/a.bin", "to": "/home/user/new/b.bin"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = call(s.req(
        Method::GET,
        &format!("/v1/sandboxes/{id}/fs/list?path=/home/user&depth=2"),
    ))
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let names: Vec<_> = v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        names.contains(&"/home/user/new/b.bin".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"/home/user/new/deep".to_owned()),
        "{names:?}"
    );
    let (st, _) = call(s.req(
        Method::DELETE,
        &format!("/v1/sandboxes/{id}/files?path=/home/user/new/b.bin"),
    ))
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = call(s.req(
        Method::GET,
        &format!("/v1/sandboxes/{id}/files?path=/home/user/new/b.bin"),
    ))
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    // E2: a planted symlink to the host's files is resolved inside the sandbox.
    let (_, _) = exec(
        &s,
        &id,
        json!({"command": "ln -s / /home/user/root; ln -s /etc/shadow /home/user/sh"}),
    )
    .await;
    let canary = format!("canary-{}", paddock_core::SandboxId::random());
    std::fs::write("/var/tmp/paddock-canary", &canary).expect("canary");
    for p in [
        "/home/user/root/var/tmp/paddock-canary",
        "/home/user/sh",
        "/var/tmp/paddock-canary",
    ] {
        let r = s
            .req(Method::GET, &format!("/v1/sandboxes/{id}/files?path={p}"))
            .send()
            .await
            .expect("get");
        let body = r.text().await.unwrap_or_default();
        assert!(!body.contains(&canary), "host canary leaked through {p}");
    }
    // Paths with NUL are refused.
    let (st, _) = call(s.req(
        Method::GET,
        &format!("/v1/sandboxes/{id}/files?path=/tmp/a%00b"),
    ))
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn tests_route_returns_structured_pytest_results() {
    let s = Server::start(&[]);
    let id = sandbox(&s).await;
    let (_, v) = exec(
        &s,
        &id,
        json!({"command": "mkdir -p /home/user/proj && cd /home/user/proj && printf 'import pytest\\ndef test_ok():\\n    assert 1\\ndef test_bad():\\n    assert 1 == 2\\n@pytest.mark.skip\\ndef test_skip():\\n    pass\\n' > test_x.py"}),
    )
    .await;
    assert_eq!(v["exit_code"], 0, "{v}");
    let (st, r) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/tests"))
            .json(&json!({"cwd": "/home/user/proj"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["framework"], "pytest");
    assert_eq!(
        (
            r["passed"].as_u64(),
            r["failed"].as_u64(),
            r["skipped"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(r["structured"], true);
    assert_eq!(r["failures"][0]["name"], "test_bad");
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/tests"))
            .json(&json!({"cwd": "/tmp"})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
}

/// The history entry of the last command of a sandbox that contains `needle`.
async fn history_of(s: &Server, id: &str, needle: &str) -> Value {
    let (_, logs) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/logs"))).await;
    logs["execs"]
        .as_array()
        .expect("execs")
        .iter()
        .rev()
        .find(|e| e["command"].as_str().unwrap_or_default().contains(needle))
        .cloned()
        .unwrap_or_else(|| panic!("no history entry for {needle}: {logs}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_starts_exit_127_or_126_and_are_recorded_as_failed() {
    let s = Server::start(&[]);
    let id = sandbox(&s).await;
    let (_, v) = exec(
        &s,
        &id,
        json!({"command": "printf 'echo hi' > /tmp/noexec.sh; mkdir -p /tmp/locked; chmod 700 /tmp/locked", "user": "root"}),
    )
    .await;
    assert_eq!(v["exit_code"], 0, "{v}");
    // JSON: a result, as a shell gives it, with the reason on stderr and in `error`.
    for (cmd, code, why) in [
        ("no-such-command", 127, "not found"),
        ("/tmp/noexec.sh", 126, "not executable"),
        ("/tmp", 126, "not executable"),
    ] {
        let (st, v) = exec(&s, &id, json!({"cmd": [cmd, "arg"]})).await;
        assert_eq!(st, StatusCode::OK, "{cmd}: {v}");
        assert_eq!(v["exit_code"], code, "{cmd}: {v}");
        assert_eq!(v["pid"], Value::Null, "{v}");
        assert!(v["error"].as_str().unwrap_or_default().contains(why), "{v}");
        assert!(
            v["stderr"].as_str().unwrap_or_default().contains(why),
            "{v}"
        );
        let h = history_of(&s, &id, cmd).await;
        assert_eq!(h["exit_code"], code, "{h}");
        let status = h["status"].as_str().unwrap_or_default();
        assert!(
            status.starts_with("failed: ") && status.contains(why),
            "{h}"
        );
    }
    // Streaming and background starts are recorded too (they used to stay `running`).
    let r = s
        .req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
        .header("accept", "application/x-ndjson")
        .json(&json!({"cmd": ["stream-missing"]}))
        .send()
        .await
        .expect("exec");
    assert_eq!(r.status(), StatusCode::OK);
    let lines = ndjson(r).await;
    let end = lines.last().expect("an end line");
    assert_eq!(
        (&end["type"], &end["exit_code"]),
        (&json!("end"), &json!(127)),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l["type"] == "stderr"), "{lines:?}");
    let h = history_of(&s, &id, "stream-missing").await;
    assert_eq!(h["exit_code"], 127, "{h}");
    let (st, v) = exec(&s, &id, json!({"cmd": ["bg-missing"], "background": true})).await;
    assert_eq!((st, &v["exit_code"]), (StatusCode::OK, &json!(127)), "{v}");
    assert_eq!(history_of(&s, &id, "bg-missing").await["exit_code"], 127);
    // A working directory that does not exist or the user may not enter is a clear error,
    // and recorded as failed with the reason.
    for (cwd, why) in [
        ("/no/such/dir", "does not exist"),
        ("/tmp/locked", "cannot be entered"),
    ] {
        for accept in ["application/json", "application/x-ndjson"] {
            let (st, v) = call(
                s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                    .header("accept", accept)
                    .json(&json!({"cmd": ["true"], "cwd": cwd})),
            )
            .await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{cwd} {accept}: {v}");
            assert!(
                v["message"].as_str().unwrap_or_default().contains(why),
                "{v}"
            );
        }
        let (_, logs) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/logs"))).await;
        let execs = logs["execs"].as_array().expect("execs");
        assert!(
            execs.iter().all(|e| e["status"] != "running"),
            "no failed start stays running: {logs}"
        );
        assert!(
            execs
                .iter()
                .any(|e| e["status"].as_str().unwrap_or_default().contains(why)),
            "{logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_time_limits_default_for_foreground_none_for_background_or_zero() {
    // A small server default, so the test does not wait a minute.
    let s = Server::start(&["--exec-timeout", "2s"]);
    let id = sandbox(&s).await;
    // Foreground without a timeout: the server default applies.
    let (_, v) = exec(&s, &id, json!({"command": "sleep 30"})).await;
    assert_eq!(v["timed_out"], true, "{v}");
    let took = v["duration_ms"].as_u64().expect("duration");
    assert!(
        (1500..10_000).contains(&took),
        "killed at the 2 s default: {v}"
    );
    // `timeout: 0` is no limit of its own.
    let (_, v) = exec(
        &s,
        &id,
        json!({"command": "sleep 3; echo done", "timeout": 0}),
    )
    .await;
    assert_eq!(
        (&v["exit_code"], &v["stdout"]),
        (&json!(0), &json!("done\n")),
        "{v}"
    );
    // Background without a timeout lives past the default.
    let (st, v) = exec(
        &s,
        &id,
        json!({"command": "sleep 3; echo done > /tmp/bg", "background": true}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let h = eventually(
        Duration::from_secs(20),
        "the background command ends",
        || async {
            let h = history_of(&s, &id, "/tmp/bg").await;
            if h["status"] != "running" {
                Ok(h)
            } else {
                Err(h)
            }
        },
    )
    .await;
    assert_eq!(
        h["exit_code"], 0,
        "the background command ran to its end: {h}"
    );
    let (_, v) = exec(&s, &id, json!({"command": "cat /tmp/bg"})).await;
    assert_eq!(v["stdout"], "done\n", "{v}");
    // A background command with a timeout is still killed at it.
    let (_, v) = exec(
        &s,
        &id,
        json!({"command": "sleep 30; echo late > /tmp/late", "background": true, "timeout": 1}),
    )
    .await;
    let pid = v["pid"].as_u64().expect("pid");
    eventually(
        Duration::from_secs(20),
        "the process is killed at its timeout",
        || async {
            let (_, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/processes"))).await;
            let listed = v["processes"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["pid"] == pid));
            done_when(!listed, &v)
        },
    )
    .await;
}

/// The history entries of a sandbox whose command contains `needle`.
async fn history_rows(s: &Server, id: &str, needle: &str) -> Vec<Value> {
    let (_, logs) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/logs"))).await;
    logs["execs"]
        .as_array()
        .expect("execs")
        .iter()
        .filter(|e| e["command"].as_str().unwrap_or_default().contains(needle))
        .cloned()
        .collect()
}

/// A one-shot JSON exec that ends at once gets its history row and audit entry in one
/// write behind the answer; one that runs longer shows as `running` while it runs. Either
/// way: one history row with its outcome and one audit entry per exec.
#[tokio::test(flavor = "multi_thread")]
async fn one_shot_execs_are_in_the_history_while_they_run_and_audited_once() {
    let s = Server::start(&[]);
    let id = sandbox(&s).await;
    let (st, v) = exec(&s, &id, json!({"cmd": ["echo", "quick"]})).await;
    assert_eq!((st, &v["exit_code"]), (StatusCode::OK, &json!(0)), "{v}");
    let rows = history_rows(&s, &id, "echo quick").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (&rows[0]["status"], &rows[0]["exit_code"], &rows[0]["pid"]),
        (&json!("exit status 0"), &json!(0), &v["pid"]),
        "{rows:?}"
    );
    // A longer one: its row says `running` before the answer, then its outcome.
    let slow = tokio::spawn(call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"command": "sleep 3; echo slow"})),
    ));
    eventually(
        Duration::from_secs(20),
        "the running command is in the history",
        || async {
            let rows = history_rows(&s, &id, "echo slow").await;
            match rows.first() {
                Some(r) if r["status"] == "running" => Ok(()),
                _ => Err(format!("{rows:?}")),
            }
        },
    )
    .await;
    assert!(
        !slow.is_finished(),
        "the command ended before it was seen running"
    );
    let (st, v) = slow.await.expect("exec task");
    assert_eq!(
        (st, &v["stdout"]),
        (StatusCode::OK, &json!("slow\n")),
        "{v}"
    );
    let rows = history_rows(&s, &id, "echo slow").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (&rows[0]["status"], &rows[0]["exit_code"]),
        (&json!("exit status 0"), &json!(0)),
        "{rows:?}"
    );
    assert!(
        rows[0]["duration_ms"].as_u64().unwrap_or(0) >= 2500,
        "{rows:?}"
    );
    let (st, audit) = call(s.req(Method::GET, &format!("/v1/audit?sandbox_id={id}"))).await;
    assert_eq!(st, StatusCode::OK);
    let execs: Vec<_> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "exec")
        .map(|e| (e["outcome"].clone(), e["detail"].clone()))
        .collect();
    assert_eq!(
        execs,
        [
            (json!("ok"), json!("sleep 3; echo slow")),
            (json!("ok"), json!("echo quick")),
        ],
        "{audit}"
    );
}

/// The agent keeps user lookups while `/etc/passwd` and `/etc/group` are unchanged: a user
/// and a group added afterwards (in place, as `>>` does: same inode, new size) are seen by
/// the next command, and a renamed user's old name is refused again.
#[tokio::test(flavor = "multi_thread")]
async fn users_added_after_commands_ran_are_seen_at_once() {
    let s = Server::start(&[]);
    let id = sandbox(&s).await;
    // Fill the cache: the default user, and root.
    let (_, v) = exec(&s, &id, json!({"command": "id -un"})).await;
    assert_eq!(v["stdout"], "user\n", "{v}");
    let (st, v) = exec(&s, &id, json!({"command": "id -u", "user": "newu"})).await;
    assert_ne!(st, StatusCode::OK, "no such user yet: {v}");
    let (st, v) = exec(
        &s,
        &id,
        json!({"command": "echo 'newu:x:1234:1234::/tmp:/bin/sh' >> /etc/passwd && echo 'extra:x:4321:newu' >> /etc/group", "user": "root"}),
    )
    .await;
    assert_eq!((st, &v["exit_code"]), (StatusCode::OK, &json!(0)), "{v}");
    let (st, v) = exec(&s, &id, json!({"cmd": ["/usr/bin/id"], "user": "newu"})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let out = v["stdout"].as_str().unwrap_or_default();
    assert!(out.starts_with("uid=1234"), "{v}");
    assert!(out.contains("4321"), "the new supplementary group: {v}");
    // Renamed by `sed -i`: a new file of the same size; a stale cache would still know newu.
    let (_, v) = exec(
        &s,
        &id,
        json!({"command": "sed -i 's/^newu:/neww:/' /etc/passwd", "user": "root"}),
    )
    .await;
    assert_eq!(v["exit_code"], 0, "{v}");
    let (st, v) = exec(&s, &id, json!({"command": "id -u", "user": "newu"})).await;
    assert_ne!(st, StatusCode::OK, "renamed away: {v}");
    let (_, v) = exec(&s, &id, json!({"command": "id -u", "user": "neww"})).await;
    assert_eq!(v["stdout"], "1234\n", "{v}");
}
