//! Paddock's persistent state behind one trait, [`Store`].
//!
//! The server keeps tenants, API keys (hashes only), sandbox records, lifecycle events, the
//! audit trail and exec history here. [`SqliteStore`] is the embedded default (one file in the
//! data directory, WAL mode, migrations embedded and applied at open); [`PgStore`] is
//! PostgreSQL, for fleets (a pool of connections, its own embedded migrations with the same
//! numbering). Both pass one conformance suite (`crates/paddock/tests/store.rs`).
//!
//! **Invariants:**
//! - Nothing here knows HTTP or the runtime; records are plain data.
//! - Secrets never reach the store in clear: API keys are stored as SHA-256 hashes, env var
//!   values of sandboxes are not stored at all, tenant secrets only as ciphertext sealed by
//!   the server ([`SecretStore`]).
//! - Timestamps are milliseconds since the Unix epoch (UTC).
//! - Every method is async and the traits are object-safe (`Arc<dyn Store>`): the server picks
//!   the backend at start. They use `async_trait` (boxed futures) rather than native `async fn`
//!   in traits, because native ones cannot be called through `dyn`, and an enum over the
//!   backends would make every method a `match` and tie this crate's users to the list of
//!   backends. A boxed future per call costs nothing next to a database round trip.
//! - SQLite calls are short (single statements or small transactions on one connection) and
//!   run inline in the calling task: measured, moving them to a blocking thread does not pay
//!   for the thread hand-off (`docs/database.md`).

use std::collections::BTreeMap;
use std::fmt;

mod alerts;
mod leases;
mod nodes;
mod pg;
mod pg_alerts;
mod pg_leases;
mod pg_nodes;
mod pg_rollouts;
mod pg_secrets;
mod pg_sessions;
mod pg_usage;
mod pg_volumes;
mod rollouts;
mod secrets;
mod sessions;
mod spec;
mod sqlite;
mod sqlite_alerts;
mod sqlite_leases;
mod sqlite_nodes;
mod sqlite_rollouts;
mod sqlite_secrets;
mod sqlite_sessions;
mod sqlite_usage;
mod sqlite_volumes;
mod usage;
mod volumes;

pub use alerts::{AlertFiring, AlertRule, AlertStore, FiringFilter};
pub use leases::{Lease, LeaseStore};
pub use nodes::{Heartbeat, NodeRecord, NodeState, NodeStore};
pub use pg::{CONNECT_TIMEOUT, POOL_SIZE, POOL_WAIT, PgStore, STATEMENT_TIMEOUT, TCP_USER_TIMEOUT};
pub use rollouts::{RolloutRecord, RolloutStore, RolloutTarget};
pub use secrets::{SealedVersion, SecretRecord, SecretStore};
pub use sessions::{SessionRecord, SessionStore};
pub use spec::{OnTimeout, SPEC_VERSION, SandboxSpec, SpecSecret, SpecVolume, StopReason};
pub use sqlite::SqliteStore;
pub use usage::{UsageFilter, UsageRow, UsageStore};
pub use volumes::{VolumeRecord, VolumeStore};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Current time in [`Millis`].
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (I/O, corruption, locked beyond the busy timeout).
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// PostgreSQL answered a statement with an error other than the ones below.
    #[error("database: {0}")]
    Postgres(tokio_postgres::Error),
    /// The database cannot be reached: connection refused or lost, no pooled connection
    /// within the pool's wait timeout, a statement cancelled by its timeout, the server
    /// shutting down. Transient: the server answers 503 `store_unavailable`. SQLite never
    /// produces it.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A row violates a uniqueness constraint (the named one).
    #[error("already exists: {0}")]
    Conflict(String),
    /// A stored value cannot be decoded (written by a newer version, or corrupted).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    /// The store file cannot be opened or migrated.
    #[error("opening store {path}: {detail}")]
    Open { path: String, detail: String },
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A tenant: the owner of sandboxes. Every API key belongs to exactly one tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: Millis,
}

