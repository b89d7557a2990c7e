//! Bad input gets a clear error and changes nothing (rows F of the security battery); slow
//! clients are cut off while others are still served.

use super::*;

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
