//! `POST /v1/sandboxes/{id}/pause` and `POST /v1/sandboxes/{id}/resume` (`pausing`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use paddock_runtime::PauseMode;
use serde::Deserialize;

use super::Json;
use super::sandboxes::{check_timeout, sandbox_json};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::wire::json_response;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/sandboxes/{id}/pause", post(pause))
        .route("/v1/sandboxes/{id}/resume", post(resume))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    /// `full` (default) or `filesystem`.
    #[serde(default)]
    mode: Option<String>,
}

/// Parses a pause mode name.
pub fn parse_mode(m: Option<&str>) -> ApiResult<PauseMode> {
    match m {
        None => Ok(PauseMode::Full),
        Some(s) => PauseMode::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown pause mode {:?}: expected full or filesystem",
                crate::state::truncate(s, 32)
            ))
        }),
    }
}

async fn pause(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<PauseBody>,
) -> ApiResult<Response> {
    let res = async {
        let mode = parse_mode(body.mode.as_deref())?;
        state.record_for(&caller, &id).await?;
        crate::pausing::pause(&state, &id, mode, "request").await
    }
    .await;
    let detail = body.mode.clone();
    let r = state
        .audited(&caller, "sandbox.pause", Some(&id), detail, res)
        .await?;
    Ok(json_response(StatusCode::OK, sandbox_json(&state, &r)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeBody {
    /// New timeout in seconds from now; default: what was left at the pause.
    #[serde(default)]
    timeout: Option<u64>,
}

async fn resume(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<ResumeBody>,
) -> ApiResult<Response> {
    let res = async {
        let t = body.timeout.map(|t| check_timeout(&state, t)).transpose()?;
        state.record_for(&caller, &id).await?;
        crate::pausing::resume(&state, &id, false, t).await
    }
    .await;
    let r = state
        .audited(&caller, "sandbox.resume", Some(&id), None, res)
        .await?;
    Ok(json_response(StatusCode::OK, sandbox_json(&state, &r)))
}
