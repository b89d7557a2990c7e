//! The conditions of each kind: on events as they are emitted ([`on_event`]) and in the
//! periodic check ([`periodic`]), which also watches every sandbox's OOM kill counter.

use std::collections::HashSet;

use paddock_store::{AlertRule, Event, FiringFilter, NodeRecord, NodeState, now_ms};
use serde_json::{Value, json};

use super::rules::{Params, Resource};
use super::{fire, resolve};
use crate::event_kind::EventKind;
use crate::state::AppState;

/// A node whose last heartbeat is older than this (three heartbeats missed) and that is not
/// dead yet is degraded.
pub const DEGRADED_AFTER_MS: i64 = 3 * 2_000;

/// Handles one emitted event.
pub async fn on_event(state: &AppState, ev: &Event) {
    if EventKind::parse(&ev.kind).is_some_and(EventKind::is_alert) {
        return;
    }
    let oom = ev.kind == EventKind::Oom;
    if oom && let Some(id) = &ev.sandbox_id {
        let mut m = state
            .alerts
            .oom
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.entry(id.clone()).or_insert((0, false)).1 = true;
    }
    // A create that failed carries its error; an agent that died does not.
    let create_failed = ev.kind == EventKind::Failed && ev.data.get("error").is_some();
    if create_failed {
        state.alerts.note_create_failure(&ev.tenant, ev.at);
    }
    let budget = ev.kind == EventKind::BudgetWarning || ev.kind == EventKind::BudgetExceeded;
    if !(oom || ev.kind == EventKind::Failed || budget) {
        return;
    }
    let Ok(rules) = state.store.list_alert_rules(Some(&ev.tenant)).await else {
        return;
    };
    for rule in rules {
        let Some(params) = Params::of(&rule) else {
            continue;
        };
        match params {
            Params::SandboxOom { .. } if oom => {
                if let Some(id) = &ev.sandbox_id {
                    let summary = format!("sandbox {id} was OOM-killed (tenant {})", ev.tenant);
                    fire(
                        state,
                        &rule,
                        &format!("sandbox:{id}"),
                        summary,
                        ev.data.clone(),
                    )
                    .await;
                }
            }
            Params::SandboxFailed { .. } if ev.kind == EventKind::Failed => {
                if let Some(id) = &ev.sandbox_id {
                    let why = ev.data["error"].as_str().unwrap_or("its agent died");
                    let summary = format!(
                        "sandbox {id} failed: {} (tenant {})",
                        crate::text::truncate(why, 200),
                        ev.tenant
                    );
                    fire(
                        state,
                        &rule,
                        &format!("sandbox:{id}"),
                        summary,
                        ev.data.clone(),
                    )
                    .await;
                }
            }
            Params::CreateFailures { count, window_secs } if create_failed => {
                create_failures(state, &rule, count, window_secs).await;
            }
            Params::Budget { exceeded } if budget => budget_check(state, &rule, exceeded).await,
            _ => {}
        }
    }
}

/// The periodic check: the OOM watch, then every rule's state.
pub async fn periodic(state: &AppState) {
    watch_oom(state).await;
    let Ok(rules) = state.store.list_alert_rules(None).await else {
        return;
    };
    for rule in rules {
        let Some(params) = Params::of(&rule) else {
            continue;
        };
        match params {
            Params::SandboxOom { quiet_secs } | Params::SandboxFailed { quiet_secs } => {
                resolve_quiet(state, &rule, quiet_secs).await;
            }
            Params::CreateFailures { count, window_secs } => {
                create_failures(state, &rule, count, window_secs).await;
            }
            Params::Budget { exceeded } => budget_check(state, &rule, exceeded).await,
            Params::NodeDown { degraded } => nodes_check(state, &rule, degraded).await,
            Params::Capacity {
                resource,
                threshold,
                fleet,
            } => capacity_check(state, &rule, resource, threshold, fleet).await,
        }
    }
}

/// Emits `oom` for every sandbox whose OOM kill counter rose since the last look without an
/// `oom` event (kills in processes the server did not start: background commands, E2B
/// commands, services).
async fn watch_oom(state: &AppState) {
    let rt = state.runtime.clone();
    let Ok(counts) = tokio::task::spawn_blocking(move || {
        rt.list()
            .iter()
            .map(|s| (s.id.to_string(), s.oom_kills()))
            .collect::<Vec<_>>()
    })
    .await
    else {
        return;
    };
    let mut fresh = Vec::new();
    {
        let mut m = state
            .alerts
            .oom
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let live: HashSet<&str> = counts.iter().map(|(id, _)| id.as_str()).collect();
        m.retain(|id, _| live.contains(id.as_str()));
        for (id, n) in &counts {
            let e = m.entry(id.clone()).or_insert((*n, false));
            if *n > e.0 {
                if !e.1 {
                    fresh.push((id.clone(), *n));
                }
                e.0 = *n;
            }
            e.1 = false;
        }
    }
    for (id, n) in fresh {
        let Ok(Some(rec)) = state.store.get_sandbox(&id).await else {
            continue;
        };
        state
            .emit(
                &rec.tenant,
                Some(&id),
                EventKind::Oom,
                json!({ "oom_kills": n }),
                rec.webhook_url.as_deref(),
            )
            .await;
    }
}

