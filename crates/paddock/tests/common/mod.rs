//! Shared helpers for the integration tests: one real runtime per test binary, using the
//! real `paddock-agent` binary that cargo built for this package.

#![allow(dead_code, unreachable_pub)] // Each test binary uses a different subset.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use paddock_runtime::{CreateSpec, ExecRequest, ExecResult, Runtime, RuntimeConfig, Sandbox};

// A binary that uses both harnesses (network) gets two copies of it: harmless.
#[allow(clippy::duplicate_mod)]
#[path = "../support/mod.rs"]
mod support;
pub use support::*;

/// The runtime shared by every test in this binary. Its data directory is fixed per test
/// binary, so a crashed earlier run is reconciled (and cleaned) on the next one.
pub fn runtime() -> Arc<Runtime> {
    static RT: OnceLock<Arc<Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        require_root("this test binary (real sandboxes)");
        let name = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "it".into());
        let name = name.split('-').next().unwrap_or("it").to_owned();
        // PADDOCK_TEST_TAG keeps concurrent checkouts' test runs apart on one host.
        let tag = std::env::var("PADDOCK_TEST_TAG").unwrap_or_default();
        let iso = match isolation() {
            paddock_core::Isolation::Native => String::new(),
            i => format!("-{i}"),
        };
        let mut cfg = RuntimeConfig::new(PathBuf::from(format!(
            "/var/tmp/paddock-test-{name}{iso}{tag}"
        )));
        cfg.agent_bin = PathBuf::from(env!("CARGO_BIN_EXE_paddock-agent"));
        Runtime::open(cfg).expect("opening the test runtime")
    })
    .clone()
}

/// Creates a sandbox with default limits.
pub async fn sandbox() -> Arc<Sandbox> {
    create(CreateSpec::default()).await
}

pub async fn create(mut spec: CreateSpec) -> Arc<Sandbox> {
    if spec.isolation == paddock_core::Isolation::Native {
        spec.isolation = isolation();
    }
    runtime().create(spec).await.expect("creating sandbox")
}

/// The backend this run's sandboxes use: `PADDOCK_TEST_ISOLATION` (`native` or `gvisor`),
/// so one battery runs against both (`.ci/run`).
pub fn isolation() -> paddock_core::Isolation {
    std::env::var("PADDOCK_TEST_ISOLATION")
        .ok()
        .map(|s| s.parse().expect("PADDOCK_TEST_ISOLATION: native or gvisor"))
        .unwrap_or_default()
}

/// True (and says why, loudly) when this run is on gVisor and the test checks something
/// that does not apply there; `why` is the reason, also listed in `docs/isolation.md`.
pub fn not_on_gvisor(why: &str) -> bool {
    let skip = isolation() == paddock_core::Isolation::Gvisor;
    if skip {
        eprintln!("SKIP on gVisor: {why}");
    }
    skip
}

pub async fn destroy(s: &Sandbox) {
    runtime()
        .destroy(s.id.as_str())
        .await
        .expect("destroying sandbox");
}

/// Runs `script` with `/bin/bash -c` as `user` (None: the default user `user`).
pub async fn sh_as(s: &Sandbox, user: Option<&str>, script: &str) -> ExecResult {
    s.exec(ExecRequest {
        argv: vec!["/bin/bash".into(), "-c".into(), script.into()],
        user: user.map(str::to_owned),
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    })
    .await
    .expect("exec")
}

pub async fn sh(s: &Sandbox, script: &str) -> ExecResult {
    sh_as(s, None, script).await
}

pub async fn root(s: &Sandbox, script: &str) -> ExecResult {
    sh_as(s, Some("root"), script).await
}

pub fn out(r: &ExecResult) -> String {
    String::from_utf8_lossy(&r.stdout).into_owned()
}

pub fn err(r: &ExecResult) -> String {
    String::from_utf8_lossy(&r.stderr).into_owned()
}
