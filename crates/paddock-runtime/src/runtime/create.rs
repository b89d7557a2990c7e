//! Creating and destroying sandboxes (the host half of the isolation sequence, steps H0)
//! and changing a running sandbox's network.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use paddock_core::{
    AGENT_LISTEN_FD, Isolation, NetworkMode, NetworkPolicy, SandboxId, SetupConfig,
};

use super::{
    CreateSpec, ID_BASE, ID_COUNT, Record, Runtime, SLOTS, Sandbox, pid_start_time, write_record,
};
use crate::error::{Result, RuntimeError};
use crate::template::Template;

impl Runtime {
    /// Creates a sandbox and starts its agent. On failure nothing of it remains.
    pub async fn create(self: &Arc<Self>, spec: CreateSpec) -> Result<Arc<Sandbox>> {
        self.create_as(spec, false).await
    }

    /// Creates a sandbox for a warm pool (`docs/pools.md`): like [`Runtime::create`], but
    /// [`Runtime::list`] and [`Runtime::get`] do not see it until [`Runtime::personalise`]
    /// hands it out; [`Runtime::destroy`] does.
    pub async fn create_pooled(self: &Arc<Self>, spec: CreateSpec) -> Result<Arc<Sandbox>> {
        self.create_as(spec, true).await
    }

    async fn create_as(self: &Arc<Self>, spec: CreateSpec, pooled: bool) -> Result<Arc<Sandbox>> {
        let _creating = self.netslots.creating();
        let this = self.clone();
        let policy = spec.network.clone();
        // A networked native sandbox takes a prepared network slot if there is one
        // (`netslots`): its link exists, and only rules, resolver and resolv.conf are left.
        let stocked = (policy.mode != NetworkMode::None && spec.isolation == Isolation::Native)
            .then(|| self.netslots.take())
            .flatten();
        let prepared = stocked.is_some();
        let sbx = tokio::task::spawn_blocking(move || this.create_blocking(spec, pooled, stocked))
            .await
            .map_err(RuntimeError::task("create"))??;
        let up = if prepared {
            sbx.write_file(
                "/etc/resolv.conf",
                crate::net::resolv_conf(policy.mode, sbx.slot).into_bytes(),
                Some("root"),
            )
            .await
        } else if policy.mode != NetworkMode::None {
            self.network_up_new(&sbx, &policy).await
        } else {
            Ok(())
        };
        if let Err(e) = up {
            let _ = self.destroy(sbx.id.as_str()).await;
            return Err(e);
        }
        Ok(sbx)
    }

    /// Gives a sandbox its link, rules, resolver and `resolv.conf`.
    pub(super) async fn network_up(
        self: &Arc<Self>,
        sbx: &Arc<Sandbox>,
        p: &NetworkPolicy,
    ) -> Result<()> {
        let this = self.clone();
        let (slot, pid, p2) = (sbx.slot, sbx.pid, p.clone());
        tokio::task::spawn_blocking(move || this.net.attach(slot, Some(pid), &p2))
            .await
            .map_err(RuntimeError::task("network"))??;
        sbx.write_file(
            "/etc/resolv.conf",
            crate::net::resolv_conf(p.mode, slot).into_bytes(),
            Some("root"),
        )
        .await
    }

