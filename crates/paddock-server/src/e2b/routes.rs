//! The E2B control plane's routes (`/sandboxes`, `/v2/sandboxes`, snapshots, volumes,
//! secrets, the templates API it does not support): the one module that names every
//! handler, so the handler modules never import each other for routing.

use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get, post};

use super::common::E2bCaller;
use super::{E2bError, control, pause, secrets, snapshots, volume_content, volumes};
use crate::error::ApiError;
use paddock_service::state::AppState;

/// Every route of the E2B control plane.
pub fn routes() -> Router<Arc<AppState>> {
    let unsupported = |what: &'static str| {
        any(move |_: E2bCaller| async move {
            E2bError(ApiError::BadRequest(format!(
                "{what} not supported by Paddock yet"
            )))
        })
    };
    Router::new()
        .merge(secrets::routes())
        .route("/sandboxes", post(control::create).get(control::list_v1))
        .route("/v2/sandboxes", post(control::create).get(control::list_v2))
        .route(
            "/sandboxes/{id}",
            get(control::get_one).delete(control::kill),
        )
        .route("/sandboxes/{id}/connect", post(pause::connect))
        .route("/v2/sandboxes/{id}/connect", post(pause::connect))
        .route("/sandboxes/{id}/timeout", post(control::set_timeout))
        .route("/sandboxes/{id}/metrics", get(control::metrics))
        .route("/sandboxes/{id}/refreshes", post(control::refresh))
        .route("/sandboxes/{id}/pause", post(pause::pause))
        .route("/sandboxes/{id}/resume", post(pause::resume))
        .route("/sandboxes/{id}/fork", post(snapshots::fork))
        .route("/sandboxes/{id}/snapshots", post(snapshots::create))
        .route(
            "/sandboxes/{id}/network",
            unsupported("changing a sandbox's network is"),
        )
        .route("/snapshots", get(snapshots::list))
        .route("/snapshots/{*rest}", unsupported("snapshots are"))
        .route("/templates", unsupported("the E2B templates API is"))
        .route("/templates/{*rest}", any(snapshots::templates))
        .route("/v2/templates", unsupported("the E2B templates API is"))
        .route(
            "/v2/templates/{*rest}",
            unsupported("the E2B templates API is"),
        )
        .route("/v3/templates", unsupported("the E2B templates API is"))
        .route(
            "/v3/templates/{*rest}",
            unsupported("the E2B templates API is"),
        )
        .route("/volumes", post(volumes::create).get(volumes::list))
        .route(
            "/volumes/{id}",
            get(volumes::get_one).delete(volumes::destroy),
        )
        .route(
            "/volumecontent/{id}/path",
            get(volume_content::stat)
                .patch(volume_content::patch)
                .delete(volume_content::remove),
        )
        .route(
            "/volumecontent/{id}/dir",
            get(volume_content::list).post(volume_content::make_dir),
        )
        .route(
            "/volumecontent/{id}/file",
            get(volume_content::read).put(volume_content::write),
        )
}
