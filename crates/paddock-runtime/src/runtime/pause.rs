//! Pausing and resuming sandboxes.
//!
//! - `full`: the sandbox's cgroup is frozen (v1 `freezer.state`, v2 `cgroup.freeze`). Every
//!   process stays, with its memory resident; none gets CPU. Resume thaws it.
//! - `filesystem`: every process is killed (PID 1 first, through its pidfd, then whatever
//!   is left in the cgroup), the network link, rules and resolver go, the page cache still
//!   charged to the cgroup is reclaimed. The writable layer, the cgroups (empty, with their
//!   limits), the uid slot and the record stay. Resume starts PID 1 again on the same layer
//!   with the same id, uid range, env, limits and network policy. What lived only in memory
//!   (processes, `/tmp`, which is a tmpfs) is gone, as after a reboot.
//!
//! The mode is kept in the sandbox's record, so a runtime opening the data directory after
//! a crash adopts a `full`-paused sandbox (its PID 1 is alive, frozen) without talking to
//! its agent, and keeps a `filesystem`-paused one although its PID 1 is gone.

use std::sync::Arc;

use super::create::reap;
use super::write_record;
use super::{Runtime, Sandbox};
use crate::error::{Result, RuntimeError};

/// How a sandbox is paused (shared with the server's store, so it lives in `paddock-core`).
pub use paddock_core::PauseMode;

impl Runtime {
    /// How sandbox `id` is paused, if it is.
    pub fn paused_mode(&self, id: &str) -> Option<PauseMode> {
        self.paused
            .lock()
            .expect("paused poisoned")
            .get(id)
            .copied()
    }

    /// Every paused sandbox of this runtime with its mode, by id.
    pub fn paused(&self) -> Vec<(String, PauseMode)> {
        let mut v: Vec<_> = self
            .paused
            .lock()
            .expect("paused poisoned")
            .iter()
            .map(|(k, m)| (k.clone(), *m))
            .collect();
        v.sort();
        v
    }

