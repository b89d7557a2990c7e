//! The PostgreSQL store, for fleets: control planes and nodes on many hosts share it.
//!
//! A pool of [`POOL_SIZE`] connections (`deadpool-postgres`) per process. Statements are
//! prepared once per connection (`prepare_cached`), except the few whose text depends on a
//! filter. Semantics are SQLite's, method by method (the conformance suite runs both):
//! the same ordering (text keys are `COLLATE "C"`), filters, limits and error variants.
//!
//! Outages are bounded: connecting gives up after [`CONNECT_TIMEOUT`], waiting for a pooled
//! connection after [`POOL_WAIT`], a statement after [`STATEMENT_TIMEOUT`] (server side),
//! and a connection whose packets go unacknowledged is closed after [`TCP_USER_TIMEOUT`].
//! Every such failure is [`StoreError::Unavailable`]; the pool drops closed connections and
//! makes new ones, so the store recovers by itself when PostgreSQL is back.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::{
    ApiKey, AuditEntry, AuditFilter, Event, EventFilter, ExecRecord, Millis, Result, Role,
    SandboxFilter, SandboxRecord, SandboxSpec, SandboxState, StopReason, Store, StoreError,
    TemplateRecord, Tenant,
};

/// Connections per process.
pub const POOL_SIZE: usize = 16;
/// Giving up on connecting (unless the URL sets `connect_timeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Giving up on waiting for a free pooled connection.
pub const POOL_WAIT: Duration = Duration::from_secs(5);
/// The server cancels a statement running longer (`statement_timeout`).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The kernel closes a connection whose sent data stays unacknowledged this long.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(15);

/// The migrations, in order, numbered as SQLite's. Never edit a released one; append.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations-pg/0001_init.sql"),
    include_str!("../migrations-pg/0002_templates.sql"),
    include_str!("../migrations-pg/0003_secrets.sql"),
    include_str!("../migrations-pg/0004_nodes.sql"),
    include_str!("../migrations-pg/0005_roles.sql"),
    include_str!("../migrations-pg/0006_usage.sql"),
    include_str!("../migrations-pg/0007_volumes.sql"),
    include_str!("../migrations-pg/0008_alerts.sql"),
    include_str!("../migrations-pg/0009_leases.sql"),
    include_str!("../migrations-pg/0010_rollouts.sql"),
    include_str!("../migrations-pg/0011_sessions.sql"),
];

/// Advisory lock keys (`pg_advisory_xact_lock`): migrations, and event inserts (so events
/// commit in `seq` order and a reader paging by `seq` never skips one committed late).
const MIGRATE_LOCK: i64 = 0x5061_6464_6f63_6b01;
const EVENTS_LOCK: i64 = 0x5061_6464_6f63_6b02;

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("status", &self.pool.status())
            .finish()
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            if code.starts_with("23") {
                return StoreError::Conflict(
                    db.constraint().unwrap_or("unique constraint").to_owned(),
                );
            }
            // Connection exceptions, operator intervention (shutdown, cannot connect now,
            // statement cancelled by its timeout), insufficient resources.
            if code.starts_with("08")
                || code.starts_with("57")
                || code.starts_with("53")
                || *db.code() == SqlState::T_R_SERIALIZATION_FAILURE
            {
                return StoreError::Unavailable(db.message().to_owned());
            }
            return StoreError::Postgres(e);
        }
        // Not an answer of the server: the connection (refused, closed, timed out, I/O).
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        let text = e.to_string();
        if e.is_closed()
            || io
            || text.starts_with("error connecting")
            || text.starts_with("timeout")
            || text.starts_with("error communicating")
        {
            return StoreError::Unavailable(text);
        }
        StoreError::Postgres(e)
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> StoreError {
        match e {
            PoolError::Backend(e) => StoreError::from(e),
            other => StoreError::Unavailable(format!("connection pool: {other}")),
        }
    }
}

