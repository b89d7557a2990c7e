//! End-to-end tests of the REST API: the real `paddock serve` on a free port with a fresh
//! data directory, driven over HTTP. Covers the sandbox lifecycle routes, events, keys,
//! audit, metrics, and the API rows (F) of the security battery.

mod server;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::*;

#[tokio::test(flavor = "multi_thread")]
async fn health_and_openapi_are_open_and_the_document_covers_every_route() {
    let s = Server::start(&[]);
    let (st, v) = call(s.http.get(format!("{}/v1/health", s.url))).await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (st, doc) = call(s.http.get(format!("{}/v1/openapi.json", s.url))).await;
    assert_eq!(st, StatusCode::OK);
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .expect("ops")
                .keys()
                .map(move |m| (p.clone(), m.to_uppercase()))
        })
        .collect();
    let routes = routes_in_source();
    assert!(
        routes.len() >= 13,
        "found only {} routes in the source",
        routes.len()
    );
    let missing: Vec<_> = routes.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from openapi.json: {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&routes).collect();
    assert!(
        stale.is_empty(),
        "openapi.json documents routes that do not exist: {stale:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_response_carries_a_request_id() {
    let s = Server::start(&[]);
    let id_of = |r: &reqwest::Response| {
        r.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    // A well-formed id from the client comes back as is, on success and on errors.
    for (path, auth) in [
        ("/v1/sandboxes", true),
        ("/v1/sandboxes", false),
        ("/v1/nope", true),
    ] {
        let rb = if auth {
            s.req(Method::GET, path)
        } else {
            s.http.get(format!("{}{path}", s.url))
        };
        let r = rb
            .header("x-request-id", "abc123")
            .send()
            .await
            .expect("request");
        assert_eq!(id_of(&r).as_deref(), Some("abc123"), "{path} (auth {auth})");
    }
    // Without one, or with a malformed one, the server makes one: 32 hex digits, new each time.
    let mut seen = BTreeSet::new();
    for sent in [None, Some("has space"), Some("x".repeat(129).as_str())] {
        let mut rb = s.http.get(format!("{}/v1/health", s.url));
        if let Some(v) = sent {
            rb = rb.header("x-request-id", v);
        }
        let r = rb.send().await.expect("request");
        let id = id_of(&r).expect("a generated x-request-id");
        assert_eq!(id.len(), 32, "{id:?}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id:?}");
        assert!(seen.insert(id), "generated ids repeat");
    }
}

/// Every `.route("PATH", get(..).post(..))` in the server's source, as (path, METHOD).
fn routes_in_source() -> BTreeSet<(String, String)> {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../paddock-server/src");
    // Every source file of the server (modules split into directories included) except
    // `e2b/`, whose routes are E2B's wire, documented in docs/e2b.md rather than here.
    let mut files = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(src)];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("server src dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "e2b") {
                    continue;
                }
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let mut out = BTreeSet::new();
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap_or_default();
        let mut rest = src.as_str();
        while let Some(i) = rest.find(".route(") {
            // rustfmt may put the path on the next line.
            rest = rest[i + 7..].trim_start();
            let Some(r) = rest.strip_prefix('"') else {
                continue;
            };
            rest = r;
            let end = rest.find('"').expect("route path end");
            let path = rest[..end].to_owned();
            // The method list runs to the closing parenthesis of `.route(`.
            let mut depth = 1;
            let mut j = end;
            for (k, c) in rest[end..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            j = end + k;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let methods = &rest[end..j];
            for m in ["get", "post", "put", "delete", "patch"] {
                // `post(handler)`, or `post_service(svc)` for a tower service (`/mcp`).
                if methods.contains(&format!("{m}(")) || methods.contains(&format!("{m}_service("))
                {
                    out.insert((path.clone(), m.to_uppercase()));
                }
            }
        }
    }
    out
}

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

