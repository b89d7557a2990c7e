//! Pausing and resuming sandboxes on the server: runtime first, then the record, the
//! deadline and the events (`docs/persistence.md`).
//!
//! A paused sandbox (state `paused`) has no running timeout: what was left of it is kept in
//! `spec.remaining_ms` and given back at resume, so paused time never counts. Its
//! `expires_at` is the end of its retention (`--paused-retention`, default 30 days), when it
//! is destroyed with reason `expired`. The pause mode is `spec.paused_mode`.
//!
//! Create-time settings, kept in the spec: `on_timeout` (`kill`, the default, or `pause`:
//! the timeout pauses the sandbox, in `auto_pause_mode`), `auto_resume` (the first
//! data-plane request, E2B envd or the port proxy, resumes a paused sandbox).

use std::sync::Arc;
use std::time::Duration;

use paddock_runtime::PauseMode;
use paddock_store::{SandboxRecord, SandboxState, now_ms};

pub use crate::error::paused_error;
use crate::error::{Error, Result};
use crate::event_kind::EventKind;
use crate::state::{AppState, Reconciled};

/// The pause mode a paused record was paused in.
pub fn paused_mode(r: &SandboxRecord) -> Option<PauseMode> {
    r.spec.paused_mode
}

/// Whether the sandbox resumes on its first data-plane request.
pub fn auto_resume(r: &SandboxRecord) -> bool {
    r.spec.auto_resume
}

/// What the timeout does: `Some(mode)` pauses, `None` kills.
pub fn pause_on_timeout(r: &SandboxRecord) -> Option<PauseMode> {
    r.spec.pause_on_timeout()
}

/// Pauses running sandbox `id`. A paused one answers 409 (`already paused`); a stopped one
/// 409 as well.
pub async fn pause(
    state: &Arc<AppState>,
    id: &str,
    mode: PauseMode,
    why: &str,
) -> Result<SandboxRecord> {
    let _g = state.pause_lock.lock().await;
    let mut rec = state
        .store
        .get_sandbox(id)
        .await?
        .ok_or_else(|| Error::sandbox_not_found(id))?;
    match rec.state {
        SandboxState::Running => {}
        SandboxState::Paused => {
            return Err(Error::Conflict(format!("sandbox {id} is already paused")));
        }
        s => return Err(Error::Conflict(format!("sandbox {id} is {s}"))),
    }
    let now = now_ms();
    let timeout_ms = rec.spec.timeout_ms.unwrap_or(300_000);
    let remaining = rec.expires_at.map_or(timeout_ms, |e| (e - now).max(0));
    state.runtime.pause(id, mode).await?;
    let retention = i64::try_from(state.cfg.paused_retention.as_millis()).unwrap_or(i64::MAX);
    rec.state = SandboxState::Paused;
    rec.expires_at = Some(now.saturating_add(retention));
    rec.spec.paused_mode = Some(mode);
    rec.spec.paused_at = Some(now);
    rec.spec.remaining_ms = Some(remaining);
    state.store.update_sandbox(&rec).await?;
    state.deadlines.set(&rec);
    state.deadlines_changed.notify_one();
    state
        .emit(
            &rec.tenant,
            Some(id),
            EventKind::Paused,
            serde_json::json!({ "mode": mode.as_str(), "reason": why }),
            rec.webhook_url.as_deref(),
        )
        .await;
    Ok(rec)
}

