//! [`VolumeStore`] for SQLite.

use rusqlite::{OptionalExtension, Row, params};

use crate::Result;
use crate::sqlite::{SqliteStore, conflict};
use crate::volumes::{VolumeRecord, VolumeStore};

const COLS: &str = "id, tenant, name, size_bytes, created_at, created_by";

fn row(r: &Row<'_>) -> rusqlite::Result<VolumeRecord> {
    let size: i64 = r.get(3)?;
    Ok(VolumeRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        size_bytes: u64::try_from(size).unwrap_or(0),
        created_at: r.get(4)?,
        created_by: r.get(5)?,
    })
}

#[async_trait::async_trait]
impl VolumeStore for SqliteStore {
    async fn insert_volume(&self, v: &VolumeRecord) -> Result<()> {
        self.conn()
            .execute(
                &format!("INSERT INTO volumes ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                params![
                    v.id,
                    v.tenant,
                    v.name,
                    i64::try_from(v.size_bytes).unwrap_or(i64::MAX),
                    v.created_at,
                    v.created_by
                ],
            )
            .map_err(conflict)?;
        Ok(())
    }

    async fn get_volume(&self, tenant: &str, id_or_name: &str) -> Result<Option<VolumeRecord>> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {COLS} FROM volumes WHERE tenant = ?1 AND (id = ?2 OR name = ?2) \
                     ORDER BY id = ?2 DESC LIMIT 1"
                ),
                params![tenant, id_or_name],
                row,
            )
            .optional()?)
    }

    async fn list_volumes(&self, tenant: Option<&str>) -> Result<Vec<VolumeRecord>> {
        let c = self.conn();
        let mut st = c.prepare(&format!(
            "SELECT {COLS} FROM volumes WHERE ?1 IS NULL OR tenant = ?1 ORDER BY created_at, id"
        ))?;
        let rows = st.query_map(params![tenant], row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    async fn delete_volume(&self, id: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute("DELETE FROM volumes WHERE id = ?1", [id])?;
        Ok(n > 0)
    }
}
