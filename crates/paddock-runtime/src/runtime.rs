//! Sandbox lifecycle on one host: create, exec, stats, destroy, and reconciliation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connectrpc::client::CallOptions;
use paddock_core::{AGENT_LISTEN_FD, Limits, NetworkMode, NetworkPolicy, SandboxId, SetupConfig};
use paddock_envd::process::__buffa::oneof::process_event::Event;
use paddock_envd::process::__buffa::oneof::process_event::data_event::Output;
use paddock_envd::process::__buffa::oneof::process_input::Input;
use paddock_envd::process::__buffa::oneof::process_selector::Selector;
use paddock_envd::process::{
    CloseStdinRequest, ProcessConfig, ProcessInput, ProcessSelector, SendInputRequest, StartRequest,
};
use serde::{Deserialize, Serialize};

use crate::cgroup::Cgroups;
use crate::client::AgentClient;
use crate::error::{Result, RuntimeError};
use crate::layers::Layers;
use crate::template::{self, Template};

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
    /// A pidfd on PID 1: signals through it can never hit a recycled pid.
    pidfd: Option<std::os::fd::OwnedFd>,
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

impl AdoptionReport {
    async fn fail(&mut self, rt: &Arc<Runtime>, id: &str, why: String) {
        tracing::error!(sandbox = %id, "its network cannot be restored: {why}");
        if let Err(e) = rt.destroy(id).await {
            tracing::warn!(sandbox = %id, "cleanup failed: {e}");
        }
        self.failed.push((id.to_owned(), why));
    }
}

/// The name of the runtime in `data_dir`: 8 random characters kept in `data_dir/instance`,
/// made on first open. It scopes host-wide resources (cgroups) to this data directory.
fn instance_name(data_dir: &Path) -> Result<String> {
    let p = data_dir.join("instance");
    match fs::read_to_string(&p) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(RuntimeError::io("reading instance name")(e)),
    }
    let name: String = SandboxId::random().as_str()[..8].to_owned();
    fs::write(&p, format!("{name}\n")).map_err(RuntimeError::io("writing instance name"))?;
    Ok(name)
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
    /// Set by `close`: no sandbox is created after it.
    closed: std::sync::atomic::AtomicBool,
}

