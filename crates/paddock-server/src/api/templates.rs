//! `/v1/templates`: list, get, build (from a build file, with a tar context), bootstrap
//! (`debian` from the host's Debian mirror), pull, import, delete, and the last build's log.
//! Builds, pulls and bootstraps answer a stream of NDJSON [`BuildEvent`]s, the last one
//! `done` or `error`, and write the same events as text to the template's build log
//! (`<data>/templates/logs/<name>.log`, `GET /v1/templates/{name}/log`).
//!
//! Templates are host-wide: any key may list them and start sandboxes from them; making and
//! deleting them needs the developer role or higher (`crate::roles`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use futures::StreamExt as _;
use paddock_runtime::template::{TemplateDef, valid_name};
use tokio::io::AsyncWriteExt as _;
use utoipa::{IntoParams, ToSchema};

use super::template_view::{
    Binary, LayerList, LayerView, Pruned, RemovedLayer, TemplateList, TemplateView,
};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::wire::{no_content, typed_response};
use paddock_service::state::AppState;
use paddock_service::templates;
use paddock_service::templates::catalogue::catalogue;
use paddock_templates::BuildEvent;

/// The path of a route about one template.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct TemplatePath {
    /// Template name
    name: String,
}

/// The query of a build.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct BuildQuery {
    /// The build file's path in a tar context (default `Paddockfile`, else `Dockerfile`)
    file: Option<String>,
}

/// The query of a bootstrap.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct BootstrapQuery {
    /// Debian release, e.g. trixie (default) or bookworm
    #[param(default = "trixie")]
    suite: Option<String>,
}

/// Largest build context (a tar body).
pub const MAX_CONTEXT: u64 = 2 << 30;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/templates", get(list))
        .route("/v1/templates/{name}", get(get_one).delete(delete))
        .route("/v1/templates/{name}/build", post(build))
        .route("/v1/templates/{name}/bootstrap", post(bootstrap))
        .route("/v1/templates/{name}/pull", post(pull))
        .route("/v1/templates/{name}/import", post(import))
        .route("/v1/templates/{name}/log", get(build_log))
        .route("/v1/layers", get(layers))
        .route("/v1/layers/prune", post(prune))
}

/// Names being built right now: a second build of the same name is refused, not queued.
static BUSY: Mutex<Option<HashSet<String>>> = Mutex::new(None);

struct Busy {
    name: String,
    _gate: Option<tokio::sync::OwnedRwLockReadGuard<()>>,
}

impl Busy {
    /// Claims `name` (for a delete, which needs no layer gate: it serialises with a prune
    /// on the runtime's template lock).
    fn take(name: &str) -> ApiResult<Busy> {
        let mut b = BUSY.lock().expect("busy poisoned");
        if !b.get_or_insert_with(HashSet::new).insert(name.to_owned()) {
            return Err(ApiError::Conflict(format!(
                "template {name} is being built already"
            )));
        }
        Ok(Busy {
            name: name.to_owned(),
            _gate: None,
        })
    }

    /// Claims `name` for making it, waiting for a running layer prune to end.
    async fn take_for_making(name: &str) -> ApiResult<Busy> {
        let mut busy = Busy::take(name)?;
        busy._gate = Some(templates::gate::making().await);
        Ok(busy)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(b) = BUSY.lock().expect("busy poisoned").as_mut() {
            b.remove(&self.name);
        }
    }
}

/// The layer gate held exclusively, or 409 naming what is being made.
fn gate_for_prune() -> ApiResult<tokio::sync::OwnedRwLockWriteGuard<()>> {
    templates::gate::try_prune().ok_or_else(|| {
        let mut names: Vec<String> = BUSY
            .lock()
            .expect("busy poisoned")
            .iter()
            .flatten()
            .cloned()
            .collect();
        names.sort();
        ApiError::Conflict(if names.is_empty() {
            "unused layers are being pruned already".into()
        } else {
            format!(
                "template {} is being made; prune when that is done",
                names.join(", ")
            )
        })
    })
}

