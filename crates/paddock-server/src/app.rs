//! The whole HTTP application: the REST routes ([`crate::api`]), the E2B control API, and
//! the middlewares in front of them (E2B data plane, port proxy, request counting, request
//! spans). The top of the server's module tree: nothing imports it but `serve`.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use crate::api::{
    admin, code, events, exec, files, mcp, pause, pools, ports, rollouts, sandboxes, secrets,
    services, session, snapshots, system, templates, tests, volumes,
};
use crate::error::ApiError;
use paddock_service::state::AppState;

/// The whole API: REST, E2B, the proxy and `/mcp`.
pub fn router(state: Arc<AppState>) -> Router {
    let mcp = mcp::routes(&state, routes(state.clone(), Router::new()));
    routes(state, mcp)
}

/// The API with `extra` routes merged in (`/mcp`, whose tools call the API without them).
fn routes(state: Arc<AppState>, extra: Router<Arc<AppState>>) -> Router {
    Router::new()
        .merge(extra)
        .merge(system::routes())
        .route(
            "/v1/openapi.json",
            axum::routing::get(crate::openapi::serve),
        )
        .merge(sandboxes::routes())
        .merge(pause::routes())
        .merge(snapshots::routes())
        .merge(volumes::routes())
        .merge(pools::routes())
        .merge(exec::routes())
        .merge(files::routes())
        .merge(ports::routes())
        .merge(events::routes())
        .merge(tests::routes())
        .merge(services::routes())
        .merge(rollouts::routes())
        .merge(code::routes())
        .merge(admin::routes())
        .merge(secrets::routes())
        .merge(templates::routes())
        .merge(crate::e2b::routes::routes())
        .merge(session::routes())
        .merge(crate::api::cost::routes())
        .merge(crate::api::alerts::routes())
        // Every route above needs a row in the roles table (`roles::ROUTES`).
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::roles::enforce,
        ))
        // The web console's files; every other path stays a JSON 404.
        .fallback(crate::console::fallback)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // REST and E2B control only: the data plane and the proxy forward targets as sent.
        .layer(axum::middleware::from_fn(reject_nul_in_target))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::e2b::envd::route,
        ))
        // Outside the data plane: refuses CONNECT, absolute-form targets and duplicate Host
        // for every request, and serves /proxy/ before any route is matched.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::proxy::route,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            system::count_requests,
        ))
        // Outermost: every request, proxied and data plane included, runs in its span.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::trace::request_span,
        ))
        .with_state(state)
}

/// Middleware: 400 for a NUL in the path or a query parameter (see [`crate::wire::input`]),
/// in the REST or the E2B error format by the path.
pub async fn reject_nul_in_target(req: Request, next: Next) -> Response {
    let uri = req.uri();
    let path_has_nul = uri
        .path()
        .as_bytes()
        .windows(3)
        .any(|w| w.eq_ignore_ascii_case(b"%00"));
    let problem = if path_has_nul {
        Some("the request path".to_owned())
    } else {
        uri.query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes()).find_map(|(k, v)| {
                if k.contains('\0') {
                    Some("a query parameter name".to_owned())
                } else if v.contains('\0') {
                    Some(format!("query parameter {k:?}"))
                } else {
                    None
                }
            })
        })
    };
    let Some(field) = problem else {
        return next.run(req).await;
    };
    let e = ApiError::BadRequest(crate::wire::input::nul_message(&field));
    let p = uri.path();
    if p == "/v1" || p.starts_with("/v1/") {
        e.into_response()
    } else {
        crate::e2b::E2bError(e).into_response()
    }
}
