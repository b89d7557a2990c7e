//! Warm pools (`crate::pools`, `docs/pools.md`), operators and admins only:
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
use serde::Deserialize;
use serde_json::{Value, json};

use super::Json;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::pools::{PoolInfo, PoolSize};
use crate::state::AppState;
use crate::wire::{json_response, no_content};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/pools", get(list))
        .route("/v1/pools/{template}", get(get_one).put(set).delete(remove))
}

fn pool_json(p: &PoolInfo) -> Value {
    json!({
        "template": p.template,
        "min": p.size.map(|s| s.min),
        "max": p.size.map(|s| s.max),
        "target": p.target,
        "target_offline": p.target_offline,
        "ready": p.ready,
        "ready_offline": p.ready_offline,
        "hits": p.hits,
        "misses": p.misses,
        "memory_bytes_per_sandbox": p.memory_bytes,
        "last_error": p.last_error,
    })
}

async fn list(State(state): State<Arc<AppState>>, _c: Caller) -> ApiResult<Response> {
    let items: Vec<Value> = state.pools.info().iter().map(pool_json).collect();
    Ok(json_response(StatusCode::OK, json!({ "pools": items })))
}

fn find(state: &AppState, template: &str) -> ApiResult<PoolInfo> {
    state
        .pools
        .info()
        .into_iter()
        .find(|p| p.template == template && p.size.is_some())
        .ok_or_else(|| ApiError::NotFound(format!("template {template:?} has no pool")))
}

async fn get_one(
    State(state): State<Arc<AppState>>,
    _c: Caller,
    Path(template): Path<String>,
) -> ApiResult<Response> {
    let template = crate::templates::resolve_alias(&state, &template);
    Ok(json_response(
        StatusCode::OK,
        pool_json(&find(&state, &template)?),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    #[serde(default)]
    size: Option<Value>,
    #[serde(default)]
    min: Option<Value>,
    #[serde(default)]
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

async fn set(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(template): Path<String>,
    Json(body): Json<SetBody>,
) -> ApiResult<Response> {
    let template = crate::templates::resolve_alias(&state, &template);
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
    Ok(json_response(
        StatusCode::OK,
        pool_json(&find(&state, &template)?),
    ))
}

async fn remove(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(template): Path<String>,
) -> ApiResult<Response> {
    let template = crate::templates::resolve_alias(&state, &template);
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
