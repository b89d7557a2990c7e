//! [`LeaseStore`] for [`SqliteStore`].

use rusqlite::{OptionalExtension, params};

use crate::Result;
use crate::leases::{Lease, LeaseStore};
use crate::sqlite::SqliteStore;

#[async_trait::async_trait]
impl LeaseStore for SqliteStore {
    async fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        let got: Option<String> = self
            .conn()
            .query_row(
                "INSERT INTO leases (name, holder, acquired_at, expires_at)
                 SELECT ?1, ?2, now, now + ?3
                 FROM (SELECT CAST(unixepoch('subsec') * 1000 AS INTEGER) AS now) WHERE TRUE
                 ON CONFLICT (name) DO UPDATE SET
                     holder = excluded.holder,
                     acquired_at = CASE WHEN leases.holder = excluded.holder
                                        THEN leases.acquired_at ELSE excluded.acquired_at END,
                     expires_at = excluded.expires_at
                 WHERE leases.expires_at < excluded.acquired_at OR leases.holder = excluded.holder
                 RETURNING holder",
                params![name, holder, ttl_ms],
                |r| r.get(0),
            )
            .optional()?;
        Ok(got.is_some())
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
        let n = self.conn().execute(
            "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
            params![name, holder],
        )?;
        Ok(n > 0)
    }

    async fn get_lease(&self, name: &str) -> Result<Option<Lease>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT name, holder, acquired_at, expires_at FROM leases WHERE name = ?1",
                [name],
                |r| {
                    Ok(Lease {
                        name: r.get(0)?,
                        holder: r.get(1)?,
                        acquired_at: r.get(2)?,
                        expires_at: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }
}
