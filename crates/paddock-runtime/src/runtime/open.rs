//! Opening a data directory: reconciliation and adoption of the sandboxes found on the
//! host, the adoption report, and `close`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use paddock_core::{NetworkMode, NetworkPolicy, SandboxId};

use super::{AdoptionReport, Runtime, RuntimeConfig, sudo_bin_for};
use crate::cgroup::Cgroups;
use crate::error::{Result, RuntimeError};
use crate::layers::Layers;
use crate::template;

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

impl Runtime {
    /// Opens (and if needed initialises) the runtime in `cfg.data_dir`, then reconciles:
    /// sandboxes whose PID 1 is alive are adopted, everything else under Paddock's prefixes
    /// (half-created sandboxes, dead ones, orphan cgroups or layers) is destroyed.
    pub fn open(cfg: RuntimeConfig) -> Result<Arc<Runtime>> {
        if !cfg.agent_bin.is_file() {
            return Err(RuntimeError::Unsupported {
                resource: "agent binary",
                reason: format!(
                    "agent binary {} not found (set PADDOCK_AGENT_BIN)",
                    cfg.agent_bin.display()
                ),
            });
        }
        let sudo_bin = sudo_bin_for(&cfg.agent_bin);
        if !sudo_bin.is_file() {
            return Err(RuntimeError::Unsupported {
                resource: "sudo shim",
                reason: format!(
                    "the sudo shim {} is not next to the agent (build every binary: cargo build --release)",
                    sudo_bin.display()
                ),
            });
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
        let mut templates = BTreeMap::from([("base".to_owned(), base.clone())]);
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
            match def.map(|d| template::load(d, &layers_root, &base)) {
                Some(Ok(t)) => {
                    templates.insert(t.name.clone(), t);
                }
                Some(Err(e)) => tracing::warn!(file = %p.display(), "skipping template: {e}"),
                None => {
                    tracing::warn!(file = %p.display(), "skipping unreadable template definition")
                }
            }
        }
        super::snapshots::load_all(
            &cfg.data_dir.join("templates/snapshots"),
            &layers.snapshots_dir(),
            &mut templates,
        );
        let host_memory = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .map_or(u64::MAX, |kb| kb * 1024);
        let (net_slots_dir, net_slots) = (cfg.data_dir.clone(), cfg.net_slots);
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
            paused: Mutex::new(HashMap::new()),
            host_memory,
            net,
            open_lock,
            closed: std::sync::atomic::AtomicBool::new(false),
            statfs: crate::statfs::StatfsServer::start(),
            adoption: Mutex::new(AdoptionReport::default()),
            netslots: Arc::new(super::netslots::NetSlots::new(
                &net_slots_dir,
                net_slots,
                crate::slots::SlotClaims::open(),
            )),
        });
        if rt.open_lock.is_sole() {
            rt.netslots.sweep();
        }
        rt.reconcile();
        rt.reconcile_network()?;
        if rt.open_lock.is_sole() {
            rt.netslots.start(Arc::downgrade(&rt))?;
        }
        // Older bundles (a rebuilt shim, an upgraded glibc) may be bound in sandboxes; with
        // none left on this data directory, nothing can hold them.
        if let Some(keep) = &rt.agent_lib
            && rt.list_host().is_empty()
        {
            crate::agentlib::remove_others(&rt.cfg.data_dir, keep);
        }
        Ok(rt)
    }

    /// A runtime that touches nothing of the host: the data directory's files only, no
    /// cgroups (a v2 layout of plain directories under `<data>/detached-cgroup`), no btrfs
    /// mount, no network table, no uid-range claims, no adoption. It has the `base`
    /// template, holds no sandbox and creates none (every create is refused as after
    /// `close`). It needs no root: it is the runtime of the server's router tests, which
    /// exercise everything in front of the sandboxes.
    pub fn detached(cfg: RuntimeConfig) -> Result<Arc<Runtime>> {
        crate::datadir::create_private(&cfg.data_dir)?;
        let open_lock = crate::datadir::OpenLock::acquire(&cfg.data_dir)?;
        let instance = instance_name(&cfg.data_dir)?;
        let cgroup_root = cfg.data_dir.join("detached-cgroup");
        fs::create_dir_all(&cgroup_root).map_err(RuntimeError::io("creating cgroup fixture"))?;
        fs::write(cgroup_root.join("cgroup.controllers"), "memory pids cpu\n")
            .map_err(RuntimeError::io("creating cgroup fixture"))?;
        let cgroups = Cgroups::detect_at(&cgroup_root, &instance)?;
        let net = crate::net::Net::new(
            &instance,
            cfg.dns_upstream.unwrap_or_else(crate::net::host_resolver),
        );
        let layers = Layers::detached(&cfg.data_dir.join("layers"))?;
        let base = template::base_unbuilt(&cfg.data_dir.join("templates"));
        let sudo_bin = sudo_bin_for(&cfg.agent_bin);
        let data_dir = cfg.data_dir.clone();
        Ok(Arc::new(Runtime {
            cfg,
            agent_lib: None,
            sudo_bin,
            cgroups,
            layers,
            templates: std::sync::RwLock::new(BTreeMap::from([("base".to_owned(), base)])),
            slots: Mutex::new(BTreeSet::new()),
            claims: crate::slots::SlotClaims::local(),
            live: Mutex::new(HashMap::new()),
            paused: Mutex::new(HashMap::new()),
            host_memory: u64::MAX,
            net,
            open_lock,
            closed: std::sync::atomic::AtomicBool::new(true),
            statfs: None,
            adoption: Mutex::new(AdoptionReport::default()),
            netslots: Arc::new(super::netslots::NetSlots::new(
                &data_dir,
                0,
                crate::slots::SlotClaims::local(),
            )),
        }))
    }

    fn reconcile(&self) {
        for hs in self.list_host() {
            let record = self.read_record(&hs.id);
            let adoptable = matches!((&record, hs.pid), (Some(_), Some(_))) && hs.has_cgroup;
            let fs_paused = record
                .as_ref()
                .is_some_and(|r| r.paused == Some(super::PauseMode::Filesystem))
                && hs.has_cgroup
                && hs.has_layer;
            match (adoptable, record) {
                // Paused with its processes stopped: PID 1 is gone on purpose. Whatever a
                // crash mid-pause or mid-resume left running goes; layer, slot and record stay.
                (_, Some(r)) if fs_paused => {
                    if let Err(e) = self.cgroups.kill_all(&r.id) {
                        tracing::warn!(sandbox = %r.id, "stopping a paused sandbox's leftovers: {e}");
                    }
                    if self.cgroups.is_frozen(&r.id) {
                        let _ = self.cgroups.freeze(&r.id, false);
                    }
                    self.slots.lock().expect("slots poisoned").insert(r.slot);
                    self.claims.reclaim(r.slot, &self.slot_marker(&r.id));
                    self.paused
                        .lock()
                        .expect("paused poisoned")
                        .insert(r.id.clone(), super::PauseMode::Filesystem);
                    tracing::info!(sandbox = %hs.id, "adopted paused sandbox (filesystem)");
                }
                (true, Some(r)) => {
                    if r.paused == Some(super::PauseMode::Full) {
                        // Its agent is frozen: adopted without a word to it.
                        self.paused
                            .lock()
                            .expect("paused poisoned")
                            .insert(r.id.clone(), super::PauseMode::Full);
                    }
                    let sbx = self.sandbox_from(&r, hs.pid.unwrap_or_default());
                    self.answer_statfs(&sbx, r.disk_bytes);
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
        let stocked = self.netslots.close();
        self.slots
            .lock()
            .expect("slots poisoned")
            .retain(|s| !stocked.contains(s));
        if !self.live.lock().expect("live poisoned").is_empty() || !self.list_host().is_empty() {
            return Ok(());
        }
        // The table's grace period ends with this runtime.
        self.net.delete_idle_table();
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
        // A frozen (`full`-paused) agent cannot answer: its file was checked when it ran,
        // and nothing in it has run since.
        let paused: BTreeSet<String> = self.paused().into_iter().map(|(id, _)| id).collect();
        let running = self
            .list()
            .into_iter()
            .filter(|s| !paused.contains(s.id.as_str()));
        let checks = running.map(|sbx| async move {
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
}
