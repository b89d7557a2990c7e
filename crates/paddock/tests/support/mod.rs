//! What every integration test binary shares, whichever harness it uses (`common` for the
//! runtime, `server` for the API server; both include this module): bounded polling and
//! the loud skip of tests the host cannot run.

#![allow(dead_code, unreachable_pub)] // Each test binary uses a different subset.

pub mod pg;
pub mod rootfs;

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] and [`eventually_blocking`] look again.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// Polls `check` until it returns `Ok`, for at most `within`; returns its value. Past the
/// deadline it panics with `what` and the last `Err` it saw, so a timeout says what state
/// the test was stuck in.
pub async fn eventually<T, E, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {within:?}: {what} (last: {last})")
            }
            Err(_) => tokio::time::sleep(POLL_EVERY).await,
        }
    }
}

/// [`eventually`] for tests without an async runtime.
pub fn eventually_blocking<T, E, F>(within: Duration, what: &str, mut check: F) -> T
where
    E: Display,
    F: FnMut() -> Result<T, E>,
{
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {within:?}: {what} (last: {last})")
            }
            Err(_) => std::thread::sleep(POLL_EVERY),
        }
    }
}

/// `Ok(())` when `done`, else `Err(last)`: the shape [`eventually`] wants from a condition.
pub fn done_when(done: bool, last: impl Display) -> Result<(), String> {
    if done { Ok(()) } else { Err(last.to_string()) }
}

/// Whether this run must not skip anything: in CI (`CI` set, as `.ci/run` does).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Real sandboxes need root (namespaces, cgroups, btrfs, mounts). Without it, every test of
/// this binary is skipped loudly: one line on stderr saying why and how to enable them, and
/// the binary exits successfully before any test runs a sandbox. In CI the missing
/// privilege is a failure instead.
pub fn require_root(what: &str) {
    if rustix::process::geteuid().is_root() {
        return;
    }
    let msg = format!(
        "skipped: {what} needs root (namespaces, cgroups, btrfs, mounts); run the tests as \
         root, or in CI (CI=1 makes this a failure)"
    );
    if in_ci() {
        panic!("{msg}");
    }
    eprintln!("\n*** {msg} ***\n");
    std::process::exit(0);
}
