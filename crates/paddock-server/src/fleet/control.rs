//! `paddock control`: the API of a fleet without a runtime of its own.
//!
//! It answers `/v1/health` and `/v1/nodes` itself; a create goes to the node placement
//! picks; a request naming a sandbox (path, `E2b-Sandbox-Id`, or Host `{port}-{id}.{domain}`)
//! goes to the node holding it; everything else (lists, keys, events, templates) to any
//! ready node, which answers from the shared store. Users are authenticated by the node
//! (keys and console sessions live in the shared store); the control plane authenticates
//! only what it answers itself (by key or session cookie). The console's files are served
//! here. It keeps no state a restart loses: any number of replicas serve the same fleet.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use paddock_store::{
    Event, NodeRecord, NodeState, Role, SandboxFilter, SandboxState, Store, now_ms,
};
use serde::Serialize;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use utoipa::ToSchema;

use super::forward::Forwarder;
use super::placement::{self, Pending, Want};
use crate::auth::{authenticate_in, presented_key};
use crate::error::{ApiError, ApiResult};
use crate::wire::{json_response, rfc3339, typed_response};
use paddock_service::auth::keys::Caller;
use paddock_service::event_kind::EventKind;

/// `paddock control` settings.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub listen: SocketAddr,
    pub token: super::FleetToken,
    /// Domain of Host-routed data-plane requests (`{port}-{id}.{domain}`), as on the nodes.
    pub domain: String,
    /// Largest create body read for placement.
    pub max_json_body: usize,
    pub header_timeout: Duration,
    pub webhook_secret: Option<String>,
    pub allow_private_webhooks: bool,
}

/// The control plane's shared state.
#[derive(Debug)]
pub struct Control {
    pub cfg: ControlConfig,
    pub store: Arc<dyn Store>,
    forwarder: Forwarder,
    /// Placements made since each node's last heartbeat (by node id).
    pending: Mutex<HashMap<String, Pending>>,
    next: AtomicUsize,
    /// Which node holds a sandbox (it never moves), so forwarding reads no record.
    holders: Mutex<HashMap<String, String>>,
    /// The node list as read at most [`NODES_TTL`] ago (forwarding only; placement reads
    /// the store).
    nodes_cache: Mutex<Option<(std::time::Instant, Arc<Vec<NodeRecord>>)>>,
    webhooks: paddock_service::webhooks::Webhooks,
    /// This control plane's name in leases (random per process).
    lease_holder: String,
    /// Whether it held [`DEAD_NODES_LEASE`] at its last attempt.
    holds_dead_nodes: std::sync::atomic::AtomicBool,
}

/// The lease under which one control plane of the fleet watches heartbeats and marks
/// nodes dead (`docs/fleet.md`).
pub const DEAD_NODES_LEASE: &str = "dead-nodes";
/// How long a lease lasts unless renewed; its holder renews it every second, so a dead
/// holder's duty is taken over within `LEASE_TTL` plus a second.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// How long forwarding uses a node list before reading it again.
pub const NODES_TTL: Duration = Duration::from_millis(500);
/// Most sandbox-to-node entries remembered (the map starts over past it).
pub const MAX_HOLDERS: usize = 100_000;

impl Control {
    /// The node list, read from the store at most [`NODES_TTL`] ago.
    async fn nodes_cached(&self) -> Result<Arc<Vec<NodeRecord>>, paddock_store::StoreError> {
        {
            let c = self.nodes_cache.lock().expect("nodes cache poisoned");
            if let Some((at, nodes)) = c.as_ref()
                && at.elapsed() < NODES_TTL
            {
                return Ok(nodes.clone());
            }
        }
        // Not held across the store call (two callers may both read; the later one wins).
        let nodes = Arc::new(self.store.list_nodes().await?);
        *self.nodes_cache.lock().expect("nodes cache poisoned") =
            Some((std::time::Instant::now(), nodes.clone()));
        Ok(nodes)
    }

    /// The node holding sandbox `id`, remembered after the first look.
    async fn holder(&self, id: &str) -> Result<Option<String>, paddock_store::StoreError> {
        if let Some(n) = self.holders.lock().expect("holders poisoned").get(id) {
            return Ok(Some(n.clone()));
        }
        let Some(r) = self.store.get_sandbox(id).await? else {
            return Ok(None);
        };
        let Some(node) = super::node_of(&r).map(str::to_owned) else {
            return Ok(None);
        };
        let mut h = self.holders.lock().expect("holders poisoned");
        if h.len() >= MAX_HOLDERS {
            h.clear();
        }
        h.insert(id.to_owned(), node.clone());
        Ok(Some(node))
    }
}

