//! [`SessionStore`] for [`PgStore`].

use crate::pg::{KEY_COLS, PgStore, count, key_from_row};
use crate::sessions::{SessionRecord, SessionStore};
use crate::{ApiKey, Millis, Result};

#[async_trait::async_trait]
impl SessionStore for PgStore {
    async fn insert_session(&self, s: &SessionRecord, max_per_key: u32) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "DELETE FROM console_sessions WHERE expires_at <= $1",
            &[&s.created_at],
        )
        .await?;
        tx.execute(
            "INSERT INTO console_sessions (token_hash, key_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
            &[&s.token_hash, &s.key_id, &s.created_at, &s.expires_at],
        )
        .await?;
        tx.execute(
            "DELETE FROM console_sessions WHERE key_id = $1 AND token_hash NOT IN \
             (SELECT token_hash FROM console_sessions WHERE key_id = $1 \
              ORDER BY created_at DESC, token_hash DESC LIMIT $2)",
            &[&s.key_id, &i64::from(max_per_key)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session_key(&self, token_hash: &str, now: Millis) -> Result<Option<ApiKey>> {
        self.query_opt(
            &format!(
                "SELECT {KEY_COLS} FROM api_keys WHERE id = \
                 (SELECT key_id FROM console_sessions WHERE token_hash = $1 AND expires_at > $2)"
            ),
            &[&token_hash, &now],
        )
        .await?
        .as_ref()
        .map(key_from_row)
        .transpose()
    }

    async fn delete_session(&self, token_hash: &str) -> Result<bool> {
        let n = self
            .execute(
                "DELETE FROM console_sessions WHERE token_hash = $1",
                &[&token_hash],
            )
            .await?;
        Ok(n > 0)
    }

    async fn delete_key_sessions(&self, key_id: &str) -> Result<u64> {
        self.execute("DELETE FROM console_sessions WHERE key_id = $1", &[&key_id])
            .await
    }

    async fn purge_sessions(&self, now: Millis) -> Result<u64> {
        self.execute(
            "DELETE FROM console_sessions WHERE expires_at <= $1",
            &[&now],
        )
        .await
    }

    async fn count_sessions(&self) -> Result<u64> {
        let r = self
            .query_one("SELECT COUNT(*) FROM console_sessions", &[])
            .await?;
        Ok(count(r.try_get(0)?))
    }
}
