//! The E2B volume control routes on Paddock's volumes (`paddock_service::volumes`, SDK 2.63):
//!
//! - `POST /volumes` `{"name"}`: 201 `{"volumeID", "name", "token"}` (the default quota);
//!   a name the tenant has: 409.
//! - `GET /volumes`: `[{"volumeID", "name"}]`; `GET /volumes/{id}`: `{"volumeID", "name",
//!   "token"}`, 404 if unknown or another tenant's.
//! - `DELETE /volumes/{id}`: 204; 404 unknown; 409 while sandboxes mount it.
//!
//! The `token` is an HMAC of `volume:<id>` (which no sandbox id can be): it authorises the
//! volume content API for that volume alone (`super::volume_content`).

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use paddock_store::VolumeRecord;
use serde::Deserialize;

use super::common::{E2bCaller, E2bResult, body, json_status};
use super::wire::VolumeBody;
use crate::wire::no_content;
use paddock_service::state::AppState;
use paddock_service::volumes;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewVolume {
    name: String,
}

/// A volume with its content API token (create and get).
fn with_token(state: &AppState, v: &VolumeRecord) -> VolumeBody {
    VolumeBody {
        name: v.name.clone(),
        token: Some(super::access_token(state, &format!("volume:{}", v.id))),
        volume_id: v.id.clone(),
    }
}

pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    req: Request,
) -> E2bResult<Response> {
    let b: NewVolume = body(&state, req).await?;
    let res = volumes::create(&state, &caller, &b.name, None).await;
    let v = state
        .audited(&caller, "volume.create", None, Some(b.name), res)
        .await?;
    Ok(json_status(StatusCode::CREATED, &with_token(&state, &v)))
}

pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
) -> E2bResult<Response> {
    let items: Vec<VolumeBody> = volumes::list(&state, &caller)
        .await?
        .into_iter()
        .map(|v| VolumeBody {
            name: v.name,
            token: None,
            volume_id: v.id,
        })
        .collect();
    Ok(json_status(StatusCode::OK, &items))
}

pub(super) async fn get_one(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
) -> E2bResult<Response> {
    let v = volumes::get(&state, &caller, &id).await?;
    Ok(json_status(StatusCode::OK, &with_token(&state, &v)))
}

pub(super) async fn destroy(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
) -> E2bResult<Response> {
    let res = volumes::delete(&state, &caller, &id).await;
    state
        .audited(&caller, "volume.delete", None, Some(id), res)
        .await?;
    Ok(no_content())
}
