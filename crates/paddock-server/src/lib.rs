//! Paddock's API server, the HTTP edge: REST `/v1`, the E2B API, auth, the port proxy, the
//! console and the fleet control plane. The domain (state, lifecycle, pools, secrets, ...) is
//! the crate `paddock-service`, which the edge's modules name directly (`paddock_service::state::AppState`, ...).
//!
//! [`serve`] opens the store and the runtime, reconciles them ([`lifecycle::reconcile`]),
//! creates the first admin key on a fresh data directory, starts the lifecycle task and
//! serves HTTP until the shutdown future resolves.
//!
//! **Invariants:**
//! - Every route except `/v1/health` and `/v1/openapi.json` authenticates a key
//!   ([`auth::Caller`]); a sandbox of another tenant is answered exactly like a missing one.
//! - A sandbox row is written before the runtime creates anything, so a crash at any point
//!   is found by reconciliation.
//! - Errors reach clients only as [`error::ApiError`]: a stable code and a message without
//!   host paths or internal detail.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use paddock_runtime::{Runtime, RuntimeConfig};
use paddock_service::state::AppState;
use paddock_service::{alerts, lifecycle, pools, rollouts, templates, usage};
use paddock_store::{Role, SqliteStore, Store};

pub mod api;
pub mod app;
pub mod auth;
pub mod code;
mod conn;
pub mod console;
pub mod dns;
pub mod e2b;
pub mod error;
pub mod fleet;
pub mod openapi;
pub mod proxy;
pub mod request_id;
pub mod roles;
pub mod session;
pub mod splice;
pub mod trace;
pub mod transfer;
pub mod wire;

pub use paddock_service::config::{ConfigError, ServerConfig};

/// What to do with running sandboxes when the server stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownPolicy {
    /// Leave them running; the next start adopts them and enforces their deadlines.
    Keep,
    /// Destroy them (reason `shutdown`).
    Destroy,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("opening the store: {0}")]
    Store(#[from] paddock_store::StoreError),
    #[error("opening the runtime: {0}")]
    Runtime(#[from] paddock_runtime::RuntimeError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("DNS responder (--dns-listen) on {addr}: {source}")]
    DnsListen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("reconciling: {0}")]
    Reconcile(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("reading or creating the server secret: {0}")]
    Secret(std::io::Error),
    #[error("creating the first admin key: {0}")]
    Bootstrap(String),
    #[error("fleet: {0}")]
    Fleet(String),
}

/// Facts the caller learns once the server listens.
#[derive(Debug)]
pub struct Ready {
    pub addr: SocketAddr,
    /// The admin key made on a fresh data directory (shown once; only its hash is kept).
    pub admin_key: Option<String>,
    /// The same key in the form E2B SDKs accept (`e2b_<hex>`).
    pub admin_key_e2b: Option<String>,
}

/// Runs the server until `shutdown` resolves.
pub async fn serve(
    cfg: ServerConfig,
    policy: ShutdownPolicy,
    allow_private_webhooks: bool,
    on_ready: impl FnOnce(Ready),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let state = open(cfg, allow_private_webhooks).await?;
    let admin_key = first_admin_key(&state).await?;
    reconcile(&state).await?;
    start_duties(&state).await?;

    let tls = state
        .cfg
        .tls
        .as_ref()
        .map(|(c, k)| conn::tls_acceptor(c, k))
        .transpose()?;
    let addr = state.cfg.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Listen { addr, source })?;
    if state.cfg.node.is_some() {
        fleet::node::register(&state, local)
            .await
            .map_err(ServeError::Fleet)?;
        tokio::spawn(fleet::node::run(state.clone(), local));
    }
    on_ready(Ready {
        addr: local,
        admin_key_e2b: admin_key.as_deref().and_then(auth::e2b_form),
        admin_key,
    });
    let conns = conn::Connections::new(&state, app::router(state.clone()), tls);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => conns.spawn(tcp, peer, graceful.watcher()),
                Err(e) => {
                    // Out of fds and similar: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    shut_down(&state, policy, graceful).await;
    Ok(())
}