/// Facts the caller learns once the control plane listens.
#[derive(Debug)]
pub struct ControlReady {
    pub addr: SocketAddr,
    pub admin_key: Option<String>,
    pub admin_key_e2b: Option<String>,
}

/// Runs a control plane until `shutdown` resolves.
pub async fn serve_control(
    cfg: ControlConfig,
    store: Arc<dyn Store>,
    on_ready: impl FnOnce(ControlReady),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), crate::ServeError> {
    cfg.token
        .check_store(store.as_ref())
        .await
        .map_err(crate::ServeError::Fleet)?;
    let admin_key = bootstrap_admin(store.as_ref()).await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| crate::ServeError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| crate::ServeError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let ctl = Arc::new(Control {
        forwarder: Forwarder::new(&cfg.token),
        webhooks: paddock_service::webhooks::Webhooks::start(
            cfg.allow_private_webhooks,
            cfg.webhook_secret.clone(),
        ),
        cfg,
        store,
        pending: Mutex::new(HashMap::new()),
        next: AtomicUsize::new(0),
        holders: Mutex::new(HashMap::new()),
        nodes_cache: Mutex::new(None),
        lease_holder: crate::auth::random_id("ctl"),
        holds_dead_nodes: std::sync::atomic::AtomicBool::new(false),
    });
    tokio::spawn(watch_heartbeats(ctl.clone()));
    on_ready(ControlReady {
        addr,
        admin_key_e2b: admin_key.as_deref().and_then(crate::auth::e2b_form),
        admin_key,
    });
    let app = router(ctl.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(ctl.cfg.header_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let app = app.clone();
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut req = req.map(Body::new);
                    req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                    app.clone().oneshot(req)
                });
                let conn = http.serve_connection_with_upgrades(TokioIo::new(tcp), svc);
                let watched = graceful.watch(conn.into_owned());
                tokio::spawn(async move { let _ = watched.await; });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => {}
    }
    Ok(())
}

/// The first admin key of an empty fleet: made by exactly one control plane (the one whose
/// claim is stored first).
pub(crate) async fn bootstrap_admin(
    store: &dyn Store,
) -> Result<Option<String>, crate::ServeError> {
    let err = |e: String| crate::ServeError::Bootstrap(e);
    if store.count_keys().await.map_err(|e| err(e.to_string()))? > 0 {
        return Ok(None);
    }
    let claim = crate::auth::random_id("ctl");
    let won = store
        .fleet_setting_init("bootstrap", &claim)
        .await
        .map_err(|e| err(e.to_string()))?;
    if won != claim {
        return Ok(None);
    }
    let (_, secret) =
        crate::auth::keys::new_key_in(store, "admin", Role::Admin, None, None, None, None)
            .await
            .map_err(|e| err(e.to_string()))?;
    Ok(Some(secret))
}

fn router(ctl: Arc<Control>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{id}", get(get_node))
        .route("/v1/nodes/{id}/drain", post(drain))
        .route("/v1/nodes/{id}/undrain", post(undrain))
        .fallback(forward)
        .with_state(ctl)
}

async fn health(State(ctl): State<Arc<Control>>) -> Response {
    let leases: Vec<&str> = if ctl.holds_dead_nodes.load(Ordering::Relaxed) {
        vec![DEAD_NODES_LEASE]
    } else {
        vec![]
    };
    json_response(
        StatusCode::OK,
        json!({"status": "ok", "role": "control", "leases": leases}),
    )
}

/// The key of a request answered here, with the role its route needs (`crate::roles`).
/// A key in the headers wins; without one, the console's session cookie (shared through
/// the store, CSRF-checked as on a node; the control plane speaks plain HTTP, so its own
/// origin is `http://<Host>`).
async fn admin(ctl: &Control, req: &Parts) -> ApiResult<Caller> {
    let store = ctl.store.as_ref();
    let c = match (presented_key(req), crate::session::cookie(&req.headers)) {
        (None, Some(id)) => {
            let own = crate::session::origin_is_host(&req.headers, false);
            crate::session::caller_in(store, id, &req.method, &req.headers, own).await?
        }
        (key, _) => authenticate_in(store, key).await?,
    };
    crate::roles::admit_route(&req.extensions, &req.method, &c)?;
    Ok(c)
}

