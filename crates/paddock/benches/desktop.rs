//! Desktop sandboxes: time from the create of a `desktop` sandbox to its first screenshot,
//! cold (no pool), doing what E2B's desktop SDKs do after create (`docs/e2b.md`): Xvfb on
//! `:0` at 1024x768, polled with `xdpyinfo` until it answers; `startxfce4`, polled until
//! `xfce4-session`, `xfwm4` and `xfdesktop` run; `scrot --pointer` to a file; the file read
//! back through `GET /v1/sandboxes/{id}/files`. The SDKs poll every 0.5 s; this polls every
//! 20 to 50 ms inside one exec, so it measures the desktop rather than the SDK's poll step.
//!
//! Run against a server that has the template (`paddock template ready desktop`):
//! `PADDOCK_URL=... PADDOCK_API_KEY=... cargo bench -p paddock --bench desktop`.
//! `PADDOCK_BENCH_RUNS` sets the runs (default 10). Without `PADDOCK_URL` it does nothing.

#[allow(unreachable_pub, dead_code)]
mod common;

use common::pct;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Starts the display and XFCE the SDKs' way and waits for both (bounded: 60 s).
const START: &str = r#"
setsid Xvfb :0 -ac -screen 0 1024x768x24 -retro -dpi 96 -nolisten tcp -nolisten unix </dev/null >/dev/null 2>&1 &
i=0; until xdpyinfo -display :0 >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 500 ] || exit 1; sleep 0.02; done
setsid startxfce4 </dev/null >/dev/null 2>&1 &
i=0; until pgrep -x xfce4-session >/dev/null && pgrep -x xfwm4 >/dev/null && pgrep -x xfdesktop >/dev/null; do i=$((i+1)); [ $i -lt 1200 ] || exit 1; sleep 0.05; done
"#;

async fn exec(t: &common::Target, id: &str, script: &str) -> anyhow::Result<()> {
    let v: Value = t
        .http
        .post(format!("{}/v1/sandboxes/{id}/exec", t.url))
        .bearer_auth(&t.key)
        .json(&json!({"cmd": ["/bin/sh", "-c", script], "timeout": 90}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    anyhow::ensure!(v["exit_code"] == 0, "{script:?} failed in {id}: {v}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(target) = common::target("desktop") else {
        return Ok(());
    };
    let common::Target { http, url, key } = &target;
    let runs = common::runs(10);
    let (mut create, mut desktop, mut shot, mut total) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut memory = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let id = target
            .create(&json!({"template": "desktop", "env": {"DISPLAY": ":0"}}))
            .await?;
        let t1 = Instant::now();
        exec(&target, &id, START).await?;
        let t2 = Instant::now();
        exec(&target, &id, "scrot --pointer /tmp/bench.png").await?;
        let png = http
            .get(format!("{url}/v1/sandboxes/{id}/files"))
            .query(&[("path", "/tmp/bench.png")])
            .bearer_auth(key)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        anyhow::ensure!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG from {id}");
        let t3 = Instant::now();
        create.push(t1 - t0);
        desktop.push(t2 - t1);
        shot.push(t3 - t2);
        total.push(t3 - t0);
        let stats: Value = http
            .get(format!("{url}/v1/sandboxes/{id}/stats"))
            .bearer_auth(key)
            .send()
            .await?
            .json()
            .await?;
        if let Some(m) = stats["memory_bytes"].as_u64() {
            memory.push(m);
        }
        http.delete(format!("{url}/v1/sandboxes/{id}"))
            .bearer_auth(key)
            .send()
            .await?;
    }
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    println!("desktop, {runs} cold runs (1024x768)");
    println!("| | p50 | p99 |");
    println!("|---|---|---|");
    for (name, v) in [
        ("create", &mut create),
        ("Xvfb and XFCE up", &mut desktop),
        ("scrot and the PNG read back", &mut shot),
        ("create to first screenshot", &mut total),
    ] {
        println!("| {name} | {} | {} |", ms(pct(v, 0.5)), ms(pct(v, 0.99)));
    }
    if !memory.is_empty() {
        memory.sort_unstable();
        println!(
            "memory in use after the first screenshot (p50): {} MiB",
            memory[memory.len() / 2] >> 20
        );
    }
    Ok(())
}
