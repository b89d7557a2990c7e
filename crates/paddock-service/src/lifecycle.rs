//! Sandbox lifecycle: create, kill, timeouts with warnings, and reconciliation at start.
//!
//! **Timeouts.** A sandbox's timeout counts from the moment it is ready. Its deadline lives
//! in the store (`expires_at`) and in memory ([`Deadlines`]); one task ([`run`]) sleeps until
//! the nearest deadline or warning point, sends `timeout_warning` events at the configured
//! fractions of the timeout, and destroys expired sandboxes with reason `expired`. Setting a
//! new timeout restarts the count (and the warnings) from now.
//!
//! **Reconciliation policy** (at start, after the runtime has adopted every sandbox whose
//! PID 1 is still alive and destroyed everything else it found):
//! - a record `starting` or `running` whose sandbox is alive is **adopted**: it keeps its
//!   deadline (if that passed while the server was down, it expires at once) and an
//!   `adopted` event is stored;
//! - a record `starting` or `running` whose sandbox is gone is marked `stopped` with reason
//!   `lost`;
//! - a live sandbox without a `starting`/`running` record is destroyed.
//!
//! So after any crash every process, mount, cgroup and layer on the host has a running record,
//! and every running record has a live sandbox.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use paddock_store::{SandboxFilter, SandboxRecord, SandboxState, StopReason, now_ms};

use crate::error::{Coded as _, Error, Result};
use crate::event_kind::EventKind;
use crate::state::{AppState, Metrics, Reconciled};

mod create;
pub mod deadlines;

pub use self::create::create;
pub use self::deadlines::Deadlines;
pub use crate::sandbox_spec::NewSandbox;

/// A create's `node_selector` against this server's labels (a single host has none).
fn check_selector(state: &AppState, sel: &BTreeMap<String, String>) -> Result<()> {
    let labels = state.cfg.node.as_ref().map(|n| &n.labels);
    let miss = sel
        .iter()
        .find(|(k, v)| labels.and_then(|l| l.get(*k)) != Some(*v));
    match miss {
        None => Ok(()),
        Some((k, v)) => Err(Error::NoCapacity(format!(
            "no node can take this sandbox; no match for node_selector {k}={v}"
        ))),
    }
}

/// Destroys a sandbox and records why (`killed`, `expired`, `shutdown`, ...). Idempotent: a
/// stopped sandbox stays as it is.
pub async fn stop(state: &Arc<AppState>, id: &str, reason: StopReason) -> Result<SandboxRecord> {
    let mut rec = state
        .store
        .get_sandbox(id)
        .await?
        .ok_or_else(|| Error::sandbox_not_found(id))?;
    state.deadlines.remove(id);
    if rec.state == SandboxState::Stopped {
        return Ok(rec);
    }
    if state.runtime.get(id).is_ok() || state.runtime.paused_mode(id).is_some() {
        state.runtime.destroy(id).await?;
    }
    rec.state = SandboxState::Stopped;
    rec.stop_reason = Some(reason);
    rec.stopped_at = Some(now_ms());
    state.store.update_sandbox(&rec).await?;
    match reason {
        StopReason::Expired => Metrics::inc(&state.metrics.sandboxes_expired),
        _ => Metrics::inc(&state.metrics.sandboxes_killed),
    }
    state
        .emit(
            &rec.tenant,
            Some(id),
            EventKind::from(reason),
            serde_json::json!({}),
            rec.webhook_url.as_deref(),
        )
        .await;
    Ok(rec)
}

/// Sets a running sandbox's timeout to `timeout` from now; warnings start over.
pub async fn set_timeout(
    state: &AppState,
    rec: &mut SandboxRecord,
    timeout: Duration,
) -> Result<()> {
    if rec.state != SandboxState::Running {
        return Err(Error::Conflict(format!(
            "sandbox {} is {}",
            rec.id, rec.state
        )));
    }
    let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    rec.expires_at = Some(now_ms().saturating_add(timeout_ms));
    rec.warnings_sent = 0;
    rec.spec.timeout_ms = Some(timeout_ms);
    state.store.update_sandbox(rec).await?;
    state.deadlines.set(rec);
    state.deadlines_changed.notify_one();
    state.emit(
        &rec.tenant,
        Some(&rec.id),
        EventKind::TimeoutChanged,
        serde_json::json!({ "timeout_secs": timeout.as_secs(), "expires_at": crate::text::rfc3339(rec.expires_at) }),
        rec.webhook_url.as_deref(),
    ).await;
    Ok(())
}

