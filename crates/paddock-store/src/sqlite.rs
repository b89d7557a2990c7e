//! The embedded store: one SQLite file in the data directory.
//!
//! One writing connection behind a mutex: SQLite serialises writers anyway, and every call
//! is a single short statement or a small transaction. The reads on every request's path
//! (the sandbox record, the key) go through a small pool of read-only connections instead
//! ([`Readers`]): in WAL mode they see every committed write and never wait for the writer,
//! so a write behind one answer (an exec's history and audit rows, `paddock_service::hotpath`)
//! does not hold up the next request's read. WAL mode also keeps readers of other processes
//! (backups, `sqlite3` for debugging) unblocked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use crate::{
    ApiKey, AuditEntry, AuditFilter, Event, EventFilter, ExecRecord, Millis, Result, Role,
    SandboxFilter, SandboxRecord, SandboxSpec, SandboxState, StopReason, Store, StoreError,
    TemplateRecord, Tenant,
};

/// The migrations, in order. Never edit a released one; append.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_templates.sql"),
    include_str!("../migrations/0003_secrets.sql"),
    include_str!("../migrations/0004_nodes.sql"),
    include_str!("../migrations/0005_roles.sql"),
    include_str!("../migrations/0006_usage.sql"),
    include_str!("../migrations/0007_volumes.sql"),
    include_str!("../migrations/0008_alerts.sql"),
    include_str!("../migrations/0009_leases.sql"),
    include_str!("../migrations/0010_rollouts.sql"),
    include_str!("../migrations/0011_sessions.sql"),
];

/// The embedded SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// `None` for a store in memory, whose one connection is the only view of its data.
    readers: Option<Readers>,
}

/// Idle read-only connections to the database file, opened on demand and kept up to
/// [`Readers::KEEP`]; a read takes one (or opens one) and puts it back when done.
#[derive(Debug)]
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    /// Idle readers kept; more are opened when more reads run at once, and closed after.
    const KEEP: usize = 4;

    fn open(&self) -> Result<Connection> {
        let c = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(c)
    }
}

/// A connection for reading: a pooled reader, put back on drop, or the store's one
/// connection when it has no file.
pub(crate) enum ReadConn<'a> {
    Pooled(&'a Readers, Option<Connection>),
    Shared(std::sync::MutexGuard<'a, Connection>),
}

impl std::ops::Deref for ReadConn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            ReadConn::Pooled(_, c) => c.as_ref().expect("reader taken only on drop"),
            ReadConn::Shared(g) => g,
        }
    }
}

impl Drop for ReadConn<'_> {
    fn drop(&mut self) {
        if let ReadConn::Pooled(r, c) = self {
            let mut idle = r.idle.lock().expect("store readers poisoned");
            if idle.len() < Readers::KEEP
                && let Some(c) = c.take()
            {
                idle.push(c);
            }
        }
    }
}

/// Creates the database file readable by its owner only (it holds key hashes, tenants and
/// the audit trail) and takes group and other access away from an existing database and
/// its `-wal` and `-shm` files. SQLite creates `-wal` and `-shm` with the database file's
/// mode, so they follow.
fn restrict_files(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    let mut names = vec![path.as_os_str().to_owned()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut n = path.as_os_str().to_owned();
        n.push(suffix);
        names.push(n);
    }
    for n in names {
        match std::fs::set_permissions(&n, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let open_err = |detail: String| StoreError::Open {
            path: path.display().to_string(),
            detail,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        }
        restrict_files(path).map_err(|e| open_err(e.to_string()))?;
        let conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        let mut store = Self::init(conn).map_err(|e| match e {
            StoreError::Open { detail, .. } => open_err(detail),
            other => open_err(other.to_string()),
        })?;
        let readers = Readers {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
        };
        // One reader now, so a database a reader cannot open fails here, not on a request.
        let first = readers.open().map_err(|e| open_err(e.to_string()))?;
        readers.idle.lock().expect("fresh mutex").push(first);
        store.readers = Some(readers);
        Ok(store)
    }

    /// A store in memory, for tests.
    pub fn open_in_memory() -> Result<SqliteStore> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<SqliteStore> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
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
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            readers: None,
        })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().expect("store connection poisoned")
    }

    /// A connection for statements that only read: it sees every committed write and does
    /// not wait for the writer.
    pub(crate) fn read(&self) -> Result<ReadConn<'_>> {
        let Some(r) = &self.readers else {
            return Ok(ReadConn::Shared(self.conn()));
        };
        let pooled = r.idle.lock().expect("store readers poisoned").pop();
        let c = match pooled {
            Some(c) => c,
            None => r.open()?,
        };
        Ok(ReadConn::Pooled(r, Some(c)))
    }
}

