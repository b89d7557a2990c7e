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
