//! The gVisor backend's host half (`docs/isolation.md`, "gVisor").
//!
//! A gVisor sandbox is created like a native one (writable layer, record, cgroups, the same
//! setup stage building the root from the same template layers), except that the setup stage
//! hands the root to `runsc run` instead of becoming PID 1 itself (`paddock_agent::setup`,
//! module `gvisor`). What differs here:
//! - ids are not shifted: the Sentry is the sandbox's kernel and its gofer writes files with
//!   the sandbox's own uids, so the upper layer belongs to uid 0 and `uid_base` is 0;
//! - the agent's socket is bound by the agent inside the sandbox in a host directory (runsc
//!   `--host-uds=create`) and moved out of it here as soon as it appears, then checked to be
//!   a socket: nothing in the sandbox can replace what the runtime connects to;
//! - the recorded pid is the Sentry's: its life is the sandbox's, it is in the sandbox's
//!   cgroups and network namespace (ports, the proxy and the network code use it as they use
//!   a native PID 1);
//! - the pids limit is scaled for the Sentry's own threads ([`host_limits`]);
//! - teardown also removes runsc's state files and reaps the gofer;
//! - glibc programs get a small preloaded library ([`COMPAT_LIB`]) that works around a
//!   system-call flag this runsc refuses.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use paddock_core::{
    GVISOR_AGENT_SOCK, GVISOR_COMPAT_DIR, GVISOR_COMPAT_LIB, GVISOR_COMPAT_PRELOAD, GvisorSetup,
    Isolation, Limits, SetupConfig,
};

use super::{Record, Runtime, pid_start_time, write_record};
use crate::error::{Result, RuntimeError, SetupFailure};

/// `runsc --platform`. KVM hangs on this machine kind (its `/dev/kvm` is PVM) and this
/// runsc has no systrap, so ptrace it is.
const PLATFORM: &str = "ptrace";

/// How long a started Sentry may take to have its agent's socket bound.
const AGENT_WAIT: Duration = Duration::from_secs(20);

/// How long the agent may take from binding its socket to accepting on it.
const LISTEN_WAIT: Duration = Duration::from_secs(10);

/// Host tasks the Sentry and gofer need besides the sandbox's processes (measured idle:
/// about 40 threads), and per sandbox process under the ptrace platform (measured: 100
/// sleeping processes cost 805 host tasks).
const SENTRY_TASKS: u32 = 256;
const TASKS_PER_PROCESS: u32 = 8;

/// `libpaddock-gvisor-compat.so`, built from `gvisor-compat/compat.rs` by the build script:
/// `statx`, `fstatat` and `fstatat64` without `AT_NO_AUTOMOUNT`, which this runsc's Sentry
/// refuses with `EINVAL` (coreutils' `ls -l` and `stat` pass it). Empty on targets it is not
/// built for.
const COMPAT_LIB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libpaddock-gvisor-compat.so"));

/// Writes the compat library and the `ld.so.preload` naming it into
/// `<data>/gvisor-compat/<digest>/` once (a new build gets a new directory; a running
/// sandbox keeps the files it has bound) and returns that directory, or `None` when there is
/// no library for this target.
fn prepare_compat(data_dir: &Path) -> Result<Option<PathBuf>> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;
    if COMPAT_LIB.is_empty() {
        return Ok(None);
    }
    let hex: String = Sha256::digest(COMPAT_LIB)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let parent = data_dir.join("gvisor-compat");
    let dir = parent.join(&hex);
    if dir.join(GVISOR_COMPAT_PRELOAD).is_file() {
        return Ok(Some(dir));
    }
    fs::create_dir_all(&parent).map_err(RuntimeError::io("creating gvisor-compat dir"))?;
    let tmp = parent.join(format!(".tmp-{hex}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let write = || -> std::io::Result<()> {
        fs::create_dir(&tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        let lib = tmp.join(GVISOR_COMPAT_LIB);
        fs::write(&lib, COMPAT_LIB)?;
        fs::set_permissions(&lib, fs::Permissions::from_mode(0o755))?;
        let preload = tmp.join(GVISOR_COMPAT_PRELOAD);
        fs::write(
            &preload,
            format!("{GVISOR_COMPAT_DIR}/{GVISOR_COMPAT_LIB}\n"),
        )?;
        fs::set_permissions(&preload, fs::Permissions::from_mode(0o644))?;
        match fs::rename(&tmp, &dir) {
            // Another runtime of this data directory wrote it first.
            Err(_) if dir.join(GVISOR_COMPAT_PRELOAD).is_file() => fs::remove_dir_all(&tmp),
            r => r,
        }
    };
    write().map_err(RuntimeError::io("writing the gVisor compat library"))?;
    Ok(Some(dir))
}

/// `$PADDOCK_RUNSC`, else `runsc` on `PATH`, if it is a file.
pub(super) fn find_runsc() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PADDOCK_RUNSC") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("runsc"))
        .find(|p| p.is_file())
}

