//! [`AlertStore`] for [`PgStore`].

use tokio_postgres::Row;

use crate::alerts::{AlertFiring, AlertRule, AlertStore, FiringFilter};
use crate::pg::{PgStore, from_json};
use crate::{Millis, Result};

const RULE_COLS: &str = "id, tenant, fleet, kind, params, url, format, created_at, created_by";
const FIRING_COLS: &str =
    "id, rule_id, tenant, subject, summary, data, started_at, last_seen_at, resolved_at";

fn rule(r: &Row) -> Result<AlertRule> {
    let p: String = r.try_get(4)?;
    Ok(AlertRule {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        fleet: r.try_get(2)?,
        kind: r.try_get(3)?,
        params: from_json("alert_rules", &p)?,
        url: r.try_get(5)?,
        format: r.try_get(6)?,
        created_at: r.try_get(7)?,
        created_by: r.try_get(8)?,
    })
}

fn firing(r: &Row) -> Result<AlertFiring> {
    let d: String = r.try_get(5)?;
    Ok(AlertFiring {
        id: r.try_get(0)?,
        rule_id: r.try_get(1)?,
        tenant: r.try_get(2)?,
        subject: r.try_get(3)?,
        summary: r.try_get(4)?,
        data: from_json("alert_firings", &d)?,
        started_at: r.try_get(6)?,
        last_seen_at: r.try_get(7)?,
        resolved_at: r.try_get(8)?,
    })
}

#[async_trait::async_trait]
impl AlertStore for PgStore {
    async fn insert_alert_rule(&self, r: &AlertRule) -> Result<()> {
        self.execute(
            &format!(
                "INSERT INTO alert_rules ({RULE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ),
            &[
                &r.id,
                &r.tenant,
                &r.fleet,
                &r.kind,
                &r.params.to_string(),
                &r.url,
                &r.format,
                &r.created_at,
                &r.created_by,
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_alert_rule(&self, id: &str) -> Result<Option<AlertRule>> {
        self.query_opt(
            &format!("SELECT {RULE_COLS} FROM alert_rules WHERE id = $1"),
            &[&id],
        )
        .await?
        .as_ref()
        .map(rule)
        .transpose()
    }

    async fn list_alert_rules(&self, tenant: Option<&str>) -> Result<Vec<AlertRule>> {
        self.query(
            &format!(
                "SELECT {RULE_COLS} FROM alert_rules WHERE ($1::TEXT IS NULL OR tenant = $1)
                 ORDER BY created_at, id"
            ),
            &[&tenant],
        )
        .await?
        .iter()
        .map(rule)
        .collect()
    }

    async fn delete_alert_rule(&self, id: &str) -> Result<bool> {
        // Its firings go with it (ON DELETE CASCADE).
        let n = self
            .execute("DELETE FROM alert_rules WHERE id = $1", &[&id])
            .await?;
        Ok(n > 0)
    }

    async fn open_firing(&self, f: &AlertFiring) -> Result<Option<AlertFiring>> {
        let c = self.client().await?;
        // Of concurrent openers, one inserts; the others wait on the unique index, then do
        // nothing and only move `last_seen_at`.
        let row = c
            .query_opt(
                "INSERT INTO alert_firings (rule_id, tenant, subject, summary, data, started_at,
                     last_seen_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (rule_id, subject) WHERE resolved_at IS NULL DO NOTHING
                 RETURNING id",
                &[
                    &f.rule_id,
                    &f.tenant,
                    &f.subject,
                    &f.summary,
                    &f.data.to_string(),
                    &f.started_at,
                    &f.last_seen_at,
                ],
            )
            .await?;
        if let Some(row) = row {
            return Ok(Some(AlertFiring {
                id: row.try_get(0)?,
                resolved_at: None,
                ..f.clone()
            }));
        }
        c.execute(
            "UPDATE alert_firings SET last_seen_at = GREATEST(last_seen_at, $3)
             WHERE rule_id = $1 AND subject = $2 AND resolved_at IS NULL",
            &[&f.rule_id, &f.subject, &f.last_seen_at],
        )
        .await?;
        Ok(None)
    }

    async fn resolve_firing(
        &self,
        rule_id: &str,
        subject: &str,
        at: Millis,
    ) -> Result<Option<AlertFiring>> {
        self.query_opt(
            &format!(
                "UPDATE alert_firings SET resolved_at = $3
                 WHERE rule_id = $1 AND subject = $2 AND resolved_at IS NULL
                 RETURNING {FIRING_COLS}"
            ),
            &[&rule_id, &subject, &at],
        )
        .await?
        .as_ref()
        .map(firing)
        .transpose()
    }

    async fn list_firings(&self, f: &FiringFilter) -> Result<Vec<AlertFiring>> {
        self.query(
            &format!(
                "SELECT {FIRING_COLS} FROM alert_firings
                 WHERE ($1::TEXT IS NULL OR tenant = $1)
                   AND (NOT $2 OR resolved_at IS NULL)
                   AND ($3::BIGINT IS NULL OR started_at >= $3 OR resolved_at IS NULL
                        OR resolved_at >= $3)
                 ORDER BY started_at DESC, id DESC LIMIT $4"
            ),
            &[
                &f.tenant,
                &f.open_only,
                &f.since,
                &i64::from(f.limit.max(1)),
            ],
        )
        .await?
        .iter()
        .map(firing)
        .collect()
    }

    async fn record_budget_crossing(
        &self,
        tenant: &str,
        period: &str,
        level: &str,
        at: Millis,
    ) -> Result<bool> {
        let n = self
            .execute(
                "INSERT INTO budget_crossings (tenant, period, level, at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&tenant, &period, &level, &at],
            )
            .await?;
        Ok(n == 1)
    }

    async fn clear_budget_crossing(&self, tenant: &str, period: &str, level: &str) -> Result<()> {
        self.execute(
            "DELETE FROM budget_crossings WHERE tenant = $1 AND period = $2 AND level = $3",
            &[&tenant, &period, &level],
        )
        .await?;
        Ok(())
    }
}
