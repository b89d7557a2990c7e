//! Volumes (`crate::volumes`):
//!
//! - `POST /v1/volumes` `{"name", "size"?: bytes or "2G"}`: 201, the volume; a name the
//!   tenant has: 409.
//! - `GET /v1/volumes`, `GET /v1/volumes/{name}`: the tenant's volumes (with the bytes used
//!   and the sandboxes mounting them); another tenant's is a 404.
//! - `DELETE /v1/volumes/{name}`: 204; 409 while sandboxes mount it.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Json;
use super::sandboxes::Size;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::state::AppState;
use crate::volumes::{self, volume_json};
use crate::wire::{json_response, no_content};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/volumes", get(list).post(create))
        .route("/v1/volumes/{name}", get(get_one).delete(delete))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    size: Option<Size>,
}

async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<CreateBody>,
) -> ApiResult<Response> {
    let res = async {
        let size = body.size.as_ref().map(|s| s.bytes("size")).transpose()?;
        volumes::create(&state, &caller, &body.name, size).await
    }
    .await;
    let v = state
        .audited(&caller, "volume.create", None, Some(body.name.clone()), res)
        .await?;
    Ok(json_response(StatusCode::CREATED, volume_json(&state, &v)))
}

async fn list(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Response> {
    let items: Vec<Value> = volumes::list(&state, &caller)
        .await?
        .iter()
        .map(|v| volume_json(&state, v))
        .collect();
    Ok(json_response(StatusCode::OK, json!({ "volumes": items })))
}

async fn get_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let v = volumes::get(&state, &caller, &name).await?;
    Ok(json_response(StatusCode::OK, volume_json(&state, &v)))
}

async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let res = volumes::delete(&state, &caller, &name).await;
    state
        .audited(&caller, "volume.delete", None, Some(name), res)
        .await?;
    Ok(no_content())
}