/// The limits written to a gVisor sandbox's cgroups: the same memory, cpu and disk, and a
/// pids limit sized for host tasks (the Sentry's threads count against it), so that
/// `pids` sandbox processes fit.
pub(super) fn host_limits(l: &Limits) -> Limits {
    Limits {
        pids: l
            .pids
            .saturating_mul(TASKS_PER_PROCESS)
            .saturating_add(SENTRY_TASKS)
            .min(1 << 22),
        ..l.clone()
    }
}

impl Runtime {
    /// Whether gVisor sandboxes can be created here (`runsc` was found).
    pub fn gvisor_available(&self) -> bool {
        self.cfg.runsc.is_some()
    }

    /// The isolation backends this host offers.
    pub fn isolations(&self) -> Vec<Isolation> {
        Isolation::ALL
            .into_iter()
            .filter(|i| *i == Isolation::Native || self.gvisor_available())
            .collect()
    }

    /// Refuses a backend this host cannot provide, before anything is created.
    pub(super) fn check_isolation(&self, i: Isolation) -> Result<()> {
        if i == Isolation::Gvisor && !self.gvisor_available() {
            return Err(RuntimeError::IsolationUnavailable {
                isolation: i,
                reason: "isolation gvisor is not available on this host: runsc is not installed \
                         (apt-get install runsc, or set PADDOCK_RUNSC)"
                    .into(),
            });
        }
        Ok(())
    }

    /// `runsc --root`: one state directory per data directory.
    fn runsc_root(&self) -> PathBuf {
        self.cfg.data_dir.join("gvisor")
    }

    /// Starts a gVisor sandbox's agent (`launch` for [`Isolation::Gvisor`]) and records the
    /// Sentry's pid. A Sentry that dies before its agent listens is started once more: on a
    /// loaded host this runsc now and then loses a fresh sandbox that way (about one create
    /// in 200 in the E2B suite on gVisor; the cause is not known). The first attempt's log is
    /// kept in the server's log; a second death is the create's error.
    pub(super) fn launch_gvisor(
        &self,
        dir: &Path,
        record: &mut Record,
        cfg: SetupConfig,
    ) -> Result<()> {
        match self.launch_gvisor_once(dir, record, cfg.clone()) {
            Err(RuntimeError::Setup {
                id,
                failure: reason @ SetupFailure::SentryDied { .. },
            }) => {
                let log = fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
                tracing::warn!(
                    sandbox = %id,
                    %reason,
                    log = %log.trim(),
                    "gVisor sandbox died while starting; starting it once more"
                );
                if let Some(pid) = record.pid.take() {
                    reap_orphans(&[pid]);
                }
                self.launch_gvisor_once(dir, record, cfg)
            }
            r => r,
        }
    }

    fn launch_gvisor_once(
        &self,
        dir: &Path,
        record: &mut Record,
        mut cfg: SetupConfig,
    ) -> Result<()> {
        let setup_err = |failure: SetupFailure| RuntimeError::Setup {
            id: record.id.clone(),
            failure,
        };
        let runsc = self
            .cfg
            .runsc
            .clone()
            .ok_or_else(|| setup_err(SetupFailure::NoRunsc))?;
        let state_dir = self.runsc_root();
        fs::create_dir_all(&state_dir).map_err(RuntimeError::io("creating runsc state dir"))?;
        let agent_dir = dir.join("agent");
        let _ = fs::remove_dir_all(&agent_dir);
        fs::create_dir(&agent_dir).map_err(RuntimeError::io("creating agent dir"))?;
        let sock = dir.join("agent.sock");
        let _ = fs::remove_file(&sock);
        // A resumed sandbox's state of the same id is stale.
        remove_state(&state_dir, &record.id);
        cfg.statfs_notify = false;
        let compat = prepare_compat(&self.cfg.data_dir)?;
        cfg.gvisor = Some(GvisorSetup {
            runsc,
            state_dir,
            bundle: dir.join("bundle"),
            agent_dir: agent_dir.clone(),
            platform: PLATFORM.into(),
            compat,
        });
        let log = fs::File::create(dir.join("agent.log"))
            .map_err(RuntimeError::io("creating agent log"))?;
        let mut child = Command::new(&self.cfg.agent_bin)
            .arg("setup")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(RuntimeError::io("starting agent setup"))?;
        let json = serde_json::to_vec(&cfg).map_err(RuntimeError::encode("setup config"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&json)
                .map_err(RuntimeError::io("sending setup config"))?;
        }
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out)
                .read_line(&mut line)
                .map_err(RuntimeError::io("reading setup status"))?;
        }
        let _ = child.wait();
        let pid = crate::error::setup_status(&record.id, &record.template, &line, || {
            fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
        })?;
        record.pid = Some(pid);
        record.pid_start = pid_start_time(pid);
        write_record(dir, record)?;
        take_socket(&agent_dir.join(GVISOR_AGENT_SOCK), &sock, pid).map_err(setup_err)
    }

    /// The gVisor part of teardown: runsc's state files, and the exit status of every
    /// process of ours that was in the sandbox's cgroups (`pids`, read before they were
    /// killed; the gofer is our child too once runsc exits).
    pub(super) fn teardown_gvisor(&self, id: &str, pids: &[i32]) {
        reap_orphans(pids);
        remove_state(&self.runsc_root(), id);
    }
}

