//! Density and create throughput (issue 17), over the REST API of a real `paddock serve`:
//!
//! 1. **Idle sandboxes.** `PADDOCK_BENCH_IDLE` (default 1,000) `base` sandboxes, made by 8
//!    clients and left idle, and what they cost the host, measured two ways in one run:
//!    - *attributable*: the sum of the sandboxes' memory cgroup charges
//!      (`memory.usage_in_bytes`, which on cgroup v1 includes the kernel memory charged to
//!      them: page tables, slabs of their namespaces and mounts, socket buffers) plus the
//!      growth of the server's own memory cgroup (the bench moves the server into one: its
//!      RSS, and the page cache and kernel objects of what it makes per sandbox). Other
//!      processes on the machine do not move it.
//!    - *host*: the drop of `MemAvailable` over the same interval. It also sees what is
//!      charged nowhere (the btrfs subvolume's metadata, the runtime's files) but moves
//!      with every other process on the machine.
//!
//!    And the agent itself: processes, threads and RSS per sandbox (PID 1 is the whole of
//!    an idle sandbox). The agent is this build's `paddock-agent`, or `PADDOCK_BENCH_AGENT`
//!    (the release agent as shipped, for a dev-build bench run).
//! 2. **Sustained creates.** 8 clients, each in a loop of create → delete for
//!    `PADDOCK_BENCH_SECS` (default 10) seconds: cold (no pool), then from a warm pool of
//!    `base` (`PUT /v1/pools/base`, `PADDOCK_BENCH_POOL`, default 64, the most a pool
//!    holds), filled before the clock starts. Creates per second, the create's p50/p99,
//!    and the pool's hits and misses over the interval. bubblewrap runs `/bin/true` from 8
//!    threads for the same time, so creates/s has a ratio that does not depend on how
//!    busy the machine is.
//!
//! Run (as root): `cargo bench -p paddock --bench density` (release) or
//! `PADDOCK_BENCH_IDLE=200 PADDOCK_BENCH_SECS=5 cargo test -p paddock --bench density`
//! (dev build). Prints markdown tables for `BENCHMARKS.md`.

#[allow(unreachable_pub, dead_code)]
#[path = "../src/bench_external.rs"]
mod bench_external;
#[allow(unreachable_pub, dead_code)]
mod common;
#[path = "../tests/server/mod.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ms, pct};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::{Server, call};

const CLIENTS: usize = 8;
const MIB: f64 = 1024.0 * 1024.0;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `Key: <n> kB` line of a `/proc` file, in bytes.
fn proc_kb(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn read_u64(p: &Path) -> u64 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time of process `pid` from `/proc/<pid>/stat`: (its own, its reaped children's).
fn cpu_of(pid: &str) -> (Duration, Duration) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let tick = Duration::from_secs(1) / 100; // USER_HZ on Linux
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    (
        tick * (at(11) + at(12)) as u32,
        tick * (at(13) + at(14)) as u32,
    )
}

/// CPU time charged to every sandbox of the server since it started (cgroup v1 `cpuacct`
/// charges each ancestor too, so deleted sandboxes' time stays in their parent).
fn sandboxes_cpu(s: &Server) -> Duration {
    let instance = std::fs::read_to_string(s.data.join("instance")).expect("instance name");
    Duration::from_nanos(read_u64(
        &Path::new("/sys/fs/cgroup/cpuacct/paddock")
            .join(instance.trim())
            .join("cpuacct.usage"),
    ))
}

/// The CPU spent on a phase, in three places (which can overlap: a sandbox process the
/// server reaps is counted in the second and the third).
#[derive(Clone, Copy, Default)]
struct Cpu {
    server: Duration,
    server_children: Duration,
    sandboxes: Duration,
}

fn cpu_now(s: &Server) -> Cpu {
    let (server, server_children) = cpu_of(&s.pid().expect("server pid").to_string());
    Cpu {
        server,
        server_children,
        sandboxes: sandboxes_cpu(s),
    }
}

impl Cpu {
    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            server: self.server.saturating_sub(before.server),
            server_children: self.server_children.saturating_sub(before.server_children),
            sandboxes: self.sandboxes.saturating_sub(before.sandboxes),
        }
    }

    /// "server / reaped children / sandboxes' cgroups" per one of `n`, in ms.
    fn per(self, n: usize) -> String {
        let each = |d: Duration| d.as_secs_f64() * 1000.0 / n.max(1) as f64;
        format!(
            "{:.2} / {:.2} / {:.2} ms",
            each(self.server),
            each(self.server_children),
            each(self.sandboxes)
        )
    }
}

