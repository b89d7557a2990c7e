//! The E2B pause, connect and resume routes on Paddock's pausing (`paddock_service::pausing`).
//!
//! - `POST /sandboxes/{id}/pause` `{"memory"?: bool, "requireHealthyGuest"?: bool}`: 204;
//!   `memory: false` is the `filesystem` mode (default `full`); 409 if already paused.
//! - `POST /sandboxes/{id}/connect`, `POST /v2/sandboxes/{id}/connect`
//!   `{"timeout"?, "memory"?}`: a paused sandbox is resumed (201; `memory: false` cold-boots
//!   a `full`-paused one from its layer), a running one is returned (200). The timeout
//!   moves the deadline only if that is later than the current one.
//! - `POST /sandboxes/{id}/resume` (deprecated upstream) `{"timeout"?, "autoPause"?,
//!   "memory"?}`: like connect, 201; a running sandbox is a 409 as upstream.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use paddock_runtime::PauseMode;
use paddock_store::SandboxState;
use serde::Deserialize;

use super::common::{E2bCaller, E2bResult, body, json_status};
use super::control::{extend, live_record, sandbox_body, sdk_domain};
use crate::error::ApiError;
use crate::wire::no_content;
use paddock_service::sandbox_spec::check_timeout;
use paddock_service::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PauseBody {
    memory: Option<bool>,
    /// Paddock's agent runs on the host kernel; there is no guest to be unhealthy.
    #[allow(dead_code)]
    require_healthy_guest: Option<bool>,
}

pub(super) async fn pause(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
    req: Request,
) -> E2bResult<Response> {
    let b: PauseBody = body(&state, req).await?;
    let mode = if b.memory == Some(false) {
        PauseMode::Filesystem
    } else {
        PauseMode::Full
    };
    let res: Result<_, ApiError> = async {
        live_record(&state, &caller, &id).await?;
        Ok(paddock_service::pausing::pause(&state, &id, mode, "request").await?)
    }
    .await;
    state
        .audited(
            &caller,
            "sandbox.pause",
            Some(&id),
            Some(format!("e2b {}", mode.as_str())),
            res,
        )
        .await?;
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConnectBody {
    timeout: Option<u64>,
    /// `false`: a `full`-paused sandbox is cold-booted from its layer instead of thawed.
    memory: Option<bool>,
    /// Resume only (deprecated upstream): the timeout's action; only at create here.
    auto_pause: Option<bool>,
}

/// Resumes (or returns) the sandbox: (record, whether it was paused).
async fn connect_or_resume(
    state: &Arc<AppState>,
    caller: &crate::auth::keys::Caller,
    id: &str,
    b: &ConnectBody,
) -> Result<(paddock_store::SandboxRecord, bool), ApiError> {
    if b.auto_pause.is_some() {
        return Err(ApiError::BadRequest(
            "autoPause is set at create (lifecycle on_timeout), not at resume".into(),
        ));
    }
    let t = b.timeout.map(|t| check_timeout(state, t)).transpose()?;
    let mut r = live_record(state, caller, id).await?;
    if r.state == SandboxState::Paused {
        let res = paddock_service::pausing::resume(state, id, b.memory == Some(false), t).await;
        let r = state
            .audited(caller, "sandbox.resume", Some(id), Some("e2b".into()), res)
            .await?;
        return Ok((r, true));
    }
    if let Some(t) = b.timeout {
        extend(state, caller, &mut r, t, "e2b connect").await?;
    }
    Ok((r, false))
}

/// Connect: resumes a paused sandbox (201), returns a running one (200).
pub(super) async fn connect(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
    req: Request,
) -> E2bResult<Response> {
    let domain = sdk_domain(&state, req.headers());
    let b: ConnectBody = body(&state, req).await?;
    if b.auto_pause.is_some() {
        return Err(ApiError::BadRequest("unknown field autoPause".into()).into());
    }
    let (r, resumed) = connect_or_resume(&state, &caller, &id, &b).await?;
    let status = if resumed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_status(status, &sandbox_body(&state, &r, &domain)))
}

/// The old resume route: 201 with the sandbox; a running sandbox is 409, as upstream.
pub(super) async fn resume(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
    req: Request,
) -> E2bResult<Response> {
    let domain = sdk_domain(&state, req.headers());
    let b: ConnectBody = body(&state, req).await?;
    if live_record(&state, &caller, &id).await?.state == SandboxState::Running {
        return Err(ApiError::Conflict(format!("sandbox {id} is already running")).into());
    }
    let (r, _) = connect_or_resume(&state, &caller, &id, &b).await?;
    Ok(json_status(
        StatusCode::CREATED,
        &sandbox_body(&state, &r, &domain),
    ))
}
