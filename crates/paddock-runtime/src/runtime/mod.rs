//! Sandbox lifecycle on one host: create, exec, stats, destroy, and reconciliation.
//!
//! This module holds the types, the [`Runtime`] struct and the helpers its parts share;
//! the parts are `open` (open, reconciliation and adoption, close), `create` (create,
//! destroy, network changes), `templates` (templates, the layer store, `commit_layer`) and
//! `sandbox` ([`Sandbox`]: exec, stats, files, ports).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paddock_core::{Isolation, Limits, NetworkPolicy, SandboxId};
use serde::{Deserialize, Serialize};

use crate::cgroup::Cgroups;
use crate::client::AgentClient;
use crate::error::{Result, RuntimeError};
use crate::layers::Layers;
use crate::template::Template;

mod create;
mod gvisor;
mod netslots;
mod open;
mod pause;
mod pooled;
mod raw;
mod sandbox;
mod snapshots;
mod templates;
mod volumes;

pub use netslots::{MAX_NET_SLOTS, NetSlotStats};
pub use pause::PauseMode;
pub use pooled::Personalise;
pub use raw::{RAW_LENGTH_HEADER, RAW_UPGRADE, RawExchange};

/// First host uid of the first sandbox's range; ranges are 65536 ids wide.
const ID_BASE: u32 = 1 << 20;
const ID_COUNT: u32 = 65536;
/// Number of uid ranges, i.e. the most sandboxes one host can hold.
const SLOTS: u32 = 16_000;

/// Where the runtime keeps its state and finds the agent.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Data directory: templates, the layer filesystem and its image.
    pub data_dir: PathBuf,
    /// The `paddock-agent` binary.
    pub agent_bin: PathBuf,
    /// Size of the sparse layer image created when the data directory is not on btrfs.
    pub layers_image_size: u64,
    /// Log filter for agents (`warn`, `debug`, ...).
    pub agent_log: String,
    /// Where sandbox resolvers forward allowed queries (default: the host's first
    /// `nameserver`).
    pub dns_upstream: Option<std::net::SocketAddr>,
    /// The `runsc` binary for gVisor sandboxes (default: `$PADDOCK_RUNSC`, else `runsc` on
    /// `PATH`); None: gVisor sandboxes are refused with a clear error.
    pub runsc: Option<PathBuf>,
    /// How many prepared network slots to keep for networked creates (`docs/network.md`;
    /// 0: none, at most [`MAX_NET_SLOTS`]).
    pub net_slots: usize,
}

impl RuntimeConfig {
    /// Defaults for `data_dir`: the agent next to the current executable, a 64 GiB sparse
    /// layer image (it only takes the space sandboxes write).
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        RuntimeConfig {
            data_dir: data_dir.into(),
            agent_bin: default_agent_bin(),
            layers_image_size: 64 << 30,
            agent_log: "warn".into(),
            dns_upstream: None,
            runsc: gvisor::find_runsc(),
            net_slots: 0,
        }
    }
}

/// The `sudo` shim that belongs to agent binary `agent`: `paddock-sudo` beside it.
fn sudo_bin_for(agent: &Path) -> PathBuf {
    agent.with_file_name("paddock-sudo")
}

/// `$PADDOCK_AGENT_BIN`, else `paddock-agent` next to the running executable (or next to
/// its parent directory, which is where cargo puts binaries relative to test executables).
pub fn default_agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PADDOCK_AGENT_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().unwrap_or(Path::new("."));
    let here = dir.join("paddock-agent");
    if here.exists() {
        return here;
    }
    dir.parent()
        .map(|p| p.join("paddock-agent"))
        .unwrap_or(here)
}

