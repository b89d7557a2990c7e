//! The E2B snapshot and fork routes on Paddock's snapshots (`paddock_service::snapshots`, SDK 2.63):
//!
//! - `POST /sandboxes/{id}/snapshots` `{"name"?, "memory"?}`: 201 `{"snapshotID", "names"}`;
//!   the API default (memory unset) is a `filesystem` snapshot here; `memory: true` is a 400
//!   with the reason (CRIU).
//! - `GET /snapshots?sandboxID&name&limit`: `[{"snapshotID", "names"}]`, one page.
//! - `DELETE /templates/{id}` (the SDK's `delete_snapshot`): 204, 404 unknown, 409 in use;
//!   every other templates route stays unsupported.
//! - `POST /sandboxes/{id}/fork` `{"count"?, "timeout"?}`: 201 `[{"sandbox"} | {"error"}]`;
//!   the children start from the parent's files (a `filesystem` fork).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::E2bError;
use super::common::{E2bCaller, E2bResult, body, json_status};
use super::control::{sandbox_body, sdk_domain};
use super::wire::{ErrorBody, ForkResult, SnapshotInfo};
use crate::error::ApiError;
use crate::wire::{form_urlencoded_pairs, no_content};
use paddock_service::sandbox_spec::check_timeout;
use paddock_service::snapshots;
use paddock_service::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotBody {
    name: Option<String>,
    memory: Option<bool>,
}

pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
    req: Request,
) -> E2bResult<Response> {
    let b: SnapshotBody = body(&state, req).await?;
    let res = async {
        if b.memory == Some(true) {
            return Err(ApiError::BadRequest(snapshots::FULL_REFUSED.into()));
        }
        Ok(snapshots::take(&state, &caller, &id, b.name.clone()).await?)
    }
    .await;
    let t = state
        .audited(
            &caller,
            "snapshot.create",
            Some(&id),
            Some("e2b".into()),
            res,
        )
        .await?;
    Ok(json_status(StatusCode::CREATED, &SnapshotInfo::of(&t.name)))
}

pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    RawQuery(q): RawQuery,
) -> E2bResult<Response> {
    let (mut of, mut name, mut limit) = (None, None, 100usize);
    for (k, v) in form_urlencoded_pairs(q.as_deref().unwrap_or("")) {
        match k.as_str() {
            "sandboxID" => of = Some(v),
            "name" => name = Some(v),
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| {
                        E2bError(ApiError::BadRequest("limit must be 1 to 100".into()))
                    })?;
            }
            _ => {}
        }
    }
    let items: Vec<SnapshotInfo> = snapshots::list(&state, &caller, of.as_deref())
        .await
        .iter()
        .filter(|t| name.as_deref().is_none_or(|n| t.name == n))
        .take(limit)
        .map(|t| SnapshotInfo::of(&t.name))
        .collect();
    Ok(json_status(StatusCode::OK, &items))
}

/// `/templates/{*rest}`: `DELETE /templates/{id}` deletes a snapshot; the rest of the E2B
/// templates API is not supported.
pub(super) async fn templates(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    method: Method,
    Path(rest): Path<String>,
) -> E2bResult<Response> {
    let unsupported = || {
        E2bError(ApiError::BadRequest(
            "the E2B templates API is not supported by Paddock yet".into(),
        ))
    };
    if method != Method::DELETE || rest.contains('/') {
        return Err(unsupported());
    }
    if state
        .runtime
        .template(&rest)
        .is_some_and(|t| t.snapshot.is_none())
    {
        return Err(unsupported());
    }
    let res = snapshots::delete(&state, &caller, &rest).await;
    state
        .audited(&caller, "snapshot.delete", None, Some(rest), res)
        .await?;
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForkBody {
    timeout: Option<u64>,
    count: Option<i64>,
}

pub(super) async fn fork(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
    req: Request,
) -> E2bResult<Response> {
    let domain = sdk_domain(&state, req.headers());
    let b: ForkBody = body(&state, req).await?;
    let res: Result<_, ApiError> = async {
        let count = paddock_service::snapshots::count_of(b.count)?;
        let t = b.timeout.map(|t| check_timeout(&state, t)).transpose()?;
        Ok(snapshots::fork(&state, &caller, &id, count, t).await?)
    }
    .await;
    let detail = Some(format!("e2b count {}", b.count.unwrap_or(1)));
    let (_, children) = state
        .audited(&caller, "sandbox.fork", Some(&id), detail, res)
        .await?;
    let items: Vec<ForkResult> = children
        .into_iter()
        .map(|c| match c.map_err(ApiError::from) {
            Ok(r) => ForkResult::Sandbox(Box::new(sandbox_body(&state, &r, &domain))),
            Err(e) => ForkResult::Error(ErrorBody {
                code: e.status_code().0.as_u16(),
                message: e.to_string(),
            }),
        })
        .collect();
    Ok(json_status(StatusCode::CREATED, &items))
}
