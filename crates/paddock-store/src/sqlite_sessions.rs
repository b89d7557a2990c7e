//! [`SessionStore`] for [`SqliteStore`].

use rusqlite::{OptionalExtension, params};

use crate::sessions::{SessionRecord, SessionStore};
use crate::sqlite::{KEY_COLS, SqliteStore, conflict, finish_key, key_from_row};
use crate::{ApiKey, Millis, Result};

#[async_trait::async_trait]
impl SessionStore for SqliteStore {
    async fn insert_session(&self, s: &SessionRecord, max_per_key: u32) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM console_sessions WHERE expires_at <= ?1",
            [s.created_at],
        )?;
        tx.execute(
            "INSERT INTO console_sessions (token_hash, key_id, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4)",
            params![s.token_hash, s.key_id, s.created_at, s.expires_at],
        )
        .map_err(conflict)?;
        tx.execute(
            "DELETE FROM console_sessions WHERE key_id = ?1 AND token_hash NOT IN \
             (SELECT token_hash FROM console_sessions WHERE key_id = ?1 \
              ORDER BY created_at DESC, token_hash DESC LIMIT ?2)",
            params![s.key_id, max_per_key],
        )?;
        tx.commit()?;
        Ok(())
    }

    async fn session_key(&self, token_hash: &str, now: Millis) -> Result<Option<ApiKey>> {
        let row = self
            .conn()
            .query_row(
                &format!(
                    "SELECT {KEY_COLS} FROM api_keys WHERE id = \
                     (SELECT key_id FROM console_sessions WHERE token_hash = ?1 AND expires_at > ?2)"
                ),
                params![token_hash, now],
                key_from_row,
            )
            .optional()?;
        row.map(finish_key).transpose()
    }

    async fn delete_session(&self, token_hash: &str) -> Result<bool> {
        let n = self.conn().execute(
            "DELETE FROM console_sessions WHERE token_hash = ?1",
            [token_hash],
        )?;
        Ok(n > 0)
    }

    async fn delete_key_sessions(&self, key_id: &str) -> Result<u64> {
        let n = self
            .conn()
            .execute("DELETE FROM console_sessions WHERE key_id = ?1", [key_id])?;
        Ok(n as u64)
    }

    async fn purge_sessions(&self, now: Millis) -> Result<u64> {
        let n = self
            .conn()
            .execute("DELETE FROM console_sessions WHERE expires_at <= ?1", [now])?;
        Ok(n as u64)
    }

    async fn count_sessions(&self) -> Result<u64> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM console_sessions", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
