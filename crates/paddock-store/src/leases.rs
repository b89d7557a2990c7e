//! Leases: a named duty held by one holder at a time until its expiry, for duties that
//! must run exactly once in a fleet (`docs/fleet.md`). Times are the database's clock, so
//! the holders' clocks need not agree.

use crate::{Millis, Result};

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    /// When the current holder took it (kept across renewals).
    pub acquired_at: Millis,
    pub expires_at: Millis,
}

/// The lease half of the store (a supertrait of [`crate::Store`]).
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes lease `name` for `holder` until `ttl_ms` from now (the database's clock) if
    /// nobody holds it, its holder's expired, or `holder` already holds it (a renewal).
    /// One conditional statement: of concurrent callers exactly one gets a free lease.
    /// True if `holder` holds it now.
    async fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool>;
    /// Gives the lease up if `holder` holds it (so another takes it at once); false otherwise.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool>;
    async fn get_lease(&self, name: &str) -> Result<Option<Lease>>;
}