/// A node's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeStateWire {
    /// Takes new sandboxes.
    Ready,
    /// Keeps its sandboxes running, takes no new ones.
    Draining,
    /// Missed its heartbeats; its sandboxes are `lost`.
    Dead,
}

impl From<NodeState> for NodeStateWire {
    fn from(s: NodeState) -> NodeStateWire {
        match s {
            NodeState::Ready => NodeStateWire::Ready,
            NodeState::Draining => NodeStateWire::Draining,
            NodeState::Dead => NodeStateWire::Dead,
        }
    }
}

/// A node of the fleet.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Node)]
pub struct NodeView {
    pub id: String,
    pub name: String,
    /// Base URL control planes reach the node at
    pub address: String,
    #[schema(inline)]
    pub state: NodeStateWire,
    pub labels: std::collections::BTreeMap<String, String>,
    /// memory_bytes, cpus, cpu_millis (CPUs times the overcommit), disk_bytes, max_sandboxes
    #[schema(value_type = Object)]
    pub capacity: Value,
    /// memory_reserved_bytes and cpu_reserved_millis (sums of its sandboxes' limits),
    /// disk_free_bytes, memory_available_bytes, load1, volumes (the ids of the volumes it
    /// holds: creates mounting them are placed on it)
    #[schema(value_type = Object)]
    pub usage: Value,
    pub sandboxes: u32,
    /// Templates whose layers the node holds.
    pub templates: Vec<String>,
    #[schema(value_type = String, format = DateTime)]
    pub registered_at: Value,
    #[schema(value_type = String, format = DateTime)]
    pub last_heartbeat: Value,
}

impl From<&NodeRecord> for NodeView {
    fn from(n: &NodeRecord) -> NodeView {
        NodeView {
            id: n.id.clone(),
            name: n.name.clone(),
            address: n.address.clone(),
            state: n.state.into(),
            labels: n.labels.clone(),
            capacity: n.capacity.clone(),
            usage: n.usage.clone(),
            sandboxes: n.sandboxes,
            templates: n.templates.clone(),
            registered_at: rfc3339(Some(n.registered_at)),
            last_heartbeat: rfc3339(Some(n.heartbeat_at)),
        }
    }
}

/// The fleet's nodes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodeList {
    /// By name.
    pub nodes: Vec<NodeView>,
}

/// List the fleet's nodes (operator)
///
/// Served by control planes (`paddock control`). Every node, by name: state, labels,
/// capacity, usage, sandbox count, templates held and last heartbeat. A node missing
/// heartbeats for 10 s is `dead` and its sandboxes `lost`.
#[utoipa::path(
    get,
    path = "/v1/nodes",
    tag = "fleet",
    operation_id = "list_nodes",
    responses(
        (status = 200, description = "The nodes", body = NodeList),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not an operator or admin key"),
    )
)]
pub(crate) async fn list_nodes(
    State(ctl): State<Arc<Control>>,
    req: Request,
) -> ApiResult<Response> {
    let (req, _) = req.into_parts();
    admin(&ctl, &req).await?;
    let nodes = ctl.store.list_nodes().await?;
    let list = NodeList {
        nodes: nodes.iter().map(NodeView::from).collect(),
    };
    Ok(typed_response(StatusCode::OK, &list))
}

fn node_not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "node {} not found",
        paddock_service::state::truncate(id, 64)
    ))
}

/// One node (operator)
#[utoipa::path(
    get,
    path = "/v1/nodes/{id}",
    tag = "fleet",
    operation_id = "get_node",
    params(("id" = String, Path, description = "Node id")),
    responses(
        (status = 200, description = "The node", body = NodeView),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not an operator or admin key"),
        (status = 404, description = "No such node"),
    )
)]
pub(crate) async fn get_node(
    State(ctl): State<Arc<Control>>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let (req, _) = req.into_parts();
    admin(&ctl, &req).await?;
    let n = ctl
        .store
        .get_node(&id)
        .await?
        .ok_or_else(|| node_not_found(&id))?;
    Ok(typed_response(StatusCode::OK, &NodeView::from(&n)))
}

