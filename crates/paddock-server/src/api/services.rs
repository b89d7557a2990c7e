//! `/v1/sandboxes/{id}/services`: supervised services (named long-running processes with a
//! restart policy, an optional health check and logs). The sandbox's agent supervises them
//! (PID 1 sees every exit, survives a server restart and dies with the sandbox; see
//! `docs/services.md`); these routes check the request and forward it to the agent.
//!
//! - `GET .../services`, `POST .../services` (201; 409 for a name in use),
//! - `GET .../services/{name}`, `DELETE .../services/{name}` (stops it, forgets it),
//! - `POST .../services/{name}/start|stop|restart`,
//! - `GET .../services/{name}/logs?from_seq=N`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use paddock_runtime::Sandbox;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::Json;
use super::sandbox_view::SandboxIdPath;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::wire::form_urlencoded_pairs;
use crate::wire::{no_content, typed_response};
use paddock_service::state::AppState;

/// Health check interval bounds and default (milliseconds); the agent holds the same.
pub const HEALTH_INTERVAL_MIN_MS: u64 = 1000;
pub const HEALTH_INTERVAL_MAX_MS: u64 = 3_600_000;
/// Most environment variables of a service.
pub const MAX_ENV: usize = 256;
/// Longest command line (the sum of its words' lengths).
pub const MAX_CMD_BYTES: usize = 64 * 1024;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/sandboxes/{id}/services", get(list).post(create))
        .route(
            "/v1/sandboxes/{id}/services/{name}",
            get(get_one).delete(delete),
        )
        .route("/v1/sandboxes/{id}/services/{name}/start", post(start))
        .route("/v1/sandboxes/{id}/services/{name}/stop", post(stop))
        .route("/v1/sandboxes/{id}/services/{name}/restart", post(restart))
        .route("/v1/sandboxes/{id}/services/{name}/logs", get(logs))
}

/// A health check: exactly one of cmd and port.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthBody {
    /// A shell command that must exit 0 (as the service's user, in its cwd, with its env; at
    /// most 30 s or the interval)
    #[serde(default)]
    cmd: Option<String>,
    /// Must accept a TCP connection on the sandbox's 127.0.0.1
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    port: Option<u32>,
    #[serde(default)]
    #[schema(minimum = 1000, maximum = 3600000, default = 10000)]
    interval_ms: Option<u64>,
}

/// A restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartWire {
    /// After every exit.
    Always,
    /// After an exit with a non-zero status or by a signal.
    OnFailure,
}

/// A service to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ServiceSpec)]
pub(crate) struct ServiceBody {
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    name: String,
    /// Program and arguments (or `command`)
    #[serde(default)]
    cmd: Option<Vec<String>>,
    /// A shell command line, run with bash -l -c (or `cmd`)
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    #[schema(inline, value_type = Option<RestartWire>, default = "always")]
    restart: Option<String>,
    /// Exactly one of cmd and port.
    #[serde(default)]
    health: Option<HealthBody>,
}

/// A health check as the agent takes it and shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthCheck {
    /// A shell command that must exit 0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub cmd: Option<String>,
    /// Must accept a TCP connection on the sandbox's 127.0.0.1
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1, maximum = 65535)]
    pub port: Option<u32>,
    pub interval_ms: u64,
}

/// The spec sent to the sandbox's agent.
#[derive(Debug, Serialize)]
struct AgentSpec {
    name: String,
    cmd: Vec<String>,
    env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cwd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    restart: RestartWire,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<HealthCheck>,
}

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStateWire {
    Running,
    Backoff,
    Stopped,
    Exited,
}

/// What a service's health check last found (`none`: no check).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStateWire {
    None,
    Unknown,
    Healthy,
    Unhealthy,
}

/// How a service's last run ended.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LastExit {
    pub exit_code: Option<i32>,
    pub status: String,
    pub at_unix_ms: u64,
}

/// A supervised service: its spec and its state, as the sandbox's agent reports them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Service)]
pub struct ServiceView {
    pub name: String,
    pub cmd: Vec<String>,
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub user: Option<String>,
    #[schema(inline)]
    pub restart: RestartWire,
    /// The health check (absent without one). Exactly one of cmd and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub health_check: Option<HealthCheck>,
    #[schema(inline)]
    pub state: ServiceStateWire,
    pub pid: Option<u32>,
    /// Automatic restarts so far
    pub restarts: u64,
    pub started_at_unix_ms: Option<u64>,
    pub last_exit: Option<LastExit>,
    /// When the next start happens (`backoff`)
    pub next_start_in_ms: Option<u64>,
    /// What the last check found (`none`: no check)
    #[schema(inline)]
    pub health: HealthStateWire,
    /// Why the last check failed
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub health_detail: Option<String>,
}

