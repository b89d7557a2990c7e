//! Rollouts (`paddock_service::rollouts`, `docs/rollouts.md`):
//!
//! - `POST /v1/rollouts[?wait=true]`: checks the request, selects the sandboxes and starts
//!   the rollout: 202 with the rollout (every sandbox `pending`); with `wait=true`, 200 with
//!   the finished rollout; with `Accept: application/x-ndjson`, a progress stream (one line
//!   per change of a sandbox, then an `end` line with the finished rollout). A selector
//!   matching nothing is 422 `no_match` and records nothing.
//! - `GET /v1/rollouts[?limit=N]`: newest first, without their sandboxes.
//! - `GET /v1/rollouts/{id}`: the rollout with each sandbox's outcome.
//! - `POST /v1/rollouts/{id}/cancel`: 202; no sandbox starts after it.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::wire::{
    form_urlencoded_pairs, parse_limit, read_limited, typed_response, unknown_param,
};
use paddock_service::rollouts::view::{Progress, ProgressKind, RolloutView};
use paddock_service::rollouts::{self, MAX_TARGETS};
use paddock_service::rollouts::{spec as doc_spec, view as doc};
use paddock_service::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/rollouts", get(list).post(create))
        .route("/v1/rollouts/{id}", get(get_one))
        .route("/v1/rollouts/{id}/cancel", post(cancel))
}

/// The request body, read with the rollout's own cap (an upload may be larger than the
/// JSON body limit of other routes) and parsed as strictly as [`super::Json`].
async fn body(req: Request) -> ApiResult<rollouts::spec::Body> {
    let bytes = read_limited(req, rollouts::spec::MAX_BODY_BYTES, true).await?;
    super::json::parse(&bytes)
}

fn wants_ndjson(h: &axum::http::HeaderMap) -> bool {
    h.get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/x-ndjson") || a.contains("application/jsonl"))
}

fn parse_wait(q: Option<&str>) -> ApiResult<bool> {
    let mut wait = false;
    for (k, v) in form_urlencoded_pairs(q.unwrap_or("")) {
        match k.as_str() {
            "wait" => {
                wait = match v.as_str() {
                    "" | "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(ApiError::BadRequest(format!(
                            "wait must be true or false, got {:?}",
                            crate::wire::truncate(&v, 32)
                        )));
                    }
                }
            }
            other => return Err(unknown_param(other)),
        }
    }
    Ok(wait)
}

