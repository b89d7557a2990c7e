//! `/v1/sandboxes`: create, list, get, delete, timeout, stats and logs.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use paddock_core::{Limits, parse_size};
use paddock_store::{AuditFilter, EventFilter, SandboxFilter, SandboxState};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Json;
use super::sandbox_view::{IsolationWire, SandboxIdPath, SandboxView};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::wire::{EventView, no_content, rfc3339, typed_response};
use paddock_service::lifecycle::{self, NewSandbox};
use paddock_service::sandbox_spec::{MAX_ENV, check_metadata, check_timeout};
use paddock_service::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/sandboxes", post(create).get(list))
        .route("/v1/sandboxes/{id}", get(get_one).delete(delete))
        .route("/v1/sandboxes/{id}/timeout", post(timeout))
        .route(
            "/v1/sandboxes/{id}/network",
            get(super::network::get_network).put(super::network::put_network),
        )
        .route("/v1/sandboxes/{id}/stats", get(stats))
        .route("/v1/sandboxes/{id}/logs", get(logs))
}

/// A size given as a number of bytes or a string such as `512M`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    #[schema(example = "512M")]
    Text(String),
}

impl Size {
    pub fn bytes(&self, field: &str) -> ApiResult<u64> {
        match self {
            Size::Bytes(b) => Ok(*b),
            Size::Text(t) => {
                parse_size(t).map_err(|e| ApiError::BadRequest(format!("{field}: {e}")))
            }
        }
    }
}

/// What a sandbox's timeout does, as a create asks for it.
#[allow(dead_code)] // A schema only: the request reads the text.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeoutChoice {
    Kill,
    Pause,
    PauseFilesystem,
}

/// A secret a sandbox receives as a file.
#[allow(dead_code)] // A schema only: `secrets::parse_uses` reads the JSON.
#[derive(Debug, ToSchema)]
pub struct SecretFileUse {
    /// The secret's name (default: the key)
    secret: Option<String>,
    #[schema(default = false)]
    file: bool,
}

/// A secret a sandbox receives: its name (as an env var), or as a file.
#[allow(dead_code)] // A schema only: `secrets::parse_uses` reads the JSON.
#[derive(Debug, ToSchema)]
#[serde(untagged)]
pub enum SecretUseWire {
    /// The secret's name, as an env var
    Env(String),
    File(SecretFileUse),
}

/// `POST /v1/sandboxes` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateSandbox)]
pub struct CreateBody {
    #[serde(default)]
    #[schema(nullable = false, default = "base")]
    template: Option<String>,
    /// Seconds, default 300, at most the server's maximum
    #[serde(default)]
    #[schema(nullable = false)]
    timeout: Option<u64>,
    /// Bytes, or a size such as `512M`
    #[serde(default)]
    #[schema(nullable = false)]
    memory: Option<Size>,
    /// Cores, more than 0 and at most 1024
    #[serde(default)]
    #[schema(nullable = false)]
    cpus: Option<f64>,
    #[serde(default)]
    #[schema(nullable = false)]
    pids: Option<u32>,
    /// Bytes, or a size such as `512M`
    #[serde(default)]
    #[schema(nullable = false)]
    disk: Option<Size>,
    /// At most 256
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// At most 64 entries, values at most 1024 bytes
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// Default user of processes (default `user`)
    #[serde(default)]
    #[schema(nullable = false)]
    user: Option<String>,
    #[serde(default)]
    #[schema(nullable = false)]
    webhook_url: Option<String>,
    /// Network policy; default `{"mode": "none"}`
    #[serde(default)]
    #[schema(nullable = false)]
    network: Option<super::network::NetworkPolicyBody>,
    /// What the timeout does: destroy the sandbox, or pause it (`full` or `filesystem`
    /// mode)
    #[serde(default)]
    #[schema(inline, value_type = Option<OnTimeoutChoice>, nullable = false, default = "kill")]
    on_timeout: Option<String>,
    /// A paused sandbox resumes on its first data-plane request (E2B envd, port proxy)
    #[serde(default)]
    auto_resume: bool,
    /// Tenant secrets the sandbox receives at create (their current versions; at most 64).
    /// `"ENV": "name"` sets the env var ENV to the secret's value; `"FILE": {"secret":
    /// "name", "file": true}` writes it to `/run/secrets/FILE` (a read-only tmpfs, mode
    /// 0400, owned by the sandbox's default user; `secret` defaults to FILE). An unknown
    /// secret is 400 and nothing is created; without a master key, 503. See
    /// docs/secrets.md.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, SecretUseWire>)]
    secrets: BTreeMap<String, serde_json::Value>,
    /// Labels the node must carry (a fleet's placement, `docs/fleet.md`); at most 32, keys
    /// and values 1 to 63 characters of A-Z a-z 0-9 . _ / -. Nothing matches (or a single
    /// host, which has no labels): 503 `no_capacity` naming what was short.
    #[serde(default)]
    node_selector: BTreeMap<String, String>,
    /// Isolation backend (docs/isolation.md). Default: the template's (build file
    /// `ISOLATION`), else the server's `--isolation-default`. Unknown values and `gvisor`
    /// on a host without runsc are 400.
    #[serde(default)]
    #[schema(inline, value_type = Option<IsolationWire>, nullable = false)]
    isolation: Option<String>,
    /// Volumes of the tenant to mount (docs/volumes.md), at most 16. An unknown (or
    /// another tenant's) volume: 404; a path over a system path (/, /proc, /sys, /dev,
    /// /etc, /usr, /bin, /sbin, /lib*, /boot, /run, /tmp, /opt/paddock) or used twice: 400.
    #[serde(default)]
    #[schema(max_items = 16, value_type = Vec<paddock_service::volumes::VolumeUse>)]
    volumes: Vec<paddock_service::volumes::VolumeUse>,
}

