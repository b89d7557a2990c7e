//! The fleet half of the store: nodes (hosts that run sandboxes) and fleet-wide settings.
//!
//! A node writes its own row (registration, heartbeats); control planes read the rows for
//! placement and forwarding, and move nodes between states. State changes are conditional
//! updates, so when several control planes watch the same heartbeats exactly one of them
//! sees each transition (and emits its event).

use std::collections::BTreeMap;

use crate::{Millis, Result};

/// Where a node is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Takes new sandboxes.
    Ready,
    /// Keeps its sandboxes running, takes no new ones.
    Draining,
    /// Missed its heartbeats; its sandboxes are `lost`.
    Dead,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Ready => "ready",
            NodeState::Draining => "draining",
            NodeState::Dead => "dead",
        }
    }
    pub fn parse(s: &str) -> Option<NodeState> {
        match s {
            "ready" => Some(NodeState::Ready),
            "draining" => Some(NodeState::Draining),
            "dead" => Some(NodeState::Dead),
            _ => None,
        }
    }
}

/// A node as the fleet knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRecord {
    /// Stable across restarts (kept in the node's data directory).
    pub id: String,
    pub name: String,
    /// Base URL of the node's internal API (`http://10.0.0.5:7171`).
    pub address: String,
    pub state: NodeState,
    pub labels: BTreeMap<String, String>,
    /// What the node has: `memory_bytes`, `cpus`, `disk_bytes`, `max_sandboxes`.
    pub capacity: serde_json::Value,
    /// What is taken: `memory_bytes` and `cpu_millis` reserved by sandbox limits, `disk_free_bytes`,
    /// `load1`.
    pub usage: serde_json::Value,
    pub sandboxes: u32,
    /// Names of the templates whose layers the node holds.
    pub templates: Vec<String>,
    pub registered_at: Millis,
    pub heartbeat_at: Millis,
}

/// What a heartbeat reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Heartbeat {
    pub usage: serde_json::Value,
    pub sandboxes: u32,
    pub templates: Vec<String>,
    pub at: Millis,
}

/// The fleet half of the store (a supertrait of [`crate::Store`]).
#[async_trait::async_trait]
pub trait NodeStore: Send + Sync {
    /// Stores `value` under `key` unless the key has one; returns the stored value.
    async fn fleet_setting_init(&self, key: &str, value: &str) -> Result<String>;
    /// Registers a node (insert, or replace name, address, labels, capacity and heartbeat of
    /// an existing row). A `dead` node becomes `ready`; `draining` stays. Returns the row as
    /// stored and the state it had before (None: new).
    async fn register_node(&self, n: &NodeRecord) -> Result<(NodeRecord, Option<NodeState>)>;
    /// Records a heartbeat; returns the node's state (None: no such node). A `dead` node's
    /// heartbeat is not recorded (it must register again).
    async fn heartbeat_node(&self, id: &str, hb: &Heartbeat) -> Result<Option<NodeState>>;
    async fn get_node(&self, id: &str) -> Result<Option<NodeRecord>>;
    /// Every node, by name.
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>>;
    /// Moves a node to `to` if its state is one of `from`; false otherwise or if unknown.
    async fn set_node_state(&self, id: &str, from: &[NodeState], to: NodeState) -> Result<bool>;
    /// Marks `dead` every node not dead whose last heartbeat is older than `before`, and
    /// returns them (each transition is seen by exactly one caller).
    async fn mark_dead_nodes(&self, before: Millis) -> Result<Vec<NodeRecord>>;
}
