//! The crash test (security battery H1/H3): `kill -9` the server while five sandboxes run
//! long commands and an upload is in flight, restart it, and check that the reconciliation
//! policy held (live sandboxes adopted, with their deadlines) and that nothing leaked.

mod server;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use server::*;

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_exec_and_upload_then_restart_adopts_and_leaks_nothing() {
    let mut s = Server::start(&[]);
    let mut ids = Vec::new();
    for i in 0..5 {
        let v = s
            .create(json!({"timeout": 600, "metadata": {"n": i.to_string()}}))
            .await;
        let id = v["id"].as_str().expect("id").to_owned();
        // A long command in the background, writing a heartbeat file.
        let (st, v) = call(
            s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                .json(&json!({
                    "command": "while :; do date +%s%N > /tmp/beat.new; mv /tmp/beat.new /tmp/beat; sleep 0.05; done",
                    "background": true,
                })),
        )
        .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        ids.push(id);
    }
    // One sandbox created and killed before the crash: must stay stopped.
    let gone = s.create(json!({})).await;
    let gone_id = gone["id"].as_str().expect("id").to_owned();
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{gone_id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);

    // An upload in flight: a body that trickles in and never finishes.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let upload = s
        .req(
            Method::PUT,
            &format!("/v1/sandboxes/{}/files?path=/tmp/partial.bin", ids[0]),
        )
        .header("content-type", "application/octet-stream")
        .body(body)
        .send();
    let upload = tokio::spawn(upload);
    for _ in 0..8 {
        tx.send(Ok(vec![7u8; 1 << 20])).await.expect("feed upload");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let server_pid = s.pid().expect("pid");
    s.kill9();
    drop(tx);
    let _ = upload.await;
    assert!(!std::path::Path::new(&format!("/proc/{server_pid}")).exists());

    // The sandboxes kept running while the server was down.
    for id in &ids {
        assert!(
            !processes_of(id).is_empty(),
            "sandbox {id} died with the server"
        );
    }

    s.restart();
    for id in &ids {
        let (st, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}"))).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["state"], "running", "{v}");
        assert_eq!(v["timeout"], 600);
        // Still alive and usable: the heartbeat moves and a new exec works.
        let (st, r) = call(
            s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                .json(&json!({"command": "a=$(cat /tmp/beat); sleep 0.3; b=$(cat /tmp/beat); [ $b -gt $a ] && echo alive"})),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{r}");
        assert_eq!(r["stdout"], "alive\n", "{r}");
        let (_, logs) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/logs"))).await;
        assert!(
            logs["events"]
                .as_array()
                .expect("events")
                .iter()
                .any(|e| e["kind"] == "adopted"),
            "{logs}"
        );
    }
    let (_, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{gone_id}"))).await;
    assert_eq!(v["state"], "stopped");
    assert!(leftovers(&gone_id).is_empty());

    // The API matches reality: exactly the five are running.
    let (_, list) = call(s.req(Method::GET, "/v1/sandboxes")).await;
    let mut listed: Vec<String> = list["sandboxes"]
        .as_array()
        .expect("list")
        .iter()
        .map(|x| x["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    listed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(listed, want);

    // A clean stop (policy destroy in tests) leaves nothing of any of them.
    s.stop();
    for id in &ids {
        assert_eq!(leftovers(id), Vec::<String>::new(), "sandbox {id}");
    }
}

/// A `Stream` over an mpsc receiver (without pulling in tokio-stream).
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_that_vanished_while_the_server_was_down_is_marked_lost() {
    let mut s = Server::start(&[]);
    let v = s.create(json!({})).await;
    let id = v["id"].as_str().expect("id").to_owned();
    s.kill9();
    // Kill the sandbox behind the server's back: every process in its cgroup.
    for pid in processes_of(&id) {
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
    // Tearing down a pid namespace can take seconds on a loaded 2-core machine; the
    // restart must come after the sandbox is really gone, or it is (rightly) adopted.
    for _ in 0..400 {
        if processes_of(&id).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        processes_of(&id),
        Vec::<u32>::new(),
        "sandbox {id} did not die"
    );
    s.restart();
    let (_, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(
        (v["state"].as_str(), v["stop_reason"].as_str()),
        (Some("stopped"), Some("lost")),
        "{v}"
    );
    assert_eq!(leftovers(&id), Vec::<String>::new());
}
