//! `paddock node`: registration, heartbeats and the resync after being declared dead.
//!
//! A node registers at start (its id is kept in `<data>/node.id`, so a restarted node is
//! the same node), then heartbeats every [`super::HEARTBEAT`] with its usage: the memory and
//! CPU its sandboxes' limits reserve, free disk, load, sandbox count and the templates it
//! holds. If the fleet declared it dead meanwhile (a partition, a store outage), its
//! heartbeat is refused: it destroys every sandbox whose record is no longer active (they
//! were marked `lost`) and registers again.

use std::sync::Arc;

use paddock_store::{Heartbeat, NodeRecord, NodeState, SandboxFilter, SandboxState, now_ms};
use serde_json::json;

use crate::event_kind::EventKind;
use crate::state::AppState;

/// The node's stable id: `<data>/node.id`, made on first start.
pub fn node_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let p = data_dir.join("node.id");
    match std::fs::read_to_string(&p) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = crate::auth::random_id("node");
    std::fs::write(&p, format!("{id}\n"))?;
    Ok(id)
}

fn cfg(state: &AppState) -> &super::NodeConfig {
    state.cfg.node.as_ref().expect("node mode")
}

/// What the node has.
fn capacity(state: &AppState) -> serde_json::Value {
    let n = cfg(state);
    let host = crate::hostload::HostLoad::read(&state.cfg.data_dir.join("layers"));
    json!({
        "memory_bytes": host.memory_total_bytes,
        "cpus": host.cpus,
        "cpu_millis": (host.cpus as f64 * 1000.0 * n.cpu_overcommit) as u64,
        "disk_bytes": host.disk_total_bytes,
        "max_sandboxes": n.max_sandboxes,
    })
}

/// What is taken, how many sandboxes, which templates.
async fn usage(state: &AppState) -> Result<Heartbeat, paddock_store::StoreError> {
    let me = &cfg(state).id;
    let mine: Vec<_> = state
        .store
        .list_sandboxes(&SandboxFilter {
            states: vec![SandboxState::Starting, SandboxState::Running],
            ..Default::default()
        })
        .await?
        .into_iter()
        .filter(|r| super::node_of(r) == Some(me.as_str()))
        .collect();
    let memory: u64 = mine.iter().filter_map(|r| r.spec.memory_bytes).sum();
    let cpu: u64 = mine
        .iter()
        .filter_map(|r| r.spec.cpu_millis.map(u64::from))
        .sum();
    let host = crate::hostload::HostLoad::read(&state.cfg.data_dir.join("layers"));
    let mut templates: Vec<String> = state
        .runtime
        .templates()
        .into_iter()
        .map(|t| t.name)
        .collect();
    templates.sort();
    Ok(Heartbeat {
        usage: json!({
            "memory_reserved_bytes": memory,
            "cpu_reserved_millis": cpu,
            "disk_free_bytes": host.disk_free_bytes,
            "memory_available_bytes": host.memory_available_bytes,
            "load1": host.load_avg.map(|l| l[0]),
            // Where creates mounting them must go (`super::volumes`).
            "volumes": state.runtime.volume_ids(),
        }),
        sandboxes: u32::try_from(mine.len()).unwrap_or(u32::MAX),
        templates,
        at: now_ms(),
    })
}

/// Registers (or re-registers) the node; emits `node.ready` unless it was ready or
/// draining already.
pub async fn register(state: &AppState, local: std::net::SocketAddr) -> Result<NodeRecord, String> {
    let n = cfg(state);
    n.token.check_store(state.store.as_ref()).await?;
    let hb = usage(state).await.map_err(|e| e.to_string())?;
    let rec = NodeRecord {
        id: n.id.clone(),
        name: n.name.clone(),
        address: n
            .advertise
            .clone()
            .unwrap_or_else(|| format!("http://{local}")),
        state: NodeState::Ready,
        labels: n.labels.clone(),
        capacity: capacity(state),
        usage: hb.usage,
        sandboxes: hb.sandboxes,
        templates: hb.templates,
        registered_at: hb.at,
        heartbeat_at: hb.at,
    };
    let (stored, before) = state
        .store
        .register_node(&rec)
        .await
        .map_err(|e| format!("registering node {}: {e}", n.name))?;
    if !matches!(before, Some(NodeState::Ready | NodeState::Draining)) {
        state
            .emit(
                super::FLEET_TENANT,
                None,
                EventKind::NodeReady,
                json!({"node": n.id, "name": n.name}),
                None,
            )
            .await;
    }
    Ok(stored)
}

/// Heartbeats until the process ends.
pub async fn run(state: Arc<AppState>, local: std::net::SocketAddr) {
    loop {
        tokio::time::sleep(super::HEARTBEAT).await;
        let res = async {
            let hb = usage(&state).await.map_err(|e| e.to_string())?;
            state
                .store
                .heartbeat_node(&cfg(&state).id, &hb)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        match res {
            Ok(Some(NodeState::Ready | NodeState::Draining)) => {}
            Ok(_) => {
                tracing::warn!(
                    "the fleet declared this node dead; destroying what it marked lost and registering again"
                );
                resync(&state).await;
                if let Err(e) = register(&state, local).await {
                    tracing::error!("registering again: {e}");
                }
            }
            Err(e) => tracing::warn!("heartbeat: {e}"),
        }
    }
}

/// Destroys every local sandbox whose record is no longer active (or is gone).
pub async fn resync(state: &Arc<AppState>) {
    for s in state.runtime.list() {
        let id = s.id.as_str().to_owned();
        let active = matches!(
            state.store.get_sandbox(&id).await,
            Ok(Some(r)) if r.state != SandboxState::Stopped
        );
        if active {
            continue;
        }
        tracing::warn!(sandbox = %id, "destroying a sandbox the fleet marked lost");
        state.deadlines.remove(&id);
        if let Err(e) = state.runtime.destroy(&id).await {
            tracing::error!(sandbox = %id, "destroying: {e}");
        }
        state
            .audit(None, "sandbox.orphan_destroy", Some(&id), "ok", None)
            .await;
    }
}
