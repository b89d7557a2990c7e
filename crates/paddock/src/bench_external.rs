//! Times external isolation tools (bubblewrap and crun) running `/bin/true`, so the benchmark
//! table can put Paddock's own sandbox start-up next to the established tools.
//!
//! Each tool gets a setup as close as it allows to a Paddock sandbox: a read-only host `/usr`
//! with the merged-`/usr` symlinks, a fresh `/proc`, a minimal `/dev`, a size-limited `/tmp`
//! tmpfs, new namespaces, no capabilities, `NO_NEW_PRIVS`, and uid 1000 inside. Paddock's default
//! limits (512 MiB memory without swap, 512 pids, 256 MiB `/tmp`) are used where the tool can apply
//! them. Everything expensive (bundle, rootfs, helper process) is prepared once in the
//! constructor, so `run_once` measures only what a sandbox start costs.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

/// Paddock's default memory limit (see `paddock_core::Limits`), so the tools are given the same
/// cgroup work to do as a default sandbox.
const MEMORY_BYTES: u64 = 512 * 1024 * 1024;
/// Paddock's default pids limit.
const PIDS: u32 = 512;
/// Paddock's default `/tmp` size.
const TMP_BYTES: u64 = 256 * 1024 * 1024;
/// The uid and gid the workload runs as inside, matching Paddock's default user.
const SANDBOX_ID: u32 = 1000;
/// First host uid/gid of the range the crun container's user namespace maps to. It is the usual
/// subordinate-id start, so container root is an unprivileged nobody on the host.
const SUBID_BASE: u32 = 200_000;
/// Size of that range: a full 16-bit id space, as container images expect.
const SUBID_COUNT: u32 = 65_536;
/// crun's state directory for root. It is passed explicitly so that `run_once` can check for a
/// leftover container by looking for its state directory instead of spawning `crun state`.
const CRUN_STATE_ROOT: &str = "/run/crun";
/// The cgroup2 mount that makes a cgroup v1 host "hybrid", which crun 1.8.1 refuses to run on.
const HYBRID_UNIFIED: &str = "/sys/fs/cgroup/unified";
/// The PATH given to the workload, because both tools are told to start from a clean environment.
const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// The top-level directories that merged-`/usr` systems turn into symlinks into `/usr`.
const USR_LINKS: [&str; 4] = ["bin", "lib", "lib64", "sbin"];

/// The error a constructor returns when the tool is not on `PATH`, so that a caller can tell
/// "not installed" (print it in the table) from "installed but broken" (a real failure) with
/// `err.downcast_ref::<NotInstalled>()`.
#[derive(Debug)]
pub struct NotInstalled {
    tool: &'static str,
}

impl NotInstalled {
    /// The name of the missing executable.
    pub fn tool(&self) -> &'static str {
        self.tool
    }
}

impl fmt::Display for NotInstalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not installed (not found in PATH)", self.tool)
    }
}

impl std::error::Error for NotInstalled {}

/// One external tool's measurement setup; construct once, then call `run_once` many times.
pub struct External {
    name: String,
    kind: Kind,
}

/// What differs between the tools; kept private so the public API stays tool-agnostic.
enum Kind {
    Bwrap {
        program: PathBuf,
        args: Vec<OsString>,
    },
    Crun(Crun),
}

