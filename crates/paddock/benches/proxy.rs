//! The port proxy against a direct connection to the same kind of server.
//!
//! Inside a sandbox (2 CPUs) `python3 -m http.server` serves a small file and a 256 MiB file;
//! the same `python3 -m http.server` serves the same files from a directory on the host's
//! loopback. A bench cannot dial into the sandbox's network namespace, so "direct" is that
//! host twin: same interpreter, same server code, same files, no proxy. Rows:
//! - small GET latency, one request at a time (p50, p99);
//! - small GET throughput, 8 concurrent clients for a fixed time (requests/s);
//! - 256 MiB download (MB/s, best of 3);
//! - CPU seconds per GiB downloaded, by process, over those 3 downloads: the client (this
//!   bench), the proxy (the server, all threads) and the app (the host twin, or the sandbox's
//!   cgroup: `http.server` and the agent). On this 2-core machine three busy processes share
//!   two cores, so the table also prints the bound that puts on throughput:
//!   `2 cores / (CPU seconds per GB, all processes)`.
//!
//! The proxy rows go through path routing (`/proxy/{id}/8000/...`) and host routing
//! (`8000-{id}.localhost`) with the access token in `X-Access-Token`. Client to proxy is
//! HTTP/1.1 keep-alive (reqwest's pool); `http.server` speaks HTTP/1.0, so every request opens
//! a new upstream connection in both setups.
//!
//! Run: `cargo bench -p paddock --bench proxy` (as root). `PADDOCK_BENCH_RUNS` sets the
//! sequential requests per latency row (default 1000), `PADDOCK_BENCH_SECS` the seconds of
//! each throughput row (default 5). Prints a markdown table for `BENCHMARKS.md`.

#[allow(unreachable_pub, dead_code)]
mod common;
#[path = "../tests/server/mod.rs"]
mod server;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{pct, process_cpu_ns, sandbox_cpu_ns};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::json;
use server::{Server, call};

const BIG: u64 = 256 << 20;
const SMALL: &str = "hello from the proxy benchmark\n";

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// One way of reaching the server: a base URL and the headers to send.
#[derive(Clone)]
struct Target {
    name: &'static str,
    base: String,
    headers: Vec<(String, String)>,
}

impl Target {
    fn get(&self, c: &reqwest::Client, path: &str) -> reqwest::RequestBuilder {
        let mut rb = c.request(Method::GET, format!("{}{path}", self.base));
        for (k, v) in &self.headers {
            rb = rb.header(k, v);
        }
        rb
    }
}

async fn small_get(c: &reqwest::Client, t: &Target) {
    let r = t.get(c, "/small.txt").send().await.expect("GET small");
    assert_eq!(r.status(), StatusCode::OK, "{}", t.name);
    let b = r.bytes().await.expect("body");
    assert_eq!(b.len(), SMALL.len(), "{}", t.name);
}

async fn latency(c: &reqwest::Client, t: &Target, runs: usize) -> (Duration, Duration) {
    for _ in 0..20 {
        small_get(c, t).await;
    }
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let s = Instant::now();
        small_get(c, t).await;
        v.push(s.elapsed());
    }
    (pct(&mut v, 0.5), pct(&mut v, 0.99))
}

