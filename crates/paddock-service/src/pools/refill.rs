//! The pools' work on sandboxes: the refill task ([`run`]), and the [`Pools`] operations that
//! destroy pooled sandboxes (a size change, a template's delete, shutdown). The pools
//! themselves, which the server's state holds, are the parent module.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::*;
use crate::state::AppState;

impl Pools {
    /// Sets (Some) or removes (None) the size of `template`'s pool. Sandboxes above the new
    /// maximum are destroyed.
    pub async fn set(
        &self,
        state: &Arc<AppState>,
        template: &str,
        size: Option<PoolSize>,
    ) -> Result<(), String> {
        let excess = {
            let mut all = lock(&self.pools);
            let others = all
                .iter()
                .filter(|(t, _)| t.as_str() != template)
                .filter_map(|(_, p)| p.size.as_ref());
            if let Some(s) = &size {
                check_total(others.chain(std::iter::once(s)))?;
            }
            let p = all.entry(template.to_owned()).or_default();
            p.size = size;
            p.failed = None;
            let max = size.map_or(0, |s| s.max) as usize;
            let mut excess = Vec::new();
            while p.ready.len() > max {
                excess.extend(p.ready.pop_back());
            }
            if size.is_none() && p.ready.is_empty() && p.hits == 0 && p.misses == 0 {
                all.remove(template);
            }
            excess
        };
        destroy_all(state, excess).await;
        self.wake.notify_one();
        Ok(())
    }

    /// Empties `template`'s pool and keeps it empty until the returned guard drops (a
    /// template delete holds it across the delete).
    pub async fn hold(&self, state: &Arc<AppState>, template: &str) -> Hold<'_> {
        lock(&self.held).insert(template.to_owned());
        self.flush(state, template).await;
        // A fill already under way checks `held` before it adds its sandbox; wait for it so
        // the delete does not find it running.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.filling.load(Ordering::SeqCst) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Hold(self, template.to_owned())
    }

    /// Destroys every sandbox of `template`'s pool (its size stays).
    pub async fn flush(&self, state: &Arc<AppState>, template: &str) {
        let gone: Vec<Pooled> = {
            let mut all = lock(&self.pools);
            match all.get_mut(template) {
                Some(p) => {
                    p.generation += 1;
                    p.ready.drain(..).collect()
                }
                None => Vec::new(),
            }
        };
        destroy_all(state, gone).await;
        self.wake.notify_one();
    }

    /// At shutdown: no more fills, and every pooled sandbox destroyed (waiting for a fill
    /// under way, up to 30 s).
    pub async fn shutdown(&self, state: &Arc<AppState>) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.filling.load(Ordering::SeqCst) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let gone: Vec<Pooled> = {
            let mut all = lock(&self.pools);
            all.values_mut()
                .flat_map(|p| {
                    p.generation += 1;
                    p.ready.drain(..).collect::<Vec<_>>()
                })
                .collect()
        };
        destroy_all(state, gone).await;
    }
}

async fn destroy_all(state: &Arc<AppState>, gone: impl IntoIterator<Item = Pooled>) {
    for x in gone {
        let id = x.sbx.id.to_string();
        drop(x);
        if let Err(e) = state.runtime.destroy(&id).await {
            tracing::warn!(sandbox = %id, "destroying a pooled sandbox: {e}");
        }
    }
}

/// The refill task: forever, drops stale pooled sandboxes and makes one sandbox for the pool
/// furthest below its target, after the creates in flight.
pub async fn run(state: Arc<AppState>) {
    let pools = &state.pools;
    loop {
        if pools.closed.load(Ordering::SeqCst) {
            return;
        }
        let (stale, next) = pools.next(&state.runtime);
        for s in stale {
            let id = s.id.to_string();
            drop(s);
            if let Err(e) = state.runtime.destroy(&id).await {
                tracing::warn!(sandbox = %id, "destroying a stale pooled sandbox: {e}");
            }
        }
        let Some((template, generation, offline)) = next else {
            tokio::select! {
                () = pools.wake.notified() => {}
                () = tokio::time::sleep(CHECK_EVERY) => {}
            }
            continue;
        };
        // Creates first: a refill starts once none is in flight (or after YIELD_MAX).
        let deadline = Instant::now() + YIELD_MAX;
        while pools.busy.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        pools.filling.store(true, Ordering::SeqCst);
        let made = fill_one(&state, &template, offline).await;
        match made {
            Ok(x) => {
                if let Err(x) = pools.add(&template, generation, x) {
                    let id = x.sbx.id.to_string();
                    drop(x);
                    let _ = state.runtime.destroy(&id).await;
                }
            }
            Err(why) => {
                tracing::warn!(template = %template, "filling its pool: {why}");
                pools.fill_failed(&template, why);
            }
        }
        pools.filling.store(false, Ordering::SeqCst);
    }
}

/// Makes one pooled sandbox of `template`, its start command running and ready; `offline`:
/// without a network link.
async fn fill_one(state: &Arc<AppState>, template: &str, offline: bool) -> Result<Pooled, String> {
    let t = state
        .runtime
        .template(template)
        .ok_or_else(|| format!("unknown template {template:?}"))?;
    let limits = crate::templates::default_limits(state, template);
    let sbx = state
        .runtime
        .create_pooled(CreateSpec {
            template: template.to_owned(),
            limits: limits.clone(),
            network: if offline {
                paddock_core::NetworkPolicy::default()
            } else {
                Runtime::pool_network()
            },
            isolation: Isolation::Native,
            ..CreateSpec::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let started = t.config.start.is_some() || t.config.ready.is_some();
    if started {
        // The start command's exec history row and `start_exited` event carry the sandbox's
        // id, which is its create's; no tenant owns it yet.
        let rec = SandboxRecord {
            id: sbx.id.to_string(),
            tenant: String::new(),
            key_id: String::new(),
            template: template.to_owned(),
            state: SandboxState::Starting,
            stop_reason: None,
            spec: paddock_store::SandboxSpec::default(),
            metadata: BTreeMap::new(),
            env_keys: Vec::new(),
            created_at: now_ms(),
            ready_at: None,
            expires_at: None,
            stopped_at: None,
            warnings_sent: 0,
            webhook_url: None,
        };
        if let Err(e) = crate::startcmd::run_start(state, &rec, &sbx, &t).await {
            let _ = state.runtime.destroy(sbx.id.as_str()).await;
            return Err(e.to_string());
        }
    }
    Ok(Pooled {
        sbx,
        made_from: fingerprint(&t),
        limits,
        started,
        offline,
    })
}
