//! Snapshots and forks (`crate::snapshots`):
//!
//! - `POST /v1/sandboxes/{id}/snapshots` `{"name"?, "mode"?: "filesystem"}`: 201, the snapshot;
//!   `mode: "full"` is a 400 ([`crate::snapshots::FULL_REFUSED`]).
//! - `GET /v1/snapshots[?sandbox_id=ID]`, `GET /v1/snapshots/{id}`, `DELETE /v1/snapshots/{id}`
//!   (204; 409 while sandboxes use it).
//! - `POST /v1/sandboxes/{id}/fork` `{"count"?: 1..20, "timeout"?: secs}`: 201,
//!   `{"snapshot_id", "sandboxes": [...]}`, each child a sandbox or `{"error"}`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Json;
use super::sandboxes::{check_timeout, sandbox_json};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::snapshots::{self, snapshot_json};
use crate::state::AppState;
use crate::wire::{form_urlencoded_pairs, json_response, no_content};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/sandboxes/{id}/snapshots", post(create))
        .route("/v1/sandboxes/{id}/fork", post(fork))
        .route("/v1/snapshots", get(list))
        .route("/v1/snapshots/{name}", get(get_one).delete(delete))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotBody {
    #[serde(default)]
    name: Option<String>,
    /// `filesystem` (default); `full` is refused.
    #[serde(default)]
    mode: Option<String>,
}

/// Checks a snapshot mode: `filesystem` or absent; `full` is refused with the reason.
pub fn check_mode(mode: Option<&str>) -> ApiResult<()> {
    match mode {
        None | Some("filesystem") => Ok(()),
        Some("full") => Err(ApiError::BadRequest(snapshots::FULL_REFUSED.into())),
        Some(m) => Err(ApiError::BadRequest(format!(
            "unknown snapshot mode {:?}: expected filesystem",
            crate::state::truncate(m, 32)
        ))),
    }
}

async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<SnapshotBody>,
) -> ApiResult<Response> {
    let res = async {
        check_mode(body.mode.as_deref())?;
        snapshots::take(&state, &caller, &id, body.name.clone()).await
    }
    .await;
    let t = state
        .audited(&caller, "snapshot.create", Some(&id), body.name, res)
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        snapshot_json(&state, &t),
    ))
}

async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut of = None;
    for (k, v) in form_urlencoded_pairs(q.as_deref().unwrap_or("")) {
        match k.as_str() {
            "sandbox_id" => of = Some(v),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter {:?}: expected sandbox_id",
                    crate::state::truncate(&k, 32)
                )));
            }
        }
    }
    let items: Vec<Value> = snapshots::list(&state, &caller, of.as_deref())
        .await
        .iter()
        .map(|t| snapshot_json(&state, t))
        .collect();
    Ok(json_response(StatusCode::OK, json!({ "snapshots": items })))
}

async fn get_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let t = snapshots::get(&state, &caller, &name).await?;
    Ok(json_response(StatusCode::OK, snapshot_json(&state, &t)))
}

async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let res = snapshots::delete(&state, &caller, &name).await;
    state
        .audited(&caller, "snapshot.delete", None, Some(name), res)
        .await?;
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForkBody {
    /// 1 to 20; default 1.
    #[serde(default)]
    count: Option<i64>,
    /// Seconds; default the parent's create timeout.
    #[serde(default)]
    timeout: Option<u64>,
    /// `filesystem` (default); `full` is refused.
    #[serde(default)]
    mode: Option<String>,
}

async fn fork(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<ForkBody>,
) -> ApiResult<Response> {
    let res = async {
        check_mode(body.mode.as_deref())?;
        let count = count_of(body.count)?;
        let t = body.timeout.map(|t| check_timeout(&state, t)).transpose()?;
        snapshots::fork(&state, &caller, &id, count, t).await
    }
    .await;
    let detail = body.count.map(|c| format!("count {c}"));
    let (t, children) = state
        .audited(&caller, "sandbox.fork", Some(&id), detail, res)
        .await?;
    let items: Vec<Value> = children
        .iter()
        .map(|c| match c {
            Ok(r) => sandbox_json(&state, r),
            Err(e) => json!({ "error": e.to_string() }),
        })
        .collect();
    Ok(json_response(
        StatusCode::CREATED,
        json!({ "snapshot_id": t.name, "sandboxes": items }),
    ))
}

/// A fork count: 1 to [`snapshots::MAX_FORK`], default 1.
pub fn count_of(c: Option<i64>) -> ApiResult<u32> {
    match c {
        None => Ok(1),
        Some(n) if (1..=i64::from(snapshots::MAX_FORK)).contains(&n) => Ok(n as u32),
        Some(n) => Err(ApiError::BadRequest(format!(
            "count must be 1 to {}, got {n}",
            snapshots::MAX_FORK
        ))),
    }
}
