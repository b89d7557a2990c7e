//! The store conformance suite: one set of cases over every method of the store traits,
//! run against both backends, SQLite (in memory) and PostgreSQL (a fresh database on the
//! test binary's own server, `support/pg.rs`). A case is a function of `store/`; the
//! `suite!` macro makes one test per case and backend (`sqlite::NAME`, `postgres::NAME`).
//! At the end, PostgreSQL-only tests: migrations under concurrent start, a newer schema
//! refused, and an outage seen as `StoreError::Unavailable` and recovered from.
//!
//! A store method added to one backend gets its case here, in the `suite!` lists, so it
//! runs on both (`docs/database.md`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use paddock_store::{PgStore, SqliteStore, Store, StoreError};

#[path = "support/mod.rs"]
mod support;

#[path = "store/mod.rs"]
mod cases;

use support::pg;

/// A store under test and what keeps its database alive.
pub struct Backend {
    pub store: Arc<dyn Store>,
    _db: Option<pg::PgDb>,
}

async fn sqlite() -> Backend {
    Backend {
        store: Arc::new(SqliteStore::open_in_memory().expect("sqlite in memory")),
        _db: None,
    }
}

async fn postgres() -> Backend {
    let db = tokio::task::spawn_blocking(pg::shared_db)
        .await
        .expect("creating a database");
    let store = PgStore::connect(&db.url).await.expect("connecting");
    Backend {
        store: Arc::new(store),
        _db: Some(db),
    }
}

macro_rules! suite {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let b = super::$backend().await;
                    super::cases::$case(b.store.clone()).await;
                }
            )*
        }
    };
}

macro_rules! both {
    ($($case:ident),* $(,)?) => {
        suite!(sqlite: $($case),*);
        suite!(postgres: $($case),*);
    };
}

both!(
    tenants_insert_get_list,
    keys_conflicts_lookup_revoke_count,
    keys_keep_every_role_and_field,
    templates_upsert_list_delete,
    sandboxes_round_trip_filter_and_page,
    sandboxes_missing_rows_and_updates,
    sandboxes_concurrent_inserts_of_one_id,
    events_sequence_filters_limits,
    events_concurrent_inserts_keep_order,
    audit_newest_first_filters_paging,
    execs_last_n_in_order,
    execs_with_their_audit_entry_in_one_write,
    secrets_versions_capped_and_deleted,
    secrets_list_page_count_reseal,
    nodes_register_heartbeat_drain_dead,
    nodes_death_seen_once_under_concurrency,
    settings_keep_the_first_value,
    usage_adds_up_filters_orders,
    usage_concurrent_rounds_add_up,
    volumes_per_tenant_unique_and_deleted,
    alerts_one_open_firing_per_rule_and_subject,
    alerts_concurrent_openers_open_once,
    budget_crossings_are_recorded_once,
    leases_acquire_renew_expire_release,
    leases_one_winner_under_concurrency,
    rollouts_round_trip_list_and_interrupt,
    sessions_live_expire_end_and_die_with_their_key,
    sessions_per_key_are_capped_oldest_first,
);

/// How many PostgreSQL migrations this build has (the files of `migrations-pg/`).
fn pg_migrations() -> i64 {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../paddock-store/migrations-pg");
    std::fs::read_dir(dir)
        .expect("migrations-pg")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".sql"))
        })
        .count() as i64
}

/// Several processes starting on an empty database migrate it once (advisory lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_first_starts_migrate_once() {
    let db = tokio::task::spawn_blocking(pg::shared_db).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = db.url.clone();
        tasks.push(tokio::spawn(async move { PgStore::connect(&url).await }));
    }
    for t in tasks {
        let s = t
            .await
            .unwrap()
            .expect("connect during a concurrent migration");
        assert_eq!(s.schema_version().await.unwrap(), pg_migrations());
    }
}

/// A database migrated by a newer binary is refused with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_newer_schema() {
    let db = tokio::task::spawn_blocking(pg::shared_db).await.unwrap();
    PgStore::connect(&db.url).await.unwrap();
    let sql = "UPDATE paddock_schema SET version = 99";
    let place = pg::shared().place.clone();
    let name = db.name.clone();
    tokio::task::spawn_blocking(move || place.psql_in(&name, sql))
        .await
        .unwrap()
        .unwrap();
    let err = PgStore::connect(&db.url).await.expect_err("newer schema");
    assert!(err.to_string().contains("newer than this binary"), "{err}");
}

