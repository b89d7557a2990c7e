//! Warm pools (`paddock_service::pools`, `docs/pools.md`), operators and admins only:
//!
//! - `GET /v1/pools`: every pool (and every template that had one), with its size, target,
//!   ready sandboxes, hits, misses and memory per pooled sandbox.
//! - `GET /v1/pools/{template}`: one; a template without a pool is 404.
//! - `PUT /v1/pools/{template}` `{"size": N}` or `{"min": M, "max": N}`: sets its size
//!   (0 to `MAX_POOL_SIZE` each, at most `MAX_POOLED_TOTAL` for all templates); an unknown
//!   template is 400. 200, the pool.
//! - `DELETE /v1/pools/{template}`: removes its pool and destroys its sandboxes. 204; 404
//!   when it has none.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::Json;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::wire::{no_content, typed_response};
use paddock_service::pools::{PoolInfo, PoolSize};
use paddock_service::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/pools", get(list))
        .route("/v1/pools/{template}", get(get_one).put(set).delete(remove))
}

/// A template's warm pool.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Pool)]
pub struct PoolView {
    pub template: String,
    /// Null when the template has no pool (any more).
    pub min: Option<u32>,
    pub max: Option<u32>,
    /// What the refill aims for: creates of the template in the last 60 s, within min and max
    pub target: u32,
    /// How many of target are offline slots (made without a network link, for creates with
    /// network none): the share of offline creates in the last 60 s, rounded up
    pub target_offline: u32,
    pub ready: u32,
    /// How many of ready are offline slots
    pub ready_offline: u32,
    pub hits: u64,
    pub misses: u64,
    /// Memory charged to each pooled sandbox's cgroup, on average (null: none ready).
    pub memory_bytes_per_sandbox: Option<u64>,
    /// Why the last fill failed (cleared by a good one)
    pub last_error: Option<String>,
}

impl From<&PoolInfo> for PoolView {
    fn from(p: &PoolInfo) -> PoolView {
        PoolView {
            template: p.template.clone(),
            min: p.size.map(|s| s.min),
            max: p.size.map(|s| s.max),
            target: p.target,
            target_offline: p.target_offline,
            ready: p.ready,
            ready_offline: p.ready_offline,
            hits: p.hits,
            misses: p.misses,
            memory_bytes_per_sandbox: p.memory_bytes,
            last_error: p.last_error.clone(),
        }
    }
}

impl PoolView {
    fn response(self) -> Response {
        typed_response(StatusCode::OK, &self)
    }
}

/// Every pool.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PoolList {
    pub pools: Vec<PoolView>,
}

/// List warm pools
///
/// Every template's warm pool (docs/pools.md): size, refill target, ready sandboxes, hits,
/// misses and memory per pooled sandbox. Operator or admin.
#[utoipa::path(
    get,
    path = "/v1/pools",
    tag = "pools",
    operation_id = "list_pools",
    responses(
        (status = 200, description = "The pools", body = PoolList),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not an operator or admin"),
    )
)]
pub(crate) async fn list(State(state): State<Arc<AppState>>, _c: Caller) -> ApiResult<Response> {
    let pools = state.pools.info().iter().map(PoolView::from).collect();
    Ok(typed_response(StatusCode::OK, &PoolList { pools }))
}

fn find(state: &AppState, template: &str) -> ApiResult<PoolInfo> {
    state
        .pools
        .info()
        .into_iter()
        .find(|p| p.template == template && p.size.is_some())
        .ok_or_else(|| ApiError::NotFound(format!("template {template:?} has no pool")))
}

/// Get a template's warm pool
#[utoipa::path(
    get,
    path = "/v1/pools/{template}",
    tag = "pools",
    operation_id = "get_pool",
    params(("template" = String, Path, description = "Template name or alias")),
    responses(
        (status = 200, description = "The pool", body = PoolView),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not an operator or admin"),
        (status = 404, description = "The template has no pool"),
    )
)]
pub(crate) async fn get_one(
    State(state): State<Arc<AppState>>,
    _c: Caller,
    Path(template): Path<String>,
) -> ApiResult<Response> {
    let template = paddock_service::templates::resolve_alias(&state, &template);
    Ok(PoolView::from(&find(&state, &template)?).response())
}

