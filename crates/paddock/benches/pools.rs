//! Warm pools (`docs/pools.md`) over the REST API: create → first `/bin/true` done from a
//! warm pool of `base` against a cold create (the pool set to 0: every create a miss), the
//! memory of a pooled sandbox, and bubblewrap's `/bin/true` in the same run for the ratio.
//! Networked (`all`) and offline (`none`) creates.
//!
//! Run: `PADDOCK_BENCH_RUNS=30 cargo test -p paddock --bench pools` (dev build) or
//! `cargo bench -p paddock --bench pools` (release), as root. Prints a markdown table.

#[allow(unreachable_pub, dead_code)]
#[path = "../src/bench_external.rs"]
mod bench_external;
#[allow(unreachable_pub, dead_code)]
mod common;
#[path = "../tests/server/mod.rs"]
mod server;

use std::time::{Duration, Instant};

use common::{ms, pct, runs};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::{Server, call};

async fn pool(s: &Server) -> Value {
    call(s.req(Method::GET, "/v1/pools/base")).await.1
}

async fn wait_ready(s: &Server, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while pool(s).await["ready"].as_u64().unwrap_or(0) < n {
        assert!(Instant::now() < deadline, "pool never reached {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One create → `/bin/true` → delete; returns the time to the command's answer.
async fn once(s: &Server, network: &Value) -> Duration {
    let t0 = Instant::now();
    let v = s.create(json!({"network": network, "timeout": 600})).await;
    let id = v["id"].as_str().expect("id").to_owned();
    let (st, r) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"cmd": ["/bin/true"]})),
    )
    .await;
    let took = t0.elapsed();
    assert_eq!(st, StatusCode::OK, "{r}");
    let _ = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    took
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = runs(50);
    let s = Server::start(&["--pool", "base=2"]);
    let mut rows = Vec::new();
    let mut mem = None;
    for (label, network) in [
        ("networked (all)", json!({"mode": "all"})),
        ("offline (none)", json!({"mode": "none"})),
    ] {
        call(
            s.req(Method::PUT, "/v1/pools/base")
                .json(&json!({"size": 2})),
        )
        .await;
        let mut hit = Vec::new();
        for _ in 0..n {
            // Untimed: the refill catches up, so every timed create is a hit.
            wait_ready(&s, 2).await;
            mem = pool(&s).await["memory_bytes_per_sandbox"].as_u64().or(mem);
            hit.push(once(&s, &network).await);
        }
        call(
            s.req(Method::PUT, "/v1/pools/base")
                .json(&json!({"size": 0})),
        )
        .await;
        let mut cold = Vec::new();
        for _ in 0..n {
            cold.push(once(&s, &network).await);
        }
        rows.push((format!("pooled, {label}"), hit));
        rows.push((format!("cold (pool empty), {label}"), cold));
    }
    let p = pool(&s).await;
    let bwrap = bench_external::External::bwrap()?;
    let mut b = Vec::new();
    for _ in 0..n {
        b.push(bwrap.run_once()?);
    }
    let b50 = pct(&mut b, 0.5);
    println!("| create → first `/bin/true` (REST) | p50 | p99 | p50 / bwrap |");
    println!("|---|---|---|---|");
    for (name, mut t) in rows {
        let p50 = pct(&mut t, 0.5);
        println!(
            "| {name} | {} | {} | {:.2}× |",
            ms(p50),
            ms(pct(&mut t, 0.99)),
            p50.as_secs_f64() / b50.as_secs_f64()
        );
    }
    println!(
        "| cold `bwrap /bin/true` | {} | {} | 1.00× |",
        ms(b50),
        ms(pct(&mut b, 0.99))
    );
    println!(
        "\nmemory per pooled sandbox (cgroup, idle `base`): {} KiB; hits {}, misses {}; {n} runs per row",
        mem.unwrap_or(0) / 1024,
        p["hits"],
        p["misses"]
    );
    Ok(())
}
