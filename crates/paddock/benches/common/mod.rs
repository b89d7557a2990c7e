//! What the benches share: the run count (`PADDOCK_BENCH_RUNS`), percentiles and their
//! formatting, a native runtime on a bench data directory, and the server the HTTP benches
//! time (`PADDOCK_URL`, `PADDOCK_API_KEY`), and CPU time by process and by sandbox. Each bench
//! includes it with `mod common;` and uses what it needs.

use std::path::PathBuf;
use std::time::Duration;

use paddock_runtime::RuntimeConfig;
use serde_json::Value;

/// `PADDOCK_BENCH_RUNS`, or `default`.
pub fn runs(default: usize) -> usize {
    std::env::var("PADDOCK_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile (0 to 1) of `v`, which it sorts; `v` must not be empty.
pub fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// `d` in milliseconds, two decimals, for the markdown tables.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// CPU time of every live thread of process `pid` (`schedstat`, nanoseconds): a process's own
/// cost, which the machine's load does not inflate as it does wall time.
pub fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU time of process `pid` including its threads that have ended (`/proc/PID/stat`'s
/// `utime` + `stime`, nanoseconds, at the clock-tick resolution of 10 ms): for a process
/// whose threads come and go, such as `python3 -m http.server`'s thread per request, whose
/// time [`cpu_ns`] would lose.
pub fn process_cpu_ns(pid: u32) -> u64 {
    // USER_HZ, the unit of these fields, is 100 on every architecture Linux runs us on.
    const TICK_NS: u64 = 10_000_000;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after it start at `) `.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15, i.e. the 12th and 13th after the name.
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) * TICK_NS
}

/// CPU time charged to sandbox `id`'s cgroup (nanoseconds): its agent and every process it
/// started, whichever cgroup layout the host has.
pub fn sandbox_cpu_ns(id: &str) -> u64 {
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).ok();
    for (ctl, file) in [("cpuacct", "cpuacct.usage"), ("", "cpu.stat")] {
        let base = std::path::Path::new("/sys/fs/cgroup")
            .join(ctl)
            .join("paddock");
        for inst in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let Some(text) = read(inst.path().join(id).join(file)) else {
                continue;
            };
            return match file {
                "cpu.stat" => text
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
                    .map_or(0, |us| us * 1000),
                _ => text.trim().parse().unwrap_or(0),
            };
        }
    }
    0
}

/// The Tokio runtime the runtime benches drive: two workers, like the CI machine's cores.
pub fn tokio() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// A runtime configuration on the data directory `data` with this build's agent.
pub fn runtime_config(data: &str) -> RuntimeConfig {
    let mut cfg = RuntimeConfig::new(PathBuf::from(data));
    cfg.agent_bin = PathBuf::from(env!("CARGO_BIN_EXE_paddock-agent"));
    cfg
}

/// The server an HTTP bench times.
pub struct Target {
    pub http: reqwest::Client,
    /// The base URL, without a trailing `/`.
    pub url: String,
    pub key: String,
}

/// The server named by `PADDOCK_URL` and `PADDOCK_API_KEY`; without them, `None` after
/// saying that bench `name` was skipped.
pub fn target(name: &str) -> Option<Target> {
    let (Ok(url), Ok(key)) = (
        std::env::var("PADDOCK_URL"),
        std::env::var("PADDOCK_API_KEY"),
    ) else {
        eprintln!("{name} bench: set PADDOCK_URL and PADDOCK_API_KEY (skipped)");
        return None;
    };
    Some(Target {
        http: reqwest::Client::new(),
        url: url.trim_end_matches('/').to_string(),
        key,
    })
}

impl Target {
    /// `POST /v1/sandboxes` with `body`: the new sandbox's id.
    pub async fn create(&self, body: &Value) -> anyhow::Result<String> {
        let v: Value = self
            .http
            .post(format!("{}/v1/sandboxes", self.url))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(v["id"].as_str().unwrap_or_default().to_string())
    }
}