fn open_err(url: &str, detail: impl Into<String>) -> StoreError {
    StoreError::Open {
        path: redact(url),
        detail: detail.into(),
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &cred[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl PgStore {
    /// Connects to the database `url` names (`postgres://user:password@host:port/db`, or
    /// any form `tokio_postgres::Config` parses) and applies pending migrations.
    pub async fn connect(url: &str) -> Result<PgStore> {
        let mut cfg: tokio_postgres::Config =
            url.parse().map_err(|e| open_err(url, format!("{e}")))?;
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(CONNECT_TIMEOUT);
        }
        cfg.keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .tcp_user_timeout(TCP_USER_TIMEOUT);
        let ours = format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout=60000",
            STATEMENT_TIMEOUT.as_millis()
        );
        let options = match cfg.get_options() {
            Some(o) if !o.is_empty() => format!("{o} {ours}"),
            _ => ours,
        };
        cfg.options(&options);
        if cfg.get_application_name().is_none() {
            cfg.application_name("paddock");
        }
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| open_err(url, e.to_string()))?;
        let s = PgStore { pool };
        s.migrate().await.map_err(|e| match e {
            StoreError::Open { detail, .. } => open_err(url, detail),
            other => open_err(url, other.to_string()),
        })?;
        Ok(s)
    }

    async fn migrate(&self) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS paddock_schema (version BIGINT NOT NULL);
             INSERT INTO paddock_schema (version)
                 SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM paddock_schema);",
        )
        .await?;
        let version: i64 = tx
            .query_one("SELECT version FROM paddock_schema", &[])
            .await?
            .try_get(0)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::Open {
                path: String::new(),
                detail: format!(
                    "database schema version {version} is newer than this binary knows ({known}); upgrade paddock"
                ),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(sql).await?;
            tx.execute("UPDATE paddock_schema SET version = $1", &[&(i as i64 + 1)])
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<i64> {
        let r = self
            .query_one("SELECT version FROM paddock_schema", &[])
            .await?;
        Ok(r.try_get(0)?)
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    pub(crate) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let c = self.client().await?;
        let st = c.prepare_cached(sql).await?;
        Ok(c.query(&st, params).await?)
    }

    pub(crate) async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        let c = self.client().await?;
        let st = c.prepare_cached(sql).await?;
        Ok(c.query_opt(&st, params).await?)
    }

    pub(crate) async fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row> {
        let c = self.client().await?;
        let st = c.prepare_cached(sql).await?;
        Ok(c.query_one(&st, params).await?)
    }

    pub(crate) async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let c = self.client().await?;
        let st = c.prepare_cached(sql).await?;
        Ok(c.execute(&st, params).await?)
    }
}

pub(crate) fn corrupt(table: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.into(),
    }
}

pub(crate) fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(table: &'static str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| corrupt(table, e.to_string()))
}

/// A `u32` column stored as `BIGINT`.
pub(crate) fn u32_col(table: &'static str, v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(table, format!("{v} out of range")))
}

pub(crate) fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) const KEY_COLS: &str = "id, tenant, name, role, hash, prefix, created_at, expires_at, revoked_at, max_sandboxes, webhook_url";

pub(crate) fn key_from_row(r: &Row) -> Result<ApiKey> {
    let role: String = r.try_get(3)?;
    let max: Option<i64> = r.try_get(9)?;
    Ok(ApiKey {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        name: r.try_get(2)?,
        role: Role::parse(&role)
            .ok_or_else(|| corrupt("api_keys", format!("unknown role {role:?}")))?,
        hash: r.try_get(4)?,
        prefix: r.try_get(5)?,
        created_at: r.try_get(6)?,
        expires_at: r.try_get(7)?,
        revoked_at: r.try_get(8)?,
        max_sandboxes: max.map(|m| u32_col("api_keys", m)).transpose()?,
        webhook_url: r.try_get(10)?,
    })
}

const SANDBOX_COLS: &str = "id, tenant, key_id, template, state, stop_reason, spec, metadata, env_keys, created_at, ready_at, expires_at, stopped_at, warnings_sent, webhook_url";

