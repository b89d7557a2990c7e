//! Volumes: who owns each, its name and its quota (the files are in the runtime's layer
//! filesystem).

use crate::{Millis, Result};

/// A tenant's volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    /// The subvolume's name (`vol-<random>`), never reused.
    pub id: String,
    pub tenant: String,
    /// Unique per tenant.
    pub name: String,
    /// The quota.
    pub size_bytes: u64,
    pub created_at: Millis,
    /// The API key that made it.
    pub created_by: Option<String>,
}

/// Volume records.
#[async_trait::async_trait]
pub trait VolumeStore: Send + Sync {
    /// Inserts a volume; a name the tenant already has is [`crate::StoreError::Conflict`].
    async fn insert_volume(&self, v: &VolumeRecord) -> Result<()>;
    /// The tenant's volume named or with id `id_or_name`.
    async fn get_volume(&self, tenant: &str, id_or_name: &str) -> Result<Option<VolumeRecord>>;
    /// The tenant's volumes (every tenant's with None), oldest first.
    async fn list_volumes(&self, tenant: Option<&str>) -> Result<Vec<VolumeRecord>>;
    /// Removes it; false if there was none.
    async fn delete_volume(&self, id: &str) -> Result<bool>;
}
