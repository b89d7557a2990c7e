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

#[path = "../common/mod.rs"]
mod common;
mod escape;
mod host;
mod resources;
mod sockets;

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
