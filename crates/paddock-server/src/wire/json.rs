//! The JSON extractor of the REST API, and the body parser of every route that reads JSON.

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::input;
use crate::error::ApiError;
use crate::wire::read_limited;
use paddock_service::state::AppState;

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
        parse(&bytes).map(Json)
    }
}

/// Parses a request body that must be one JSON object into `T`, with the checks of
/// [`Json`]. Every body the API and the E2B control API read goes through it. A derived
/// `Deserialize` also takes a struct's fields as a JSON array, in order (`["x"]` for
/// `{"name": "x"}`); no route accepts that, so anything but an object at the top is a 400.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        // The kind it is, if it is JSON at all; otherwise the parser's own message.
        let kind = match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(serde_json::Value::Array(_)) => "an array",
            Ok(serde_json::Value::String(_)) => "a string",
            Ok(serde_json::Value::Number(_)) => "a number",
            Ok(serde_json::Value::Bool(_)) => "a boolean",
            Ok(serde_json::Value::Null) => "null",
            Ok(serde_json::Value::Object(_)) | Err(_) => "",
        };
        if !kind.is_empty() {
            return Err(ApiError::InvalidJson(format!(
                "invalid JSON body: expected a JSON object, got {kind}"
            )));
        }
    }
    let v = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::InvalidJson(format!("invalid JSON body: {e}")))?;
    if let Some(field) = input::nul_field(bytes) {
        return Err(ApiError::BadRequest(input::nul_message(&field)));
    }
    Ok(v)
}
