//! The fleet against a single host, in the same run on this machine: exec round trip and
//! create (to running, then deleted) p50/p99 through a control plane and directly, and
//! creates per second with 3 nodes behind one control plane against one `paddock serve`.
//! The fleet's processes share one PostgreSQL database (`tests/cluster`; `PADDOCK_FLEET_DB=sqlite`:
//! one SQLite file instead, to compare the two stores).
//!
//! Run: `cargo bench -p paddock --bench fleet` (as root). `PADDOCK_BENCH_RUNS` sets the exec
//! runs (default 500; creates: a tenth). Prints a markdown table for `BENCHMARKS.md`.

#[path = "../tests/cluster/mod.rs"]
mod cluster;
#[path = "../tests/server/mod.rs"]
mod server;

use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use server::{Server, call};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// One way in: a base URL and a key.
#[derive(Clone)]
struct Target {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Target {
    fn req(&self, m: Method, path: &str) -> RequestBuilder {
        self.http
            .request(m, format!("{}{path}", self.url))
            .bearer_auth(&self.key)
    }

    async fn create(&self) -> String {
        let (st, v) = call(
            self.req(Method::POST, "/v1/sandboxes")
                .json(&json!({"timeout": 3600})),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        v["id"].as_str().expect("id").to_owned()
    }

    async fn delete(&self, id: &str) {
        let (st, v) = call(self.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
        assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    }

    async fn exec_true(&self, id: &str) {
        let (st, v): (StatusCode, Value) = call(
            self.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                .json(&json!({"cmd": ["/bin/true"]})),
        )
        .await;
        assert_eq!(
            (st, v["exit_code"].as_i64()),
            (StatusCode::OK, Some(0)),
            "{v}"
        );
    }
}

/// Exec p50/p99 (interleaved with `other` so both see the same machine load).
async fn exec_rounds(a: &Target, b: &Target, runs: usize) -> [(Duration, Duration); 2] {
    let (ia, ib) = (a.create().await, b.create().await);
    for _ in 0..20 {
        a.exec_true(&ia).await;
        b.exec_true(&ib).await;
    }
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        a.exec_true(&ia).await;
        ta.push(t.elapsed());
        let t = Instant::now();
        b.exec_true(&ib).await;
        tb.push(t.elapsed());
    }
    a.delete(&ia).await;
    b.delete(&ib).await;
    [
        (pct(&mut ta, 0.5), pct(&mut ta, 0.99)),
        (pct(&mut tb, 0.5), pct(&mut tb, 0.99)),
    ]
}

/// Create p50/p99, each sandbox deleted before the next create.
async fn create_rounds(t: &Target, runs: usize) -> (Duration, Duration) {
    let mut v = Vec::new();
    for _ in 0..runs {
        let s = Instant::now();
        let id = t.create().await;
        v.push(s.elapsed());
        t.delete(&id).await;
    }
    (pct(&mut v, 0.5), pct(&mut v, 0.99))
}

/// Creates per second with `conc` creates in flight, `total` in all (then deleted).
async fn creates_per_sec(t: &Target, total: usize, conc: usize) -> f64 {
    let start = Instant::now();
    let mut ids = Vec::new();
    let mut left = total;
    while left > 0 {
        let n = left.min(conc);
        let mut tasks = Vec::new();
        for _ in 0..n {
            let t = t.clone();
            tasks.push(tokio::spawn(async move { t.create().await }));
        }
        for task in tasks {
            ids.push(task.await.expect("create task"));
        }
        left -= n;
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    for id in ids {
        t.delete(&id).await;
    }
    rate
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("PADDOCK_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let single = Server::start(&["--max-sandboxes-per-key", "1000"]);
    let host = Target {
        http: http.clone(),
        url: single.url.clone(),
        key: single.admin_key.clone(),
    };
    let fleet = cluster::Fleet::start(1, &[&[], &[], &[]]);
    let ctl = Target {
        http,
        url: fleet.controls[0].url.clone(),
        key: fleet.admin_key.clone(),
    };
    let [(e_ctl50, e_ctl99), (e_host50, e_host99)] = exec_rounds(&ctl, &host, runs).await;
    let creates = (runs / 10).max(10);
    let (c_host50, c_host99) = create_rounds(&host, creates).await;
    let (c_ctl50, c_ctl99) = create_rounds(&ctl, creates).await;
    let rate_host = creates_per_sec(&host, 30, 6).await;
    let rate_ctl = creates_per_sec(&ctl, 30, 6).await;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("| What | Single host | Through a control plane (3 nodes) |");
    println!("| --- | --- | --- |");
    println!(
        "| exec round trip p50 ({runs} runs, `/bin/true`) | {} | {} (+{:.2} ms) |",
        ms(e_host50),
        ms(e_ctl50),
        (e_ctl50.as_secs_f64() - e_host50.as_secs_f64()) * 1000.0
    );
    println!(
        "| exec round trip p99 | {} | {} |",
        ms(e_host99),
        ms(e_ctl99)
    );
    println!(
        "| create to running p50 ({creates} runs) | {} | {} |",
        ms(c_host50),
        ms(c_ctl50)
    );
    println!(
        "| create to running p99 | {} | {} |",
        ms(c_host99),
        ms(c_ctl99)
    );
    println!("| creates per second (30, 6 in flight) | {rate_host:.1} | {rate_ctl:.1} |");
    println!("\n{cpus} CPUs; the 3 nodes and the single host share them.");
    drop(fleet);
    drop(single);
    Ok(())
}
