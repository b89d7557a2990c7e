//! `POST /v1/sandboxes/{id}/pause` and `POST /v1/sandboxes/{id}/resume` (`pausing`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use paddock_runtime::PauseMode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::Json;
use super::sandbox_view::SandboxView;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::wire::typed_response;
use paddock_service::sandbox_spec::check_timeout;
use paddock_service::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/sandboxes/{id}/pause", post(pause))
        .route("/v1/sandboxes/{id}/resume", post(resume))
}

/// How to pause.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PauseBody {
    /// `full` (default) or `filesystem`.
    #[serde(default)]
    #[schema(inline, value_type = Option<super::sandbox_view::PauseModeWire>, default = "full")]
    mode: Option<String>,
}

/// Parses a pause mode name.
pub fn parse_mode(m: Option<&str>) -> ApiResult<PauseMode> {
    match m {
        None => Ok(PauseMode::Full),
        Some(s) => PauseMode::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown pause mode {:?}: expected full or filesystem",
                paddock_service::state::truncate(s, 32)
            ))
        }),
    }
}

/// Pause a running sandbox
///
/// `full` (default) freezes every process with the cgroup freezer: no CPU, memory kept.
/// `filesystem` stops every process and frees their memory, keeping the writable layer;
/// resume starts PID 1 again on it with the same id, env, limits, network policy and public
/// ports (what lived in memory, `/tmp` included, is gone). A paused sandbox has no running
/// timeout (the rest is given back at resume) and is destroyed after the retention
/// (`--paused-retention`, default 30 days). 409 if it is already paused.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/pause",
    tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id", pattern = "^[a-z0-9]{20}$")),
    request_body = PauseBody,
    responses(
        (status = 200, description = "The sandbox", body = SandboxView),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox"),
        (status = 409, description = "Already paused, or stopped"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn pause(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<PauseBody>,
) -> ApiResult<Response> {
    let res: ApiResult<_> = async {
        let mode = parse_mode(body.mode.as_deref())?;
        state.record_for(&caller, &id).await?;
        Ok(paddock_service::pausing::pause(&state, &id, mode, "request").await?)
    }
    .await;
    let detail = body.mode.clone();
    let r = state
        .audited(&caller, "sandbox.pause", Some(&id), detail, res)
        .await?;
    Ok(typed_response(StatusCode::OK, &SandboxView::of(&state, &r)))
}

/// How to resume.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResumeBody {
    /// New timeout in seconds from now; default: what was left at the pause.
    #[serde(default)]
    timeout: Option<u64>,
}

/// Resume a paused sandbox
///
/// A running sandbox is returned as it is (a no-op). The timeout goes on with what was left
/// at the pause (all of it after a pause at timeout), or `timeout` seconds from now.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/resume",
    tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id", pattern = "^[a-z0-9]{20}$")),
    request_body = ResumeBody,
    responses(
        (status = 200, description = "The sandbox", body = SandboxView),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox"),
        (status = 409, description = "Stopped"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn resume(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<ResumeBody>,
) -> ApiResult<Response> {
    let res = async {
        let t = body.timeout.map(|t| check_timeout(&state, t)).transpose()?;
        state.record_for(&caller, &id).await?;
        paddock_service::pausing::resume(&state, &id, false, t).await
    }
    .await;
    let r = state
        .audited(&caller, "sandbox.resume", Some(&id), None, res)
        .await?;
    Ok(typed_response(StatusCode::OK, &SandboxView::of(&state, &r)))
}
