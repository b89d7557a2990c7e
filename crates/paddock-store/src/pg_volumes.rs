//! [`VolumeStore`] for [`PgStore`].

use tokio_postgres::Row;

use crate::Result;
use crate::pg::PgStore;
use crate::volumes::{VolumeRecord, VolumeStore};

const COLS: &str = "id, tenant, name, size_bytes, created_at, created_by";

fn row(r: &Row) -> Result<VolumeRecord> {
    let size: i64 = r.try_get(3)?;
    Ok(VolumeRecord {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        name: r.try_get(2)?,
        size_bytes: u64::try_from(size).unwrap_or(0),
        created_at: r.try_get(4)?,
        created_by: r.try_get(5)?,
    })
}

#[async_trait::async_trait]
impl VolumeStore for PgStore {
    async fn insert_volume(&self, v: &VolumeRecord) -> Result<()> {
        let size = i64::try_from(v.size_bytes).unwrap_or(i64::MAX);
        self.execute(
            &format!("INSERT INTO volumes ({COLS}) VALUES ($1, $2, $3, $4, $5, $6)"),
            &[
                &v.id,
                &v.tenant,
                &v.name,
                &size,
                &v.created_at,
                &v.created_by,
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_volume(&self, tenant: &str, id_or_name: &str) -> Result<Option<VolumeRecord>> {
        self.query_opt(
            &format!(
                "SELECT {COLS} FROM volumes WHERE tenant = $1 AND (id = $2 OR name = $2) \
                 ORDER BY (id = $2) DESC LIMIT 1"
            ),
            &[&tenant, &id_or_name],
        )
        .await?
        .as_ref()
        .map(row)
        .transpose()
    }

    async fn list_volumes(&self, tenant: Option<&str>) -> Result<Vec<VolumeRecord>> {
        self.query(
            &format!(
                "SELECT {COLS} FROM volumes WHERE $1::TEXT IS NULL OR tenant = $1 ORDER BY created_at, id"
            ),
            &[&tenant],
        )
        .await?
        .iter()
        .map(row)
        .collect()
    }

    async fn delete_volume(&self, id: &str) -> Result<bool> {
        let n = self
            .execute("DELETE FROM volumes WHERE id = $1", &[&id])
            .await?;
        Ok(n > 0)
    }
}
