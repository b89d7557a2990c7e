//! [`RolloutStore`] for [`PgStore`].

use tokio_postgres::Row;

use crate::pg::{PgStore, from_json, u32_col};
use crate::rollouts::{RolloutRecord, RolloutStore, RolloutTarget};
use crate::{Millis, Result};

const COLS: &str = "id, tenant, key_id, kind, spec, state, reason, created_at, finished_at, runner";

fn rollout(r: &Row) -> Result<RolloutRecord> {
    let spec: String = r.try_get(4)?;
    Ok(RolloutRecord {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        key_id: r.try_get(2)?,
        kind: r.try_get(3)?,
        spec: from_json("rollouts", &spec)?,
        state: r.try_get(5)?,
        reason: r.try_get(6)?,
        created_at: r.try_get(7)?,
        finished_at: r.try_get(8)?,
        runner: r.try_get(9)?,
    })
}

fn target(r: &Row) -> Result<RolloutTarget> {
    let result: String = r.try_get(4)?;
    Ok(RolloutTarget {
        rollout_id: r.try_get(0)?,
        seq: u32_col("rollout_targets", r.try_get(1)?)?,
        sandbox_id: r.try_get(2)?,
        state: r.try_get(3)?,
        result: from_json("rollout_targets", &result)?,
    })
}

#[async_trait::async_trait]
impl RolloutStore for PgStore {
    async fn insert_rollout(&self, r: &RolloutRecord, targets: &[RolloutTarget]) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            &format!(
                "INSERT INTO rollouts ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ),
            &[
                &r.id,
                &r.tenant,
                &r.key_id,
                &r.kind,
                &r.spec.to_string(),
                &r.state,
                &r.reason,
                &r.created_at,
                &r.finished_at,
                &r.runner,
            ],
        )
        .await?;
        let st = tx
            .prepare(
                "INSERT INTO rollout_targets (rollout_id, seq, sandbox_id, state, result) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .await?;
        for t in targets {
            tx.execute(
                &st,
                &[
                    &r.id,
                    &i64::from(t.seq),
                    &t.sandbox_id,
                    &t.state,
                    &t.result.to_string(),
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn update_rollout(&self, r: &RolloutRecord) -> Result<bool> {
        let n = self
            .execute(
                "UPDATE rollouts SET state = $2, reason = $3, finished_at = $4 WHERE id = $1",
                &[&r.id, &r.state, &r.reason, &r.finished_at],
            )
            .await?;
        Ok(n > 0)
    }

    async fn update_rollout_target(&self, t: &RolloutTarget) -> Result<bool> {
        let n = self
            .execute(
                "UPDATE rollout_targets SET state = $3, result = $4 \
                 WHERE rollout_id = $1 AND seq = $2",
                &[
                    &t.rollout_id,
                    &i64::from(t.seq),
                    &t.state,
                    &t.result.to_string(),
                ],
            )
            .await?;
        Ok(n > 0)
    }

    async fn get_rollout(&self, id: &str) -> Result<Option<(RolloutRecord, Vec<RolloutTarget>)>> {
        let Some(r) = self
            .query_opt(
                &format!("SELECT {COLS} FROM rollouts WHERE id = $1"),
                &[&id],
            )
            .await?
        else {
            return Ok(None);
        };
        let rec = rollout(&r)?;
        let targets = self
            .query(
                "SELECT rollout_id, seq, sandbox_id, state, result FROM rollout_targets \
                 WHERE rollout_id = $1 ORDER BY seq",
                &[&id],
            )
            .await?
            .iter()
            .map(target)
            .collect::<Result<Vec<_>>>()?;
        Ok(Some((rec, targets)))
    }

    async fn list_rollouts(
        &self,
        tenant: Option<&str>,
        key_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RolloutRecord>> {
        self.query(
            &format!(
                "SELECT {COLS} FROM rollouts WHERE ($1::TEXT IS NULL OR tenant = $1) \
                 AND ($2::TEXT IS NULL OR key_id = $2) ORDER BY created_at DESC, id DESC LIMIT $3"
            ),
            &[&tenant, &key_id, &i64::from(limit)],
        )
        .await?
        .iter()
        .map(rollout)
        .collect()
    }

    async fn interrupt_rollouts(
        &self,
        runner: Option<&str>,
        at: Millis,
        reason: &str,
    ) -> Result<u64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "UPDATE rollout_targets SET state = 'interrupted' \
             WHERE state IN ('pending', 'running') AND rollout_id IN \
             (SELECT id FROM rollouts WHERE state = 'running' AND runner IS NOT DISTINCT FROM $1)",
            &[&runner],
        )
        .await?;
        let n = tx
            .execute(
                "UPDATE rollouts SET state = 'interrupted', reason = $2, finished_at = $1 \
                 WHERE state = 'running' AND runner IS NOT DISTINCT FROM $3",
                &[&at, &reason, &runner],
            )
            .await?;
        tx.commit().await?;
        Ok(n)
    }
}
