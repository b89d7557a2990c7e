//! Pause and resume latency of the native runtime, per mode (`docs/persistence.md`).
//!
//! Run: `cargo bench -p paddock --bench persist` (as root). `PADDOCK_BENCH_RUNS` sets the
//! number of runs per row (default 50). Prints a markdown table for `BENCHMARKS.md`.
//! "resume + exec" is the resume and a first `/bin/true` through the agent: the sandbox
//! answering again.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use paddock_runtime::{CreateSpec, ExecRequest, PauseMode, Runtime, RuntimeConfig};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("PADDOCK_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut cfg = RuntimeConfig::new(PathBuf::from("/var/tmp/paddock-bench-persist"));
    cfg.agent_bin = PathBuf::from(env!("CARGO_BIN_EXE_paddock-agent"));
    let runtime = Runtime::open(cfg)?;
    let truecmd = || ExecRequest {
        argv: vec!["/bin/true".into()],
        ..Default::default()
    };
    let mut rows: Vec<(String, Vec<Duration>)> = Vec::new();
    rt.block_on(async {
        let sbx = runtime.create(CreateSpec::default()).await?;
        let id = sbx.id.to_string();
        for mode in [PauseMode::Full, PauseMode::Filesystem] {
            let (mut p, mut r, mut re) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..runs {
                let t = Instant::now();
                runtime.pause(&id, mode).await?;
                p.push(t.elapsed());
                let t = Instant::now();
                let s = runtime.resume(&id, false).await?;
                r.push(t.elapsed());
                s.exec(truecmd()).await?;
                re.push(t.elapsed());
            }
            let m = mode.as_str();
            rows.push((format!("pause, `{m}`"), p));
            rows.push((format!("resume, `{m}`"), r));
            rows.push((format!("resume + exec, `{m}`"), re));
        }
        runtime.destroy(&id).await?;
        anyhow::Ok(())
    })?;
    println!("| operation | p50 | p99 |");
    println!("|---|---|---|");
    for (name, mut v) in rows {
        let (p50, p99) = (pct(&mut v, 0.5), pct(&mut v, 0.99));
        println!("| {name} | {} | {} |", ms(p50), ms(p99));
    }
    runtime.close()?;
    Ok(())
}
