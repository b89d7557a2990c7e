//! [`RolloutStore`] for SQLite.

use rusqlite::{OptionalExtension, Row, params};

use crate::rollouts::{RolloutRecord, RolloutStore, RolloutTarget};
use crate::sqlite::{SqliteStore, conflict, corrupt};
use crate::{Millis, Result};

const COLS: &str = "id, tenant, key_id, kind, spec, state, reason, created_at, finished_at, runner";

fn raw(r: &Row<'_>) -> rusqlite::Result<(RolloutRecord, String)> {
    Ok((
        RolloutRecord {
            id: r.get(0)?,
            tenant: r.get(1)?,
            key_id: r.get(2)?,
            kind: r.get(3)?,
            spec: serde_json::Value::Null,
            state: r.get(5)?,
            reason: r.get(6)?,
            created_at: r.get(7)?,
            finished_at: r.get(8)?,
            runner: r.get(9)?,
        },
        r.get(4)?,
    ))
}

fn finish((mut rec, spec): (RolloutRecord, String)) -> Result<RolloutRecord> {
    rec.spec = serde_json::from_str(&spec).map_err(|e| corrupt("rollouts", e.to_string()))?;
    Ok(rec)
}

fn target(r: &Row<'_>) -> rusqlite::Result<(RolloutTarget, String)> {
    Ok((
        RolloutTarget {
            rollout_id: r.get(0)?,
            seq: r.get(1)?,
            sandbox_id: r.get(2)?,
            state: r.get(3)?,
            result: serde_json::Value::Null,
        },
        r.get(4)?,
    ))
}

