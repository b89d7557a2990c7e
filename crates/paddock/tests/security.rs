//! Hostile tests of the sandbox boundary: rows A (resources), B (escape primitives) and C
//! (host file reads) of the battery in `security-tests.md`, run against real sandboxes with
//! the real agent.
//!
//! Every test attacks from inside a sandbox and judges the outcome on the host where it can
//! (cgroup counters, host processes, host files, the writable layer's owners and size), so
//! that it fails if the protection it names is missing. Syscall probes follow bubblewrap's
//! `try-syscall.c`: they pass a bad pointer or descriptor, so an unfiltered call fails
//! harmlessly with `EFAULT`/`EBADF`/`EINVAL` and only the seccomp filter yields `EPERM`
//! (or `ENOSYS` for `clone3`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use paddock_core::Limits;
use paddock_runtime::{CreateSpec, ExecRequest, ExecResult, Sandbox};

const MIB: u64 = 1024 * 1024;

/// Capabilities a sandbox root may hold (`KEPT_CAPS` of the setup stage): CHOWN,
/// DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE,
/// SYS_CHROOT, AUDIT_WRITE, SETFCAP.
const KEPT_CAPS: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 7)
    | (1 << 8)
    | (1 << 10)
    | (1 << 18)
    | (1 << 29)
    | (1 << 31);
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_MODULE: u32 = 16;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;

/// Destroys the sandboxes if the test panics before its own `destroy` calls, so a failed
/// assertion does not leave a fork bomb or busy loop running for the rest of the run.
struct Cleanup(Vec<Arc<Sandbox>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let ids: Vec<String> = self.0.iter().map(|s| s.id.as_str().to_owned()).collect();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                for id in ids {
                    let _ = runtime().destroy(&id).await;
                }
            });
        })
        .join();
    }
}

/// Runs `script` with bash as `user` (None: `user`), killed after `timeout`.
async fn run(s: &Sandbox, user: Option<&str>, script: &str, timeout: Duration) -> ExecResult {
    s.exec(ExecRequest {
        argv: vec!["/bin/bash".into(), "-c".into(), script.into()],
        user: user.map(str::to_owned),
        timeout: Some(timeout),
        ..Default::default()
    })
    .await
    .expect("exec")
}

fn limits(f: impl FnOnce(&mut Limits)) -> CreateSpec {
    let mut l = Limits::default();
    f(&mut l);
    CreateSpec {
        limits: l,
        ..CreateSpec::default()
    }
}

/// The sandbox's pids cgroup directory on the host (v1: `/sys/fs/cgroup/pids/paddock/<id>`).
fn pids_dir(s: &Sandbox) -> PathBuf {
    s.cgroup_dirs()
        .into_iter()
        .find(|d| d.join("pids.current").exists())
        .expect("sandbox has a pids cgroup")
}

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn read_u64(p: &Path) -> u64 {
    read_trim(p).parse().unwrap_or(0)
}

