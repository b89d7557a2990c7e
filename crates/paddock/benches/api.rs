//! Paddock over its REST API, on this machine: create to first command done, exec round
//! trip, 1 GiB upload and download with the server's memory growth. bubblewrap runs
//! `/bin/true` in the same run, so the table carries a ratio that does not depend on how
//! busy the machine is. (Idle sandboxes and sustained creates per second: `density.rs`.)
//!
//! Run: `cargo bench -p paddock --bench api` (as root). `PADDOCK_BENCH_RUNS` sets the runs
//! per latency row (default 200); `PADDOCK_BENCH_QUICK=1` stops after the latency rows
//! (create by surface and network, exec round trips); `PADDOCK_BENCH_ROWS=exec` times only
//! the exec round trips (and bubblewrap, for the ratio). The exec rows also carry a ratio to
//! what `/bin/true` costs with no sandbox and no HTTP at all: the host's `sh` starting and
//! waiting for it in a loop (fork, exec, the loader, exit, wait). Prints a markdown table for
//! `BENCHMARKS.md`.

#[allow(unreachable_pub, dead_code)]
#[path = "../src/bench_external.rs"]
mod bench_external;
#[allow(unreachable_pub, dead_code)]
mod common;
#[path = "../tests/server/mod.rs"]
mod server;

use common::{cpu_ns, sandbox_cpu_ns};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use server::{Server, call};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn create(s: &Server) -> String {
    let v = s.create(json!({"timeout": 3600})).await;
    v["id"].as_str().expect("id").to_owned()
}

async fn exec_true(s: &Server, id: &str) {
    exec_true_with(&s.http, &s.url, &s.admin_key, id).await;
}

/// `POST /v1/sandboxes/{id}/exec` of `/bin/true` through `http`, JSON answer.
async fn exec_true_with(http: &reqwest::Client, url: &str, key: &str, id: &str) {
    let (st, v) = call(
        http.post(format!("{url}/v1/sandboxes/{id}/exec"))
            .bearer_auth(key)
            .json(&json!({"cmd": ["/bin/true"]})),
    )
    .await;
    assert_eq!(
        (st, v["exit_code"].as_i64()),
        (StatusCode::OK, Some(0)),
        "{v}"
    );
}

/// What starting `/bin/true` and waiting for it costs on this host with no sandbox and no
/// HTTP: `sh` runs it in a loop of 100, and the median of `batches` loops, per run, is the
/// answer. No round trip into a sandbox can cost less than the command itself.
fn shell_true(batches: usize) -> Duration {
    let mut per_run: Vec<Duration> = (0..batches.max(1))
        .map(|_| {
            let t0 = Instant::now();
            let st = std::process::Command::new("sh")
                .args([
                    "-c",
                    "i=0; while [ $i -lt 100 ]; do /bin/true; i=$((i+1)); done",
                ])
                .status()
                .expect("sh");
            assert!(st.success(), "sh loop: {st}");
            t0.elapsed() / 100
        })
        .collect();
    pct(&mut per_run, 0.5)
}

/// Runs `f` with an HTTP client of its own on a runtime of one thread, and returns what it
/// returns. The exec round trips are timed this way: on the bench's multi-thread runtime a
/// request hops between the task that awaits it and the client's connection task on another
/// worker (a futex wake and a wake-up of the other core each way), which is the client's
/// cost, not the server's; a client of one thread (curl, an SDK's blocking client) has none.
fn one_thread<T, Fut>(f: impl FnOnce(reqwest::Client) -> Fut + Send) -> T
where
    T: Send,
    Fut: std::future::Future<Output = T>,
{
    tokio::task::block_in_place(|| {
        std::thread::scope(|sc| {
            sc.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("bench client runtime");
                rt.block_on(f(reqwest::Client::new()))
            })
            .join()
            .expect("bench client thread")
        })
    })
}