fn sandbox_from_row(r: &Row) -> Result<SandboxRecord> {
    let state: String = r.try_get(4)?;
    let stop_reason: Option<String> = r.try_get(5)?;
    let spec: String = r.try_get(6)?;
    let metadata: String = r.try_get(7)?;
    let env_keys: String = r.try_get(8)?;
    Ok(SandboxRecord {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        key_id: r.try_get(2)?,
        template: r.try_get(3)?,
        state: SandboxState::parse(&state)
            .ok_or_else(|| corrupt("sandboxes", format!("unknown state {state:?}")))?,
        stop_reason: stop_reason
            .map(|r| {
                StopReason::parse(&r)
                    .ok_or_else(|| corrupt("sandboxes", format!("unknown stop reason {r:?}")))
            })
            .transpose()?,
        spec: SandboxSpec::from_stored(&spec).map_err(|e| corrupt("sandboxes", e))?,
        metadata: from_json("sandboxes", &metadata)?,
        env_keys: from_json("sandboxes", &env_keys)?,
        created_at: r.try_get(9)?,
        ready_at: r.try_get(10)?,
        expires_at: r.try_get(11)?,
        stopped_at: r.try_get(12)?,
        warnings_sent: u32_col("sandboxes", r.try_get(13)?)?,
        webhook_url: r.try_get(14)?,
    })
}

/// The 15 parameters of a sandbox row, in [`SANDBOX_COLS`] order.
struct SandboxParams {
    state: &'static str,
    stop_reason: Option<&'static str>,
    spec: String,
    metadata: String,
    env_keys: String,
    warnings_sent: i64,
}

impl SandboxParams {
    fn new(s: &SandboxRecord) -> SandboxParams {
        SandboxParams {
            state: s.state.as_str(),
            stop_reason: s.stop_reason.map(StopReason::as_str),
            spec: s.spec.to_stored(),
            metadata: to_json(&s.metadata),
            env_keys: to_json(&s.env_keys),
            warnings_sent: i64::from(s.warnings_sent),
        }
    }

    fn list<'a>(&'a self, s: &'a SandboxRecord) -> [&'a (dyn ToSql + Sync); 15] {
        [
            &s.id,
            &s.tenant,
            &s.key_id,
            &s.template,
            &self.state,
            &self.stop_reason,
            &self.spec,
            &self.metadata,
            &self.env_keys,
            &s.created_at,
            &s.ready_at,
            &s.expires_at,
            &s.stopped_at,
            &self.warnings_sent,
            &s.webhook_url,
        ]
    }
}

fn event_from_row(r: &Row) -> Result<Event> {
    let data: String = r.try_get(5)?;
    Ok(Event {
        seq: r.try_get(0)?,
        at: r.try_get(1)?,
        tenant: r.try_get(2)?,
        sandbox_id: r.try_get(3)?,
        kind: r.try_get(4)?,
        data: from_json("events", &data)?,
    })
}

fn audit_from_row(r: &Row) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: r.try_get(0)?,
        at: r.try_get(1)?,
        actor: r.try_get(2)?,
        tenant: r.try_get(3)?,
        action: r.try_get(4)?,
        sandbox_id: r.try_get(5)?,
        outcome: r.try_get(6)?,
        detail: r.try_get(7)?,
    })
}

fn exec_from_row(r: &Row) -> Result<ExecRecord> {
    let pid: Option<i64> = r.try_get(4)?;
    let exit: Option<i64> = r.try_get(5)?;
    Ok(ExecRecord {
        id: r.try_get(0)?,
        sandbox_id: r.try_get(1)?,
        at: r.try_get(2)?,
        command: r.try_get(3)?,
        pid: pid.map(|p| u32_col("execs", p)).transpose()?,
        exit_code: exit
            .map(|c| i32::try_from(c).map_err(|_| corrupt("execs", "exit code out of range")))
            .transpose()?,
        status: r.try_get(6)?,
        duration_ms: r.try_get(7)?,
    })
}

fn tenant_from_row(r: &Row) -> Result<Tenant> {
    Ok(Tenant {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        created_at: r.try_get(2)?,
    })
}