/// What to create.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    pub template: String,
    pub limits: Limits,
    /// Environment of every process in the sandbox.
    pub env: BTreeMap<String, String>,
    /// Default user for processes; must exist in the template. `None`: `user`.
    pub user: Option<String>,
    /// The id to give the sandbox (the server records it before creating). `None`: random.
    pub id: Option<SandboxId>,
    /// What the sandbox may reach on the network.
    pub network: NetworkPolicy,
    /// Secrets as environment variables, on top of `env` (their values never in `Debug`).
    pub secret_env: BTreeMap<String, paddock_core::SecretValue>,
    /// Secrets as files under `/run/secrets` (a read-only tmpfs), mode 0400, owned by the
    /// sandbox's default user.
    pub secret_files: BTreeMap<String, paddock_core::SecretValue>,
    /// The isolation backend.
    pub isolation: Isolation,
    /// Volumes (made with [`Runtime::create_volume`]) to mount.
    pub volumes: Vec<VolumeMount>,
}

/// A volume mounted into a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// The volume's id (its subvolume's name).
    pub volume: String,
    /// Absolute path inside the sandbox (`paddock_core::check_mount_path`).
    pub path: String,
    pub read_only: bool,
}

impl Default for CreateSpec {
    fn default() -> Self {
        CreateSpec {
            template: "base".into(),
            limits: Limits::default(),
            env: BTreeMap::new(),
            user: None,
            id: None,
            network: NetworkPolicy::none(),
            secret_env: BTreeMap::new(),
            secret_files: BTreeMap::new(),
            isolation: Isolation::Native,
            volumes: Vec::new(),
        }
    }
}

/// What the runtime persists per sandbox, before the sandbox starts running.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    slot: u32,
    template: String,
    user: String,
    /// Host pid of the sandbox's PID 1 and its start time (to tell pid reuse apart).
    pid: Option<i32>,
    pid_start: Option<u64>,
    memory_bytes: u64,
    created_unix_ms: u64,
    #[serde(default)]
    network: NetworkPolicy,
    /// The disk limit, which `statfs` inside reports as the size of its root.
    #[serde(default)]
    disk_bytes: Option<u64>,
    /// Set while the sandbox is paused, to how: a runtime opening the data directory
    /// adopts a `full`-paused sandbox without talking to its frozen agent, and keeps a
    /// `filesystem`-paused one, whose PID 1 is gone, to start it again at resume.
    #[serde(default)]
    paused: Option<PauseMode>,
    /// What a `filesystem` resume needs to start PID 1 again as it was: the sandbox's own
    /// env vars (the template's go under them again), the `/tmp` size, cpu and pids.
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    tmp_bytes: u64,
    /// The isolation backend it runs on (records written before there was a choice are
    /// native).
    #[serde(default)]
    isolation: Isolation,
    /// Volumes mounted at every start (create and `filesystem` resume).
    #[serde(default)]
    volumes: Vec<VolumeMount>,
}

/// A running sandbox.
#[derive(Debug)]
pub struct Sandbox {
    pub id: SandboxId,
    /// Host pid of the agent (the sandbox's PID 1).
    pub pid: i32,
    /// First host uid of the sandbox's range.
    pub uid_base: u32,
    pub user: String,
    pub template: String,
    pub dir: PathBuf,
    pub agent: AgentClient,
    /// Its uid slot, which also names its network link (`pdk<slot>`) and addresses.
    pub slot: u32,
    network: Mutex<NetworkPolicy>,
    cgroups: Cgroups,
    /// A pidfd on PID 1 (a gVisor sandbox's: its Sentry): signals through it can never hit a
    /// recycled pid.
    pidfd: Option<std::os::fd::OwnedFd>,
    /// The isolation backend it runs on.
    pub isolation: Isolation,
    /// Made for a warm pool and not handed out yet: [`Runtime::list`] and [`Runtime::get`]
    /// do not see it (`pooled`).
    pooled: std::sync::atomic::AtomicBool,
}

/// A sandbox found on the host, for reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSandbox {
    pub id: String,
    /// Host pid of its PID 1, if it is alive.
    pub pid: Option<i32>,
    pub has_cgroup: bool,
    pub has_layer: bool,
}