/// E2B create (`POST /sandboxes`), internet on or off: the id and the envd access token.
async fn e2b_create(s: &Server, internet: bool) -> (String, String) {
    let r = s
        .http
        .post(format!("{}/sandboxes", s.url))
        .header("X-API-KEY", &s.admin_key)
        .json(&json!({"templateID": "base", "timeout": 3600, "allow_internet_access": internet, "secure": true}))
        .send()
        .await
        .expect("e2b create");
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: serde_json::Value = r.json().await.expect("json");
    (
        v["sandboxID"].as_str().expect("id").to_owned(),
        v["envdAccessToken"].as_str().unwrap_or_default().to_owned(),
    )
}

/// `process.Start` of `/bin/true` over the E2B data plane (Connect, JSON envelopes), read
/// to the end of the stream, as the SDKs do.
async fn e2b_exec_true(s: &Server, id: &str, token: &str) {
    e2b_exec_true_with(&s.http, &s.url, id, token).await;
}

/// [`e2b_exec_true`] through `http`.
async fn e2b_exec_true_with(http: &reqwest::Client, url: &str, id: &str, token: &str) {
    let msg = br#"{"process":{"cmd":"/bin/true","args":[]}}"#;
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(msg);
    let r = http
        .post(format!("{url}/process.Process/Start"))
        .header("E2b-Sandbox-Id", id)
        .header("X-Access-Token", token)
        .header("Content-Type", "application/connect+json")
        .header("Connect-Protocol-Version", "1")
        .body(body)
        .send()
        .await
        .expect("process.Start");
    assert_eq!(r.status(), StatusCode::OK);
    let b = r.bytes().await.expect("stream");
    assert!(
        String::from_utf8_lossy(&b).contains("\"end\""),
        "{}",
        String::from_utf8_lossy(&b)
    );
}

