//! [`NodeStore`] for [`SqliteStore`].

use rusqlite::{OptionalExtension, Row, params};

use crate::nodes::{Heartbeat, NodeRecord, NodeState, NodeStore};
use crate::sqlite::{SqliteStore, corrupt};
use crate::{Millis, Result};

const NODE_COLS: &str = "id, name, address, state, labels, capacity, usage, sandboxes, templates, registered_at, heartbeat_at";

type RawNode = (NodeRecord, String, String, String, String, String);

fn node_row(r: &Row<'_>) -> rusqlite::Result<RawNode> {
    Ok((
        NodeRecord {
            id: r.get(0)?,
            name: r.get(1)?,
            address: r.get(2)?,
            state: NodeState::Dead,
            labels: Default::default(),
            capacity: serde_json::Value::Null,
            usage: serde_json::Value::Null,
            sandboxes: r.get(7)?,
            templates: Vec::new(),
            registered_at: r.get(9)?,
            heartbeat_at: r.get(10)?,
        },
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(8)?,
    ))
}

fn decode((mut n, state, labels, capacity, usage, templates): RawNode) -> Result<NodeRecord> {
    let bad = |e: String| corrupt("nodes", e);
    n.state = NodeState::parse(&state).ok_or_else(|| bad(format!("state {state:?}")))?;
    n.labels = serde_json::from_str(&labels).map_err(|e| bad(e.to_string()))?;
    n.capacity = serde_json::from_str(&capacity).map_err(|e| bad(e.to_string()))?;
    n.usage = serde_json::from_str(&usage).map_err(|e| bad(e.to_string()))?;
    n.templates = serde_json::from_str(&templates).map_err(|e| bad(e.to_string()))?;
    Ok(n)
}

fn json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn get(conn: &rusqlite::Connection, id: &str) -> Result<Option<NodeRecord>> {
    conn.query_row(
        &format!("SELECT {NODE_COLS} FROM nodes WHERE id = ?1"),
        [id],
        node_row,
    )
    .optional()?
    .map(decode)
    .transpose()
}

#[async_trait::async_trait]
impl NodeStore for SqliteStore {
    async fn fleet_setting_init(&self, key: &str, value: &str) -> Result<String> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO fleet_settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            params![key, value],
        )?;
        Ok(conn.query_row(
            "SELECT value FROM fleet_settings WHERE key = ?1",
            [key],
            |r| r.get(0),
        )?)
    }

    async fn register_node(&self, n: &NodeRecord) -> Result<(NodeRecord, Option<NodeState>)> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let before = get(&tx, &n.id)?.map(|o| o.state);
        let state = match before {
            Some(NodeState::Draining) => NodeState::Draining,
            _ => NodeState::Ready,
        };
        tx.execute(
            &format!(
                "INSERT INTO nodes ({NODE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, address = excluded.address,
                   state = excluded.state, labels = excluded.labels, capacity = excluded.capacity,
                   usage = excluded.usage, sandboxes = excluded.sandboxes,
                   templates = excluded.templates, heartbeat_at = excluded.heartbeat_at"
            ),
            params![
                n.id,
                n.name,
                n.address,
                state.as_str(),
                json(&n.labels),
                json(&n.capacity),
                json(&n.usage),
                n.sandboxes,
                json(&n.templates),
                n.registered_at,
                n.heartbeat_at
            ],
        )?;
        let stored = get(&tx, &n.id)?.ok_or_else(|| corrupt("nodes", "row vanished"))?;
        tx.commit()?;
        Ok((stored, before))
    }

    async fn heartbeat_node(&self, id: &str, hb: &Heartbeat) -> Result<Option<NodeState>> {
        let conn = self.conn();
        conn.execute(
            "UPDATE nodes SET usage = ?2, sandboxes = ?3, templates = ?4, heartbeat_at = ?5
             WHERE id = ?1 AND state != 'dead'",
            params![
                id,
                json(&hb.usage),
                hb.sandboxes,
                json(&hb.templates),
                hb.at
            ],
        )?;
        let state: Option<String> = conn
            .query_row("SELECT state FROM nodes WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        state
            .map(|s| NodeState::parse(&s).ok_or_else(|| corrupt("nodes", format!("state {s:?}"))))
            .transpose()
    }

    async fn get_node(&self, id: &str) -> Result<Option<NodeRecord>> {
        get(&self.conn(), id)
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("SELECT {NODE_COLS} FROM nodes ORDER BY name, id"))?;
        let rows = st.query_map([], node_row)?;
        rows.map(|r| decode(r?)).collect()
    }

    async fn set_node_state(&self, id: &str, from: &[NodeState], to: NodeState) -> Result<bool> {
        let conn = self.conn();
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let n = conn.execute(
            "UPDATE nodes SET state = ?2 WHERE id = ?1 AND state IN (SELECT value FROM json_each(?3))",
            params![id, to.as_str(), json(&from)],
        )?;
        Ok(n == 1)
    }

    async fn mark_dead_nodes(&self, before: Millis) -> Result<Vec<NodeRecord>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let rows = {
            let mut st = tx.prepare(&format!(
                "UPDATE nodes SET state = 'dead' WHERE state != 'dead' AND heartbeat_at < ?1
                 RETURNING {NODE_COLS}"
            ))?;
            let rows = st.query_map([before], node_row)?;
            rows.map(|r| decode(r?)).collect::<Result<Vec<_>>>()?
        };
        tx.commit()?;
        Ok(rows)
    }
}