/// The memory cgroup directory of this server's sandboxes (`memory/paddock/<instance>`).
fn memcg_dir(s: &Server) -> PathBuf {
    let instance = std::fs::read_to_string(s.data.join("instance")).expect("instance name");
    PathBuf::from("/sys/fs/cgroup/memory/paddock").join(instance.trim())
}

/// What the idle sandboxes' cgroups hold, summed over `ids`.
#[derive(Default)]
struct Charge {
    usage: u64,
    kmem: u64,
    procs: u64,
    threads: u64,
    rss: u64,
}

fn charge(dir: &Path, ids: &[String]) -> Charge {
    let mut c = Charge::default();
    for id in ids {
        let d = dir.join(id);
        c.usage += read_u64(&d.join("memory.usage_in_bytes"));
        c.kmem += read_u64(&d.join("memory.kmem.usage_in_bytes"));
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace() {
            let status = format!("/proc/{pid}/status");
            c.procs += 1;
            c.rss += proc_kb(&status, "VmRSS:");
            c.threads += std::fs::read_to_string(&status)
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    c
}

/// A memory cgroup of its own for the server (`memory/paddock-bench-<pid>`), so what the
/// server's work charges (its RSS, the page cache and kernel objects of the subvolumes,
/// records and cgroup directories it makes) is counted apart from the rest of the machine.
/// The sandboxes' own cgroups are elsewhere (`memory/paddock/<instance>`), so nothing is
/// counted twice. Removed (the server moved back to the root) when dropped.
struct ServerCgroup {
    dir: PathBuf,
    pid: u32,
}

impl ServerCgroup {
    fn new(pid: u32) -> ServerCgroup {
        let dir = PathBuf::from(format!("/sys/fs/cgroup/memory/paddock-bench-{pid}"));
        std::fs::create_dir(&dir).expect("server's memory cgroup");
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).expect("moving the server");
        ServerCgroup { dir, pid }
    }

    fn usage(&self) -> u64 {
        read_u64(&self.dir.join("memory.usage_in_bytes"))
    }
}

impl Drop for ServerCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write("/sys/fs/cgroup/memory/cgroup.procs", self.pid.to_string());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

async fn create(s: &Server) -> (String, Duration) {
    let t0 = Instant::now();
    let v = s.create(json!({"timeout": 3600})).await;
    (v["id"].as_str().expect("id").to_owned(), t0.elapsed())
}

async fn delete(s: &Server, id: &str) -> Duration {
    let t0 = Instant::now();
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    t0.elapsed()
}

async fn pool(s: &Server) -> Value {
    call(s.req(Method::GET, "/v1/pools/base")).await.1
}

/// Makes `n` sandboxes with [`CLIENTS`] clients; their ids.
async fn make_idle(s: &Arc<Server>, n: usize) -> Vec<String> {
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let s = s.clone();
        let mine = n / CLIENTS + usize::from(c < n % CLIENTS);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(mine);
            for _ in 0..mine {
                ids.push(create(&s).await.0);
            }
            ids
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for t in tasks {
        ids.extend(t.await.expect("creator"));
    }
    ids
}

/// Samples `f` every 500 ms until two samples differ by under 1% (at most 20 s): the value
/// once the sandboxes' start-up has settled.
async fn settled(mut f: impl FnMut() -> u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = f();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = f();
        if now.abs_diff(last) * 100 <= last.max(1) || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// The result of one sustained-create run.
struct Sustained {
    creates: usize,
    cpu: Cpu,
    secs: f64,
    create: Vec<Duration>,
    delete: Vec<Duration>,
}

/// [`CLIENTS`] clients, each creating and deleting in a loop for `secs`.
async fn sustained(s: &Arc<Server>, secs: u64) -> Sustained {
    let cpu0 = cpu_now(s);
    let t0 = Instant::now();
    let stop_at = t0 + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let (mut c, mut d) = (Vec::new(), Vec::new());
            while Instant::now() < stop_at {
                let (id, took) = create(&s).await;
                c.push(took);
                d.push(delete(&s, &id).await);
            }
            (c, d)
        }));
    }
    let (mut create, mut delete) = (Vec::new(), Vec::new());
    for t in tasks {
        let (c, d) = t.await.expect("client");
        create.extend(c);
        delete.extend(d);
    }
    Sustained {
        creates: create.len(),
        cpu: cpu_now(s).since(cpu0),
        secs: t0.elapsed().as_secs_f64(),
        create,
        delete,
    }
}

