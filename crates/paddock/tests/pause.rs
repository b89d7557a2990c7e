//! Pause and resume in the runtime: real sandboxes, both modes (`docs/persistence.md`).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use paddock_runtime::{CreateSpec, PauseMode, RuntimeError};

/// The counter a background loop writes once every 20 ms, read from the host side of the
/// writable layer (a frozen agent cannot be asked).
fn counter(s: &paddock_runtime::Sandbox) -> u64 {
    std::fs::read_to_string(s.dir.join("upper/home/user/count"))
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(0)
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Bytes charged to the sandbox's memory cgroup (v1 or v2), read from the host.
fn cgroup_memory(s: &paddock_runtime::Sandbox) -> u64 {
    for d in s.cgroup_dirs() {
        for f in ["memory.usage_in_bytes", "memory.current"] {
            if let Ok(v) = std::fs::read_to_string(d.join(f)) {
                return v.trim().parse().unwrap_or(0);
            }
        }
    }
    panic!("no memory cgroup for {}", s.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_pause_freezes_and_resume_carries_on_counting() {
    let rt = runtime();
    let s = sandbox().await;
    let r = sh(
        &s,
        "nohup bash -c 'i=0; while :; do i=$((i+1)); echo $i > /home/user/count.tmp; mv /home/user/count.tmp /home/user/count; sleep 0.02; done' >/dev/null 2>&1 & echo started",
    )
    .await;
    assert_eq!(out(&r), "started\n");
    wait_for("the counter to start", || counter(&s) > 3).await;
    rt.pause(s.id.as_str(), PauseMode::Full).await.unwrap();
    assert_eq!(rt.paused_mode(s.id.as_str()), Some(PauseMode::Full));
    let frozen_at = counter(&s);
    // Still frozen half a second later: nothing ran (bounded observation, not a sync sleep).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counter(&s), frozen_at, "a frozen sandbox ran");
    // A second pause is refused, whatever its mode name says about memory.
    let e = rt.pause(s.id.as_str(), PauseMode::Full).await.unwrap_err();
    assert!(matches!(e, RuntimeError::AlreadyPaused { .. }), "{e:?}");
    let s2 = rt.resume(s.id.as_str(), false).await.unwrap();
    assert_eq!(s2.pid, s.pid, "full resume keeps PID 1");
    wait_for("the counter to carry on", || counter(&s) > frozen_at + 3).await;
    // Resuming a running sandbox is a no-op.
    let s3 = rt.resume(s.id.as_str(), false).await.unwrap();
    assert_eq!(s3.pid, s.pid);
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem_pause_frees_memory_and_keeps_files_and_env() {
    let rt = runtime();
    let s = create(CreateSpec {
        env: BTreeMap::from([("SECRET_ENV".to_owned(), "kept".to_owned())]),
        ..Default::default()
    })
    .await;
    // 64 MiB held by a process, 32 MiB of file written through the page cache.
    let r = sh(
        &s,
        "head -c 33554432 /dev/urandom > /home/user/blob && sha256sum /home/user/blob | cut -c1-64 > /home/user/blob.sum && \
         nohup python3 -c 'import time; b = b\"x\" * (64 << 20); time.sleep(1000)' >/dev/null 2>&1 & echo ok",
    )
    .await;
    assert_eq!(out(&r), "ok\n", "{}", err(&r));
    wait_for("the process to take its memory", || {
        cgroup_memory(&s) > 90 << 20
    })
    .await;
    let before = cgroup_memory(&s);
    let started = Instant::now();
    rt.pause(s.id.as_str(), PauseMode::Filesystem)
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(rt.get(s.id.as_str()).is_err(), "no PID 1 while paused");
    assert_eq!(rt.paused_mode(s.id.as_str()), Some(PauseMode::Filesystem));
    let after = cgroup_memory(&s);
    assert!(
        after < 8 << 20,
        "memory after a filesystem pause: {after} (before {before}, took {took:?})"
    );
    let s2 = rt.resume(s.id.as_str(), false).await.unwrap();
    assert_eq!(s2.id, s.id);
    assert_ne!(s2.pid, s.pid, "PID 1 started again");
    assert_eq!(s2.uid_base, s.uid_base, "same uid range");
    let r = sh(
        &s2,
        "sha256sum /home/user/blob | cut -c1-64 | cmp - /home/user/blob.sum && echo same; echo $SECRET_ENV; pgrep -x python3 || echo gone",
    )
    .await;
    assert_eq!(out(&r), "same\nkept\ngone\n", "{}", err(&r));
    // The new PID 1's statfs listener is answered: `/` is the disk limit (a `statfs` nobody
    // answers would wait, so it is bounded here).
    let r = sh(&s2, "timeout 10 stat -f -c %b /").await;
    let blocks = paddock_core::Limits::default().disk_bytes / 4096;
    assert_eq!(out(&r), format!("{blocks}\n"), "{}", err(&r));
    // After resume the cgroup holds the new agent and the blob just read back (32 MiB of
    // page cache), not the old 64 MiB process.
    let resumed = cgroup_memory(&s2);
    assert!(resumed < 48 << 20, "memory after resume: {resumed}");
    destroy(&s2).await;
    assert!(!s.dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_alternating_pause_resume_cycles_keep_every_file() {
    let rt = runtime();
    let mut s = sandbox().await;
    for i in 0..10 {
        let r = sh(
            &s,
            &format!("echo file{i} > /home/user/f{i}; sync; echo ok"),
        )
        .await;
        assert_eq!(out(&r), "ok\n", "cycle {i}: {}", err(&r));
        let mode = if i % 2 == 0 {
            PauseMode::Filesystem
        } else {
            PauseMode::Full
        };
        rt.pause(s.id.as_str(), mode).await.unwrap();
        s = rt.resume(s.id.as_str(), false).await.unwrap();
        let r = sh(&s, "cat /home/user/f*").await;
        let want: String = (0..=i).map(|j| format!("file{j}\n")).collect();
        assert_eq!(out(&r), want, "after cycle {i} ({mode:?}): {}", err(&r));
    }
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_sandboxes_are_destroyed_cleanly() {
    let rt = runtime();
    for mode in [PauseMode::Full, PauseMode::Filesystem] {
        let s = sandbox().await;
        rt.pause(s.id.as_str(), mode).await.unwrap();
        rt.destroy(s.id.as_str()).await.unwrap();
        assert_eq!(rt.paused_mode(s.id.as_str()), None);
        assert!(!s.dir.exists(), "{mode:?}");
        assert!(s.cgroup_dirs().iter().all(|d| !d.exists()), "{mode:?}");
    }
    let e = rt
        .pause("nosuchsandbox0000000", PauseMode::Full)
        .await
        .unwrap_err();
    assert!(matches!(e, RuntimeError::NotFound { .. }), "{e:?}");
}