impl Runtime {
    /// Opens (and if needed initialises) the runtime in `cfg.data_dir`, then reconciles:
    /// sandboxes whose PID 1 is alive are adopted, everything else under Paddock's prefixes
    /// (half-created sandboxes, dead ones, orphan cgroups or layers) is destroyed.
    pub fn open(cfg: RuntimeConfig) -> Result<Arc<Runtime>> {
        if !cfg.agent_bin.is_file() {
            return Err(RuntimeError::Unsupported(format!(
                "agent binary {} not found (set PADDOCK_AGENT_BIN)",
                cfg.agent_bin.display()
            )));
        }
        let sudo_bin = sudo_bin_for(&cfg.agent_bin);
        if !sudo_bin.is_file() {
            return Err(RuntimeError::Unsupported(format!(
                "the sudo shim {} is not next to the agent (build every binary: cargo build --release)",
                sudo_bin.display()
            )));
        }
        crate::datadir::create_private(&cfg.data_dir)?;
        let open_lock = crate::datadir::OpenLock::acquire(&cfg.data_dir)?;
        let agent_lib = crate::agentlib::prepare(&cfg.data_dir, &cfg.agent_bin, &sudo_bin)?;
        // The bundle's copy of the shim runs on the bundle's loader; a static agent has no
        // bundle, and then the shim is used as built.
        let sudo_bin = agent_lib
            .as_ref()
            .map_or(sudo_bin, |d| d.join(crate::agentlib::AGENT_SUDO));
        // Sandboxes' PID 1 processes are re-parented to us when their setup process exits,
        // so that we, not the host's init, collect their exit status.
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .map_err(|e| RuntimeError::io("becoming subreaper")(e.into()))?;
        let instance = instance_name(&cfg.data_dir)?;
        let cgroups = Cgroups::detect(&instance)?;
        let net = crate::net::Net::new(
            &instance,
            cfg.dns_upstream.unwrap_or_else(crate::net::host_resolver),
        );
        let layers = Layers::open(
            &cfg.data_dir.join("layers"),
            &cfg.data_dir.join("layers.img"),
            cfg.layers_image_size,
        )?;
        let base = template::base(&cfg.data_dir.join("templates"))?;
        let mut templates = BTreeMap::from([("base".to_owned(), base)]);
        let layers_root = cfg.data_dir.join("templates/layers");
        for e in fs::read_dir(cfg.data_dir.join("templates/defs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            // A build step's throwaway template (`build-*`) outlives its build only if the
            // server died mid-build; its layers stay as cache, the definition goes.
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("build-"))
            {
                let _ = fs::remove_file(&p);
                continue;
            }
            let def = fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<template::TemplateDef>(&b).ok());
            match def.map(|d| template::load(d, &layers_root)) {
                Some(Ok(t)) => {
                    templates.insert(t.name.clone(), t);
                }
                Some(Err(e)) => tracing::warn!(file = %p.display(), "skipping template: {e}"),
                None => {
                    tracing::warn!(file = %p.display(), "skipping unreadable template definition")
                }
            }
        }
        let host_memory = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .map_or(u64::MAX, |kb| kb * 1024);
        let rt = Arc::new(Runtime {
            cfg,
            agent_lib,
            sudo_bin,
            cgroups,
            layers,
            templates: std::sync::RwLock::new(templates),
            slots: Mutex::new(BTreeSet::new()),
            claims: crate::slots::SlotClaims::open(),
            live: Mutex::new(HashMap::new()),
            host_memory,
            net,
            open_lock,
            closed: std::sync::atomic::AtomicBool::new(false),
            adoption: Mutex::new(AdoptionReport::default()),
        });
        rt.reconcile();
        rt.reconcile_network()?;
        // Older bundles (a rebuilt shim, an upgraded glibc) may be bound in sandboxes; with
        // none left on this data directory, nothing can hold them.
        if let Some(keep) = &rt.agent_lib
            && rt.list_host().is_empty()
        {
            crate::agentlib::remove_others(&rt.cfg.data_dir, keep);
        }
        Ok(rt)
    }

    fn reconcile(&self) {
        for hs in self.list_host() {
            let record = self.read_record(&hs.id);
            let adoptable = matches!((&record, hs.pid), (Some(_), Some(_))) && hs.has_cgroup;
            match (adoptable, record) {
                (true, Some(r)) => {
                    let sbx = self.sandbox_from(&r, hs.pid.unwrap_or_default());
                    self.slots.lock().expect("slots poisoned").insert(r.slot);
                    self.claims.reclaim(r.slot, &self.slot_marker(&r.id));
                    self.live
                        .lock()
                        .expect("live poisoned")
                        .insert(r.id.clone(), Arc::new(sbx));
                    tracing::info!(sandbox = %hs.id, "adopted running sandbox");
                }
                _ => {
                    tracing::info!(sandbox = %hs.id, "destroying leftover sandbox");
                    if let Err(e) = self.teardown(&hs.id, None) {
                        tracing::warn!(sandbox = %hs.id, "cleanup failed: {e}");
                    }
                }
            }
        }
        // Claims of this instance that nothing holds any more (a crash between a destroy's
        // last steps). Only while no other process has this data directory open: another
        // one may be between a claim and its sandbox's cgroup.
        if self.open_lock.is_sole()
            && let Some(instance_dir) = self.slot_marker("x").parent()
        {
            let held = self.slots.lock().expect("slots poisoned").clone();
            self.claims
                .sweep_instance(instance_dir, &|slot| held.contains(&slot));
        }
    }

    /// Takes the instance's host resources down when the process is done with the runtime:
    /// if no sandbox of this data directory is left on the host and no other process has
    /// the directory open, the loop mount of the layers image (and its loop device) and the
    /// per-instance cgroup directories are removed, so only the data directory's files
    /// remain. With sandboxes left (`--on-shutdown keep`) nothing is touched: the next open
    /// adopts them. After `close` the runtime creates no sandbox.
    pub fn close(&self) -> Result<()> {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        if !self.live.lock().expect("live poisoned").is_empty() || !self.list_host().is_empty() {
            return Ok(());
        }
        if !self.open_lock.try_exclusive() {
            return Ok(());
        }
        self.cgroups.remove_instance()?;
        self.layers.unmount_image()
    }

    /// Rebuilds this instance's firewall table for the adopted sandboxes, checks and if
    /// needed re-creates their links, restarts their resolvers, and deletes sandbox links
    /// nobody holds (a crash mid-create). An adopted sandbox whose network cannot be
    /// restored is destroyed and listed in [`Runtime::take_adoption_report`] as failed:
    /// it is never kept running without the network its record names.
    ///
    /// Only the sole process with the data directory open does this: while another one
    /// (a server, when this is `paddock ps` or `paddock run`) has it open, the network is
    /// that one's (its resolvers hold their addresses; its table has pinned addresses a
    /// rebuild would drop), and nothing of it is touched.
    fn reconcile_network(&self) -> Result<()> {
        if !self.open_lock.is_sole() {
            tracing::info!(
                "another process has this data directory open: its network is left as it is"
            );
            return Ok(());
        }
        let live: Vec<(String, u32, i32, NetworkPolicy)> = self
            .list()
            .iter()
            .map(|s| (s.id.to_string(), s.slot, s.pid, s.network()))
            .collect();
        let policies: Vec<(u32, NetworkPolicy)> =
            live.iter().map(|(_, s, _, p)| (*s, p.clone())).collect();
        self.net.rebuild(&policies)?;
        let mut report = AdoptionReport::default();
        for (id, slot, pid, p) in &live {
            if p.mode == NetworkMode::None {
                // A crash between making a link and recording the new policy.
                self.net.release_link(*slot);
                continue;
            }
            match self.net.restore(*slot, *pid, p) {
                Ok(true) => report.repaired.push(id.clone()),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(sandbox = %id, "its network cannot be restored: {e}");
                    if let Err(e) = self.teardown(id, None) {
                        tracing::warn!(sandbox = %id, "cleanup failed: {e}");
                    }
                    report
                        .failed
                        .push((id.clone(), format!("restoring its network: {e}")));
                }
            }
        }
        let held: BTreeSet<u32> = self.list().iter().map(|s| s.slot).collect();
        for slot in crate::net::Net::host_links() {
            if !held.contains(&slot) && !self.claims.is_claimed(slot) {
                tracing::info!(slot, "removing leftover sandbox link");
                crate::net::Net::remove_link(slot);
            }
        }
        *self
            .adoption
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = report;
        Ok(())
    }

    /// What adoption at open did beyond adopting: sandboxes whose network it repaired, and
    /// sandboxes it had to destroy because their network could not be restored, with why.
    /// Here, through the agent, every adopted sandbox's `/etc/resolv.conf` is checked and
    /// rewritten if it is not what its policy says (a crash between making the network and
    /// writing the file, or in the middle of writing it): a networked sandbox whose file
    /// cannot be written is destroyed and failed too. Taken once.
    pub async fn take_adoption_report(self: &Arc<Self>) -> AdoptionReport {
        let mut report = std::mem::take(
            &mut *self
                .adoption
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let checks = self.list().into_iter().map(|sbx| async move {
            let mode = sbx.network().mode;
            let want = crate::net::resolv_conf(mode, sbx.slot);
            let io = async {
                let have = sbx.read_file("/etc/resolv.conf", Some("root")).await.ok();
                let stale = match mode {
                    NetworkMode::None => have
                        .as_deref()
                        .is_some_and(|h| h.starts_with(crate::net::RESOLV_CONF_MARK.as_bytes())),
                    _ => have.as_deref() != Some(want.as_bytes()),
                };
                if !stale {
                    return Ok(false);
                }
                sbx.write_file("/etc/resolv.conf", want.into_bytes(), Some("root"))
                    .await
                    .map(|()| true)
            };
            let r = tokio::time::timeout(std::time::Duration::from_secs(10), io).await;
            (sbx.id.to_string(), mode, r)
        });
        for (id, mode, r) in futures::future::join_all(checks).await {
            let why = match r {
                Ok(Ok(false)) => continue,
                Ok(Ok(true)) => {
                    tracing::warn!(sandbox = %id, "rewrote a stale resolv.conf");
                    if !report.repaired.contains(&id) {
                        report.repaired.push(id);
                    }
                    continue;
                }
                Ok(Err(e)) => format!("rewriting resolv.conf: {e}"),
                Err(_) => "rewriting resolv.conf: the agent did not answer".to_owned(),
            };
            if mode == NetworkMode::None {
                tracing::warn!(sandbox = %id, "{why}");
                continue;
            }
            report.repaired.retain(|r| *r != id);
            report.fail(self, &id, why).await;
        }
        report
    }

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
            uid_base: ID_BASE + r.slot * ID_COUNT,
            user: r.user.clone(),
            template: r.template.clone(),
            agent: AgentClient::new(dir.join("agent.sock")),
            dir,
            slot: r.slot,
            network: Mutex::new(r.network.clone()),
            cgroups: self.cgroups.clone(),
            pidfd: open_pidfd(pid, r.pid_start),
        }
    }

    /// The template `name`, if it exists.
    pub fn template(&self, name: &str) -> Option<Template> {
        self.templates
            .read()
            .expect("templates poisoned")
            .get(name)
            .cloned()
    }

    /// Every template, by name.
    pub fn templates(&self) -> Vec<Template> {
        self.templates
            .read()
            .expect("templates poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// The root of the content-addressed layer store.
    pub fn layers_root(&self) -> PathBuf {
        self.cfg.data_dir.join("templates/layers")
    }

    /// Registers a template whose layers are in the layer store, replacing one of the same
    /// name unless running sandboxes use it. The definition is written before it is visible.
    pub fn add_template(&self, def: template::TemplateDef) -> Result<Template> {
        let t = template::load(def.clone(), &self.layers_root())?;
        let mut all = self.templates.write().expect("templates poisoned");
        if all.contains_key(&t.name) {
            self.check_unused(&t.name)?;
        }
        let defs = self.cfg.data_dir.join("templates/defs");
        fs::create_dir_all(&defs).map_err(RuntimeError::io("creating template defs dir"))?;
        let tmp = defs.join(format!(".{}.tmp", t.name));
        let json =
            serde_json::to_vec_pretty(&def).map_err(|e| RuntimeError::Setup(e.to_string()))?;
        fs::write(&tmp, json).map_err(RuntimeError::io("writing template definition"))?;
        fs::rename(&tmp, defs.join(format!("{}.json", t.name)))
            .map_err(RuntimeError::io("installing template definition"))?;
        all.insert(t.name.clone(), t.clone());
        Ok(t)
    }

    fn check_unused(&self, name: &str) -> Result<()> {
        let users: Vec<String> = self
            .list()
            .iter()
            .filter(|s| s.template == name)
            .map(|s| s.id.to_string())
            .collect();
        if users.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::InUse(format!(
                "template {name} is used by {} running sandbox(es): {}",
                users.len(),
                users.join(", ")
            )))
        }
    }

    /// Deletes template `name` (refused while running sandboxes use it, and for `base`) and,
    /// with `gc`, every layer of it no other template uses. Returns how many layers went.
    pub fn remove_template(&self, name: &str, gc: bool) -> Result<usize> {
        if name == "base" {
            return Err(RuntimeError::InvalidArgument(
                "the built-in template base cannot be removed".into(),
            ));
        }
        let mut all = self.templates.write().expect("templates poisoned");
        let Some(t) = all.get(name).cloned() else {
            return Err(RuntimeError::UnknownTemplate(name.to_owned()));
        };
        self.check_unused(name)?;
        let def = self
            .cfg
            .data_dir
            .join(format!("templates/defs/{name}.json"));
        fs::remove_file(&def).map_err(RuntimeError::io("removing template definition"))?;
        all.remove(name);
        let still: BTreeSet<&String> = all.values().flat_map(|o| o.layer_ids.iter()).collect();
        let mut freed = 0;
        for (id, dir) in t.layer_ids.iter().zip(&t.layers) {
            if gc && !still.contains(id) {
                // Renamed first so a half-removed layer is never taken for a complete one.
                let gone = dir.with_extension("removing");
                if fs::rename(dir, &gone).is_ok() {
                    let _ = fs::remove_dir_all(&gone);
                    freed += 1;
                }
            }
        }
        Ok(freed)
    }

    /// Every layer of the store with its disk usage in bytes and the templates using it
    /// (empty: an orphan, from a replaced template or a failed build, kept as build cache
    /// until [`Runtime::prune_layers`]).
    pub fn layers(&self) -> Result<Vec<(String, u64, Vec<String>)>> {
        let store = crate::layerstore::LayerStore::open(self.layers_root())?;
        let all = self.templates.read().expect("templates poisoned");
        Ok(store
            .list()?
            .into_iter()
            .map(|(id, bytes)| {
                let users = all
                    .values()
                    .filter(|t| t.layer_ids.contains(&id))
                    .map(|t| t.name.clone())
                    .collect();
                (id, bytes, users)
            })
            .collect())
    }

    /// Removes every layer no template uses, and returns the removed ones with their sizes.
    /// The caller makes sure no build, pull or import is running: their new layers belong
    /// to no template until they finish. Templates cannot be added meanwhile (the template
    /// lock is held), and a template's layers are never touched, so running sandboxes keep
    /// theirs (a template cannot be removed while sandboxes use it).
    pub fn prune_layers(&self) -> Result<Vec<(String, u64)>> {
        let store = crate::layerstore::LayerStore::open(self.layers_root())?;
        let all = self.templates.read().expect("templates poisoned");
        let used: BTreeSet<&String> = all.values().flat_map(|t| t.layer_ids.iter()).collect();
        let mut removed = Vec::new();
        // Only unused layers are measured: walking every layer would hold the template lock
        // for the size of the whole store.
        for id in store.ids()? {
            if !used.contains(&id) {
                let bytes = store.size(&id);
                store.remove(&id)?;
                removed.push((id, bytes));
            }
        }
        Ok(removed)
    }

    /// Turns what sandbox `sbx` wrote (its overlay upper directory) into layer `key` (64 hex
    /// characters) of the layer store, for template builds. Ownership is shifted from the
    /// sandbox's host uid range back to template ids (ids outside it become 65534); overlay
    /// whiteouts and opaque markers are kept, so the layer stacks like the upper did.
    /// Paddock's own files in the sandbox (the sudo shim's mount point and socket, the
    /// generated `resolv.conf`) are left out. The sandbox should be idle; an existing layer
    /// `key` is kept as it is.
    pub fn commit_layer(&self, sbx: &Sandbox, key: &str) -> Result<String> {
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RuntimeError::InvalidArgument(format!(
                "bad layer key {key:?}"
            )));
        }
        let root = self.layers_root();
        let dst = root.join(key);
        let id = format!("sha256:{key}");
        if dst.is_dir() {
            return Ok(id);
        }
        fs::create_dir_all(&root).map_err(RuntimeError::io("creating layer store"))?;
        let tmp = root.join(format!(".build-commit-{}", SandboxId::random()));
        let st = Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(sbx.dir.join("upper"))
            .arg(&tmp)
            .status()
            .map_err(RuntimeError::io("copying the sandbox's changes"))?;
        let res = (|| -> Result<()> {
            if !st.success() {
                return Err(RuntimeError::Setup(
                    "copying the sandbox's changes failed".into(),
                ));
            }
            for p in ["opt/paddock", "run/paddock", "etc/resolv.conf"] {
                let q = tmp.join(p);
                match q.symlink_metadata() {
                    Ok(m) if m.is_dir() => {
                        let _ = fs::remove_dir_all(&q);
                    }
                    Ok(_) => {
                        let _ = fs::remove_file(&q);
                    }
                    Err(_) => {}
                }
            }
            shift_owners(&tmp, sbx.uid_base, ID_COUNT)
                .map_err(RuntimeError::io("shifting layer ownership"))?;
            fs::rename(&tmp, &dst).map_err(RuntimeError::io("installing layer"))?;
            Ok(())
        })();
        if res.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        res.map(|()| id)
    }

    /// Sandboxes this runtime holds.
    pub fn list(&self) -> Vec<Arc<Sandbox>> {
        let mut v: Vec<_> = self
            .live
            .lock()
            .expect("live poisoned")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The sandbox with this id, if this runtime holds it.
    pub fn get(&self, id: &str) -> Result<Arc<Sandbox>> {
        self.live
            .lock()
            .expect("live poisoned")
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(id.to_owned()))
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

    /// Creates a sandbox and starts its agent. On failure nothing of it remains.
    pub async fn create(self: &Arc<Self>, spec: CreateSpec) -> Result<Arc<Sandbox>> {
        let this = self.clone();
        let policy = spec.network.clone();
        let sbx = tokio::task::spawn_blocking(move || this.create_blocking(spec))
            .await
            .map_err(|e| RuntimeError::Setup(format!("create task failed: {e}")))??;
        if policy.mode != NetworkMode::None
            && let Err(e) = self.network_up(&sbx, &policy).await
        {
            let _ = self.destroy(sbx.id.as_str()).await;
            return Err(e);
        }
        Ok(sbx)
    }

    /// Gives a sandbox its link, rules, resolver and `resolv.conf`.
    async fn network_up(self: &Arc<Self>, sbx: &Arc<Sandbox>, p: &NetworkPolicy) -> Result<()> {
        let this = self.clone();
        let (slot, pid, p2) = (sbx.slot, sbx.pid, p.clone());
        tokio::task::spawn_blocking(move || this.net.attach(slot, pid, &p2))
            .await
            .map_err(|e| RuntimeError::Setup(format!("network task failed: {e}")))??;
        sbx.write_file(
            "/etc/resolv.conf",
            crate::net::resolv_conf(p.mode, slot).into_bytes(),
            Some("root"),
        )
        .await
    }

    /// The host's own networks (addresses, connected subnets, gateways) no sandbox reaches
    /// besides the fixed blocked ranges, as last read (empty before the first networked
    /// sandbox).
    pub fn network_hostnets(&self) -> Vec<paddock_core::Cidr> {
        self.net.hostnets()
    }

    /// Changes a running sandbox's network policy. Going to `none` removes its link (open
    /// connections die); leaving `none` creates one.
    pub async fn set_network(self: &Arc<Self>, id: &str, p: NetworkPolicy) -> Result<()> {
        let sbx = self.get(id)?;
        let old = sbx.network();
        if old == p {
            return Ok(());
        }
        match (old.mode, p.mode) {
            (NetworkMode::None, _) => {
                if let Err(e) = self.network_up(&sbx, &p).await {
                    // Nothing of a half-made network stays while the record says `none`.
                    let this = self.clone();
                    let slot = sbx.slot;
                    let _ = tokio::task::spawn_blocking(move || this.net.detach(slot)).await;
                    return Err(e);
                }
            }
            (_, NetworkMode::None) => {
                let this = self.clone();
                let slot = sbx.slot;
                tokio::task::spawn_blocking(move || this.net.detach(slot))
                    .await
                    .map_err(|e| RuntimeError::Setup(format!("network task failed: {e}")))?;
                sbx.write_file(
                    "/etc/resolv.conf",
                    crate::net::resolv_conf(NetworkMode::None, slot).into_bytes(),
                    Some("root"),
                )
                .await?;
            }
            _ => {
                let this = self.clone();
                let (slot, p2) = (sbx.slot, p.clone());
                tokio::task::spawn_blocking(move || this.net.update(slot, &p2))
                    .await
                    .map_err(|e| RuntimeError::Setup(format!("network task failed: {e}")))??;
                if old.mode != p.mode {
                    sbx.write_file(
                        "/etc/resolv.conf",
                        crate::net::resolv_conf(p.mode, slot).into_bytes(),
                        Some("root"),
                    )
                    .await?;
                }
            }
        }
        *sbx.network.lock().expect("network poisoned") = p.clone();
        if let Some(mut r) = self.read_record(id) {
            r.network = p;
            write_record(&sbx.dir, &r)?;
        }
        Ok(())
    }

    fn validate(&self, spec: &CreateSpec) -> Result<Template> {
        let t = self
            .template(&spec.template)
            .ok_or_else(|| RuntimeError::UnknownTemplate(spec.template.clone()))?;
        spec.limits.validate(self.host_memory)?;
        if let Some(u) = spec.user.as_ref().filter(|u| !t.users.contains(u)) {
            return Err(RuntimeError::UnknownUser(u.clone()));
        }
        for k in spec.env.keys() {
            if k.is_empty() || k.contains(['=', '\0']) {
                return Err(RuntimeError::InvalidArgument(format!(
                    "invalid env name {k:?}"
                )));
            }
        }
        if spec.env.values().any(|v| v.contains('\0')) {
            return Err(RuntimeError::InvalidArgument(
                "env value contains NUL".into(),
            ));
        }
        Ok(t)
    }

    fn create_blocking(self: &Arc<Self>, spec: CreateSpec) -> Result<Arc<Sandbox>> {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RuntimeError::Unsupported(
                "the runtime is shutting down".into(),
            ));
        }
        let t = self.validate(&spec)?;
        let id = spec.id.clone().unwrap_or_else(SandboxId::random);
        let marker = self.slot_marker(id.as_str());
        let slot = {
            let mut s = self.slots.lock().expect("slots poisoned");
            // Free here, and not claimed by another runtime on this host.
            let free = (0..SLOTS)
                .find(|i| !s.contains(i) && self.claims.claim(*i, &marker))
                .ok_or(RuntimeError::Exhausted)?;
            s.insert(free);
            free
        };
        if self
            .live
            .lock()
            .expect("live poisoned")
            .contains_key(id.as_str())
            || self.layers.sandboxes_dir().join(id.as_str()).exists()
        {
            self.slots.lock().expect("slots poisoned").remove(&slot);
            self.claims.release(slot, &marker);
            return Err(RuntimeError::InvalidArgument(format!(
                "sandbox {id} already exists"
            )));
        }
        let res = self.start(&id, slot, &t, &spec);
        match res {
            Ok(sbx) => {
                let sbx = Arc::new(sbx);
                self.live
                    .lock()
                    .expect("live poisoned")
                    .insert(id.to_string(), sbx.clone());
                Ok(sbx)
            }
            Err(e) => {
                if let Err(ce) = self.teardown(id.as_str(), None) {
                    tracing::warn!(sandbox = %id, "cleanup after failed create: {ce}");
                }
                self.slots.lock().expect("slots poisoned").remove(&slot);
                self.claims.release(slot, &marker);
                Err(e)
            }
        }
    }

    /// The host half of sandbox creation. The sequence inside the sandbox is
    /// `paddock_agent::setup::run`.
    fn start(&self, id: &SandboxId, slot: u32, t: &Template, spec: &CreateSpec) -> Result<Sandbox> {
        let uid_base = ID_BASE + slot * ID_COUNT;
        // The request's user, else the template's, else `user`, else root.
        let user = spec
            .user
            .clone()
            .or_else(|| t.config.user.clone())
            .unwrap_or_else(|| {
                if t.users.iter().any(|u| u == paddock_core::DEFAULT_USER) {
                    paddock_core::DEFAULT_USER.to_owned()
                } else {
                    "root".to_owned()
                }
            });
        // 1. Writable layer, with its disk limit, and the directories the setup stage mounts
        //    onto. The upper layer's root becomes the sandbox's `/`: owned by its root.
        let dir = self.layers.create(id.as_str(), spec.limits.disk_bytes)?;
        let mk = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            fs::create_dir(&p).map_err(RuntimeError::io(format!("creating {name}")))?;
            Ok(p)
        };
        let (upper, work, root) = (mk("upper")?, mk("work")?, mk("root")?);
        let lower_mnts = (0..t.layers.len())
            .map(|i| mk(&format!("lower{i}")))
            .collect::<Result<Vec<_>>>()?;
        std::os::unix::fs::chown(&upper, Some(uid_base), Some(uid_base))
            .map_err(RuntimeError::io("chown upper"))?;
        // 2. The record, before anything runs, so a crash from here on is reconcilable.
        let mut record = Record {
            id: id.to_string(),
            slot,
            template: t.name.clone(),
            user: user.clone(),
            pid: None,
            pid_start: None,
            memory_bytes: spec.limits.memory_bytes,
            created_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            network: spec.network.clone(),
        };
        write_record(&dir, &record)?;
        // 3. cgroups with the limits applied.
        let cgroup_procs = self.cgroups.create(id.as_str(), &spec.limits)?;
        // 4. The agent's socket is bound here and handed over: a client can connect as soon
        //    as create returns; the kernel queues it until the agent accepts.
        let sock = dir.join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock)
            .map_err(RuntimeError::io("binding agent socket"))?;
        let log = fs::File::create(dir.join("agent.log"))
            .map_err(RuntimeError::io("creating agent log"))?;
        let cfg = SetupConfig {
            id: id.to_string(),
            id_base: uid_base,
            id_count: ID_COUNT,
            lowers: t.layers.clone(),
            lower_mnts,
            workdir: t.config.workdir.clone(),
            upper,
            work,
            root,
            binds: t.binds.clone(),
            tmp_bytes: spec.limits.tmp_bytes,
            cgroup_procs,
            // The template's env, then the sandbox's own on top.
            env: {
                let mut e = t.config.env.clone();
                e.extend(spec.env.clone());
                e
            },
            agent: self.cfg.agent_bin.clone(),
            agent_lib: self.agent_lib.clone(),
            sudo: self.sudo_bin.clone(),
            log: self.cfg.agent_log.clone(),
        };
        // 5. Run the setup stage and wait for its one status line.
        let lfd = listener.as_raw_fd();
        let mut cmd = Command::new(&self.cfg.agent_bin);
        cmd.arg("setup")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        // SAFETY: dup2 is async-signal-safe; the listener fd stays open in the parent until
        // after spawn returns, and fd 3 is not used by anything else in the child.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto itself would keep close-on-exec set, so clear it explicitly then.
                let r = if lfd == AGENT_LISTEN_FD {
                    libc::fcntl(lfd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(lfd, AGENT_LISTEN_FD)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let mut child = cmd
            .spawn()
            .map_err(RuntimeError::io("starting agent setup"))?;
        drop(listener);
        let json = serde_json::to_vec(&cfg).map_err(|e| RuntimeError::Setup(e.to_string()))?;
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
        let pid: i32 = match line.trim().split_once(' ') {
            Some(("ok", pid)) => pid
                .parse()
                .map_err(|_| RuntimeError::Setup(format!("bad status {line:?}")))?,
            Some(("err", msg)) => return Err(RuntimeError::Setup(msg.to_owned())),
            _ => {
                let log = fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
                return Err(RuntimeError::Setup(format!(
                    "setup ended without status: {}",
                    log.trim()
                )));
            }
        };
        record.pid = Some(pid);
        record.pid_start = pid_start_time(pid);
        write_record(&dir, &record)?;
        Ok(self.sandbox_from(&record, pid))
    }

    /// Destroys a sandbox: kills every process through its cgroup, waits for them, removes
    /// the cgroups and the writable layer (its mounts lived only in its own mount namespace
    /// and are gone with its last process).
    pub async fn destroy(self: &Arc<Self>, id: &str) -> Result<()> {
        let sbx = self.live.lock().expect("live poisoned").remove(id);
        if sbx.is_none() && !self.list_host().iter().any(|h| h.id == id) {
            return Err(RuntimeError::NotFound(id.to_owned()));
        }
        let this = self.clone();
        let id2 = id.to_owned();
        tokio::task::spawn_blocking(move || this.teardown(&id2, sbx.as_deref()))
            .await
            .map_err(|e| RuntimeError::Setup(format!("destroy task failed: {e}")))?
    }

    /// Kills and removes everything of sandbox `id`. Processes are only ever signalled
    /// through a pidfd or while their cgroup is frozen, never by a bare pid number that could
    /// have been recycled for another sandbox's process in the meantime.
    fn teardown(&self, id: &str, sbx: Option<&Sandbox>) -> Result<()> {
        let rec = self.read_record(id);
        let slot = rec.as_ref().map(|r| r.slot);
        if let Some(fd) = sbx.and_then(|s| s.pidfd.as_ref()) {
            // Killing PID 1 makes the kernel kill every process in its pid namespace.
            let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL);
        }
        self.cgroups.destroy(id)?;
        if let Some(s) = sbx {
            reap(s.pid);
        }
        // Whatever the record says: a crash or a failed policy change can leave rules or a
        // resolver of a sandbox recorded as `none` (detach of a slot without any is free).
        if let Some(s) = slot {
            self.net.detach(s);
        }
        self.layers.destroy(id)?;
        if let Some(s) = slot {
            self.slots.lock().expect("slots poisoned").remove(&s);
            self.claims.release(s, &self.slot_marker(id));
        }
        self.live.lock().expect("live poisoned").remove(id);
        Ok(())
    }

    /// Destroys every sandbox this runtime holds.
    pub async fn destroy_all(self: &Arc<Self>) {
        for s in self.list() {
            let _ = self.destroy(s.id.as_str()).await;
        }
    }
}