/// Asserts an error response: status, code, and no internals in the message.
fn assert_error(st: StatusCode, v: &Value, want: StatusCode, code: &str) {
    assert_eq!(st, want, "{v}");
    assert_eq!(v["code"], code, "{v}");
    let msg = v["message"].as_str().expect("message");
    for leak in ["/var/", "/work/", "/sys/", "panicked", "rusqlite", "src/"] {
        assert!(!msg.contains(leak), "error message leaks {leak:?}: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let s = Server::start(&[]);
    let post = |body: &'static [u8], ct: &'static str| {
        s.req(Method::POST, "/v1/sandboxes")
            .header("content-type", ct)
            .body(body)
    };
    let cases: Vec<(&[u8], &str, StatusCode, &str)> = vec![
        (
            b"{\"template\": ",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            b"{\"templat\": \"base\"}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            b"{\"timeout\": 1, \"timeout\": 2}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            b"{\"timeout\": \"soon\"}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            b"{\"metadata\": {\"k\": \"\xff\xfe\"}}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            b"{}",
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            b"{\"template\": \"nope\"}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            b"{\"timeout\": 0}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            b"{\"timeout\": 99999999}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            b"{\"memory\": \"lots\"}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            b"{\"memory\": \"1K\"}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            b"{\"cpus\": -1}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            b"{\"user\": \"nobody-here\"}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            b"{\"env\": {\"A=B\": \"x\"}}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            b"{\"webhook_url\": \"http://127.0.0.1:9/\"}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (body, ct, want, code) in cases {
        let (st, v) = call(post(body, ct)).await;
        assert_error(st, &v, want, code);
    }
    // 100 k nested arrays: serde_json's depth limit (128) gives 400, not a crash.
    let deep = format!(
        "{{\"metadata\": {}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (st, v) = call(
        s.req(Method::POST, "/v1/sandboxes")
            .header("content-type", "application/json")
            .body(deep),
    )
    .await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "invalid_json");
    let deep = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
    let (st, v) = call(
        s.req(Method::POST, "/v1/sandboxes")
            .header("content-type", "application/json")
            .body(deep),
    )
    .await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "invalid_json");
    // 10 MB body: 413.
    let big = format!("{{\"metadata\": {{\"k\": \"{}\"}}}}", "x".repeat(10 << 20));
    // The server answers 413 as soon as the limit is passed and may close the connection
    // while the client is still sending; either outcome means the body was refused early.
    match s
        .req(Method::POST, "/v1/sandboxes")
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
    {
        Ok(r) => {
            let st = r.status();
            assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
            // The close may also cut the error body short: check it when it arrived whole.
            if let Ok(body) = r.bytes().await {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                assert_error(st, &v, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
            }
        }
        Err(e) => assert!(!e.is_timeout(), "10 MB body: {e}"),
    }
    // Content-Length 10^12 is refused from the header alone, before any body arrives.
    let resp = raw_request(
        &s.url,
        &format!(
            "POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n",
            s.admin_key
        ),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");

    // Unknown and malformed ids, unknown routes and methods.
    for path in [
        "/v1/sandboxes/aaaaaaaaaaaaaaaaaaaa",
        "/v1/sandboxes/..%2F..%2Fetc",
    ] {
        let (st, v) = call(s.req(Method::GET, path)).await;
        assert_error(st, &v, StatusCode::NOT_FOUND, "not_found");
    }
    // A NUL names nothing: refused as bad input (every input path: tests/hardening.rs).
    let (st, v) = call(s.req(Method::GET, "/v1/sandboxes/x%00y")).await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "invalid_request");
    let (st, v) = call(s.req(Method::GET, "/v1/nope")).await;
    assert_error(st, &v, StatusCode::NOT_FOUND, "not_found");
    let (st, v) = call(s.req(Method::PATCH, "/v1/sandboxes")).await;
    assert_error(st, &v, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let (st, v) = call(s.req(Method::GET, "/v1/sandboxes?bogus=1")).await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "invalid_request");

    // Nothing was created by any of it.
    let (_, list) = call(s.req(Method::GET, "/v1/sandboxes?state=all")).await;
    let failed: Vec<_> = list["sandboxes"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|x| x["state"] != "stopped")
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
}

/// Sends raw bytes over one TCP connection and returns what comes back within 5 s.
async fn raw_request(url: &str, req: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    c.write_all(req.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .map_or(0, |r| r.unwrap_or(0));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_roles_and_tenants() {
    let s = Server::start(&[]);
    let (a_id, a_key) = s.new_key(json!({"name": "tenant-a"})).await;
    let (_, b_key) = s.new_key(json!({"name": "tenant-b"})).await;

    // F1: no key, malformed keys, a revoked key, an expired key: 401 with one body.
    let (_, expired) = s.new_key(json!({"name": "short", "expires_in": 1})).await;
    let sbx = s.create_as(&a_key, json!({})).await;
    let id = sbx["id"].as_str().expect("id").to_owned();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (revoked_id, revoked) = s.new_key(json!({"name": "gone"})).await;
    // Used just before its revoke, so the server has it cached (`hotpath::KeyCache`): the
    // revoke still refuses it at once.
    let (st, v) = call(s.req_as(&revoked, Method::GET, "/v1/sandboxes")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/keys/{revoked_id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = call(s.req_as(&revoked, Method::GET, "/v1/sandboxes")).await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "a revoked key answered from the cache: {v}"
    );
    let bad_keys = [
        "",
        "pdk_",
        "pdk_short",
        "Bearer",
        &"x".repeat(5000),
        &expired,
        &revoked,
    ];
    let mut bodies = BTreeSet::new();
    for k in bad_keys {
        for path in [
            "/v1/sandboxes",
            "/v1/status",
            "/v1/keys",
            "/metrics",
            &format!("/v1/sandboxes/{id}"),
        ] {
            let (st, v) = call(s.req_as(k, Method::GET, path)).await;
            assert_eq!(st, StatusCode::UNAUTHORIZED, "{path} with key {k:.10}: {v}");
            bodies.insert(v.to_string());
        }
    }
    let (st, _) = call(s.http.get(format!("{}/v1/sandboxes", s.url))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(bodies.len(), 1, "401 bodies differ: {bodies:?}");

    // F2: a user key on admin routes is 403.
    for (m, path) in [
        (Method::GET, "/v1/keys"),
        (Method::POST, "/v1/keys"),
        (Method::GET, "/v1/audit"),
        (Method::GET, "/metrics"),
        (Method::DELETE, &format!("/v1/keys/{a_id}")),
    ] {
        let (st, v) = call(s.req_as(&a_key, m, path).json(&json!({"name": "x"}))).await;
        assert_error(st, &v, StatusCode::FORBIDDEN, "forbidden");
    }
    // F2: tenant B sees tenant A's sandbox exactly like a missing one.
    let random = "abcdefghij0123456789";
    for (m, suffix) in [
        (Method::GET, ""),
        (Method::DELETE, ""),
        (Method::GET, "/stats"),
        (Method::GET, "/logs"),
    ] {
        let (st_b, v_b) =
            call(s.req_as(&b_key, m.clone(), &format!("/v1/sandboxes/{id}{suffix}"))).await;
        let (st_r, v_r) = call(s.req_as(
            &b_key,
            m.clone(),
            &format!("/v1/sandboxes/{random}{suffix}"),
        ))
        .await;
        assert_eq!(st_b, StatusCode::NOT_FOUND, "{m} {suffix}: {v_b}");
        assert_eq!(st_b, st_r);
        assert_eq!(
            v_b["message"].as_str().map(|m| m.replace(&id, "ID")),
            v_r["message"].as_str().map(|m| m.replace(random, "ID"))
        );
    }
    let (st, _) = call(
        s.req_as(&b_key, Method::POST, &format!("/v1/sandboxes/{id}/timeout"))
            .json(&json!({"timeout": 5})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, list) = call(s.req_as(&b_key, Method::GET, "/v1/sandboxes?state=all")).await;
    assert_eq!(list["sandboxes"], json!([]));
    let (_, ev) = call(s.req_as(&b_key, Method::GET, "/v1/events")).await;
    assert_eq!(ev["events"], json!([]));
    // A's sandbox is still there for A (B's delete did nothing); admin sees it too.
    let (st, _) = call(s.req_as(&a_key, Method::GET, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::OK);
    let (_, list) = call(s.req(Method::GET, "/v1/sandboxes")).await;
    assert_eq!(list["sandboxes"].as_array().map(Vec::len), Some(1));

    // Keys list never shows secrets or hashes.
    let (_, keys) = call(s.req(Method::GET, "/v1/keys")).await;
    let text = keys.to_string();
    assert!(!text.contains(&a_key) && !text.contains("hash"), "{text}");
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn per_key_quota_and_rate_limit() {
    let s = Server::start(&["--rate", "20", "--rate-burst", "40"]);
    let (_, k) = s
        .new_key(json!({"name": "small", "max_sandboxes": 1}))
        .await;
    let first = s.create_as(&k, json!({})).await;
    let (st, v) = call(s.req_as(&k, Method::POST, "/v1/sandboxes").json(&json!({}))).await;
    assert_error(st, &v, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    let fid = first["id"].as_str().expect("id");
    let (st, _) = call(s.req_as(&k, Method::DELETE, &format!("/v1/sandboxes/{fid}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let second = s.create_as(&k, json!({})).await;
    assert_eq!(second["state"], "running");

    // F3: enumerating random ids finds nothing and is cut off with 429 and Retry-After.
    let (_, e) = s.new_key(json!({"name": "enumerator"})).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..200 {
        let id = paddock_core::SandboxId::random();
        let r = s
            .req_as(&e, Method::GET, &format!("/v1/sandboxes/{id}"))
            .send()
            .await
            .expect("request");
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = r.headers().get("retry-after").cloned();
        }
        statuses.push(r.status());
    }
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::NOT_FOUND || *s == StatusCode::TOO_MANY_REQUESTS)
    );
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        limited > 100,
        "only {limited} of 200 requests were rate limited"
    );
    assert!(retry_after.is_some(), "429 without Retry-After");
    // Another key is not affected by the enumerator's limit.
    let (st, _) = call(s.req(Method::GET, "/v1/status")).await;
    assert_eq!(st, StatusCode::OK);
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
                paddock_server::webhooks::sign("s3cret", &ts, &b),
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
async fn slow_clients_are_cut_off_and_others_still_served() {
    // F6: a client that sends its head one byte at a time is closed at the header timeout.
    let s = Server::start(&["--header-timeout", "2s"]);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut c = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        c.write_all(b"G").await.expect("write");
        slow.push(c);
    }
    let t0 = Instant::now();
    let (st, _) = call(s.req(Method::GET, "/v1/status")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "a legit request took {:?}",
        t0.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    for mut c in slow {
        let mut b = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut b))
            .await
            .expect("the server closed the slow connection")
            .unwrap_or(0);
        // Closed (0) or an error response, never left hanging.
        let _ = n;
    }
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

/// `GET .../stats?history=true` adds the samples taken every `--metrics-interval`: oldest
/// first, CPU time never going back; without the parameter there is no history, and a bad
/// value is a 400.
#[tokio::test(flavor = "multi_thread")]
async fn stats_history_is_sampled() {
    let s = Server::start(&["--metrics-interval", "1s"]);
    let v = s.create(json!({})).await;
    let id = v["id"].as_str().expect("id").to_owned();
    let url = format!("/v1/sandboxes/{id}/stats");
    let mut got = Value::Null;
    for _ in 0..100 {
        let (st, v) = call(s.req(Method::GET, &format!("{url}?history=true"))).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        got = v;
        if got["history"].as_array().is_some_and(|h| h.len() >= 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let h = got["history"].as_array().expect("history");
    assert!(h.len() >= 3, "{got}");
    let at = |x: &Value| {
        time::OffsetDateTime::parse(
            x["at"].as_str().expect("at"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("an RFC 3339 time")
    };
    for w in h.windows(2) {
        assert!(at(&w[0]) < at(&w[1]), "{got}");
        assert!(
            w[0]["cpu_usage_ns"].as_u64() <= w[1]["cpu_usage_ns"].as_u64(),
            "{got}"
        );
        assert!(
            w[1]["memory_bytes"].as_u64().is_some_and(|m| m > 0),
            "{got}"
        );
    }
    let (_, plain) = call(s.req(Method::GET, &url)).await;
    assert!(plain.get("history").is_none(), "{plain}");
    for bad in ["history=maybe", "histroy=true"] {
        let (st, v) = call(s.req(Method::GET, &format!("{url}?{bad}"))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
}

/// `GET /v1/status` reports the host's load and what the sandboxes use: a sandbox spinning
/// a CPU shows up in `sandbox_cpu_cores` and `sandbox_memory_bytes` after two samples.
#[tokio::test(flavor = "multi_thread")]
async fn status_reports_host_and_sandbox_load() {
    let s = Server::start(&["--metrics-interval", "1s"]);
    let (st, v) = call(s.req(Method::GET, "/v1/status")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let load = &v["load"];
    assert!(load["cpus"].as_u64().unwrap_or(0) >= 1, "{v}");
    assert_eq!(load["load_avg"].as_array().map(Vec::len), Some(3), "{v}");
    let total = load["memory_total_bytes"].as_u64().expect("memory total");
    let avail = load["memory_available_bytes"]
        .as_u64()
        .expect("memory available");
    assert!(avail > 0 && avail <= total, "{v}");
    let disk_total = load["disk_total_bytes"].as_u64().expect("disk total");
    assert!(disk_total > 0 && load["disk_free_bytes"].as_u64() <= Some(disk_total));
    assert_eq!(load["sandbox_memory_bytes"], 0, "no sandbox yet: {v}");

    let id = s.create(json!({})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (st, r) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"command": "while :; do :; done", "background": true})),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{r}");
    let load = eventually(
        Duration::from_secs(20),
        "the busy sandbox shows",
        || async {
            let (_, v) = call(s.req(Method::GET, "/v1/status")).await;
            if v["load"]["sandbox_cpu_cores"].as_f64().unwrap_or(0.0) > 0.3 {
                Ok(v["load"].clone())
            } else {
                Err(v)
            }
        },
    )
    .await;
    assert!(
        load["sandbox_memory_bytes"].as_u64().unwrap_or(0) > 0,
        "{load}"
    );
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

/// The domain told to E2B clients carries the port clients reach the server on (so
/// `get_host` names are usable URLs); behind a proxy (`--public-url https://...`) it is the
/// bare `--domain`, and REST port URLs follow the same rule.
#[tokio::test(flavor = "multi_thread")]
async fn e2b_domain_follows_the_public_url() {
    let s = Server::start(&["--domain", "sbx.test"]);
    let port = s.url.rsplit(':').next().expect("port").to_owned();
    let v = e2b_create(&s).await;
    assert_eq!(v["domain"], format!("sbx.test:{port}"), "{v}");
    let id = v["sandboxID"].as_str().expect("id");
    let (_, ports) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/ports/8000"))).await;
    assert_eq!(ports["url"], format!("http://8000-{id}.sbx.test:{port}/"));

    let s = Server::start(&[
        "--domain",
        "sbx.test",
        "--public-url",
        "https://sandboxes.example.com",
    ]);
    let v = e2b_create(&s).await;
    assert_eq!(v["domain"], "sbx.test", "{v}");
    let id = v["sandboxID"].as_str().expect("id");
    let (_, ports) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/ports/8000"))).await;
    assert_eq!(ports["url"], format!("https://8000-{id}.sbx.test/"));
    let r = s
        .http
        .get(format!("{}/v2/sandboxes", s.url))
        .header("X-API-KEY", &s.admin_key)
        .send()
        .await
        .expect("e2b list");
    let listed: Value = r.json().await.expect("json");
    assert_eq!(listed[0]["domain"], "sbx.test", "{listed}");
}

/// Creates a sandbox through the E2B control plane with the admin key; its `Sandbox` JSON.
async fn e2b_create(s: &Server) -> Value {
    let r = s
        .http
        .post(format!("{}/v2/sandboxes", s.url))
        .header("X-API-KEY", &s.admin_key)
        .json(&json!({"templateID": "base", "timeout": 60}))
        .send()
        .await
        .expect("e2b create");
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.expect("json")
}

/// `/metrics` labels the E2B data plane and the proxy by method instead of `unmatched`, and
/// has latency histograms per route, the create latency, sandboxes by state and the body
/// bytes moved per surface.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_have_histograms_surfaces_and_bytes() {
    let s = Server::start(&[]);
    let v = e2b_create(&s).await;
    let id = v["sandboxID"].as_str().expect("id").to_owned();
    let token = v["envdAccessToken"].as_str().expect("token").to_owned();

    // 200 KB in through REST, out through the data plane; one proxied request.
    let data = vec![b'x'; 200_000];
    let r = s
        .req(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/files?path=/home/user/big"),
        )
        .body(data.clone())
        .send()
        .await
        .expect("upload");
    assert!(r.status().is_success(), "{}", r.status());
    let r = s
        .http
        .get(format!("{}/files?path=/home/user/big&username=user", s.url))
        .header("E2b-Sandbox-Id", &id)
        .header("X-Access-Token", &token)
        .send()
        .await
        .expect("download");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("body").len(), data.len());
    let _ = s
        .req(Method::GET, &format!("/proxy/{id}/8000/"))
        .send()
        .await
        .expect("proxy");

    let text = s
        .req(Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
    };
    assert_eq!(value("paddock_sandbox_create_seconds_count "), 1.0);
    assert_eq!(value("paddock_sandboxes{state=\"running\"} "), 1.0);
    for route in ["/v2/sandboxes", "envd /files", "proxy"] {
        let n = value(&format!(
            "paddock_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} "
        ));
        assert!(n >= 1.0, "{route}: {n}");
        value(&format!(
            "paddock_http_request_duration_seconds_sum{{route=\"{route}\"}} "
        ));
    }
    assert!(!text.contains("route=\"unmatched\""), "{text}");
    assert!(value("paddock_http_request_bytes_total{surface=\"rest\"} ") >= 200_000.0);
    assert!(value("paddock_http_response_bytes_total{surface=\"envd\"} ") >= 200_000.0);
    assert!(value("paddock_http_request_bytes_total{surface=\"envd\"} ") < 200_000.0);
}