/// What a key may do, within its tenant (the route table is the server's `roles` module).
/// Ordered: each role may do everything the roles below it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read only: lists and reads of its tenant's sandboxes, templates and events.
    Viewer,
    /// Its own sandboxes (those its key created), and templates.
    Developer,
    /// Every sandbox and node of its tenant, but no keys.
    Operator,
    /// Everything, including keys and audit, across tenants.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Developer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }
    /// The role named `s`. `user`, the name of `developer` before roles (keys stored as
    /// `user` were migrated to `developer` by migration 0005), is still accepted.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "operator" => Some(Role::Operator),
            "developer" | "user" => Some(Role::Developer),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// An API key. The secret itself is never stored, only `hash` (hex SHA-256 of the key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// Public id, shown in listings and the audit trail (e.g. `key_3f9a...`).
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the secret key. Unique.
    pub hash: String,
    /// The first characters of the secret, to help humans tell keys apart.
    pub prefix: String,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
    /// Maximum concurrently running sandboxes for this key (None: server default).
    pub max_sandboxes: Option<u32>,
    /// Lifecycle events of this key's sandboxes are POSTed here.
    pub webhook_url: Option<String>,
}

/// Lifecycle state of a sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxState {
    Starting,
    Running,
    /// Paused (`spec.paused_mode` says how); it keeps its id, layer and settings.
    Paused,
    Stopped,
}

impl SandboxState {
    /// Every state but `stopped`: the sandboxes that still hold a place on their host
    /// (a paused one keeps its files, and when fully paused its frozen processes).
    pub const NOT_STOPPED: [SandboxState; 3] = [
        SandboxState::Starting,
        SandboxState::Running,
        SandboxState::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Starting => "starting",
            SandboxState::Running => "running",
            SandboxState::Paused => "paused",
            SandboxState::Stopped => "stopped",
        }
    }
    pub fn parse(s: &str) -> Option<SandboxState> {
        match s {
            "starting" => Some(SandboxState::Starting),
            "running" => Some(SandboxState::Running),
            "paused" => Some(SandboxState::Paused),
            "stopped" => Some(SandboxState::Stopped),
            _ => None,
        }
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sandbox as the server knows it. The row is written (state `starting`) before the
/// runtime creates anything, so a crash mid-create is found by reconciliation.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxRecord {
    pub id: String,
    pub tenant: String,
    /// Id of the key that created it.
    pub key_id: String,
    pub template: String,
    pub state: SandboxState,
    /// Why it stopped.
    pub stop_reason: Option<StopReason>,
    /// Limits and other create parameters (no env values), and the pause state.
    pub spec: SandboxSpec,
    pub metadata: BTreeMap<String, String>,
    /// Env var names (values are secret and not stored).
    pub env_keys: Vec<String>,
    pub created_at: Millis,
    pub ready_at: Option<Millis>,
    /// When it will be destroyed; counts from `ready_at`.
    pub expires_at: Option<Millis>,
    pub stopped_at: Option<Millis>,
    /// How many timeout warnings were already sent for the current `expires_at`.
    pub warnings_sent: u32,
    pub webhook_url: Option<String>,
}

/// Which sandboxes to list.
#[derive(Clone, Debug, Default)]
pub struct SandboxFilter {
    /// Only this tenant's (None: all tenants).
    pub tenant: Option<String>,
    /// Only these states (empty: all).
    pub states: Vec<SandboxState>,
    /// Every pair must match exactly.
    pub metadata: BTreeMap<String, String>,
    /// Created by this key only.
    pub key_id: Option<String>,
    /// Paging: only ids greater than this, in id order... ordered by `created_at` then id.
    pub after: Option<String>,
    pub limit: Option<u32>,
}

/// A template in the catalogue (its layers live in the data directory's layer store).
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateRecord {
    pub name: String,
    /// `build FROM ...`, `image REF@DIGEST`, `import ...`, `debootstrap ...`.
    pub source: String,
    /// Layer ids, bottom first.
    pub layers: Vec<String>,
    /// Defaults: env, workdir, user, entrypoint, cmd, ports.
    pub config: serde_json::Value,
    pub created_at: Millis,
    /// The API key that made it (None: adopted from the data directory).
    pub created_by: Option<String>,
}

/// A lifecycle event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Strictly increasing across the store.
    pub seq: i64,
    pub at: Millis,
    pub tenant: String,
    pub sandbox_id: Option<String>,
    /// `created`, `ready`, `timeout_warning`, `timeout_changed`, `expired`, `killed`, `oom`,
    /// `failed`, `lost`, `adopted`, ...
    pub kind: String,
    pub data: serde_json::Value,
}

/// Which events to list.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub tenant: Option<String>,
    pub sandbox_id: Option<String>,
    /// Only events with `seq` greater than this.
    pub after_seq: Option<i64>,
    pub limit: Option<u32>,
}

