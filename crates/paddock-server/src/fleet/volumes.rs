//! Volumes in a fleet (`docs/fleet.md`, "Volumes"): a volume is a subvolume on the disk of
//! the node that created it, and each node's heartbeat lists the ids of the volumes it holds
//! (`usage.volumes`). A control plane sends a create that mounts volumes to the node holding
//! them, and every request naming a volume (`/v1/volumes/{name}`, E2B's `/volumes/{id}` and
//! `/volumecontent/{id}/...`) to that node. Volumes are named per tenant, so a name is
//! resolved to its id with the caller's key (a request whose key the control plane cannot
//! check goes to any node, which refuses it as on one host).

use std::time::Duration;

use axum::http::request::Parts;
use paddock_store::{NodeRecord, NodeState, Store};
use serde_json::Value;

use crate::auth::{authenticate_in, presented_key};
use crate::error::{ApiError, ApiResult};

/// The volume ids node `n` heartbeated.
fn holds(n: &NodeRecord, id: &str) -> bool {
    n.usage["volumes"]
        .as_array()
        .is_some_and(|v| v.iter().any(|x| x == id))
}

/// The names (or ids) of the volumes a create body mounts: `volumes[].name` (or `volume`)
/// for `/v1/sandboxes`, `volumeMounts[].name` for E2B.
pub fn mounted(body: &Value, e2b: bool) -> Vec<String> {
    let list = if e2b {
        &body["volumeMounts"]
    } else {
        &body["volumes"]
    };
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("name").or_else(|| m.get("volume"))?.as_str())
        .map(str::to_owned)
        .collect()
}

/// The volume a request names (`/v1/volumes/{name}`, `/volumes/{id}`,
/// `/volumecontent/{id}/...`), if any.
pub fn named(path: &str) -> Option<&str> {
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    match segs.as_slice() {
        ["v1", "volumes", v] | ["volumes", v] | ["volumecontent", v, ..] => Some(v),
        _ => None,
    }
}

/// The node holding the volume named (or with id) `name` for the caller of `parts`, and the
/// volume's id: None when no node lists it (unknown, or made a moment ago) or the caller's
/// key cannot be checked here.
async fn holder_of(
    store: &dyn Store,
    nodes: &[NodeRecord],
    parts: &Parts,
    name: &str,
) -> ApiResult<Option<(NodeRecord, String)>> {
    // An id is found directly (the content API authenticates with the volume's own token).
    if let Some(n) = nodes.iter().find(|n| holds(n, name)) {
        return Ok(Some((n.clone(), name.to_owned())));
    }
    let Ok(caller) = authenticate_in(store, presented_key(parts)).await else {
        return Ok(None);
    };
    let Some(rec) = store.get_volume(&caller.key.tenant, name).await? else {
        return Ok(None);
    };
    Ok(nodes
        .iter()
        .find(|n| holds(n, &rec.id))
        .map(|n| (n.clone(), rec.id)))
}

/// The one node holding every volume a create mounts (None: it mounts none, or none is
/// listed by any node even after a heartbeat's wait, so the node it lands on answers as a
/// single host would). Volumes on different nodes are a 400.
pub async fn holder_for_create(
    store: &dyn Store,
    parts: &Parts,
    names: &[String],
) -> ApiResult<Option<(NodeRecord, String)>> {
    if names.is_empty() {
        return Ok(None);
    }
    // A volume made a moment ago shows in its node's next heartbeat: wait for it.
    let until = std::time::Instant::now() + super::HEARTBEAT + Duration::from_millis(500);
    let mut found: Vec<(String, NodeRecord)> = Vec::new();
    loop {
        let nodes = store.list_nodes().await?;
        found.clear();
        for name in names {
            if let Some((n, _)) = holder_of(store, &nodes, parts, name).await? {
                found.push((name.clone(), n));
            }
        }
        if found.len() == names.len() || std::time::Instant::now() >= until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let Some((first_name, first)) = found.first().cloned() else {
        return Ok(None);
    };
    if let Some((other_name, other)) = found.iter().find(|(_, n)| n.id != first.id) {
        return Err(ApiError::BadRequest(format!(
            "volume {first_name:?} is on node {} and volume {other_name:?} on node {}: a sandbox mounts volumes of one node only",
            first.name, other.name
        )));
    }
    Ok(Some((first, first_name)))
}

/// Why the node holding a create's volume cannot take it now, if it cannot be asked at all:
/// it is dead (or its heartbeat is stale) or draining.
pub fn unusable(n: &NodeRecord, volume: &str, now: paddock_store::Millis) -> Option<ApiError> {
    let fresh = i64::try_from(super::DEAD_AFTER.as_millis()).unwrap_or(i64::MAX);
    let why = match n.state {
        NodeState::Dead => "dead",
        _ if now - n.heartbeat_at > fresh => "not heartbeating (about to be declared dead)",
        NodeState::Draining => "draining",
        NodeState::Ready => return None,
    };
    Some(ApiError::NoCapacity(format!(
        "no node can take this sandbox: volume {volume:?} is on node {}, which is {why}; its data stays on that node",
        n.name
    )))
}

/// The live node a request naming a volume goes to, if one holds it. A volume that exists
/// but no heartbeat lists yet (made a moment ago) is waited for, up to a heartbeat.
pub async fn route(
    store: &dyn Store,
    nodes: &[NodeRecord],
    parts: &Parts,
) -> ApiResult<Option<NodeRecord>> {
    let Some(name) = named(parts.uri.path()) else {
        return Ok(None);
    };
    let until = std::time::Instant::now() + super::HEARTBEAT + Duration::from_millis(500);
    let mut nodes = nodes.to_vec();
    loop {
        if let Some((n, _)) = holder_of(store, &nodes, parts, name).await? {
            return Ok(Some(n).filter(|n| n.state != NodeState::Dead));
        }
        if std::time::Instant::now() >= until || !exists(store, parts, name).await? {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        nodes = store.list_nodes().await?;
    }
}

/// Whether a volume with id `name`, or (for the caller of `parts`) named `name`, exists.
async fn exists(store: &dyn Store, parts: &Parts, name: &str) -> ApiResult<bool> {
    if store.list_volumes(None).await?.iter().any(|v| v.id == name) {
        return Ok(true);
    }
    let Ok(caller) = authenticate_in(store, presented_key(parts)).await else {
        return Ok(false);
    };
    Ok(store.get_volume(&caller.key.tenant, name).await?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_of_mounts_and_paths() {
        let b = json!({"volumes": [{"name": "a", "path": "/a"}, {"volume": "b", "path": "/b"}]});
        assert_eq!(mounted(&b, false), ["a", "b"]);
        let b = json!({"volumeMounts": [{"name": "c", "path": "/c"}]});
        assert_eq!(mounted(&b, true), ["c"]);
        assert!(mounted(&json!({}), false).is_empty());
        assert_eq!(named("/v1/volumes/data"), Some("data"));
        assert_eq!(named("/volumes/vol-1"), Some("vol-1"));
        assert_eq!(named("/volumecontent/vol-1/file"), Some("vol-1"));
        assert_eq!(named("/v1/volumes"), None);
        assert_eq!(named("/v1/sandboxes/x"), None);
    }
}