/// Changes a running sandbox's network policy (runtime first, then the record).
pub async fn set_network(
    state: &AppState,
    rec: &mut SandboxRecord,
    policy: paddock_core::NetworkPolicy,
) -> Result<()> {
    if rec.state != SandboxState::Running {
        return Err(Error::Conflict(format!(
            "sandbox {} is {}",
            rec.id, rec.state
        )));
    }
    state.runtime.set_network(&rec.id, policy.clone()).await?;
    rec.spec.network = Some(policy.clone());
    state.store.update_sandbox(rec).await?;
    state
        .emit(
            &rec.tenant,
            Some(&rec.id),
            EventKind::NetworkChanged,
            serde_json::json!({ "network": policy }),
            rec.webhook_url.as_deref(),
        )
        .await;
    Ok(())
}

/// The lifecycle task: warnings and expiry. Runs until the process ends.
pub async fn run(state: Arc<AppState>) {
    let mut last_liveness = std::time::Instant::now();
    loop {
        if last_liveness.elapsed() >= Duration::from_secs(1) {
            last_liveness = std::time::Instant::now();
            check_liveness(&state);
        }
        let now = now_ms();
        let mut expire = Vec::new();
        let mut warn = Vec::new();
        let mut next = now + 1000;
        {
            let mut d = state.deadlines.0.lock().expect("deadlines poisoned");
            for (id, dl) in d.iter_mut() {
                if now >= dl.expires_at {
                    expire.push(id.clone());
                    continue;
                }
                let start = dl.expires_at - dl.timeout_ms;
                let points = &state.cfg.warn_at;
                while (dl.warnings_sent as usize) < points.len() {
                    let at =
                        start + (dl.timeout_ms as f64 * points[dl.warnings_sent as usize]) as i64;
                    if now >= at {
                        dl.warnings_sent += 1;
                        warn.push((id.clone(), dl.clone()));
                    } else {
                        next = next.min(at);
                        break;
                    }
                }
                next = next.min(dl.expires_at);
            }
        }
        for (id, dl) in warn {
            let remaining = (dl.expires_at - now).max(0);
            state
                .emit(
                    &dl.tenant,
                    Some(&id),
                    EventKind::TimeoutWarning,
                    serde_json::json!({
                        "expires_at": crate::text::rfc3339(Some(dl.expires_at)),
                        "remaining_secs": remaining / 1000,
                        "warning": dl.warnings_sent,
                    }),
                    dl.webhook.as_deref(),
                )
                .await;
            if let Ok(Some(mut r)) = state.store.get_sandbox(&id).await {
                r.warnings_sent = dl.warnings_sent;
                let _ = state.store.update_sandbox(&r).await;
            }
        }
        for id in expire {
            state.deadlines.remove(&id);
            let st = state.clone();
            tokio::spawn(async move {
                // A running sandbox created with `on_timeout: pause` is paused instead.
                let pause = st
                    .store
                    .get_sandbox(&id)
                    .await
                    .ok()
                    .flatten()
                    .filter(|r| r.state == SandboxState::Running)
                    .and_then(|r| crate::pausing::pause_on_timeout(&r));
                if let Some(mode) = pause {
                    match crate::pausing::pause(&st, &id, mode, "timeout").await {
                        Ok(_) => {
                            st.audit(None, "sandbox.auto_pause", Some(&id), "ok", None)
                                .await
                        }
                        Err(e) => {
                            tracing::error!(sandbox = %id, "pausing at timeout: {e}");
                            st.audit(None, "sandbox.auto_pause", Some(&id), e.code(), None)
                                .await;
                            let _ = stop(&st, &id, StopReason::Expired).await;
                        }
                    }
                    return;
                }
                match stop(&st, &id, StopReason::Expired).await {
                    Ok(_) => {
                        st.audit(None, "sandbox.expire", Some(&id), "ok", None)
                            .await
                    }
                    Err(e) => {
                        tracing::error!(sandbox = %id, "expiring: {e}");
                        st.audit(None, "sandbox.expire", Some(&id), e.code(), None)
                            .await;
                    }
                }
            });
        }
        let wait = u64::try_from((next - now_ms()).max(5)).unwrap_or(1000);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = state.deadlines_changed.notified() => {}
        }
    }
}