/// Drain a node (operator)
///
/// No new sandboxes are placed on it; its sandboxes run until they end. Emits
/// `node.draining`. Draining a draining node changes nothing.
#[utoipa::path(
    post,
    path = "/v1/nodes/{id}/drain",
    tag = "fleet",
    operation_id = "drain_node",
    params(("id" = String, Path, description = "Node id")),
    responses(
        (status = 200, description = "The node", body = NodeView),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not an operator or admin key"),
        (status = 404, description = "No such node"),
        (status = 409, description = "The node is dead"),
    )
)]
pub(crate) async fn drain(
    State(ctl): State<Arc<Control>>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let (req, _) = req.into_parts();
    set_state(
        &ctl,
        &id,
        &req,
        NodeState::Ready,
        NodeState::Draining,
        EventKind::NodeDraining,
    )
    .await
}

/// Undrain a node (operator)
///
/// New sandboxes may be placed on it again. Emits `node.ready`.
#[utoipa::path(
    post,
    path = "/v1/nodes/{id}/undrain",
    tag = "fleet",
    operation_id = "undrain_node",
    params(("id" = String, Path, description = "Node id")),
    responses(
        (status = 200, description = "The node", body = NodeView),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not an operator or admin key"),
        (status = 404, description = "No such node"),
        (status = 409, description = "The node is dead"),
    )
)]
pub(crate) async fn undrain(
    State(ctl): State<Arc<Control>>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let (req, _) = req.into_parts();
    set_state(
        &ctl,
        &id,
        &req,
        NodeState::Draining,
        NodeState::Ready,
        EventKind::NodeReady,
    )
    .await
}

async fn set_state(
    ctl: &Control,
    id: &str,
    req: &Parts,
    from: NodeState,
    to: NodeState,
    event: EventKind,
) -> ApiResult<Response> {
    let caller = admin(ctl, req).await?;
    let n = ctl
        .store
        .get_node(id)
        .await?
        .ok_or_else(|| node_not_found(id))?;
    if n.state == NodeState::Dead {
        return Err(ApiError::Conflict(format!("node {} is dead", n.name)));
    }
    if ctl.store.set_node_state(id, &[from], to).await? {
        emit(
            ctl,
            None,
            event,
            json!({"node": n.id, "name": n.name, "by": caller.key.id}),
            None,
        )
        .await;
    }
    let n = ctl
        .store
        .get_node(id)
        .await?
        .ok_or_else(|| node_not_found(id))?;
    Ok(typed_response(StatusCode::OK, &NodeView::from(&n)))
}

/// Stores an event and queues its webhooks (the control plane has no SSE subscribers of
/// its own: nodes serve `/v1/events`).
async fn emit(
    ctl: &Control,
    tenant: Option<&str>,
    kind: EventKind,
    data: Value,
    sandbox: Option<(&str, Option<&str>)>,
) {
    let ev = Event {
        seq: 0,
        at: now_ms(),
        tenant: tenant.unwrap_or(super::FLEET_TENANT).to_owned(),
        sandbox_id: sandbox.map(|s| s.0.to_owned()),
        kind: kind.as_str().to_owned(),
        data,
    };
    match ctl.store.insert_event(&ev).await {
        Ok(ev) => {
            ctl.webhooks
                .deliver(ctl.store.as_ref(), &ev, sandbox.and_then(|s| s.1))
                .await
        }
        Err(e) => tracing::error!("storing event {kind}: {e}"),
    }
}