/// A page of sandboxes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SandboxList {
    pub sandboxes: Vec<SandboxView>,
    /// The id to pass as `after` for the next page; null on the last
    #[schema(required = true)]
    pub next: Option<String>,
}

/// The query of `GET /v1/sandboxes`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ListQuery {
    /// Comma-separated states (starting, running, paused, stopped) or `all`; default
    /// starting, running, paused
    state: Option<String>,
    /// Page size (1-1000)
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Id of the last sandbox of the previous page
    after: Option<String>,
}

impl CreateBody {
    /// Validates the body into a [`NewSandbox`].
    pub async fn validate(self, state: &AppState) -> ApiResult<NewSandbox> {
        let d = &paddock_service::templates::default_limits(
            state,
            self.template.as_deref().unwrap_or("base"),
        );
        let timeout = match self.timeout {
            Some(t) => check_timeout(state, t)?,
            None => state.cfg.default_timeout,
        };
        let memory_bytes = match &self.memory {
            Some(m) => m.bytes("memory")?,
            None => d.memory_bytes,
        };
        let cpu_millis = match self.cpus {
            Some(c) if c.is_finite() && c > 0.0 && c <= 1024.0 => (c * 1000.0).round() as u32,
            Some(c) => {
                return Err(ApiError::BadRequest(format!(
                    "cpus must be a positive number of cores, got {c}"
                )));
            }
            None => d.cpu_millis,
        };
        let limits = Limits {
            memory_bytes,
            cpu_millis,
            pids: self.pids.unwrap_or(d.pids),
            disk_bytes: match &self.disk {
                Some(s) => s.bytes("disk")?,
                None => d.disk_bytes,
            },
            // /tmp is charged to memory, so it can never be larger than half of it.
            tmp_bytes: d.tmp_bytes.min(memory_bytes / 2),
        };
        check_metadata(&self.metadata)?;
        if self.env.len() > MAX_ENV {
            return Err(ApiError::BadRequest(format!("at most {MAX_ENV} env vars")));
        }
        if let Some(url) = &self.webhook_url {
            state
                .webhooks
                .check_url(url)
                .await
                .map_err(ApiError::BadRequest)?;
        }
        Ok(NewSandbox {
            template: self.template.unwrap_or_else(|| "base".into()),
            timeout,
            limits,
            env: self.env,
            metadata: self.metadata,
            user: self.user,
            webhook_url: self.webhook_url,
            network: match self.network {
                Some(n) => n.into_policy()?,
                None => paddock_core::NetworkPolicy::none(),
            },
            ports_public: false,
            pause_on_timeout: match self.on_timeout.as_deref() {
                None | Some("kill") => None,
                Some("pause") => Some(paddock_runtime::PauseMode::Full),
                Some("pause_filesystem") => Some(paddock_runtime::PauseMode::Filesystem),
                Some(o) => {
                    return Err(ApiError::BadRequest(format!(
                        "on_timeout must be kill, pause or pause_filesystem, got {:?}",
                        paddock_service::state::truncate(o, 32)
                    )));
                }
            },
            auto_resume: self.auto_resume,
            secrets: crate::api::secrets::parse_uses(&self.secrets)?,
            node_selector: {
                crate::fleet::check_labels(&self.node_selector)
                    .map_err(|e| ApiError::BadRequest(format!("node_selector: {e}")))?;
                self.node_selector
            },
            isolation: paddock_service::isolation::parse(self.isolation.as_deref())?,
            volumes: self.volumes,
        })
    }
}