/// One command to run to completion.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// Program and arguments (no shell unless you ask for one).
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    /// User to run as; `None`: the sandbox's default user.
    pub user: Option<String>,
    /// Bytes written to stdin, which is then closed. `None`: stdin is /dev/null.
    pub stdin: Option<Vec<u8>>,
    /// Kill the command (and everything it started) after this long.
    pub timeout: Option<Duration>,
    /// Cap on captured bytes per stream; the rest is dropped and flagged. Default 16 MiB.
    pub max_output: Option<usize>,
}

/// How a command ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecResult {
    pub pid: u32,
    /// Exit code when it exited normally.
    pub exit_code: Option<i32>,
    /// Go-style status text, e.g. `exit status 1` or `signal: killed`.
    pub status: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration: Duration,
    /// Killed because `timeout` elapsed.
    pub timed_out: bool,
    /// The sandbox's OOM killer fired while the command ran.
    pub oom_killed: bool,
}

/// Usage of one sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub cpu_usage_ns: u64,
    pub memory_bytes: u64,
    pub pids: u64,
    pub disk_bytes: Option<u64>,
    pub oom_kills: u64,
}

/// What adoption at open did to the adopted sandboxes' networks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AdoptionReport {
    /// Sandboxes adopted with their network re-created (link, rules, resolver, resolv.conf).
    pub repaired: Vec<String>,
    /// Sandboxes destroyed because their network could not be restored, with why.
    pub failed: Vec<(String, String)>,
}

/// The native runtime of one host.
#[derive(Debug)]
pub struct Runtime {
    cfg: RuntimeConfig,
    cgroups: Cgroups,
    layers: Layers,
    templates: std::sync::RwLock<BTreeMap<String, Template>>,
    slots: Mutex<BTreeSet<u32>>,
    claims: crate::slots::SlotClaims,
    live: Mutex<HashMap<String, Arc<Sandbox>>>,
    /// Paused sandboxes and how. A `full`-paused one is also in `live` (frozen); a
    /// `filesystem`-paused one is not (it has no PID 1), but keeps its slot and layer.
    paused: Mutex<HashMap<String, PauseMode>>,
    host_memory: u64,
    net: crate::net::Net,
    /// What adoption at open repaired or had to give up (`take_adoption_report`).
    adoption: Mutex<AdoptionReport>,
    /// The agent's private loader and libraries (see `agentlib`); None for a static agent.
    agent_lib: Option<PathBuf>,
    /// The `sudo` shim binary, next to the agent.
    sudo_bin: PathBuf,
    /// Shared while open; see `datadir`.
    open_lock: crate::datadir::OpenLock,
    /// Answers the sandboxes' `statfs` calls with their disk limits (None: not on this
    /// kernel).
    statfs: Option<crate::statfs::StatfsServer>,
    /// Set by `close`: no sandbox is created after it.
    closed: std::sync::atomic::AtomicBool,
    /// The stock of prepared network slots (`netslots`).
    netslots: Arc<netslots::NetSlots>,
}

impl Runtime {
    /// What a host-wide uid-range claim of sandbox `id` points at: its first cgroup dir.
    fn slot_marker(&self, id: &str) -> PathBuf {
        self.cgroups.dirs(id).into_iter().next().unwrap_or_default()
    }

    fn read_record(&self, id: &str) -> Option<Record> {
        let p = self.layers.sandboxes_dir().join(id).join("record.json");
        serde_json::from_slice(&fs::read(p).ok()?).ok()
    }