    /// [`Runtime::network_up`] for a sandbox being created, where nothing runs inside yet:
    /// `resolv.conf` is written while the link is made, so nobody can read it before its
    /// resolver is there.
    async fn network_up_new(self: &Arc<Self>, sbx: &Arc<Sandbox>, p: &NetworkPolicy) -> Result<()> {
        let this = self.clone();
        let (slot, pid, p2) = (sbx.slot, sbx.pid, p.clone());
        let (attached, written) = tokio::join!(
            tokio::task::spawn_blocking(move || this.net.attach(slot, Some(pid), &p2)),
            sbx.write_file(
                "/etc/resolv.conf",
                crate::net::resolv_conf(p.mode, slot).into_bytes(),
                Some("root"),
            )
        );
        attached.map_err(RuntimeError::task("network"))??;
        written
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
            // Offline to offline (an offline pooled sandbox handed out): nothing to change.
            (NetworkMode::None, NetworkMode::None) => {}
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
                    .map_err(RuntimeError::task("network"))?;
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
                    .map_err(RuntimeError::task("network"))??;
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
            .ok_or_else(|| RuntimeError::UnknownTemplate {
                name: spec.template.clone(),
            })?;
        spec.limits.validate(self.host_memory)?;
        self.check_isolation(spec.isolation)?;
        if let Some(u) = spec.user.as_ref().filter(|u| !t.users.contains(u)) {
            return Err(RuntimeError::UnknownUser { user: u.clone() });
        }
        for k in spec.env.keys() {
            if k.is_empty() || k.contains(['=', '\0']) {
                return Err(RuntimeError::InvalidArgument {
                    what: "env name",
                    reason: format!("invalid env name {k:?}"),
                });
            }
        }
        if spec.env.values().any(|v| v.contains('\0'))
            || spec.secret_env.values().any(|v| v.0.contains('\0'))
        {
            return Err(RuntimeError::InvalidArgument {
                what: "env value",
                reason: "env value contains NUL".into(),
            });
        }
        for k in spec.secret_env.keys() {
            if k.is_empty() || k.contains(['=', '\0']) {
                return Err(RuntimeError::InvalidArgument {
                    what: "env name",
                    reason: format!("invalid env name {k:?}"),
                });
            }
        }
        for k in spec.secret_files.keys() {
            if !paddock_core::valid_secret_name(k) {
                return Err(RuntimeError::InvalidArgument {
                    what: "secret file name",
                    reason: format!("invalid secret file name {k:?}"),
                });
            }
        }
        self.check_volumes(&spec.volumes)?;
        let total: usize = spec.secret_files.values().map(|v| v.0.len()).sum();
        if total > paddock_core::MAX_SECRET_FILES_BYTES {
            return Err(RuntimeError::InvalidArgument {
                what: "secret files",
                reason: format!(
                    "secret files total {total} bytes, more than {}",
                    paddock_core::MAX_SECRET_FILES_BYTES
                ),
            });
        }
        Ok(t)
    }