/// A pool's size: `size`, or `min` (default: `max`) and `max`. The fields are read as JSON
/// values so that a negative or huge number gets the error naming the limit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SetPool)]
pub(crate) struct SetBody {
    /// Keep this many ready.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 64)]
    size: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 64)]
    min: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 64)]
    max: Option<Value>,
}

/// A size field: an integer (negative and huge ones get the error naming the limit).
fn int(name: &str, v: &Value) -> ApiResult<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|_| i64::MAX))
            .ok_or_else(|| ApiError::BadRequest(format!("pool {name} must be a whole number"))),
        _ => Err(ApiError::BadRequest(format!(
            "pool {name} must be a whole number"
        ))),
    }
}

/// Set a template's warm pool size
///
/// `{"size": N}` keeps N sandboxes ready; `{"min": M, "max": N}` keeps as many as the
/// template's creates in the last 60 s, within M and N. Each 0 to 64; all pools together at
/// most 256 (400 naming the limit). An unknown template is 400. Sandboxes above a lowered
/// max are destroyed.
#[utoipa::path(
    put,
    path = "/v1/pools/{template}",
    tag = "pools",
    operation_id = "set_pool",
    params(("template" = String, Path, description = "Template name or alias")),
    request_body = SetBody,
    responses(
        (status = 200, description = "The pool", body = PoolView),
        (status = 400, description = "Bad size, or an unknown template"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not an operator or admin"),
    )
)]
pub(crate) async fn set(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(template): Path<String>,
    Json(body): Json<SetBody>,
) -> ApiResult<Response> {
    let template = paddock_service::templates::resolve_alias(&state, &template);
    let res = async {
        let size = match (&body.size, &body.min, &body.max) {
            (Some(n), None, None) => {
                let n = int("size", n)?;
                PoolSize::new(n, n)
            }
            (None, min, Some(max)) => {
                let max = int("max", max)?;
                let min = match min {
                    Some(m) => int("min", m)?,
                    None => max,
                };
                PoolSize::new(min, max)
            }
            _ => Err("give {\"size\": N} or {\"min\": M, \"max\": N}".to_owned()),
        }
        .map_err(ApiError::BadRequest)?;
        if state.runtime.template(&template).is_none() {
            return Err(ApiError::BadRequest(format!(
                "unknown template {template:?}: build or pull it first"
            )));
        }
        state
            .pools
            .set(&state, &template, Some(size))
            .await
            .map_err(ApiError::BadRequest)
    }
    .await;
    state
        .audited(&caller, "pool.set", None, Some(template.clone()), res)
        .await?;
    Ok(PoolView::from(&find(&state, &template)?).response())
}

/// Remove a template's warm pool
///
/// Destroys its pooled sandboxes. 404 when the template has no pool.
#[utoipa::path(
    delete,
    path = "/v1/pools/{template}",
    tag = "pools",
    operation_id = "delete_pool",
    params(("template" = String, Path, description = "Template name or alias")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not an operator or admin"),
        (status = 404, description = "The template has no pool"),
    )
)]
pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(template): Path<String>,
) -> ApiResult<Response> {
    let template = paddock_service::templates::resolve_alias(&state, &template);
    let res = async {
        find(&state, &template)?;
        state
            .pools
            .set(&state, &template, None)
            .await
            .map_err(ApiError::BadRequest)
    }
    .await;
    state
        .audited(&caller, "pool.delete", None, Some(template), res)
        .await?;
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_service::pools::PoolSize;

    /// A pool's wire form is the `json!` body it replaced, field for field.
    #[test]
    fn a_pool_serialises_as_before() {
        let p = PoolInfo {
            template: "base".into(),
            size: Some(PoolSize { min: 1, max: 4 }),
            target: 2,
            target_offline: 1,
            ready: 2,
            ready_offline: 0,
            hits: 7,
            misses: 1,
            memory_bytes: None,
            last_error: Some("no space".into()),
        };
        assert_eq!(
            serde_json::to_value(PoolView::from(&p)).unwrap(),
            serde_json::json!({
                "template": "base", "min": 1, "max": 4, "target": 2, "target_offline": 1,
                "ready": 2, "ready_offline": 0, "hits": 7, "misses": 1,
                "memory_bytes_per_sandbox": null, "last_error": "no space",
            })
        );
        let none = PoolInfo { size: None, ..p };
        let v = serde_json::to_value(PoolView::from(&none)).unwrap();
        assert!(v["min"].is_null() && v["max"].is_null());
    }
}