/// `LIMIT $n` with NULL for no limit.
fn limit(l: Option<u32>) -> Option<i64> {
    l.map(i64::from)
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn insert_tenant(&self, t: &Tenant) -> Result<()> {
        self.execute(
            "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)",
            &[&t.id, &t.name, &t.created_at],
        )
        .await?;
        Ok(())
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        self.query_opt(
            "SELECT id, name, created_at FROM tenants WHERE id = $1",
            &[&id],
        )
        .await?
        .as_ref()
        .map(tenant_from_row)
        .transpose()
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.query(
            "SELECT id, name, created_at FROM tenants ORDER BY created_at, id",
            &[],
        )
        .await?
        .iter()
        .map(tenant_from_row)
        .collect()
    }

    async fn insert_key(&self, k: &ApiKey) -> Result<()> {
        let max = k.max_sandboxes.map(i64::from);
        self.execute(
            &format!("INSERT INTO api_keys ({KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
            &[
                &k.id,
                &k.tenant,
                &k.name,
                &k.role.as_str(),
                &k.hash,
                &k.prefix,
                &k.created_at,
                &k.expires_at,
                &k.revoked_at,
                &max,
                &k.webhook_url,
            ],
        )
        .await?;
        Ok(())
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        self.query_opt(
            &format!("SELECT {KEY_COLS} FROM api_keys WHERE hash = $1"),
            &[&hash],
        )
        .await?
        .as_ref()
        .map(key_from_row)
        .transpose()
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>> {
        self.query_opt(
            &format!("SELECT {KEY_COLS} FROM api_keys WHERE id = $1"),
            &[&id],
        )
        .await?
        .as_ref()
        .map(key_from_row)
        .transpose()
    }

    async fn list_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>> {
        self.query(
            &format!(
                "SELECT {KEY_COLS} FROM api_keys WHERE $1::TEXT IS NULL OR tenant = $1 ORDER BY created_at, id"
            ),
            &[&tenant],
        )
        .await?
        .iter()
        .map(key_from_row)
        .collect()
    }

    async fn revoke_key(&self, id: &str, at: Millis) -> Result<bool> {
        let n = self
            .execute(
                "WITH ended AS (DELETE FROM console_sessions WHERE key_id = $1) \
                 UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
                &[&id, &at],
            )
            .await?;
        Ok(n > 0)
    }

    async fn count_keys(&self) -> Result<u64> {
        let r = self.query_one("SELECT COUNT(*) FROM api_keys", &[]).await?;
        Ok(count(r.try_get(0)?))
    }

    async fn upsert_template(&self, t: &TemplateRecord) -> Result<()> {
        self.execute(
            "INSERT INTO templates (name, source, layers, config, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (name) DO UPDATE SET source = $2, layers = $3, config = $4, \
             created_at = $5, created_by = $6",
            &[
                &t.name,
                &t.source,
                &to_json(&t.layers),
                &t.config.to_string(),
                &t.created_at,
                &t.created_by,
            ],
        )
        .await?;
        Ok(())
    }

    async fn delete_template(&self, name: &str) -> Result<bool> {
        let n = self
            .execute("DELETE FROM templates WHERE name = $1", &[&name])
            .await?;
        Ok(n > 0)
    }

    async fn list_templates(&self) -> Result<Vec<TemplateRecord>> {
        let rows = self
            .query(
                "SELECT name, source, layers, config, created_at, created_by FROM templates ORDER BY name",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let layers: String = r.try_get(2)?;
                let config: String = r.try_get(3)?;
                Ok(TemplateRecord {
                    name: r.try_get(0)?,
                    source: r.try_get(1)?,
                    layers: serde_json::from_str(&layers).unwrap_or_default(),
                    config: serde_json::from_str(&config).unwrap_or_default(),
                    created_at: r.try_get(4)?,
                    created_by: r.try_get(5)?,
                })
            })
            .collect()
    }

    async fn insert_sandbox(&self, s: &SandboxRecord) -> Result<()> {
        let p = SandboxParams::new(s);
        self.execute(
            &format!("INSERT INTO sandboxes ({SANDBOX_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"),
            &p.list(s),
        )
        .await?;
        Ok(())
    }

    async fn update_sandbox(&self, s: &SandboxRecord) -> Result<bool> {
        let p = SandboxParams::new(s);
        let n = self.execute(
            "UPDATE sandboxes SET tenant = $2, key_id = $3, template = $4, state = $5, stop_reason = $6, spec = $7, metadata = $8, env_keys = $9, created_at = $10, ready_at = $11, expires_at = $12, stopped_at = $13, warnings_sent = $14, webhook_url = $15 WHERE id = $1",
            &p.list(s),
        )
        .await?;
        Ok(n > 0)
    }

    async fn get_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>> {
        self.query_opt(
            &format!("SELECT {SANDBOX_COLS} FROM sandboxes WHERE id = $1"),
            &[&id],
        )
        .await?
        .as_ref()
        .map(sandbox_from_row)
        .transpose()
    }

    async fn list_sandboxes(&self, f: &SandboxFilter) -> Result<Vec<SandboxRecord>> {
        let mut sql = format!("SELECT {SANDBOX_COLS} FROM sandboxes WHERE TRUE");
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut arg = |v: Box<dyn ToSql + Sync + Send>| {
            args.push(v);
            format!("${}", args.len())
        };
        if let Some(t) = &f.tenant {
            sql.push_str(&format!(" AND tenant = {}", arg(Box::new(t.clone()))));
        }
        if let Some(k) = &f.key_id {
            sql.push_str(&format!(" AND key_id = {}", arg(Box::new(k.clone()))));
        }
        if !f.states.is_empty() {
            let states: Vec<String> = f.states.iter().map(|s| s.as_str().to_owned()).collect();
            sql.push_str(&format!(" AND state = ANY({})", arg(Box::new(states))));
        }
        // Metadata keys are user input: they go in as bound parameters, never as SQL text.
        for (k, v) in &f.metadata {
            let k = arg(Box::new(k.clone()));
            let v = arg(Box::new(v.clone()));
            sql.push_str(&format!(" AND (metadata::jsonb ->> {k}) = {v}"));
        }
        if let Some(after) = &f.after {
            let a = arg(Box::new(after.clone()));
            sql.push_str(&format!(
                " AND (created_at, id) > (SELECT created_at, id FROM sandboxes WHERE id = {a})"
            ));
        }
        sql.push_str(" ORDER BY created_at, id");
        if let Some(l) = f.limit {
            sql.push_str(&format!(" LIMIT {l}"));
        }
        let refs: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let c = self.client().await?;
        let rows = c.query(&sql, &refs).await?;
        rows.iter().map(sandbox_from_row).collect()
    }

    async fn count_active_by_key(&self, key_id: &str) -> Result<u64> {
        let r = self
            .query_one(
                "SELECT COUNT(*) FROM sandboxes WHERE key_id = $1 AND state IN ('starting', 'running')",
                &[&key_id],
            )
            .await?;
        Ok(count(r.try_get(0)?))
    }

    async fn insert_event(&self, e: &Event) -> Result<Event> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let lock = tx
            .prepare_cached("SELECT pg_advisory_xact_lock($1)")
            .await?;
        tx.execute(&lock, &[&EVENTS_LOCK]).await?;
        let ins = tx
            .prepare_cached(
                "INSERT INTO events (at, tenant, sandbox_id, kind, data) VALUES ($1, $2, $3, $4, $5) RETURNING seq",
            )
            .await?;
        let row = tx
            .query_one(
                &ins,
                &[&e.at, &e.tenant, &e.sandbox_id, &e.kind, &to_json(&e.data)],
            )
            .await?;
        tx.commit().await?;
        let mut out = e.clone();
        out.seq = row.try_get(0)?;
        Ok(out)
    }

    async fn list_events(&self, f: &EventFilter) -> Result<Vec<Event>> {
        self.query(
            "SELECT seq, at, tenant, sandbox_id, kind, data FROM events
             WHERE ($1::TEXT IS NULL OR tenant = $1) AND ($2::TEXT IS NULL OR sandbox_id = $2)
               AND seq > $3
             ORDER BY seq LIMIT $4",
            &[
                &f.tenant,
                &f.sandbox_id,
                &f.after_seq.unwrap_or(i64::MIN),
                &limit(f.limit),
            ],
        )
        .await?
        .iter()
        .map(event_from_row)
        .collect()
    }

    async fn insert_audit(&self, a: &AuditEntry) -> Result<i64> {
        let r = self
            .query_one(
                "INSERT INTO audit (at, actor, tenant, action, sandbox_id, outcome, detail) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[&a.at, &a.actor, &a.tenant, &a.action, &a.sandbox_id, &a.outcome, &a.detail],
            )
            .await?;
        Ok(r.try_get(0)?)
    }

    async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        self.query(
            "SELECT id, at, actor, tenant, action, sandbox_id, outcome, detail FROM audit
             WHERE ($1::TEXT IS NULL OR tenant = $1) AND ($2::TEXT IS NULL OR sandbox_id = $2)
               AND ($3::TEXT IS NULL OR actor = $3) AND id < $4
             ORDER BY id DESC LIMIT $5",
            &[
                &f.tenant,
                &f.sandbox_id,
                &f.actor,
                &f.before_id.unwrap_or(i64::MAX),
                &limit(f.limit),
            ],
        )
        .await?
        .iter()
        .map(audit_from_row)
        .collect()
    }

    async fn insert_exec(&self, e: &ExecRecord) -> Result<i64> {
        let pid = e.pid.map(i64::from);
        let exit = e.exit_code.map(i64::from);
        let r = self
            .query_one(
                "INSERT INTO execs (sandbox_id, at, command, pid, exit_code, status, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[&e.sandbox_id, &e.at, &e.command, &pid, &exit, &e.status, &e.duration_ms],
            )
            .await?;
        Ok(r.try_get(0)?)
    }

    async fn insert_exec_audited(&self, e: &ExecRecord, a: &AuditEntry) -> Result<i64> {
        let pid = e.pid.map(i64::from);
        let exit = e.exit_code.map(i64::from);
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let ins = tx
            .prepare_cached(
                "INSERT INTO execs (sandbox_id, at, command, pid, exit_code, status, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .await?;
        let row = tx
            .query_one(
                &ins,
                &[
                    &e.sandbox_id,
                    &e.at,
                    &e.command,
                    &pid,
                    &exit,
                    &e.status,
                    &e.duration_ms,
                ],
            )
            .await?;
        let audit = tx
            .prepare_cached(
                "INSERT INTO audit (at, actor, tenant, action, sandbox_id, outcome, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .await?;
        tx.execute(
            &audit,
            &[
                &a.at,
                &a.actor,
                &a.tenant,
                &a.action,
                &a.sandbox_id,
                &a.outcome,
                &a.detail,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(row.try_get(0)?)
    }

    async fn update_exec(&self, e: &ExecRecord) -> Result<()> {
        let pid = e.pid.map(i64::from);
        let exit = e.exit_code.map(i64::from);
        self.execute(
            "UPDATE execs SET pid = $2, exit_code = $3, status = $4, duration_ms = $5 WHERE id = $1",
            &[&e.id, &pid, &exit, &e.status, &e.duration_ms],
        )
        .await?;
        Ok(())
    }

    async fn list_execs(&self, sandbox_id: &str, limit: u32) -> Result<Vec<ExecRecord>> {
        self.query(
            "SELECT * FROM (SELECT id, sandbox_id, at, command, pid, exit_code, status, duration_ms
             FROM execs WHERE sandbox_id = $1 ORDER BY id DESC LIMIT $2) AS last ORDER BY id",
            &[&sandbox_id, &i64::from(limit)],
        )
        .await?
        .iter()
        .map(exec_from_row)
        .collect()
    }
}
