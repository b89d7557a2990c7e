//! [`SecretStore`] for [`SqliteStore`].

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, Row, params};

use crate::Result;
use crate::secrets::{SealedVersion, SecretRecord, SecretStore};
use crate::sqlite::{SqliteStore, conflict, corrupt};

const SECRET_COLS: &str = "id, tenant, name, current_version, metadata, created_at, updated_at";

fn secret_row(r: &Row<'_>) -> rusqlite::Result<(SecretRecord, String)> {
    Ok((
        SecretRecord {
            id: r.get(0)?,
            tenant: r.get(1)?,
            name: r.get(2)?,
            current_version: r.get(3)?,
            metadata: BTreeMap::new(),
            created_at: r.get(5)?,
            updated_at: r.get(6)?,
        },
        r.get(4)?,
    ))
}

fn with_metadata((mut s, m): (SecretRecord, String)) -> Result<SecretRecord> {
    s.metadata = serde_json::from_str(&m).map_err(|e| corrupt("secrets", e.to_string()))?;
    Ok(s)
}

fn version_row(r: &Row<'_>) -> rusqlite::Result<SealedVersion> {
    Ok(SealedVersion {
        secret_id: r.get(0)?,
        version: r.get(1)?,
        key_id: r.get(2)?,
        nonce: r.get(3)?,
        ciphertext: r.get(4)?,
        created_at: r.get(5)?,
    })
}

const VERSION_COLS: &str = "secret_id, version, key_id, nonce, ciphertext, created_at";

fn metadata_json(m: &BTreeMap<String, String>) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| "{}".into())
}

#[async_trait::async_trait]
impl SecretStore for SqliteStore {
    async fn insert_secret(&self, s: &SecretRecord, v: &SealedVersion) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            &format!("INSERT INTO secrets ({SECRET_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![
                s.id,
                s.tenant,
                s.name,
                s.current_version,
                metadata_json(&s.metadata),
                s.created_at,
                s.updated_at
            ],
        )
        .map_err(conflict)?;
        tx.execute(
            &format!(
                "INSERT INTO secret_versions ({VERSION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ),
            params![
                v.secret_id,
                v.version,
                v.key_id,
                v.nonce,
                v.ciphertext,
                v.created_at
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    async fn add_secret_version(
        &self,
        v: &SealedVersion,
        metadata: Option<&BTreeMap<String, String>>,
        keep: u32,
    ) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE secrets SET current_version = ?2, updated_at = ?3, \
             metadata = COALESCE(?4, metadata) WHERE id = ?1",
            params![
                v.secret_id,
                v.version,
                v.created_at,
                metadata.map(metadata_json)
            ],
        )?;
        if n == 0 {
            return Ok(false);
        }
        tx.execute(
            &format!(
                "INSERT INTO secret_versions ({VERSION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ),
            params![
                v.secret_id,
                v.version,
                v.key_id,
                v.nonce,
                v.ciphertext,
                v.created_at
            ],
        )?;
        tx.execute(
            "DELETE FROM secret_versions WHERE secret_id = ?1 AND version <= ?2",
            params![v.secret_id, v.version - i64::from(keep)],
        )?;
        tx.commit()?;
        Ok(true)
    }

    async fn get_secret(&self, tenant: &str, id_or_name: &str) -> Result<Option<SecretRecord>> {
        let row = self
            .conn()
            .query_row(
                &format!(
                    "SELECT {SECRET_COLS} FROM secrets WHERE tenant = ?1 AND (id = ?2 OR name = ?2) \
                     ORDER BY id = ?2 DESC LIMIT 1"
                ),
                params![tenant, id_or_name],
                secret_row,
            )
            .optional()?;
        row.map(with_metadata).transpose()
    }

    async fn list_secrets(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SecretRecord>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {SECRET_COLS} FROM secrets WHERE tenant = ?1 AND name > ?2 \
             ORDER BY name LIMIT ?3"
        ))?;
        let rows = st
            .query_map(params![tenant, after.unwrap_or(""), limit], secret_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(with_metadata).collect()
    }

    async fn count_secrets(&self, tenant: &str) -> Result<u64> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM secrets WHERE tenant = ?1",
            [tenant],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn delete_secret(&self, id: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute("DELETE FROM secrets WHERE id = ?1", [id])?;
        Ok(n > 0)
    }

    async fn secret_version(&self, secret_id: &str, version: i64) -> Result<Option<SealedVersion>> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {VERSION_COLS} FROM secret_versions WHERE secret_id = ?1 AND version = ?2"
                ),
                params![secret_id, version],
                version_row,
            )
            .optional()?)
    }

    async fn all_secret_versions(&self) -> Result<Vec<SealedVersion>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("SELECT {VERSION_COLS} FROM secret_versions"))?;
        let rows = st
            .query_map([], version_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    async fn reseal_secret_versions(&self, vs: &[SealedVersion]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for v in vs {
            tx.execute(
                "UPDATE secret_versions SET key_id = ?3, nonce = ?4, ciphertext = ?5 \
                 WHERE secret_id = ?1 AND version = ?2",
                params![v.secret_id, v.version, v.key_id, v.nonce, v.ciphertext],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}