impl Sandbox {
    /// Runs a command to completion and collects its output (see [`ExecRequest`]).
    pub async fn exec(&self, req: ExecRequest) -> Result<ExecResult> {
        self.exec_with(req, |_, _| {}).await
    }

    /// [`Sandbox::exec`], also handing every chunk of output to `on_output` as it arrives
    /// (`true` for stderr), e.g. to stream a build's log.
    pub async fn exec_with(
        &self,
        req: ExecRequest,
        mut on_output: impl FnMut(bool, &[u8]),
    ) -> Result<ExecResult> {
        let Some((cmd, args)) = req.argv.split_first() else {
            return Err(RuntimeError::InvalidArgument("empty command".into()));
        };
        let cap = req.max_output.unwrap_or(16 << 20);
        let start_req = StartRequest {
            process: ProcessConfig {
                cmd: cmd.clone(),
                args: args.to_vec(),
                envs: req
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                cwd: req.cwd.clone(),
                ..Default::default()
            }
            .into(),
            stdin: Some(req.stdin.is_some()),
            ..Default::default()
        };
        let mut opts = self.call_options(req.user.as_deref());
        if let Some(t) = req.timeout {
            opts = opts.with_timeout(t);
        }
        let oom_before = self.cgroups.stats(self.id.as_str()).oom_kills;
        let t0 = Instant::now();
        let mut stream = self
            .agent
            .process
            .start_with_options(start_req, opts)
            .await?;
        let mut res = ExecResult::default();
        loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m.to_owned_message(),
                Ok(None) => break,
                Err(e) if e.code == connectrpc::ErrorCode::DeadlineExceeded => {
                    res.timed_out = true;
                    res.status = "timeout".into();
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            let Some(ev) = msg.event.as_option().and_then(|e| e.event.clone()) else {
                continue;
            };
            match ev {
                Event::Start(s) => {
                    res.pid = s.pid;
                    if let Some(input) = &req.stdin {
                        self.feed_stdin(s.pid, input.clone(), req.user.as_deref())
                            .await?;
                    }
                }
                Event::Data(d) => match d.output {
                    Some(Output::Stdout(b)) => {
                        on_output(false, &b);
                        append(&mut res.stdout, &mut res.stdout_truncated, &b, cap)
                    }
                    Some(Output::Stderr(b)) | Some(Output::Pty(b)) => {
                        on_output(true, &b);
                        append(&mut res.stderr, &mut res.stderr_truncated, &b, cap)
                    }
                    None => {}
                },
                Event::End(e) => {
                    res.exit_code = e.exited.then_some(e.exit_code);
                    res.status = e.status.clone();
                }
                Event::Keepalive(_) => {}
            }
        }
        res.duration = t0.elapsed();
        res.oom_killed = self.cgroups.stats(self.id.as_str()).oom_kills > oom_before;
        Ok(res)
    }