impl External {
    /// bubblewrap: new user, pid, net, uts, ipc, cgroup namespaces where bwrap supports them, ro-bind of host /usr with /bin,/lib,/lib64 symlinks, fresh /proc, minimal /dev, tmpfs /tmp, runs /bin/true.
    ///
    /// Invocation (the symlinks only for directories that exist under the host's `/usr`):
    /// `bwrap --unshare-user --uid 1000 --gid 1000 --unshare-pid --unshare-net --unshare-uts
    /// --hostname sbx --unshare-ipc --unshare-cgroup-try --cap-drop ALL --die-with-parent
    /// --new-session --clearenv --setenv PATH … --ro-bind /usr /usr --symlink usr/bin /bin
    /// --symlink usr/lib /lib --symlink usr/lib64 /lib64 --symlink usr/sbin /sbin --proc /proc
    /// --dev /dev --size 268435456 --tmpfs /tmp --chdir / -- /bin/true`.
    ///
    /// bwrap can map only the caller's own uid into its user namespace, so when the benchmark runs
    /// as root the sandbox's uid 1000 is host root underneath; `--cap-drop ALL` and bwrap's
    /// always-on `NO_NEW_PRIVS` are what keep it unprivileged. bwrap has no cgroup support, so no
    /// memory or pids limit is applied.
    pub fn bwrap() -> anyhow::Result<External> {
        let program = find_in_path("bwrap")?;
        let version = tool_version(&program)?;
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
        let id = SANDBOX_ID.to_string();
        push(&["--unshare-user", "--uid", &id, "--gid", &id]);
        push(&["--unshare-pid", "--unshare-net", "--unshare-ipc"]);
        push(&["--unshare-uts", "--hostname", "sbx"]);
        // The "-try" form keeps the benchmark usable on kernels without cgroup namespaces; here
        // the namespace is created.
        push(&["--unshare-cgroup-try"]);
        // As root, bwrap would otherwise keep the full capability set inside the namespace.
        push(&["--cap-drop", "ALL"]);
        push(&["--die-with-parent", "--new-session", "--clearenv"]);
        push(&["--setenv", "PATH", SANDBOX_PATH]);
        push(&["--ro-bind", "/usr", "/usr"]);
        for link in usr_links() {
            let target = format!("usr/{link}");
            let dest = format!("/{link}");
            push(&["--symlink", &target, &dest]);
        }
        push(&["--proc", "/proc", "--dev", "/dev"]);
        push(&["--size", &TMP_BYTES.to_string(), "--tmpfs", "/tmp"]);
        push(&["--chdir", "/", "--", "/bin/true"]);
        let external = External {
            name: format!("bwrap {version}"),
            kind: Kind::Bwrap { program, args },
        };
        // One run up front turns a setup the tool rejects into a constructor error instead of
        // a failure in the middle of the timed loop, and warms the page cache.
        external.run_once().context("bwrap trial run failed")?;
        Ok(external)
    }

    /// crun with an OCI bundle in a temp dir: rootfs with ro bind of host /usr (+ symlinks), user namespace mapping root to an unprivileged uid range (e.g. 200000, 65536) if crun supports it here, pid/net/uts/ipc/mount/cgroup namespaces, memory+pids limits, /bin/true. Uses `crun run` with a unique container id per call and cleans it up.
    ///
    /// Invocation on a cgroup v1 "hybrid" host (a cgroup2 mount at `/sys/fs/cgroup/unified`):
    /// `nsenter --target=<holder pid> --mount -- crun --root=/run/crun run --bundle <tmp> <id>`.
    /// On other hosts the `nsenter` prefix is left out.
    ///
    /// Why the prefix: crun 1.8.1 refuses hybrid hosts ("cgroups in hybrid mode not supported,
    /// drop all controllers from cgroupv2"), and `--cgroup-manager=disabled` does not help
    /// because the check runs first. It works when it cannot see the cgroup2 mount. So the
    /// constructor starts one helper, `unshare --mount --propagation private -- sh -c 'umount
    /// /sys/fs/cgroup/unified && echo ready && read _'`, whose private mount namespace lacks that
    /// mount, and every run enters it with `nsenter`. The v1 memory and pids limits are still
    /// enforced. The alternative, a fresh `unshare -m sh -c 'umount … && exec crun run …'` per
    /// run, took about 12.5 ms per run in a shell loop here against 10.7 ms for the `nsenter`
    /// form, because it adds a shell and an `umount` process to every run. The `nsenter` form is
    /// also closer to a deployment that runs its whole server in such a namespace, where crun
    /// needs no wrapper at all.
    ///
    /// The container runs `/bin/true` as uid/gid 1000 with no capabilities and `NO_NEW_PRIVS`, in
    /// new user (0-65535 mapped to host 200000-265535), pid, network, ipc, uts, mount and cgroup
    /// namespaces, on a read-only rootfs with a read-only rbind of `/usr`, `/proc`, a tmpfs `/dev`
    /// with `/dev/pts` and `/dev/shm`, and a 256 MiB `/tmp` tmpfs. No `cgroupsPath` is set, so
    /// crun puts each container in `/<id>` under every hierarchy and removes it on exit. If the
    /// user namespace does not work here the constructor falls back to running without one and
    /// says so in `name()`.
    pub fn crun() -> anyhow::Result<External> {
        let crun = find_in_path("crun")?;
        let version = tool_version(&crun)?;
        let holder = if is_cgroup2_mount(Path::new(HYBRID_UNIFIED)) {
            let unshare = find_in_path("unshare")?;
            let nsenter = find_in_path("nsenter")?;
            Some(HybridWorkaround {
                holder: MountNsHolder::spawn(&unshare)?,
                nsenter,
            })
        } else {
            None
        };
        let bundle = tempfile::Builder::new()
            .prefix("paddock-bench-crun-")
            .tempdir()
            .context("creating the crun bundle directory")?;
        build_rootfs(bundle.path())?;
        let setup = Crun {
            crun,
            holder,
            bundle,
            next_id: AtomicU64::new(0),
        };
        let mut name = format!("crun {version}");
        setup.write_config(true)?;
        if let Err(userns_err) = setup.run_once() {
            // Without a working user-namespace mapping the rest of the comparison is still
            // meaningful, so fall back and label the row rather than dropping crun entirely.
            setup.write_config(false)?;
            setup.run_once().with_context(|| {
                format!("crun trial run failed without a user namespace (with one: {userns_err:#})")
            })?;
            name.push_str(" (no userns)");
        }
        Ok(External {
            name,
            kind: Kind::Crun(setup),
        })
    }

