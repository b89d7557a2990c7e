//! Templates usable on every node: before its first create from a template it lacks, a
//! node fetches the template's definition and the layers it lacks from a peer node that
//! holds it, checks each layer against its transfer digest, and imports it
//! (`docs/fleet.md`, "Templates").
//!
//! - The peer's side is two internal routes, served only on a node's listener, only with
//!   the fleet token and only to requests carrying [`INTERNAL_HEADER`] (which control planes
//!   strip from everything they forward, so no client reaches them through one):
//!   `GET /internal/fleet/templates/{name}` (the definition and each layer's transfer
//!   digest) and `GET /internal/fleet/layers/{id}` (the layer's canonical tar stream,
//!   `paddock_runtime::layerexport`).
//! - The fetching side ([`ensure`]) asks the peers whose heartbeat lists the template, in
//!   turn, until one succeeds. Layers it has already are not fetched; each fetched one is
//!   unpacked into a temp directory while it streams and renamed into the store only when
//!   the stream's SHA-256 is the digest the peer recorded when the layer was made, so a
//!   corrupted layer leaves nothing. A fetch that fails removes the layers it imported (if
//!   no template uses them) and registers no template. Whole stores are never copied.
//! - Concurrent creates of one template on one node fetch it once (one lock per name); a
//!   fetch holds the layer gate shared, like a build, so a prune never removes its layers.
//! - Snapshots stay on the node that took them (their layer is a btrfs snapshot of a
//!   sandbox's disk): the peer refuses them with 409.
//! - Each completed fetch is an event `template.fetched` (tenant `fleet`: admins only) with
//!   the peer, the layers and bytes copied and the time it took.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt as _;
use http::{Request, StatusCode};
use paddock_runtime::layerstore::LayerStore;
use paddock_runtime::template::{TemplateDef, valid_name};
use paddock_store::{NodeRecord, NodeState, now_ms};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::wire::json_response;
use paddock_service::event_kind::EventKind;
use paddock_service::state::AppState;

/// The header marking a node-to-node request (any value; the fleet token authenticates).
pub const INTERNAL_HEADER: &str = "x-paddock-fleet-internal";
/// The path prefix of the internal routes.
pub const INTERNAL_PREFIX: &str = "/internal/fleet/";
/// Time to connect to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for the next bytes of a peer's answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest manifest read from a peer.
pub const MAX_MANIFEST: usize = 1 << 20;

/// Chunks of a layer stream in flight between the network and the unpacking thread.
const CHANNEL_CHUNKS: usize = 16;

/// The answer of a peer to a request it does not serve.
fn not_found(what: String) -> Response {
    ApiError::NotFound(what).into_response()
}

/// Serves an internal route (the caller checked the fleet token).
pub async fn serve_internal(state: Arc<AppState>, req: Request<Body>) -> Response {
    if req.method() != http::Method::GET {
        return ApiError::BadRequest("internal fleet routes are GET only".into()).into_response();
    }
    let path = req.uri().path().to_owned();
    let rest = path.strip_prefix(INTERNAL_PREFIX).unwrap_or("");
    match rest.split_once('/') {
        Some(("templates", name)) => manifest(&state, name).await,
        Some(("layers", id)) => layer(&state, id),
        _ => not_found(format!(
            "no internal route {}",
            paddock_service::state::truncate(&path, 80)
        )),
    }
}

/// `GET /internal/fleet/templates/{name}`: the definition and each layer's digest.
async fn manifest(state: &AppState, name: &str) -> Response {
    let Some(t) = state.runtime.template(name) else {
        return not_found(format!("unknown template {name:?}"));
    };
    if t.snapshot.is_some() {
        return ApiError::Conflict(format!(
            "{name} is a snapshot; snapshots stay on the node that took them"
        ))
        .into_response();
    }
    let root = state.runtime.layers_root();
    let ids = t.layer_ids.clone();
    let digests = tokio::task::spawn_blocking(move || {
        let store = LayerStore::open(root)?;
        ids.iter()
            .map(|id| Ok((id.clone(), Value::String(store.transfer_digest(id)?))))
            .collect::<paddock_runtime::Result<serde_json::Map<String, Value>>>()
    })
    .await;
    let digests = match digests {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return ApiError::from(e).into_response(),
        Err(e) => return ApiError::Internal(format!("digest task: {e}")).into_response(),
    };
    let def = TemplateDef {
        name: t.name.clone(),
        layers: t.layer_ids.clone(),
        config: t.config.clone(),
        source: t.source.clone(),
        created_unix_ms: t.created_unix_ms,
    };
    json_response(
        StatusCode::OK,
        json!({"template": def, "digests": Value::Object(digests)}),
    )
}