    async fn feed_stdin(&self, pid: u32, data: Vec<u8>, user: Option<&str>) -> Result<()> {
        let sel = || ProcessSelector {
            selector: Some(Selector::Pid(pid)),
            ..Default::default()
        };
        if !data.is_empty() {
            let req = SendInputRequest {
                process: sel().into(),
                input: ProcessInput {
                    input: Some(Input::Stdin(data)),
                    ..Default::default()
                }
                .into(),
                ..Default::default()
            };
            self.agent
                .process
                .send_input_with_options(req, self.call_options(user))
                .await?;
        }
        let req = CloseStdinRequest {
            process: sel().into(),
            ..Default::default()
        };
        self.agent
            .process
            .close_stdin_with_options(req, self.call_options(user))
            .await?;
        Ok(())
    }

    /// Call options that act as `user` (or the sandbox's default user).
    pub fn call_options(&self, user: Option<&str>) -> CallOptions {
        use base64::Engine;
        let u = user.unwrap_or(&self.user);
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:"));
        CallOptions::default().with_header(http::header::AUTHORIZATION, format!("Basic {b}"))
    }

    /// Cumulative CPU time (ns) and memory in use (bytes): cheap (cgroup files only), unlike
    /// [`Sandbox::stats`], whose disk figure asks btrfs.
    pub fn cpu_and_memory(&self) -> (u64, u64) {
        let c = self.cgroups.stats(self.id.as_str());
        (c.cpu_usage_ns, c.memory_bytes)
    }