/// Marks nodes dead after [`super::DEAD_AFTER`] without a heartbeat, and their sandboxes
/// `lost`. Every control plane runs the loop, but only the holder of [`DEAD_NODES_LEASE`]
/// does the work (and the store's conditional update would still give each death to
/// exactly one, should two ever overlap).
///
/// While the store is unreachable nodes cannot heartbeat either, so missing heartbeats say
/// nothing about them: after a failed store call, nothing is marked dead until
/// [`super::DEAD_AFTER`] has passed without one (live nodes heartbeat again meanwhile), so
/// a database restart does not declare the whole fleet dead.
async fn watch_heartbeats(ctl: Arc<Control>) {
    let dead_ms = i64::try_from(super::DEAD_AFTER.as_millis()).unwrap_or(i64::MAX);
    let mut quiet_until: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = match quiet_until {
            // Marks nothing: only checks the store answers.
            Some(t) if std::time::Instant::now() < t => i64::MIN,
            _ => now_ms() - dead_ms,
        };
        let ttl = i64::try_from(LEASE_TTL.as_millis()).unwrap_or(i64::MAX);
        match ctl
            .store
            .acquire_lease(DEAD_NODES_LEASE, &ctl.lease_holder, ttl)
            .await
        {
            Ok(held) => {
                if held != ctl.holds_dead_nodes.swap(held, Ordering::Relaxed) {
                    tracing::info!(held, "lease {DEAD_NODES_LEASE}");
                }
                if !held {
                    continue;
                }
            }
            Err(e) => {
                tracing::warn!("lease {DEAD_NODES_LEASE}: {e}");
                ctl.holds_dead_nodes.store(false, Ordering::Relaxed);
                quiet_until = Some(std::time::Instant::now() + super::DEAD_AFTER);
                continue;
            }
        }
        let dead = match ctl.store.mark_dead_nodes(before).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("watching heartbeats: {e}");
                quiet_until = Some(std::time::Instant::now() + super::DEAD_AFTER);
                continue;
            }
        };
        for n in dead {
            tracing::warn!(node = %n.name, "node missed its heartbeats: dead");
            emit(
                &ctl,
                None,
                EventKind::NodeDead,
                json!({"node": n.id, "name": n.name}),
                None,
            )
            .await;
            if let Err(e) = lose_sandboxes(&ctl, &n.id).await {
                tracing::error!(node = %n.name, "marking its sandboxes lost: {e}");
            }
        }
    }
}

/// Marks every active sandbox of a dead node `lost`.
async fn lose_sandboxes(ctl: &Control, node: &str) -> Result<(), paddock_store::StoreError> {
    let active = ctl
        .store
        .list_sandboxes(&SandboxFilter {
            states: SandboxState::NOT_STOPPED.to_vec(),
            ..Default::default()
        })
        .await?;
    for mut r in active
        .into_iter()
        .filter(|r| super::node_of(r) == Some(node))
    {
        r.state = SandboxState::Stopped;
        r.stop_reason = Some(paddock_store::StopReason::Lost);
        r.stopped_at = Some(now_ms());
        ctl.store.update_sandbox(&r).await?;
        emit(
            ctl,
            Some(&r.tenant),
            EventKind::Lost,
            json!({"node": node}),
            Some((&r.id, r.webhook_url.as_deref())),
        )
        .await;
    }
    Ok(())
}

/// The sandbox a request names, if any.
fn named_sandbox(req: &Request, domain: &str) -> Option<String> {
    if let Some(t) = crate::e2b::target::target(req.headers(), req.uri(), domain) {
        return Some(t.id);
    }
    let segs: Vec<&str> = req.uri().path().split('/').skip(1).collect();
    // A snapshot list of one sandbox is that sandbox's node's.
    let of_sandbox = crate::wire::form_urlencoded_pairs(req.uri().query().unwrap_or(""))
        .into_iter()
        .find(|(k, _)| matches!(k.as_str(), "sandbox_id" | "sandboxID" | "sandbox"))
        .map(|(_, v)| v);
    let id = match segs.as_slice() {
        ["v1", "sandboxes", id, ..] | ["v2", "sandboxes", id, ..] => (*id).to_owned(),
        ["sandboxes", id, ..] | ["proxy", id, ..] => (*id).to_owned(),
        ["snapshots"] | ["v1", "snapshots"] => of_sandbox?,
        _ => return None,
    };
    id.parse::<paddock_core::SandboxId>().ok()?;
    Some(id)
}

/// The template (or snapshot) a request names, if any.
fn named_template(req: &Request) -> Option<String> {
    let segs: Vec<&str> = req.uri().path().split('/').skip(1).collect();
    match segs.as_slice() {
        ["v1", "templates", name, ..] | ["v1", "snapshots", name] | ["templates", name, ..] => {
            Some((*name).to_owned())
        }
        _ => None,
    }
}

/// Whether a node that is not dead lists the template.
fn held(nodes: &[NodeRecord], template: &str) -> bool {
    nodes
        .iter()
        .any(|n| n.state != NodeState::Dead && n.templates.iter().any(|t| t == template))
}

fn is_create(req: &Request) -> bool {
    req.method() == http::Method::POST
        && matches!(
            req.uri().path(),
            "/v1/sandboxes" | "/sandboxes" | "/v2/sandboxes"
        )
}