/// Start a rollout
///
/// Runs a command, or uploads files, on every running sandbox matching `selector` (a
/// developer's own only), at most `concurrency` at once; after `max_failures` failures
/// starts no more and runs `rollback` on the sandboxes already started. A selector matching
/// nothing is 422 `no_match` and changes nothing; more than 1000 matches is 400. With
/// `Accept: application/x-ndjson` the answer is a progress stream: a `rollout` line, a
/// `sandbox` line per change, an `end` line with the finished rollout.
#[utoipa::path(
    post,
    path = "/v1/rollouts",
    tag = "rollouts",
    operation_id = "create_rollout",
    params(("wait" = Option<bool>, Query, description = "Answer 200 with the finished rollout")),
    request_body = doc_spec::Body,
    responses(
        (status = 202, description = "The rollout, started", body = doc::RolloutView),
        (status = 200, description = "The finished rollout (wait=true), or the NDJSON progress", content(
            (doc::RolloutView = "application/json"),
            (doc::Progress = "application/x-ndjson"),
        )),
        (status = 400, description = "Bad input, or more than 1000 matches"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not allowed"),
        (status = 413, description = "The body is too large"),
        (status = 415, description = "Not JSON"),
        (status = 422, description = "The selector matches nothing (`no_match`)"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(q): RawQuery,
    req: Request,
) -> ApiResult<Response> {
    let ndjson = wants_ndjson(req.headers());
    let res: ApiResult<_> = async {
        let wait = parse_wait(q.as_deref())?;
        let spec = body(req).await?.check()?;
        let what = format!(
            "{} selector {}",
            spec.action.kind(),
            rollouts::spec::selector_text(&spec.selector)
        );
        let started = rollouts::start(&state, &caller, spec).await?;
        Ok((wait, format!("{}: {what}", started.id), started))
    }
    .await;
    let detail = res.as_ref().ok().map(|r| r.1.clone());
    let (wait, _, started) = state
        .audited(&caller, "rollout.create", None, detail, res)
        .await?;
    if ndjson {
        return Ok(progress_stream(state, started));
    }
    if wait {
        let _ = started.done.await;
    }
    let (r, ts) = rollouts::get(&state, &caller, &started.id).await?;
    let status = if wait {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(typed_response(status, &RolloutView::of(&r, Some(&ts))))
}

/// The NDJSON progress: the rollout as started, each change of a sandbox, then `end`.
fn progress_stream(state: Arc<AppState>, started: rollouts::Started) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        // Through `serde_json::Value`, whose objects keep their keys sorted, as the lines
        // always were.
        let line = |p: &Progress| {
            let v = serde_json::to_value(p).unwrap_or_default();
            let mut b = serde_json::to_vec(&v).unwrap_or_default();
            b.push(b'\n');
            Ok(Bytes::from(b))
        };
        let rollouts::Started {
            id, mut progress, ..
        } = started;
        if let Ok(Some((r, ts))) = state.store.get_rollout(&id).await
            && tx
                .send(line(&Progress::rollout(
                    ProgressKind::Rollout,
                    RolloutView::of(&r, Some(&ts)),
                )))
                .await
                .is_err()
        {
            return;
        }
        loop {
            match progress.recv().await {
                Ok(p) => {
                    if tx.send(line(&p)).await.is_err() || p.is_end() {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => {
                    // The runner ended without an `end` line reaching us: read the store.
                    if let Ok(Some((r, ts))) = state.store.get_rollout(&id).await {
                        let _ = tx
                            .send(line(&Progress::rollout(
                                ProgressKind::End,
                                RolloutView::of(&r, Some(&ts)),
                            )))
                            .await;
                    }
                    return;
                }
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap_or_default()
}

/// The rollouts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RolloutList {
    /// Newest first, without their sandboxes.
    #[schema(value_type = Vec<doc::RolloutView>)]
    pub rollouts: Vec<RolloutView>,
}

/// List rollouts
///
/// Newest first, without their sandboxes; a developer's own only.
#[utoipa::path(
    get,
    path = "/v1/rollouts",
    tag = "rollouts",
    operation_id = "list_rollouts",
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100)")),
    responses(
        (status = 200, description = "The rollouts", body = RolloutList),
        (status = 400, description = "Bad query"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not allowed"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut limit = 100;
    for (k, v) in form_urlencoded_pairs(q.as_deref().unwrap_or("")) {
        match k.as_str() {
            "limit" => limit = parse_limit(&v)?,
            other => return Err(unknown_param(other)),
        }
    }
    let rollouts = rollouts::list(&state, &caller, limit)
        .await?
        .iter()
        .map(|r| RolloutView::of(r, None))
        .collect();
    Ok(typed_response(StatusCode::OK, &RolloutList { rollouts }))
}

/// A rollout with each sandbox's outcome
#[utoipa::path(
    get,
    path = "/v1/rollouts/{id}",
    tag = "rollouts",
    operation_id = "get_rollout",
    params(("id" = String, Path, description = "Rollout id")),
    responses(
        (status = 200, description = "The rollout", body = doc::RolloutView),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not allowed"),
        (status = 404, description = "No such rollout"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn get_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (r, ts) = rollouts::get(&state, &caller, &id).await?;
    debug_assert!(ts.len() <= MAX_TARGETS);
    Ok(typed_response(
        StatusCode::OK,
        &RolloutView::of(&r, Some(&ts)),
    ))
}

/// Cancel a running rollout
///
/// No sandbox starts after it; those running finish; no rollback runs. A finished rollout
/// is 409.
#[utoipa::path(
    post,
    path = "/v1/rollouts/{id}/cancel",
    tag = "rollouts",
    operation_id = "cancel_rollout",
    params(("id" = String, Path, description = "Rollout id")),
    responses(
        (status = 202, description = "The rollout", body = doc::RolloutView),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not allowed"),
        (status = 404, description = "No such rollout"),
        (status = 409, description = "The rollout is finished"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn cancel(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let res = rollouts::cancel(&state, &caller, &id).await;
    state
        .audited(&caller, "rollout.cancel", None, Some(id.clone()), res)
        .await?;
    let (r, ts) = rollouts::get(&state, &caller, &id).await?;
    Ok(typed_response(
        StatusCode::ACCEPTED,
        &RolloutView::of(&r, Some(&ts)),
    ))
}
