//! Warm pools (`docs/pools.md`) over the REST API: create → first `/bin/true` done from a
//! warm pool of `base` against a cold create (the pool set to 0: every create a miss), the
//! memory of a pooled sandbox, and bubblewrap's `/bin/true` after every timed create, so
//! each row's ratio has a yardstick from the same minutes of the run.
//! Networked (`all`) and offline (`none`) creates over REST (an offline pooled create takes
//! an offline slot, made without a link), and the E2B path: `POST /sandboxes` with internet
//! on, then `process.Start` of `/bin/true` over the data plane read to its end. A last row
//! creates back to back (the refill running between and under the creates).
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

/// Waits until the pool holds `n` sandboxes, at least one of the kind a create of `offline`
/// takes (an offline slot, or a networked one).
async fn wait_ready(s: &Server, n: u64, offline: bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = pool(s).await;
        let (all, off) = (
            p["ready"].as_u64().unwrap_or(0),
            p["ready_offline"].as_u64().unwrap_or(0),
        );
        if all >= n && (if offline { off >= 1 } else { all > off }) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pool never reached {n} (offline {offline}): {p}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn set_size(s: &Server, n: u64) {
    let (st, v) = call(
        s.req(Method::PUT, "/v1/pools/base")
            .json(&json!({"size": n})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

/// How a timed create goes.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// `POST /v1/sandboxes` with this network mode, `POST .../exec`, `DELETE`.
    Rest(&'static str),
    /// E2B `POST /sandboxes` with internet on, `process.Start` over the data plane, kill.
    E2b,
}

/// One create → `/bin/true` → delete; returns the time to the command's answer.
async fn once(s: &Server, path: Path) -> Duration {
    match path {
        Path::Rest(mode) => {
            let t0 = Instant::now();
            let v = s
                .create(json!({"network": {"mode": mode}, "timeout": 600}))
                .await;
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
        Path::E2b => {
            let t0 = Instant::now();
            let r = s
                .e2b_api(Method::POST, "/sandboxes")
                .json(&json!({"templateID": "base", "timeout": 600, "allow_internet_access": true, "secure": true}))
                .send()
                .await
                .expect("e2b create");
            assert_eq!(r.status(), StatusCode::CREATED);
            let v: Value = r.json().await.expect("json");
            let id = v["sandboxID"].as_str().expect("id").to_owned();
            let token = v["envdAccessToken"].as_str().unwrap_or_default().to_owned();
            let r = s
                .e2b_process_start(&id, &token, "/bin/true", &[])
                .send()
                .await
                .expect("process.Start");
            assert_eq!(r.status(), StatusCode::OK);
            let b = r.bytes().await.expect("stream");
            let took = t0.elapsed();
            assert!(String::from_utf8_lossy(&b).contains("\"end\""));
            let r = s
                .e2b_api(Method::DELETE, &format!("/sandboxes/{id}"))
                .send()
                .await
                .expect("e2b kill");
            assert_eq!(r.status(), StatusCode::NO_CONTENT);
            took
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = runs(50);
    let s = Server::start(&["--pool", "base=2"]);
    // bubblewrap runs once after every timed create, so each row has a yardstick measured
    // at the same time as it (the machine's load moves during a run).
    let bwrap = bench_external::External::bwrap()?;
    let mut b = Vec::new();
    let mut yard = || -> anyhow::Result<Duration> {
        let d = bwrap.run_once()?;
        b.push(d);
        Ok(d)
    };
    let mut rows = Vec::new();
    let mut mem = None;
    // Offline last: its demand makes the refill turn to offline slots for a minute.
    for (label, path) in [
        ("REST, networked (all)", Path::Rest("all")),
        ("E2B, internet on, `process.Start`", Path::E2b),
        ("REST, offline (none)", Path::Rest("none")),
    ] {
        set_size(&s, 2).await;
        let offline = path == Path::Rest("none");
        if offline {
            // Untimed: offline demand, so the refill makes offline slots (`docs/pools.md`).
            once(&s, path).await;
        }
        let (mut hit, mut hit_b) = (Vec::new(), Vec::new());
        for _ in 0..n {
            // Untimed: the refill catches up, so every timed create is a hit (an offline
            // one on an offline slot).
            wait_ready(&s, 2, offline).await;
            mem = pool(&s).await["memory_bytes_per_sandbox"].as_u64().or(mem);
            hit.push(once(&s, path).await);
            hit_b.push(yard()?);
        }
        set_size(&s, 0).await;
        let (mut cold, mut cold_b) = (Vec::new(), Vec::new());
        for _ in 0..n {
            cold.push(once(&s, path).await);
            cold_b.push(yard()?);
        }
        rows.push((format!("pooled, {label}"), hit, hit_b));
        rows.push((format!("cold (pool empty), {label}"), cold, cold_b));
    }
    // Back to back: a create as soon as the last one ended, so the refill runs between
    // (and, when it cannot keep up, during) the timed creates; some are misses. The tail
    // this row shows is what a client sees under steady demand.
    set_size(&s, 2).await;
    wait_ready(&s, 2, false).await;
    let before = pool(&s).await["hits"].as_u64().unwrap_or(0);
    let (mut b2b, mut b2b_b) = (Vec::new(), Vec::new());
    for _ in 0..n {
        b2b.push(once(&s, Path::Rest("all")).await);
        b2b_b.push(yard()?);
    }
    let b2b_hits = pool(&s).await["hits"].as_u64().unwrap_or(0) - before;
    rows.push((
        format!(
            "pooled, REST, networked (all), back to back, one bwrap run between ({b2b_hits} of {n} hits)"
        ),
        b2b,
        b2b_b,
    ));
    let p = pool(&s).await;
    let b50 = pct(&mut b, 0.5);
    println!("| create → first `/bin/true` | p50 | p99 | bwrap p50, same phase | p50 / bwrap |");
    println!("|---|---|---|---|---|");
    for (name, mut t, mut tb) in rows {
        let p50 = pct(&mut t, 0.5);
        let y = pct(&mut tb, 0.5);
        println!(
            "| {name} | {} | {} | {} | {:.2}× |",
            ms(p50),
            ms(pct(&mut t, 0.99)),
            ms(y),
            p50.as_secs_f64() / y.as_secs_f64()
        );
    }
    println!(
        "| cold `bwrap /bin/true`, all phases | {} | {} | | 1.00× |",
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