/// List templates
#[utoipa::path(
    get,
    path = "/v1/templates",
    operation_id = "list_templates",
    tag = "templates",
    responses(
        (status = 200, description = "Every template: name, source, layers (bottom first), defaults (env, workdir, user, ports), users, running sandboxes", body = TemplateList),
        (status = 401, description = "No or a bad key"),
    )
)]
pub(crate) async fn list(State(state): State<Arc<AppState>>, _c: Caller) -> ApiResult<Response> {
    let mut templates = Vec::new();
    for t in state.runtime.templates().iter() {
        if !t.name.starts_with("build-") {
            templates.push(TemplateView::of(&state, t).await);
        }
    }
    Ok(typed_response(StatusCode::OK, &TemplateList { templates }))
}

/// One template
#[utoipa::path(
    get,
    path = "/v1/templates/{name}",
    operation_id = "get_template",
    tag = "templates",
    params(TemplatePath),
    responses(
        (status = 200, description = "The template", body = TemplateView),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "Unknown template"),
    )
)]
pub(crate) async fn get_one(
    State(state): State<Arc<AppState>>,
    _c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let t = state
        .runtime
        .template(&name)
        .ok_or_else(|| ApiError::NotFound(format!("unknown template {name:?}")))?;
    Ok(typed_response(
        StatusCode::OK,
        &TemplateView::of(&state, &t).await,
    ))
}

/// Delete a template (developer) and the layers no other template uses
#[utoipa::path(
    delete,
    path = "/v1/templates/{name}",
    operation_id = "delete_template",
    tag = "templates",
    params(TemplatePath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Below the developer role"),
        (status = 404, description = "Unknown template"),
        (status = 409, description = "Running sandboxes use it, or it is being built"),
    )
)]
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let res: ApiResult<_> = async {
        let _b = Busy::take(&name)?;
        // Its pooled sandboxes go first, and none is made while it goes.
        let _pool = state.pools.hold(&state, &name).await;
        state
            .runtime
            .remove_template(&name, true)
            .map_err(|e| match e {
                paddock_runtime::RuntimeError::UnknownTemplate { .. } => {
                    ApiError::NotFound(format!("unknown template {name:?}"))
                }
                e => ApiError::from(e),
            })?;
        let _ = state.store.delete_template(&name).await;
        Ok(())
    }
    .await;
    state
        .audited(&caller, "template.delete", None, Some(name), res)
        .await?;
    Ok(no_content())
}

/// The layer store (viewer): every layer, its disk usage and the templates using it
///
/// A layer no template uses is an orphan that `POST /v1/layers/prune` would remove.
#[utoipa::path(
    get,
    path = "/v1/layers",
    operation_id = "list_layers",
    tag = "templates",
    responses(
        (status = 200, description = "`layers` (id, bytes, templates; no templates means unused) and `total_bytes`", body = LayerList),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not an admin key"),
    )
)]
pub(crate) async fn layers(State(state): State<Arc<AppState>>, _c: Caller) -> ApiResult<Response> {
    let rt = state.runtime.clone();
    let all = tokio::task::spawn_blocking(move || rt.layers())
        .await
        .map_err(|e| ApiError::Internal(format!("layer listing task: {e}")))??;
    let total: u64 = all.iter().map(|(_, b, _)| b).sum();
    let layers = all
        .into_iter()
        .map(|(id, bytes, templates)| LayerView {
            id,
            bytes,
            templates,
        })
        .collect();
    Ok(typed_response(
        StatusCode::OK,
        &LayerList {
            layers,
            total_bytes: total,
        },
    ))
}

