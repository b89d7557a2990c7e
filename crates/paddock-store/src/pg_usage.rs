//! [`UsageStore`] for [`PgStore`].

use crate::Result;
use crate::pg::PgStore;
use crate::usage::{UsageFilter, UsageRow, UsageStore};

#[async_trait::async_trait]
impl UsageStore for PgStore {
    async fn add_usage(&self, deltas: &[UsageRow]) -> Result<()> {
        // Rows are locked in key order, so two concurrent rounds cannot deadlock.
        let mut sorted: Vec<&UsageRow> = deltas.iter().collect();
        sorted.sort_by(|a, b| (&a.sandbox_id, a.hour).cmp(&(&b.sandbox_id, b.hour)));
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let st = tx
            .prepare_cached(
                "INSERT INTO usage (sandbox_id, hour, tenant, key_id, template, cpu_seconds,
                     memory_gib_hours, disk_gib_hours, egress_bytes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (sandbox_id, hour) DO UPDATE SET
                     cpu_seconds = usage.cpu_seconds + excluded.cpu_seconds,
                     memory_gib_hours = usage.memory_gib_hours + excluded.memory_gib_hours,
                     disk_gib_hours = usage.disk_gib_hours + excluded.disk_gib_hours,
                     egress_bytes = usage.egress_bytes + excluded.egress_bytes",
            )
            .await?;
        for d in sorted {
            tx.execute(
                &st,
                &[
                    &d.sandbox_id,
                    &d.hour,
                    &d.tenant,
                    &d.key_id,
                    &d.template,
                    &d.cpu_seconds,
                    &d.memory_gib_hours,
                    &d.disk_gib_hours,
                    &d.egress_bytes,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_usage(&self, f: &UsageFilter) -> Result<Vec<UsageRow>> {
        let rows = self
            .query(
                "SELECT sandbox_id, hour, tenant, key_id, template, cpu_seconds, memory_gib_hours,
                        disk_gib_hours, egress_bytes
                 FROM usage
                 WHERE hour >= $1 AND hour < $2
                   AND ($3::TEXT IS NULL OR tenant = $3) AND ($4::TEXT IS NULL OR key_id = $4)
                 ORDER BY hour, sandbox_id",
                &[&f.from_hour, &f.to_hour, &f.tenant, &f.key_id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(UsageRow {
                    sandbox_id: r.try_get(0)?,
                    hour: r.try_get(1)?,
                    tenant: r.try_get(2)?,
                    key_id: r.try_get(3)?,
                    template: r.try_get(4)?,
                    cpu_seconds: r.try_get(5)?,
                    memory_gib_hours: r.try_get(6)?,
                    disk_gib_hours: r.try_get(7)?,
                    egress_bytes: r.try_get(8)?,
                })
            })
            .collect()
    }
}