/// Maps a uniqueness violation to [`StoreError::Conflict`].
pub(crate) fn conflict(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, msg) = &e
        && f.code == rusqlite::ErrorCode::ConstraintViolation
    {
        let what = msg
            .as_deref()
            .and_then(|m| m.strip_prefix("UNIQUE constraint failed: "))
            .unwrap_or("unique constraint")
            .to_owned();
        return StoreError::Conflict(what);
    }
    StoreError::Db(e)
}

pub(crate) fn corrupt(table: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.into(),
    }
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

pub(crate) const KEY_COLS: &str = "id, tenant, name, role, hash, prefix, created_at, expires_at, revoked_at, max_sandboxes, webhook_url";

pub(crate) fn key_from_row(r: &Row<'_>) -> rusqlite::Result<(ApiKey, String)> {
    let role: String = r.get(3)?;
    Ok((
        ApiKey {
            id: r.get(0)?,
            tenant: r.get(1)?,
            name: r.get(2)?,
            role: Role::Viewer,
            hash: r.get(4)?,
            prefix: r.get(5)?,
            created_at: r.get(6)?,
            expires_at: r.get(7)?,
            revoked_at: r.get(8)?,
            max_sandboxes: r.get(9)?,
            webhook_url: r.get(10)?,
        },
        role,
    ))
}

pub(crate) fn finish_key((mut k, role): (ApiKey, String)) -> Result<ApiKey> {
    k.role =
        Role::parse(&role).ok_or_else(|| corrupt("api_keys", format!("unknown role {role:?}")))?;
    Ok(k)
}

const SANDBOX_COLS: &str = "id, tenant, key_id, template, state, stop_reason, spec, metadata, env_keys, created_at, ready_at, expires_at, stopped_at, warnings_sent, webhook_url";

struct RawSandbox {
    rec: SandboxRecord,
    state: String,
    stop_reason: Option<String>,
    spec: String,
    metadata: String,
    env_keys: String,
}

fn sandbox_from_row(r: &Row<'_>) -> rusqlite::Result<RawSandbox> {
    Ok(RawSandbox {
        rec: SandboxRecord {
            id: r.get(0)?,
            tenant: r.get(1)?,
            key_id: r.get(2)?,
            template: r.get(3)?,
            state: SandboxState::Starting,
            stop_reason: None,
            spec: SandboxSpec::default(),
            metadata: BTreeMap::new(),
            env_keys: Vec::new(),
            created_at: r.get(9)?,
            ready_at: r.get(10)?,
            expires_at: r.get(11)?,
            stopped_at: r.get(12)?,
            warnings_sent: r.get(13)?,
            webhook_url: r.get(14)?,
        },
        state: r.get(4)?,
        stop_reason: r.get(5)?,
        spec: r.get(6)?,
        metadata: r.get(7)?,
        env_keys: r.get(8)?,
    })
}

fn finish_sandbox(raw: RawSandbox) -> Result<SandboxRecord> {
    let mut rec = raw.rec;
    rec.state = SandboxState::parse(&raw.state)
        .ok_or_else(|| corrupt("sandboxes", format!("unknown state {:?}", raw.state)))?;
    rec.stop_reason = raw
        .stop_reason
        .map(|r| {
            StopReason::parse(&r)
                .ok_or_else(|| corrupt("sandboxes", format!("unknown stop reason {r:?}")))
        })
        .transpose()?;
    rec.spec = SandboxSpec::from_stored(&raw.spec).map_err(|e| corrupt("sandboxes", e))?;
    rec.metadata =
        serde_json::from_str(&raw.metadata).map_err(|e| corrupt("sandboxes", e.to_string()))?;
    rec.env_keys =
        serde_json::from_str(&raw.env_keys).map_err(|e| corrupt("sandboxes", e.to_string()))?;
    Ok(rec)
}