/// Stops sandboxes whose agent died on its own: reason `oom` if the OOM killer struck in
/// the sandbox, else `failed`.
fn check_liveness(state: &Arc<AppState>) {
    let ids: Vec<String> = state
        .deadlines
        .0
        .lock()
        .expect("deadlines poisoned")
        .keys()
        .cloned()
        .collect();
    for id in ids {
        let Ok(sbx) = state.runtime.get(&id) else {
            continue;
        };
        if sbx.is_alive() {
            continue;
        }
        state.deadlines.remove(&id);
        let st = state.clone();
        tokio::spawn(async move {
            let rt = st.runtime.clone();
            let oom = tokio::task::spawn_blocking(move || sbx.stats(&rt).oom_kills > 0)
                .await
                .unwrap_or(false);
            let reason = if oom {
                StopReason::Oom
            } else {
                StopReason::Failed
            };
            tracing::warn!(sandbox = %id, %reason, "the sandbox's agent died");
            if let Err(e) = stop(&st, &id, reason).await {
                tracing::error!(sandbox = %id, "stopping a dead sandbox: {e}");
            }
            st.audit(None, "sandbox.died", Some(&id), reason.as_str(), None)
                .await;
        });
    }
}

/// Makes the store and the host agree (see the module doc for the policy).
pub async fn reconcile(state: &Arc<AppState>) -> Result<()> {
    let active = state
        .store
        .list_sandboxes(&SandboxFilter {
            states: SandboxState::NOT_STOPPED.to_vec(),
            ..Default::default()
        })
        .await?;
    // A node reconciles only the sandboxes it holds; a single host those of no node.
    let me = state.cfg.node.as_ref().map(|n| n.id.as_str());
    let active: Vec<SandboxRecord> = active
        .into_iter()
        .filter(|r| crate::fleet::node_of(r) == me)
        .collect();
    let mut known = std::collections::HashSet::new();
    // Adopted sandboxes whose network could not be restored were destroyed by the runtime:
    // they are `failed`, not `lost` (and never `running`).
    let report = state.runtime.take_adoption_report().await;
    let failed: std::collections::HashMap<String, String> = report.failed.into_iter().collect();
    for id in &report.repaired {
        tracing::warn!(sandbox = %id, "adopted with its network re-created");
    }
    for mut r in active {
        if let Some(why) = failed.get(&r.id) {
            r.state = SandboxState::Stopped;
            r.stop_reason = Some(StopReason::Failed);
            r.stopped_at = Some(now_ms());
            state.store.update_sandbox(&r).await?;
            tracing::error!(sandbox = %r.id, "failed at adoption: {why}");
            state
                .record_lifecycle(&r, Reconciled::Failed(why.clone()))
                .await;
            continue;
        }
        if let Some(adopted) = crate::pausing::reconcile_paused(state, &mut r).await? {
            if adopted {
                known.insert(r.id.clone());
            }
            continue;
        }
        if state.runtime.get(&r.id).is_ok() {
            known.insert(r.id.clone());
            let now = now_ms();
            if r.state == SandboxState::Starting {
                r.state = SandboxState::Running;
                let timeout_ms = r.spec.timeout_ms.unwrap_or(300_000);
                r.ready_at = Some(now);
                r.expires_at = Some(now + timeout_ms);
            }
            state.store.update_sandbox(&r).await?;
            state.deadlines.set(&r);
            tracing::info!(sandbox = %r.id, "adopted");
            state
                .record_lifecycle(&r, Reconciled::Adopted(serde_json::json!({})))
                .await;
        } else {
            r.state = SandboxState::Stopped;
            r.stop_reason = Some(StopReason::Lost);
            r.stopped_at = Some(now_ms());
            state.store.update_sandbox(&r).await?;
            tracing::warn!(sandbox = %r.id, "lost: its sandbox no longer exists");
            state.record_lifecycle(&r, Reconciled::Lost).await;
        }
    }
    let paused = state.runtime.paused();
    for (id, _) in &paused {
        if !known.contains(id.as_str()) {
            tracing::warn!(sandbox = %id, "destroying a paused sandbox without a record");
            if let Err(e) = state.runtime.destroy(id).await {
                tracing::error!(sandbox = %id, "destroying: {e}");
            }
            state
                .audit(None, "sandbox.orphan_destroy", Some(id), "ok", None)
                .await;
        }
    }
    for s in state.runtime.list() {
        if !known.contains(s.id.as_str()) && !paused.iter().any(|(p, _)| p == s.id.as_str()) {
            tracing::warn!(sandbox = %s.id, "destroying a sandbox without a running record");
            if let Err(e) = state.runtime.destroy(s.id.as_str()).await {
                tracing::error!(sandbox = %s.id, "destroying: {e}");
            }
            state
                .audit(
                    None,
                    "sandbox.orphan_destroy",
                    Some(s.id.as_str()),
                    "ok",
                    None,
                )
                .await;
        }
    }
    state.deadlines_changed.notify_one();
    Ok(())
}