/// One mutating API call.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    /// Assigned by the store on insert (ignored on input).
    pub id: i64,
    pub at: Millis,
    /// Key id, or `system` for the server's own actions (expiry, reconciliation).
    pub actor: String,
    pub tenant: Option<String>,
    /// e.g. `sandbox.create`, `sandbox.delete`, `exec`, `files.write`, `key.create`.
    pub action: String,
    pub sandbox_id: Option<String>,
    /// `ok`, or the error code.
    pub outcome: String,
    /// Short, secret-free detail (command line, path).
    pub detail: Option<String>,
}

/// Which audit entries to list (newest first).
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub tenant: Option<String>,
    pub sandbox_id: Option<String>,
    pub actor: Option<String>,
    /// Only entries with `id` less than this (paging backwards).
    pub before_id: Option<i64>,
    pub limit: Option<u32>,
}

/// One finished (or started, for background processes) command in a sandbox.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecRecord {
    /// Assigned by the store on insert.
    pub id: i64,
    pub sandbox_id: String,
    pub at: Millis,
    pub command: String,
    pub pid: Option<u32>,
    pub exit_code: Option<i32>,
    /// `exit status N`, `signal: killed`, `timeout`, `running`, ...
    pub status: String,
    pub duration_ms: Option<i64>,
}

/// Paddock's persistent state. Implementations: [`SqliteStore`], [`PgStore`].
#[async_trait::async_trait]
pub trait Store:
    Send
    + Sync
    + fmt::Debug
    + SecretStore
    + NodeStore
    + UsageStore
    + VolumeStore
    + AlertStore
    + LeaseStore
    + RolloutStore
    + SessionStore
{
    // Tenants and keys.
    async fn insert_tenant(&self, t: &Tenant) -> Result<()>;
    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>>;
    async fn list_tenants(&self) -> Result<Vec<Tenant>>;
    /// Fails with [`StoreError::Conflict`] if the id or hash exists.
    async fn insert_key(&self, k: &ApiKey) -> Result<()>;
    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>>;
    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>>;
    /// All keys, or one tenant's, ordered by creation.
    async fn list_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>>;
    /// Sets `revoked_at` if not yet revoked, and deletes the key's console sessions (one
    /// transaction); false if no such key.
    async fn revoke_key(&self, id: &str, at: Millis) -> Result<bool>;
    async fn count_keys(&self) -> Result<u64>;

    // Templates
    /// Inserts or replaces the catalogue record of a template.
    async fn upsert_template(&self, t: &TemplateRecord) -> Result<()>;
    /// Removes it; false if there was none.
    async fn delete_template(&self, name: &str) -> Result<bool>;
    /// Every template record, by name.
    async fn list_templates(&self) -> Result<Vec<TemplateRecord>>;

    // Sandboxes.
    /// Fails with [`StoreError::Conflict`] if the id exists.
    async fn insert_sandbox(&self, s: &SandboxRecord) -> Result<()>;
    /// Replaces the row with this id; false if there is none.
    async fn update_sandbox(&self, s: &SandboxRecord) -> Result<bool>;
    async fn get_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>>;
    async fn list_sandboxes(&self, f: &SandboxFilter) -> Result<Vec<SandboxRecord>>;
    /// Sandboxes in state `starting` or `running` created by this key.
    async fn count_active_by_key(&self, key_id: &str) -> Result<u64>;

    // Events.
    /// Stores the event, assigning `seq` (the input's is ignored), and returns it.
    async fn insert_event(&self, e: &Event) -> Result<Event>;
    /// Oldest first.
    async fn list_events(&self, f: &EventFilter) -> Result<Vec<Event>>;

    // Audit.
    /// Returns the assigned id.
    async fn insert_audit(&self, a: &AuditEntry) -> Result<i64>;
    async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>>;

    // Exec history.
    /// Returns the assigned id.
    async fn insert_exec(&self, e: &ExecRecord) -> Result<i64>;
    /// Updates exit code, status and duration of a record inserted earlier.
    async fn update_exec(&self, e: &ExecRecord) -> Result<()>;
    /// Inserts a finished command's history row and its audit entry in one transaction (one
    /// commit instead of two: the write behind every short exec); returns the exec's id.
    async fn insert_exec_audited(&self, e: &ExecRecord, a: &AuditEntry) -> Result<i64>;
    /// Oldest first, at most `limit`.
    async fn list_execs(&self, sandbox_id: &str, limit: u32) -> Result<Vec<ExecRecord>>;
}