    /// Current usage.
    pub fn stats(&self, runtime: &Runtime) -> Stats {
        let c = self.cgroups.stats(self.id.as_str());
        Stats {
            cpu_usage_ns: c.cpu_usage_ns,
            memory_bytes: c.memory_bytes,
            pids: c.pids,
            oom_kills: c.oom_kills,
            disk_bytes: runtime.layers.usage(self.id.as_str()),
        }
    }

    /// Reads a file inside the sandbox as `user` (agent `GET /files`). The agent resolves the
    /// path inside the sandbox root, so symlinks cannot lead to host files.
    pub async fn read_file(&self, path: &str, user: Option<&str>) -> Result<Vec<u8>> {
        let uri = files_uri(path, user.unwrap_or(&self.user));
        let req = http::Request::get(uri)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
        self.files_request(req).await
    }

    /// Writes a file inside the sandbox as `user` (agent `POST /files`, octet-stream),
    /// creating parent directories.
    pub async fn write_file(&self, path: &str, data: Vec<u8>, user: Option<&str>) -> Result<()> {
        let uri = files_uri(path, user.unwrap_or(&self.user));
        let req = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(http_body_util::Full::new(bytes::Bytes::from(data)))
            .map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
        self.files_request(req).await.map(|_| ())
    }

    /// Sends one HTTP/1.1 request to the sandbox's agent over its unix socket and returns
    /// the response as soon as its head arrives; both bodies stream, so neither side is
    /// ever buffered whole here. The primitive behind [`Sandbox::read_file`] and
    /// [`Sandbox::write_file`], and what the API server uses to forward `/files` and
    /// `/archive` requests.
    ///
    /// The request goes out as given: the caller sets the path and query (the URI's
    /// authority is ignored by the agent), the user (`username` parameter or
    /// [`Sandbox::call_options`]' `Authorization` header) and any content headers. A
    /// fresh connection is used per request; it closes once the response body has been
    /// read or dropped. Agent errors come back as ordinary responses (JSON
    /// `{"code", "message"}`); only a failure to reach the agent or a broken exchange is an
    /// `Err`.
    pub async fn agent_request<B>(
        &self,
        req: http::Request<B>,
    ) -> Result<http::Response<hyper::body::Incoming>>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = tokio::net::UnixStream::connect(self.socket())
            .await
            .map_err(RuntimeError::io("connecting to agent"))?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| RuntimeError::Io {
                    what: "agent handshake".into(),
                    source: std::io::Error::other(e),
                })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("agent connection: {e}");
            }
        });
        send.send_request(req).await.map_err(|e| RuntimeError::Io {
            what: "agent request".into(),
            source: std::io::Error::other(e),
        })
    }

    async fn files_request(
        &self,
        req: http::Request<http_body_util::Full<bytes::Bytes>>,
    ) -> Result<Vec<u8>> {
        use http_body_util::BodyExt;
        let resp = self.agent_request(req).await?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| RuntimeError::Io {
                what: "agent response".into(),
                source: std::io::Error::other(e),
            })?
            .to_bytes()
            .to_vec();
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            let code = match status.as_u16() {
                404 => connectrpc::ErrorCode::NotFound,
                400 => connectrpc::ErrorCode::InvalidArgument,
                401 => connectrpc::ErrorCode::Unauthenticated,
                403 => connectrpc::ErrorCode::PermissionDenied,
                507 => connectrpc::ErrorCode::ResourceExhausted,
                _ => connectrpc::ErrorCode::Internal,
            };
            return Err(RuntimeError::Agent(connectrpc::ConnectError::new(
                code, msg,
            )));
        }
        Ok(body)
    }

    /// The sandbox's current network policy.
    pub fn network(&self) -> NetworkPolicy {
        self.network.lock().expect("network poisoned").clone()
    }

    /// The sandbox's address on its link (`None` in mode `none`).
    pub fn address(&self) -> Option<std::net::Ipv4Addr> {
        (self.network().mode != NetworkMode::None).then(|| crate::net::sandbox_addr(self.slot))
    }

    /// Opens a TCP connection to `port` on the sandbox's own loopback, whatever its network
    /// mode (even with no network at all): the socket is created inside the sandbox's network
    /// namespace and then connected from here.
    ///
    /// The namespace switch happens on a short-lived thread of its own, so no thread that
    /// serves anything else is ever left in the sandbox's namespace, whatever fails.
    pub async fn connect_port(
        &self,
        port: u16,
        timeout: Duration,
    ) -> Result<tokio::net::TcpStream> {
        let ns = self.netns_fd()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("paddock-netns".into())
            .spawn(move || {
                let r = (|| -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
                    rustix::thread::move_into_link_name_space(
                        std::os::fd::AsFd::as_fd(&ns),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )?;
                    // One socket per family: a server bound to `localhost` may be on ::1 only.
                    let mk = |af| {
                        rustix::net::socket_with(
                            af,
                            rustix::net::SocketType::STREAM,
                            rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
                            None,
                        )
                    };
                    Ok((
                        mk(rustix::net::AddressFamily::INET)?,
                        mk(rustix::net::AddressFamily::INET6)?,
                    ))
                })();
                let _ = tx.send(r);
            })
            .map_err(RuntimeError::io("starting netns thread"))?;
        let (v4, v6) = rx
            .await
            .map_err(|_| RuntimeError::io("netns thread")(std::io::Error::other("thread died")))?
            .map_err(RuntimeError::io("socket in sandbox network"))?;
        let attempt = |fd: std::os::fd::OwnedFd, addr: std::net::SocketAddr| async move {
            let sock = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
            match tokio::time::timeout(timeout, sock.connect(addr)).await {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )),
            }
        };
        let first = attempt(v4, std::net::SocketAddr::from(([127, 0, 0, 1], port))).await;
        let r = match first {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => attempt(
                v6,
                std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
            )
            .await
            .map_err(|_| e),
            other => other,
        };
        match r {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                Err(RuntimeError::PortClosed(port, "connect timed out".into()))
            }
            Err(e) => Err(RuntimeError::PortClosed(port, e.kind().to_string())),
        }
    }

    /// A descriptor of the sandbox's network namespace: the pidfd of PID 1 when there is one
    /// (never a recycled pid), else `/proc/<pid>/ns/net`.
    fn netns_fd(&self) -> Result<std::os::fd::OwnedFd> {
        if let Some(fd) = &self.pidfd {
            return fd
                .try_clone()
                .map_err(RuntimeError::io("duplicating pidfd"));
        }
        std::fs::File::open(format!("/proc/{}/ns/net", self.pid))
            .map(std::os::fd::OwnedFd::from)
            .map_err(RuntimeError::io("opening network namespace"))
    }

    /// TCP ports something listens on inside the sandbox (IPv4 and IPv6), sorted, without
    /// duplicates. Read from the host through PID 1's `/proc/<pid>/net/tcp{,6}`, which show
    /// the sandbox's network namespace.
    pub fn listening_ports(&self) -> Result<Vec<ListeningPort>> {
        let mut out = Vec::new();
        for (file, v6) in [("tcp", false), ("tcp6", true)] {
            let text = match std::fs::read_to_string(format!("/proc/{}/net/{file}", self.pid)) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(RuntimeError::io("reading listening ports")(e)),
            };
            out.extend(parse_proc_net_tcp(&text, v6));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Whether the sandbox's PID 1 (its agent) is still running. A sandbox whose agent died
    /// (killed by the OOM killer, or crashed) can do nothing more and should be destroyed.
    pub fn is_alive(&self) -> bool {
        let Some(fd) = self.pidfd.as_ref() else {
            return pid_start_time(self.pid).is_some();
        };
        // A pidfd polls readable once its process has exited.
        let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        !matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
    }

    /// Path of the agent's unix socket on the host.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// Host cgroup directories of this sandbox.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.cgroups.dirs(self.id.as_str())
    }
}