    /// Pauses a running sandbox. Pausing a paused sandbox is refused with
    /// [`RuntimeError::AlreadyPaused`], except `filesystem` of a `full`-paused
    /// one, which stops its frozen processes and frees their memory.
    pub async fn pause(self: &Arc<Self>, id: &str, mode: PauseMode) -> Result<()> {
        match (self.paused_mode(id), mode) {
            (Some(PauseMode::Full), PauseMode::Filesystem) => {}
            (Some(m), _) => {
                return Err(RuntimeError::AlreadyPaused {
                    id: id.to_owned(),
                    mode: m.as_str(),
                });
            }
            (None, _) => {}
        }
        let sbx = self.get(id)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || match mode {
            PauseMode::Full => this.freeze(&sbx),
            PauseMode::Filesystem => this.stop_processes(&sbx),
        })
        .await
        .map_err(RuntimeError::task("pause"))?
    }

    fn freeze(&self, sbx: &Sandbox) -> Result<()> {
        let id = sbx.id.as_str();
        let mut rec = self
            .read_record(id)
            .ok_or_else(|| RuntimeError::NotFound { id: id.to_owned() })?;
        // Recorded first: a crash while freezing leaves a record saying `full`, and adoption
        // then neither talks to the (maybe frozen) agent nor leaves it frozen unrecorded.
        rec.paused = Some(PauseMode::Full);
        write_record(&sbx.dir, &rec)?;
        if let Err(e) = self.cgroups.freeze(id, true) {
            let _ = self.cgroups.freeze(id, false);
            rec.paused = None;
            let _ = write_record(&sbx.dir, &rec);
            return Err(e);
        }
        self.paused
            .lock()
            .expect("paused poisoned")
            .insert(id.to_owned(), PauseMode::Full);
        Ok(())
    }

    /// The `filesystem` pause: everything of the sandbox but its layer, cgroups, slot and
    /// record goes.
    fn stop_processes(&self, sbx: &Sandbox) -> Result<()> {
        let id = sbx.id.as_str();
        let mut rec = self
            .read_record(id)
            .ok_or_else(|| RuntimeError::NotFound { id: id.to_owned() })?;
        // Recorded before anything is killed: from here on, a crash leaves a sandbox that
        // the next open keeps (and resumes on request) instead of destroying it as dead.
        rec.paused = Some(PauseMode::Filesystem);
        write_record(&sbx.dir, &rec)?;
        self.live.lock().expect("live poisoned").remove(id);
        self.paused
            .lock()
            .expect("paused poisoned")
            .insert(id.to_owned(), PauseMode::Filesystem);
        if let Some(server) = &self.statfs {
            server.unregister(id);
        }
        if let Some(fd) = sbx.pidfd.as_ref() {
            // Killing PID 1 makes the kernel kill every process in its pid namespace.
            let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL);
        }
        self.cgroups.kill_all(id)?;
        reap(sbx.pid);
        if self.cgroups.is_frozen(id) {
            self.cgroups.freeze(id, false)?;
        }
        self.cgroups.reclaim_memory(id);
        self.net.detach(sbx.slot);
        rec.pid = None;
        rec.pid_start = None;
        write_record(&sbx.dir, &rec)
    }

    /// Resumes a paused sandbox and returns it running; a running sandbox is returned as it
    /// is. `full`: thawed, every process carries on. `filesystem`: PID 1 starts again on the
    /// layer it kept, with its network. `reboot` resumes a `full`-paused sandbox the
    /// `filesystem` way (its processes are stopped, PID 1 starts again).
    pub async fn resume(self: &Arc<Self>, id: &str, reboot: bool) -> Result<Arc<Sandbox>> {
        let mode = match self.paused_mode(id) {
            None => return self.get(id),
            Some(PauseMode::Full) if reboot => {
                self.pause(id, PauseMode::Filesystem).await?;
                PauseMode::Filesystem
            }
            Some(m) => m,
        };
        let this = self.clone();
        let id2 = id.to_owned();
        let sbx = tokio::task::spawn_blocking(move || match mode {
            PauseMode::Full => this.thaw(&id2),
            PauseMode::Filesystem => this.restart(&id2),
        })
        .await
        .map_err(RuntimeError::task("resume"))??;
        let policy = sbx.network();
        if mode == PauseMode::Filesystem
            && policy.mode != paddock_core::NetworkMode::None
            && let Err(e) = self.network_up(&sbx, &policy).await
        {
            // Back to paused: the layer stays, and a later resume tries again.
            let this = self.clone();
            let s2 = sbx.clone();
            let _ = tokio::task::spawn_blocking(move || this.stop_processes(&s2)).await;
            return Err(e);
        }
        Ok(sbx)
    }

    fn thaw(&self, id: &str) -> Result<Arc<Sandbox>> {
        let sbx = self.get(id)?;
        self.cgroups.freeze(id, false)?;
        if let Some(mut rec) = self.read_record(id) {
            rec.paused = None;
            write_record(&sbx.dir, &rec)?;
        }
        self.paused.lock().expect("paused poisoned").remove(id);
        Ok(sbx)
    }

    /// Starts PID 1 of a `filesystem`-paused sandbox again.
    fn restart(&self, id: &str) -> Result<Arc<Sandbox>> {
        let dir = self.layers.sandboxes_dir().join(id);
        let mut rec = self
            .read_record(id)
            .ok_or_else(|| RuntimeError::NotFound { id: id.to_owned() })?;
        let t = self
            .template(&rec.template)
            .ok_or_else(|| RuntimeError::UnknownTemplate {
                name: rec.template.clone(),
            })?;
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RuntimeError::Unsupported {
                resource: "runtime",
                reason: "the runtime is shutting down".into(),
            });
        }
        // What the last run left in the overlay's work directory is the kernel's scratch.
        let _ = std::fs::remove_dir_all(dir.join("work"));
        std::fs::create_dir(dir.join("work")).map_err(RuntimeError::io("creating work"))?;
        rec.paused = Some(PauseMode::Filesystem);
        let procs = self.cgroups.procs_files(id);
        // Secrets are not kept anywhere on the host, so a filesystem resume starts without
        // them (docs/secrets.md).
        let none = std::collections::BTreeMap::new();
        if let Err(e) = self.launch(&dir, &mut rec, &t, procs, &none, &none, None) {
            // Whatever the failed start left running goes; the sandbox stays paused.
            let _ = self.cgroups.kill_all(id);
            rec.pid = None;
            rec.pid_start = None;
            let _ = write_record(&dir, &rec);
            return Err(e);
        }
        rec.paused = None;
        write_record(&dir, &rec)?;
        let sbx = self.sandbox_from(&rec, rec.pid.unwrap_or_default());
        self.answer_statfs(&sbx, rec.disk_bytes);
        let sbx = Arc::new(sbx);
        self.live
            .lock()
            .expect("live poisoned")
            .insert(id.to_owned(), sbx.clone());
        self.paused.lock().expect("paused poisoned").remove(id);
        Ok(sbx)
    }
}