/// bubblewrap's `/bin/true` from [`CLIENTS`] threads for `secs`: runs per second.
fn bwrap_rate(secs: u64) -> Result<(String, f64, Duration), String> {
    let ext = bench_external::External::bwrap().map_err(|e| format!("{e:#}"))?;
    let (_, children0) = cpu_of("self");
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let t0 = Instant::now();
    let n: usize = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..CLIENTS)
            .map(|_| {
                sc.spawn(|| {
                    let mut n = 0;
                    while Instant::now() < stop_at {
                        ext.run_once().expect("bwrap /bin/true");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("bwrap thread"))
            .sum()
    });
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    let (_, children) = cpu_of("self");
    Ok((
        ext.name().to_owned(),
        rate,
        children.saturating_sub(children0) / n.max(1) as u32,
    ))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let idle = env_usize("PADDOCK_BENCH_IDLE", 1000);
    let secs = env_usize("PADDOCK_BENCH_SECS", 10) as u64;
    let pool_size = env_usize("PADDOCK_BENCH_POOL", 64);
    let agent = std::env::var("PADDOCK_BENCH_AGENT")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_paddock-agent").to_owned());
    let build = if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_owned();
    println!(
        "density bench: {build} build, load average {load} at start, agent {agent} ({:.1} MiB)",
        std::fs::metadata(&agent).map_or(0, |m| m.len()) as f64 / MIB
    );
    let s = Arc::new(Server::start_with_env(
        &[
            "--rate",
            "1000000",
            "--rate-burst",
            "1000000",
            "--max-sandboxes-per-key",
            "5000",
        ],
        false,
        &[("PADDOCK_AGENT_BIN", &agent)],
    ));
    let server_pid = s.pid().expect("server pid");
    let server_status = format!("/proc/{server_pid}/status");
    let server_cg = ServerCgroup::new(server_pid);
    let memcg = memcg_dir(&s);

    // Warm up: the first create fills the runtime's caches, the first delete its paths.
    let (id, _) = create(&s).await;
    delete(&s, &id).await;

    // 1. Idle sandboxes.
    let avail0 = proc_kb("/proc/meminfo", "MemAvailable:");
    let rss0 = proc_kb(&server_status, "VmRSS:");
    let cg0 = server_cg.usage();
    let t0 = Instant::now();
    let ids = make_idle(&s, idle).await;
    let made_in = t0.elapsed();
    let usage = settled(|| charge(&memcg, &ids).usage).await;
    let c = charge(&memcg, &ids);
    let rss_growth = proc_kb(&server_status, "VmRSS:").saturating_sub(rss0);
    let server_growth = server_cg.usage().saturating_sub(cg0);
    let host = avail0.saturating_sub(proc_kb("/proc/meminfo", "MemAvailable:"));
    let n = idle as f64;
    let each = |b: u64| format!("{:.3} MiB", b as f64 / MIB / n);
    let total = |b: u64| format!("{:.0} MiB", b as f64 / MIB);
    let idle_rows = [
        (
            "sandboxes' cgroups: `memory.usage_in_bytes`, summed".to_owned(),
            each(usage),
            total(usage),
            "",
        ),
        (
            "… of which kernel (`memory.kmem.usage_in_bytes`)".to_owned(),
            each(c.kmem),
            total(c.kmem),
            "",
        ),
        (
            "server's own memory cgroup: growth (its RSS, page cache and kernel objects it made: subvolumes, records, cgroup directories)".to_owned(),
            each(server_growth),
            total(server_growth),
            "",
        ),
        (
            "… of which server RSS growth".to_owned(),
            each(rss_growth),
            total(rss_growth),
            "",
        ),
        (
            "**attributable: sandboxes' cgroups + server's cgroup growth**".to_owned(),
            format!("**{}**", each(usage + server_growth)),
            total(usage + server_growth),
            "≤ 1 MiB",
        ),
        (
            "host: `MemAvailable` drop (moves with other processes)".to_owned(),
            each(host),
            total(host),
            "≤ 1 MiB",
        ),
        (
            format!(
                "agent: {:.2} processes, {:.2} threads per sandbox; RSS (shared pages counted each time)",
                c.procs as f64 / n,
                c.threads as f64 / n
            ),
            each(c.rss),
            total(c.rss),
            "",
        ),
    ];
    println!();
    println!(
        "{idle} idle `base` sandboxes, made by {CLIENTS} clients in {:.1} s ({:.0}/s):",
        made_in.as_secs_f64(),
        n / made_in.as_secs_f64()
    );
    println!();
    println!("| idle sandboxes | per sandbox | total | target |");
    println!("|---|---|---|---|");
    for (a, b, c, d) in &idle_rows {
        println!("| {a} | {b} | {c} | {d} |");
    }
    // Deleted by the same 8 clients.
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for part in ids.chunks(ids.len().div_ceil(CLIENTS).max(1)) {
        let s = s.clone();
        let part = part.to_vec();
        tasks.push(tokio::spawn(async move {
            for id in part {
                delete(&s, &id).await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    println!(
        "\n({idle} deleted by {CLIENTS} clients in {:.1} s.)",
        t0.elapsed().as_secs_f64()
    );

    // 2. Sustained creates: cold, then from a warm pool, then bubblewrap.
    let mut rows: Vec<(String, String, String, String, String)> = Vec::new();
    let mut row = |name: String, r: &mut Sustained, extra: String| {
        let rate = r.creates as f64 / r.secs;
        rows.push((
            name,
            format!("{rate:.0}/s"),
            r.cpu.per(r.creates),
            format!(
                "{} / {}",
                ms(pct(&mut r.create, 0.5)),
                ms(pct(&mut r.create, 0.99))
            ),
            format!("{} {extra}", ms(pct(&mut r.delete, 0.5))),
        ));
        rate
    };
    let mut cold = sustained(&s, secs).await;
    let cold_rate = row("cold (no pool)".into(), &mut cold, String::new());

    let (st, v) = call(
        s.req(Method::PUT, "/v1/pools/base")
            .json(&json!({"size": pool_size})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let deadline = Instant::now() + Duration::from_secs(600);
    while pool(&s).await["ready"].as_u64().unwrap_or(0) < pool_size as u64 {
        assert!(Instant::now() < deadline, "pool never filled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let p0 = pool(&s).await;
    let mut pooled = sustained(&s, secs).await;
    let p1 = pool(&s).await;
    let d = |k: &str| p1[k].as_u64().unwrap_or(0) - p0[k].as_u64().unwrap_or(0);
    let (hits, misses) = (d("hits"), d("misses"));
    let pooled_rate = row(
        format!("warm pool of {pool_size} (full at the start)"),
        &mut pooled,
        format!(
            "; hits {hits}, misses {misses} ({:.0}% hits)",
            100.0 * hits as f64 / (hits + misses).max(1) as f64
        ),
    );
    let (st, _) = call(s.req(Method::DELETE, "/v1/pools/base")).await;
    assert_eq!(st, StatusCode::NO_CONTENT);

    let bwrap = tokio::task::spawn_blocking(move || bwrap_rate(secs)).await?;
    println!();
    println!(
        "Sustained creates: {CLIENTS} clients, each create → delete in a loop for {secs} s ({build} build, load average {} at the end):",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
    );
    println!();
    println!(
        "| creates | creates/s | CPU per create + delete: server / its reaped children / sandboxes' cgroups | create p50 / p99 | delete p50; pool | target |"
    );
    println!("|---|---|---|---|---|---|");
    for (a, b, cpu, c, d) in &rows {
        println!("| {a} | {b} | {cpu} | {c} | {d} | ≥ 300/s |");
    }
    match bwrap {
        Ok((name, rate, cpu)) => println!(
            "| {name} `/bin/true`, {CLIENTS} threads | {rate:.0}/s (paddock cold {:.2}×, pooled {:.2}× of this) | {:.2} ms per run | | | |",
            cold_rate / rate,
            pooled_rate / rate,
            cpu.as_secs_f64() * 1000.0
        ),
        Err(e) => println!("| bwrap (skipped: {e}) | | | | | |"),
    }
    println!(
        "\nCPU columns: the server process itself; the processes it started and reaped (setup stages, agents); the sandboxes' `cpuacct` cgroups (the setup stage once in its cgroup, the agent). The last two overlap; kernel threads' share (namespace cleanup, btrfs transactions) is in none of them."
    );
    Ok(())
}