/// A bad URL is a clear error, not a panic or a hang.
#[tokio::test]
async fn postgres_bad_urls() {
    let err = PgStore::connect("postgres://u:secret@127.0.0.1:notaport/db")
        .await
        .expect_err("bad port");
    assert!(!err.to_string().contains("secret"), "{err}");
    let started = Instant::now();
    // Nothing listens on port 1: refused at once, and said so.
    let err = PgStore::connect("postgres://u@127.0.0.1:1/db")
        .await
        .expect_err("nothing listens");
    assert!(err.to_string().contains("unavailable"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// PostgreSQL stopped underneath an open store: every call fails fast with
/// `Unavailable` (never hangs past the bounded timeouts); started again, the same store
/// works without reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_unavailable_and_recovers() {
    let server = Arc::new(
        tokio::task::spawn_blocking(pg::PgServer::start)
            .await
            .unwrap(),
    );
    let url = server.url("postgres");
    let store = PgStore::connect(&url).await.unwrap();
    assert_eq!(store.count_keys().await.unwrap(), 0);
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.stop_fast())
        .await
        .unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let err = store.count_keys().await.expect_err("store down");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            started.elapsed() < paddock_store::CONNECT_TIMEOUT + Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.start_again())
        .await
        .unwrap();
    let started = Instant::now();
    support::eventually(Duration::from_secs(20), "the store answers again", || {
        let store = &store;
        async move { store.count_keys().await }
    })
    .await;
    eprintln!(
        "store back {} ms after PostgreSQL started",
        started.elapsed().as_millis()
    );
}

/// A spec as servers before the spec's version field wrote it (copied from a real data
/// directory), and an older server's with fewer fields.
const OLD_SPECS: [&str; 2] = [
    r#"{"auto_pause_mode":null,"auto_resume":false,"cpu_millis":1000,"disk_bytes":2147483648,"isolation":"native","memory_bytes":536870912,"network":{"allow":[],"mode":"none"},"node":null,"on_timeout":"kill","pids":512,"ports_public":false,"secrets":{},"timeout_ms":300000,"tmp_bytes":268435456,"user":"user","volumes":[]}"#,
    r#"{"cpu_millis":1000,"disk_bytes":2147483648,"memory_bytes":536870912,"network":{"allow":[],"mode":"all"},"pids":512,"ports_public":true,"timeout_ms":120000,"tmp_bytes":268435456,"user":"user"}"#,
];

/// What a store must make of `OLD_SPECS[i]` after the row was written with it.
async fn check_old_specs_read(store: &dyn Store) {
    let a = store.get_sandbox("old0").await.unwrap().expect("old0");
    assert_eq!(a.spec.version, 1);
    assert_eq!(a.spec.timeout_ms, Some(300_000));
    assert_eq!(a.spec.memory_bytes, Some(536_870_912));
    assert_eq!(a.spec.network(), paddock_core::NetworkPolicy::none());
    assert_eq!(a.spec.isolation, Some(paddock_core::Isolation::Native));
    assert_eq!(a.stop_reason, Some(paddock_store::StopReason::Expired));
    let b = store.get_sandbox("old1").await.unwrap().expect("old1");
    assert!(b.spec.ports_public);
    assert_eq!(b.spec.network(), paddock_core::NetworkPolicy::all());
    assert_eq!(b.spec.user.as_deref(), Some("user"));
    // Written back, it carries the version and reads the same.
    store.update_sandbox(&b).await.unwrap();
    assert_eq!(store.get_sandbox("old1").await.unwrap(), Some(b));
}

/// The SQL that puts `OLD_SPECS` into rows `old0` and `old1` (placeholders differ per
/// backend only in quoting, so the literals are inlined).
fn old_spec_updates() -> Vec<String> {
    OLD_SPECS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "UPDATE sandboxes SET spec = '{s}', stop_reason = 'expired', state = 'stopped' WHERE id = 'old{i}'"
            )
        })
        .collect()
}

/// Rows written before the spec was typed and versioned still load (SQLite).
#[tokio::test]
async fn sqlite_reads_specs_stored_before_versioning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paddock.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        for i in 0..2 {
            store
                .insert_sandbox(&cases::sandbox(&format!("old{i}"), "t", i, &[]))
                .await
                .unwrap();
        }
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    for sql in old_spec_updates() {
        assert_eq!(conn.execute(&sql, []).unwrap(), 1, "{sql}");
    }
    drop(conn);
    let store = SqliteStore::open(&path).unwrap();
    check_old_specs_read(&store).await;
}

/// Rows written before the spec was typed and versioned still load (PostgreSQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reads_specs_stored_before_versioning() {
    let db = tokio::task::spawn_blocking(pg::shared_db).await.unwrap();
    let store = PgStore::connect(&db.url).await.unwrap();
    for i in 0..2 {
        store
            .insert_sandbox(&cases::sandbox(&format!("old{i}"), "t", i, &[]))
            .await
            .unwrap();
    }
    let place = pg::shared().place.clone();
    let name = db.name.clone();
    let sql = old_spec_updates().join("; ");
    tokio::task::spawn_blocking(move || place.psql_in(&name, &sql))
        .await
        .unwrap()
        .unwrap();
    check_old_specs_read(&store).await;
}
