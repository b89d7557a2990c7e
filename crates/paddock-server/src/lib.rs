//! Paddock's API server, the HTTP edge: REST `/v1`, the E2B API, auth, the port proxy, the
//! console and the fleet control plane. The domain (state, lifecycle, pools, secrets, ...) is
//! the crate `paddock-service`, whose modules are re-exported here under their old names.
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

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use paddock_runtime::{Runtime, RuntimeConfig};
use paddock_store::{Role, SqliteStore, Store};
use tower::ServiceExt as _;

pub mod api;
pub mod app;
pub mod auth;
pub mod code;
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

// The domain services, under the names the edge's modules have always used.
pub use paddock_service::{
    alerts, config, cost, event_kind, hostload, hotpath, isolation, lifecycle, metrics, pausing,
    pools, rollouts, sandbox_spec, secrets, snapshots, startcmd, state, templates, usage, volumes,
    webhooks,
};

pub use config::{ConfigError, ServerConfig};

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
    let state = Arc::new(
        state::AppState::new(cfg, store, runtime, allow_private_webhooks)
            .map_err(ServeError::Secret)?,
    );
    // A node never makes keys: the fleet's first control plane does. On a shared database
    // (PostgreSQL), of several processes starting together exactly one makes it.
    let admin_key = if state.cfg.node.is_some() {
        None
    } else if state.cfg.database_url.is_some() {
        let key = fleet::control::bootstrap_admin(state.store.as_ref()).await?;
        if key.is_some() {
            state.audit(None, "key.bootstrap", None, "ok", None).await;
        }
        key
    } else if state.store.count_keys().await? == 0 {
        let (_, secret) = api::admin::new_key(&state, "admin", Role::Admin, None, None, None, None)
            .await
            .map_err(|e| ServeError::Bootstrap(e.to_string()))?;
        state.audit(None, "key.bootstrap", None, "ok", None).await;
        Some(secret)
    } else {
        None
    };
    lifecycle::reconcile(&state)
        .await
        .map_err(|e| ServeError::Reconcile(e.to_string()))?;
    templates::catalogue::reconcile(&state)
        .await
        .map_err(|e| ServeError::Reconcile(e.to_string()))?;
    rollouts::interrupt_stale(&state)
        .await
        .map_err(|e| ServeError::Reconcile(e.to_string()))?;
    if state.cfg.node.is_some() {
        fleet::node::resync(&state).await;
    }
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

    let tls = state
        .cfg
        .tls
        .as_ref()
        .map(|(c, k)| tls_acceptor(c, k))
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
    let app = app::router(state.clone());
    let graceful = GracefulShutdown::new();
    // HTTP/1.1, and HTTP/2 with prior knowledge (h2c).
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper's header-read timeout is silently off (slowloris).
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.cfg.header_timeout)
        .keep_alive(true);
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(20));
    let body_idle = state.cfg.body_idle_timeout;
    let node_token = state.cfg.node.as_ref().map(|n| n.token.clone());
    let domain = state.cfg.domain.clone();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of fds and similar: back off instead of spinning.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let app = app.clone();
                let domain = domain.clone();
                let tls = tls.clone();
                let http = http.clone();
                let graceful_watch = graceful.watcher();
                let header_timeout = state.cfg.header_timeout;
                let node_token = node_token.clone();
                let node_state = state.clone();
                tokio::spawn(async move {
                // The TLS handshake happens here, off the accept loop, under the same time
                // limit as a request head.
                // A plain connection can splice pass-through response bodies (`splice`).
                let mut splice_slot = None;
                let io: Box<dyn Io> = match tls {
                    None => {
                        let (io, slot) = splice::SpliceIo::new(tcp);
                        splice_slot = Some(slot);
                        Box::new(io)
                    }
                    Some(acc) => match tokio::time::timeout(header_timeout, acc.accept(tcp)).await {
                        Ok(Ok(s)) => Box::new(s),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "TLS handshake: {e}");
                            return;
                        }
                        Err(_) => return,
                    },
                };
                // Watches request framing for Content-Length with Transfer-Encoding (refused).
                let (tcp, framing) = proxy::framing::Watched::new(io);
                let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    // A node answers control planes only: the fleet token, else 401.
                    let mut peer = peer;
                    if let Some(t) = &node_token {
                        if !t.matches(req.headers().get(fleet::TOKEN_HEADER)) {
                            return futures::future::Either::Left(futures::future::Either::Left(
                                std::future::ready(Ok(fleet::unauthorized_node())),
                            ));
                        }
                        req.headers_mut().remove(fleet::TOKEN_HEADER);
                        // A peer node's request (template fetch, `fleet::layers`).
                        if req.headers().contains_key(fleet::layers::INTERNAL_HEADER)
                            && req.uri().path().starts_with(fleet::layers::INTERNAL_PREFIX)
                        {
                            let st = node_state.clone();
                            return futures::future::Either::Left(futures::future::Either::Right(
                                Box::pin(async move {
                                    Ok(fleet::layers::serve_internal(st, req.map(axum::body::Body::new)).await)
                                }),
                            ));
                        }
                        if let Some(p) = req
                            .headers_mut()
                            .remove(fleet::forward::PEER_HEADER)
                            .and_then(|v| v.to_str().ok()?.parse().ok())
                        {
                            peer = p;
                        }
                    }
                    // HTTP/2 names the host in `:authority`, not in a Host header: the handlers
                    // get the Host header HTTP/1.1 would have had (RFC 9113 section 8.3.1), so
                    // URLs and the SDKs' domain come out the same on both.
                    if !req.headers().contains_key(hyper::header::HOST)
                        && let Some(a) = req.uri().authority().and_then(|a| hyper::header::HeaderValue::from_str(a.as_str()).ok())
                    {
                        req.headers_mut().insert(hyper::header::HOST, a);
                    }
                    // envd's stdin streams may pause for long; the proxy's ports do not.
                    let idle = if e2b::target::target(req.headers(), req.uri(), &domain)
                        .is_some_and(|t| t.port == e2b::ENVD_PORT)
                    {
                        e2b::envd::BODY_IDLE_TIMEOUT
                    } else {
                        body_idle
                    };
                    let mut req = req.map(|b| {
                        axum::body::Body::new(tower_http::timeout::TimeoutBody::new(idle, b))
                    });
                    // For the proxy's X-Forwarded-For.
                    req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                    req.extensions_mut().insert(framing.clone());
                    if let Some(slot) = &splice_slot
                        && req.version() <= hyper::Version::HTTP_11
                    {
                        req.extensions_mut().insert(slot.clone());
                    }
                    futures::future::Either::Right(app.clone().oneshot(req))
                });
                let conn = http.serve_connection_with_upgrades(TokioIo::new(tcp), svc);
                let _ = graceful_watch.watch(conn.into_owned()).await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: waiting up to 10 s for open requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("open requests did not finish in 10 s");
        }
    }
    // Pooled sandboxes belong to nobody: they go whatever the policy.
    state.pools.shutdown(&state).await;
    if policy == ShutdownPolicy::Destroy {
        // Paused sandboxes stay paused: they outlive the server like their records do.
        for s in state.runtime.list() {
            if state.runtime.paused_mode(s.id.as_str()).is_some() {
                continue;
            }
            if let Err(e) =
                lifecycle::stop(&state, s.id.as_str(), paddock_store::StopReason::Shutdown).await
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
    Ok(())
}

/// A connection the server speaks HTTP on: plain TCP or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A TLS acceptor for the PEM certificate chain and key, offering HTTP/2 and HTTP/1.1.
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, ServeError> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            ServeError::Tls(format!("reading certificates from {}: {e}", cert.display()))
        })?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "no certificate in {}",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        ServeError::Tls(format!(
            "reading the private key from {}: {e}",
            key.display()
        ))
    })?;
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(format!("certificate and key do not fit: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg)))
}