/// The value after `key ` in a flat keyed file such as `pids.events`.
fn keyed(p: &Path, key: &str) -> u64 {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Host pids (thread-group ids) in the sandbox's cgroup.
fn cgroup_procs(s: &Sandbox) -> BTreeSet<i32> {
    std::fs::read_to_string(pids_dir(s).join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Polls until only the agent is left in the sandbox's cgroup or `deadline` passes; returns
/// what is left.
async fn wait_only_agent(s: &Sandbox, deadline: Instant) -> BTreeSet<i32> {
    loop {
        let procs = cgroup_procs(s);
        if procs == BTreeSet::from([s.pid]) || Instant::now() >= deadline {
            return procs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `pid comm cmdline` of each host process, for failure messages.
fn describe(pids: &BTreeSet<i32>) -> Vec<String> {
    pids.iter()
        .map(|p| {
            let comm = read_trim(Path::new(&format!("/proc/{p}/comm")));
            let cmd = std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            format!("{p} {comm} [{}]", cmd.trim())
        })
        .collect()
}

/// Host processes whose real uid lies in `[base, base + 65536)`: `(pid, uid, cgroup file)`.
fn host_procs_in_range(base: u32) -> Vec<(i32, u32, String)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").expect("reading /proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok());
        if let Some(uid) = uid.filter(|u| (base..base + 65536).contains(u)) {
            let cg = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
            v.push((pid, uid, cg));
        }
    }
    v
}

/// Bytes allocated on disk under `p` (not following symlinks).
fn disk_usage(p: &Path) -> u64 {
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    let mut total = md.blocks() * 512;
    if md.is_dir() {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            total += disk_usage(&e.path());
        }
    }
    total
}

fn token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Parses `name=value` lines.
fn kv(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// A. Resources
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_fork_bomb_stops_at_pids_limit() {
    let s = create(limits(|l| l.pids = 64)).await;
    let peer = sandbox().await;
    let _g = Cleanup(vec![s.clone(), peer.clone()]);
    let pdir = pids_dir(&s);
    assert_eq!(read_trim(&pdir.join("pids.max")), "64");
    let hits_before = keyed(&pdir.join("pids.events"), "max");

    let bomb = {
        let s = s.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            // The parent stays (without forking) so the exec lasts until its timeout.
            let r = run(
                &s,
                None,
                ":(){ :|:& };:; exec sleep 1000",
                Duration::from_secs(5),
            )
            .await;
            (r, t0.elapsed())
        })
    };

    let t0 = Instant::now();
    let mut peak = 0;
    let mut peer_latency = None;
    while !bomb.is_finished() && t0.elapsed() < Duration::from_secs(8) {
        peak = peak.max(read_u64(&pdir.join("pids.current")));
        if peer_latency.is_none() && t0.elapsed() > Duration::from_millis(1500) {
            let p0 = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(5), sh(&peer, "echo ok"))
                .await
                .expect("peer sandbox's exec did not complete within 5 s during the bomb");
            assert_eq!(out(&r), "ok\n", "peer exec: {r:?}");
            peer_latency = Some(p0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (r, elapsed) = bomb.await.expect("bomb task");
    let hits = keyed(&pdir.join("pids.events"), "max") - hits_before;
    let peer_latency = peer_latency.expect("peer exec ran during the bomb");
    eprintln!(
        "a1: peak pids.current {peak}, pids.events max +{hits}, peer latency {peer_latency:?}, bomb exec {elapsed:?}"
    );

    assert!(peak <= 64, "pids.current reached {peak} > pids.max 64");
    assert!(
        hits > 0,
        "the bomb never hit pids.max (peak {peak}): the test did not exercise the limit"
    );
    assert!(
        peer_latency < Duration::from_secs(5),
        "peer exec took {peer_latency:?}"
    );
    assert!(r.timed_out, "bomb exec did not report a timeout: {r:?}");
    assert!(
        elapsed < Duration::from_secs(7),
        "bomb exec returned after {elapsed:?}"
    );

    // After the timeout kill nothing of the bomb may survive: only the agent is left.
    let left = wait_only_agent(&s, Instant::now() + Duration::from_secs(5)).await;
    assert_eq!(
        left,
        BTreeSet::from([s.pid]),
        "fork bomb survived its timeout: {} processes left in the cgroup, e.g. {:?}",
        left.len(),
        describe(&left.iter().take(5).copied().collect())
    );
    let r = sh(&s, "echo ok").await;
    assert_eq!(out(&r), "ok\n", "sandbox unusable after the bomb: {r:?}");

    destroy(&peer).await;
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2_memory_bomb_is_oom_killed_inside_the_sandbox() {
    let s = create(limits(|l| {
        l.memory_bytes = 64 * MIB;
        l.tmp_bytes = 16 * MIB;
    }))
    .await;
    let _g = Cleanup(vec![s.clone()]);
    let agent_start = std::fs::read_to_string(format!("/proc/{}/stat", s.pid)).unwrap();

    let code = "b = bytearray(200 << 20)\n\
                for i in range(0, len(b), 4096):\n    b[i] = 1\n\
                print('survived', len(b))\n";
    let r = s
        .exec(ExecRequest {
            argv: vec!["/usr/bin/python3".into(), "-c".into(), code.into()],
            timeout: Some(Duration::from_secs(40)),
            ..Default::default()
        })
        .await
        .expect("exec");
    assert!(!r.timed_out, "memory bomb ran into the timeout: {r:?}");
    assert_ne!(r.exit_code, Some(0), "memory bomb succeeded: {r:?}");
    assert!(!out(&r).contains("survived"), "{}", out(&r));
    assert!(r.oom_killed, "exec does not report the OOM kill: {r:?}");
    assert!(r.status.contains("killed"), "status {:?}", r.status);
    assert!(s.stats(&runtime()).oom_kills >= 1);

    // The agent survived (same process, same start time) and still serves requests.
    let now = std::fs::read_to_string(format!("/proc/{}/stat", s.pid)).unwrap_or_default();
    assert_eq!(
        now.split(' ').nth(21),
        agent_start.split(' ').nth(21),
        "agent restarted or died"
    );
    let r = sh(&s, "echo ok").await;
    assert_eq!(out(&r), "ok\n", "agent unusable after the OOM kill: {r:?}");
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a3_workspace_fill_stops_at_disk_limit() {
    let s = create(limits(|l| l.disk_bytes = 64 * MIB)).await;
    let _g = Cleanup(vec![s.clone()]);
    let r = sh(
        &s,
        "dd if=/dev/zero of=/home/user/big bs=1M count=200; echo dd=$?; sync; \
         fallocate -l 1T /home/user/huge; echo fallocate=$?; sync",
    )
    .await;
    let text = format!("{}{}", out(&r), err(&r));
    let k = kv(&out(&r));
    assert_ne!(k.get("dd").map(String::as_str), Some("0"), "dd: {text}");
    assert_ne!(
        k.get("fallocate").map(String::as_str),
        Some("0"),
        "fallocate: {text}"
    );
    assert!(
        text.contains("Disk quota exceeded") || text.contains("No space left on device"),
        "no ENOSPC/EDQUOT: {text}"
    );
    let upper = s.dir.join("upper");
    let used = disk_usage(&upper);
    assert!(
        used <= 70 * MIB,
        "upper layer takes {} MiB on the host with a 64 MiB limit",
        used / MIB
    );
    if let Some(b) = s.stats(&runtime()).disk_bytes {
        assert!(b <= 70 * MIB, "qgroup reports {} MiB", b / MIB);
    }
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_tmpfs_fill_stops_at_tmp_size() {
    let s = create(limits(|l| l.tmp_bytes = 16 * MIB)).await;
    let _g = Cleanup(vec![s.clone()]);
    for dir in ["/tmp", "/dev/shm"] {
        let r = sh(
            &s,
            &format!(
                "dd if=/dev/zero of={dir}/fill bs=1M count=64; echo dd=$?; \
                 echo size=$(stat -c %s {dir}/fill)"
            ),
        )
        .await;
        let k = kv(&out(&r));
        assert_ne!(k.get("dd").map(String::as_str), Some("0"), "{dir}: {r:?}");
        assert!(
            err(&r).contains("No space left on device"),
            "{dir}: {}",
            err(&r)
        );
        let size: u64 = k.get("size").and_then(|v| v.parse().ok()).unwrap_or(0);
        assert!(
            size > 0 && size <= 16 * MIB,
            "{dir}: wrote {size} bytes with a 16 MiB size"
        );
    }
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a8_timeouts_kill_busy_loops_daemons_and_stopped_processes() {
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    let variants = [
        ("busy loop", "while :; do :; done"),
        ("ignores SIGTERM", "trap '' TERM; while :; do :; done"),
        (
            "setsid daemon",
            "setsid bash -c 'while :; do :; done' & disown; while :; do :; done",
        ),
        (
            "double fork",
            "( setsid bash -c 'trap \"\" TERM HUP; while :; do :; done' </dev/null & ); \
             while :; do :; done",
        ),
        (
            "python double fork",
            "python3 -c 'import os, time\n\
             if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        \
             while True: pass\n    os._exit(0)\nos.wait()' ; while :; do :; done",
        ),
        (
            "self-stopped child",
            "bash -c 'kill -STOP $$; while :; do :; done' & while :; do :; done",
        ),
    ];
    for (name, script) in variants {
        let t0 = Instant::now();
        let r = run(&s, None, script, Duration::from_secs(2)).await;
        let elapsed = t0.elapsed();
        assert!(r.timed_out, "{name}: no timeout reported: {r:?}");
        assert!(
            elapsed < Duration::from_secs(3),
            "{name}: exec returned after {elapsed:?}"
        );
        let left = wait_only_agent(&s, t0 + Duration::from_secs(3)).await;
        assert_eq!(
            left,
            BTreeSet::from([s.pid]),
            "{name}: processes still running 3 s after start with a 2 s timeout: {:?}",
            describe(&left)
        );
    }
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a9_orphans_do_not_outlive_destroy() {
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    let r = sh(
        &s,
        "nohup sleep 10000 >/dev/null 2>&1 & \
         ( setsid sleep 10001 </dev/null >/dev/null 2>&1 & ); \
         echo started",
    )
    .await;
    assert_eq!(out(&r), "started\n", "{r:?}");
    // Precondition: the orphans run (so the check after destroy is not vacuous).
    let mut procs = cgroup_procs(&s);
    for _ in 0..100 {
        if procs.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        procs = cgroup_procs(&s);
    }
    let orphans: BTreeSet<i32> = procs.iter().copied().filter(|p| *p != s.pid).collect();
    assert!(
        orphans.len() >= 2,
        "background sleeps not running: {:?}",
        describe(&procs)
    );
    let in_range = host_procs_in_range(s.uid_base);
    assert!(
        orphans
            .iter()
            .all(|o| in_range.iter().any(|(p, _, _)| p == o)),
        "orphans not in the sandbox's uid range: {in_range:?}"
    );

    let (id, base, dirs) = (s.id.as_str().to_owned(), s.uid_base, s.cgroup_dirs());
    destroy(&s).await;

    for o in &orphans {
        let status = std::fs::read_to_string(format!("/proc/{o}/status")).unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok());
        assert!(
            !uid.is_some_and(|u| (base..base + 65536).contains(&u)),
            "orphan {o} survived destroy: {status}"
        );
    }
    // Anything in the range that is not in another live sandbox's cgroup is a leftover (the
    // slot, hence the range, may already be reused by a test running in parallel).
    let leftovers: Vec<_> = host_procs_in_range(base)
        .into_iter()
        .filter(|(_, _, cg)| cg.contains(&id) || !cg.contains("/paddock/"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "processes in uid range {base}.. after destroy: {leftovers:?}"
    );
    for d in dirs {
        assert!(!d.exists(), "cgroup {} still exists", d.display());
    }
}

// ---------------------------------------------------------------------------------------
// B. Escape primitives, as root inside
// ---------------------------------------------------------------------------------------

/// Each probe prints `name=errno` (0: the call succeeded). Arguments are chosen so that an
/// unfiltered call fails harmlessly with a different errno (in the comment) where the kernel
/// checks arguments before privileges.
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define BAD ((void *)1)

static void report(const char *name, long r) {
    printf("%s=%d\n", name, r < 0 ? errno : 0);
    fflush(stdout);
}

static long try_clone(unsigned long flags) {
    long r = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (r == 0) _exit(0);
    if (r > 0) waitpid(r, NULL, 0);
    return r;
}

int main(void) {
    report("control_getpid", syscall(SYS_getpid));            /* 0 */
    report("control_efault", syscall(SYS_uname, BAD));        /* EFAULT: bad pointers work */
    report("unshare_newuser", syscall(SYS_unshare, CLONE_NEWUSER)); /* 0 */
    report("unshare_newns", syscall(SYS_unshare, CLONE_NEWNS));
    report("unshare_newnet", syscall(SYS_unshare, CLONE_NEWNET));
    report("unshare_newcgroup", syscall(SYS_unshare, CLONE_NEWCGROUP));
    report("clone_newuser", try_clone(CLONE_NEWUSER));        /* 0 */
    report("clone_newns", try_clone(CLONE_NEWNS));
    report("clone_newpid", try_clone(CLONE_NEWPID));
    report("setns", syscall(SYS_setns, -1, 0));               /* EBADF */
    report("mount", syscall(SYS_mount, "x", "/tmp", "tmpfs", 0, NULL));
    report("umount2", syscall(SYS_umount2, "/proc/kcore", ~0)); /* EINVAL */
    report("pivot_root", syscall(SYS_pivot_root, BAD, BAD));
    report("open_tree", syscall(SYS_open_tree, -1, BAD, 0));  /* EFAULT */
    report("move_mount", syscall(SYS_move_mount, -1, BAD, -1, BAD, 0));
    report("fsopen", syscall(SYS_fsopen, BAD, 0));
    report("fspick", syscall(SYS_fspick, -1, BAD, 0));
    report("mount_setattr", syscall(SYS_mount_setattr, -1, BAD, 0, BAD, 0)); /* EINVAL */
    report("bpf", syscall(SYS_bpf, 5 /* BPF_PROG_LOAD */, BAD, 128)); /* EFAULT */
    report("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0)); /* EFAULT */
    report("keyctl", syscall(SYS_keyctl, 0x7fffffff, 0, 0, 0, 0)); /* EOPNOTSUPP */
    report("add_key", syscall(SYS_add_key, BAD, BAD, NULL, 0, 0)); /* EFAULT */
    report("request_key", syscall(SYS_request_key, BAD, BAD, NULL, 0)); /* EFAULT */
    report("userfaultfd", syscall(SYS_userfaultfd, 0));
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, NULL)); /* EFAULT */
    report("io_uring_enter", syscall(SYS_io_uring_enter, -1, 0, 0, 0, NULL, 0)); /* EBADF */
    report("io_uring_register", syscall(SYS_io_uring_register, -1, 0, NULL, 0)); /* EBADF */
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, -1, NULL, 0));
    report("name_to_handle_at", syscall(SYS_name_to_handle_at, -1, BAD, BAD, BAD, 0));
    report("init_module", syscall(SYS_init_module, NULL, 0, ""));
    report("finit_module", syscall(SYS_finit_module, -1, "", 0));
    report("delete_module", syscall(SYS_delete_module, BAD, 0));
    report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    report("kexec_file_load", syscall(SYS_kexec_file_load, -1, -1, 0, NULL, 0));
    report("clone3", syscall(SYS_clone3, NULL, 0));           /* EINVAL */
    report("tiocsti", syscall(SYS_ioctl, 0, TIOCSTI, BAD));   /* ENOTTY */
    report("tiocsti_high", syscall(SYS_ioctl, 0, 0x100000000UL | TIOCSTI, BAD));
    report("swapon", syscall(SYS_swapon, BAD, 0));
    report("syslog", syscall(SYS_syslog, 3, BAD, 16));
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b1_b2_b7_b9_mounts_namespaces_and_kernel_apis_are_denied() {
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    let mountinfo = || std::fs::read_to_string(format!("/proc/{}/mountinfo", s.pid)).unwrap();
    let mounts_before = mountinfo();

    // B1/B2 with the usual tools.
    let r = root(
        &s,
        r#"mkdir -p /tmp/m
probe() { name=$1; shift; o=$("$@" 2>&1); rc=$?; echo "$name rc=$rc $(echo $o)"; }
probe mount_tmpfs mount -t tmpfs x /tmp/m
probe mount_bind mount --bind /usr /tmp/m
probe remount_rw mount -o remount,rw /usr
probe umount_masked umount /proc/kcore
probe unshare_Urm unshare -Urm true
probe unshare_n unshare -n true
probe unshare_m unshare -m true
probe unshare_p unshare -fp true
"#,
    )
    .await;
    let text = out(&r);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{r:?}");
    for l in &lines {
        assert!(!l.contains(" rc=0 "), "succeeded: {l}");
        let lower = l.to_lowercase();
        // umount(8) words EPERM as "must be superuser to unmount".
        assert!(
            lower.contains("permission denied")
                || lower.contains("not permitted")
                || lower.contains("must be superuser"),
            "not an EPERM/EACCES failure: {l}"
        );
    }
    assert_eq!(
        mountinfo(),
        mounts_before,
        "the sandbox's mount table changed"
    );

    // B2/B7/B9 at the syscall level.
    let script = format!(
        "cat > /tmp/probe.c <<'EOF'\n{PROBE_C}\nEOF\n\
         gcc -O0 -o /tmp/probe /tmp/probe.c >&2 || exit 99\n/tmp/probe"
    );
    let expected: BTreeMap<&str, i32> = [
        ("control_getpid", 0),
        ("control_efault", libc::EFAULT),
        ("clone3", libc::ENOSYS),
    ]
    .into_iter()
    .chain(
        PROBE_C
            .lines()
            .filter_map(|l| l.trim().strip_prefix("report(\""))
            .filter_map(|l| l.split('"').next())
            .filter(|n| !n.starts_with("control_") && *n != "clone3")
            .map(|n| (n, libc::EPERM)),
    )
    .collect();
    assert!(expected.len() > 30);
    for who in ["root", "user"] {
        let r = root(&s, "rm -f /tmp/probe /tmp/probe.c").await;
        assert_eq!(r.exit_code, Some(0));
        let r = sh_as(&s, Some(who), &script).await;
        assert_eq!(r.exit_code, Some(0), "{who}: probe failed: {r:?}");
        let got = kv(&out(&r));
        let mut wrong = Vec::new();
        for (name, want) in &expected {
            let g: Option<i32> = got.get(*name).and_then(|v| v.parse().ok());
            if g != Some(*want) {
                wrong.push(format!(
                    "{name}: got {}, want {}",
                    g.map_or("nothing".into(), |e| format!(
                        "{e} ({})",
                        std::io::Error::from_raw_os_error(e)
                    )),
                    std::io::Error::from_raw_os_error(*want)
                ));
            }
        }
        assert!(wrong.is_empty(), "as {who}: {wrong:#?}");
    }
    assert_eq!(mountinfo(), mounts_before);
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b8_raw_sockets_are_denied() {
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    let code = r#"
import socket
for name, fam, typ, proto in [
    ("packet_raw", socket.AF_PACKET, socket.SOCK_RAW, 0x0300),
    ("packet_dgram", socket.AF_PACKET, socket.SOCK_DGRAM, 0x0300),
    ("inet_raw", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    ("inet_raw_tcp", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
    ("inet6_raw", socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
]:
    try:
        socket.socket(fam, typ, proto).close()
        print(f"{name}=opened")
    except PermissionError as e:
        print(f"{name}=PermissionError {e.errno}")
    except OSError as e:
        print(f"{name}=OSError {e.errno}")
"#;
    for who in ["root", "user"] {
        let r = s
            .exec(ExecRequest {
                argv: vec!["/usr/bin/python3".into(), "-c".into(), code.into()],
                user: Some(who.into()),
                timeout: Some(Duration::from_secs(30)),
                ..Default::default()
            })
            .await
            .expect("exec");
        let got = kv(&out(&r));
        assert_eq!(got.len(), 5, "{who}: {r:?}");
        for (name, v) in &got {
            assert_eq!(
                v,
                &format!("PermissionError {}", libc::EPERM),
                "{who}: {name}"
            );
        }
    }
    destroy(&s).await;
}

/// One task's `/proc/<pid>/task/<tid>/status`, as read inside the sandbox.
#[derive(Debug)]
struct TaskStatus {
    path: String,
    fields: BTreeMap<String, String>,
}

fn parse_statuses(text: &str) -> Vec<TaskStatus> {
    let mut v = Vec::new();
    for block in text.split("== ").skip(1) {
        let mut lines = block.lines();
        let path = lines.next().unwrap_or_default().to_owned();
        let fields: BTreeMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect();
        // A task that exited between the glob and the read has no fields.
        if fields.contains_key("Name") {
            v.push(TaskStatus { path, fields });
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b10_every_task_has_no_new_privs_seccomp_and_no_dangerous_caps() {
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    // A long-lived process of each user, besides the agent and the reader itself.
    let r = sh(&s, "nohup sleep 1000 >/dev/null 2>&1 &").await;
    assert_eq!(r.exit_code, Some(0));
    let r = root(&s, "nohup sleep 1001 >/dev/null 2>&1 &").await;
    assert_eq!(r.exit_code, Some(0));

    let forbidden = [CAP_SYS_ADMIN, CAP_NET_RAW, CAP_SYS_PTRACE, CAP_SYS_MODULE];
    for who in ["root", "user"] {
        let r = sh_as(
            &s,
            Some(who),
            "for f in /proc/[0-9]*/task/[0-9]*/status; do echo \"== $f\"; cat \"$f\" 2>/dev/null; done",
        )
        .await;
        let tasks = parse_statuses(&out(&r));
        assert!(tasks.len() >= 5, "{who}: too few tasks: {r:?}");
        let mut uids = BTreeSet::new();
        assert!(
            tasks.iter().any(|t| t.path.starts_with("/proc/1/")),
            "{who}: PID 1 not listed"
        );
        for t in &tasks {
            let f = |k: &str| t.fields.get(k).map(String::as_str).unwrap_or("<missing>");
            let cap = |k: &str| u64::from_str_radix(f(k), 16).unwrap_or(u64::MAX);
            let uid: u32 = f("Uid")
                .split_whitespace()
                .nth(1)
                .and_then(|u| u.parse().ok())
                .unwrap_or(u32::MAX);
            uids.insert(uid);
            let ctx = format!("{who} reading {} ({}, uid {uid})", t.path, f("Name"));
            assert_eq!(f("NoNewPrivs"), "1", "{ctx}");
            assert_eq!(f("Seccomp"), "2", "{ctx}");
            assert_eq!(cap("CapAmb"), 0, "{ctx}");
            for set in ["CapEff", "CapPrm", "CapBnd"] {
                let v = cap(set);
                for bit in forbidden {
                    assert_eq!(v & (1 << bit), 0, "{ctx}: {set} {v:016x} has cap {bit}");
                }
                assert_eq!(
                    v & !KEPT_CAPS,
                    0,
                    "{ctx}: {set} {v:016x} beyond the kept set"
                );
            }
            if uid != 0 {
                assert_eq!(cap("CapEff"), 0, "{ctx}: non-root task has capabilities");
                assert_eq!(cap("CapPrm"), 0, "{ctx}: non-root task has capabilities");
            }
        }
        assert!(
            uids.contains(&0) && uids.contains(&1000),
            "{who}: tasks of both root and user expected, uids {uids:?}"
        );
    }
    destroy(&s).await;
}

/// Descriptors from `ls -l /proc/<pid>/fd` (`... <fd> -> <target>` lines). `ls` is a child
/// of the listed shell, so its own directory descriptor does not show up.
fn fd_lines(text: &str) -> BTreeMap<u32, String> {
    text.lines()
        .filter_map(|l| l.split_once(" -> "))
        .filter_map(|(l, t)| Some((l.split_whitespace().last()?.parse().ok()?, t.to_owned())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b11_no_leaked_file_descriptors() {
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    let allowed = |target: &str| {
        target == "/dev/null"
            || target.starts_with("socket:[")
            || target.starts_with("pipe:[")
            || target.starts_with("anon_inode:")
    };
    // Every check runs; the failures are reported together.
    let mut problems = Vec::new();

    // The agent, PID 1, seen from inside by the sandbox's root.
    let r = root(&s, "ls -l /proc/1/fd").await;
    let fds = fd_lines(&out(&r));
    let listener = fds.get(&3).cloned().unwrap_or_default();
    if !(0..=3).all(|n| fds.contains_key(&n)) {
        problems.push(format!("agent lacks fds 0-3: {fds:?} ({r:?})"));
    }
    let bad: Vec<_> = fds.iter().filter(|(_, t)| !allowed(t)).collect();
    if !bad.is_empty() {
        problems.push(format!(
            "agent (PID 1) holds descriptors to paths, seen from inside (only /dev/null, \
             sockets, pipes and anon inodes expected): {bad:?}; all: {fds:?}"
        ));
    }

    // The same descriptors from the host: none may be a host file or directory. The
    // sandbox's own /dev/null (on its private /dev tmpfs) is recognised by its device.
    let null_rdev = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.rdev() == libc::makedev(1, 3))
            .unwrap_or(false)
    };
    let mut host_bad = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{}/fd", s.pid))
        .unwrap()
        .flatten()
    {
        let t = std::fs::read_link(e.path())
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !allowed(&t) && !null_rdev(&e.path()) {
            host_bad.push(format!("{} -> {t}", e.file_name().to_string_lossy()));
        }
    }
    if !host_bad.is_empty() {
        problems.push(format!(
            "agent (host pid {}) holds descriptors to host files: {host_bad:?}",
            s.pid
        ));
    }

    // A directory descriptor would allow `cd /proc/1/fd/N/..` out of the root.
    let r = root(
        &s,
        "for n in $(seq 0 64); do (cd /proc/1/fd/$n 2>/dev/null && echo \"dir fd $n: $(pwd -P)\"); done; true",
    )
    .await;
    if !out(&r).is_empty() {
        problems.push(format!("agent has directory descriptors: {}", out(&r)));
    }

    // An exec'd process starts with exactly 0 (/dev/null), 1 and 2 (pipes).
    for who in ["root", "user"] {
        let r = sh_as(
            &s,
            Some(who),
            "ls -l /proc/$$/fd; \
             for n in $(seq 3 64); do (cd /proc/$$/fd/$n 2>/dev/null && echo \"dir fd $n\"); done; true",
        )
        .await;
        let fds = fd_lines(&out(&r));
        if fds.keys().copied().collect::<Vec<_>>() != vec![0, 1, 2]
            || fds[&0] != "/dev/null"
            || !fds.values().all(|t| allowed(t))
            || out(&r).contains("dir fd")
        {
            let note = if fds.values().any(|t| *t == listener) {
                " (includes the agent's listening socket, fd 3 of PID 1: the process can \
                 accept() the host's requests to the agent)"
            } else {
                ""
            };
            problems.push(format!(
                "{who}: exec'd process has descriptors {fds:?}{note}: {}",
                out(&r)
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b12_no_device_nodes_and_setuid_is_powerless() {
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    let r = root(
        &s,
        "mknod /tmp/blk b 8 0 2>&1; echo mknod_b=$?; \
         mknod /tmp/chr c 1 1 2>&1; echo mknod_c=$?; \
         mknod /root/blk b 8 0 2>&1; echo mknod_root=$?; \
         for d in mem kmem port kmsg sda vda nvme0 loop0 dm-0 fuse; do \
           test -e /dev/$d && echo present=$d; done; \
         echo dev=$(ls -A /dev | tr '\\n' ' ')",
    )
    .await;
    let text = out(&r);
    let k = kv(&text);
    for key in ["mknod_b", "mknod_c", "mknod_root"] {
        assert_ne!(k.get(key).map(String::as_str), Some("0"), "{key}: {text}");
    }
    assert!(text.contains("Operation not permitted"), "{text}");
    assert!(!text.contains("present="), "host devices visible: {text}");
    let allowed: BTreeSet<&str> = [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd", "stdin",
        "stdout", "stderr",
    ]
    .into();
    let extra: Vec<&str> = k
        .get("dev")
        .map(String::as_str)
        .unwrap_or_default()
        .split_whitespace()
        .filter(|d| !allowed.contains(d))
        .collect();
    assert!(extra.is_empty(), "unexpected /dev entries: {extra:?}");

    // A setuid-root binary gives `user` nothing (nosuid mounts and no_new_privs).
    let r = root(
        &s,
        r#"cat > /tmp/suid.c <<'EOF'
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("%d %d\n", (int)getuid(), (int)geteuid()); return 0; }
EOF
mkdir -p /opt && gcc -o /opt/suid /tmp/suid.c && chown root:root /opt/suid && chmod 4755 /opt/suid &&
cp /opt/suid /tmp/suid && chmod 4755 /tmp/suid && stat -c '%A %U' /opt/suid /tmp/suid"#,
    )
    .await;
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert_eq!(out(&r), "-rwsr-xr-x root\n-rwsr-xr-x root\n");
    for bin in ["/opt/suid", "/tmp/suid"] {
        let r = sh(&s, bin).await;
        assert_eq!(out(&r), "1000 1000\n", "{bin} as user: {r:?}");
    }
    destroy(&s).await;
}

fn host_kernel_log_sysrq_lines() -> usize {
    std::process::Command::new("dmesg")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.to_lowercase().contains("sysrq"))
                .count()
        })
        .unwrap_or(0)
}

/// `/proc` files that leak host data; each must read empty inside if the host has it.
const MASKED_PROC: &[&str] = &[
    "kcore",
    "keys",
    "timer_list",
    "kallsyms",
    "sched_debug",
    "kmsg",
    "latency_stats",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b5_c2_proc_is_masked_and_pid_uts_namespaces_hide_the_host() {
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    let sysctls = ["kernel/core_pattern", "kernel/modprobe", "vm/drop_caches"];
    let host_sysctls: Vec<Vec<u8>> = sysctls
        .iter()
        .map(|f| std::fs::read(format!("/proc/sys/{f}")).unwrap_or_default())
        .collect();
    let sysrq_before = host_kernel_log_sysrq_lines();

    let r = root(
        &s,
        &format!(
            r#"echo h > /proc/sysrq-trigger; echo sysrq_rc=$?
echo sysrq_dev=$(stat -c '%t:%T' /proc/sysrq-trigger 2>/dev/null)
echo '|/tmp/pwn %p' > /proc/sys/kernel/core_pattern; echo core_pattern_rc=$?
cat /proc/sys/kernel/modprobe > /proc/sys/kernel/modprobe; echo modprobe_rc=$?
echo 1 > /proc/sys/vm/drop_caches; echo drop_caches_rc=$?
for f in {masked}; do
  if [ -e /proc/$f ]; then echo "$f=$(head -c 4096 /proc/$f 2>/dev/null | wc -c)"; else echo "$f=absent"; fi
done
echo firmware=$(ls -A /proc/firmware 2>/dev/null | wc -l)
echo cmdline=$(tr '\0' ' ' < /proc/1/cmdline)
echo hostname=$(cat /proc/sys/kernel/hostname)
hostname evil 2>/dev/null; echo sethostname_rc=$?
echo hostname_after=$(cat /proc/sys/kernel/hostname)
for p in /proc/[0-9]*; do echo "proc ${{p#/proc/}} $(cat $p/comm 2>/dev/null)"; done
ps -eo pid=,comm= | sed 's/^ */ps /'
"#,
            masked = MASKED_PROC.join(" ")
        ),
    )
    .await;
    let text = out(&r);
    let k = kv(&text);
    let get = |key: &str| k.get(key).map(String::as_str).unwrap_or("<missing>");

    // B5: host kernel knobs stay untouched.
    for (f, before) in sysctls.iter().zip(&host_sysctls) {
        let now = std::fs::read(format!("/proc/sys/{f}")).unwrap_or_default();
        if &now != before {
            // Put the host back before failing.
            let _ = std::fs::write(format!("/proc/sys/{f}"), before);
        }
        assert_eq!(
            &now, before,
            "host /proc/sys/{f} changed from inside: {text}"
        );
    }
    for key in ["core_pattern_rc", "modprobe_rc", "drop_caches_rc"] {
        assert_ne!(get(key), "0", "{key}: sysctl write succeeded: {text}");
    }
    // No sysrq reaches the host kernel: the trigger is refused, or it is the masked
    // /dev/null (1:3) that swallows the write.
    if Path::new("/proc/sysrq-trigger").exists() {
        assert!(
            get("sysrq_rc") != "0" || get("sysrq_dev") == "1:3",
            "sysrq-trigger writable and not masked: {text}"
        );
    } else {
        assert_ne!(get("sysrq_rc"), "0", "{text}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        host_kernel_log_sysrq_lines(),
        sysrq_before,
        "a sysrq request reached the host kernel"
    );

    // C2: host-data files read empty (or do not exist at all on this kernel).
    for f in MASKED_PROC {
        let v = get(f);
        if Path::new(&format!("/proc/{f}")).exists() {
            assert_eq!(v, "0", "/proc/{f} is readable inside: {text}");
        } else {
            assert!(v == "absent" || v == "0", "/proc/{f}: {text}");
        }
    }
    assert_eq!(get("firmware"), "0", "{text}");
    // PID 1 is the agent; the hostname is the sandbox's and cannot be changed.
    // (Started through the agent's private loader, so the loader's options come first.)
    let cmdline = get("cmdline");
    assert!(
        cmdline == "paddock-agent init"
            || (cmdline.starts_with("paddock-agent ")
                && cmdline.ends_with(" /opt/paddock/lib/paddock-agent init")),
        "{text}"
    );
    assert_eq!(get("hostname"), s.id.as_str());
    assert_ne!(get("sethostname_rc"), "0", "{text}");
    assert_eq!(get("hostname_after"), s.id.as_str());

    // Only the sandbox's processes are visible, through /proc and through ps.
    let parse = |prefix: &str| -> Vec<(u32, String)> {
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter_map(|l| {
                let (p, c) = l.trim().split_once(' ').unwrap_or((l.trim(), ""));
                Some((p.parse().ok()?, c.trim().to_owned()))
            })
            .collect()
    };
    let procs = parse("proc ");
    let ps = parse("ps ");
    assert!(procs.iter().any(|(p, _)| *p == 1), "{text}");
    assert!(ps.iter().any(|(p, _)| *p == 1), "ps output: {text}");
    let tools: BTreeSet<&str> = ["bash", "cat", "ps", "sed"].into();
    for (pid, comm) in procs.iter().chain(&ps) {
        assert!(
            (*pid == 1 && comm == "paddock-agent") || tools.contains(comm.as_str()),
            "process {pid} ({comm}) visible inside is not the sandbox's: {text}"
        );
    }
    assert!(procs.len() <= 3, "too many processes visible: {procs:?}");
    destroy(&s).await;
}

// ---------------------------------------------------------------------------------------
// C. Host file reads; ownership of what the sandbox writes
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_host_canary_is_invisible() {
    let tok = token();
    let dir = PathBuf::from(format!("/var/tmp/paddock-canary-{}", &tok[..12]));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, format!("canary {tok}\n")).unwrap();
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);

    let r = run(
        &s,
        Some("root"),
        &format!(
            "cat {path} 2>&1; echo cat_rc=$?; echo var_tmp=$(ls -A /var/tmp 2>&1); \
             cat /etc/shadow /root/.ssh/* 2>/dev/null | grep -c -F {tok}; \
             cd /; timeout 50 grep -r -l -F -D skip --exclude-dir=proc {tok} \
               $(ls -A / | grep -v -x -e proc -e usr | sed 's|^|/|') /usr 2>/dev/null; echo grep_rc=$?",
            path = secret.display()
        ),
        Duration::from_secs(58),
    )
    .await;
    let text = out(&r);
    eprintln!("c1: grep took {:?}", r.duration);
    std::fs::remove_dir_all(&dir).unwrap();
    let k = kv(&text);
    assert!(!r.timed_out, "{r:?}");
    assert_ne!(k.get("cat_rc").map(String::as_str), Some("0"), "{text}");
    assert!(text.contains("No such file or directory"), "{text}");
    assert!(
        !text.contains(&tok),
        "canary token visible inside the sandbox: {text}"
    );
    assert!(
        !k.get("var_tmp")
            .is_some_and(|v| v.contains("paddock-canary")),
        "host /var/tmp visible: {text}"
    );
    // grep exits 1 when nothing matched (2 if some file was unreadable, 124 on timeout).
    let grep_rc = k.get("grep_rc").map(String::as_str).unwrap_or("<missing>");
    assert!(
        grep_rc == "1" || grep_rc == "2",
        "grep found the token or did not finish: rc {grep_rc}: {text}"
    );
    let found: Vec<&str> = text.lines().filter(|l| l.starts_with('/')).collect();
    assert!(found.is_empty(), "files containing the canary: {found:?}");
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_owned_by_the_sandboxes_own_host_uids() {
    let a = sandbox().await;
    let b = sandbox().await;
    let _g = Cleanup(vec![a.clone(), b.clone()]);
    assert_ne!(a.uid_base, b.uid_base);
    assert!(
        a.uid_base.abs_diff(b.uid_base) >= 65536,
        "uid ranges overlap: {} and {}",
        a.uid_base,
        b.uid_base
    );
    assert!(a.uid_base >= 65536 && b.uid_base >= 65536);

    let r = root(&a, "echo r > /owned-by-root && id -u").await;
    assert_eq!(out(&r), "0\n", "{r:?}");
    let r = sh(&a, "echo u > /home/user/owned-by-user && id -u").await;
    assert_eq!(out(&r), "1000\n", "{r:?}");
    let upper = a.dir.join("upper");
    let md = std::fs::metadata(upper.join("owned-by-root")).unwrap();
    assert_eq!((md.uid(), md.gid()), (a.uid_base, a.uid_base));
    let md = std::fs::metadata(upper.join("home/user/owned-by-user")).unwrap();
    assert_eq!((md.uid(), md.gid()), (a.uid_base + 1000, a.uid_base + 1000));

    let r = root(&b, "echo r > /owned-by-root").await;
    assert_eq!(r.exit_code, Some(0));
    let md = std::fs::metadata(b.dir.join("upper/owned-by-root")).unwrap();
    assert_eq!(md.uid(), b.uid_base);

    // The processes run as the same host uids.
    let users: BTreeSet<u32> = host_procs_in_range(a.uid_base)
        .into_iter()
        .filter(|(_, _, cg)| cg.contains(a.id.as_str()))
        .map(|(_, u, _)| u)
        .collect();
    assert!(users.contains(&a.uid_base), "agent uid: {users:?}");
    let agent_uid = std::fs::metadata(format!("/proc/{}", a.pid)).unwrap().uid();
    assert_eq!(agent_uid, a.uid_base);
    destroy(&a).await;
    destroy(&b).await;
}

/// `sudo` works for `user` (the E2B guest contract) without making anything setuid: root
/// reached through it is the same powerless sandbox root, a user outside group `sudo` is
/// refused, and the shim binary cannot be replaced.
#[tokio::test(flavor = "multi_thread")]
async fn sudo_shim_gives_sandbox_root_and_nothing_more() {
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    let r = sh(
        &s,
        "sudo id -u; sudo -u user id -un; echo x | sudo tee /root/f >/dev/null; sudo cat /root/f; \
         sudo sh -c 'exit 7'; echo rc=$?",
    )
    .await;
    assert_eq!(out(&r), "0\nuser\nx\nrc=7\n", "{r:?}");

    // Root through sudo is still the sandbox's root: no mounts, no namespaces, no raw net.
    let r = sh(
        &s,
        "mkdir -p /tmp/m; sudo mount -t tmpfs x /tmp/m; echo mount=$?; \
         sudo unshare -m true; echo unshare=$?; sudo grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status",
    )
    .await;
    let text = out(&r);
    assert!(
        text.contains("mount=1") || text.contains("mount=32"),
        "{r:?}"
    );
    assert!(!text.contains("unshare=0"), "{r:?}");
    assert!(
        text.contains("NoNewPrivs:\t1") && text.contains("Seccomp:\t2"),
        "{r:?}"
    );

    // Signals reach the command, and a killed client takes the command with it.
    let r = sh(
        &s,
        "timeout 1 sudo sleep 30; echo rc=$?; sleep 0.3; pgrep -x sleep || echo none",
    )
    .await;
    assert_eq!(out(&r), "rc=124\nnone\n", "{r:?}");

    // A user outside group sudo is refused; the shim cannot be written, even by root.
    let r = root(
        &s,
        "echo 'guest:x:1001:1001::/tmp:/bin/bash' >> /etc/passwd; echo 'guest:x:1001:' >> /etc/group",
    )
    .await;
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    let r = sh_as(&s, Some("guest"), "sudo id -u; echo rc=$?").await;
    assert_eq!(out(&r), "rc=1\n", "{r:?}");
    assert!(err(&r).contains("not in the sudoers"), "{r:?}");
    let r = root(
        &s,
        "echo evil > /opt/paddock/bin/sudo; echo w=$?; rm -f /opt/paddock/bin/sudo; echo rm=$?; \
         stat -c '%A' /opt/paddock/bin/sudo",
    )
    .await;
    let text = out(&r);
    assert!(!text.contains("w=0") && !text.contains("rm=0"), "{r:?}");
    assert!(text.ends_with("-rwxr-xr-x\n"), "{r:?}");
    destroy(&s).await;
}
