//! Pause and resume latency of the native runtime, per mode, and snapshot and fork of 10
//! (`docs/persistence.md`).
//!
//! Run: `cargo bench -p paddock --bench persist` (as root). `PADDOCK_BENCH_RUNS` sets the
//! number of runs per row (default 50). Prints a markdown table for `BENCHMARKS.md`.
//! "resume + exec" is the resume and a first `/bin/true` through the agent: the sandbox
//! answering again.

#[allow(unreachable_pub, dead_code)]
mod common;

use common::{ms, pct};
use std::time::{Duration, Instant};

use paddock_runtime::{CreateSpec, ExecRequest, PauseMode, Runtime};

fn main() -> anyhow::Result<()> {
    let runs = common::runs(50);
    let rt = common::tokio()?;
    let runtime = Runtime::open(common::runtime_config("/var/tmp/paddock-bench-persist"))?;
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

        // Snapshots of a running sandbox that wrote 10 MB, each deleted after.
        let sbx = runtime.create(CreateSpec::default()).await?;
        let id = sbx.id.to_string();
        sbx.exec(ExecRequest {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "head -c 10000000 /dev/urandom > /home/user/blob".into(),
            ],
            ..Default::default()
        })
        .await?;
        let mut snaps = Vec::new();
        for i in 0..runs {
            let name = format!("bench-snap-{i}");
            let t = Instant::now();
            runtime.snapshot(&id, &name)?;
            snaps.push(t.elapsed());
            runtime.remove_template(&name, false)?;
        }
        rows.push(("snapshot (10 MB written)".into(), snaps));
        // Fork of 10: one snapshot, then ten creates from it at once, until all ten run.
        let mut forks = Vec::new();
        for i in 0..runs.min(10) {
            let name = format!("bench-fork-{i}");
            let t = Instant::now();
            runtime.snapshot(&id, &name)?;
            let tasks: Vec<_> = (0..10)
                .map(|_| {
                    let (rt, template) = (runtime.clone(), name.clone());
                    tokio::spawn(async move {
                        rt.create(CreateSpec {
                            template,
                            ..Default::default()
                        })
                        .await
                    })
                })
                .collect();
            let mut kids = Vec::new();
            for task in tasks {
                kids.push(task.await??);
            }
            forks.push(t.elapsed());
            for k in kids {
                runtime.destroy(k.id.as_str()).await?;
            }
            runtime.remove_template(&name, false)?;
        }
        rows.push(("fork of 10 (snapshot + 10 creates, total)".into(), forks));
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