#[async_trait::async_trait]
impl RolloutStore for SqliteStore {
    async fn insert_rollout(&self, r: &RolloutRecord, targets: &[RolloutTarget]) -> Result<()> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        tx.execute(
            &format!(
                "INSERT INTO rollouts ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ),
            params![
                r.id,
                r.tenant,
                r.key_id,
                r.kind,
                r.spec.to_string(),
                r.state,
                r.reason,
                r.created_at,
                r.finished_at,
                r.runner
            ],
        )
        .map_err(conflict)?;
        {
            let mut st = tx.prepare(
                "INSERT INTO rollout_targets (rollout_id, seq, sandbox_id, state, result) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for t in targets {
                st.execute(params![
                    r.id,
                    t.seq,
                    t.sandbox_id,
                    t.state,
                    t.result.to_string()
                ])
                .map_err(conflict)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    async fn update_rollout(&self, r: &RolloutRecord) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE rollouts SET state = ?2, reason = ?3, finished_at = ?4 WHERE id = ?1",
            params![r.id, r.state, r.reason, r.finished_at],
        )?;
        Ok(n > 0)
    }

    async fn update_rollout_target(&self, t: &RolloutTarget) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE rollout_targets SET state = ?3, result = ?4 WHERE rollout_id = ?1 AND seq = ?2",
            params![t.rollout_id, t.seq, t.state, t.result.to_string()],
        )?;
        Ok(n > 0)
    }

    async fn get_rollout(&self, id: &str) -> Result<Option<(RolloutRecord, Vec<RolloutTarget>)>> {
        let c = self.conn();
        let Some(rec) = c
            .query_row(
                &format!("SELECT {COLS} FROM rollouts WHERE id = ?1"),
                [id],
                raw,
            )
            .optional()?
        else {
            return Ok(None);
        };
        let rec = finish(rec)?;
        let mut st = c.prepare(
            "SELECT rollout_id, seq, sandbox_id, state, result FROM rollout_targets \
             WHERE rollout_id = ?1 ORDER BY seq",
        )?;
        let rows = st.query_map([id], target)?;
        let mut targets = Vec::new();
        for row in rows {
            let (mut t, result) = row?;
            t.result = serde_json::from_str(&result)
                .map_err(|e| corrupt("rollout_targets", e.to_string()))?;
            targets.push(t);
        }
        Ok(Some((rec, targets)))
    }

    async fn list_rollouts(
        &self,
        tenant: Option<&str>,
        key_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RolloutRecord>> {
        let c = self.conn();
        let mut st = c.prepare(&format!(
            "SELECT {COLS} FROM rollouts WHERE (?1 IS NULL OR tenant = ?1) \
             AND (?2 IS NULL OR key_id = ?2) ORDER BY created_at DESC, id DESC LIMIT ?3"
        ))?;
        let rows = st.query_map(params![tenant, key_id, limit], raw)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(finish(row?)?);
        }
        Ok(out)
    }

    async fn interrupt_rollouts(
        &self,
        runner: Option<&str>,
        at: Millis,
        reason: &str,
    ) -> Result<u64> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        tx.execute(
            "UPDATE rollout_targets SET state = 'interrupted' \
             WHERE state IN ('pending', 'running') \
             AND rollout_id IN (SELECT id FROM rollouts WHERE state = 'running' AND runner IS ?1)",
            params![runner],
        )?;
        let n = tx.execute(
            "UPDATE rollouts SET state = 'interrupted', reason = ?2, finished_at = ?1 \
             WHERE state = 'running' AND runner IS ?3",
            params![at, reason, runner],
        )?;
        tx.commit()?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store as _, Tenant};
    use serde_json::json;

    fn rollout(id: &str, key: &str, at: Millis) -> RolloutRecord {
        RolloutRecord {
            id: id.into(),
            tenant: "t".into(),
            key_id: key.into(),
            kind: "command".into(),
            spec: json!({"selector": {"env": "prod"}}),
            state: "running".into(),
            reason: None,
            created_at: at,
            finished_at: None,
            runner: None,
        }
    }

    fn tgt(id: &str, seq: u32, state: &str) -> RolloutTarget {
        RolloutTarget {
            rollout_id: id.into(),
            seq,
            sandbox_id: format!("sbx{seq}"),
            state: state.into(),
            result: json!({}),
        }
    }

    #[tokio::test]
    async fn rollouts_round_trip_list_and_interrupt() {
        let s = SqliteStore::open_in_memory().unwrap();
        s.insert_tenant(&Tenant {
            id: "t".into(),
            name: "t".into(),
            created_at: 0,
        })
        .await
        .unwrap();
        s.insert_rollout(
            &rollout("ro_1", "k1", 1),
            &[tgt("ro_1", 0, "pending"), tgt("ro_1", 1, "pending")],
        )
        .await
        .unwrap();
        s.insert_rollout(&rollout("ro_2", "k2", 2), &[tgt("ro_2", 0, "pending")])
            .await
            .unwrap();
        let mut t = tgt("ro_1", 1, "succeeded");
        t.result = json!({"exit_code": 0});
        assert!(s.update_rollout_target(&t).await.unwrap());
        let mut done = rollout("ro_2", "k2", 2);
        done.state = "succeeded".into();
        done.finished_at = Some(3);
        assert!(s.update_rollout(&done).await.unwrap());

        let (r, ts) = s.get_rollout("ro_1").await.unwrap().unwrap();
        assert_eq!(r.spec["selector"]["env"], "prod");
        assert_eq!(ts.len(), 2);
        assert_eq!(ts[1].result["exit_code"], 0);
        assert!(s.get_rollout("ro_9").await.unwrap().is_none());

        let all = s.list_rollouts(Some("t"), None, 10).await.unwrap();
        assert_eq!(
            all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["ro_2", "ro_1"]
        );
        assert_eq!(
            s.list_rollouts(None, Some("k1"), 10).await.unwrap().len(),
            1
        );
        assert_eq!(s.list_rollouts(Some("x"), None, 10).await.unwrap().len(), 0);

        assert_eq!(
            s.interrupt_rollouts(Some("node-b"), 9, "restart")
                .await
                .unwrap(),
            0
        );
        assert_eq!(s.interrupt_rollouts(None, 9, "restart").await.unwrap(), 1);
        let (r, ts) = s.get_rollout("ro_1").await.unwrap().unwrap();
        assert_eq!(
            (r.state.as_str(), r.finished_at, r.reason.as_deref()),
            ("interrupted", Some(9), Some("restart"))
        );
        assert_eq!(ts[0].state, "interrupted");
        assert_eq!(ts[1].state, "succeeded");
        let (r, ts) = s.get_rollout("ro_2").await.unwrap().unwrap();
        assert_eq!(
            (r.state.as_str(), ts[0].state.as_str()),
            ("succeeded", "pending")
        );
    }
}
