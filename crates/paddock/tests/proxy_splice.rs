//! The port proxy's spliced bodies against apps that send slowly (`splice`'s low-water mark
//! and trickle delay, `docs/transfers.md`): bytes under the low-water mark still reach the
//! client promptly. Loopback only; run under `flock /tmp/paddock-fake-net.lock` like
//! `tests/proxy.rs`.

mod server;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use server::*;

/// An app on 127.0.0.1:8766 answering every request with a 2,000-byte `Content-Length`
/// body in two halves: the head, then (after 0.3 s, so the proxy has parked the socket and
/// splices) the first 1,000 bytes, then the rest only after 8 s. It keeps the connection
/// open, so nothing but those bytes can wake the proxy.
const SLOW_PY: &str = r#"
import socket, threading, time
def handle(s):
    try:
        s.recv(65536)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n")
        time.sleep(0.3)
        s.sendall(b"a" * 1000)
        time.sleep(8)
        s.sendall(b"b" * 1000)
        time.sleep(30)
    except Exception:
        pass
    finally:
        s.close()
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 8766))
srv.listen(8)
while True:
    s, _ = srv.accept()
    threading.Thread(target=handle, args=(s,), daemon=True).start()
"#;

/// A spliced body whose first bytes stay under the proxy's low-water mark reaches the client
/// after the trickle delay, not when the app sends more: without the delay the first
/// 1,000 bytes would wait the app's 8 s pause (the socket reports readable only at the
/// low-water mark, here the whole rest of the body).
#[tokio::test(flavor = "multi_thread")]
async fn bytes_under_the_low_water_mark_are_not_held_back() {
    let s = Server::start(&[]);
    let id = s.create(json!({"timeout": 600})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (st, v) = call(
        s.req(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/files?path=/home/user/slow.py"),
        )
        .body(SLOW_PY),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"command": "python3 /home/user/slow.py", "background": true})),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let token = eventually(Duration::from_secs(20), "the app listens", || async {
        let (st, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/ports"))).await;
        let listening = v["ports"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["port"] == 8766 && p["listening"] == true)
        });
        match (st, listening, v["access_token"].as_str()) {
            (StatusCode::OK, true, Some(t)) => Ok(t.to_owned()),
            _ => Err(format!("{st} {v}")),
        }
    })
    .await;

    let t0 = Instant::now();
    let mut r = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
        .get(format!("{}/proxy/{id}/8766/", s.url))
        .header("x-access-token", &token)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.content_length(), Some(2000));
    let mut got = Vec::new();
    while got.len() < 1000 {
        let chunk = r.chunk().await.expect("chunk").expect("more body");
        got.extend_from_slice(&chunk);
    }
    let first = t0.elapsed();
    assert!(
        first < Duration::from_secs(4),
        "the first 1,000 bytes took {first:?}: held back under the low-water mark"
    );
    assert!(got[..1000].iter().all(|&b| b == b'a'));
    while let Some(chunk) = r.chunk().await.expect("chunk") {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got.len(), 2000);
    assert!(got[1000..].iter().all(|&b| b == b'b'));
}