/// Create a sandbox
///
/// The timeout counts from the moment the sandbox is ready. When the template has a start
/// command it runs as a background process (tag `start`) and the create answers only once
/// the template's ready check passes; a start command that fails first, or a ready check
/// that does not pass within its timeout, fails the create with 422 `start_failed` (the
/// message names the check and ends with the start command's last 4 KiB of output). A
/// template the setup stage refuses (a directory or file it makes in the template's root,
/// such as `/opt/paddock`, is a symlink or not of the kind needed) fails the create with
/// 422 `template_unusable`; the message names the path inside the sandbox, never a host
/// path.
#[utoipa::path(
    post,
    path = "/v1/sandboxes",
    operation_id = "create_sandbox",
    tag = "sandboxes",
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created and running", body = SandboxView),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such template or volume"),
        (status = 413, description = "The body is too large"),
        (status = 415, description = "Not JSON"),
        (status = 422, description = "The start command or ready check failed (`start_failed`), or the template is unusable (`template_unusable`)"),
        (status = 429, description = "Rate limited, or the key's sandbox quota is used up"),
        (status = 503, description = "No capacity, or secrets without a master key"),
    )
)]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<CreateBody>,
) -> ApiResult<Response> {
    // Its own task: a client (or a control plane) leaving mid-create does not cut the
    // create between its record and its sandbox.
    let (st, c) = (state.clone(), caller.clone());
    let res = tokio::spawn(async move {
        // A fleet node fetches a template it lacks from a peer first.
        crate::fleet::layers::ensure(&st, body.template.as_deref().unwrap_or("base")).await?;
        let spec = body.validate(&st).await?;
        Ok(lifecycle::create(&st, &c, spec).await?)
    })
    .await
    .unwrap_or_else(|e| Err(ApiError::Internal(format!("create task: {e}"))));
    let id = res.as_ref().ok().map(|r| r.id.clone());
    let r = state
        .audited(&caller, "sandbox.create", id.as_deref(), None, res)
        .await?;
    Ok(typed_response(
        StatusCode::CREATED,
        &SandboxView::of(&state, &r),
    ))
}

/// Parses `state=a,b`, `metadata.KEY=VALUE` (repeatable), `limit` and `after`.
fn parse_list_query(q: Option<&str>) -> ApiResult<SandboxFilter> {
    let mut f = SandboxFilter {
        states: SandboxState::NOT_STOPPED.to_vec(),
        ..Default::default()
    };
    for (k, v) in crate::wire::form_urlencoded_pairs(q.unwrap_or("")) {
        match k.as_str() {
            "state" => {
                f.states = if v == "all" {
                    Vec::new()
                } else {
                    v.split(',')
                        .map(|s| {
                            SandboxState::parse(s).ok_or_else(|| {
                                ApiError::BadRequest(format!(
                                    "unknown state {s:?}: expected starting, running, paused, stopped or all"
                                ))
                            })
                        })
                        .collect::<ApiResult<_>>()?
                }
            }
            "limit" => f.limit = Some(crate::wire::parse_limit(&v)?),
            "after" => f.after = Some(v),
            k if k.starts_with("metadata.") => {
                f.metadata.insert(k["metadata.".len()..].to_owned(), v);
            }
            other => return Err(crate::wire::unknown_param(other)),
        }
    }
    Ok(f)
}