/// Resumes paused sandbox `id` (a running one is returned as it is). Its timeout goes on
/// with what was left at the pause (all of it after a pause at timeout), or `timeout` from
/// now if given. `reboot` resumes a `full`-paused sandbox the `filesystem` way.
pub async fn resume(
    state: &Arc<AppState>,
    id: &str,
    reboot: bool,
    timeout: Option<Duration>,
) -> Result<SandboxRecord> {
    let _g = state.pause_lock.lock().await;
    let mut rec = state
        .store
        .get_sandbox(id)
        .await?
        .ok_or_else(|| Error::sandbox_not_found(id))?;
    match rec.state {
        SandboxState::Paused => {}
        SandboxState::Running => return Ok(rec),
        s => return Err(Error::Conflict(format!("sandbox {id} is {s}"))),
    }
    let mode = paused_mode(&rec);
    let sbx = state.runtime.resume(id, reboot).await?;
    // PID 1 started again: so does the template's start command, with its ready check. A
    // failure puts the sandbox back to `filesystem`-paused and answers the error.
    if (reboot || mode == Some(PauseMode::Filesystem))
        && let Err(e) = crate::startcmd::start_template(state, &rec, &sbx).await
    {
        if let Err(pe) = state.runtime.pause(id, PauseMode::Filesystem).await {
            tracing::error!(sandbox = %id, "pausing again after a failed start command: {pe}");
        }
        return Err(e);
    }
    let now = now_ms();
    let timeout_ms = rec.spec.timeout_ms.unwrap_or(300_000);
    let remaining = match timeout {
        Some(t) => i64::try_from(t.as_millis()).unwrap_or(i64::MAX),
        None => rec
            .spec
            .remaining_ms
            .filter(|r| *r > 0)
            .unwrap_or(timeout_ms),
    };
    rec.spec.clear_paused();
    if timeout.is_some() {
        rec.spec.timeout_ms = Some(remaining);
    }
    let timeout_ms = if timeout.is_some() {
        remaining
    } else {
        timeout_ms
    };
    rec.state = SandboxState::Running;
    rec.expires_at = Some(now.saturating_add(remaining));
    // Warnings whose point already passed before the pause are not sent again.
    let start = now + remaining - timeout_ms;
    rec.warnings_sent = u32::try_from(
        state
            .cfg
            .warn_at
            .iter()
            .filter(|p| start + (timeout_ms as f64 * **p) as i64 <= now)
            .count(),
    )
    .unwrap_or(0);
    state.store.update_sandbox(&rec).await?;
    state.deadlines.set(&rec);
    state.deadlines_changed.notify_one();
    state
        .emit(
            &rec.tenant,
            Some(id),
            EventKind::Resumed,
            serde_json::json!({ "mode": mode.map(PauseMode::as_str), "reboot": reboot }),
            rec.webhook_url.as_deref(),
        )
        .await;
    Ok(rec)
}

/// Reconciliation of one record at start when it or the runtime says paused. `None`: the
/// caller's usual policy applies (neither is paused, or a sandbox the store has as running
/// was resumed here to match it); `Some(true)`: adopted; `Some(false)`: marked `lost`.
pub async fn reconcile_paused(
    state: &Arc<AppState>,
    r: &mut SandboxRecord,
) -> Result<Option<bool>> {
    let in_runtime = state.runtime.paused_mode(&r.id);
    let now = now_ms();
    match (r.state, in_runtime) {
        (SandboxState::Paused, Some(m)) => {
            r.spec.paused_mode = Some(m);
            state.store.update_sandbox(r).await?;
            state.deadlines.set(r);
            tracing::info!(sandbox = %r.id, mode = m.as_str(), "adopted paused");
            let data = serde_json::json!({ "paused": m.as_str() });
            state.record_lifecycle(r, Reconciled::Adopted(data)).await;
            Ok(Some(true))
        }
        // A crash between the runtime's resume and the record's: it runs.
        (SandboxState::Paused, None) if state.runtime.get(&r.id).is_ok() => {
            let remaining = r
                .spec
                .remaining_ms
                .filter(|v| *v > 0)
                .or(r.spec.timeout_ms)
                .unwrap_or(300_000);
            r.spec.clear_paused();
            r.state = SandboxState::Running;
            r.expires_at = Some(now.saturating_add(remaining));
            state.store.update_sandbox(r).await?;
            state.deadlines.set(r);
            tracing::info!(sandbox = %r.id, "adopted (resumed before the crash)");
            Ok(Some(true))
        }
        (SandboxState::Paused, None) => {
            r.state = SandboxState::Stopped;
            r.stop_reason = Some(paddock_store::StopReason::Lost);
            r.stopped_at = Some(now);
            state.store.update_sandbox(r).await?;
            tracing::warn!(sandbox = %r.id, "lost: its paused sandbox no longer exists");
            state.record_lifecycle(r, Reconciled::Lost).await;
            Ok(Some(false))
        }
        // A crash between the runtime's pause and the record's: resumed, as the store says.
        (_, Some(_)) => {
            if let Err(e) = state.runtime.resume(&r.id, false).await {
                tracing::error!(sandbox = %r.id, "resuming a sandbox paused by a crashed server: {e}");
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}