/// Remove every layer no template uses (operator)
///
/// Layers of replaced templates and finished steps of failed builds stay in the store as
/// build cache until pruned. Running sandboxes are never affected. Refused while a template
/// is being built, pulled, imported or bootstrapped; a template started during a prune
/// waits for it.
#[utoipa::path(
    post,
    path = "/v1/layers/prune",
    operation_id = "prune_layers",
    tag = "templates",
    responses(
        (status = 200, description = "`removed` (id, bytes) and `freed_bytes`", body = Pruned),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not an admin key"),
        (status = 409, description = "A template is being made, or a prune is running"),
    )
)]
pub(crate) async fn prune(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Response> {
    let res: ApiResult<_> = async {
        let gate = gate_for_prune()?;
        let rt = state.runtime.clone();
        let removed = tokio::task::spawn_blocking(move || rt.prune_layers())
            .await
            .map_err(|e| ApiError::Internal(format!("layer prune task: {e}")))??;
        drop(gate);
        Ok(removed)
    }
    .await;
    let removed = state
        .audited(&caller, "layers.prune", None, None, res)
        .await?;
    let freed: u64 = removed.iter().map(|(_, b)| b).sum();
    let removed = removed
        .into_iter()
        .map(|(id, bytes)| RemovedLayer { id, bytes })
        .collect();
    Ok(typed_response(
        StatusCode::OK,
        &Pruned {
            removed,
            freed_bytes: freed,
        },
    ))
}

fn check_name(name: &str) -> ApiResult<()> {
    if !valid_name(name) || name == "base" || name.starts_with("build-") {
        return Err(ApiError::BadRequest(format!(
            "{name:?} cannot name a template: use 1 to 63 of a-z 0-9 . _ -, starting with a letter or digit (not base, not build-*)"
        )));
    }
    Ok(())
}

/// Streams build events as NDJSON while `work` runs; registers the template it returns.
fn stream_build<F>(
    state: Arc<AppState>,
    caller: Caller,
    name: String,
    busy: Busy,
    work: impl FnOnce(tokio::sync::mpsc::Sender<BuildEvent>) -> F + Send + 'static,
) -> Response
where
    F: std::future::Future<Output = Result<TemplateDef, BuildEvent>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<BuildEvent>(256);
    // Every event goes to the build log first, then to the caller while it listens: a
    // caller that hangs up stops neither the build nor its log.
    let (wtx, mut wrx) = tokio::sync::mpsc::channel::<BuildEvent>(256);
    let log_path = log_path(&state, &name);
    let logger = tokio::spawn(async move {
        let mut log = BuildLog::create(log_path).await;
        while let Some(ev) = wrx.recv().await {
            log.write(&ev).await;
            let _ = tx.send(ev).await;
        }
        log.finish().await;
    });
    let tx = wtx;
    tokio::spawn(async move {
        let _busy = busy;
        let res = work(tx.clone()).await;
        let outcome = match res {
            Ok(def) => match state.runtime.add_template(def) {
                Ok(t) => {
                    catalogue(&state, &t, Some(&caller.key.id)).await;
                    "ok"
                }
                Err(e) => {
                    let _ = tx
                        .send(BuildEvent::Error {
                            step: None,
                            line: None,
                            message: ApiError::from(e).to_string(),
                        })
                        .await;
                    "failed"
                }
            },
            Err(ev) => {
                let _ = tx.send(ev).await;
                "failed"
            }
        };
        drop(tx);
        let _ = logger.await;
        state
            .audit(Some(&caller), "template.build", None, outcome, Some(name))
            .await;
    });
    let body = tokio_stream::wrappers::ReceiverStream::new(rx).map(|ev| {
        let mut line = serde_json::to_vec(&ev).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(line))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(body))
        .unwrap_or_default()
}

