//! Snapshots and forks (`paddock_service::snapshots`):
//!
//! - `POST /v1/sandboxes/{id}/snapshots` `{"name"?, "mode"?: "filesystem"}`: 201, the snapshot;
//!   `mode: "full"` is a 400 ([`paddock_service::snapshots::FULL_REFUSED`]).
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
use paddock_runtime::template::Template;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Json;
use super::sandbox_view::{SandboxIdPath, SandboxView};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::wire::{form_urlencoded_pairs, no_content, rfc3339, typed_response};
use paddock_service::sandbox_spec::check_timeout;
use paddock_service::snapshots;
use paddock_service::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/sandboxes/{id}/snapshots", post(create))
        .route("/v1/sandboxes/{id}/fork", post(fork))
        .route("/v1/snapshots", get(list))
        .route("/v1/snapshots/{name}", get(get_one).delete(delete))
}

/// A snapshot mode: `filesystem`; `full` (memory) is refused.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotModeWire {
    Filesystem,
    Full,
}

/// What a snapshot is of: only `filesystem`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TakenModeWire {
    Filesystem,
}

/// `POST /v1/sandboxes/{id}/snapshots`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnapshotBody {
    /// A template name; default `snap-<random>`
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    name: Option<String>,
    /// `filesystem` (default); `full` is refused.
    #[serde(default)]
    #[schema(inline, value_type = Option<SnapshotModeWire>, default = "filesystem")]
    mode: Option<String>,
}

/// A snapshot.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Snapshot)]
pub struct SnapshotView {
    pub snapshot_id: String,
    pub sandbox_id: Option<String>,
    /// The template the sandbox was made from
    pub template: Option<String>,
    #[schema(inline)]
    pub mode: TakenModeWire,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: serde_json::Value,
    /// How many sandboxes run from it
    pub running_sandboxes: usize,
}

impl SnapshotView {
    /// A snapshot as the REST API and the CLI show it.
    pub fn of(state: &AppState, t: &Template) -> SnapshotView {
        let s = t.snapshot.as_ref();
        let in_use = state
            .runtime
            .list()
            .iter()
            .filter(|x| x.template == t.name)
            .count();
        SnapshotView {
            snapshot_id: t.name.clone(),
            sandbox_id: s.map(|s| s.sandbox.clone()),
            template: s.map(|s| s.parent.clone()),
            mode: TakenModeWire::Filesystem,
            created_at: rfc3339(Some(t.created_unix_ms as i64)),
            running_sandboxes: in_use,
        }
    }
}

/// The caller's snapshots.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SnapshotList {
    pub snapshots: Vec<SnapshotView>,
}

/// The filter of `GET /v1/snapshots`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct SnapshotQuery {
    /// Only the snapshots of this sandbox
    sandbox_id: Option<String>,
}

/// The path of a route about one snapshot.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct SnapshotPath {
    /// Snapshot id
    name: String,
}

/// Checks a snapshot mode: `filesystem` or absent; `full` is refused with the reason.
pub fn check_mode(mode: Option<&str>) -> ApiResult<()> {
    match mode {
        None | Some("filesystem") => Ok(()),
        Some("full") => Err(ApiError::BadRequest(snapshots::FULL_REFUSED.into())),
        Some(m) => Err(ApiError::BadRequest(format!(
            "unknown snapshot mode {:?}: expected filesystem",
            paddock_service::state::truncate(m, 32)
        ))),
    }
}

/// Take a filesystem snapshot of a sandbox
///
/// A read-only btrfs snapshot of the sandbox's writable layer (running or paused), usable
/// as a template by its id (`template` at create, E2B `Sandbox.create(snapshot_id)`).
/// Constant time; nothing is copied. Sandboxes made from it start fresh from its files (no
/// processes, no memory). `mode: full` (memory) is a 400: CRIU fails on this kernel.
/// `name` (a template name, default `snap-<random>`) already taken: 409.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/snapshots",
    operation_id = "create_snapshot",
    tag = "snapshots",
    params(SandboxIdPath),
    request_body = SnapshotBody,
    responses(
        (status = 201, description = "The snapshot", body = SnapshotView),
        (status = 400, description = "Bad input, or mode full"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox"),
        (status = 409, description = "The name is taken, or the sandbox is stopped"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<SnapshotBody>,
) -> ApiResult<Response> {
    let res: ApiResult<_> = async {
        check_mode(body.mode.as_deref())?;
        Ok(snapshots::take(&state, &caller, &id, body.name.clone()).await?)
    }
    .await;
    let t = state
        .audited(&caller, "snapshot.create", Some(&id), body.name, res)
        .await?;
    Ok(typed_response(
        StatusCode::CREATED,
        &SnapshotView::of(&state, &t),
    ))
}

/// List the caller's snapshots
#[utoipa::path(
    get,
    path = "/v1/snapshots",
    operation_id = "list_snapshots",
    tag = "snapshots",
    params(SnapshotQuery),
    responses(
        (status = 200, description = "Snapshots, oldest first", body = SnapshotList),
        (status = 400, description = "Unknown query parameter"),
        (status = 401, description = "No or a bad key"),
    )
)]
pub(crate) async fn list(
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
                    paddock_service::state::truncate(&k, 32)
                )));
            }
        }
    }
    let snapshots = snapshots::list(&state, &caller, of.as_deref())
        .await
        .iter()
        .map(|t| SnapshotView::of(&state, t))
        .collect();
    Ok(typed_response(StatusCode::OK, &SnapshotList { snapshots }))
}