/// `GET /internal/fleet/layers/{id}`: the layer's canonical stream, produced on a blocking
/// thread as it is sent.
fn layer(state: &AppState, id: &str) -> Response {
    let root = state.runtime.layers_root();
    let store = match LayerStore::open(root) {
        Ok(s) => s,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if !store.contains(id) {
        return not_found(format!(
            "no layer {}",
            paddock_service::state::truncate(id, 80)
        ));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(CHANNEL_CHUNKS);
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || {
        let w = ChannelWriter { tx: tx.clone() };
        let w = std::io::BufWriter::with_capacity(256 << 10, w);
        if let Err(e) = store.export(&id, w) {
            tracing::warn!(layer = %id, "exporting a layer to a peer: {e}");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/x-tar")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A `Write` sending its bytes to an async channel (on a blocking thread).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "peer went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A `Read` over chunks from an async channel (on a blocking thread).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// One lock per template name being fetched on this node.
static FETCHING: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();

fn client() -> &'static reqwest::Client {
    static C: OnceLock<reqwest::Client> = OnceLock::new();
    C.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .expect("http client")
    })
}

/// Makes sure this node has `template` (a name or alias) before a create: on a fleet node
/// that lacks it, fetches it from a peer holding it. Nothing to do on a single host, for a
/// template this node has, or for one no peer lists (the create then fails as unknown).
pub async fn ensure(state: &AppState, template: &str) -> ApiResult<()> {
    let Some(node) = state.cfg.node.as_ref() else {
        return Ok(());
    };
    let name = paddock_service::templates::resolve_alias(state, template);
    if !valid_name(&name) || state.runtime.template(&name).is_some() {
        return Ok(());
    }
    let lock = FETCHING
        .get_or_init(Default::default)
        .lock()
        .expect("fetching poisoned")
        .entry(name.clone())
        .or_default()
        .clone();
    let _one = lock.lock().await;
    // Fetched by the create this one waited for.
    if state.runtime.template(&name).is_some() {
        return Ok(());
    }
    let now = now_ms();
    let fresh = i64::try_from(super::DEAD_AFTER.as_millis()).unwrap_or(i64::MAX);
    let peers: Vec<NodeRecord> = state
        .store
        .list_nodes()
        .await?
        .into_iter()
        .filter(|n| {
            n.id != node.id
                && n.state != NodeState::Dead
                && now - n.heartbeat_at <= fresh
                && n.templates.contains(&name)
        })
        .collect();
    if peers.is_empty() {
        return Ok(());
    }
    // A prune must not take the layers of a template not registered yet.
    let _gate = paddock_service::templates::gate::making().await;
    let mut errors = Vec::new();
    for peer in &peers {
        let started = Instant::now();
        match fetch_from(state, &node.token, peer, &name).await {
            Ok((layers, bytes)) => {
                let ms = started.elapsed().as_millis() as u64;
                let mbps = bytes as f64 / 1e6 / (started.elapsed().as_secs_f64().max(1e-3));
                tracing::info!(
                    template = %name, peer = %peer.name, layers, bytes, ms,
                    "fetched a template from a peer ({mbps:.1} MB/s)"
                );
                state
                    .emit(
                        super::FLEET_TENANT,
                        None,
                        EventKind::TemplateFetched,
                        json!({"template": name, "node": node.id, "name": node.name,
                               "from": peer.name, "layers": layers, "bytes": bytes, "ms": ms}),
                        None,
                    )
                    .await;
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(template = %name, peer = %peer.name, "fetching a template: {e}");
                errors.push(format!("from {}: {e}", peer.name));
            }
        }
    }
    Err(ApiError::TemplateFetch(format!(
        "template {name} could not be fetched to node {}: {}",
        node.name,
        errors.join("; ")
    )))
}

/// Fetches template `name` from `peer` and registers it; (layers fetched, bytes).
async fn fetch_from(
    state: &AppState,
    token: &super::FleetToken,
    peer: &NodeRecord,
    name: &str,
) -> Result<(usize, u64), String> {
    let base = peer.address.trim_end_matches('/');
    let get = |path: String| {
        client()
            .get(format!("{base}{INTERNAL_PREFIX}{path}"))
            .header(super::TOKEN_HEADER, token.header_value())
            .header(INTERNAL_HEADER, "1")
    };
    let resp = get(format!("templates/{name}"))
        .send()
        .await
        .map_err(|e| format!("unreachable: {e}"))?;
    let status = resp.status();
    let body = read_capped(resp, MAX_MANIFEST).await?;
    if !status.is_success() {
        let msg = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(format!("{status}: {msg}"));
    }
    let m: Value = serde_json::from_slice(&body).map_err(|e| format!("bad manifest: {e}"))?;
    let def: TemplateDef =
        serde_json::from_value(m["template"].clone()).map_err(|e| format!("bad manifest: {e}"))?;
    if def.name != name {
        return Err(format!("the manifest names template {:?}", def.name));
    }
    let root = state.runtime.layers_root();
    let store = LayerStore::open(root).map_err(|e| e.to_string())?;
    let mut imported: Vec<String> = Vec::new();
    let mut bytes = 0u64;
    let res = async {
        for id in &def.layers {
            if store.contains(id) {
                continue;
            }
            let digest = m["digests"][id.as_str()]
                .as_str()
                .ok_or_else(|| format!("the manifest has no digest for layer {id}"))?
                .to_owned();
            bytes += fetch_layer(&store, get(format!("layers/{id}")), id, &digest).await?;
            imported.push(id.clone());
        }
        state
            .runtime
            .add_template(def.clone())
            .map_err(|e| format!("registering it: {e}"))?;
        Ok::<_, String>(())
    }
    .await;
    if let Err(e) = res {
        // Nothing half-imported: the layers this fetch brought go again, unless a template
        // uses them meanwhile.
        let used: std::collections::BTreeSet<String> = state
            .runtime
            .templates()
            .into_iter()
            .flat_map(|t| t.layer_ids)
            .collect();
        for id in imported.iter().filter(|id| !used.contains(*id)) {
            let _ = store.remove(id);
        }
        return Err(e);
    }
    Ok((imported.len(), bytes))
}

/// Streams one layer from a peer into the store; the bytes received.
async fn fetch_layer(
    store: &LayerStore,
    req: reqwest::RequestBuilder,
    id: &str,
    digest: &str,
) -> Result<u64, String> {
    let resp = req.send().await.map_err(|e| format!("layer {id}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("layer {id}: {}", resp.status()));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CHUNKS);
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pump = {
        let count = count.clone();
        tokio::spawn(async move {
            let mut s = resp.bytes_stream();
            while let Some(c) = s.next().await {
                let c = c.map_err(std::io::Error::other);
                if let Ok(b) = &c {
                    count.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                let stop = c.is_err();
                if tx.send(c).await.is_err() || stop {
                    break;
                }
            }
        })
    };
    let (store, id2, digest) = (store.clone(), id.to_owned(), digest.to_owned());
    let res = tokio::task::spawn_blocking(move || {
        let r = ChannelReader {
            rx,
            cur: Bytes::new(),
        };
        store.import(&id2, &digest, r)
    })
    .await;
    pump.abort();
    match res {
        Ok(Ok(())) => Ok(count.load(std::sync::atomic::Ordering::Relaxed)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("layer {id}: import task: {e}")),
    }
}

async fn read_capped(resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(c) = s.next().await {
        let c = c.map_err(|e| format!("reading: {e}"))?;
        if out.len() + c.len() > cap {
            return Err(format!("answer over {cap} bytes"));
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}
