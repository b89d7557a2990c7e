//! The code interpreter: time from the create of a `code-interpreter` sandbox to the first
//! `run_code` result, cold and from a warm pool, through two paths:
//!
//! - **E2B** (what `e2b_code_interpreter.Sandbox.create()` then `run_code("1 + 1")` send):
//!   `POST /sandboxes` `{"templateID": "code-interpreter-v1", ...}` with `X-API-Key`, then
//!   `POST /execute` through the port proxy in the SDKs' `E2B_SANDBOX_URL` form (headers
//!   `E2b-Sandbox-Id`, `E2b-Sandbox-Port: 49999`, `X-Access-Token`) until its `result` line.
//! - **native**: `POST /v1/sandboxes` then `POST /v1/sandboxes/{id}/code`.
//!
//! Cold: the template's pool set to 0 (every create a miss: the sandbox starts its code server
//! and kernel while the client waits). Pooled: a pool of 2 (`PUT /v1/pools/code-interpreter`),
//! and before each timed create the bench waits (untimed) until one is ready, so every timed
//! create is a hit; the pool's `hits` counter is checked to have grown by the runs. The pool is
//! removed again at the end.
//!
//! Run against a server that has the template (`paddock template ready code-interpreter`) with
//! an admin or operator key:
//! `PADDOCK_URL=... PADDOCK_API_KEY=... cargo bench -p paddock --bench code_interpreter`
//! (release) or `PADDOCK_BENCH_RUNS=N cargo test -p paddock --bench code_interpreter` (dev).
//! `PADDOCK_BENCH_RUNS` sets the runs per row (default 20). Without `PADDOCK_URL` it does
//! nothing.

#[allow(unreachable_pub, dead_code)]
mod common;

use common::{Target, pct};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::{Value, json};

const TEMPLATE: &str = "code-interpreter";

/// Reads an NDJSON stream until a `result` line; checks it is `2`.
async fn first_result(resp: reqwest::Response) -> anyhow::Result<()> {
    let mut body = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            if let Ok(ev) = serde_json::from_slice::<Value>(&line)
                && ev["type"] == "result"
            {
                anyhow::ensure!(ev["text"] == "2", "unexpected result {ev}");
                return Ok(());
            }
        }
    }
    anyhow::bail!("the stream ended without a result")
}

/// One create → first result through the native API; returns (create, create to result).
async fn native(t: &Target) -> anyhow::Result<(Duration, Duration)> {
    let t0 = Instant::now();
    let id = t.create(&json!({"template": TEMPLATE})).await?;
    let t1 = Instant::now();
    let resp = t
        .http
        .post(format!("{}/v1/sandboxes/{id}/code", t.url))
        .bearer_auth(&t.key)
        .json(&json!({"code": "1 + 1"}))
        .send()
        .await?
        .error_for_status()?;
    first_result(resp).await.with_context(|| id.clone())?;
    let took = (t1 - t0, t0.elapsed());
    t.http
        .delete(format!("{}/v1/sandboxes/{id}", t.url))
        .bearer_auth(&t.key)
        .send()
        .await?;
    Ok(took)
}

/// One create → first result as the E2B code interpreter SDK does it.
async fn e2b(t: &Target) -> anyhow::Result<(Duration, Duration)> {
    let key = format!("e2b_{}", t.key.trim_start_matches("pdk_"));
    let t0 = Instant::now();
    // The Python SDK's create body (`e2b.sandbox_sync.sandbox_api`).
    let v: Value = t
        .http
        .post(format!("{}/sandboxes", t.url))
        .header("X-API-Key", &key)
        .json(&json!({
            "templateID": "code-interpreter-v1",
            "timeout": 300,
            "metadata": {},
            "envVars": {},
            "secure": true,
            "autoPause": false,
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let t1 = Instant::now();
    let id = v["sandboxID"].as_str().context("no sandboxID")?.to_owned();
    let token = v["envdAccessToken"].as_str().unwrap_or_default().to_owned();
    let resp = t
        .http
        .post(format!("{}/execute", t.url))
        .header("E2b-Sandbox-Id", &id)
        .header("E2b-Sandbox-Port", "49999")
        .header("X-Access-Token", &token)
        .json(&json!({"code": "1 + 1", "context_id": null, "language": null, "env_vars": null}))
        .send()
        .await?
        .error_for_status()?;
    first_result(resp).await.with_context(|| id.clone())?;
    let took = (t1 - t0, t0.elapsed());
    t.http
        .delete(format!("{}/sandboxes/{id}", t.url))
        .header("X-API-Key", &key)
        .send()
        .await?;
    Ok(took)
}

async fn pool(t: &Target) -> anyhow::Result<Value> {
    Ok(t.http
        .get(format!("{}/v1/pools/{TEMPLATE}", t.url))
        .bearer_auth(&t.key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

async fn set_pool(t: &Target, size: u64) -> anyhow::Result<()> {
    t.http
        .put(format!("{}/v1/pools/{TEMPLATE}", t.url))
        .bearer_auth(&t.key)
        .json(&json!({"size": size}))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// Waits (bounded) until the pool has a sandbox ready.
async fn wait_ready(t: &Target) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = pool(t).await?;
        if p["ready"].as_u64().unwrap_or(0) >= 1 {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the pool never filled: {p}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(target) = common::target("code_interpreter") else {
        return Ok(());
    };
    let t = &target;
    let runs = common::runs(20);
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    let mut rows = Vec::new();
    for pooled in [false, true] {
        set_pool(t, if pooled { 2 } else { 0 }).await?;
        for path in ["E2B", "native"] {
            let hits0 = pool(t).await?["hits"].as_u64().unwrap_or(0);
            let (mut create, mut total) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                if pooled {
                    wait_ready(t).await?;
                }
                let (c, all) = if path == "E2B" {
                    e2b(t).await?
                } else {
                    native(t).await?
                };
                create.push(c);
                total.push(all);
            }
            let hits = pool(t).await?["hits"].as_u64().unwrap_or(0) - hits0;
            if pooled {
                anyhow::ensure!(hits == runs as u64, "{hits} of {runs} creates were hits");
            } else {
                anyhow::ensure!(hits == 0, "{hits} cold creates were hits");
            }
            let p50 = pct(&mut total, 0.5);
            rows.push((
                pooled,
                path,
                p50,
                pct(&mut total, 0.99),
                pct(&mut create, 0.5),
            ));
        }
    }
    let _ = t
        .http
        .delete(format!("{}/v1/pools/{TEMPLATE}", t.url))
        .bearer_auth(&t.key)
        .send()
        .await;
    println!("code interpreter: create to the first run_code result (`1 + 1`), {runs} runs a row");
    println!("| | create to first result p50 | p99 | create alone p50 | p50 / cold |");
    println!("|---|---|---|---|---|");
    for (pooled, path, p50, p99, c50) in &rows {
        let cold = rows
            .iter()
            .find(|r| !r.0 && r.1 == *path)
            .map_or(*p50, |r| r.2);
        println!(
            "| {} {path} | {} | {} | {} | {:.2}× |",
            if *pooled {
                "pooled (hit)"
            } else {
                "cold (pool 0)"
            },
            ms(*p50),
            ms(*p99),
            ms(*c50),
            p50.as_secs_f64() / cold.as_secs_f64()
        );
    }
    Ok(())
}
