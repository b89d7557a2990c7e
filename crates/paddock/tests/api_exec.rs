//! End-to-end tests of exec, processes, PTY and files over the REST API, against the real
//! `paddock serve`.

mod server;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
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
        json!({"cmd": ["true"], "timeout": 0}),
        json!({"cmd": ["true"], "bogus": 1}),
    ] {
        let (st, v) = exec(&s, &id, body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
    }
    let (st, _) = exec(&s, &id, json!({"cmd": ["/no/such/binary"]})).await;
    assert!(st.is_client_error(), "{st}");
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
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .expect("ws request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", s.admin_key).parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("ws connect");
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(r#"{"type":"resize","cols":120,"rows":40}"#))
        .await
        .expect("resize");
    ws.send(Message::binary(b"stty size; tty; exit 7\n".to_vec()))
        .await
        .expect("input");
    let mut out = Vec::new();
    let mut exit = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
        match m {
            Message::Binary(b) => out.extend_from_slice(&b),
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).expect("text frame json");
                if v["type"] == "exit" {
                    exit = Some(v);
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    let text = String::from_utf8_lossy(&out);
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