fn files_uri(path: &str, user: &str) -> String {
    use std::fmt::Write as _;
    let mut q = String::new();
    for (i, (k, v)) in [("path", path), ("username", user)].iter().enumerate() {
        let _ = write!(q, "{}{k}=", if i == 0 { "" } else { "&" });
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                q.push(b as char);
            } else {
                let _ = write!(q, "%{b:02X}");
            }
        }
    }
    format!("http://agent/files?{q}")
}

fn append(buf: &mut Vec<u8>, truncated: &mut bool, data: &[u8], cap: usize) {
    let room = cap.saturating_sub(buf.len());
    if data.len() > room {
        *truncated = true;
    }
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

fn write_record(dir: &Path, r: &Record) -> Result<()> {
    let tmp = dir.join("record.json.tmp");
    let json = serde_json::to_vec_pretty(r).map_err(|e| RuntimeError::Setup(e.to_string()))?;
    fs::write(&tmp, json).map_err(RuntimeError::io("writing record"))?;
    fs::rename(&tmp, dir.join("record.json")).map_err(RuntimeError::io("writing record"))
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

/// Collects the exit status of a sandbox's PID 1 if it is our child (we are a subreaper).
fn reap(pid: i32) {
    for _ in 0..500 {
        let mut status = 0;
        // SAFETY: waitpid with a valid out-pointer; WNOHANG never blocks.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid || r < 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A TCP port listening inside a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListeningPort {
    pub port: u16,
    /// The local address it is bound to (`0.0.0.0`, `127.0.0.1`, `::`, ...).
    pub address: std::net::IpAddr,
}

/// Parses the LISTEN (state `0A`) rows of `/proc/net/tcp` or `tcp6`.
fn parse_proc_net_tcp(text: &str, v6: bool) -> Vec<ListeningPort> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[3] != "0A" {
            continue;
        }
        let Some((addr, port)) = f[1].split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port, 16) else {
            continue;
        };
        // The kernel prints each 32-bit word in host (little-endian) byte order.
        let words: Vec<u32> = (0..addr.len() / 8)
            .filter_map(|i| u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok())
            .collect();
        let address = if v6 && words.len() == 4 {
            let mut b = [0u8; 16];
            for (i, w) in words.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            std::net::IpAddr::from(b)
        } else if !v6 && words.len() == 1 {
            std::net::IpAddr::from(words[0].to_le_bytes())
        } else {
            continue;
        };
        out.push(ListeningPort { port, address });
    }
    out
}

