//! [`UsageStore`] for [`SqliteStore`].

use rusqlite::params;

use crate::Result;
use crate::sqlite::SqliteStore;
use crate::usage::{UsageFilter, UsageRow, UsageStore};

#[async_trait::async_trait]
impl UsageStore for SqliteStore {
    async fn add_usage(&self, deltas: &[UsageRow]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for d in deltas {
            tx.execute(
                "INSERT INTO usage (sandbox_id, hour, tenant, key_id, template, cpu_seconds,
                     memory_gib_hours, disk_gib_hours, egress_bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (sandbox_id, hour) DO UPDATE SET
                     cpu_seconds = cpu_seconds + excluded.cpu_seconds,
                     memory_gib_hours = memory_gib_hours + excluded.memory_gib_hours,
                     disk_gib_hours = disk_gib_hours + excluded.disk_gib_hours,
                     egress_bytes = egress_bytes + excluded.egress_bytes",
                params![
                    d.sandbox_id,
                    d.hour,
                    d.tenant,
                    d.key_id,
                    d.template,
                    d.cpu_seconds,
                    d.memory_gib_hours,
                    d.disk_gib_hours,
                    d.egress_bytes
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    async fn list_usage(&self, f: &UsageFilter) -> Result<Vec<UsageRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT sandbox_id, hour, tenant, key_id, template, cpu_seconds, memory_gib_hours,
                    disk_gib_hours, egress_bytes
             FROM usage
             WHERE hour >= ?1 AND hour < ?2
               AND (?3 IS NULL OR tenant = ?3) AND (?4 IS NULL OR key_id = ?4)
             ORDER BY hour, sandbox_id",
        )?;
        let rows = st.query_map(params![f.from_hour, f.to_hour, f.tenant, f.key_id], |r| {
            Ok(UsageRow {
                sandbox_id: r.get(0)?,
                hour: r.get(1)?,
                tenant: r.get(2)?,
                key_id: r.get(3)?,
                template: r.get(4)?,
                cpu_seconds: r.get(5)?,
                memory_gib_hours: r.get(6)?,
                disk_gib_hours: r.get(7)?,
                egress_bytes: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}