async fn throughput(c: &reqwest::Client, t: &Target, secs: u64, clients: usize) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (c, t, done) = (c.clone(), t.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                small_get(&c, &t).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// CPU time (nanoseconds) of the processes on a download's path: the client (this bench),
/// the proxy (the server; none for direct) and the app serving the file.
#[derive(Clone, Copy, Default)]
struct PathCpu {
    client: u64,
    proxy: u64,
    app: u64,
}

impl PathCpu {
    fn now(server: Option<u32>, app: &dyn Fn() -> u64) -> PathCpu {
        PathCpu {
            client: process_cpu_ns(std::process::id()),
            proxy: server.map_or(0, process_cpu_ns),
            app: app(),
        }
    }

    fn since(self, before: PathCpu) -> PathCpu {
        PathCpu {
            client: self.client.saturating_sub(before.client),
            proxy: self.proxy.saturating_sub(before.proxy),
            app: self.app.saturating_sub(before.app),
        }
    }

    fn total(self) -> u64 {
        self.client + self.proxy + self.app
    }
}

/// CPU seconds per GiB, for `ns` spent moving `bytes`.
fn per_gib(ns: u64, bytes: u64) -> f64 {
    ns as f64 / 1e9 / (bytes as f64 / f64::from(1u32 << 30))
}

/// The best of three 256 MiB downloads (MB/s), and the path's CPU over all three.
async fn download(
    c: &reqwest::Client,
    t: &Target,
    server: Option<u32>,
    app: &dyn Fn() -> u64,
) -> (f64, PathCpu) {
    let mut best: f64 = 0.0;
    let before = PathCpu::now(server, app);
    for _ in 0..3 {
        let s = Instant::now();
        let r = t.get(c, "/big.bin").send().await.expect("GET big");
        assert_eq!(r.status(), StatusCode::OK, "{}", t.name);
        let mut n = 0u64;
        let mut body = r.bytes_stream();
        while let Some(chunk) = body.next().await {
            n += chunk.expect("chunk").len() as u64;
        }
        assert_eq!(n, BIG, "{}", t.name);
        best = best.max(n as f64 / 1e6 / s.elapsed().as_secs_f64());
    }
    (best, PathCpu::now(server, app).since(before))
}

/// `python3 -m http.server` on the host's loopback, serving `dir`.
struct HostServer(Child);

impl Drop for HostServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn wait_listening(c: &reqwest::Client, t: &Target) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = t.get(c, "/small.txt").send().await
            && r.status() == StatusCode::OK
        {
            return;
        }
        assert!(Instant::now() < deadline, "{} never answered", t.name);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("PADDOCK_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let secs: u64 = std::env::var("PADDOCK_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);

    // The direct twin on the host.
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("small.txt"), SMALL)?;
    let f = std::fs::File::create(dir.path().join("big.bin"))?;
    f.set_len(BIG)?;
    let hport = free_port();
    let host_server = HostServer(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &hport.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );

    // The sandbox and its server.
    let s = Server::start(&[]);
    let v = s
        .create(json!({"timeout": 3600, "cpus": 2, "memory": "1G", "disk": "2G"}))
        .await;
    let id = v["id"].as_str().expect("id").to_owned();
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec")).json(&json!({
            "command": format!("mkdir -p /home/user/www && cd /home/user/www && printf '{}' > small.txt && truncate -s {BIG} big.bin",
                SMALL.trim_end().to_owned() + "\\n"),
        })),
    )
    .await;
    assert_eq!(
        (st, v["exit_code"].as_i64()),
        (StatusCode::OK, Some(0)),
        "{v}"
    );
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec")).json(&json!({
            "command": "python3 -m http.server 8000 --bind 127.0.0.1 --directory /home/user/www",
            "background": true,
        })),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let (_, p) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/ports/8000"))).await;
    let token = p["access_token"].as_str().expect("token").to_owned();
    let server = s.url.trim_start_matches("http://").to_owned();
    let sport = server.rsplit(':').next().unwrap_or_default().to_owned();

    let direct = Target {
        name: "direct (host python3 -m http.server)",
        base: format!("http://127.0.0.1:{hport}"),
        headers: vec![],
    };
    let by_path = Target {
        name: "proxy, path routing (/proxy/{id}/8000/)",
        base: format!("{}/proxy/{id}/8000", s.url),
        headers: vec![("x-access-token".into(), token.clone())],
    };
    let by_host = Target {
        name: "proxy, host routing (8000-{id}.localhost)",
        base: s.url.clone(),
        headers: vec![
            ("x-access-token".into(), token.clone()),
            ("host".into(), format!("8000-{id}.localhost:{sport}")),
        ],
    };
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    wait_listening(&c, &direct).await;
    wait_listening(&c, &by_path).await;

    println!("| measurement | direct | proxy (path) | proxy (host) | proxy / direct |");
    println!("|---|---|---|---|---|");
    let mut lat = Vec::new();
    for t in [&direct, &by_path, &by_host] {
        lat.push(latency(&c, t, runs).await);
    }
    println!(
        "| small GET p50, sequential ({runs} runs) | {} | {} | {} | +{} |",
        ms(lat[0].0),
        ms(lat[1].0),
        ms(lat[2].0),
        ms(lat[1].0.saturating_sub(lat[0].0))
    );
    println!(
        "| small GET p99 | {} | {} | {} | +{} |",
        ms(lat[0].1),
        ms(lat[1].1),
        ms(lat[2].1),
        ms(lat[1].1.saturating_sub(lat[0].1))
    );
    let mut rps = Vec::new();
    for t in [&direct, &by_path, &by_host] {
        rps.push(throughput(&c, t, secs, 8).await);
    }
    println!(
        "| small GETs/s, 8 clients, {secs} s | {:.0}/s | {:.0}/s | {:.0}/s | {:.2}× |",
        rps[0],
        rps[1],
        rps[2],
        rps[1] / rps[0]
    );
    let host_pid = host_server.0.id();
    let (d_mbs, d_cpu) = download(&c, &direct, None, &|| process_cpu_ns(host_pid)).await;
    let server_pid = s.pid();
    let (p_mbs, p_cpu) = download(&c, &by_path, server_pid, &|| sandbox_cpu_ns(&id)).await;
    println!(
        "| 256 MiB download (best of 3) | {d_mbs:.0} MB/s | {p_mbs:.0} MB/s | | {:.2}× |",
        p_mbs / d_mbs
    );
    let moved = 3 * BIG;
    let row = |what: &str, d: u64, p: u64| {
        println!(
            "| CPU s per GiB downloaded: {what} | {:.3} | {:.3} | | |",
            per_gib(d, moved),
            per_gib(p, moved)
        );
    };
    row("client (this bench)", d_cpu.client, p_cpu.client);
    row("proxy (the server)", d_cpu.proxy, p_cpu.proxy);
    row(
        "app (http.server; in the sandbox, its cgroup)",
        d_cpu.app,
        p_cpu.app,
    );
    row("all", d_cpu.total(), p_cpu.total());
    // Two cores can give at most 2 CPU-seconds per second to the path's processes together.
    let bound = |cpu: PathCpu| 2.0 / (cpu.total() as f64 / 1e9 / (moved as f64 / 1e6));
    println!(
        "| two-core bound: 2 / (CPU s per MB, all) | {:.0} MB/s | {:.0} MB/s | | {:.2}× |",
        bound(d_cpu),
        bound(p_cpu),
        bound(p_cpu) / bound(d_cpu)
    );
    drop(host_server);
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    Ok(())
}
