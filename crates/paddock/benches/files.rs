//! 1 GiB file transfers through the API server (issue 17): upload and download on the native
//! API (`PUT`/`GET /v1/sandboxes/{id}/files`) and on the E2B data plane (`POST`/`GET /files`,
//! raw octet-stream), with the server's RSS growth, against `dd` writing 1 GiB into the
//! sandbox's own subvolume and reading the uploaded file back from the page cache in the same
//! run (the yardsticks: the host's own file speed, whatever the load).
//!
//! Run: `cargo bench -p paddock --bench files` (release, as root) or
//! `cargo test -p paddock --bench files` (dev). `PADDOCK_BENCH_GIB` sets the size in GiB
//! (default 1). Prints a markdown table for `BENCHMARKS.md`.

#[path = "../tests/server/mod.rs"]
mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use server::Server;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command's ')'.
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    ticks as f64 / 100.0
}

const CHUNK: usize = 1 << 20;

fn body(bytes: u64) -> reqwest::Body {
    let chunk = bytes::Bytes::from(vec![0x5au8; CHUNK]);
    reqwest::Body::wrap_stream(futures::stream::iter(
        (0..bytes / CHUNK as u64).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    ))
}

async fn drain(mut r: reqwest::Response) -> anyhow::Result<u64> {
    anyhow::ensure!(r.status().is_success(), "download: {}", r.status());
    let mut n = 0u64;
    while let Some(c) = r.chunk().await? {
        n += c.len() as u64;
    }
    Ok(n)
}

/// Flushes the file system holding `dir` (untimed, between rows), so the writeback of one
/// row's upload does not steal the cores from the next row.
fn sync_fs(dir: &std::path::Path) {
    let _ = std::process::Command::new("sync")
        .arg("-f")
        .arg(dir)
        .status();
}

