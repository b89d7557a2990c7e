//! Metered usage of sandboxes (cost reports): amounts per sandbox and hour, added to by the
//! server's sampling task.

use crate::Result;

/// Usage of one sandbox in one hour (or, as a delta, in one sampling round).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UsageRow {
    pub sandbox_id: String,
    /// Milliseconds since the epoch divided by 3,600,000 (UTC hours).
    pub hour: i64,
    pub tenant: String,
    pub key_id: String,
    pub template: String,
    pub cpu_seconds: f64,
    pub memory_gib_hours: f64,
    pub disk_gib_hours: f64,
    pub egress_bytes: i64,
}

/// Which usage rows to read.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    /// Only this tenant's (None: all).
    pub tenant: Option<String>,
    /// Only this key's.
    pub key_id: Option<String>,
    /// Hours `from_hour <= hour < to_hour`.
    pub from_hour: i64,
    pub to_hour: i64,
}

/// The usage half of the store (a supertrait of [`crate::Store`]).
#[async_trait::async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds every delta to its (sandbox, hour) row, creating rows as needed, in one
    /// transaction.
    async fn add_usage(&self, deltas: &[UsageRow]) -> Result<()>;
    /// The rows matching `f`, by hour then sandbox.
    async fn list_usage(&self, f: &UsageFilter) -> Result<Vec<UsageRow>>;
}
