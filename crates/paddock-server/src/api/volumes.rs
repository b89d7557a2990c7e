//! Volumes (`paddock_service::volumes`):
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
use paddock_store::VolumeRecord;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Json;
use super::sandboxes::Size;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::wire::{no_content, rfc3339, typed_response};
use paddock_service::state::AppState;
use paddock_service::volumes;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/volumes", get(list).post(create))
        .route("/v1/volumes/{name}", get(get_one).delete(delete))
}

/// A new volume.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateVolume)]
pub(crate) struct CreateBody {
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    name: String,
    /// Bytes, or a size like 512M, 2G
    #[serde(default)]
    #[schema(schema_with = size_schema)]
    size: Option<Size>,
}

/// A size: bytes, or a string like `512M`, `2G`.
pub(crate) fn size_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    Schema::OneOf(
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Integer))
            .item(ObjectBuilder::new().schema_type(Type::String))
            .description(Some("Bytes, or a size like 512M, 2G"))
            .build(),
    )
}

/// A volume.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Volume)]
pub struct VolumeView {
    pub id: String,
    pub name: String,
    pub size_bytes: u64,
    /// Bytes used, when the quota can be read.
    pub used_bytes: Option<u64>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: serde_json::Value,
    /// Sandboxes (running or paused) that mount it.
    pub mounted_by: Vec<String>,
}

impl VolumeView {
    pub fn of(state: &AppState, v: &VolumeRecord) -> VolumeView {
        VolumeView {
            id: v.id.clone(),
            name: v.name.clone(),
            size_bytes: v.size_bytes,
            used_bytes: state.runtime.volume_usage(&v.id),
            created_at: rfc3339(Some(v.created_at)),
            mounted_by: state.runtime.volume_users(&v.id),
        }
    }
}

/// The tenant's volumes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VolumeList {
    /// Oldest first.
    pub volumes: Vec<VolumeView>,
}

/// Create a volume
///
/// A named persistent directory of the caller's tenant: a btrfs subvolume with a quota
/// (`size`, 1 MiB to 64 GiB, default 1 GiB), mounted into sandboxes at create (`volumes`).
/// At most 100 per tenant (429). A name the tenant has: 409.
#[utoipa::path(
    post,
    path = "/v1/volumes",
    tag = "volumes",
    operation_id = "create_volume",
    request_body = CreateBody,
    responses(
        (status = 201, description = "The volume", body = VolumeView),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 409, description = "The tenant has a volume of that name"),
        (status = 429, description = "Rate limited, or 100 volumes already"),
    )
)]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<CreateBody>,
) -> ApiResult<Response> {
    let res: ApiResult<_> = async {
        let size = body.size.as_ref().map(|s| s.bytes("size")).transpose()?;
        Ok(volumes::create(&state, &caller, &body.name, size).await?)
    }
    .await;
    let v = state
        .audited(&caller, "volume.create", None, Some(body.name.clone()), res)
        .await?;
    Ok(typed_response(
        StatusCode::CREATED,
        &VolumeView::of(&state, &v),
    ))
}

/// List the tenant's volumes
#[utoipa::path(
    get,
    path = "/v1/volumes",
    tag = "volumes",
    operation_id = "list_volumes",
    responses(
        (status = 200, description = "Volumes, oldest first", body = VolumeList),
        (status = 401, description = "No or a bad key"),
    )
)]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Response> {
    let volumes = volumes::list(&state, &caller)
        .await?
        .iter()
        .map(|v| VolumeView::of(&state, v))
        .collect();
    Ok(typed_response(StatusCode::OK, &VolumeList { volumes }))
}

/// A volume
#[utoipa::path(
    get,
    path = "/v1/volumes/{name}",
    tag = "volumes",
    operation_id = "get_volume",
    params(("name" = String, Path, description = "Volume name or id")),
    responses(
        (status = 200, description = "The volume", body = VolumeView),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such volume"),
    )
)]
pub(crate) async fn get_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let v = volumes::get(&state, &caller, &name).await?;
    Ok(typed_response(StatusCode::OK, &VolumeView::of(&state, &v)))
}

/// Destroy a volume and its files
///
/// 409 while sandboxes (running or paused) mount it; another tenant's volume is a 404.
#[utoipa::path(
    delete,
    path = "/v1/volumes/{name}",
    tag = "volumes",
    operation_id = "delete_volume",
    params(("name" = String, Path, description = "Volume name or id")),
    responses(
        (status = 204, description = "Destroyed"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such volume"),
        (status = 409, description = "Sandboxes mount it"),
    )
)]
pub(crate) async fn delete(
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