fn sandbox_params(s: &SandboxRecord) -> Vec<SqlValue> {
    vec![
        s.id.clone().into(),
        s.tenant.clone().into(),
        s.key_id.clone().into(),
        s.template.clone().into(),
        s.state.as_str().to_owned().into(),
        s.stop_reason
            .map_or(SqlValue::Null, |r| r.as_str().to_owned().into()),
        s.spec.to_stored().into(),
        to_json(&s.metadata).into(),
        to_json(&s.env_keys).into(),
        s.created_at.into(),
        opt_int(s.ready_at),
        opt_int(s.expires_at),
        opt_int(s.stopped_at),
        i64::from(s.warnings_sent).into(),
        opt_text(&s.webhook_url),
    ]
}

fn opt_text(v: &Option<String>) -> SqlValue {
    v.clone().map_or(SqlValue::Null, SqlValue::Text)
}

fn opt_int(v: Option<Millis>) -> SqlValue {
    v.map_or(SqlValue::Null, SqlValue::Integer)
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<(Event, String)> {
    Ok((
        Event {
            seq: r.get(0)?,
            at: r.get(1)?,
            tenant: r.get(2)?,
            sandbox_id: r.get(3)?,
            kind: r.get(4)?,
            data: serde_json::Value::Null,
        },
        r.get(5)?,
    ))
}

fn finish_event((mut e, data): (Event, String)) -> Result<Event> {
    e.data = serde_json::from_str(&data).map_err(|err| corrupt("events", err.to_string()))?;
    Ok(e)
}

fn audit_from_row(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        tenant: r.get(3)?,
        action: r.get(4)?,
        sandbox_id: r.get(5)?,
        outcome: r.get(6)?,
        detail: r.get(7)?,
    })
}

