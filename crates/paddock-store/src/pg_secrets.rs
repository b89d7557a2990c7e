//! [`SecretStore`] for [`PgStore`].

use std::collections::BTreeMap;

use tokio_postgres::Row;

use crate::Result;
use crate::pg::{PgStore, count, from_json, to_json};
use crate::secrets::{SealedVersion, SecretRecord, SecretStore};

const SECRET_COLS: &str = "id, tenant, name, current_version, metadata, created_at, updated_at";
const VERSION_COLS: &str = "secret_id, version, key_id, nonce, ciphertext, created_at";

fn secret_row(r: &Row) -> Result<SecretRecord> {
    let m: String = r.try_get(4)?;
    Ok(SecretRecord {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        name: r.try_get(2)?,
        current_version: r.try_get(3)?,
        metadata: from_json("secrets", &m)?,
        created_at: r.try_get(5)?,
        updated_at: r.try_get(6)?,
    })
}

fn version_row(r: &Row) -> Result<SealedVersion> {
    Ok(SealedVersion {
        secret_id: r.try_get(0)?,
        version: r.try_get(1)?,
        key_id: r.try_get(2)?,
        nonce: r.try_get(3)?,
        ciphertext: r.try_get(4)?,
        created_at: r.try_get(5)?,
    })
}

const INSERT_VERSION: &str = "INSERT INTO secret_versions (secret_id, version, key_id, nonce, ciphertext, created_at) VALUES ($1, $2, $3, $4, $5, $6)";

#[async_trait::async_trait]
impl SecretStore for PgStore {
    async fn insert_secret(&self, s: &SecretRecord, v: &SealedVersion) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            &format!("INSERT INTO secrets ({SECRET_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
            &[
                &s.id,
                &s.tenant,
                &s.name,
                &s.current_version,
                &to_json(&s.metadata),
                &s.created_at,
                &s.updated_at,
            ],
        )
        .await?;
        tx.execute(
            INSERT_VERSION,
            &[
                &v.secret_id,
                &v.version,
                &v.key_id,
                &v.nonce,
                &v.ciphertext,
                &v.created_at,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn add_secret_version(
        &self,
        v: &SealedVersion,
        metadata: Option<&BTreeMap<String, String>>,
        keep: u32,
    ) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let meta = metadata.map(to_json);
        let n = tx
            .execute(
                "UPDATE secrets SET current_version = $2, updated_at = $3, \
                 metadata = COALESCE($4, metadata) WHERE id = $1",
                &[&v.secret_id, &v.version, &v.created_at, &meta],
            )
            .await?;
        if n == 0 {
            return Ok(false);
        }
        tx.execute(
            INSERT_VERSION,
            &[
                &v.secret_id,
                &v.version,
                &v.key_id,
                &v.nonce,
                &v.ciphertext,
                &v.created_at,
            ],
        )
        .await?;
        tx.execute(
            "DELETE FROM secret_versions WHERE secret_id = $1 AND version <= $2",
            &[&v.secret_id, &(v.version - i64::from(keep))],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn get_secret(&self, tenant: &str, id_or_name: &str) -> Result<Option<SecretRecord>> {
        self.query_opt(
            &format!(
                "SELECT {SECRET_COLS} FROM secrets WHERE tenant = $1 AND (id = $2 OR name = $2) \
                 ORDER BY (id = $2) DESC LIMIT 1"
            ),
            &[&tenant, &id_or_name],
        )
        .await?
        .as_ref()
        .map(secret_row)
        .transpose()
    }

    async fn list_secrets(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SecretRecord>> {
        self.query(
            &format!(
                "SELECT {SECRET_COLS} FROM secrets WHERE tenant = $1 AND name > $2 \
                 ORDER BY name LIMIT $3"
            ),
            &[&tenant, &after.unwrap_or(""), &i64::from(limit)],
        )
        .await?
        .iter()
        .map(secret_row)
        .collect()
    }

    async fn count_secrets(&self, tenant: &str) -> Result<u64> {
        let r = self
            .query_one("SELECT COUNT(*) FROM secrets WHERE tenant = $1", &[&tenant])
            .await?;
        Ok(count(r.try_get(0)?))
    }

    async fn delete_secret(&self, id: &str) -> Result<bool> {
        let n = self
            .execute("DELETE FROM secrets WHERE id = $1", &[&id])
            .await?;
        Ok(n > 0)
    }

    async fn secret_version(&self, secret_id: &str, version: i64) -> Result<Option<SealedVersion>> {
        self.query_opt(
            &format!(
                "SELECT {VERSION_COLS} FROM secret_versions WHERE secret_id = $1 AND version = $2"
            ),
            &[&secret_id, &version],
        )
        .await?
        .as_ref()
        .map(version_row)
        .transpose()
    }

    async fn all_secret_versions(&self) -> Result<Vec<SealedVersion>> {
        self.query(
            &format!("SELECT {VERSION_COLS} FROM secret_versions ORDER BY secret_id, version"),
            &[],
        )
        .await?
        .iter()
        .map(version_row)
        .collect()
    }

    async fn reseal_secret_versions(&self, vs: &[SealedVersion]) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        for v in vs {
            tx.execute(
                "UPDATE secret_versions SET key_id = $3, nonce = $4, ciphertext = $5 \
                 WHERE secret_id = $1 AND version = $2",
                &[&v.secret_id, &v.version, &v.key_id, &v.nonce, &v.ciphertext],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
