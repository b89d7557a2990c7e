//! The REST API's JSON extractor.

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::input;
use crate::error::ApiError;
use crate::state::AppState;
use crate::wire::read_limited;

/// A JSON body: `Content-Type: application/json`, at most the configured size, parsed
/// strictly (unknown fields and duplicate keys are errors; nesting deeper than 128 is an
/// error; a string with NUL is an error naming its field, see [`input`]). Rejections use the
/// API's error format.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let limit = state.cfg.max_json_body;
        let bytes = read_limited(req, limit, true).await?;
        let v = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::InvalidJson(format!("invalid JSON body: {e}")))?;
        if let Some(field) = input::nul_field(&bytes) {
            return Err(ApiError::BadRequest(input::nul_message(&field)));
        }
        Ok(Json(v))
    }
}