/// Build a template from a build file (developer)
///
/// Body: the build file as text/plain, or a tar context (application/x-tar) holding it
/// (`Paddockfile`, else `Dockerfile`, or `?file=PATH`) and the files COPY takes.
/// Instructions: FROM (a template), RUN, COPY, ENV, WORKDIR, USER, EXPOSE, START (shell or
/// exec form), CMD and ENTRYPOINT (combined as in Docker into the start command), READY
/// ([--timeout DUR] --port N, or a shell command). A file with only default-setting
/// instructions may be FROM base (no layer of its own). Each RUN/COPY runs in a sandbox
/// (network mode all) and becomes a layer cached by the hash of its inputs. The answer
/// streams NDJSON events: step, output, then done or error (with the step's line, exit
/// status and output).
#[utoipa::path(
    post,
    path = "/v1/templates/{name}/build",
    operation_id = "build_template",
    tag = "templates",
    params(TemplatePath, BuildQuery),
    request_body(content(
        (String = "text/plain"),
        (inline(Binary) = "application/x-tar"),
    )),
    responses(
        (status = 200, description = "NDJSON build events", content_type = "application/x-ndjson", body = BuildEvent),
        (status = 400, description = "Bad name or build file (with its line)"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Below the developer role"),
        (status = 409, description = "Already being built"),
        (status = 415, description = "Neither text/plain nor application/x-tar"),
    )
)]
pub(crate) async fn build(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    req: Request,
) -> ApiResult<Response> {
    check_name(&name)?;
    let mut file_name: Option<String> = None;
    for (k, v) in crate::wire::form_urlencoded_pairs(q.as_deref().unwrap_or("")) {
        match k.as_str() {
            "file" => file_name = Some(v),
            other => return Err(crate::wire::unknown_param(other)),
        }
    }
    let ct = media_type(&req);
    let busy = Busy::take_for_making(&name).await?;
    let (text, context) = match ct.as_str() {
        "text/plain" => {
            let b = crate::wire::read_limited(req, 1 << 20, false).await?;
            let t = String::from_utf8(b.to_vec())
                .map_err(|_| ApiError::BadRequest("the build file is not UTF-8".into()))?;
            (t, None)
        }
        "application/x-tar" => {
            let ctx = save_context(req).await?;
            let path = ctx.path().to_owned();
            let want = file_name.clone();
            let t = tokio::task::spawn_blocking(move || find_build_file(&path, want.as_deref()))
                .await
                .map_err(|e| ApiError::Internal(format!("reading the context: {e}")))??;
            (t, Some(ctx))
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "send the build file as text/plain or a context as application/x-tar, not {other:?}"
            )));
        }
    };
    let file = paddock_templates::parse(&text)
        .map_err(|e| ApiError::BadRequest(format!("build file {e}")))?;
    let rt = state.runtime.clone();
    let name2 = name.clone();
    Ok(stream_build(
        state,
        caller,
        name,
        busy,
        move |tx| async move {
            let ctx_path = context.as_ref().map(|c| c.path().to_owned());
            let r = paddock_templates::build(&rt, &name2, &file, ctx_path.as_deref(), &tx).await;
            drop(context);
            r
        },
    ))
}

/// Make a Debian template with debootstrap (developer)
///
/// A minimal Debian of release `suite` (default trixie, the current stable,
/// [`paddock_templates::DEFAULT_SUITE`]; any suite the server's debootstrap knows, verified with its
/// debian-archive-keyring) from the host's configured Debian mirror (else deb.debian.org),
/// with sudo, ca-certificates, the host's local CAs and the user `user` (uid 1000, group
/// sudo). Streams NDJSON build events; debootstrap's output (stdout and stderr) goes to
/// output events and the build log, never to the server's log.
#[utoipa::path(
    post,
    path = "/v1/templates/{name}/bootstrap",
    operation_id = "bootstrap_template",
    tag = "templates",
    params(TemplatePath, BootstrapQuery),
    responses(
        (status = 200, description = "NDJSON build events", content_type = "application/x-ndjson", body = BuildEvent),
        (status = 400, description = "A bad name, an unknown query parameter, or a suite the server's debootstrap does not know"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Below the developer role"),
        (status = 409, description = "Already being built"),
    )
)]
pub(crate) async fn bootstrap(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    check_name(&name)?;
    let mut suite = paddock_templates::Suite::default();
    for (k, v) in crate::wire::form_urlencoded_pairs(q.as_deref().unwrap_or("")) {
        match k.as_str() {
            "suite" => suite = paddock_templates::Suite::parse(&v).map_err(ApiError::BadRequest)?,
            other => return Err(crate::wire::unknown_param(other)),
        }
    }
    let busy = Busy::take_for_making(&name).await?;
    let rt = state.runtime.clone();
    let name2 = name.clone();
    Ok(stream_build(
        state,
        caller,
        name,
        busy,
        move |tx| async move { paddock_templates::bootstrap_debian(&rt, &name2, &suite, &tx).await },
    ))
}

/// `POST /v1/templates/{name}/pull` body.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PullBody {
    /// `host[:port]/name[:tag][@digest]`.
    image: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    /// Plain HTTP (loopback registries).
    #[serde(default)]
    insecure: bool,
    /// `os/arch`, default `linux/amd64`.
    #[serde(default)]
    platform: Option<String>,
}