/// List sandboxes
///
/// Default: starting, running and paused ones. Admin keys see every tenant; a developer
/// key only the sandboxes it created.
#[utoipa::path(
    get,
    path = "/v1/sandboxes",
    operation_id = "list_sandboxes",
    tag = "sandboxes",
    params(
        ListQuery,
        ("metadata.KEY" = Option<String>, Query,
            description = "Only sandboxes whose metadata KEY equals the value (repeatable)"),
    ),
    responses(
        (status = 200, description = "A page of sandboxes", body = SandboxList),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut f = parse_list_query(q.as_deref())?;
    caller.scope(&mut f);
    let page_size = f.limit.unwrap_or(1000);
    f.limit = Some(page_size);
    let rows = state.store.list_sandboxes(&f).await?;
    let next = (rows.len() as u32 == page_size)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    let sandboxes = rows.iter().map(|r| SandboxView::of(&state, r)).collect();
    Ok(typed_response(
        StatusCode::OK,
        &SandboxList { sandboxes, next },
    ))
}

/// Get a sandbox
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}",
    operation_id = "get_sandbox",
    tag = "sandboxes",
    params(SandboxIdPath),
    responses(
        (status = 200, description = "The sandbox", body = SandboxView),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn get_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let r = state.record_for(&caller, &id).await?;
    Ok(typed_response(StatusCode::OK, &SandboxView::of(&state, &r)))
}

/// Destroy a sandbox
#[utoipa::path(
    delete,
    path = "/v1/sandboxes/{id}",
    operation_id = "delete_sandbox",
    tag = "sandboxes",
    params(SandboxIdPath),
    responses(
        (status = 204, description = "Destroyed"),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let res = async {
        let r = state.record_for(&caller, &id).await?;
        if r.state == SandboxState::Stopped {
            return Err(ApiError::sandbox_not_found(&id));
        }
        Ok(lifecycle::stop(&state, &id, paddock_store::StopReason::Killed).await?)
    }
    .await;
    state
        .audited(&caller, "sandbox.delete", Some(&id), None, res)
        .await?;
    Ok(no_content())
}

/// `POST /v1/sandboxes/{id}/timeout`: exactly one of `timeout` and `extend`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SetTimeout)]
pub(crate) struct TimeoutBody {
    /// New timeout in seconds from now
    #[serde(default)]
    #[schema(nullable = false)]
    timeout: Option<u64>,
    /// Seconds to add to the remaining time
    #[serde(default)]
    #[schema(nullable = false)]
    extend: Option<u64>,
}

/// Set or extend the timeout
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/timeout",
    operation_id = "set_timeout",
    tag = "sandboxes",
    params(SandboxIdPath),
    request_body = TimeoutBody,
    responses(
        (status = 200, description = "The sandbox", body = SandboxView),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox"),
        (status = 429, description = "Rate limited"),
        (status = 409, description = "The sandbox is not running"),
    )
)]
pub(crate) async fn timeout(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<TimeoutBody>,
) -> ApiResult<Response> {
    let res = async {
        let mut r = state.record_for(&caller, &id).await?;
        let secs = match (body.timeout, body.extend) {
            (Some(t), None) => t,
            (None, Some(e)) => {
                let remaining = r
                    .expires_at
                    .map_or(0, |x| (x - paddock_store::now_ms()).max(0) / 1000);
                u64::try_from(remaining).unwrap_or(0).saturating_add(e)
            }
            _ => {
                return Err(ApiError::BadRequest(
                    "give exactly one of `timeout` and `extend` (seconds)".into(),
                ));
            }
        };
        let d = check_timeout(&state, secs)?;
        lifecycle::set_timeout(&state, &mut r, d).await?;
        Ok(r)
    }
    .await;
    let r = state
        .audited(&caller, "sandbox.timeout", Some(&id), None, res)
        .await?;
    Ok(typed_response(StatusCode::OK, &SandboxView::of(&state, &r)))
}

/// One usage sample.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatsSample {
    #[schema(value_type = String, format = DateTime)]
    pub at: serde_json::Value,
    /// Cumulative
    pub cpu_usage_ns: u64,
    pub memory_bytes: u64,
}

/// A sandbox's resource usage.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Stats)]
pub struct StatsView {
    pub id: String,
    pub cpu_usage_ns: u64,
    pub memory_bytes: u64,
    #[schema(required = true)]
    pub memory_limit_bytes: Option<u64>,
    pub pids: u64,
    #[schema(required = true)]
    pub disk_bytes: Option<u64>,
    #[schema(required = true)]
    pub disk_limit_bytes: Option<u64>,
    pub oom_kills: u64,
    /// Only with ?history=true: the samples taken every --metrics-interval (5 s; the last
    /// 720), oldest first
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub history: Option<Vec<StatsSample>>,
}

