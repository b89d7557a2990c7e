//! [`LeaseStore`] for [`PgStore`].

use crate::Result;
use crate::leases::{Lease, LeaseStore};
use crate::pg::PgStore;

#[async_trait::async_trait]
impl LeaseStore for PgStore {
    async fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        // One statement: concurrent callers serialise on the row, and each sees the row as
        // the one before it left it.
        let row = self
            .query_opt(
                "INSERT INTO leases (name, holder, acquired_at, expires_at)
                 SELECT $1, $2, now, now + $3
                 FROM (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT AS now) AS t
                 ON CONFLICT (name) DO UPDATE SET
                     holder = excluded.holder,
                     acquired_at = CASE WHEN leases.holder = excluded.holder
                                        THEN leases.acquired_at ELSE excluded.acquired_at END,
                     expires_at = excluded.expires_at
                 WHERE leases.expires_at < excluded.acquired_at OR leases.holder = excluded.holder
                 RETURNING holder",
                &[&name, &holder, &ttl_ms],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
        let n = self
            .execute(
                "DELETE FROM leases WHERE name = $1 AND holder = $2",
                &[&name, &holder],
            )
            .await?;
        Ok(n > 0)
    }

    async fn get_lease(&self, name: &str) -> Result<Option<Lease>> {
        let row = self
            .query_opt(
                "SELECT name, holder, acquired_at, expires_at FROM leases WHERE name = $1",
                &[&name],
            )
            .await?;
        row.map(|r| {
            Ok(Lease {
                name: r.try_get(0)?,
                holder: r.try_get(1)?,
                acquired_at: r.try_get(2)?,
                expires_at: r.try_get(3)?,
            })
        })
        .transpose()
    }
}