/// The yardsticks, in the sandbox's own subvolume (btrfs in a loop-mounted image), in seconds:
/// `dd` writing `bytes` from /dev/zero with 1 MiB blocks and no fsync (what an upload does:
/// the API does not fsync), the same with `conv=fsync`, and `dd` reading `read` (a file
/// in the page cache, as a download does) into /dev/null.
fn dd(
    dir: &std::path::Path,
    read: &std::path::Path,
    bytes: u64,
) -> anyhow::Result<(Duration, Duration, Duration)> {
    let f = dir.join("dd-yardstick.bin");
    let count = (bytes / CHUNK as u64).to_string();
    let run = |args: &[&str]| -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let st = std::process::Command::new("dd")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(st.success(), "dd failed");
        Ok(t0.elapsed())
    };
    let of = format!("of={}", f.display());
    let iff = format!("if={}", read.display());
    let c = format!("count={count}");
    sync_fs(dir);
    let w = run(&["if=/dev/zero", &of, "bs=1M", &c])?;
    sync_fs(dir);
    let _ = std::fs::remove_file(&f);
    sync_fs(dir);
    let wf = run(&["if=/dev/zero", &of, "bs=1M", &c, "conv=fsync"])?;
    let _ = std::fs::remove_file(&f);
    sync_fs(dir);
    let r = run(&[&iff, "of=/dev/null", "bs=1M"])?;
    Ok((w, wf, r))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let gib: u64 = std::env::var("PADDOCK_BENCH_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let bytes = gib << 30;
    let s = Server::start(&[]);
    let pid = s.pid().expect("server pid");
    let v = s
        .create(json!({"timeout": 3600, "disk": format!("{}G", 3 * gib + 2)}))
        .await;
    let id = v["id"].as_str().expect("id").to_owned();
    let (eid, token) = s
        .e2b_sandbox(json!({"templateID": "base", "timeout": 3600}))
        .await;
    let e2b_file = |method| {
        s.e2b_data(
            method,
            "/files?path=/home/user/e.bin&username=user",
            &eid,
            &token,
        )
    };
    // The sandbox's writable layer on the host: its btrfs subvolume.
    let upper = s.data.join(format!("layers/sandboxes/{id}/upper"));
    let home = upper.join("home/user");

    let rss0 = rss_kib(pid);
    let peak = Arc::new(AtomicU64::new(rss0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut rows: Vec<(String, Duration, f64)> = Vec::new();
    let mut cpu0 = cpu_secs(pid);
    let lap = |cpu0: &mut f64| {
        let now = cpu_secs(pid);
        let d = now - *cpu0;
        *cpu0 = now;
        d
    };

    let t0 = Instant::now();
    let r = s
        .req(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/files?path=/home/user/big.bin"),
        )
        .header("content-type", "application/octet-stream")
        .header("content-length", bytes.to_string())
        .body(body(bytes))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "upload: {}", r.status());
    rows.push((
        "native upload (PUT /files)".into(),
        t0.elapsed(),
        lap(&mut cpu0),
    ));
    sync_fs(&upper);
    lap(&mut cpu0);
    let t0 = Instant::now();
    let r = s
        .req(
            Method::GET,
            &format!("/v1/sandboxes/{id}/files?path=/home/user/big.bin"),
        )
        .send()
        .await?;
    anyhow::ensure!(drain(r).await? == bytes, "short download");
    rows.push((
        "native download (GET /files)".into(),
        t0.elapsed(),
        lap(&mut cpu0),
    ));

    let t0 = Instant::now();
    let r = e2b_file(Method::POST)
        .header("content-type", "application/octet-stream")
        .header("content-length", bytes.to_string())
        .body(body(bytes))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "e2b upload: {}", r.status());
    rows.push((
        "E2B upload (POST /files, octet-stream)".into(),
        t0.elapsed(),
        lap(&mut cpu0),
    ));
    sync_fs(&upper);
    lap(&mut cpu0);
    let t0 = Instant::now();
    let r = e2b_file(Method::GET).send().await?;
    anyhow::ensure!(drain(r).await? == bytes, "short e2b download");
    rows.push((
        "E2B download (GET /files)".into(),
        t0.elapsed(),
        lap(&mut cpu0),
    ));
    sampler.abort();
    let growth = peak.load(Ordering::Relaxed).saturating_sub(rss0);

    let (dd_w, dd_wf, dd_r) = dd(&home, &home.join("big.bin"), bytes)?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?");
    let rate = |d: Duration| bytes as f64 / (1u64 << 30) as f64 / d.as_secs_f64();
    println!(
        "{gib} GiB transfers ({}, load {load})",
        if cfg!(debug_assertions) {
            "dev build"
        } else {
            "release build"
        }
    );
    println!();
    println!(
        "Uploads are timed to the answer (the API does not fsync; `docs/transfers.md`); the file \
         system is synced, untimed, after each upload. Yardsticks: `dd` in the sandbox's own \
         subvolume (`{}`).",
        upper.display()
    );
    println!();
    println!("| transfer | GiB/s | vs dd write | vs dd read | server CPU s/GiB | target |");
    println!("|---|---|---|---|---|---|");
    for (name, d, cpu) in &rows {
        println!(
            "| {name} | {:.2} | {:.2}× | {:.2}× | {:.2} | ≥ 1 GiB/s |",
            rate(*d),
            rate(*d) / rate(dd_w),
            rate(*d) / rate(dd_r),
            cpu / gib as f64
        );
    }
    println!(
        "| `dd` write (bs=1M, no fsync) into the sandbox's subvolume | {:.2} | 1.00× | | | |",
        rate(dd_w)
    );
    println!(
        "| `dd` write (bs=1M, `conv=fsync`) into the sandbox's subvolume | {:.2} | {:.2}× | | | |",
        rate(dd_wf),
        rate(dd_wf) / rate(dd_w)
    );
    println!(
        "| `dd` read (page cache) | {:.2} | | 1.00× | | |",
        rate(dd_r)
    );
    println!(
        "| server RSS growth during the transfers | {:.1} MiB | | | | < 64 MiB |",
        growth as f64 / 1024.0
    );
    Ok(())
}
