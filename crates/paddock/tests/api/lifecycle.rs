//! A sandbox's life through the API: the round trip, timeout warnings and expiry with their
//! events and webhooks, an agent that dies, and two servers on one host.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_lifecycle_round_trip() {
    let s = Server::start(&[]);
    let v = s
        .create(json!({
            "template": "base",
            "timeout": 120,
            "memory": "256M",
            "cpus": 0.5,
            "pids": 128,
            "disk": 1073741824u64,
            "env": {"GREETING": "hello"},
            "metadata": {"session": "s-1", "owner": "ci"},
        }))
        .await;
    let id = v["id"].as_str().expect("id").to_owned();
    assert_eq!(v["state"], "running");
    assert_eq!(v["limits"]["memory_bytes"], 256 << 20);
    assert_eq!(v["limits"]["cpu_millis"], 500);
    assert_eq!(v["limits"]["pids"], 128);
    assert_eq!(v["timeout"], 120);
    assert_eq!(v["env_keys"], json!(["GREETING"]));
    assert!(v["expires_at"].is_string() && v["ready_at"].is_string());
    // The runtime really applied the limits.
    let mem = cgroups_of(&id)
        .into_iter()
        .map(|d| d.join("memory.limit_in_bytes"))
        .chain(cgroups_of(&id).into_iter().map(|d| d.join("memory.max")))
        .find_map(|p| std::fs::read_to_string(p).ok())
        .expect("memory limit file");
    assert_eq!(mem.trim(), (256u64 << 20).to_string());

    let (st, got) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(got["metadata"]["session"], "s-1");

    // A second sandbox with other metadata; the filter tells them apart.
    let other = s.create(json!({"metadata": {"session": "s-2"}})).await;
    let (_, list) = call(s.req(Method::GET, "/v1/sandboxes?metadata.session=s-1")).await;
    let ids: Vec<_> = list["sandboxes"]
        .as_array()
        .expect("list")
        .iter()
        .map(|x| x["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, vec![id.clone()]);
    let (_, list) = call(s.req(Method::GET, "/v1/sandboxes?state=running")).await;
    assert_eq!(list["sandboxes"].as_array().map(Vec::len), Some(2));

    let (st, stats) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/stats"))).await;
    assert_eq!(st, StatusCode::OK, "{stats}");
    assert!(stats["memory_bytes"].as_u64().is_some_and(|m| m > 0));
    assert!(stats["pids"].as_u64().is_some_and(|p| p >= 1));

    // Extend, then set the timeout.
    let (st, t) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/timeout"))
            .json(&json!({"timeout": 600})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{t}");
    assert_eq!(t["timeout"], 600);
    let (st, _) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/timeout"))
            .json(&json!({"extend": 60})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);

    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(leftovers(&id), Vec::<String>::new());
    let (_, got) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(
        (got["state"].as_str(), got["stop_reason"].as_str()),
        (Some("stopped"), Some("killed"))
    );
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, list) = call(s.req(Method::GET, "/v1/sandboxes?state=stopped")).await;
    assert_eq!(list["sandboxes"][0]["id"], id);

    let (_, logs) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/logs"))).await;
    let kinds: Vec<_> = logs["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        kinds,
        ["created", "timeout_changed", "timeout_changed", "killed"]
    );

    let (st, audit) = call(s.req(Method::GET, &format!("/v1/audit?sandbox_id={id}"))).await;
    assert_eq!(st, StatusCode::OK);
    let actions: Vec<_> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("sandbox.create".into(), "ok".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("sandbox.delete".into(), "ok".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("sandbox.delete".into(), "not_found".into())),
        "{actions:?}"
    );

    let oid = other["id"].as_str().expect("id");
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{oid}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);

    let r = s
        .req(Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap_or_default();
    assert!(text.contains("paddock_sandboxes_created_total 2"), "{text}");
    assert!(text.contains("paddock_sandboxes_killed_total 2"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_warnings_then_expiry_with_events_and_webhooks() {
    // A webhook receiver on loopback.
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook_addr = hook.local_addr().expect("addr");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut c, _)) = hook.accept().await else {
                break;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read until the JSON body is complete (Content-Length framing).
                loop {
                    let n = c.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            let _ = tx.send((head.to_owned(), body.to_owned()));
                            break;
                        }
                    }
                }
                let _ = c
                    .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    let s = Server::start(&[
        "--warn-at",
        "0.5",
        "--allow-private-webhooks",
        "--webhook-secret",
        "s3cret",
    ]);
    // Subscribe to the SSE stream before creating.
    let sse = s
        .req(Method::GET, "/v1/events")
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("sse");
    assert_eq!(sse.status(), StatusCode::OK);
    let t0 = Instant::now();
    let v = s
        .create(json!({"timeout": 3, "webhook_url": format!("http://{hook_addr}/hook")}))
        .await;
    let id = v["id"].as_str().expect("id").to_owned();
    let mut seen: Vec<(String, Duration)> = Vec::new();
    let mut stream = sse.bytes_stream();
    let mut buf = String::new();
    use futures::StreamExt;
    while seen.iter().all(|(k, _)| k != "expired") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")
            .expect("stream open")
            .expect("chunk");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buf.find("\n\n") {
            let ev: String = buf[..i].to_owned();
            buf.drain(..i + 2);
            if let Some(data) = ev.lines().find_map(|l| l.strip_prefix("data: ")) {
                let e: Value = serde_json::from_str(data).expect("event json");
                if e["sandbox_id"] == id {
                    seen.push((
                        e["kind"].as_str().unwrap_or_default().to_owned(),
                        t0.elapsed(),
                    ));
                }
            }
        }
    }
    let kinds: Vec<_> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["created", "timeout_warning", "expired"]);
    let warn_at = seen[1].1;
    let expired_at = seen[2].1;
    assert!(
        warn_at >= Duration::from_millis(1400) && warn_at < expired_at,
        "warning at {warn_at:?}"
    );
    assert!(
        expired_at >= Duration::from_secs(3) && expired_at < Duration::from_secs(5),
        "expired at {expired_at:?}"
    );
    let (_, got) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(
        (got["state"].as_str(), got["stop_reason"].as_str()),
        (Some("stopped"), Some("expired"))
    );
    assert_eq!(leftovers(&id), Vec::<String>::new());
    // The webhook received the same three events.
    let mut hooked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while hooked.len() < 3 && Instant::now() < deadline {
        if let Ok(Some((head, b))) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            // Every delivery is signed: HMAC-SHA256 over "<timestamp>.<body>".
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default()
            };
            let ts = header("x-paddock-timestamp");
            assert_eq!(
                header("x-paddock-signature"),
                paddock_service::webhooks::sign("s3cret", &ts, &b),
                "bad webhook signature"
            );
            let e: Value = serde_json::from_str(&b).expect("webhook json");
            hooked.push(e["kind"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(hooked, ["created", "timeout_warning", "expired"]);
    // Replay with Last-Event-ID gives only later events.
    let (_, all) = call(s.req(Method::GET, &format!("/v1/events?sandbox_id={id}"))).await;
    let first_seq = all["events"][0]["seq"].as_i64().expect("seq");
    let (_, later) = call(s.req(
        Method::GET,
        &format!("/v1/events?sandbox_id={id}&after={first_seq}"),
    ))
    .await;
    assert_eq!(later["events"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_whose_agent_dies_is_stopped_and_cleaned_up() {
    let s = Server::start(&[]);
    let v = s.create(json!({})).await;
    let id = v["id"].as_str().expect("id").to_owned();
    for pid in processes_of(&id) {
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
    let got = eventually(Duration::from_secs(10), "the sandbox stops", || async {
        let (_, got) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}"))).await;
        if got["state"] == "stopped" {
            Ok(got)
        } else {
            Err(got)
        }
    })
    .await;
    assert_eq!(got["stop_reason"], "failed", "{got}");
    assert_eq!(leftovers(&id), Vec::<String>::new());
    let (_, logs) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/logs"))).await;
    assert!(
        logs["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["kind"] == "failed"),
        "{logs}"
    );
}

/// Host uids of the live processes of sandbox `id`.
fn uids_of(id: &str) -> BTreeSet<u32> {
    processes_of(id)
        .into_iter()
        .filter_map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_on_one_host_never_share_uid_ranges() {
    let a = Server::start(&[]);
    let b = Server::start(&[]);
    let mut ranges = BTreeSet::new();
    for s in [&a, &b, &a, &b] {
        let v = s.create(json!({})).await;
        let id = v["id"].as_str().expect("id").to_owned();
        let uids = uids_of(&id);
        assert!(!uids.is_empty(), "sandbox {id} has no processes");
        // 65,536 ids per sandbox, aligned.
        let bases: BTreeSet<u32> = uids.iter().map(|u| u & !0xffff).collect();
        assert_eq!(bases.len(), 1, "{uids:?}");
        assert!(
            ranges.insert(bases.into_iter().next().unwrap_or_default()),
            "a uid range was given twice"
        );
    }
}