/// A sandbox's services.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceList {
    pub services: Vec<ServiceView>,
}

/// An output stream.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamWire {
    Stdout,
    Stderr,
}

/// One chunk of a service's output.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceLogEntry {
    pub seq: u64,
    /// The run it comes from (1 for the first start)
    pub run: u64,
    #[schema(inline)]
    pub stream: StreamWire,
    pub data: String,
}

/// A page of a service's output.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceLogs {
    pub first_seq: u64,
    /// Ask again from here
    pub next_seq: u64,
    pub entries: Vec<ServiceLogEntry>,
}

/// The path of a route about one service.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct ServicePath {
    /// Sandbox id
    #[param(pattern = "^[a-z0-9]{20}$")]
    id: String,
    /// Service name
    #[param(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    name: String,
}

/// The query of `GET .../services/{name}/logs`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct LogsQuery {
    /// First chunk wanted (default 0: the oldest kept)
    from_seq: Option<u64>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

fn check_name(name: &str) -> ApiResult<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "a service name is 1 to 63 of a-z 0-9 . _ -, starting with a letter or digit".into(),
        ))
    }
}

impl ServiceBody {
    /// Checks every field and returns the agent's spec.
    fn into_spec(self) -> ApiResult<AgentSpec> {
        check_name(&self.name)?;
        let cmd = crate::wire::command_argv(self.cmd, self.command)?;
        if cmd.iter().map(String::len).sum::<usize>() > MAX_CMD_BYTES {
            return Err(ApiError::BadRequest(format!(
                "the command is longer than {MAX_CMD_BYTES} bytes"
            )));
        }
        if self.env.len() > MAX_ENV {
            return Err(ApiError::BadRequest(format!(
                "at most {MAX_ENV} env variables"
            )));
        }
        if let Some(k) = self
            .env
            .keys()
            .find(|k| k.is_empty() || k.contains('=') || k.bytes().any(|b| b.is_ascii_whitespace()))
        {
            return Err(ApiError::BadRequest(format!(
                "env: {k:?} is not a variable name"
            )));
        }
        let restart = match self.restart.as_deref() {
            None | Some("always") => RestartWire::Always,
            Some("on-failure") => RestartWire::OnFailure,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "restart {other:?} is not a policy: use always or on-failure"
                )));
            }
        };
        let health = match self.health {
            None => None,
            Some(h) => {
                let interval = h.interval_ms.unwrap_or(10_000);
                if !(HEALTH_INTERVAL_MIN_MS..=HEALTH_INTERVAL_MAX_MS).contains(&interval) {
                    return Err(ApiError::BadRequest(format!(
                        "health.interval_ms must be {HEALTH_INTERVAL_MIN_MS} to {HEALTH_INTERVAL_MAX_MS}"
                    )));
                }
                match (h.cmd, h.port) {
                    (Some(c), None) if !c.trim().is_empty() => Some(HealthCheck {
                        cmd: Some(c),
                        port: None,
                        interval_ms: interval,
                    }),
                    (None, Some(p)) if (1..=65535).contains(&p) => Some(HealthCheck {
                        cmd: None,
                        port: Some(p),
                        interval_ms: interval,
                    }),
                    (None, Some(p)) => {
                        return Err(ApiError::BadRequest(format!(
                            "health.port {p} is not a TCP port (1 to 65535)"
                        )));
                    }
                    _ => {
                        return Err(ApiError::BadRequest(
                            "health takes exactly one of cmd (a shell command) and port".into(),
                        ));
                    }
                }
            }
        };
        Ok(AgentSpec {
            name: self.name,
            cmd,
            env: self.env,
            cwd: self.cwd,
            user: self.user,
            restart,
            health,
        })
    }
}

/// Sends one request to the sandbox's agent; its JSON answer as `T`, or its error mapped.
async fn agent<T: DeserializeOwned>(
    sbx: &Sandbox,
    method: http::Method,
    path: &str,
    body: Option<&AgentSpec>,
) -> ApiResult<T> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("http://agent{path}"));
    let bytes = match body {
        Some(v) => {
            b = b.header(http::header::CONTENT_TYPE, "application/json");
            bytes::Bytes::from(serde_json::to_vec(v).unwrap_or_default())
        }
        None => bytes::Bytes::new(),
    };
    let req = b
        .body(http_body_util::Full::new(bytes))
        .map_err(|e| ApiError::Internal(format!("building agent request: {e}")))?;
    let resp = sbx.agent_request(req).await?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::Agent(format!("reading the agent's answer: {e}")))?
        .to_bytes();
    if status.is_success() {
        // A 204 (delete) has no body: `null` then, which only `IgnoredAny` takes.
        let json: &[u8] = if body.is_empty() { b"null" } else { &body };
        return serde_json::from_slice(json).map_err(|e| {
            tracing::warn!(%e, "agent services answer");
            ApiError::Agent("the sandbox's agent answered something unexpected".into())
        });
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let msg = v["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    Err(match status.as_u16() {
        400 => ApiError::BadRequest(msg),
        404 if path.starts_with("/services/") => ApiError::NotFound(msg),
        409 => ApiError::Conflict(msg),
        404 => ApiError::NotImplemented(
            "this sandbox's agent has no services (it predates them)".into(),
        ),
        _ => {
            tracing::warn!(%status, %msg, "agent services error");
            ApiError::Agent("the sandbox's agent failed".into())
        }
    })
}

