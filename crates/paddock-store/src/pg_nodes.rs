//! [`NodeStore`] for [`PgStore`].

use tokio_postgres::Row;

use crate::nodes::{Heartbeat, NodeRecord, NodeState, NodeStore};
use crate::pg::{PgStore, corrupt, from_json, to_json, u32_col};
use crate::{Millis, Result};

const NODE_COLS: &str = "id, name, address, state, labels, capacity, usage, sandboxes, templates, registered_at, heartbeat_at";

fn state(s: &str) -> Result<NodeState> {
    NodeState::parse(s).ok_or_else(|| corrupt("nodes", format!("state {s:?}")))
}

fn node_from_row(r: &Row) -> Result<NodeRecord> {
    let st: String = r.try_get(3)?;
    let labels: String = r.try_get(4)?;
    let capacity: String = r.try_get(5)?;
    let usage: String = r.try_get(6)?;
    let templates: String = r.try_get(8)?;
    Ok(NodeRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        address: r.try_get(2)?,
        state: state(&st)?,
        labels: from_json("nodes", &labels)?,
        capacity: from_json("nodes", &capacity)?,
        usage: from_json("nodes", &usage)?,
        sandboxes: u32_col("nodes", r.try_get(7)?)?,
        templates: from_json("nodes", &templates)?,
        registered_at: r.try_get(9)?,
        heartbeat_at: r.try_get(10)?,
    })
}

#[async_trait::async_trait]
impl NodeStore for PgStore {
    async fn fleet_setting_init(&self, key: &str, value: &str) -> Result<String> {
        // Two statements: the SELECT's snapshot is taken after the INSERT, so it sees the
        // row of a concurrent caller that won (the INSERT waited for it to commit).
        let c = self.client().await?;
        c.execute(
            "INSERT INTO fleet_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&key, &value],
        )
        .await?;
        let r = c
            .query_one("SELECT value FROM fleet_settings WHERE key = $1", &[&key])
            .await?;
        Ok(r.try_get(0)?)
    }

    async fn register_node(&self, n: &NodeRecord) -> Result<(NodeRecord, Option<NodeState>)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let before = tx
            .query_opt("SELECT state FROM nodes WHERE id = $1 FOR UPDATE", &[&n.id])
            .await?
            .map(|r| r.try_get::<_, String>(0))
            .transpose()?
            .map(|s| state(&s))
            .transpose()?;
        let st = match before {
            Some(NodeState::Draining) => NodeState::Draining,
            _ => NodeState::Ready,
        };
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO nodes ({NODE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, address = excluded.address,
                       state = excluded.state, labels = excluded.labels, capacity = excluded.capacity,
                       usage = excluded.usage, sandboxes = excluded.sandboxes,
                       templates = excluded.templates, heartbeat_at = excluded.heartbeat_at
                     RETURNING {NODE_COLS}"
                ),
                &[
                    &n.id,
                    &n.name,
                    &n.address,
                    &st.as_str(),
                    &to_json(&n.labels),
                    &to_json(&n.capacity),
                    &to_json(&n.usage),
                    &i64::from(n.sandboxes),
                    &to_json(&n.templates),
                    &n.registered_at,
                    &n.heartbeat_at,
                ],
            )
            .await?;
        let stored = node_from_row(&row)?;
        tx.commit().await?;
        Ok((stored, before))
    }

    async fn heartbeat_node(&self, id: &str, hb: &Heartbeat) -> Result<Option<NodeState>> {
        let c = self.client().await?;
        c.execute(
            "UPDATE nodes SET usage = $2, sandboxes = $3, templates = $4, heartbeat_at = $5
             WHERE id = $1 AND state <> 'dead'",
            &[
                &id,
                &to_json(&hb.usage),
                &i64::from(hb.sandboxes),
                &to_json(&hb.templates),
                &hb.at,
            ],
        )
        .await?;
        c.query_opt("SELECT state FROM nodes WHERE id = $1", &[&id])
            .await?
            .map(|r| state(&r.try_get::<_, String>(0)?))
            .transpose()
    }

    async fn get_node(&self, id: &str) -> Result<Option<NodeRecord>> {
        self.query_opt(
            &format!("SELECT {NODE_COLS} FROM nodes WHERE id = $1"),
            &[&id],
        )
        .await?
        .as_ref()
        .map(node_from_row)
        .transpose()
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        self.query(
            &format!("SELECT {NODE_COLS} FROM nodes ORDER BY name, id"),
            &[],
        )
        .await?
        .iter()
        .map(node_from_row)
        .collect()
    }

    async fn set_node_state(&self, id: &str, from: &[NodeState], to: NodeState) -> Result<bool> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let n = self
            .execute(
                "UPDATE nodes SET state = $2 WHERE id = $1 AND state = ANY($3)",
                &[&id, &to.as_str(), &from],
            )
            .await?;
        Ok(n == 1)
    }

    async fn mark_dead_nodes(&self, before: Millis) -> Result<Vec<NodeRecord>> {
        // Of concurrent callers, the one that updates a row first returns it; the others
        // wait for its lock, see `state = 'dead'` and skip it.
        self.query(
            &format!(
                "UPDATE nodes SET state = 'dead' WHERE state <> 'dead' AND heartbeat_at < $1
                 RETURNING {NODE_COLS}"
            ),
            &[&before],
        )
        .await?
        .iter()
        .map(node_from_row)
        .collect()
    }
}
