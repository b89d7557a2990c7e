//! [`AlertStore`] for [`SqliteStore`].

use rusqlite::{OptionalExtension, Row, params};

use crate::Result;
use crate::StoreError;
use crate::alerts::{AlertFiring, AlertRule, AlertStore, FiringFilter};
use crate::sqlite::{SqliteStore, conflict};

const RULE_COLS: &str = "id, tenant, fleet, kind, params, url, format, created_at, created_by";
const FIRING_COLS: &str =
    "id, rule_id, tenant, subject, summary, data, started_at, last_seen_at, resolved_at";

fn json(table: &'static str, s: &str) -> rusqlite::Result<serde_json::Value> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            Box::new(StoreError::Corrupt {
                table,
                detail: e.to_string(),
            }),
        )
    })
}

fn rule(r: &Row<'_>) -> rusqlite::Result<AlertRule> {
    let p: String = r.get(4)?;
    Ok(AlertRule {
        id: r.get(0)?,
        tenant: r.get(1)?,
        fleet: r.get::<_, i64>(2)? != 0,
        kind: r.get(3)?,
        params: json("alert_rules", &p)?,
        url: r.get(5)?,
        format: r.get(6)?,
        created_at: r.get(7)?,
        created_by: r.get(8)?,
    })
}

fn firing(r: &Row<'_>) -> rusqlite::Result<AlertFiring> {
    let d: String = r.get(5)?;
    Ok(AlertFiring {
        id: r.get(0)?,
        rule_id: r.get(1)?,
        tenant: r.get(2)?,
        subject: r.get(3)?,
        summary: r.get(4)?,
        data: json("alert_firings", &d)?,
        started_at: r.get(6)?,
        last_seen_at: r.get(7)?,
        resolved_at: r.get(8)?,
    })
}

#[async_trait::async_trait]
impl AlertStore for SqliteStore {
    async fn insert_alert_rule(&self, r: &AlertRule) -> Result<()> {
        self.conn()
            .execute(
                &format!(
                    "INSERT INTO alert_rules ({RULE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ),
                params![
                    r.id,
                    r.tenant,
                    i64::from(r.fleet),
                    r.kind,
                    r.params.to_string(),
                    r.url,
                    r.format,
                    r.created_at,
                    r.created_by
                ],
            )
            .map_err(conflict)?;
        Ok(())
    }

    async fn get_alert_rule(&self, id: &str) -> Result<Option<AlertRule>> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {RULE_COLS} FROM alert_rules WHERE id = ?1"),
                [id],
                rule,
            )
            .optional()?)
    }

    async fn list_alert_rules(&self, tenant: Option<&str>) -> Result<Vec<AlertRule>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {RULE_COLS} FROM alert_rules WHERE (?1 IS NULL OR tenant = ?1)
             ORDER BY created_at, id"
        ))?;
        let rows = st.query_map([tenant], rule)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    async fn delete_alert_rule(&self, id: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM alert_firings WHERE rule_id = ?1", [id])?;
        let n = tx.execute("DELETE FROM alert_rules WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(n > 0)
    }

    async fn open_firing(&self, f: &AlertFiring) -> Result<Option<AlertFiring>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "INSERT INTO alert_firings (rule_id, tenant, subject, summary, data, started_at,
                 last_seen_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (rule_id, subject) WHERE resolved_at IS NULL DO NOTHING",
            params![
                f.rule_id,
                f.tenant,
                f.subject,
                f.summary,
                f.data.to_string(),
                f.started_at,
                f.last_seen_at
            ],
        )?;
        let out = if n == 1 {
            let id = tx.last_insert_rowid();
            Some(AlertFiring {
                id,
                resolved_at: None,
                ..f.clone()
            })
        } else {
            tx.execute(
                "UPDATE alert_firings SET last_seen_at = max(last_seen_at, ?3)
                 WHERE rule_id = ?1 AND subject = ?2 AND resolved_at IS NULL",
                params![f.rule_id, f.subject, f.last_seen_at],
            )?;
            None
        };
        tx.commit()?;
        Ok(out)
    }

    async fn resolve_firing(
        &self,
        rule_id: &str,
        subject: &str,
        at: crate::Millis,
    ) -> Result<Option<AlertFiring>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let open = tx
            .query_row(
                &format!(
                    "SELECT {FIRING_COLS} FROM alert_firings
                     WHERE rule_id = ?1 AND subject = ?2 AND resolved_at IS NULL"
                ),
                params![rule_id, subject],
                firing,
            )
            .optional()?;
        let Some(mut f) = open else {
            return Ok(None);
        };
        let n = tx.execute(
            "UPDATE alert_firings SET resolved_at = ?2 WHERE id = ?1 AND resolved_at IS NULL",
            params![f.id, at],
        )?;
        tx.commit()?;
        if n == 0 {
            return Ok(None);
        }
        f.resolved_at = Some(at);
        Ok(Some(f))
    }

    async fn list_firings(&self, f: &FiringFilter) -> Result<Vec<AlertFiring>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {FIRING_COLS} FROM alert_firings
             WHERE (?1 IS NULL OR tenant = ?1)
               AND (?2 = 0 OR resolved_at IS NULL)
               AND (?3 IS NULL OR started_at >= ?3 OR resolved_at IS NULL OR resolved_at >= ?3)
             ORDER BY started_at DESC, id DESC LIMIT ?4"
        ))?;
        let rows = st.query_map(
            params![f.tenant, i64::from(f.open_only), f.since, f.limit.max(1)],
            firing,
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    async fn record_budget_crossing(
        &self,
        tenant: &str,
        period: &str,
        level: &str,
        at: crate::Millis,
    ) -> Result<bool> {
        let n = self.conn().execute(
            "INSERT INTO budget_crossings (tenant, period, level, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
            params![tenant, period, level, at],
        )?;
        Ok(n == 1)
    }

    async fn clear_budget_crossing(&self, tenant: &str, period: &str, level: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM budget_crossings WHERE tenant = ?1 AND period = ?2 AND level = ?3",
            params![tenant, period, level],
        )?;
        Ok(())
    }
}
