//! Secrets: records of names and metadata, and sealed versions of their values. The store
//! never sees a value in clear: the server seals it (AES-256-GCM) before calling here.

use std::collections::BTreeMap;

use crate::{Millis, Result};

/// A secret of a tenant, without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub current_version: i64,
    pub metadata: BTreeMap<String, String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// One sealed version of a secret's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedVersion {
    pub secret_id: String,
    pub version: i64,
    /// Fingerprint of the master key that sealed it.
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub created_at: Millis,
}

/// The secret half of the store (a supertrait of [`crate::Store`]).
#[async_trait::async_trait]
pub trait SecretStore: Send + Sync {
    /// Inserts a secret and its first version. A taken name is [`crate::StoreError::Conflict`].
    async fn insert_secret(&self, s: &SecretRecord, v: &SealedVersion) -> Result<()>;
    /// Adds version `v.version` and makes it current (replacing the metadata if given),
    /// keeping at most `keep` versions. False if the secret is gone.
    async fn add_secret_version(
        &self,
        v: &SealedVersion,
        metadata: Option<&BTreeMap<String, String>>,
        keep: u32,
    ) -> Result<bool>;
    /// The secret of `tenant` whose id or name is `id_or_name`.
    async fn get_secret(&self, tenant: &str, id_or_name: &str) -> Result<Option<SecretRecord>>;
    /// Secrets of `tenant` by name, those after `after`, at most `limit`.
    async fn list_secrets(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SecretRecord>>;
    async fn count_secrets(&self, tenant: &str) -> Result<u64>;
    /// Deletes a secret and every version. False if it did not exist.
    async fn delete_secret(&self, id: &str) -> Result<bool>;
    /// One sealed version.
    async fn secret_version(&self, secret_id: &str, version: i64) -> Result<Option<SealedVersion>>;
    /// Every sealed version of every tenant (for re-encryption).
    async fn all_secret_versions(&self) -> Result<Vec<SealedVersion>>;
    /// Replaces the key id, nonce and ciphertext of each given version, all or none.
    async fn reseal_secret_versions(&self, vs: &[SealedVersion]) -> Result<()>;
}
