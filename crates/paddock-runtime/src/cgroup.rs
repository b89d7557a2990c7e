//! cgroup v1 and v2: one cgroup (per controller on v1) for each sandbox under
//! `paddock/<instance>/`, where the instance names the runtime's data directory.
//!
//! v1 (this project's dev and CI machines): memory, pids, cpu, cpuacct and freezer
//! hierarchies under `/sys/fs/cgroup/<controller>`. v2 (most real hosts): one tree at
//! `/sys/fs/cgroup`. The mode is detected once, from the filesystem type of the root.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use paddock_core::Limits;

use crate::error::{Result, RuntimeError};

/// Where the host mounts its cgroup hierarchies.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

const V1_CONTROLLERS: &[&str] = &["memory", "pids", "cpu", "cpuacct", "freezer"];

/// Which cgroup layout the host has.
#[derive(Debug, Clone)]
pub enum Cgroups {
    /// One hierarchy per controller, each at `root/<controller>`; sandboxes under `prefix`.
    V1 { root: PathBuf, prefix: PathBuf },
    /// The unified hierarchy at `root`; sandboxes under `prefix`.
    V2 { root: PathBuf, prefix: PathBuf },
}

/// Usage counters of one sandbox's cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub cpu_usage_ns: u64,
    pub memory_bytes: u64,
    pub pids: u64,
    pub oom_kills: u64,
}

impl Cgroups {
    /// Detects the host's layout under `/sys/fs/cgroup` and prepares the parent
    /// `paddock/<instance>`. Each runtime (data directory) has its own instance name, so two
    /// runtimes on one host never see, adopt or destroy each other's cgroups.
    pub fn detect(instance: &str) -> Result<Cgroups> {
        Self::detect_at(Path::new(CGROUP_ROOT), instance)
    }

    /// [`Cgroups::detect`] under another root than [`CGROUP_ROOT`] (the unit tests' fixtures:
    /// a v2 root has `cgroup.controllers`, a v1 root one directory per controller).
    pub fn detect_at(root: &Path, instance: &str) -> Result<Cgroups> {
        let root = root.to_path_buf();
        let prefix = Path::new("paddock").join(instance);
        let v2 = root.join("cgroup.controllers").exists();
        let cg = if v2 {
            Cgroups::V2 { root, prefix }
        } else {
            Cgroups::V1 { root, prefix }
        };
        cg.prepare()?;
        Ok(cg)
    }