/// Collects the exit status of each of `pids` (killed with the sandbox's cgroups) that is or
/// becomes our child: the gofer is ours once runsc exits, and the ptrace stubs are the
/// Sentry's (or each other's) children until those die, then ours (we are a subreaper).
/// Each is polled until it is gone, for at most a second (a number reused meanwhile by an
/// unrelated process only costs that second: `waitpid` collects our own children only).
fn reap_orphans(pids: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut left: Vec<i32> = pids.to_vec();
    while !left.is_empty() && Instant::now() < deadline {
        left.retain(|&pid| {
            let reaped = rustix::process::Pid::from_raw(pid).is_some_and(|p| {
                matches!(
                    rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG),
                    Ok(Some(_))
                )
            });
            !reaped && Path::new(&format!("/proc/{pid}")).exists()
        });
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits for the agent to bind its socket at `inside` (a host path in the directory bound
/// into the sandbox), moves it to `outside`, where nothing in the sandbox reaches, and checks
/// that what was moved is a socket. Fails if the Sentry (`pid`) dies first or after
/// [`AGENT_WAIT`].
fn take_socket(inside: &Path, outside: &Path, pid: i32) -> std::result::Result<(), SetupFailure> {
    use std::os::unix::fs::FileTypeExt as _;
    let deadline = Instant::now() + AGENT_WAIT;
    loop {
        if inside.symlink_metadata().is_ok() {
            break;
        }
        if pid_start_time(pid).is_none() {
            return Err(SetupFailure::SentryDied { stage: "started" });
        }
        if Instant::now() > deadline {
            return Err(SetupFailure::AgentLate {
                secs: AGENT_WAIT.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    fs::rename(inside, outside).map_err(|e| SetupFailure::AgentSocket {
        what: format!("could not be moved: {e}"),
    })?;
    match outside.symlink_metadata() {
        Ok(m) if m.file_type().is_socket() => {}
        _ => {
            let _ = fs::remove_file(outside);
            return Err(SetupFailure::AgentSocket {
                what: "is not a socket".into(),
            });
        }
    }
    // Bound a moment before it listens: connectable once it does. A loaded host can take
    // long to get here, so listening gets its own bound from the moment the socket appeared.
    let appeared = Instant::now();
    while let Err(e) = std::os::unix::net::UnixStream::connect(outside) {
        if pid_start_time(pid).is_none() {
            return Err(SetupFailure::SentryDied { stage: "listened" });
        }
        if Instant::now() > deadline.max(appeared + LISTEN_WAIT) {
            return Err(SetupFailure::AgentSocket {
                what: format!(
                    "does not accept connections {} ms after it appeared: {e}",
                    appeared.elapsed().as_millis()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Removes runsc's state files of sandbox `id` (their names contain the id; ids are 20
/// random characters, so no other sandbox's match).
fn remove_state(root: &Path, id: &str) {
    for e in fs::read_dir(root).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().contains(id) {
            let p = e.path();
            let _ = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pids_limit_leaves_room_for_the_sentry() {
        let l = Limits {
            pids: 512,
            ..Limits::default()
        };
        let h = host_limits(&l);
        assert_eq!(h.pids, 512 * 8 + 256);
        assert_eq!(h.memory_bytes, l.memory_bytes);
        let big = Limits {
            pids: u32::MAX,
            ..Limits::default()
        };
        assert_eq!(host_limits(&big).pids, 1 << 22);
    }

    #[test]
    fn state_files_of_one_sandbox_are_removed() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("aaaa_sandbox:aaaa.state"), "").unwrap();
        fs::write(d.path().join("bbbb_sandbox:bbbb.state"), "").unwrap();
        remove_state(d.path(), "aaaa");
        let left: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("bbbb_sandbox:bbbb.state")]
        );
    }
}
