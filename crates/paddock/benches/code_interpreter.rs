//! The code interpreter: time from the create of a `code-interpreter` sandbox to the first
//! `run_code` result (`POST /v1/sandboxes`, then `POST /v1/sandboxes/{id}/code` with `1 + 1`
//! until its `result` event), cold (no pool: every sandbox starts its server and kernel).
//!
//! Run against a server that has the template (`paddock template ready code-interpreter`):
//! `PADDOCK_URL=... PADDOCK_API_KEY=... cargo bench -p paddock --bench code_interpreter`.
//! `PADDOCK_BENCH_RUNS` sets the runs (default 20). Without `PADDOCK_URL` it does nothing.

#[allow(unreachable_pub, dead_code)]
mod common;

use common::pct;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(target) = common::target("code_interpreter") else {
        return Ok(());
    };
    let common::Target { http, url, key } = &target;
    let runs = common::runs(20);
    let (mut total, mut create, mut first) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let t0 = Instant::now();
        let id = target
            .create(&json!({"template": "code-interpreter"}))
            .await?;
        let t1 = Instant::now();
        let resp = http
            .post(format!("{url}/v1/sandboxes/{id}/code"))
            .bearer_auth(key)
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
            .bearer_auth(key)
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