/// Open firings of `rule`.
async fn open_firings(state: &AppState, rule: &AlertRule) -> Vec<paddock_store::AlertFiring> {
    state
        .store
        .list_firings(&FiringFilter {
            tenant: Some(rule.tenant.clone()),
            open_only: true,
            since: None,
            limit: 10_000,
        })
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f.rule_id == rule.id)
        .collect()
}

/// An event kind resolves once it has not happened again for `quiet_secs`.
async fn resolve_quiet(state: &AppState, rule: &AlertRule, quiet_secs: u64) {
    let cutoff = now_ms() - i64::try_from(quiet_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    for f in open_firings(state, rule).await {
        if f.last_seen_at < cutoff {
            resolve(state, rule, &f.subject).await;
        }
    }
}

async fn create_failures(state: &AppState, rule: &AlertRule, count: u64, window_secs: u64) {
    let since = now_ms() - i64::try_from(window_secs * 1000).unwrap_or(i64::MAX);
    let n = state.alerts.create_failures_since(&rule.tenant, since);
    let subject = format!("tenant:{}", rule.tenant);
    if n >= count {
        let summary = format!(
            "{n} creates failed in the last {window_secs} s (tenant {}, threshold {count})",
            rule.tenant
        );
        fire(
            state,
            rule,
            &subject,
            summary,
            json!({"failures": n, "count": count, "window_secs": window_secs}),
        )
        .await;
    } else {
        resolve(state, rule, &subject).await;
    }
}

async fn budget_check(state: &AppState, rule: &AlertRule, exceeded: bool) {
    let subject = format!("tenant:{}", rule.tenant);
    let Some(b) = crate::cost::budgets::all(state).get(&rule.tenant).copied() else {
        resolve(state, rule, &subject).await;
        return;
    };
    let Ok(spent) = crate::cost::spent_this_month(state, &rule.tenant).await else {
        return;
    };
    let level = if exceeded {
        b.amount
    } else {
        b.amount * b.warn_at
    };
    if spent >= level {
        let what = if exceeded {
            "spent"
        } else {
            "crossed the warning level of"
        };
        let summary = format!(
            "tenant {} {what} its budget: {spent:.4} of {} this month (warning at {:.0}%)",
            rule.tenant,
            b.amount,
            b.warn_at * 100.0
        );
        fire(
            state,
            rule,
            &subject,
            summary,
            json!({"spent": spent, "amount": b.amount, "warn_at": b.warn_at, "level": level}),
        )
        .await;
    } else {
        resolve(state, rule, &subject).await;
    }
}

/// Why node `n` is down at `now`, if it is: dead, or (with `degraded`) silent for longer
/// than [`DEGRADED_AFTER_MS`].
pub fn node_down(n: &NodeRecord, now: i64, degraded: bool) -> Option<String> {
    if n.state == NodeState::Dead {
        return Some(format!("node {} ({}) is dead", n.name, n.id));
    }
    let silent = now - n.heartbeat_at;
    (degraded && silent > DEGRADED_AFTER_MS).then(|| {
        format!(
            "node {} ({}) is degraded: no heartbeat for {:.1} s",
            n.name,
            n.id,
            silent as f64 / 1000.0
        )
    })
}

async fn nodes_check(state: &AppState, rule: &AlertRule, degraded: bool) {
    let Ok(nodes) = state.store.list_nodes().await else {
        return;
    };
    let now = now_ms();
    let mut down = HashSet::new();
    for n in &nodes {
        let subject = format!("node:{}", n.id);
        match node_down(n, now, degraded) {
            Some(summary) => {
                down.insert(subject.clone());
                let data = json!({"node": n.id, "name": n.name, "state": n.state.as_str()});
                fire(state, rule, &subject, summary, data).await;
            }
            None => resolve(state, rule, &subject).await,
        }
    }
    // A node that is gone from the store is no longer down.
    for f in open_firings(state, rule).await {
        if !down.contains(&f.subject)
            && !nodes.iter().any(|n| format!("node:{}", n.id) == f.subject)
        {
            resolve(state, rule, &f.subject).await;
        }
    }
}

/// The measure of a capacity rule: (percent or count, what it is).
async fn measure(state: &AppState, resource: Resource, fleet: bool) -> Option<(f64, String)> {
    if fleet {
        let nodes = state.store.list_nodes().await.ok()?;
        let live: Vec<&NodeRecord> = nodes
            .iter()
            .filter(|n| n.state != NodeState::Dead)
            .collect();
        let sum = |v: &dyn Fn(&NodeRecord) -> f64| live.iter().map(|n| v(n)).sum::<f64>();
        let f = |v: &Value| v.as_f64().unwrap_or(0.0);
        return match resource {
            Resource::Sandboxes => {
                let n = sum(&|n| f64::from(n.sandboxes));
                Some((n, format!("{n} sandboxes on the fleet's live nodes")))
            }
            Resource::Memory => {
                let total = sum(&|n| f(&n.capacity["memory_bytes"]));
                let used = sum(&|n| f(&n.usage["memory_bytes"]));
                (total > 0.0).then(|| {
                    let pct = used / total * 100.0;
                    (pct, format!("fleet memory reserved at {pct:.1}%"))
                })
            }
            Resource::Disk => {
                let total = sum(&|n| f(&n.capacity["disk_bytes"]));
                let free = sum(&|n| f(&n.usage["disk_free_bytes"]));
                (total > 0.0).then(|| {
                    let pct = (total - free) / total * 100.0;
                    (pct, format!("fleet disk used at {pct:.1}%"))
                })
            }
        };
    }
    match resource {
        Resource::Sandboxes => {
            let n = state.runtime.list().len() as f64;
            Some((n, format!("{n} sandboxes on this host")))
        }
        Resource::Memory | Resource::Disk => {
            let layers = state.cfg.data_dir.join("layers");
            let h = tokio::task::spawn_blocking(move || crate::hostload::HostLoad::read(&layers))
                .await
                .ok()?;
            let (total, free, what) = if resource == Resource::Memory {
                (h.memory_total_bytes?, h.memory_available_bytes?, "memory")
            } else {
                (h.disk_total_bytes?, h.disk_free_bytes?, "sandbox disk")
            };
            (total > 0).then(|| {
                let pct = total.saturating_sub(free) as f64 / total as f64 * 100.0;
                (pct, format!("host {what} used at {pct:.1}%"))
            })
        }
    }
}

async fn capacity_check(
    state: &AppState,
    rule: &AlertRule,
    resource: Resource,
    threshold: f64,
    fleet: bool,
) {
    let subject = if fleet {
        format!("fleet:{}", resource.as_str())
    } else {
        let host = state.cfg.node.as_ref().map_or("host", |n| n.id.as_str());
        format!("host:{host}:{}", resource.as_str())
    };
    let Some((value, what)) = measure(state, resource, fleet).await else {
        return;
    };
    if value > threshold {
        let unit = if resource == Resource::Sandboxes {
            ""
        } else {
            "%"
        };
        let summary = format!("{what} (threshold {threshold}{unit})");
        let data = json!({"resource": resource.as_str(), "value": (value * 10.0).round() / 10.0, "threshold": threshold});
        fire(state, rule, &subject, summary, data).await;
    } else {
        resolve(state, rule, &subject).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(state: NodeState, heartbeat_at: i64) -> NodeRecord {
        NodeRecord {
            id: "node-1".into(),
            name: "n1".into(),
            address: "http://10.0.0.1:7171".into(),
            state,
            labels: Default::default(),
            capacity: json!({}),
            usage: json!({}),
            sandboxes: 0,
            templates: vec![],
            registered_at: 0,
            heartbeat_at,
        }
    }

    /// The node-down condition on the states a fleet's heartbeat watcher produces (the fleet
    /// tests' processes are not started here: this is the evaluation alone).
    #[test]
    fn dead_and_silent_nodes_are_down_and_live_ones_are_not() {
        let now = 100_000;
        assert!(node_down(&node(NodeState::Ready, now - 1_000), now, true).is_none());
        assert!(node_down(&node(NodeState::Draining, now - 1_000), now, true).is_none());
        let dead = node_down(&node(NodeState::Dead, now - 20_000), now, false).expect("dead");
        assert!(dead.contains("n1") && dead.contains("dead"), "{dead}");
        let silent = node(NodeState::Ready, now - DEGRADED_AFTER_MS - 1);
        assert!(
            node_down(&silent, now, true)
                .expect("degraded")
                .contains("degraded")
        );
        assert!(node_down(&silent, now, false).is_none());
    }
}