    fn prepare(&self) -> Result<()> {
        match self {
            Cgroups::V1 { root, prefix } => {
                for c in V1_CONTROLLERS {
                    let dir = root.join(c);
                    if !dir.exists() {
                        return Err(RuntimeError::Unsupported {
                            resource: "cgroup",
                            reason: format!(
                                "cgroup v1 controller {c} is not mounted at {}",
                                dir.display()
                            ),
                        });
                    }
                    fs::create_dir_all(dir.join(prefix))
                        .map_err(RuntimeError::io("creating paddock cgroup"))?;
                }
            }
            Cgroups::V2 { root, prefix } => {
                let ctl = "+memory +pids +cpu";
                // The root may already delegate them; a failure here surfaces below.
                let _ = fs::write(root.join("cgroup.subtree_control"), ctl);
                // Controllers must be enabled at every level down to the sandboxes' parent.
                let mut parent = root.clone();
                for part in prefix.components() {
                    parent.push(part);
                    fs::create_dir_all(&parent)
                        .map_err(RuntimeError::io("creating paddock cgroup"))?;
                    fs::write(parent.join("cgroup.subtree_control"), ctl).map_err(|e| {
                        RuntimeError::Unsupported {
                            resource: "cgroup",
                            reason: format!(
                                "enabling memory, pids and cpu controllers in {}: {e}",
                                parent.display()
                            ),
                        }
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Removes this instance's own directories (`paddock/<instance>`, one per controller on
    /// v1) if they are empty; the shared `paddock` parent stays, other instances use it.
    pub fn remove_instance(&self) -> Result<()> {
        let dirs: Vec<PathBuf> = match self {
            Cgroups::V1 { root, prefix } => V1_CONTROLLERS
                .iter()
                .map(|c| root.join(c).join(prefix))
                .collect(),
            Cgroups::V2 { root, prefix } => vec![root.join(prefix)],
        };
        for d in dirs {
            match fs::remove_dir(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(RuntimeError::io(format!("removing cgroup {}", d.display()))(e));
                }
            }
        }
        Ok(())
    }

    /// The cgroup directories of sandbox `id` (one per controller on v1).
    pub fn dirs(&self, id: &str) -> Vec<PathBuf> {
        match self {
            Cgroups::V1 { root, prefix } => V1_CONTROLLERS
                .iter()
                .map(|c| root.join(c).join(prefix).join(id))
                .collect(),
            Cgroups::V2 { root, prefix } => vec![root.join(prefix).join(id)],
        }
    }

    /// The ids that have a cgroup on this host.
    pub fn existing(&self) -> Vec<String> {
        let parent = match self {
            Cgroups::V1 { root, prefix } => root.join("pids").join(prefix),
            Cgroups::V2 { root, prefix } => root.join(prefix),
        };
        let mut out: Vec<String> = fs::read_dir(parent)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        out.sort();
        out
    }

    /// Creates the cgroups of `id` and applies `limits`. Returns the `cgroup.procs` files the
    /// setup process writes itself into.
    pub fn create(&self, id: &str, limits: &Limits) -> Result<Vec<PathBuf>> {
        let dirs = self.dirs(id);
        for d in &dirs {
            fs::create_dir(d)
                .map_err(RuntimeError::io(format!("creating cgroup {}", d.display())))?;
        }
        self.set_limits(id, limits)?;
        Ok(dirs.iter().map(|d| d.join("cgroup.procs")).collect())
    }

    /// Writes `limits` (memory, CPU, tasks) to the existing cgroups of `id`: at create, and
    /// when a pooled sandbox is handed out with the limits of its create (`docs/pools.md`).
    pub fn set_limits(&self, id: &str, limits: &Limits) -> Result<()> {
        let dirs = self.dirs(id);
        let w = |dir: &Path, file: &str, val: String| -> Result<()> {
            fs::write(dir.join(file), &val)
                .map_err(RuntimeError::io(format!("setting {file}={val}")))
        };
        let quota = u64::from(limits.cpu_millis) * 100; // per 100 ms period
        match self {
            Cgroups::V1 { root, prefix } => {
                let c = |name: &str| root.join(name).join(prefix).join(id);
                w(
                    &c("memory"),
                    "memory.limit_in_bytes",
                    limits.memory_bytes.to_string(),
                )?;
                // Swap accounting is optional in v1; where it exists, forbid swap.
                let memsw = c("memory").join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    let _ = fs::write(memsw, limits.memory_bytes.to_string());
                }
                w(&c("pids"), "pids.max", limits.pids.to_string())?;
                w(&c("cpu"), "cpu.cfs_period_us", "100000".into())?;
                w(&c("cpu"), "cpu.cfs_quota_us", quota.to_string())?;
            }
            Cgroups::V2 { .. } => {
                let d = &dirs[0];
                w(d, "memory.max", limits.memory_bytes.to_string())?;
                let _ = fs::write(d.join("memory.swap.max"), "0");
                w(d, "pids.max", limits.pids.to_string())?;
                w(d, "cpu.max", format!("{quota} 100000"))?;
            }
        }
        Ok(())
    }

    /// Pids currently in the sandbox's cgroup.
    pub fn procs(&self, id: &str) -> Vec<i32> {
        let d = match self {
            Cgroups::V1 { root, prefix } => root.join("pids").join(prefix).join(id),
            Cgroups::V2 { root, prefix } => root.join(prefix).join(id),
        };
        fs::read_to_string(d.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Kills every process in the cgroup and removes it. v2 uses `cgroup.kill`; v1 freezes
    /// the cgroup first so nothing can fork between listing and killing.
    pub fn destroy(&self, id: &str) -> Result<()> {
        let dirs = self.dirs(id);
        if dirs.iter().all(|d| !d.exists()) {
            return Ok(());
        }
        self.kill_all(id)?;
        self.remove_dirs(id)
    }

    /// Kills every process in the cgroup of `id` and waits until none is left; the cgroup
    /// stays (a `filesystem` pause keeps it, so the sandbox's uid-range claim stays valid).
    pub fn kill_all(&self, id: &str) -> Result<()> {
        let dirs = self.dirs(id);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self {
                // Atomic in the kernel: no pid numbers involved.
                Cgroups::V2 { .. } => {
                    let _ = fs::write(dirs[0].join("cgroup.kill"), "1");
                }
                // Freeze first: a frozen process cannot exit, so its pid cannot be recycled
                // for someone else's process between reading cgroup.procs and kill().
                Cgroups::V1 { root, prefix } => {
                    let freezer = root.join("freezer").join(prefix).join(id);
                    let _ = fs::write(freezer.join("freezer.state"), "FROZEN");
                    let frozen_by = Instant::now() + Duration::from_millis(500);
                    while fs::read_to_string(freezer.join("freezer.state"))
                        .is_ok_and(|s| s.trim() == "FREEZING")
                        && Instant::now() < frozen_by
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    for pid in self.procs(id) {
                        // The target is frozen in this cgroup, so the pid still names it.
                        if let Some(p) = rustix::process::Pid::from_raw(pid) {
                            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                        }
                    }
                    let _ = fs::write(freezer.join("freezer.state"), "THAWED");
                }
            }
            let settle = Instant::now() + Duration::from_millis(500);
            while !self.procs(id).is_empty() && Instant::now() < settle {
                std::thread::sleep(Duration::from_millis(1));
            }
            let left = self.procs(id);
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(RuntimeError::Io {
                    what: format!("processes {left:?} of sandbox {id} survived SIGKILL"),
                    source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                });
            }
        }
        Ok(())
    }

    /// Freezes (`true`) or thaws the cgroup of `id` and waits, at most 5 s, until the kernel
    /// says it is done: v1 `freezer.state` (`FROZEN`/`THAWED`), v2 `cgroup.freeze` and the
    /// `frozen` line of `cgroup.events`. A frozen sandbox uses no CPU; its memory stays.
    pub fn freeze(&self, id: &str, frozen: bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let (file, value, check, want): (PathBuf, &str, PathBuf, &str) = match self {
            Cgroups::V1 { root, prefix } => {
                let d = root.join("freezer").join(prefix).join(id);
                let v = if frozen { "FROZEN" } else { "THAWED" };
                (d.join("freezer.state"), v, d.join("freezer.state"), v)
            }
            Cgroups::V2 { root, prefix } => {
                let d = root.join(prefix).join(id);
                let (v, w) = if frozen {
                    ("1", "frozen 1")
                } else {
                    ("0", "frozen 0")
                };
                (d.join("cgroup.freeze"), v, d.join("cgroup.events"), w)
            }
        };
        fs::write(&file, value).map_err(RuntimeError::io(format!(
            "{} the sandbox's cgroup",
            if frozen { "freezing" } else { "thawing" }
        )))?;
        loop {
            let now = fs::read_to_string(&check).unwrap_or_default();
            if now.lines().any(|l| l.trim() == want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(RuntimeError::Io {
                    what: format!("the cgroup of sandbox {id} did not reach {want:?}"),
                    source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                });
            }
            if frozen {
                // v1 retries a freeze that stalled in FREEZING when the state is written again.
                let _ = fs::write(&file, value);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether the cgroup of `id` is frozen (or freezing).
    pub fn is_frozen(&self, id: &str) -> bool {
        match self {
            Cgroups::V1 { root, prefix } => fs::read_to_string(
                root.join("freezer")
                    .join(prefix)
                    .join(id)
                    .join("freezer.state"),
            )
            .is_ok_and(|s| s.trim() != "THAWED"),
            Cgroups::V2 { root, prefix } => {
                fs::read_to_string(root.join(prefix).join(id).join("cgroup.freeze"))
                    .is_ok_and(|s| s.trim() == "1")
            }
        }
    }

    /// Gives back the memory still charged to the (empty) cgroup of `id`: the page cache of
    /// the files its processes wrote. v1 `memory.force_empty`, v2 `memory.reclaim` (kernels
    /// 5.19 and later); best effort, whatever cannot be reclaimed stays charged.
    pub fn reclaim_memory(&self, id: &str) {
        match self {
            Cgroups::V1 { root, prefix } => {
                let d = root.join("memory").join(prefix).join(id);
                let _ = fs::write(d.join("memory.force_empty"), "0");
            }
            Cgroups::V2 { root, prefix } => {
                let d = root.join(prefix).join(id);
                let used = fs::read_to_string(d.join("memory.current")).unwrap_or_default();
                let _ = fs::write(d.join("memory.reclaim"), used.trim());
            }
        }
    }

    /// The `cgroup.procs` files of the existing cgroups of `id`, for a setup process that
    /// starts the sandbox again in them (a `filesystem` resume).
    pub fn procs_files(&self, id: &str) -> Vec<PathBuf> {
        self.dirs(id)
            .iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Removes the (empty) cgroup directories of `id`.
    fn remove_dirs(&self, id: &str) -> Result<()> {
        let dirs = self.dirs(id);
        for d in dirs {
            // rmdir can race with the kernel still releasing the last task; retry briefly.
            let mut tries = 0;
            while d.exists() {
                match fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(_) if tries < 500 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => {
                        return Err(
                            RuntimeError::io(format!("removing cgroup {}", d.display()))(e),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads the usage counters of sandbox `id`.
    /// How many times the OOM killer struck in sandbox `id`: one file, for the exec path
    /// (which reads it before and after every command; [`Cgroups::stats`] reads four).
    pub fn oom_kills(&self, id: &str) -> u64 {
        let p = match self {
            Cgroups::V1 { root, prefix } => root
                .join("memory")
                .join(prefix)
                .join(id)
                .join("memory.oom_control"),
            Cgroups::V2 { root, prefix } => root.join(prefix).join(id).join("memory.events"),
        };
        // Read twice on every exec's path: one read into a buffer on the stack (the file is
        // under 200 bytes and the kernel answers it whole) instead of `read_to_string`'s
        // stat and three reads.
        let mut buf = [0u8; 512];
        let n = fs::File::open(&p)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut buf))
            .unwrap_or(0);
        let text = if n < buf.len() {
            String::from_utf8_lossy(&buf[..n])
        } else {
            fs::read_to_string(p).unwrap_or_default().into()
        };
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn stats(&self, id: &str) -> CgroupStats {
        let read = |p: PathBuf| fs::read_to_string(p).unwrap_or_default();
        let num = |s: String| s.trim().parse::<u64>().unwrap_or(0);
        let field = |s: &str, key: &str| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix(key)
                        .and_then(|v| v.trim().parse::<u64>().ok())
                })
                .unwrap_or(0)
        };
        match self {
            Cgroups::V1 { root, prefix } => {
                let c = |ctl: &str, f: &str| root.join(ctl).join(prefix).join(id).join(f);
                CgroupStats {
                    cpu_usage_ns: num(read(c("cpuacct", "cpuacct.usage"))),
                    memory_bytes: num(read(c("memory", "memory.usage_in_bytes"))),
                    pids: num(read(c("pids", "pids.current"))),
                    oom_kills: field(&read(c("memory", "memory.oom_control")), "oom_kill "),
                }
            }
            Cgroups::V2 { root, prefix } => {
                let d = root.join(prefix).join(id);
                CgroupStats {
                    cpu_usage_ns: field(&read(d.join("cpu.stat")), "usage_usec ") * 1000,
                    memory_bytes: num(read(d.join("memory.current"))),
                    pids: num(read(d.join("pids.current"))),
                    oom_kills: field(&read(d.join("memory.events")), "oom_kill "),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            memory_bytes: 256 << 20,
            pids: 128,
            cpu_millis: 1500,
            ..Limits::default()
        }
    }

    fn read(p: PathBuf) -> String {
        fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn v1_fixture() -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        for c in V1_CONTROLLERS {
            fs::create_dir(t.path().join(c)).expect("controller dir");
        }
        t
    }

    #[test]
    fn v1_layout_limits_stats_and_removal() {
        let t = v1_fixture();
        let cg = Cgroups::detect_at(t.path(), "inst").expect("detect v1");
        assert!(matches!(cg, Cgroups::V1 { .. }), "{cg:?}");
        for c in V1_CONTROLLERS {
            assert!(t.path().join(c).join("paddock/inst").is_dir(), "{c}");
        }
        let procs = cg.create("sbx1", &limits()).expect("create");
        assert_eq!(procs.len(), V1_CONTROLLERS.len());
        let d = |c: &str| t.path().join(c).join("paddock/inst/sbx1");
        assert_eq!(read(d("memory").join("memory.limit_in_bytes")), "268435456");
        assert_eq!(read(d("pids").join("pids.max")), "128");
        assert_eq!(read(d("cpu").join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(d("cpu").join("cpu.cfs_quota_us")), "150000");
        assert_eq!(cg.existing(), vec!["sbx1".to_owned()]);
        assert_eq!(cg.dirs("sbx1").len(), V1_CONTROLLERS.len());

        fs::write(d("cpuacct").join("cpuacct.usage"), "123456789\n").expect("w");
        fs::write(d("memory").join("memory.usage_in_bytes"), "4096\n").expect("w");
        fs::write(d("pids").join("pids.current"), "3\n").expect("w");
        fs::write(
            d("memory").join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .expect("w");
        fs::write(d("pids").join("cgroup.procs"), "10\n11\n").expect("w");
        assert_eq!(
            cg.stats("sbx1"),
            CgroupStats {
                cpu_usage_ns: 123_456_789,
                memory_bytes: 4096,
                pids: 3,
                oom_kills: 2,
            }
        );
        assert_eq!(cg.oom_kills("sbx1"), 2, "the exec path's one-file read");
        assert_eq!(cg.procs("sbx1"), vec![10, 11]);
        // A missing sandbox reads as zeros, not an error.
        assert_eq!(cg.stats("nope"), CgroupStats::default());
        assert_eq!(cg.oom_kills("nope"), 0);

        // The instance's directories go only once they are empty.
        assert!(
            cg.remove_instance().is_err(),
            "removed a non-empty instance"
        );
        for c in V1_CONTROLLERS {
            fs::remove_dir_all(d(c)).expect("clear");
        }
        cg.remove_instance().expect("remove instance");
        for c in V1_CONTROLLERS {
            assert!(!t.path().join(c).join("paddock/inst").exists(), "{c}");
            assert!(
                t.path().join(c).join("paddock").is_dir(),
                "shared parent kept"
            );
        }
        // Removing twice is not an error.
        cg.remove_instance().expect("remove instance again");
    }

    #[test]
    fn v1_without_a_controller_is_unsupported() {
        let t = v1_fixture();
        fs::remove_dir(t.path().join("freezer")).expect("rm");
        let e = Cgroups::detect_at(t.path(), "inst").expect_err("no freezer");
        assert!(
            matches!(
                e,
                RuntimeError::Unsupported {
                    resource: "cgroup",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("freezer"), "{e}");
    }

    #[test]
    fn v2_layout_limits_stats_and_removal() {
        let t = tempfile::tempdir().expect("tempdir");
        fs::write(t.path().join("cgroup.controllers"), "cpu memory pids\n").expect("w");
        let cg = Cgroups::detect_at(t.path(), "inst").expect("detect v2");
        assert!(matches!(cg, Cgroups::V2 { .. }), "{cg:?}");
        // Controllers are delegated at every level down to the sandboxes' parent.
        for level in ["", "paddock", "paddock/inst"] {
            assert_eq!(
                read(t.path().join(level).join("cgroup.subtree_control")),
                "+memory +pids +cpu",
                "{level:?}"
            );
        }
        let procs = cg.create("sbx2", &limits()).expect("create");
        let d = t.path().join("paddock/inst/sbx2");
        assert_eq!(procs, vec![d.join("cgroup.procs")]);
        assert_eq!(read(d.join("memory.max")), "268435456");
        assert_eq!(read(d.join("memory.swap.max")), "0");
        assert_eq!(read(d.join("pids.max")), "128");
        assert_eq!(read(d.join("cpu.max")), "150000 100000");

        fs::write(d.join("cpu.stat"), "usage_usec 2500\nuser_usec 2000\n").expect("w");
        fs::write(d.join("memory.current"), "8192\n").expect("w");
        fs::write(d.join("pids.current"), "1\n").expect("w");
        fs::write(
            d.join("memory.events"),
            "low 0\nhigh 0\noom 1\noom_kill 1\n",
        )
        .expect("w");
        assert_eq!(
            cg.stats("sbx2"),
            CgroupStats {
                cpu_usage_ns: 2_500_000,
                memory_bytes: 8192,
                pids: 1,
                oom_kills: 1,
            }
        );
        assert_eq!(cg.oom_kills("sbx2"), 1, "the exec path's one-file read");
        assert_eq!(cg.existing(), vec!["sbx2".to_owned()]);
        fs::remove_dir_all(&d).expect("clear");
        fs::remove_file(t.path().join("paddock/inst/cgroup.subtree_control")).expect("rm");
        cg.remove_instance().expect("remove instance");
        assert!(!t.path().join("paddock/inst").exists());
    }
}
