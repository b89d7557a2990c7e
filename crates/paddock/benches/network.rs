//! Sandbox networking: create latency by network mode, and egress throughput and connect
//! latency through a sandbox's link (veth, nftables, NAT) against the same client on the
//! host, to the fake internet of `tests/fakenet` (nothing leaves the machine).
//!
//! Run: `cargo bench -p paddock --bench network` (as root, with `nft`). `PADDOCK_BENCH_RUNS`
//! sets the create runs per mode (default 50). Prints markdown tables for `BENCHMARKS.md`.

#[allow(unreachable_pub, dead_code)]
mod common;

#[allow(unreachable_pub, dead_code)]
#[path = "../src/bench_external.rs"]
mod bench_external;
#[path = "../tests/fakenet/mod.rs"]
mod fakenet;

use common::pct;
use std::time::{Duration, Instant};

use paddock_core::{NetworkMode, NetworkPolicy};
use paddock_runtime::{CreateSpec, ExecRequest, Runtime};

/// Measures, from wherever it runs: MB/s of a 512 MiB download and the p50/p99 of 300 TCP
/// connects (each with a 1-byte request and reply).
const CLIENT: &str = r#"
import socket, time, json
n = 512 << 20
t = time.perf_counter()
s = socket.create_connection(("198.51.100.1", 9000)); s.sendall(b"%d\n" % n)
got = 0
while True:
    b = s.recv(1 << 20)
    if not b: break
    got += len(b)
dt = time.perf_counter() - t
lat = []
for _ in range(300):
    t = time.perf_counter()
    c = socket.create_connection(("198.51.100.1", 9000)); c.sendall(b"1\n"); c.recv(1); c.close()
    lat.append(time.perf_counter() - t)
lat.sort()
print(json.dumps({"mbps": got / dt / 1e6, "p50": lat[150] * 1e3, "p99": lat[296] * 1e3, "bytes": got}))
"#;

