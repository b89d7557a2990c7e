//! What the benches share: the run count (`PADDOCK_BENCH_RUNS`), percentiles and their
//! formatting, a native runtime on a bench data directory, and the server the HTTP benches
//! time (`PADDOCK_URL`, `PADDOCK_API_KEY`). Each bench includes it with `mod common;` and
//! uses what it needs.

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
