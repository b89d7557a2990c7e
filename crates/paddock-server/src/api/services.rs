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
use serde::Deserialize;
use serde_json::{Value, json};

use super::Json;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::wire::form_urlencoded_pairs;
use crate::wire::{json_response, no_content};

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthBody {
    #[serde(default)]
    cmd: Option<String>,
    #[serde(default)]
    port: Option<u32>,
    #[serde(default)]
    interval_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceBody {
    name: String,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    restart: Option<String>,
    #[serde(default)]
    health: Option<HealthBody>,
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
    fn into_spec(self) -> ApiResult<Value> {
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
            None | Some("always") => "always",
            Some("on-failure") => "on-failure",
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
                    (Some(c), None) if !c.trim().is_empty() => {
                        Some(json!({"cmd": c, "interval_ms": interval}))
                    }
                    (None, Some(p)) if (1..=65535).contains(&p) => {
                        Some(json!({"port": p, "interval_ms": interval}))
                    }
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
        let mut spec = json!({
            "name": self.name,
            "cmd": cmd,
            "env": self.env,
            "restart": restart,
        });
        if let Some(c) = self.cwd {
            spec["cwd"] = c.into();
        }
        if let Some(u) = self.user {
            spec["user"] = u.into();
        }
        if let Some(h) = health {
            spec["health"] = h;
        }
        Ok(spec)
    }
}

/// Sends one request to the sandbox's agent; its JSON answer, or its error mapped.
async fn agent(
    sbx: &Sandbox,
    method: http::Method,
    path: &str,
    body: Option<Value>,
) -> ApiResult<(StatusCode, Value)> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("http://agent{path}"));
    let bytes = match body {
        Some(v) => {
            b = b.header(http::header::CONTENT_TYPE, "application/json");
            bytes::Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
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
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok((status, v));
    }
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

async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (_, sbx) = state.sandbox_for(&caller, &id).await?;
    let (_, v) = agent(&sbx, http::Method::GET, "/services", None).await?;
    Ok(json_response(StatusCode::OK, v))
}

async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<ServiceBody>,
) -> ApiResult<Response> {
    let name = body.name.clone();
    let res = async {
        let (_, sbx) = state.sandbox_for(&caller, &id).await?;
        let spec = body.into_spec()?;
        agent(&sbx, http::Method::POST, "/services", Some(spec)).await
    }
    .await;
    let (_, v) = state
        .audited(&caller, "service.create", Some(&id), Some(name), res)
        .await?;
    Ok(json_response(StatusCode::CREATED, v))
}

async fn get_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (_, sbx) = state.sandbox_for(&caller, &id).await?;
    check_name(&name)?;
    let (_, v) = agent(&sbx, http::Method::GET, &format!("/services/{name}"), None).await?;
    Ok(json_response(StatusCode::OK, v))
}

async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let res = async {
        let (_, sbx) = state.sandbox_for(&caller, &id).await?;
        check_name(&name)?;
        agent(
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
    let (_, v) = state
        .audited(
            &caller,
            &format!("service.{what}"),
            Some(&id),
            Some(name),
            res,
        )
        .await?;
    Ok(json_response(StatusCode::OK, v))
}

async fn start(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    action(state, caller, id, name, "start").await
}

async fn stop(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    action(state, caller, id, name, "stop").await
}

async fn restart(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    action(state, caller, id, name, "restart").await
}

/// `?from_seq=N`: the output from chunk `N` on (or from the oldest kept).
async fn logs(
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
    let (_, v) = agent(
        &sbx,
        http::Method::GET,
        &format!("/services/{name}/logs?from={from}"),
        None,
    )
    .await?;
    Ok(json_response(StatusCode::OK, v))
}