/// Pull an OCI image as a template (developer)
///
/// Resolves the image index for the platform (default linux/amd64), downloads layers not
/// yet in the layer store (verified by digest, unpacked with whiteouts and opaque
/// directories), and registers the template with the image config's env, working
/// directory, user, entrypoint, cmd and exposed TCP ports as defaults. Streams NDJSON build
/// events with per-layer progress (`output`), then `done` or `error`.
#[utoipa::path(
    post,
    path = "/v1/templates/{name}/pull",
    operation_id = "pull_template",
    tag = "templates",
    params(TemplatePath),
    request_body = PullBody,
    responses(
        (status = 200, description = "NDJSON build events", content_type = "application/x-ndjson", body = BuildEvent),
        (status = 400, description = "Bad name or body"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Below the developer role"),
        (status = 409, description = "Already being made"),
    )
)]
pub(crate) async fn pull(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    super::Json(body): super::Json<PullBody>,
) -> ApiResult<Response> {
    check_name(&name)?;
    let mut opts = paddock_runtime::oci::PullOptions::new(body.image.clone());
    opts.username = body.username;
    opts.password = body.password;
    opts.insecure = body.insecure;
    if let Some(p) = &body.platform {
        let (os, arch) = p
            .split_once('/')
            .ok_or_else(|| ApiError::BadRequest(format!("platform {p:?} is not os/arch")))?;
        opts.platform = (os.to_owned(), arch.to_owned());
    }
    let busy = Busy::take_for_making(&name).await?;
    let rt = state.runtime.clone();
    let name2 = name.clone();
    Ok(stream_build(
        state,
        caller,
        name,
        busy,
        move |tx| async move {
            let fail = |m: String| BuildEvent::Error {
                step: Some(1),
                line: None,
                message: m,
            };
            let _ = tx
                .send(BuildEvent::Step {
                    step: 1,
                    of: 1,
                    line: 0,
                    instruction: format!("pull {}", opts.reference),
                    cached: false,
                })
                .await;
            let store = paddock_runtime::layerstore::LayerStore::open(rt.layers_root())
                .map_err(|e| fail(e.to_string()))?;
            let started = std::time::Instant::now();
            // Progress: one line per layer per 10 % (a channel would reorder nothing here).
            let last = Mutex::new(std::collections::HashMap::<String, u64>::new());
            let tx2 = tx.clone();
            let img = paddock_runtime::oci::pull(&store, &opts, move |p| {
                let pct = (p.done * 100).checked_div(p.total).unwrap_or(100);
                let mut l = last.lock().expect("progress poisoned");
                let prev = l.entry(p.layer.clone()).or_insert(u64::MAX);
                if *prev == u64::MAX
                    || pct >= prev.saturating_add(10)
                    || (pct == 100 && *prev != 100)
                {
                    *prev = pct;
                    let _ = tx2.try_send(BuildEvent::Output {
                        step: 1,
                        text: format!("{} {pct}% of {} bytes\n", short(&p.layer), p.total),
                    });
                }
            })
            .await
            .map_err(|e| fail(ApiError::from(e).to_string()))?;
            let c = img.config;
            let env = c
                .env
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let def = TemplateDef {
                name: name2.clone(),
                layers: img.layers.clone(),
                config: paddock_runtime::template::TemplateConfig {
                    env,
                    workdir: c.working_dir.filter(|w| !w.is_empty()),
                    user: c.user.filter(|u| !u.is_empty()),
                    entrypoint: c.entrypoint,
                    cmd: c.cmd,
                    ports: c.exposed_ports,
                    // An image's ENTRYPOINT and CMD are information only (often an
                    // interactive shell); a build file `FROM` it with `START` runs something.
                    start: None,
                    ready: None,
                    isolation: None,
                    limits: Default::default(),
                },
                source: format!("image {}@{}", opts.reference, img.digest),
                created_unix_ms: paddock_store::now_ms() as u64,
            };
            let _ = tx
                .send(BuildEvent::Done {
                    template: name2,
                    layers: img.layers.len(),
                    steps: 1,
                    cached_steps: usize::from(img.bytes_downloaded == 0),
                    seconds: started.elapsed().as_secs_f64(),
                })
                .await;
            Ok(def)
        },
    ))
}

