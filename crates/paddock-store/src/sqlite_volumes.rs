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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store as _, StoreError, Tenant};

    #[tokio::test]
    async fn volumes_are_per_tenant_unique_by_name_and_deleted() {
        let s = SqliteStore::open_in_memory().unwrap();
        for t in ["a", "b"] {
            s.insert_tenant(&Tenant {
                id: t.into(),
                name: t.into(),
                created_at: 0,
            })
            .await
            .unwrap();
        }
        let v = |id: &str, tenant: &str, name: &str| VolumeRecord {
            id: id.into(),
            tenant: tenant.into(),
            name: name.into(),
            size_bytes: 1 << 30,
            created_at: 1,
            created_by: None,
        };
        s.insert_volume(&v("vol-1", "a", "data")).await.unwrap();
        s.insert_volume(&v("vol-2", "b", "data")).await.unwrap();
        assert!(matches!(
            s.insert_volume(&v("vol-3", "a", "data")).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            s.get_volume("a", "data").await.unwrap().unwrap().id,
            "vol-1"
        );
        assert_eq!(
            s.get_volume("a", "vol-1").await.unwrap().unwrap().name,
            "data"
        );
        assert!(s.get_volume("b", "vol-1").await.unwrap().is_none());
        assert_eq!(s.list_volumes(Some("a")).await.unwrap().len(), 1);
        assert_eq!(s.list_volumes(None).await.unwrap().len(), 2);
        assert!(s.delete_volume("vol-1").await.unwrap());
        assert!(!s.delete_volume("vol-1").await.unwrap());
        assert!(s.get_volume("a", "data").await.unwrap().is_none());
    }
}