/// The store (SQLite in the data directory, or the fleet's database), the runtime on the
/// data directory, and the state the routes share.
async fn open(
    cfg: ServerConfig,
    allow_private_webhooks: bool,
) -> Result<Arc<AppState>, ServeError> {
    cfg.validate()?;
    paddock_runtime::datadir::create_private(&cfg.data_dir)?;
    let store: Arc<dyn Store> = match &cfg.database_url {
        Some(url) => fleet::open_store(url).await.map_err(ServeError::Fleet)?,
        None => Arc::new(SqliteStore::open(&cfg.data_dir.join("paddock.db"))?),
    };
    let mut rcfg = RuntimeConfig::new(&cfg.data_dir);
    rcfg.agent_bin = cfg.agent_bin.clone();
    rcfg.dns_upstream = cfg.dns_upstream;
    rcfg.net_slots = cfg.net_slots;
    let runtime = tokio::task::spawn_blocking(move || Runtime::open(rcfg))
        .await
        .map_err(|e| ServeError::Reconcile(format!("runtime task: {e}")))??;
    Ok(Arc::new(
        AppState::new(cfg, store, runtime, allow_private_webhooks).map_err(ServeError::Secret)?,
    ))
}

/// The admin key made on a fresh store (shown once). A node never makes keys: the fleet's
/// first control plane does. On a shared database (PostgreSQL), of several processes
/// starting together exactly one makes it.
async fn first_admin_key(state: &Arc<AppState>) -> Result<Option<String>, ServeError> {
    if state.cfg.node.is_some() {
        return Ok(None);
    }
    if state.cfg.database_url.is_some() {
        let key = fleet::control::bootstrap_admin(state.store.as_ref()).await?;
        if key.is_some() {
            state.audit(None, "key.bootstrap", None, "ok", None).await;
        }
        return Ok(key);
    }
    if state.store.count_keys().await? != 0 {
        return Ok(None);
    }
    let (_, secret) = api::admin::new_key(state, "admin", Role::Admin, None, None, None, None)
        .await
        .map_err(|e| ServeError::Bootstrap(e.to_string()))?;
    state.audit(None, "key.bootstrap", None, "ok", None).await;
    Ok(Some(secret))
}

/// Makes the store and the host agree: sandboxes, templates, rollouts a stop interrupted,
/// and a node's view of its own sandboxes.
async fn reconcile(state: &Arc<AppState>) -> Result<(), ServeError> {
    lifecycle::reconcile(state)
        .await
        .map_err(|e| ServeError::Reconcile(e.to_string()))?;
    templates::catalogue::reconcile(state)
        .await
        .map_err(|e| ServeError::Reconcile(e.to_string()))?;
    rollouts::interrupt_stale(state)
        .await
        .map_err(|e| ServeError::Reconcile(e.to_string()))?;
    if state.cfg.node.is_some() {
        fleet::node::resync(state).await;
    }
    Ok(())
}

/// The background duties: deadlines, usage sampling, alerts, pool refills, and the DNS
/// responder when `--dns-listen` asks for it.
async fn start_duties(state: &Arc<AppState>) -> Result<(), ServeError> {
    tokio::spawn(lifecycle::run(state.clone()));
    tokio::spawn(usage::run(state.clone()));
    tokio::spawn(alerts::run(state.clone()));
    tokio::spawn(pools::refill::run(state.clone()));
    if let Some(addr) = state.cfg.dns_listen {
        let sock = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|source| ServeError::DnsListen { addr, source })?;
        let answer = state.cfg.dns_answer_ip();
        eprintln!(
            "paddock: answering DNS for *.{} with {answer} on {addr} (udp)",
            state.cfg.domain
        );
        tokio::spawn(dns::serve(sock, state.cfg.domain.clone(), answer));
    }
    Ok(())
}

/// After the listener closed: open requests get 10 s, pooled sandboxes go, running ones
/// go too under [`ShutdownPolicy::Destroy`] (paused ones stay), then the runtime's instance.
async fn shut_down(state: &Arc<AppState>, policy: ShutdownPolicy, graceful: GracefulShutdown) {
    tracing::info!("shutting down: waiting up to 10 s for open requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("open requests did not finish in 10 s");
        }
    }
    // Pooled sandboxes belong to nobody: they go whatever the policy.
    state.pools.shutdown(state).await;
    if policy == ShutdownPolicy::Destroy {
        // Paused sandboxes stay paused: they outlive the server like their records do.
        for s in state.runtime.list() {
            if state.runtime.paused_mode(s.id.as_str()).is_some() {
                continue;
            }
            if let Err(e) =
                lifecycle::stop(state, s.id.as_str(), paddock_store::StopReason::Shutdown).await
            {
                tracing::error!(sandbox = %s.id, "destroying at shutdown: {e}");
            }
        }
    }
    // With no sandbox left, the instance's loop mount and cgroup directories go too.
    let rt = state.runtime.clone();
    match tokio::task::spawn_blocking(move || rt.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("taking the instance down: {e}"),
        Err(e) => tracing::warn!("taking the instance down: {e}"),
    }
}