/// Import a root filesystem tarball as a template (developer)
///
/// The body is a tar (application/x-tar), or a gzip or zstd compressed one
/// (application/gzip, application/zstd), unpacked into one layer with the same confinement
/// as image layers: `..` refused, nothing written through a symlink, device nodes and FIFOs
/// refused. Nothing is left behind on error.
#[utoipa::path(
    post,
    path = "/v1/templates/{name}/import",
    operation_id = "import_template",
    tag = "templates",
    params(TemplatePath),
    request_body(content(
        (inline(Binary) = "application/x-tar"),
        (inline(Binary) = "application/gzip"),
        (inline(Binary) = "application/zstd"),
    )),
    responses(
        (status = 201, description = "The template", body = TemplateView),
        (status = 400, description = "Bad name or archive"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Below the developer role"),
        (status = 409, description = "A template of that name is in use or being made"),
        (status = 415, description = "Not a tar"),
    )
)]
pub(crate) async fn import(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    check_name(&name)?;
    let ct = media_type(&req);
    let kind = match ct.as_str() {
        "application/x-tar" => 0,
        "application/gzip" | "application/x-gzip" => 1,
        "application/zstd" => 2,
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "send a tar as application/x-tar, application/gzip or application/zstd, not {other:?}"
            )));
        }
    };
    let busy = Busy::take_for_making(&name).await?;
    let res: ApiResult<_> = async {
        let ctx = save_context(req).await?;
        let store = paddock_runtime::layerstore::LayerStore::open(state.runtime.layers_root())?;
        let path = ctx.path().to_owned();
        let id = tokio::task::spawn_blocking(move || -> ApiResult<String> {
            let f = std::fs::File::open(&path)
                .map_err(|e| ApiError::Internal(format!("reading the upload: {e}")))?;
            let r: Box<dyn std::io::Read> = match kind {
                0 => Box::new(f),
                1 => Box::new(flate2::read::GzDecoder::new(f)),
                _ => Box::new(
                    zstd::stream::read::Decoder::new(f)
                        .map_err(|e| ApiError::BadRequest(format!("not zstd: {e}")))?,
                ),
            };
            store.unpack(r, None).map_err(|e| match e {
                paddock_runtime::RuntimeError::BadImage { reason } => ApiError::BadRequest(reason),
                e => ApiError::from(e),
            })
        })
        .await
        .map_err(|e| ApiError::Internal(format!("import task: {e}")))??;
        drop(ctx);
        let t = state.runtime.add_template(TemplateDef {
            name: name.clone(),
            layers: vec![id],
            config: Default::default(),
            source: "import of a root filesystem".into(),
            created_unix_ms: paddock_store::now_ms() as u64,
        })?;
        catalogue(&state, &t, Some(&caller.key.id)).await;
        Ok(t)
    }
    .await;
    drop(busy);
    let t = state
        .audited(&caller, "template.import", None, Some(name), res)
        .await?;
    Ok(typed_response(
        StatusCode::CREATED,
        &TemplateView::of(&state, &t).await,
    ))
}

/// Largest build log kept; what a build prints beyond it is dropped (the log says so).
pub const MAX_BUILD_LOG: u64 = 64 << 20;

/// Where the log of the last build, pull or bootstrap of template `name` is kept:
/// `<data>/templates/logs/<name>.log` (replaced by the next one of that name).
fn log_path(state: &AppState, name: &str) -> std::path::PathBuf {
    state
        .runtime
        .layers_root()
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
        .join("logs")
        .join(format!("{name}.log"))
}

/// A build log being written; writing problems are logged once and never fail the build.
struct BuildLog {
    file: Option<tokio::fs::File>,
    written: u64,
    truncated: bool,
}

impl BuildLog {
    async fn create(path: std::path::PathBuf) -> BuildLog {
        let file = async {
            if let Some(dir) = path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            tokio::fs::File::create(&path).await
        }
        .await
        .inspect_err(|e| tracing::warn!(path = %path.display(), "build log: {e}"))
        .ok();
        BuildLog {
            file,
            written: 0,
            truncated: false,
        }
    }

    async fn write(&mut self, ev: &BuildEvent) {
        let Some(f) = self.file.as_mut() else { return };
        let text = ev.log_text();
        let last = matches!(ev, BuildEvent::Done { .. } | BuildEvent::Error { .. });
        let room = MAX_BUILD_LOG.saturating_sub(self.written);
        let res = if (text.len() as u64) <= room || last {
            self.written += text.len() as u64;
            f.write_all(text.as_bytes()).await
        } else if !self.truncated {
            self.truncated = true;
            let note = format!("[... output beyond {MAX_BUILD_LOG} bytes left out ...]\n");
            self.written += note.len() as u64;
            f.write_all(note.as_bytes()).await
        } else {
            Ok(())
        };
        if let Err(e) = res {
            tracing::warn!("writing a build log: {e}");
            self.file = None;
        }
    }

