//! The code interpreter: time from the create of a `code-interpreter` sandbox to the first
//! `run_code` result (`POST /v1/sandboxes`, then `POST /v1/sandboxes/{id}/code` with `1 + 1`
//! until its `result` event), cold (no pool: every sandbox starts its server and kernel).
//!
//! Run against a server that has the template (`paddock template ready code-interpreter`):
//! `PADDOCK_URL=... PADDOCK_API_KEY=... cargo bench -p paddock --bench code_interpreter`.
//! `PADDOCK_BENCH_RUNS` sets the runs (default 20). Without `PADDOCK_URL` it does nothing.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (Ok(url), Ok(key)) = (
        std::env::var("PADDOCK_URL"),
        std::env::var("PADDOCK_API_KEY"),
    ) else {
        eprintln!("code_interpreter bench: set PADDOCK_URL and PADDOCK_API_KEY (skipped)");
        return Ok(());
    };
    let runs: usize = std::env::var("PADDOCK_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let http = reqwest::Client::new();
    let url = url.trim_end_matches('/').to_string();
    let (mut total, mut create, mut first) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let t0 = Instant::now();
        let v: Value = http
            .post(format!("{url}/v1/sandboxes"))
            .bearer_auth(&key)
            .json(&json!({"template": "code-interpreter"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = v["id"].as_str().unwrap_or_default().to_string();
        let t1 = Instant::now();
        let resp = http
            .post(format!("{url}/v1/sandboxes/{id}/code"))
            .bearer_auth(&key)
            .json(&json!({"code": "1 + 1"}))
            .send()
            .await?
            .error_for_status()?;
        let mut body = resp.bytes_stream();
        let mut buf = Vec::new();
        let mut got = false;
        'read: while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk?);
            for line in buf.split(|b| *b == b'\n') {
                if let Ok(ev) = serde_json::from_slice::<Value>(line)
                    && ev["type"] == "result"
                {
                    anyhow::ensure!(ev["text"] == "2", "unexpected result {ev}");
                    got = true;
                    break 'read;
                }
            }
        }
        anyhow::ensure!(got, "no result from sandbox {id}");
        let t2 = Instant::now();
        drop(body);
        total.push(t2 - t0);
        create.push(t1 - t0);
        first.push(t2 - t1);
        http.delete(format!("{url}/v1/sandboxes/{id}"))
            .bearer_auth(&key)
            .send()
            .await?;
    }
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    println!("code interpreter, {runs} cold runs");
    println!("| | p50 | p99 |");
    println!("|---|---|---|");
    for (name, v) in [
        ("create (start command + ready check on 49999)", &mut create),
        ("then the first run_code result", &mut first),
        ("create to first result", &mut total),
    ] {
        println!("| {name} | {} | {} |", ms(pct(v, 0.5)), ms(pct(v, 0.99)));
    }
    Ok(())
}