/// Rewrites the owner of every entry under `dir` (not following symlinks) from the host range
/// `[base, base + count)` to `[0, count)`; ids outside the range become 65534 (nobody).
fn shift_owners(dir: &Path, base: u32, count: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let shift = |id: u32| {
        if (base..base + count).contains(&id) {
            id - base
        } else {
            65534
        }
    };
    let mut stack = vec![dir.to_owned()];
    while let Some(p) = stack.pop() {
        let m = p.symlink_metadata()?;
        std::os::unix::fs::lchown(&p, Some(shift(m.uid())), Some(shift(m.gid())))?;
        // chown clears setuid/setgid bits; the layer keeps the mode it had.
        if !m.file_type().is_symlink() {
            fs::set_permissions(
                &p,
                std::os::unix::fs::PermissionsExt::from_mode(m.mode() & 0o7777),
            )?;
        }
        strip_overlay_xattrs(&p)?;
        if m.is_dir() {
            for e in fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(())
}

/// Removes overlayfs's own bookkeeping (`trusted.overlay.origin`, `impure`, `uuid`, ...) that
/// an upper directory carries, keeping only `trusted.overlay.opaque`, which a layer needs.
fn strip_overlay_xattrs(p: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let mut buf = vec![0u8; 4096];
    let n = match rustix::fs::llistxattr(p, &mut buf) {
        Ok(n) => n,
        Err(rustix::io::Errno::RANGE) => {
            buf = vec![0u8; 65536];
            rustix::fs::llistxattr(p, &mut buf)?
        }
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for name in buf[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.") && name != b"trusted.overlay.opaque" {
            let name = std::ffi::OsStr::from_bytes(name);
            rustix::fs::lremovexattr(p, name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod proc_net_tests {
    use super::*;

    #[test]
    fn parses_listen_rows() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1\n   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1\n   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 3 1\n";
        let p = parse_proc_net_tcp(v4, false);
        assert_eq!(
            p,
            vec![
                ListeningPort {
                    port: 8080,
                    address: "127.0.0.1".parse().unwrap()
                },
                ListeningPort {
                    port: 22,
                    address: "0.0.0.0".parse().unwrap()
                },
            ]
        );
        let v6 = "  sl  local_address                         remote_address                        st\n   0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 0\n";
        let p = parse_proc_net_tcp(v6, true);
        assert_eq!(
            p,
            vec![ListeningPort {
                port: 3000,
                address: "::1".parse().unwrap()
            }]
        );
    }
}
