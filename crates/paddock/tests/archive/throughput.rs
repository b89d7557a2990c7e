//! The ignored 1 GiB throughput measurement: the agent's memory stays flat while it streams.

use super::*;

/// A body that streams a tar of one `size`-byte file, generated on the fly.
fn streamed_tar(size: u64) -> impl http_body::Body<Data = Bytes, Error = std::io::Error> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(8);
    std::thread::spawn(move || {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_path("big.bin").unwrap();
        h.set_cksum();
        let _ = tx.blocking_send(Ok(http_body::Frame::data(Bytes::copy_from_slice(
            h.as_bytes(),
        ))));
        let chunk = Bytes::from(noise(1 << 20, 11));
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if tx
                .blocking_send(Ok(http_body::Frame::data(chunk.slice(..n))))
                .is_err()
            {
                return;
            }
            left -= n as u64;
        }
        let _ = tx.blocking_send(Ok(http_body::Frame::data(Bytes::from(vec![0u8; 1024]))));
    });
    http_body_util::StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|f| (f, rx))
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement"]
async fn throughput_1gib() {
    let s = sandbox().await;
    let size: u64 = 1 << 30;
    let t = Instant::now();
    let req = http::Request::post(archive_uri("tp", &[]))
        .header(http::header::CONTENT_TYPE, "application/x-tar")
        .body(streamed_tar(size))
        .unwrap();
    let r = send(&s, req).await;
    let up = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.message());
    let t = Instant::now();
    let req = http::Request::get(archive_uri("tp", &[]))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = s.agent_request(req).await.unwrap();
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            n += d.len() as u64;
        }
    }
    let down = t.elapsed();
    assert!(n > size);
    let mib = |d: Duration| size as f64 / MIB as f64 / d.as_secs_f64();
    println!(
        "1 GiB tar: upload {:.2?} ({:.0} MiB/s), download {:.2?} ({:.0} MiB/s), agent peak RSS {} MiB",
        up,
        mib(up),
        down,
        mib(down),
        agent_peak_rss(&s) / MIB
    );
    destroy(&s).await;
}