    async fn finish(mut self) {
        if let Some(f) = self.file.as_mut() {
            let _ = f.flush().await;
        }
    }
}

/// The log of a template's last build, pull or bootstrap (developer)
///
/// Everything the last build, pull or bootstrap of `name` printed (step headers, every
/// step's output, the outcome), as kept on the server in
/// `<data>/templates/logs/<name>.log`; also for failed ones, and for one still running
/// (what it printed so far). Replaced by the next build of that name; capped at 64 MiB (the
/// excess is left out, with a note).
#[utoipa::path(
    get,
    path = "/v1/templates/{name}/log",
    operation_id = "template_build_log",
    tag = "templates",
    params(TemplatePath),
    responses(
        (status = 200, description = "The log", content_type = "text/plain", body = String),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Below the developer role"),
        (status = 404, description = "No build of that name on this server"),
    )
)]
pub(crate) async fn build_log(
    State(state): State<Arc<AppState>>,
    _c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    if !valid_name(&name) {
        return Err(ApiError::NotFound(format!("no build log for {name:?}")));
    }
    let text = match tokio::fs::read(log_path(&state, &name)).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::NotFound(format!(
                "no build log for {name:?}: it was not built, pulled or bootstrapped on this server"
            )));
        }
        Err(e) => return Err(ApiError::Internal(format!("reading the build log: {e}"))),
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(text))
        .unwrap_or_default())
}

fn short(id: &str) -> &str {
    let h = id.strip_prefix("sha256:").unwrap_or(id);
    &h[..h.len().min(12)]
}

/// The request's media type, lowercase, without parameters.
fn media_type(req: &Request) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Streams the request body into a temporary file, at most [`MAX_CONTEXT`] bytes.
async fn save_context(req: Request) -> ApiResult<tempfile::NamedTempFile> {
    let tmp = tempfile::NamedTempFile::new()
        .map_err(|e| ApiError::Internal(format!("temp file: {e}")))?;
    let mut f = tokio::fs::File::from_std(
        tmp.reopen()
            .map_err(|e| ApiError::Internal(format!("temp file: {e}")))?,
    );
    let mut body = req.into_body().into_data_stream();
    let mut n: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|_| ApiError::BadRequest("could not read the context".into()))?;
        n += chunk.len() as u64;
        if n > MAX_CONTEXT {
            return Err(ApiError::PayloadTooLarge(MAX_CONTEXT as usize));
        }
        f.write_all(&chunk)
            .await
            .map_err(|e| ApiError::Internal(format!("writing the context: {e}")))?;
    }
    f.flush()
        .await
        .map_err(|e| ApiError::Internal(format!("writing the context: {e}")))?;
    Ok(tmp)
}

/// The build file inside a context tar.
fn find_build_file(tar: &std::path::Path, want: Option<&str>) -> ApiResult<String> {
    use std::io::Read as _;
    let names: Vec<&str> = match want {
        Some(w) => vec![w],
        None => vec!["Paddockfile", "Dockerfile"],
    };
    let f = std::fs::File::open(tar).map_err(|e| ApiError::Internal(format!("context: {e}")))?;
    let mut ar = tar::Archive::new(f);
    let mut found: Option<(usize, String)> = None;
    let entries = ar
        .entries()
        .map_err(|e| ApiError::BadRequest(format!("the context is not a tar: {e}")))?;
    for e in entries {
        let mut e =
            e.map_err(|e| ApiError::BadRequest(format!("the context is not a tar: {e}")))?;
        let path = e
            .path()
            .map(|p| p.to_string_lossy().trim_start_matches("./").to_owned())
            .unwrap_or_default();
        if let Some(i) = names.iter().position(|n| *n == path)
            && found.as_ref().is_none_or(|(j, _)| i < *j)
        {
            if e.size() > 1 << 20 {
                return Err(ApiError::BadRequest(format!("{path} is larger than 1 MiB")));
            }
            let mut s = String::new();
            e.read_to_string(&mut s)
                .map_err(|_| ApiError::BadRequest(format!("{path} is not UTF-8 text")))?;
            found = Some((i, s));
        }
    }
    found.map(|(_, s)| s).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "the context has no {} at its root",
            names.join(" or ")
        ))
    })
}