/// List a sandbox's supervised services
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/services",
    operation_id = "list_services",
    tag = "services",
    params(SandboxIdPath),
    responses(
        (status = 200, description = "The services", body = ServiceList),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox"),
        (status = 409, description = "The sandbox is not running"),
    )
)]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (_, sbx) = state.sandbox_for(&caller, &id).await?;
    let v: ServiceList = agent(&sbx, http::Method::GET, "/services", None).await?;
    Ok(typed_response(StatusCode::OK, &v))
}

/// Add a supervised service and start it
///
/// The sandbox's agent (PID 1) supervises the service: it restarts its process per
/// `restart` (`always`, the default, or `on-failure`: not after exit 0) after a pause
/// doubling from 250 ms to 30 s (reset after a run of 10 s), runs the optional health check
/// every `interval_ms` while it runs (`healthy`/`unhealthy`, no restart), keeps its output
/// (1 MiB, all runs) and ends it with the sandbox. At most 32 services per sandbox. 400 for
/// a bad name, command, policy or health check; 409 for a name in use. See
/// docs/services.md.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/services",
    operation_id = "create_service",
    tag = "services",
    params(SandboxIdPath),
    request_body = ServiceBody,
    responses(
        (status = 201, description = "The service, running (or why its start failed)", body = ServiceView),
        (status = 400, description = "Bad name, command, policy or health check"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox"),
        (status = 409, description = "A name in use, or the sandbox is not running"),
    )
)]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<ServiceBody>,
) -> ApiResult<Response> {
    let name = body.name.clone();
    let res = async {
        let (_, sbx) = state.sandbox_for(&caller, &id).await?;
        let spec = body.into_spec()?;
        agent::<ServiceView>(&sbx, http::Method::POST, "/services", Some(&spec)).await
    }
    .await;
    let v = state
        .audited(&caller, "service.create", Some(&id), Some(name), res)
        .await?;
    Ok(typed_response(StatusCode::CREATED, &v))
}

/// Show a service
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/services/{name}",
    operation_id = "get_service",
    tag = "services",
    params(ServicePath),
    responses(
        (status = 200, description = "The service", body = ServiceView),
        (status = 400, description = "Bad name"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox or service"),
        (status = 409, description = "The sandbox is not running"),
    )
)]
pub(crate) async fn get_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (_, sbx) = state.sandbox_for(&caller, &id).await?;
    check_name(&name)?;
    let v: ServiceView = agent(&sbx, http::Method::GET, &format!("/services/{name}"), None).await?;
    Ok(typed_response(StatusCode::OK, &v))
}

/// Stop a service and remove it
#[utoipa::path(
    delete,
    path = "/v1/sandboxes/{id}/services/{name}",
    operation_id = "delete_service",
    tag = "services",
    params(ServicePath),
    responses(
        (status = 204, description = "Stopped (SIGTERM, SIGKILL to its whole tree after 5 s) and removed"),
        (status = 400, description = "Bad name"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox or service"),
        (status = 409, description = "The sandbox is not running"),
    )
)]
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let res = async {
        let (_, sbx) = state.sandbox_for(&caller, &id).await?;
        check_name(&name)?;
        agent::<serde::de::IgnoredAny>(
            &sbx,
            http::Method::DELETE,
            &format!("/services/{name}"),
            None,
        )
        .await
    }
    .await;
    state
        .audited(&caller, "service.delete", Some(&id), Some(name), res)
        .await?;
    Ok(no_content())
}

async fn action(
    state: Arc<AppState>,
    caller: Caller,
    id: String,
    name: String,
    what: &'static str,
) -> ApiResult<Response> {
    let res = async {
        let (_, sbx) = state.sandbox_for(&caller, &id).await?;
        check_name(&name)?;
        agent(
            &sbx,
            http::Method::POST,
            &format!("/services/{name}/{what}"),
            None,
        )
        .await
    }
    .await;
    let v: ServiceView = state
        .audited(
            &caller,
            &format!("service.{what}"),
            Some(&id),
            Some(name),
            res,
        )
        .await?;
    Ok(typed_response(StatusCode::OK, &v))
}