async fn e2b_kill(s: &Server, id: &str) {
    let r = s
        .http
        .delete(format!("{}/sandboxes/{id}", s.url))
        .header("X-API-KEY", &s.admin_key)
        .send()
        .await
        .expect("e2b kill");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

async fn delete(s: &Server, id: &str) {
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("PADDOCK_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let s = Server::start(&[
        "--rate",
        "1000000",
        "--rate-burst",
        "1000000",
        "--max-sandboxes-per-key",
        "5000",
    ]);
    let server_pid = s.pid().expect("server pid");
    let mut rows: Vec<(String, String, String, String)> = Vec::new();

    // Warm up (first create initialises caches, the first exec the agent pool).
    let id = create(&s).await;
    exec_true(&s, &id).await;
    delete(&s, &id).await;

    // `PADDOCK_BENCH_ROWS=exec`: only the exec round trips (and bwrap, for the ratio).
    let exec_only = std::env::var("PADDOCK_BENCH_ROWS").is_ok_and(|v| v == "exec");
    let create_runs = if exec_only { 0 } else { runs };

    // 1. Create to first command done.
    let mut t = Vec::new();
    for _ in 0..create_runs {
        let t0 = Instant::now();
        let id = create(&s).await;
        exec_true(&s, &id).await;
        t.push(t0.elapsed());
        delete(&s, &id).await;
    }
    let create_p50 = pct(&mut t, 0.5);
    rows.push((
        "API create + first `/bin/true` done".into(),
        ms(create_p50),
        ms(pct(&mut t, 0.99)),
        "≤ 10 ms p50".into(),
    ));

    // The same through the native API with a network, and through the E2B API (create,
    // `process.Start` over the data plane, kill), offline and with internet on (E2B's
    // default). Cold creates: there is no pool.
    let mut by_path = vec![("API create + first `/bin/true` done".to_owned(), create_p50)];
    let mut t = Vec::new();
    for _ in 0..create_runs {
        let t0 = Instant::now();
        let v = s
            .create(json!({"timeout": 3600, "network": {"mode": "all"}}))
            .await;
        let id = v["id"].as_str().expect("id").to_owned();
        exec_true(&s, &id).await;
        t.push(t0.elapsed());
        delete(&s, &id).await;
    }
    let p50 = pct(&mut t, 0.5);
    by_path.push(("API create, network `all`, + first `/bin/true`".into(), p50));
    rows.push((
        format!(
            "API create, network `all`, + first `/bin/true` ({:.2}× offline)",
            p50.as_secs_f64() / create_p50.as_secs_f64()
        ),
        ms(p50),
        ms(pct(&mut t, 0.99)),
        "≤ 1.5× offline".into(),
    ));
    for internet in [false, true] {
        let mut t = Vec::new();
        for _ in 0..create_runs {
            let t0 = Instant::now();
            let (id, token) = e2b_create(&s, internet).await;
            e2b_exec_true(&s, &id, &token).await;
            t.push(t0.elapsed());
            e2b_kill(&s, &id).await;
        }
        let name = format!(
            "E2B create + `process.Start` `/bin/true` done, internet {}",
            if internet { "on" } else { "off" }
        );
        let p50 = pct(&mut t, 0.5);
        by_path.push((name.clone(), p50));
        rows.push((name, ms(p50), ms(pct(&mut t, 0.99)), "p99 ≤ 20 ms".into()));
    }

    if exec_only {
        rows.clear();
        by_path.clear();
    }
    // bubblewrap and crun in the same run, for the ratios (the first that runs is the
    // exec rows' yardstick).
    let mut yardstick: Option<Duration> = None;
    for make in [
        bench_external::External::bwrap as fn() -> anyhow::Result<bench_external::External>,
        bench_external::External::crun,
    ] {
        let ext = match make() {
            Ok(e) => e,
            Err(e) => {
                rows.push((
                    format!("(skipped: {e:#})"),
                    String::new(),
                    String::new(),
                    String::new(),
                ));
                continue;
            }
        };
        let mut t = Vec::new();
        // The exec rows need only the yardstick, and not thousands of its runs.
        let ext_runs = if exec_only { runs.min(100) } else { runs };
        for _ in 0..ext_runs {
            let t0 = Instant::now();
            ext.run_once()?;
            t.push(t0.elapsed());
        }
        let p50 = pct(&mut t, 0.5);
        yardstick.get_or_insert(p50);
        let ratios: Vec<String> = by_path
            .iter()
            .map(|(n, d)| format!("{n}: {:.2}×", d.as_secs_f64() / p50.as_secs_f64()))
            .collect();
        rows.push((
            format!(
                "{} `/bin/true`, cold (ratios: {})",
                ext.name(),
                ratios.join("; ")
            ),
            ms(p50),
            ms(pct(&mut t, 0.99)),
            "creates ≤ 1.0× bwrap".into(),
        ));
    }

    // 2. Exec round trip into a running sandbox.
    // Both loops time one client of one thread (`one_thread`), warmed by one call first.
    let id = create(&s).await;
    let (url, key, idr) = (s.url.as_str(), s.admin_key.as_str(), id.as_str());
    let (mut t, native_cpu, sandbox_cpu) = one_thread(|http| async move {
        exec_true_with(&http, url, key, idr).await;
        let (cpu0, sbx0) = (cpu_ns(server_pid), sandbox_cpu_ns(idr));
        let mut t = Vec::new();
        for _ in 0..runs {
            let t0 = Instant::now();
            exec_true_with(&http, url, key, idr).await;
            t.push(t0.elapsed());
        }
        let n = runs.max(1) as u64;
        let cpu = (cpu_ns(server_pid) - cpu0) / n;
        (t, cpu, sandbox_cpu_ns(idr).saturating_sub(sbx0) / n)
    });
    let shell = shell_true(runs.div_ceil(10));
    let to_bwrap = |d: Duration| {
        let sh = format!("{:.2}× sh", d.as_secs_f64() / shell.as_secs_f64());
        yardstick.map_or_else(
            || format!(" ({sh})"),
            |y| format!(" ({:.2}× bwrap, {sh})", d.as_secs_f64() / y.as_secs_f64()),
        )
    };
    rows.push((
        "host `sh` starting and waiting for `/bin/true` (no sandbox, no HTTP), per run".into(),
        format!("{:.2} ms", shell.as_secs_f64() * 1000.0),
        String::new(),
        "the command's own cost".into(),
    ));
    let p50 = pct(&mut t, 0.5);
    rows.push((
        format!("API exec round trip (`/bin/true`, JSON){}", to_bwrap(p50)),
        ms(p50),
        ms(pct(&mut t, 0.99)),
        "≤ 1 ms p50".into(),
    ));
    let (eid, token) = e2b_create(&s, false).await;
    let (eidr, tokenr) = (eid.as_str(), token.as_str());
    let (mut t, e2b_cpu) = one_thread(|http| async move {
        e2b_exec_true_with(&http, url, eidr, tokenr).await;
        let cpu0 = cpu_ns(server_pid);
        let mut t = Vec::new();
        for _ in 0..runs {
            let t0 = Instant::now();
            e2b_exec_true_with(&http, url, eidr, tokenr).await;
            t.push(t0.elapsed());
        }
        (t, (cpu_ns(server_pid) - cpu0) / runs.max(1) as u64)
    });
    rows.push((
        "server CPU per exec round trip, native / E2B (all its threads)".into(),
        format!("{:.0} µs", native_cpu as f64 / 1000.0),
        format!("{:.0} µs", e2b_cpu as f64 / 1000.0),
        String::new(),
    ));
    rows.push((
        "sandbox CPU per native exec round trip (its cgroup: the agent and `/bin/true`)".into(),
        format!("{:.0} µs", sandbox_cpu as f64 / 1000.0),
        String::new(),
        String::new(),
    ));
    let p50 = pct(&mut t, 0.5);
    rows.push((
        format!(
            "E2B `process.Start` round trip (`/bin/true`, data plane){}",
            to_bwrap(p50)
        ),
        ms(p50),
        ms(pct(&mut t, 0.99)),
        "≤ 1 ms p50".into(),
    ));
    e2b_kill(&s, &eid).await;
    let quick = std::env::var("PADDOCK_BENCH_QUICK").is_ok_and(|v| v == "1");
    if !quick {
        // 3. 1 GiB upload and download, streaming, with the server's memory growth.
        let big = s.create(json!({"timeout": 3600, "disk": "3G"})).await;
        let bid = big["id"].as_str().expect("id").to_owned();
        let rss0 = rss_kib(server_pid);
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss0));
        let sampler = {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    peak.fetch_max(rss_kib(server_pid), std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        const GIB: u64 = 1 << 30;
        const CHUNK: usize = 1 << 20;
        let chunks = futures::stream::iter(
            (0..GIB as usize / CHUNK).map(|_| Ok::<_, std::io::Error>(vec![0x5au8; CHUNK])),
        );
        let t0 = Instant::now();
        let r = s
            .req(
                Method::PUT,
                &format!("/v1/sandboxes/{bid}/files?path=/home/user/big.bin"),
            )
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await?;
        assert!(r.status().is_success(), "upload: {}", r.status());
        let up = t0.elapsed();
        let t0 = Instant::now();
        let mut r = s
            .req(
                Method::GET,
                &format!("/v1/sandboxes/{bid}/files?path=/home/user/big.bin"),
            )
            .send()
            .await?;
        let mut n = 0u64;
        while let Some(c) = r.chunk().await? {
            n += c.len() as u64;
        }
        assert_eq!(n, GIB);
        let down = t0.elapsed();
        sampler.abort();
        let growth = peak
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(rss0);
        let gibps = |d: Duration| format!("{:.2} GiB/s", 1.0 / d.as_secs_f64());
        rows.push((
            "1 GiB upload (PUT /files, streamed)".into(),
            gibps(up),
            String::new(),
            "≥ 1 GiB/s".into(),
        ));
        rows.push((
            "1 GiB download (GET /files, streamed)".into(),
            gibps(down),
            String::new(),
            "≥ 1 GiB/s".into(),
        ));
        rows.push((
            "server RSS growth during the transfers".into(),
            format!("{:.1} MiB", growth as f64 / 1024.0),
            String::new(),
            "< 64 MiB".into(),
        ));
        delete(&s, &bid).await;
        delete(&s, &id).await;

        // Idle sandboxes and sustained creates per second: `benches/density.rs`.
    }

    println!("| measurement | p50 / value | p99 / detail | target |");
    println!("|---|---|---|---|");
    for (a, b, c, d) in rows {
        println!("| {a} | {b} | {c} | {d} |");
    }
    Ok(())
}
