//! `/v1/sandboxes`: create, list, get, delete, timeout, stats and logs.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use paddock_core::{Limits, parse_size};
use paddock_store::{AuditFilter, EventFilter, SandboxFilter, SandboxRecord, SandboxState};
use serde::Deserialize;

use super::Json;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::lifecycle::{self, NewSandbox};
use crate::sandbox_spec::{MAX_ENV, check_metadata, check_timeout};
use crate::state::AppState;
use crate::wire::{json_response, no_content, rfc3339};

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
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
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

/// `POST /v1/sandboxes` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[serde(default)]
    template: Option<String>,
    /// Seconds.
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    memory: Option<Size>,
    #[serde(default)]
    cpus: Option<f64>,
    #[serde(default)]
    pids: Option<u32>,
    #[serde(default)]
    disk: Option<Size>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    webhook_url: Option<String>,
    /// Network policy; default `{"mode": "none"}`.
    #[serde(default)]
    network: Option<super::network::NetworkPolicyBody>,
    /// What the timeout does: `kill` (default), `pause` (full) or `pause_filesystem`.
    #[serde(default)]
    on_timeout: Option<String>,
    /// A paused sandbox resumes on its first data-plane request (E2B envd, port proxy).
    #[serde(default)]
    auto_resume: bool,
    /// Tenant secrets: `{"ENV_NAME": "secret"}` or `{"FILE": {"secret": "name", "file": true}}`.
    #[serde(default)]
    secrets: BTreeMap<String, serde_json::Value>,
    /// Labels the node must carry (a fleet's placement; a single host has none).
    #[serde(default)]
    node_selector: BTreeMap<String, String>,
    /// `native` or `gvisor`; absent: the template's default, else the server's.
    #[serde(default)]
    isolation: Option<String>,
    /// Volumes: `[{"name", "path", "read_only"?}]`.
    #[serde(default)]
    volumes: Vec<crate::volumes::VolumeUse>,
}

impl CreateBody {
    /// Validates the body into a [`NewSandbox`].
    pub async fn validate(self, state: &AppState) -> ApiResult<NewSandbox> {
        let d =
            &crate::templates::default_limits(state, self.template.as_deref().unwrap_or("base"));
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
                        crate::state::truncate(o, 32)
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
            isolation: crate::isolation::parse(self.isolation.as_deref())?,
            volumes: self.volumes,
        })
    }
}

/// The wire form of a sandbox ([`super::sandbox_view::SandboxView`]).
pub fn sandbox_json(state: &AppState, r: &SandboxRecord) -> serde_json::Value {
    serde_json::to_value(super::sandbox_view::SandboxView::of(state, r)).unwrap_or_default()
}

async fn create(
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
        lifecycle::create(&st, &c, spec).await
    })
    .await
    .unwrap_or_else(|e| Err(ApiError::Internal(format!("create task: {e}"))));
    let id = res.as_ref().ok().map(|r| r.id.clone());
    let r = state
        .audited(&caller, "sandbox.create", id.as_deref(), None, res)
        .await?;
    Ok(json_response(StatusCode::CREATED, sandbox_json(&state, &r)))
}

/// Parses `state=a,b`, `metadata.KEY=VALUE` (repeatable), `limit` and `after`.
fn parse_list_query(q: Option<&str>) -> ApiResult<SandboxFilter> {
    let mut f = SandboxFilter {
        states: vec![
            SandboxState::Starting,
            SandboxState::Running,
            SandboxState::Paused,
        ],
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

async fn list(
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
    let items: Vec<_> = rows.iter().map(|r| sandbox_json(&state, r)).collect();
    Ok(json_response(
        StatusCode::OK,
        serde_json::json!({ "sandboxes": items, "next": next }),
    ))
}

async fn get_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let r = state.record_for(&caller, &id).await?;
    Ok(json_response(StatusCode::OK, sandbox_json(&state, &r)))
}

async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let res = async {
        let r = state.record_for(&caller, &id).await?;
        if r.state == SandboxState::Stopped {
            return Err(ApiError::sandbox_not_found(&id));
        }
        lifecycle::stop(&state, &id, paddock_store::StopReason::Killed).await
    }
    .await;
    state
        .audited(&caller, "sandbox.delete", Some(&id), None, res)
        .await?;
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutBody {
    /// New timeout in seconds, counted from now.
    #[serde(default)]
    timeout: Option<u64>,
    /// Seconds to add to the current deadline.
    #[serde(default)]
    extend: Option<u64>,
}

async fn timeout(
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
    Ok(json_response(StatusCode::OK, sandbox_json(&state, &r)))
}

/// `GET /v1/sandboxes/{id}/stats[?history=true]`: usage now; with `history`, also the
/// samples taken every `--metrics-interval` (cumulative CPU time and memory, oldest first).
async fn stats(
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
                    crate::state::truncate(other, 32)
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
    let mut v = serde_json::json!({
            "id": r.id,
            "cpu_usage_ns": st.cpu_usage_ns,
            "memory_bytes": st.memory_bytes,
            "memory_limit_bytes": r.spec.memory_bytes,
            "pids": st.pids,
            "disk_bytes": st.disk_bytes,
            "disk_limit_bytes": r.spec.disk_bytes,
            "oom_kills": st.oom_kills,
    });
    if history {
        v["history"] = state
            .usage
            .series(&r.id)
            .iter()
            .map(|x| {
                serde_json::json!({
                    "at": rfc3339(Some(x.at_ms)),
                    "cpu_usage_ns": x.cpu_ns,
                    "memory_bytes": x.mem_bytes,
                })
            })
            .collect();
    }
    Ok(json_response(StatusCode::OK, v))
}

/// Events and exec history of one sandbox (also after it stopped).
async fn logs(
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
    let activity: Vec<_> = state
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
        .map(|a| {
            serde_json::json!({
                "at": rfc3339(Some(a.at)),
                "action": a.action,
                "outcome": a.outcome,
                "detail": a.detail,
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        serde_json::json!({
            "events": events.iter().map(crate::wire::event_json).collect::<Vec<_>>(),
            "execs": execs.iter().map(|e| serde_json::json!({
                "at": rfc3339(Some(e.at)),
                "command": e.command,
                "pid": e.pid,
                "exit_code": e.exit_code,
                "status": e.status,
                "duration_ms": e.duration_ms,
            })).collect::<Vec<_>>(),
            "activity": activity,
        }),
    ))
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