    /// Human name, e.g. "bwrap 0.8.0" / "crun 1.8.1" (read the version from the tool).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run `/bin/true` once under the tool and return the wall time from spawn to exit; error if exit status is not success (include stderr in the error).
    pub fn run_once(&self) -> anyhow::Result<Duration> {
        match &self.kind {
            Kind::Bwrap { program, args } => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                timed(cmd)
            }
            Kind::Crun(setup) => setup.run_once(),
        }
    }
}

/// Everything `crun run` needs, prepared once.
struct Crun {
    crun: PathBuf,
    holder: Option<HybridWorkaround>,
    /// The OCI bundle (`config.json` and `rootfs/`); removed when the `External` is dropped.
    bundle: TempDir,
    /// Makes every container id unique, so that a leftover from a failed run can never make
    /// the next run fail with "container already exists".
    next_id: AtomicU64,
}

/// The mount namespace that hides the cgroup2 mount from crun, and the tool to enter it.
struct HybridWorkaround {
    holder: MountNsHolder,
    nsenter: PathBuf,
}

impl Crun {
    /// A `crun` command with the hybrid-host workaround applied when needed.
    fn command(&self) -> Command {
        let mut cmd = match &self.holder {
            Some(w) => {
                let mut cmd = Command::new(&w.nsenter);
                cmd.arg(format!("--target={}", w.holder.pid()))
                    .arg("--mount")
                    .arg("--")
                    .arg(&self.crun);
                cmd
            }
            None => Command::new(&self.crun),
        };
        cmd.arg(format!("--root={CRUN_STATE_ROOT}"));
        cmd
    }