async fn forward(State(ctl): State<Arc<Control>>, req: Request) -> Response {
    match route(&ctl, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn route(ctl: &Arc<Control>, req: Request) -> ApiResult<Response> {
    // The console's files are served here (a browser on a control plane needs no live node
    // to load it); a request naming a sandbox (Host-routed) goes on to its node.
    if named_sandbox(&req, &ctl.cfg.domain).is_none()
        && let Some(r) = crate::console::serve(&req, &ctl.cfg.domain)
    {
        return Ok(r);
    }
    if is_create(&req) {
        return create(ctl, req).await;
    }
    route_other(ctl, req).await
}

/// A request that is not a create: to the holder of what it names, else any live node.
async fn route_other(ctl: &Arc<Control>, req: Request) -> ApiResult<Response> {
    let nodes = ctl.nodes_cached().await?;
    let live = |n: &&NodeRecord| n.state != NodeState::Dead;
    if let Some(id) = named_sandbox(&req, &ctl.cfg.domain)
        && let Some(holder) = ctl.holder(&id).await?
        && let Some(n) = nodes.iter().filter(live).find(|n| n.id == holder)
    {
        return Ok(ctl.forwarder.forward(&n.name, &n.address, req).await);
    }
    // A request naming a volume goes to the node holding it.
    if super::volumes::named(req.uri().path()).is_some() {
        let (parts, body) = req.into_parts();
        let holder = super::volumes::route(ctl.store.as_ref(), &nodes, &parts).await?;
        let req = Request::from_parts(parts, body);
        if let Some(n) = holder {
            return Ok(ctl.forwarder.forward(&n.name, &n.address, req).await);
        }
        let live: Vec<&NodeRecord> = nodes.iter().filter(live).collect();
        if live.is_empty() {
            return Err(ApiError::Unavailable("no node of the fleet is up".into()));
        }
        let n = live[ctl.next.fetch_add(1, Ordering::Relaxed) % live.len()];
        return Ok(ctl.forwarder.forward(&n.name, &n.address, req).await);
    }
    // The template list is the fleet's: every live node's, merged.
    if req.method() == http::Method::GET && req.uri().path() == "/v1/templates" {
        let live: Vec<&NodeRecord> = nodes.iter().filter(live).collect();
        if live.is_empty() {
            return Err(ApiError::Unavailable("no node of the fleet is up".into()));
        }
        return Ok(super::fanout::list_templates(&ctl.forwarder, &live, req).await);
    }
    // A template is deleted on every node holding it.
    if req.method() == http::Method::DELETE
        && let Some(name) = req.uri().path().strip_prefix("/v1/templates/")
        && !name.contains('/')
    {
        let holders: Vec<&NodeRecord> = nodes
            .iter()
            .filter(live)
            .filter(|n| n.templates.iter().any(|t| t == name))
            .collect();
        if !holders.is_empty() {
            return Ok(super::fanout::delete_template(&ctl.forwarder, &holders, req).await);
        }
    }
    // Other requests naming a template go to one of the nodes holding it (one made a moment
    // ago shows in its node's next heartbeat).
    if let Some(name) = named_template(&req) {
        let mut nodes = nodes.to_vec();
        let until = std::time::Instant::now() + super::HEARTBEAT + Duration::from_millis(500);
        loop {
            if let Some(n) = nodes
                .iter()
                .filter(live)
                .find(|n| n.templates.contains(&name))
            {
                return Ok(ctl.forwarder.forward(&n.name, &n.address, req).await);
            }
            if req.method() != http::Method::GET && req.method() != http::Method::DELETE
                || std::time::Instant::now() >= until
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            nodes = ctl.store.list_nodes().await?;
        }
    }
    // Anything else: any live node answers from the shared store.
    let live: Vec<&NodeRecord> = nodes.iter().filter(live).collect();
    if live.is_empty() {
        return Err(ApiError::Unavailable("no node of the fleet is up".into()));
    }
    let n = live[ctl.next.fetch_add(1, Ordering::Relaxed) % live.len()];
    Ok(ctl.forwarder.forward(&n.name, &n.address, req).await)
}

/// What placement needs from a create body (the node checks the rest).
fn want_of(path: &str, body: &[u8]) -> ApiResult<Want> {
    let v: Value = serde_json::from_slice(if body.is_empty() { b"{}" } else { body })
        .map_err(|e| ApiError::InvalidJson(format!("invalid JSON: {e}")))?;
    let d = paddock_core::Limits::default();
    let size = |k: &str, dflt: u64| -> ApiResult<u64> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(dflt),
            Some(Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| ApiError::BadRequest(format!("{k} must be a size"))),
            Some(Value::String(s)) => {
                paddock_core::parse_size(s).map_err(|e| ApiError::BadRequest(format!("{k}: {e}")))
            }
            Some(_) => Err(ApiError::BadRequest(format!("{k} must be a size"))),
        }
    };
    let e2b = path != "/v1/sandboxes";
    let template = if e2b {
        v.get("templateID")
    } else {
        v.get("template")
    }
    .and_then(Value::as_str)
    .unwrap_or("base")
    .to_owned();
    let selector: std::collections::BTreeMap<String, String> = match v.get("node_selector") {
        None | Some(Value::Null) => Default::default(),
        Some(s) => serde_json::from_value(s.clone()).map_err(|_| {
            ApiError::BadRequest("node_selector must be an object of strings".into())
        })?,
    };
    super::check_labels(&selector)
        .map_err(|e| ApiError::BadRequest(format!("node_selector: {e}")))?;
    let cpu_millis = match v.get("cpus").and_then(Value::as_f64) {
        Some(c) if c.is_finite() && c > 0.0 => (c * 1000.0).round() as u64,
        _ => u64::from(d.cpu_millis),
    };
    Ok(Want {
        template: paddock_templates::ALIASES
            .iter()
            .find(|(a, _)| *a == template)
            .map_or(template.clone(), |(_, t)| (*t).to_owned()),
        memory_bytes: if e2b {
            d.memory_bytes
        } else {
            size("memory", d.memory_bytes)?
        },
        cpu_millis,
        disk_bytes: if e2b {
            d.disk_bytes
        } else {
            size("disk", d.disk_bytes)?
        },
        selector,
    })
}

