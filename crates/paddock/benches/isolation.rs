//! Native against gVisor in the same run (`docs/isolation.md`): create → first command, exec
//! round trip and file transfer through the agent, on the same template and limits.
//!
//! Run: `cargo bench -p paddock --bench isolation` (as root, with `runsc` installed).
//! `PADDOCK_BENCH_RUNS` sets the runs of the create and exec rows (default 40 and 5×
//! that); each transfer row moves 64 MiB 5 times. Prints a markdown table for
//! `BENCHMARKS.md`.

#[allow(unreachable_pub, dead_code)]
mod common;

use common::pct;
use std::time::{Duration, Instant};

use paddock_core::Isolation;
use paddock_runtime::{CreateSpec, ExecRequest, Runtime};

/// p50 and p99 of `v` in milliseconds.
fn p50_p99(mut v: Vec<Duration>) -> (f64, f64) {
    (
        pct(&mut v, 0.5).as_secs_f64() * 1e3,
        pct(&mut v, 0.99).as_secs_f64() * 1e3,
    )
}

const TRANSFER: usize = 64 << 20;

fn main() -> anyhow::Result<()> {
    let runs = common::runs(40);
    let rt = common::tokio()?;
    let runtime = Runtime::open(common::runtime_config("/var/tmp/paddock-bench-isolation"))?;
    anyhow::ensure!(
        runtime.gvisor_available(),
        "runsc is not installed (apt-get install runsc)"
    );
    let truecmd = || ExecRequest {
        argv: vec!["/bin/true".into()],
        ..Default::default()
    };
    // (what, [native p50/p99, gvisor p50/p99]) in ms, or MB/s for transfers.
    let mut rows: Vec<(&str, Vec<(f64, f64)>)> = vec![
        ("create + first `/bin/true`", vec![]),
        ("exec round trip (`/bin/true`)", vec![]),
        ("upload 64 MiB (write_file), MB/s", vec![]),
        ("download 64 MiB (read_file), MB/s", vec![]),
    ];
    rt.block_on(async {
        for iso in [Isolation::Native, Isolation::Gvisor] {
            let spec = || CreateSpec {
                isolation: iso,
                ..Default::default()
            };
            for _ in 0..3 {
                let s = runtime.create(spec()).await?;
                s.exec(truecmd()).await?;
                runtime.destroy(s.id.as_str()).await?;
            }
            let mut create = Vec::with_capacity(runs);
            for _ in 0..runs {
                let t0 = Instant::now();
                let s = runtime.create(spec()).await?;
                let r = s.exec(truecmd()).await?;
                create.push(t0.elapsed());
                anyhow::ensure!(r.exit_code == Some(0), "true failed: {r:?}");
                runtime.destroy(s.id.as_str()).await?;
            }
            rows[0].1.push(p50_p99(create));
            let s = runtime.create(spec()).await?;
            let mut exec = Vec::new();
            for _ in 0..runs * 5 {
                let t0 = Instant::now();
                s.exec(truecmd()).await?;
                exec.push(t0.elapsed());
            }
            rows[1].1.push(p50_p99(exec));
            let data: Vec<u8> = (0..TRANSFER).map(|i| (i % 251) as u8).collect();
            let (mut up, mut down) = (Vec::new(), Vec::new());
            for _ in 0..5 {
                let t0 = Instant::now();
                s.write_file("/tmp/blob", data.clone(), None).await?;
                up.push(t0.elapsed());
                let t0 = Instant::now();
                let got = s.read_file("/tmp/blob", None).await?;
                down.push(t0.elapsed());
                anyhow::ensure!(got.len() == TRANSFER, "short read");
            }
            let rate = |v: Vec<Duration>| {
                let (p50, worst) = p50_p99(v);
                let mbs = |ms: f64| TRANSFER as f64 / 1e6 / (ms / 1e3);
                (mbs(p50), mbs(worst))
            };
            rows[2].1.push(rate(up));
            rows[3].1.push(rate(down));
            runtime.destroy(s.id.as_str()).await?;
        }
        anyhow::Ok(())
    })?;
    println!(
        "\n{runs} creates, {} execs, 5 transfers per backend; {} cores\n",
        runs * 5,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| what | native p50 | native p99 | gvisor p50 | gvisor p99 | gvisor / native (p50) |"
    );
    println!("|---|---|---|---|---|---|");
    for (what, v) in &rows {
        let unit = if what.ends_with("MB/s") { "MB/s" } else { "ms" };
        let ratio = if unit == "ms" {
            v[1].0 / v[0].0
        } else {
            v[0].0 / v[1].0
        };
        println!(
            "| {what} | {:.2} {unit} | {:.2} {unit} | {:.2} {unit} | {:.2} {unit} | {ratio:.2}× slower |",
            v[0].0, v[0].1, v[1].0, v[1].1
        );
    }
    Ok(())
}