    fn sandbox_from(&self, r: &Record, pid: i32) -> Sandbox {
        let dir = self.layers.sandboxes_dir().join(&r.id);
        Sandbox {
            id: r.id.parse().unwrap_or_else(|_| SandboxId::random()),
            pid,
            // Under gVisor the gofer writes files with the sandbox's own ids: no shift.
            uid_base: match r.isolation {
                Isolation::Native => ID_BASE + r.slot * ID_COUNT,
                Isolation::Gvisor => 0,
            },
            user: r.user.clone(),
            template: r.template.clone(),
            agent: AgentClient::new(dir.join("agent.sock")),
            dir,
            slot: r.slot,
            network: Mutex::new(r.network.clone()),
            cgroups: self.cgroups.clone(),
            pidfd: open_pidfd(pid, r.pid_start),
            isolation: r.isolation,
            pooled: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Starts answering `statfs` in sandbox `sbx` (see `statfs`).
    fn answer_statfs(&self, sbx: &Sandbox, disk_bytes: Option<u64>) {
        // gVisor answers statfs itself (docs/isolation.md); its Sentry has no listener.
        if sbx.isolation != Isolation::Native {
            return;
        }
        if let (Some(server), Some(pidfd)) = (&self.statfs, sbx.pidfd.as_ref()) {
            use std::os::fd::AsFd;
            server.register(
                sbx.id.as_str(),
                pidfd.as_fd(),
                sbx.pid,
                disk_bytes,
                self.layers.subvolume(sbx.id.as_str()),
            );
        }
    }

    /// Sandboxes this runtime holds (not the pooled ones nobody was given yet).
    pub fn list(&self) -> Vec<Arc<Sandbox>> {
        let mut v: Vec<_> = self
            .live
            .lock()
            .expect("live poisoned")
            .values()
            .filter(|s| !s.is_pooled())
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The sandbox with this id, if this runtime holds it (a pooled sandbox nobody was
    /// given yet is not found).
    pub fn get(&self, id: &str) -> Result<Arc<Sandbox>> {
        self.live
            .lock()
            .expect("live poisoned")
            .get(id)
            .filter(|s| !s.is_pooled())
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound { id: id.to_owned() })
    }

    /// Everything that exists on the host under Paddock's prefixes, whether or not this
    /// runtime holds it.
    pub fn list_host(&self) -> Vec<HostSandbox> {
        let layers: BTreeSet<String> = self.layers.existing().into_iter().collect();
        let cgroups: BTreeSet<String> = self.cgroups.existing().into_iter().collect();
        layers
            .union(&cgroups)
            .map(|id| {
                let pid = self
                    .read_record(id)
                    .and_then(|r| Some((r.pid?, r.pid_start?)))
                    .and_then(|(pid, start)| {
                        // A PID 1 that already left its cgroup is exiting (the kernel tears
                        // its pid namespace down after `cgroup_exit`): not adoptable.
                        (pid_start_time(pid) == Some(start) && in_cgroup_of(pid, id)).then_some(pid)
                    });
                HostSandbox {
                    id: id.clone(),
                    pid,
                    has_cgroup: cgroups.contains(id),
                    has_layer: layers.contains(id),
                }
            })
            .collect()
    }
}

/// Start time of `pid` in clock ticks since boot (field 22 of `/proc/pid/stat`).
fn pid_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether process `pid` is still in a cgroup of sandbox `id` (its `/proc/<pid>/cgroup` names
/// the id). An exiting process is moved out of its cgroups before it becomes a zombie.
fn in_cgroup_of(pid: i32, id: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .is_ok_and(|c| c.lines().any(|l| l.ends_with(&format!("/{id}"))))
}

/// Opens a pidfd on `pid` and checks it is still the process that started at `start`.
fn open_pidfd(pid: i32, start: Option<u64>) -> Option<std::os::fd::OwnedFd> {
    let p = rustix::process::Pid::from_raw(pid)?;
    let fd = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()?;
    // Checked after opening: if the start time still matches, the fd names our process.
    (start.is_some() && pid_start_time(pid) == start).then_some(fd)
}

/// A TCP port listening inside a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListeningPort {
    pub port: u16,
    /// The local address it is bound to (`0.0.0.0`, `127.0.0.1`, `::`, ...).
    pub address: std::net::IpAddr,
}

/// Writes the record atomically, 0600: it holds the sandbox's env vars (for a `filesystem`
/// resume), which may be secrets.
fn write_record(dir: &Path, r: &Record) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = dir.join("record.json.tmp");
    let json = serde_json::to_vec_pretty(r).map_err(RuntimeError::encode("sandbox record"))?;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&json))
        .map_err(RuntimeError::io("writing record"))?;
    fs::rename(&tmp, dir.join("record.json")).map_err(RuntimeError::io("writing record"))
}
