//! The web console's login sessions (`docs/console.md`), in the store so that every server
//! and control plane of a fleet sees a login made on any of them. A session is stored by
//! the SHA-256 of its cookie only (never the cookie, never the API key), with its key and
//! its expiry.

use crate::{ApiKey, Millis, Result};

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Hex SHA-256 of the session cookie. Unique.
    pub token_hash: String,
    /// The API key the browser logged in with.
    pub key_id: String,
    pub created_at: Millis,
    /// The session is refused from this instant on.
    pub expires_at: Millis,
}

/// The session half of the store (a supertrait of [`crate::Store`]).
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session. Sessions expired at `s.created_at` (any key's) are deleted,
    /// and so are the oldest of its key's beyond the newest `max_per_key`.
    /// Fails with [`crate::StoreError::Conflict`] if the hash exists.
    async fn insert_session(&self, s: &SessionRecord, max_per_key: u32) -> Result<()>;
    /// The key of the session with this hash, if it exists and `expires_at > now`.
    /// (The key's own revocation and expiry are the caller's to check.)
    async fn session_key(&self, token_hash: &str, now: Millis) -> Result<Option<ApiKey>>;
    /// Ends a session; whether it existed.
    async fn delete_session(&self, token_hash: &str) -> Result<bool>;
    /// Ends every session of a key; how many there were. ([`crate::Store::revoke_key`]
    /// does this too.)
    async fn delete_key_sessions(&self, key_id: &str) -> Result<u64>;
    /// Deletes the sessions expired at `now`; how many.
    async fn purge_sessions(&self, now: Millis) -> Result<u64>;
    /// Sessions stored (expired ones included until purged).
    async fn count_sessions(&self) -> Result<u64>;
}