    fn create_blocking(
        self: &Arc<Self>,
        spec: CreateSpec,
        pooled: bool,
        stocked: Option<super::netslots::Taken>,
    ) -> Result<Arc<Sandbox>> {
        // A taken slot not used below is given back with its namespace.
        let mut stocked = stocked;
        let give_back = |t: Option<super::netslots::Taken>| {
            if let Some(t) = t {
                let slot = t.slot;
                self.netslots.release(t);
                self.slots.lock().expect("slots poisoned").remove(&slot);
            }
        };
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            give_back(stocked.take());
            return Err(RuntimeError::Unsupported {
                resource: "runtime",
                reason: "the runtime is shutting down".into(),
            });
        }
        let t = match self.validate(&spec) {
            Ok(t) => t,
            Err(e) => {
                give_back(stocked.take());
                return Err(e);
            }
        };
        let id = spec.id.clone().unwrap_or_else(SandboxId::random);
        let marker = self.slot_marker(id.as_str());
        let slot = if let Some(t) = &stocked {
            // Already in `slots`; the claim moves to this sandbox.
            self.netslots.hand_over(t.slot, &marker);
            t.slot
        } else {
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
            return Err(RuntimeError::InvalidArgument {
                what: "sandbox id",
                reason: format!("sandbox {id} already exists"),
            });
        }
        let netns = stocked.map(|t| t.netns);
        let res = self.start(&id, slot, &t, &spec, netns);
        match res {
            Ok(sbx) => {
                sbx.pooled
                    .store(pooled, std::sync::atomic::Ordering::SeqCst);
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
    fn start(
        &self,
        id: &SandboxId,
        slot: u32,
        t: &Template,
        spec: &CreateSpec,
        netns: Option<fs::File>,
    ) -> Result<Sandbox> {
        let uid_base = match spec.isolation {
            Isolation::Native => ID_BASE + slot * ID_COUNT,
            // gVisor's gofer writes the sandbox's own ids (module `gvisor`).
            Isolation::Gvisor => 0,
        };
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
        let (upper, _, _) = (mk("upper")?, mk("work")?, mk("root")?);
        for i in 0..t.layers.len() {
            mk(&format!("lower{i}"))?;
        }
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
            disk_bytes: Some(spec.limits.disk_bytes),
            paused: None,
            env: spec.env.clone(),
            tmp_bytes: spec.limits.tmp_bytes,
            isolation: spec.isolation,
            volumes: spec.volumes.clone(),
        };
        write_record(&dir, &record)?;
        // 3. cgroups with the limits applied.
        let limits = match spec.isolation {
            Isolation::Native => spec.limits.clone(),
            Isolation::Gvisor => super::gvisor::host_limits(&spec.limits),
        };
        let cgroup_procs = self.cgroups.create(id.as_str(), &limits)?;
        // A prepared network slot gets its rules and resolver before anything runs in its
        // namespace (the setup stage joins it in `launch`).
        if netns.is_some() {
            self.net.attach(slot, None, &spec.network)?;
        }
        self.launch(
            &dir,
            &mut record,
            t,
            cgroup_procs,
            &spec.secret_env,
            &spec.secret_files,
            netns.as_ref(),
        )?;
        let sbx = self.sandbox_from(&record, record.pid.unwrap_or_default());
        self.answer_statfs(&sbx, record.disk_bytes);
        Ok(sbx)
    }

    /// Starts PID 1 of a sandbox whose writable layer, record and cgroups exist (steps 4
    /// and 5 of create, and a `filesystem` resume on the layer it kept), and records its pid.
    // The three callers (create, `filesystem` resume) pass each piece from a different
    // source; a struct for them would only be built to be taken apart here.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn launch(
        &self,
        dir: &Path,
        record: &mut Record,
        t: &Template,
        cgroup_procs: Vec<PathBuf>,
        secret_env: &std::collections::BTreeMap<String, paddock_core::SecretValue>,
        secret_files: &std::collections::BTreeMap<String, paddock_core::SecretValue>,
        netns: Option<&fs::File>,
    ) -> Result<()> {
        let uid_base = match record.isolation {
            Isolation::Native => ID_BASE + record.slot * ID_COUNT,
            Isolation::Gvisor => 0,
        };
        // 4. The agent's socket is bound here and handed over: a client can connect as soon
        //    as create returns; the kernel queues it until the agent accepts.
        let cfg = SetupConfig {
            id: record.id.clone(),
            id_base: uid_base,
            id_count: ID_COUNT,
            lowers: t.layers.clone(),
            lower_mnts: (0..t.layers.len())
                .map(|i| dir.join(format!("lower{i}")))
                .collect(),
            lower_id_bases: t.id_bases.clone(),
            volumes: record
                .volumes
                .iter()
                .map(|v| paddock_core::SetupVolume {
                    source: self.volume_data(&v.volume),
                    target: v.path.clone(),
                    read_only: v.read_only,
                })
                .collect(),
            workdir: t.config.workdir.clone(),
            upper: dir.join("upper"),
            work: dir.join("work"),
            root: dir.join("root"),
            binds: t.binds.clone(),
            tmp_bytes: record.tmp_bytes,
            cgroup_procs,
            // The template's env, then the sandbox's own on top.
            env: {
                let mut e = t.config.env.clone();
                e.extend(record.env.clone());
                e
            },
            agent: self.cfg.agent_bin.clone(),
            agent_lib: self.agent_lib.clone(),
            sudo: self.sudo_bin.clone(),
            log: self.cfg.agent_log.clone(),
            statfs_notify: self.statfs.is_some(),
            secret_env: secret_env.clone(),
            secret_files: secret_files.clone(),
            // The files belong to the sandbox's default user (root if the template has no
            // entry for it).
            secret_owner: crate::template::user_ids(&t.layers, &record.user).unwrap_or((0, 0)),
            gvisor: None,
            join_netns: netns.is_some(),
        };
        if record.isolation == Isolation::Gvisor {
            return self.launch_gvisor(dir, record, cfg);
        }
        let sock = dir.join("agent.sock");
        // A resumed sandbox's old socket file is stale: nothing listens on it any more.
        let _ = fs::remove_file(&sock);
        let listener = std::os::unix::net::UnixListener::bind(&sock)
            .map_err(RuntimeError::io("binding agent socket"))?;
        let log = fs::File::create(dir.join("agent.log"))
            .map_err(RuntimeError::io("creating agent log"))?;
        // 5. Run the setup stage and wait for its one status line. The listener stays open
        // in this process until the child has it (`spawn` returns after the child's exec).
        // The netns descriptor is placed at its fixed number too.
        let mut place = vec![(listener.as_fd(), AGENT_LISTEN_FD)];
        if let Some(ns) = netns {
            place.push((ns.as_fd(), paddock_core::SETUP_NETNS_FD));
        }
        let child = crate::sys::spawn::spawn(
            self.cfg.agent_bin.as_os_str(),
            &["setup"],
            log.as_fd(),
            &place,
        )
        .map_err(RuntimeError::io("starting agent setup"))?;
        drop(place);
        drop(listener);
        let json = serde_json::to_vec(&cfg).map_err(RuntimeError::encode("setup config"))?;
        let sent = fs::File::from(child.stdin).write_all(&json);
        let mut line = String::new();
        let read = BufReader::new(fs::File::from(child.stdout)).read_line(&mut line);
        crate::sys::spawn::wait(child.pid);
        sent.map_err(RuntimeError::io("sending setup config"))?;
        read.map_err(RuntimeError::io("reading setup status"))?;
        let pid = crate::error::setup_status(&record.id, &record.template, &line, || {
            fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
        })?;
        record.pid = Some(pid);
        record.pid_start = pid_start_time(pid);
        write_record(dir, record)
    }