fn main() -> anyhow::Result<()> {
    let runs = common::runs(50);
    let fake = fakenet::FakeNet::up();
    let rt = common::tokio()?;
    let mut cfg = common::runtime_config("/var/tmp/paddock-bench-network");
    cfg.dns_upstream = Some("198.51.100.1:53".parse()?);
    // Without the stock of network slots: each networked create makes its namespace and
    // link itself (what a create costs once the stock is empty).
    let cold_runtime = Runtime::open(cfg.clone())?;
    // With the server's default stock (`--net-slots 4`).
    let mut cfg = common::runtime_config("/var/tmp/paddock-bench-network-stock");
    cfg.dns_upstream = Some("198.51.100.1:53".parse()?);
    cfg.net_slots = 4;
    let runtime = Runtime::open(cfg)?;
    let truecmd = || ExecRequest {
        argv: vec!["/bin/true".into()],
        ..Default::default()
    };

    println!("| create + first `/bin/true`, by network mode | p50 | p99 | p50 vs bwrap |");
    println!("|---|---|---|---|");
    // Cold bubblewrap and crun in the same run: the machine-independent yardsticks.
    let mut bwrap_p50 = None;
    let mut external = Vec::new();
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
                let (p50, p99) = (pct(&mut v, 0.5), pct(&mut v, 0.99));
                if label == "bwrap" {
                    bwrap_p50 = Some(p50);
                }
                external.push((format!("{} `/bin/true` (cold)", ext.name()), p50, p99));
            }
            Err(e) => println!("{label}: skipped ({e:#})"),
        }
    }
    let vs_bwrap = |p50: Duration| {
        bwrap_p50.map_or("(no bwrap)".to_owned(), |b| {
            format!("{:.2}×", p50.as_secs_f64() / b.as_secs_f64())
        })
    };
    let policies = [
        ("none", NetworkPolicy::none()),
        ("all", NetworkPolicy::all()),
        (
            "allow (2 names, 1 CIDR)",
            NetworkPolicy::new(
                NetworkMode::Allow,
                &[
                    "allowed.test".into(),
                    "*.wild.test".into(),
                    "198.51.100.0/24".into(),
                ],
            )
            .map_err(anyhow::Error::msg)?,
        ),
    ];
    let cold_all = ("all, no network slot stock", NetworkPolicy::all());
    let rows: Vec<(&str, &NetworkPolicy, &std::sync::Arc<Runtime>)> = policies
        .iter()
        .map(|(n, p)| (*n, p, &runtime))
        .chain([(cold_all.0, &cold_all.1, &cold_runtime)])
        .collect();
    // A full stock to start from, as after any idle moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    while runtime.net_slot_stats().ready < runtime.net_slot_stats().target
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    // The rows take turns, one create each per round, so a change in the machine's load
    // (other builds on these cores) weighs on all of them alike and their ratios hold.
    let mut times = vec![Vec::with_capacity(runs); rows.len()];
    let mut stock = vec![(0u64, 0u64); rows.len()];
    for _ in 0..runs {
        for (i, (_, p, runtime)) in rows.iter().enumerate() {
            let before = runtime.net_slot_stats();
            let t = Instant::now();
            let s = rt.block_on(runtime.create(CreateSpec {
                network: (*p).clone(),
                ..CreateSpec::default()
            }))?;
            rt.block_on(s.exec(truecmd()))?;
            times[i].push(t.elapsed());
            let after = runtime.net_slot_stats();
            stock[i].0 += after.hits - before.hits;
            stock[i].1 += after.misses - before.misses;
            rt.block_on(runtime.destroy(s.id.as_str()))?;
        }
    }
    let mut base = None;
    for (i, (name, p, runtime)) in rows.iter().enumerate() {
        let v = &mut times[i];
        let (p50, p99) = (pct(v, 0.5), pct(v, 0.99));
        let ratio = base.map_or(String::new(), |b: Duration| {
            format!(" ({:.2}×)", p50.as_secs_f64() / b.as_secs_f64())
        });
        base.get_or_insert(p50);
        let stock = if runtime.net_slot_stats().target == 0 || p.mode == NetworkMode::None {
            String::new()
        } else {
            format!(
                " (network slots: {} hits, {} misses)",
                stock[i].0, stock[i].1
            )
        };
        println!(
            "| {name}{stock} | {:.2} ms{ratio} | {:.2} ms | {} |",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            vs_bwrap(p50)
        );
    }
    let st = runtime.net_slot_stats();
    if st.prepared > 0 {
        println!(
            "| preparing one network slot (namespace, loopback, veth, addresses, route; in the background at nice 10), mean of {} | {:.2} ms | | |",
            st.prepared,
            st.prepare_time.as_secs_f64() * 1e3 / st.prepared as f64
        );
    }
    for (name, p50, p99) in &external {
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {} |",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            vs_bwrap(*p50)
        );
    }

    // The same client on the host (direct) and in a sandbox in mode `all` (veth, nftables
    // forward chain and set lookups, NAT).
    let host = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(CLIENT)
        .output()?;
    let host: serde_json::Value = serde_json::from_slice(&host.stdout)?;
    let s = rt.block_on(runtime.create(CreateSpec {
        network: NetworkPolicy::all(),
        ..CreateSpec::default()
    }))?;
    let r = rt.block_on(s.exec(ExecRequest {
        argv: vec!["python3".into(), "-c".into(), CLIENT.into()],
        timeout: Some(Duration::from_secs(300)),
        ..Default::default()
    }))?;
    rt.block_on(runtime.destroy(s.id.as_str()))?;
    let sbx: serde_json::Value = serde_json::from_slice(&r.stdout)
        .map_err(|e| anyhow::anyhow!("{e}: {}", String::from_utf8_lossy(&r.stderr)))?;
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!();
    println!("| egress to the fake internet | host (direct) | sandbox, mode all | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| 512 MiB download | {:.0} MB/s | {:.0} MB/s | {:.2}× |",
        f(&host, "mbps"),
        f(&sbx, "mbps"),
        f(&sbx, "mbps") / f(&host, "mbps")
    );
    for k in ["p50", "p99"] {
        println!(
            "| TCP connect + 1-byte round trip, {k} | {:.3} ms | {:.3} ms | {:.2}× |",
            f(&host, k),
            f(&sbx, k),
            f(&sbx, k) / f(&host, k)
        );
    }
    // The stock's namespaces, links and uid claims go with the runtime.
    runtime.close()?;
    cold_runtime.close()?;
    drop(fake);
    Ok(())
}
