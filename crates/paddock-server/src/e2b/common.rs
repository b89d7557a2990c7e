//! What every E2B control-plane handler shares: the caller extractor, the result type and
//! strict JSON bodies in and out. A leaf: it imports no handler module.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::E2bError;
use crate::auth::{authenticate, presented_key};
use crate::error::ApiError;
use crate::wire::read_limited;
use paddock_service::auth::keys::Caller;
use paddock_service::state::AppState;

/// What an E2B handler returns: errors are E2B-shaped.
pub(super) type E2bResult<T> = Result<T, E2bError>;

/// The caller of an E2B route: a Paddock key in `X-API-KEY` (or `Authorization: Bearer`).
#[derive(Debug, Clone)]
pub(crate) struct E2bCaller(pub(crate) Caller);

impl FromRequestParts<Arc<AppState>> for E2bCaller {
    type Rejection = E2bError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(E2bCaller(c.clone()));
        }
        let c = authenticate(state, presented_key(parts)).await?;
        crate::roles::admit(&parts.extensions, &c)?;
        parts.extensions.insert(c.clone());
        Ok(E2bCaller(c))
    }
}

/// A JSON body parsed strictly, with E2B-shaped errors. An empty body is `{}` (the SDK
/// sends none on some calls).
pub(super) async fn body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    req: Request,
) -> E2bResult<T> {
    let bytes = read_limited(req, state.cfg.max_json_body, false).await?;
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    Ok(crate::wire::json::parse(bytes)?)
}

/// `body` (a [`super::wire`] type) as JSON with `status`. It goes through
/// `serde_json::Value`, whose objects keep their keys sorted, so the bytes are those of the
/// `json!` bodies the wire types replaced.
pub(super) fn json_status<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_value(body) {
        Ok(v) => (status, axum::Json(v)).into_response(),
        Err(e) => E2bError(ApiError::Internal(format!("response body: {e}"))).into_response(),
    }
}