    /// Destroys a sandbox: kills every process through its cgroup, waits for them, removes
    /// the cgroups and the writable layer (its mounts lived only in its own mount namespace
    /// and are gone with its last process).
    pub async fn destroy(self: &Arc<Self>, id: &str) -> Result<()> {
        let sbx = self.live.lock().expect("live poisoned").remove(id);
        if sbx.is_none() && !self.list_host().iter().any(|h| h.id == id) {
            return Err(RuntimeError::NotFound { id: id.to_owned() });
        }
        let this = self.clone();
        let id2 = id.to_owned();
        tokio::task::spawn_blocking(move || this.teardown(&id2, sbx.as_deref()))
            .await
            .map_err(RuntimeError::task("destroy"))?
    }

    /// Kills and removes everything of sandbox `id`. Processes are only ever signalled
    /// through a pidfd or while their cgroup is frozen, never by a bare pid number that could
    /// have been recycled for another sandbox's process in the meantime.
    pub(super) fn teardown(&self, id: &str, sbx: Option<&Sandbox>) -> Result<()> {
        let rec = self.read_record(id);
        let slot = rec.as_ref().map(|r| r.slot);
        if let Some(server) = &self.statfs {
            server.unregister(id);
        }
        if let Some(fd) = sbx.and_then(|s| s.pidfd.as_ref()) {
            // Killing PID 1 makes the kernel kill every process in its pid namespace.
            let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL);
        }
        let gvisor = rec
            .as_ref()
            .is_some_and(|r| r.isolation == Isolation::Gvisor);
        let gvisor_pids = if gvisor {
            self.cgroups.procs(id)
        } else {
            Vec::new()
        };
        self.cgroups.destroy(id)?;
        if let Some(s) = sbx {
            reap(s.pid);
        }
        if gvisor {
            self.teardown_gvisor(id, &gvisor_pids);
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
        self.paused.lock().expect("paused poisoned").remove(id);
        Ok(())
    }

    /// Destroys every sandbox this runtime holds, pooled ones included.
    pub async fn destroy_all(self: &Arc<Self>) {
        let all: Vec<String> = self
            .live
            .lock()
            .expect("live poisoned")
            .keys()
            .cloned()
            .collect();
        for id in all {
            let _ = self.destroy(&id).await;
        }
    }
}

/// Collects the exit status of a sandbox's PID 1 if it is our child (we are a subreaper).
pub(super) fn reap(pid: i32) {
    for _ in 0..500 {
        let Some(p) = rustix::process::Pid::from_raw(pid) else {
            return;
        };
        match rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG) {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) => return,
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
