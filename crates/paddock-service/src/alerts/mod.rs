//! Alerts (`docs/alerts.md`): rules per tenant (node and capacity rules fleet-wide, made by
//! admins), evaluated by the server on events as they are emitted and by a periodic check
//! every sampling interval; a condition that holds opens one firing per rule and subject
//! (the store's unique open episode is the deduplication, so of several servers on one store
//! exactly one delivers), delivered to the rule's webhook with retries, and a `resolved`
//! message follows when it clears.
//!
//! - `rules`: kinds, parameters, limits and the checks of a new rule.
//! - `eval`: the conditions (periodic checks, event handling, the OOM watch).
//! - `deliver`: message bodies (JSON or Slack) and delivery with retries.
//!
//! Its routes, `/v1/alerts` and `/v1/alerts/rules`, are the edge's `api/alerts.rs`.

use std::sync::Arc;

use paddock_store::{AlertFiring, AlertRule, now_ms};
use serde_json::{Value, json};

use crate::event_kind::EventKind;
use crate::state::AppState;

pub mod deliver;
pub mod eval;
pub mod rules;
pub mod tracker;

pub use self::tracker::Alerts;

/// Opens a firing of `rule` for `subject` unless one is open; a new one is delivered and
/// recorded as an `alert.firing` event.
pub async fn fire(state: &AppState, rule: &AlertRule, subject: &str, summary: String, data: Value) {
    let now = now_ms();
    let f = AlertFiring {
        id: 0,
        rule_id: rule.id.clone(),
        tenant: rule.tenant.clone(),
        subject: subject.to_owned(),
        summary,
        data,
        started_at: now,
        last_seen_at: now,
        resolved_at: None,
    };
    match state.store.open_firing(&f).await {
        Ok(Some(f)) => {
            tracing::info!(rule = %rule.id, subject, "alert firing: {}", f.summary);
            announce(state, rule, &f, deliver::Status::Firing).await;
        }
        Ok(None) => {}
        Err(e) => tracing::error!(rule = %rule.id, "opening an alert firing: {e}"),
    }
}

/// Closes the open firing of `rule` for `subject`, if any, and delivers `resolved`.
pub async fn resolve(state: &AppState, rule: &AlertRule, subject: &str) {
    match state
        .store
        .resolve_firing(&rule.id, subject, now_ms())
        .await
    {
        Ok(Some(f)) => {
            tracing::info!(rule = %rule.id, subject, "alert resolved: {}", f.summary);
            announce(state, rule, &f, deliver::Status::Resolved).await;
        }
        Ok(None) => {}
        Err(e) => tracing::error!(rule = %rule.id, "resolving an alert firing: {e}"),
    }
}

async fn announce(state: &AppState, rule: &AlertRule, f: &AlertFiring, status: deliver::Status) {
    state.alerts.delivery.send(
        deliver::dedup_key(&rule.id, &f.subject),
        rule.url.clone(),
        deliver::body(rule, f, status),
    );
    state
        .emit(
            &rule.tenant,
            None,
            match status {
                deliver::Status::Resolved => EventKind::AlertResolved,
                // A test delivery goes to the rule's URL only (`api`), never through here.
                deliver::Status::Firing | deliver::Status::Test => EventKind::AlertFiring,
            },
            json!({
                "rule_id": rule.id,
                "kind": rule.kind,
                "subject": f.subject,
                "summary": f.summary,
                "dedup_key": deliver::dedup_key(&rule.id, &f.subject),
            }),
            None,
        )
        .await;
}

/// The evaluation task: events as they are emitted, and the periodic check every sampling
/// interval (or sooner when woken).
pub async fn run(state: Arc<AppState>) {
    let mut events = state.events.subscribe();
    let mut tick = tokio::time::interval(state.cfg.sample_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) => eval::on_event(&state, &ev).await,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("alerts: {n} events skipped (the periodic check still runs)");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => eval::periodic(&state).await,
            () = state.alerts.wake.notified() => eval::periodic(&state).await,
        }
    }
}
