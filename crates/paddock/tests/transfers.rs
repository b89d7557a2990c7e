//! Bulk file transfers (issue 17): `/v1/sandboxes/{id}/files` and the E2B data plane's
//! `/files` take the raw path (the agent hands over its socket; downloads are spliced into
//! plain HTTP/1.1 client connections), against the real `paddock serve`. Integrity on
//! 64 MiB with a checksum, ranged-size edge cases, and the error paths: disk full, a client
//! that breaks off, a sandbox that dies mid-transfer; none leaves a file or a descriptor
//! behind.

mod server;

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::*;
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

async fn sandbox(s: &Server, disk: &str) -> String {
    let v = s.create(json!({"disk": disk, "timeout": 600})).await;
    v["id"].as_str().expect("id").to_owned()
}

async fn put(s: &Server, id: &str, path: &str, data: Vec<u8>) -> (StatusCode, Value) {
    call(
        s.req(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/files?path={path}"),
        )
        .header("content-type", "application/octet-stream")
        .body(data),
    )
    .await
}

async fn get(s: &Server, id: &str, path: &str) -> (StatusCode, Vec<u8>) {
    let r = s
        .req(
            Method::GET,
            &format!("/v1/sandboxes/{id}/files?path={path}"),
        )
        .send()
        .await
        .expect("get");
    let st = r.status();
    (st, r.bytes().await.expect("body").to_vec())
}

fn server_fds(s: &Server) -> usize {
    let pid = s.pid().expect("server pid");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Polls until the server's descriptor count is back to at most `want`.
async fn fds_settle(s: &Server, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = server_fds(s);
        if n <= want || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn exists(s: &Server, id: &str, path: &str) -> bool {
    let (st, _) = call(s.req(
        Method::GET,
        &format!("/v1/sandboxes/{id}/fs/stat?path={path}"),
    ))
    .await;
    st == StatusCode::OK
}

#[tokio::test(flavor = "multi_thread")]
async fn files_64_mib_round_trip_natively_and_over_e2b_with_sizes_at_the_edges() {
    let s = Server::start(&[]);
    let id = sandbox(&s, "1G").await;
    let data = pattern(64 * MIB + 12_345, 1);
    let want = Sha256::digest(&data);
    let (st, v) = put(&s, &id, "/home/user/big.bin", data.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["size"].as_u64(), Some(data.len() as u64), "{v}");
    let (st, back) = get(&s, &id, "/home/user/big.bin").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(back.len(), data.len());
    assert_eq!(Sha256::digest(&back), want, "native download differs");

    // The E2B data plane: a raw octet-stream upload and a download, both on the raw path.
    let (eid, token) = s
        .e2b_sandbox(json!({"templateID": "base", "timeout": 600}))
        .await;
    let e2b_file = |method| {
        s.e2b_data(
            method,
            "/files?path=/home/user/e.bin&username=user",
            &eid,
            &token,
        )
    };
    let r = e2b_file(Method::POST)
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .expect("e2b upload");
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v[0]["path"], "/home/user/e.bin", "{v}");
    let r = e2b_file(Method::GET).send().await.expect("e2b download");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(data.len().to_string().as_str())
    );
    let back = r.bytes().await.expect("body");
    assert_eq!(Sha256::digest(&back), want, "e2b download differs");
    // gzip is still honoured (the copy path).
    let r = e2b_file(Method::GET)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("e2b gzip download");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    let gz = r.bytes().await.expect("body");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain)
        .expect("gunzip");
    assert_eq!(Sha256::digest(&plain), want);

    // Sizes at the edges: empty, one byte, one byte either side of the pipe chunk, and a
    // keep-alive connection reused across them; 30 transfers leak no descriptor.
    let fds0 = server_fds(&s);
    for len in [0usize, 1, MIB - 1, MIB, MIB + 1].repeat(3) {
        let d = pattern(len, len as u32 + 7);
        let (st, v) = put(&s, &id, "/home/user/edge.bin", d.clone()).await;
        assert_eq!(st, StatusCode::CREATED, "{len}: {v}");
        let (st, back) = get(&s, &id, "/home/user/edge.bin").await;
        assert_eq!(st, StatusCode::OK, "{len}");
        assert!(back == d, "{len} bytes came back different");
    }
    // Errors still arrive as before.
    let (st, _) = get(&s, &id, "/home/user/missing").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = get(&s, &id, "/home/user").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, v) = put(&s, &id, "/home/user", b"x".to_vec()).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let fds = fds_settle(&s, fds0 + 4).await;
    assert!(fds <= fds0 + 4, "server descriptors {fds0} -> {fds}");
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_full_broken_uploads_and_a_sandbox_dying_mid_download_leave_nothing() {
    let s = Server::start(&[]);
    let id = sandbox(&s, "32M").await;
    let fds0 = server_fds(&s);

    // Disk full: 507, and the partly written new file is gone.
    let (st, v) = put(&s, &id, "/home/user/full.bin", pattern(64 * MIB, 3)).await;
    assert_eq!(st, StatusCode::INSUFFICIENT_STORAGE, "{v}");
    assert!(!exists(&s, &id, "/home/user/full.bin").await);

    // A client that announces 16 MiB, sends 1 MiB and goes away: the new file is removed.
    let (tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let url = format!("{}/v1/sandboxes/{id}/files?path=/home/user/cut.bin", s.url);
    let key = s.admin_key.clone();
    let send = tokio::spawn(async move {
        reqwest::Client::new()
            .put(url)
            .bearer_auth(key)
            .header("content-length", (16 * MIB).to_string())
            .body(reqwest::Body::wrap_stream(rx))
            .send()
            .await
    });
    let mut tx = tx;
    futures::SinkExt::send(&mut tx, Ok(vec![1u8; MIB]))
        .await
        .expect("chunk");
    // Wait until the sandbox has the file, then break the body off.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !exists(&s, &id, "/home/user/cut.bin").await {
        assert!(Instant::now() < deadline, "the upload never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    futures::SinkExt::send(&mut tx, Err(std::io::Error::other("client gives up")))
        .await
        .expect("error");
    drop(tx);
    let _ = send.await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while exists(&s, &id, "/home/user/cut.bin").await {
        assert!(
            Instant::now() < deadline,
            "a broken upload's file was left behind"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A sandbox deleted while its 24 MiB file is being downloaded by a slow reader: the
    // body ends early with an error, the server keeps serving.
    let (st, v) = put(&s, &id, "/home/user/d.bin", pattern(24 * MIB, 5)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let r = s
        .req(
            Method::GET,
            &format!("/v1/sandboxes/{id}/files?path=/home/user/d.bin"),
        )
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.bytes_stream();
    let first = body.next().await.expect("a first chunk").expect("chunk");
    let mut got = first.len();
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert!(st.is_success(), "{st}");
    let mut broke = false;
    while let Some(c) = body.next().await {
        match c {
            Ok(c) => got += c.len(),
            Err(_) => {
                broke = true;
                break;
            }
        }
    }
    assert!(
        broke || got == 24 * MIB,
        "a cut download must fail, not end short ({got} bytes)"
    );
    let (st, _) = call(s.req(Method::GET, "/v1/sandboxes")).await;
    assert_eq!(st, StatusCode::OK);
    let fds = fds_settle(&s, fds0 + 4).await;
    assert!(fds <= fds0 + 4, "server descriptors {fds0} -> {fds}");
}