/// Places a create on a node and forwards it there.
async fn create(ctl: &Arc<Control>, req: Request) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, ctl.cfg.max_json_body)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(ctl.cfg.max_json_body))?;
    let want = want_of(parts.uri.path(), &bytes)?;
    // Volumes live on one node: a create mounting them goes there.
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let names = super::volumes::mounted(&body, parts.uri.path() != "/v1/sandboxes");
    let vol = super::volumes::holder_for_create(ctl.store.as_ref(), &parts, &names).await?;
    let mut nodes = ctl.store.list_nodes().await?;
    // A template made a moment ago shows in its node's next heartbeat: wait for one.
    let until = std::time::Instant::now() + super::HEARTBEAT + Duration::from_millis(500);
    while !held(&nodes, &want.template) && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        nodes = ctl.store.list_nodes().await?;
    }
    if !held(&nodes, &want.template) && vol.is_none() {
        // No node has it: any node answers as a single host would (unknown template).
        let req = Request::from_parts(parts, Body::from(bytes));
        return route_other(ctl, req).await;
    }
    let now = now_ms();
    if let Some((h, v)) = &vol {
        if let Some(e) = super::volumes::unusable(h, v, now) {
            return Err(e);
        }
        nodes.retain(|n| n.id == h.id);
    }
    let chosen = {
        let mut pending = ctl.pending.lock().expect("pending poisoned");
        let get = |n: &NodeRecord| {
            pending
                .get(&n.id)
                .filter(|p| p.since_heartbeat == n.heartbeat_at)
                .copied()
                .unwrap_or_default()
        };
        let n = placement::choose(&nodes, &get, &want, now).map_err(|e| {
            ApiError::NoCapacity(match &vol {
                Some((h, v)) => {
                    format!(
                        "{e} (volume {v:?} is on node {}, where its sandboxes run)",
                        h.name
                    )
                }
                None => e,
            })
        })?;
        let mut p = get(n);
        p.since_heartbeat = n.heartbeat_at;
        p.sandboxes += 1;
        p.memory_bytes += want.memory_bytes;
        p.cpu_millis += want.cpu_millis;
        pending.insert(n.id.clone(), p);
        n.clone()
    };
    let req = Request::from_parts(parts, Body::from(bytes));
    Ok(ctl
        .forwarder
        .forward(&chosen.name, &chosen.address, req)
        .await)
}
