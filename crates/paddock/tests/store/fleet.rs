//! Nodes and fleet settings.

use std::collections::BTreeSet;
use std::sync::Arc;

use paddock_store::{Heartbeat, NodeRecord, NodeState, Store};

fn node(id: &str, name: &str, at: i64) -> NodeRecord {
    NodeRecord {
        id: id.into(),
        name: name.into(),
        address: "http://127.0.0.1:1".into(),
        state: NodeState::Ready,
        labels: [("zone".to_owned(), "a".to_owned())].into(),
        capacity: serde_json::json!({"cpus": 2, "memory_bytes": 1u64 << 33}),
        usage: serde_json::json!({}),
        sandboxes: 0,
        templates: vec!["base".into()],
        registered_at: at,
        heartbeat_at: at,
    }
}

fn hb(at: i64) -> Heartbeat {
    Heartbeat {
        usage: serde_json::json!({"memory_bytes": 5}),
        sandboxes: 3,
        templates: vec!["base".into(), "python".into()],
        at,
    }
}

pub async fn nodes_register_heartbeat_drain_dead(s: Arc<dyn Store>) {
    assert!(s.list_nodes().await.unwrap().is_empty());
    assert_eq!(s.get_node("a").await.unwrap(), None);
    let (n, before) = s.register_node(&node("a", "n-a", 1000)).await.unwrap();
    assert_eq!((n.state, before), (NodeState::Ready, None));
    assert_eq!(n.labels["zone"], "a");
    assert_eq!(n, node("a", "n-a", 1000));
    assert_eq!(
        s.heartbeat_node("a", &hb(5000)).await.unwrap(),
        Some(NodeState::Ready)
    );
    assert_eq!(s.heartbeat_node("zz", &hb(5000)).await.unwrap(), None);
    let got = s.get_node("a").await.unwrap().unwrap();
    assert_eq!(
        (got.sandboxes, got.heartbeat_at, got.templates.len()),
        (3, 5000, 2)
    );
    assert_eq!(got.usage, serde_json::json!({"memory_bytes": 5}));
    assert!(
        s.set_node_state("a", &[NodeState::Ready], NodeState::Draining)
            .await
            .unwrap()
    );
    assert!(
        !s.set_node_state("a", &[NodeState::Ready], NodeState::Draining)
            .await
            .unwrap()
    );
    assert!(
        !s.set_node_state("zz", &[NodeState::Ready], NodeState::Draining)
            .await
            .unwrap()
    );
    assert!(!s.set_node_state("a", &[], NodeState::Ready).await.unwrap());
    // Draining survives a re-registration, which replaces the rest but the registration time.
    let mut again = node("a", "n-a2", 6000);
    again.registered_at = 6000;
    let (n, before) = s.register_node(&again).await.unwrap();
    assert_eq!(
        (n.state, before, n.name.as_str(), n.registered_at),
        (NodeState::Draining, Some(NodeState::Draining), "n-a2", 1000)
    );
    s.register_node(&node("b", "n-b", 1000)).await.unwrap();
    let dead = s.mark_dead_nodes(2000).await.unwrap();
    assert_eq!(
        dead.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(dead[0].state, NodeState::Dead);
    assert!(
        s.mark_dead_nodes(2000).await.unwrap().is_empty(),
        "seen once"
    );
    // A dead node's heartbeat is not recorded.
    assert_eq!(
        s.heartbeat_node("b", &hb(7000)).await.unwrap(),
        Some(NodeState::Dead)
    );
    assert_eq!(s.get_node("b").await.unwrap().unwrap().heartbeat_at, 1000);
    let (n, before) = s.register_node(&node("b", "n-b", 9000)).await.unwrap();
    assert_eq!((n.state, before), (NodeState::Ready, Some(NodeState::Dead)));
    // By name.
    s.register_node(&node("c", "A-first", 9000)).await.unwrap();
    let names: Vec<String> = s
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["A-first", "n-a2", "n-b"]);
    assert!(
        s.set_node_state(
            "b",
            &[NodeState::Ready, NodeState::Draining],
            NodeState::Dead
        )
        .await
        .unwrap()
    );
}

/// Several control planes watching the same heartbeats: each death is returned to
/// exactly one of them.
pub async fn nodes_death_seen_once_under_concurrency(s: Arc<dyn Store>) {
    for i in 0..10 {
        s.register_node(&node(&format!("n{i}"), &format!("n{i}"), 1000))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.mark_dead_nodes(2000).await.unwrap()
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap().into_iter().map(|n| n.id));
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 10, "each death seen once: {seen:?}");
    assert_eq!(unique.len(), 10);
}

pub async fn settings_keep_the_first_value(s: Arc<dyn Store>) {
    assert_eq!(s.fleet_setting_init("k", "one").await.unwrap(), "one");
    assert_eq!(s.fleet_setting_init("k", "two").await.unwrap(), "one");
    // Concurrent first writers all read the one stored value.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.fleet_setting_init("race", &format!("v{i}"))
                .await
                .unwrap()
        }));
    }
    let mut got = BTreeSet::new();
    for t in tasks {
        got.insert(t.await.unwrap());
    }
    assert_eq!(got.len(), 1, "{got:?}");
}