/// The query of `GET .../stats`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct StatsQuery {
    /// Also return `history`: the samples taken every --metrics-interval (5 s; the last
    /// 720), oldest first, each with `at`, cumulative `cpu_usage_ns` and `memory_bytes`
    #[param(default = false)]
    history: Option<bool>,
}

/// Current resource usage, optionally with its sampled history
///
/// `GET /v1/sandboxes/{id}/stats[?history=true]`: usage now; with `history`, also the
/// samples taken every `--metrics-interval` (cumulative CPU time and memory, oldest first).
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/stats",
    operation_id = "sandbox_stats",
    tag = "sandboxes",
    params(SandboxIdPath, StatsQuery),
    responses(
        (status = 200, description = "Usage", body = StatsView),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox"),
        (status = 429, description = "Rate limited"),
        (status = 409, description = "The sandbox is not running"),
    )
)]
pub(crate) async fn stats(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut history = false;
    for (k, v) in crate::wire::form_urlencoded_pairs(q.as_deref().unwrap_or("")) {
        match (k.as_str(), v.as_str()) {
            ("history", "true" | "1") => history = true,
            ("history", "false" | "0") => history = false,
            ("history", other) => {
                return Err(ApiError::BadRequest(format!(
                    "history must be true or false, not {:?}",
                    paddock_service::state::truncate(other, 32)
                )));
            }
            _ => return Err(crate::wire::unknown_param(&k)),
        }
    }
    let (r, s) = state.sandbox_for(&caller, &id).await?;
    let rt = state.runtime.clone();
    let st = tokio::task::spawn_blocking(move || s.stats(&rt))
        .await
        .map_err(|e| ApiError::Internal(format!("stats task: {e}")))?;
    let history = history.then(|| {
        state
            .usage
            .series(&r.id)
            .iter()
            .map(|x| StatsSample {
                at: rfc3339(Some(x.at_ms)),
                cpu_usage_ns: x.cpu_ns,
                memory_bytes: x.mem_bytes,
            })
            .collect()
    });
    let v = StatsView {
        id: r.id,
        cpu_usage_ns: st.cpu_usage_ns,
        memory_bytes: st.memory_bytes,
        memory_limit_bytes: r.spec.memory_bytes,
        pids: st.pids,
        disk_bytes: st.disk_bytes,
        disk_limit_bytes: r.spec.disk_bytes,
        oom_kills: st.oom_kills,
        history,
    };
    Ok(typed_response(StatusCode::OK, &v))
}

/// A command of a sandbox's exec history.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = ExecRecord)]
pub struct ExecRecordView {
    #[schema(value_type = String, format = DateTime)]
    pub at: serde_json::Value,
    pub command: String,
    #[schema(required = true)]
    pub pid: Option<u32>,
    #[schema(required = true)]
    pub exit_code: Option<i32>,
    /// `exit status N`, `signal: killed`, `timeout`, `running`, `failed: <reason>`, ...
    pub status: String,
    #[schema(required = true)]
    pub duration_ms: Option<i64>,
}

/// An audit action `GET .../logs` lists as activity.
#[allow(dead_code)] // A schema only: the entries carry the stored action's text.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub enum LoggedAction {
    #[serde(rename = "files.write")]
    FilesWrite,
    #[serde(rename = "files.delete")]
    FilesDelete,
    #[serde(rename = "files.mkdir")]
    FilesMkdir,
    #[serde(rename = "files.move")]
    FilesMove,
    #[serde(rename = "files.archive_extract")]
    FilesArchiveExtract,
    #[serde(rename = "tests.run")]
    TestsRun,
}

/// A file change or test run of a sandbox, from the audit trail.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Activity {
    #[schema(value_type = String, format = DateTime)]
    pub at: serde_json::Value,
    #[schema(inline, value_type = LoggedAction)]
    pub action: String,
    /// ok, or the error code
    pub outcome: String,
    #[schema(required = true)]
    pub detail: Option<String>,
}

/// A sandbox's events, exec history and activity.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = SandboxLogs)]
pub struct LogsView {
    pub events: Vec<EventView>,
    pub execs: Vec<ExecRecordView>,
    /// File changes (upload, archive extract, delete, mkdir, move) and test runs of the
    /// sandbox, oldest first, from the audit trail (the newest 1000 audit entries are
    /// searched).
    pub activity: Vec<Activity>,
}