    fn run_once(&self) -> anyhow::Result<Duration> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("paddock-bench-{}-{n}", std::process::id());
        let mut cmd = self.command();
        // `nsenter --mount` moves the process to the namespace's root directory, so the bundle
        // must be given as an absolute path (`TempDir` paths are absolute).
        cmd.arg("run")
            .arg("--bundle")
            .arg(self.bundle.path())
            .arg(&id);
        let result = timed(cmd);
        // `crun run` deletes the container itself when the workload exits; a state directory
        // left behind means it failed part-way, so remove that container (and its cgroups)
        // outside the timed region.
        if result.is_err() || Path::new(CRUN_STATE_ROOT).join(&id).exists() {
            let mut delete = self.command();
            delete
                .args(["delete", "--force", &id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // A failed cleanup must not hide the run's own error, which explains more.
            let _ = delete.status();
        }
        result
    }

    /// Writes `config.json`; `userns` chooses between the mapped user namespace and none.
    fn write_config(&self, userns: bool) -> anyhow::Result<()> {
        let path = self.bundle.path().join("config.json");
        fs::write(&path, crun_config(userns)).with_context(|| format!("writing {}", path.display()))
    }
}

/// A process that keeps a private mount namespace, without the hybrid cgroup2 mount, alive for
/// the lifetime of the `External`.
struct MountNsHolder {
    child: Child,
}

impl MountNsHolder {
    fn spawn(unshare: &Path) -> anyhow::Result<MountNsHolder> {
        // The shell waits on a pipe from this process rather than sleeping, so it exits on its
        // own (and the namespace goes away) even if this process dies without running `Drop`.
        let script = format!("umount {HYBRID_UNIFIED} && echo ready && read _");
        let mut child = Command::new(unshare)
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {}", unshare.display()))?;
        let mut line = String::new();
        let read = child
            .stdout
            .take()
            .map(|out| BufReader::new(out).read_line(&mut line));
        if matches!(read, Some(Ok(_))) && line.trim() == "ready" {
            return Ok(MountNsHolder { child });
        }
        let _ = child.kill();
        let _ = child.wait();
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        bail!(
            "could not prepare a mount namespace without {HYBRID_UNIFIED} for crun: {}",
            stderr.trim()
        )
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for MountNsHolder {
    fn drop(&mut self) {
        // Only our own child is signalled, by its pid; waiting reaps it so no zombie remains.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` with stdout discarded and stderr captured, and returns the wall time from just
/// before the spawn until the exit has been reaped.
fn timed(mut cmd: Command) -> anyhow::Result<Duration> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let output = cmd
        .spawn()
        .with_context(|| format!("spawning {}", cmd.get_program().to_string_lossy()))?
        .wait_with_output()
        .with_context(|| format!("waiting for {}", cmd.get_program().to_string_lossy()))?;
    let elapsed = start.elapsed();
    if !output.status.success() {
        bail!(
            "{} exited with {}: {}",
            describe(&cmd),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(elapsed)
}

/// The command line, for error messages that say exactly what failed.
fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Looks `name` up in `PATH` like `which`, so a missing tool is reported as [`NotInstalled`]
/// before anything is spawned.
fn find_in_path(name: &'static str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| OsString::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"));
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| NotInstalled { tool: name }.into())
}

/// Reads the version from `<tool> --version`: the last word of the first line, which is the
/// version number for both `bubblewrap 0.8.0` and `crun version 1.8.1`.
fn tool_version(program: &Path) -> anyhow::Result<String> {
    let output = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} --version", program.display()))?;
    if !output.status.success() {
        bail!(
            "{} --version exited with {}: {}",
            program.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let version = stdout
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().last())
        .unwrap_or("(unknown version)");
    Ok(version.to_owned())
}

/// The merged-`/usr` links this host has, so the sandbox gets exactly the host's layout.
fn usr_links() -> impl Iterator<Item = &'static str> {
    USR_LINKS
        .into_iter()
        .filter(|link| Path::new("/usr").join(link).is_dir())
}

/// Whether `path` is a cgroup2 mount point, read from `/proc/self/mountinfo`.
fn is_cgroup2_mount(path: &Path) -> bool {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    mountinfo.lines().any(|line| {
        // Field 5 is the mount point; the filesystem type follows the " - " separator.
        let mount_point = line.split(' ').nth(4);
        let fs_type = line
            .split_once(" - ")
            .and_then(|(_, rest)| rest.split(' ').next());
        mount_point == path.to_str() && fs_type == Some("cgroup2")
    })
}

/// Creates the bundle's `rootfs`: only mount points and the merged-`/usr` symlinks, since all
/// content comes from the read-only bind of the host's `/usr`.
fn build_rootfs(bundle: &Path) -> anyhow::Result<()> {
    let rootfs = bundle.join("rootfs");
    for dir in ["proc", "dev", "usr", "tmp"] {
        let path = rootfs.join(dir);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    }
    for link in usr_links() {
        let path = rootfs.join(link);
        symlink(format!("usr/{link}"), &path)
            .with_context(|| format!("creating {}", path.display()))?;
    }
    // `TempDir` is created 0700. Container root is host uid 200000 under the user namespace and
    // must be able to reach the rootfs, so the bundle and rootfs are opened up to 0755.
    for dir in [bundle, rootfs.as_path()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} world-readable", dir.display()))?;
    }
    Ok(())
}

/// The OCI runtime config for the crun container, written by hand because the crate has no JSON
/// dependency; every value in it is a constant, so nothing needs escaping.
fn crun_config(userns: bool) -> String {
    let user_ns = if userns {
        format!(
            r#"
    "uidMappings": [{{"containerID": 0, "hostID": {SUBID_BASE}, "size": {SUBID_COUNT}}}],
    "gidMappings": [{{"containerID": 0, "hostID": {SUBID_BASE}, "size": {SUBID_COUNT}}}],"#
        )
    } else {
        String::new()
    };
    let user_ns_entry = if userns { r#"{"type": "user"}, "# } else { "" };
    // "No swap" is expressed as memory+swap equal to memory. It is only set where the kernel
    // accounts swap (v1 `memsw`), because crun fails on writing a limit file that is missing.
    let swap = if Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() {
        format!(r#", "swap": {MEMORY_BYTES}"#)
    } else {
        String::new()
    };
    format!(
        r#"{{
  "ociVersion": "1.0.2",
  "process": {{
    "terminal": false,
    "user": {{"uid": {SANDBOX_ID}, "gid": {SANDBOX_ID}}},
    "args": ["/bin/true"],
    "env": ["PATH={SANDBOX_PATH}"],
    "cwd": "/",
    "capabilities": {{"bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []}},
    "noNewPrivileges": true
  }},
  "root": {{"path": "rootfs", "readonly": true}},
  "hostname": "sbx",
  "mounts": [
    {{"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}},
    {{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}},
    {{"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}},
    {{"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}},
    {{"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro", "nosuid", "nodev"]}},
    {{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size={TMP_BYTES}"]}}
  ],
  "linux": {{{user_ns}
    "resources": {{
      "memory": {{"limit": {MEMORY_BYTES}{swap}}},
      "pids": {{"limit": {PIDS}}}
    }},
    "namespaces": [{user_ns_entry}{{"type": "pid"}}, {{"type": "network"}}, {{"type": "ipc"}}, {{"type": "uts"}}, {{"type": "mount"}}, {{"type": "cgroup"}}]
  }}
}}
"#
    )
}

#[cfg(test)]
mod tests {
    // Items are named through `super::` rather than a glob import, because a glob import is
    // reported unused when this file is compiled with `cfg(test)` into a `harness = false` target
    // (which drops the `#[test]` functions).

    #[test]
    fn failed_run_reports_status_and_stderr() {
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "echo oops >&2; exit 3"]);
        let err = super::timed(cmd).unwrap_err().to_string();
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("oops"), "{err}");
    }

    #[test]
    fn missing_tool_is_not_installed() {
        let err = super::find_in_path("paddock-no-such-tool").unwrap_err();
        let missing = err
            .downcast_ref::<super::NotInstalled>()
            .expect("NotInstalled");
        assert_eq!(missing.tool(), "paddock-no-such-tool");
    }

    #[test]
    fn crun_config_maps_users_only_when_asked() {
        let with = super::crun_config(true);
        let without = super::crun_config(false);
        assert!(with.contains(r#""hostID": 200000"#), "{with}");
        assert!(with.contains(r#"{"type": "user"}"#), "{with}");
        assert!(!without.contains("uidMappings"), "{without}");
        assert!(!without.contains(r#"{"type": "user"}"#), "{without}");
    }
}