/// A snapshot
#[utoipa::path(
    get,
    path = "/v1/snapshots/{name}",
    operation_id = "get_snapshot",
    tag = "snapshots",
    params(SnapshotPath),
    responses(
        (status = 200, description = "The snapshot", body = SnapshotView),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such snapshot"),
    )
)]
pub(crate) async fn get_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let t = snapshots::get(&state, &caller, &name).await?;
    Ok(typed_response(
        StatusCode::OK,
        &SnapshotView::of(&state, &t),
    ))
}

/// Delete a snapshot
///
/// Removes its template and subvolume. 409 while sandboxes use it (or snapshots of such
/// sandboxes stand on it); another tenant's snapshot is a 404.
#[utoipa::path(
    delete,
    path = "/v1/snapshots/{name}",
    operation_id = "delete_snapshot",
    tag = "snapshots",
    params(SnapshotPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such snapshot"),
        (status = 409, description = "Sandboxes use it"),
    )
)]
pub(crate) async fn delete(
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

/// `POST /v1/sandboxes/{id}/fork`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForkBody {
    /// 1 to 20; default 1.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 20, default = 1)]
    count: Option<i64>,
    /// Seconds; default the parent's create timeout.
    #[serde(default)]
    #[schema(minimum = 1)]
    timeout: Option<u64>,
    /// `filesystem` (default); `full` is refused.
    #[serde(default)]
    #[schema(inline, value_type = Option<SnapshotModeWire>, default = "filesystem")]
    mode: Option<String>,
}

/// A child that could not be created.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ForkError {
    pub error: String,
}

/// One child of a fork: a sandbox, or why it is missing.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ForkChild {
    Sandbox(Box<SandboxView>),
    Error(ForkError),
}

/// The snapshot a fork took and its children.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Forked {
    pub snapshot_id: String,
    pub sandboxes: Vec<ForkChild>,
}

/// Fork a running sandbox
///
/// Takes one filesystem snapshot and creates `count` (1 to 20, default 1) sandboxes from it
/// at once, each with the parent's env, limits, user, network policy, metadata and secrets,
/// and `timeout` seconds (default the parent's create timeout). Children are copy-on-write
/// and independent; the parent keeps running. Each entry of `sandboxes` is a sandbox or
/// `{"error"}`. count 0 or 21, or `mode: full`: 400.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/fork",
    operation_id = "fork_sandbox",
    tag = "snapshots",
    params(SandboxIdPath),
    request_body = ForkBody,
    responses(
        (status = 201, description = "The snapshot and the children", body = Forked),
        (status = 400, description = "Bad count, timeout or mode"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn fork(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<ForkBody>,
) -> ApiResult<Response> {
    let res: ApiResult<_> = async {
        check_mode(body.mode.as_deref())?;
        let count = snapshots::count_of(body.count)?;
        let t = body.timeout.map(|t| check_timeout(&state, t)).transpose()?;
        Ok(snapshots::fork(&state, &caller, &id, count, t).await?)
    }
    .await;
    let detail = body.count.map(|c| format!("count {c}"));
    let (t, children) = state
        .audited(&caller, "sandbox.fork", Some(&id), detail, res)
        .await?;
    let sandboxes = children
        .iter()
        .map(|c| match c {
            Ok(r) => ForkChild::Sandbox(Box::new(SandboxView::of(&state, r))),
            Err(e) => ForkChild::Error(ForkError {
                error: e.to_string(),
            }),
        })
        .collect();
    let body = Forked {
        snapshot_id: t.name,
        sandboxes,
    };
    Ok(typed_response(StatusCode::CREATED, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire forms are those the `json!` bodies had: a failed child is `{"error"}`, a
    /// snapshot's `sandbox_id` and `template` are null when unknown.
    #[test]
    fn snapshots_and_fork_children_serialise_as_before() {
        let v = SnapshotView {
            snapshot_id: "s".into(),
            sandbox_id: None,
            template: Some("base".into()),
            mode: TakenModeWire::Filesystem,
            created_at: serde_json::Value::Null,
            running_sandboxes: 2,
        };
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            serde_json::json!({"snapshot_id": "s", "sandbox_id": null, "template": "base",
                "mode": "filesystem", "created_at": null, "running_sandboxes": 2})
        );
        let f = Forked {
            snapshot_id: "s".into(),
            sandboxes: vec![ForkChild::Error(ForkError { error: "no".into() })],
        };
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!({"snapshot_id": "s", "sandboxes": [{"error": "no"}]})
        );
    }
}