/// Events and exec history of a sandbox
///
/// Also after it stopped: its lifecycle events, its exec history and its file changes
/// and test runs (each list at most 1000).
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/logs",
    operation_id = "sandbox_logs",
    tag = "sandboxes",
    params(SandboxIdPath),
    responses(
        (status = 200, description = "Logs", body = LogsView),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn logs(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let r = state.record_for(&caller, &id).await?;
    let events = state
        .store
        .list_events(&EventFilter {
            sandbox_id: Some(r.id.clone()),
            limit: Some(1000),
            ..Default::default()
        })
        .await?;
    // Exec history and audit rows written behind answers are in before the listing.
    state.behind.settled().await;
    let execs = state.store.list_execs(&r.id, 1000).await?;
    // File changes and test runs, from the audit trail (the newest 1000 entries of the
    // sandbox; commands and lifecycle steps are already above).
    let activity = state
        .store
        .list_audit(&AuditFilter {
            sandbox_id: Some(r.id.clone()),
            limit: Some(1000),
            ..Default::default()
        })
        .await?
        .into_iter()
        .filter(|a| LOGGED_ACTIONS.contains(&a.action.as_str()))
        .rev()
        .map(|a| Activity {
            at: rfc3339(Some(a.at)),
            action: a.action,
            outcome: a.outcome,
            detail: a.detail,
        })
        .collect();
    let v = LogsView {
        events: events.iter().map(EventView::of).collect(),
        execs: execs
            .iter()
            .map(|e| ExecRecordView {
                at: rfc3339(Some(e.at)),
                command: e.command.clone(),
                pid: e.pid,
                exit_code: e.exit_code,
                status: e.status.clone(),
                duration_ms: e.duration_ms,
            })
            .collect(),
        activity,
    };
    Ok(typed_response(StatusCode::OK, &v))
}

/// The audit actions `GET .../logs` lists as a sandbox's activity.
const LOGGED_ACTIONS: [&str; 6] = [
    "files.write",
    "files.delete",
    "files.mkdir",
    "files.move",
    "files.archive_extract",
    "tests.run",
];

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Stats, logs and a list page are the `json!` bodies they replaced: `history` only
    /// when asked for, unknown limits and sizes null, the last page's `next` null.
    #[test]
    fn stats_logs_and_pages_serialise_as_before() {
        let st = StatsView {
            id: "s".into(),
            cpu_usage_ns: 5,
            memory_bytes: 6,
            memory_limit_bytes: None,
            pids: 1,
            disk_bytes: None,
            disk_limit_bytes: Some(9),
            oom_kills: 0,
            history: None,
        };
        let before = json!({"id": "s", "cpu_usage_ns": 5, "memory_bytes": 6,
            "memory_limit_bytes": null, "pids": 1, "disk_bytes": null, "disk_limit_bytes": 9,
            "oom_kills": 0});
        assert_eq!(serde_json::to_value(&st).unwrap(), before);
        let with = StatsView {
            history: Some(vec![StatsSample {
                at: rfc3339(Some(0)),
                cpu_usage_ns: 1,
                memory_bytes: 2,
            }]),
            ..st
        };
        let mut before = before;
        before["history"] =
            json!([{"at": "1970-01-01T00:00:00Z", "cpu_usage_ns": 1, "memory_bytes": 2}]);
        assert_eq!(serde_json::to_value(&with).unwrap(), before);
        let logs = LogsView {
            events: vec![],
            execs: vec![ExecRecordView {
                at: rfc3339(Some(0)),
                command: "ls".into(),
                pid: None,
                exit_code: None,
                status: "running".into(),
                duration_ms: None,
            }],
            activity: vec![Activity {
                at: rfc3339(Some(0)),
                action: "files.write".into(),
                outcome: "ok".into(),
                detail: None,
            }],
        };
        assert_eq!(
            serde_json::to_value(&logs).unwrap(),
            json!({"events": [], "execs": [{"at": "1970-01-01T00:00:00Z", "command": "ls",
                "pid": null, "exit_code": null, "status": "running", "duration_ms": null}],
                "activity": [{"at": "1970-01-01T00:00:00Z", "action": "files.write",
                "outcome": "ok", "detail": null}]})
        );
        let page = SandboxList {
            sandboxes: vec![],
            next: None,
        };
        assert_eq!(
            serde_json::to_value(&page).unwrap().to_string(),
            r#"{"next":null,"sandboxes":[]}"#
        );
    }
}
