//! Start and exec latency of Paddock's native runtime, compared in the same run with
//! bubblewrap and crun doing `/bin/true` with a comparable setup.
//!
//! Run: `cargo bench -p paddock --bench runtime` (as root). `PADDOCK_BENCH_RUNS` sets the
//! number of runs per row (default 200). Prints a markdown table for `BENCHMARKS.md`.

#[allow(unreachable_pub, dead_code)]
mod common;

#[allow(unreachable_pub, dead_code)]
#[path = "../src/bench_external.rs"]
mod bench_external;

use common::{ms, pct};
use std::time::{Duration, Instant};

use paddock_runtime::{CreateSpec, ExecRequest, Runtime};

struct Row {
    name: String,
    p50: Duration,
    p99: Duration,
}

fn row(name: impl Into<String>, mut v: Vec<Duration>) -> Row {
    Row {
        name: name.into(),
        p50: pct(&mut v, 0.5),
        p99: pct(&mut v, 0.99),
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing to parse.
    let runs = common::runs(200);
    let rt = common::tokio()?;
    let runtime = Runtime::open(common::runtime_config("/var/tmp/paddock-bench"))?;
    let truecmd = || ExecRequest {
        argv: vec!["/bin/true".into()],
        ..Default::default()
    };

    let mut rows = Vec::new();
    rt.block_on(async {
        // Warm up page cache and the template.
        for _ in 0..10 {
            let s = runtime.create(CreateSpec::default()).await?;
            s.exec(truecmd()).await?;
            runtime.destroy(s.id.as_str()).await?;
        }
        let mut create = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t0 = Instant::now();
            let s = runtime.create(CreateSpec::default()).await?;
            let r = s.exec(truecmd()).await?;
            create.push(t0.elapsed());
            anyhow::ensure!(r.exit_code == Some(0), "true failed: {r:?}");
            runtime.destroy(s.id.as_str()).await?;
        }
        rows.push(row("paddock: create sandbox + run /bin/true", create));

        let s = runtime.create(CreateSpec::default()).await?;
        let mut exec = Vec::with_capacity(runs);
        for _ in 0..runs.max(200) {
            let t0 = Instant::now();
            s.exec(truecmd()).await?;
            exec.push(t0.elapsed());
        }
        rows.push(row("paddock: exec /bin/true in running sandbox", exec));
        let mut destroy = Vec::new();
        runtime.destroy(s.id.as_str()).await?;
        for _ in 0..runs.min(50) {
            let s = runtime.create(CreateSpec::default()).await?;
            let t0 = Instant::now();
            runtime.destroy(s.id.as_str()).await?;
            destroy.push(t0.elapsed());
        }
        rows.push(row("paddock: destroy sandbox", destroy));
        anyhow::Ok(())
    })?;

    for (label, make) in [
        (
            "bwrap",
            bench_external::External::bwrap as fn() -> anyhow::Result<bench_external::External>,
        ),
        ("crun", bench_external::External::crun),
    ] {
        match make() {
            Ok(ext) => {
                let mut v = Vec::with_capacity(runs);
                for _ in 0..runs {
                    v.push(ext.run_once()?);
                }
                rows.push(row(
                    format!("{}: /bin/true in a new sandbox", ext.name()),
                    v,
                ));
            }
            Err(e) => println!("{label}: skipped ({e:#})"),
        }
    }

    let base = rows[0].p50;
    println!(
        "\n{runs} runs per row, {} cores\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| what | p50 | p99 | p50 vs paddock create |");
    println!("|---|---|---|---|");
    for r in &rows {
        let ratio = r.p50.as_secs_f64() / base.as_secs_f64();
        println!(
            "| {} | {} | {} | {:.2}x |",
            r.name,
            ms(r.p50),
            ms(r.p99),
            ratio
        );
    }
    Ok(())
}