/// Start a stopped or exited service (no-op while it runs)
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/services/{name}/start",
    operation_id = "start_service",
    tag = "services",
    params(ServicePath),
    responses(
        (status = 200, description = "The service afterwards", body = ServiceView),
        (status = 400, description = "Bad name"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox or service"),
        (status = 409, description = "The sandbox is not running"),
    )
)]
pub(crate) async fn start(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    action(state, caller, id, name, "start").await
}

/// Stop a service (SIGTERM, then SIGKILL to its tree after 5 s); it stays stopped
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/services/{name}/stop",
    operation_id = "stop_service",
    tag = "services",
    params(ServicePath),
    responses(
        (status = 200, description = "The service afterwards", body = ServiceView),
        (status = 400, description = "Bad name"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox or service"),
        (status = 409, description = "The sandbox is not running"),
    )
)]
pub(crate) async fn stop(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    action(state, caller, id, name, "stop").await
}

/// Stop a service if it runs and start it again at once
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/services/{name}/restart",
    operation_id = "restart_service",
    tag = "services",
    params(ServicePath),
    responses(
        (status = 200, description = "The service afterwards", body = ServiceView),
        (status = 400, description = "Bad name"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox or service"),
        (status = 409, description = "The sandbox is not running"),
    )
)]
pub(crate) async fn restart(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    action(state, caller, id, name, "restart").await
}

/// A service's output
///
/// Output of every run (the last 1 MiB), in chunks numbered from 0, each with its run (1 for
/// the first start) and stream; at most 256 KiB per answer: ask again from `next_seq`.
/// `?from_seq=N`: the output from chunk `N` on (or from the oldest kept).
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/services/{name}/logs",
    operation_id = "service_logs",
    tag = "services",
    params(ServicePath, LogsQuery),
    responses(
        (status = 200, description = "Output", body = ServiceLogs),
        (status = 400, description = "Bad name"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox or service"),
        (status = 409, description = "The sandbox is not running"),
    )
)]
pub(crate) async fn logs(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let (_, sbx) = state.sandbox_for(&caller, &id).await?;
    check_name(&name)?;
    let mut from = 0u64;
    for (k, v) in form_urlencoded_pairs(q.as_deref().unwrap_or("")) {
        match k.as_str() {
            "from_seq" => {
                from = v.parse().map_err(|_| {
                    ApiError::BadRequest(format!("from_seq {v:?} is not a sequence number"))
                })?;
            }
            other => return Err(crate::wire::unknown_param(other)),
        }
    }
    let v: ServiceLogs = agent(
        &sbx,
        http::Method::GET,
        &format!("/services/{name}/logs?from={from}"),
        None,
    )
    .await?;
    Ok(typed_response(StatusCode::OK, &v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the agent answers goes back to the client field for field: absent optional
    /// fields stay absent, null ones stay null.
    #[test]
    fn a_service_passes_through_unchanged() {
        let agent = serde_json::json!({
            "name": "web", "cmd": ["python3", "-m", "http.server"], "env": {"A": "1"},
            "restart": "on-failure", "health_check": {"port": 8000, "interval_ms": 1000},
            "state": "backoff", "pid": null, "restarts": 2, "started_at_unix_ms": 5,
            "last_exit": {"exit_code": null, "status": "killed by signal 9", "at_unix_ms": 6},
            "next_start_in_ms": 500, "health": "unknown"
        });
        let v: ServiceView = serde_json::from_value(agent.clone()).unwrap();
        assert_eq!(serde_json::to_value(&v).unwrap(), agent);
        let logs = serde_json::json!({"first_seq": 0, "next_seq": 1,
            "entries": [{"seq": 0, "run": 1, "stream": "stderr", "data": "x"}]});
        let l: ServiceLogs = serde_json::from_value(logs.clone()).unwrap();
        assert_eq!(serde_json::to_value(&l).unwrap(), logs);
    }

    /// The spec sent to the agent is the one the `json!` body was.
    #[test]
    fn the_agent_spec_is_as_before() {
        let b: ServiceBody = serde_json::from_str(
            r#"{"name":"w","command":"sleep 9","health":{"cmd":"true"},"restart":"on-failure"}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(b.into_spec().unwrap()).unwrap(),
            serde_json::json!({"name": "w", "cmd": ["/bin/bash", "-l", "-c", "sleep 9"], "env": {},
                "restart": "on-failure", "health": {"cmd": "true", "interval_ms": 10000}})
        );
    }
}