fn exec_from_row(r: &Row<'_>) -> rusqlite::Result<ExecRecord> {
    Ok(ExecRecord {
        id: r.get(0)?,
        sandbox_id: r.get(1)?,
        at: r.get(2)?,
        command: r.get(3)?,
        pid: r.get(4)?,
        exit_code: r.get(5)?,
        status: r.get(6)?,
        duration_ms: r.get(7)?,
    })
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn insert_tenant(&self, t: &Tenant) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3)",
                params![t.id, t.name, t.created_at],
            )
            .map_err(conflict)?;
        Ok(())
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, name, created_at FROM tenants WHERE id = ?1",
                [id],
                |r| {
                    Ok(Tenant {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        created_at: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let c = self.conn();
        let mut st =
            c.prepare("SELECT id, name, created_at FROM tenants ORDER BY created_at, id")?;
        let rows = st.query_map([], |r| {
            Ok(Tenant {
                id: r.get(0)?,
                name: r.get(1)?,
                created_at: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn insert_key(&self, k: &ApiKey) -> Result<()> {
        self.conn()
            .execute(
                &format!("INSERT INTO api_keys ({KEY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
                params![
                    k.id,
                    k.tenant,
                    k.name,
                    k.role.as_str(),
                    k.hash,
                    k.prefix,
                    k.created_at,
                    k.expires_at,
                    k.revoked_at,
                    k.max_sandboxes,
                    k.webhook_url
                ],
            )
            .map_err(conflict)?;
        Ok(())
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        let c = self.read()?;
        let row = c
            .prepare_cached(&format!("SELECT {KEY_COLS} FROM api_keys WHERE hash = ?1"))?
            .query_row([hash], key_from_row)
            .optional()?;
        row.map(finish_key).transpose()
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let row = self
            .read()?
            .query_row(
                &format!("SELECT {KEY_COLS} FROM api_keys WHERE id = ?1"),
                [id],
                key_from_row,
            )
            .optional()?;
        row.map(finish_key).transpose()
    }

    async fn list_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>> {
        let c = self.conn();
        let mut st = c.prepare(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE ?1 IS NULL OR tenant = ?1 ORDER BY created_at, id"
        ))?;
        let rows = st.query_map([tenant], key_from_row)?;
        rows.map(|r| finish_key(r?)).collect()
    }

    async fn revoke_key(&self, id: &str, at: Millis) -> Result<bool> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let n = tx.execute(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
            params![id, at],
        )?;
        tx.execute("DELETE FROM console_sessions WHERE key_id = ?1", [id])?;
        tx.commit()?;
        Ok(n > 0)
    }

    async fn upsert_template(&self, t: &TemplateRecord) -> Result<()> {
        self.conn().execute(
            "INSERT INTO templates (name, source, layers, config, created_at, created_by) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT(name) DO UPDATE SET source = ?2, layers = ?3, config = ?4, \
             created_at = ?5, created_by = ?6",
            rusqlite::params![
                t.name,
                t.source,
                serde_json::to_string(&t.layers).unwrap_or_default(),
                t.config.to_string(),
                t.created_at,
                t.created_by
            ],
        )?;
        Ok(())
    }

    async fn delete_template(&self, name: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute("DELETE FROM templates WHERE name = ?1", [name])?;
        Ok(n > 0)
    }

    async fn list_templates(&self) -> Result<Vec<TemplateRecord>> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT name, source, layers, config, created_at, created_by FROM templates ORDER BY name",
        )?;
        let rows = st.query_map([], |r| {
            let layers: String = r.get(2)?;
            let config: String = r.get(3)?;
            Ok(TemplateRecord {
                name: r.get(0)?,
                source: r.get(1)?,
                layers: serde_json::from_str(&layers).unwrap_or_default(),
                config: serde_json::from_str(&config).unwrap_or_default(),
                created_at: r.get(4)?,
                created_by: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    async fn count_keys(&self) -> Result<u64> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM api_keys", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn insert_sandbox(&self, s: &SandboxRecord) -> Result<()> {
        self.conn()
            .execute(
                &format!("INSERT INTO sandboxes ({SANDBOX_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"),
                params_from_iter(sandbox_params(s)),
            )
            .map_err(conflict)?;
        Ok(())
    }

    async fn update_sandbox(&self, s: &SandboxRecord) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE sandboxes SET tenant = ?2, key_id = ?3, template = ?4, state = ?5, stop_reason = ?6, spec = ?7, metadata = ?8, env_keys = ?9, created_at = ?10, ready_at = ?11, expires_at = ?12, stopped_at = ?13, warnings_sent = ?14, webhook_url = ?15 WHERE id = ?1",
            params_from_iter(sandbox_params(s)),
        )?;
        Ok(n > 0)
    }

    async fn get_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>> {
        // Prepared once per connection: this and the key lookup, the exec history and the
        // audit insert are on every exec's path.
        let c = self.read()?;
        let row = c
            .prepare_cached(&format!(
                "SELECT {SANDBOX_COLS} FROM sandboxes WHERE id = ?1"
            ))?
            .query_row([id], sandbox_from_row)
            .optional()?;
        row.map(finish_sandbox).transpose()
    }

    async fn list_sandboxes(&self, f: &SandboxFilter) -> Result<Vec<SandboxRecord>> {
        let mut sql = format!("SELECT {SANDBOX_COLS} FROM sandboxes WHERE 1 = 1");
        let mut args: Vec<SqlValue> = Vec::new();
        if let Some(t) = &f.tenant {
            args.push(t.clone().into());
            sql.push_str(&format!(" AND tenant = ?{}", args.len()));
        }
        if let Some(k) = &f.key_id {
            args.push(k.clone().into());
            sql.push_str(&format!(" AND key_id = ?{}", args.len()));
        }
        if !f.states.is_empty() {
            let mut marks = Vec::new();
            for s in &f.states {
                args.push(s.as_str().to_owned().into());
                marks.push(format!("?{}", args.len()));
            }
            sql.push_str(&format!(" AND state IN ({})", marks.join(", ")));
        }
        // Metadata keys are user input: they go in as bound JSON paths, never as SQL text.
        for (k, v) in &f.metadata {
            let path = format!("$.\"{}\"", k.replace('\\', "\\\\").replace('"', "\\\""));
            args.push(path.into());
            let p = args.len();
            args.push(v.clone().into());
            sql.push_str(&format!(
                " AND json_extract(metadata, ?{p}) = ?{}",
                args.len()
            ));
        }
        if let Some(after) = &f.after {
            args.push(after.clone().into());
            let a = args.len();
            sql.push_str(&format!(
                " AND (created_at, id) > (SELECT created_at, id FROM sandboxes WHERE id = ?{a})"
            ));
        }
        sql.push_str(" ORDER BY created_at, id");
        if let Some(l) = f.limit {
            sql.push_str(&format!(" LIMIT {l}"));
        }
        let c = self.read()?;
        let mut st = c.prepare(&sql)?;
        let rows = st.query_map(params_from_iter(args), sandbox_from_row)?;
        rows.map(|r| finish_sandbox(r?)).collect()
    }

    async fn count_active_by_key(&self, key_id: &str) -> Result<u64> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM sandboxes WHERE key_id = ?1 AND state IN ('starting', 'running')",
            [key_id],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn insert_event(&self, e: &Event) -> Result<Event> {
        let c = self.conn();
        c.execute(
            "INSERT INTO events (at, tenant, sandbox_id, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![e.at, e.tenant, e.sandbox_id, e.kind, to_json(&e.data)],
        )?;
        let mut out = e.clone();
        out.seq = c.last_insert_rowid();
        Ok(out)
    }

    async fn list_events(&self, f: &EventFilter) -> Result<Vec<Event>> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT seq, at, tenant, sandbox_id, kind, data FROM events
             WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR sandbox_id = ?2) AND seq > ?3
             ORDER BY seq LIMIT ?4",
        )?;
        let rows = st.query_map(
            params![
                f.tenant,
                f.sandbox_id,
                f.after_seq.unwrap_or(i64::MIN),
                f.limit.map_or(-1, i64::from)
            ],
            event_from_row,
        )?;
        rows.map(|r| finish_event(r?)).collect()
    }

    async fn insert_audit(&self, a: &AuditEntry) -> Result<i64> {
        let c = self.conn();
        c.prepare_cached(
            "INSERT INTO audit (at, actor, tenant, action, sandbox_id, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![a.at, a.actor, a.tenant, a.action, a.sandbox_id, a.outcome, a.detail])?;
        Ok(c.last_insert_rowid())
    }

    async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT id, at, actor, tenant, action, sandbox_id, outcome, detail FROM audit
             WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR sandbox_id = ?2)
               AND (?3 IS NULL OR actor = ?3) AND id < ?4
             ORDER BY id DESC LIMIT ?5",
        )?;
        let rows = st.query_map(
            params![
                f.tenant,
                f.sandbox_id,
                f.actor,
                f.before_id.unwrap_or(i64::MAX),
                f.limit.map_or(-1, i64::from)
            ],
            audit_from_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn insert_exec(&self, e: &ExecRecord) -> Result<i64> {
        let c = self.conn();
        c.prepare_cached(
            "INSERT INTO execs (sandbox_id, at, command, pid, exit_code, status, duration_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![e.sandbox_id, e.at, e.command, e.pid, e.exit_code, e.status, e.duration_ms])?;
        Ok(c.last_insert_rowid())
    }

    async fn insert_exec_audited(&self, e: &ExecRecord, a: &AuditEntry) -> Result<i64> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        tx.prepare_cached(
            "INSERT INTO execs (sandbox_id, at, command, pid, exit_code, status, duration_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![e.sandbox_id, e.at, e.command, e.pid, e.exit_code, e.status, e.duration_ms])?;
        let id = tx.last_insert_rowid();
        tx.prepare_cached(
            "INSERT INTO audit (at, actor, tenant, action, sandbox_id, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![a.at, a.actor, a.tenant, a.action, a.sandbox_id, a.outcome, a.detail])?;
        tx.commit()?;
        Ok(id)
    }

    async fn update_exec(&self, e: &ExecRecord) -> Result<()> {
        self.conn()
            .prepare_cached(
                "UPDATE execs SET pid = ?2, exit_code = ?3, status = ?4, duration_ms = ?5 WHERE id = ?1",
            )?
            .execute(params![e.id, e.pid, e.exit_code, e.status, e.duration_ms])?;
        Ok(())
    }

    async fn list_execs(&self, sandbox_id: &str, limit: u32) -> Result<Vec<ExecRecord>> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT * FROM (SELECT id, sandbox_id, at, command, pid, exit_code, status, duration_ms
             FROM execs WHERE sandbox_id = ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id",
        )?;
        let rows = st.query_map(params![sandbox_id, i64::from(limit)], exec_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // What every backend must do is the conformance suite's (crates/paddock/tests/store.rs);
    // these are SQLite's own: the file, its schema version, its migrations.

    fn tenant() -> Tenant {
        Tenant {
            id: "t".into(),
            name: "n".into(),
            created_at: 1,
        }
    }

    #[tokio::test]
    async fn file_store_persists_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sub/paddock.db");
        {
            let s = SqliteStore::open(&p).expect("open");
            s.insert_tenant(&tenant()).await.expect("tenant");
        }
        let s = SqliteStore::open(&p).expect("reopen");
        assert_eq!(s.list_tenants().await.expect("tenants").len(), 1);
        s.conn()
            .pragma_update(None, "user_version", 99)
            .expect("bump");
        drop(s);
        let err = SqliteStore::open(&p).expect_err("newer schema");
        assert!(err.to_string().contains("newer than this binary"), "{err}");
    }

    #[tokio::test]
    async fn reads_see_commits_and_do_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SqliteStore::open(&dir.path().join("paddock.db")).expect("open");
        s.insert_tenant(&tenant()).await.expect("tenant");
        s.conn()
            .execute(
                "INSERT INTO api_keys (id, tenant, name, role, hash, prefix, created_at)
                     VALUES ('key_1', 't', 'k', 'developer', 'h1', 'pdk_', 1)",
                [],
            )
            .expect("key");
        // A commit on the writer is visible to a pooled reader at once.
        let k = s.key_by_hash("h1").await.expect("read").expect("key");
        assert_eq!(k.id, "key_1");
        // With the writer held (a write in progress on another thread), reads still answer,
        // from a second reader when the first is in use.
        let writer = s.conn();
        let first = s.read().expect("reader");
        assert!(matches!(first, ReadConn::Pooled(..)));
        let second = s.read().expect("second reader");
        let n: i64 = second
            .query_row("SELECT count(*) FROM api_keys", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 1);
        drop((first, second));
        drop(writer);
        // Readers are read-only.
        let err = s
            .read()
            .expect("reader")
            .execute("DELETE FROM api_keys", [])
            .expect_err("a reader cannot write");
        assert!(err.to_string().contains("readonly"), "{err}");
        // A store in memory reads through its one connection.
        let m = SqliteStore::open_in_memory().expect("memory");
        assert!(matches!(m.read().expect("conn"), ReadConn::Shared(_)));
    }

    #[tokio::test]
    async fn user_keys_become_developers_and_admins_stay_admins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("paddock.db");
        {
            // A database as the binary before roles left it: schema 4, `user` and `admin` keys.
            let mut conn = Connection::open(&p).expect("open");
            for (i, sql) in MIGRATIONS[..4].iter().enumerate() {
                let tx = conn.transaction().expect("tx");
                tx.execute_batch(sql).expect("migrate");
                tx.pragma_update(None, "user_version", (i + 1) as i64)
                    .expect("version");
                tx.commit().expect("commit");
            }
            conn.execute_batch(
                "INSERT INTO tenants VALUES ('t', 'n', 1);
                 INSERT INTO api_keys (id, tenant, name, role, hash, prefix, created_at)
                     VALUES ('key_u', 't', 'u', 'user', 'hu', 'pdk_', 1),
                            ('key_a', 't', 'a', 'admin', 'ha', 'pdk_', 1);",
            )
            .expect("old keys");
        }
        let s = SqliteStore::open(&p).expect("migrate");
        let role = async |id: &str| s.get_key(id).await.expect("get").expect("key").role;
        assert_eq!(role("key_u").await, Role::Developer);
        assert_eq!(role("key_a").await, Role::Admin);
        let stored: String = s
            .conn()
            .query_row("SELECT role FROM api_keys WHERE id = 'key_u'", [], |r| {
                r.get(0)
            })
            .expect("row");
        assert_eq!(stored, "developer");
    }
}
