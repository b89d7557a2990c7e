//! E2B compatibility: the control plane (`/sandboxes`, `/v2/sandboxes`, ...) and the envd
//! data plane, so the unmodified E2B SDKs drive Paddock. Wire facts: `docs/e2b-wire.md`;
//! user-facing notes: `docs/e2b.md`.
//!
//! - [`control`]: the REST routes. They authenticate `X-API-KEY` as a Paddock key, map
//!   `NewSandboxV2` onto [`paddock_service::lifecycle::NewSandbox`], and answer errors as E2B does,
//!   `{"code": <http status>, "message": ...}`. Features Paddock lacks (the templates API,
//!   changing a sandbox's network) answer 400, never a silent success. Every body is a
//!   typed struct of `wire`.
//! - [`envd`]: a request naming a sandbox (`E2b-Sandbox-Id` header, or Host
//!   `{port}-{id}.{domain}`) is the data plane. It is checked against the sandbox's envd access
//!   token (or a file-URL signature) and streamed to the sandbox's agent, which speaks envd
//!   itself. Such a request never reaches the REST routes, whatever its path.
//!
//! **Access tokens** are not stored: a sandbox's token is `HMAC-SHA256(server secret, id)`, so
//! create and connect give the same token and a stolen database reveals none.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::ApiError;
use paddock_service::state::AppState;

mod common;
pub mod control;
pub mod envd;
mod pause;
pub mod routes;
pub mod secrets;
mod snapshots;
pub mod target;
mod volume_content;
mod volumes;
mod wire;

/// The port the E2B SDK uses for envd.
pub const ENVD_PORT: u16 = 49983;

/// The envd protocol version the agent implements: every SDK gate up to 0.6.4 (metadata,
/// `include_entry`, `allow_network_mounts`, octet-stream uploads, `CloseStdin`) is served.
pub use paddock_core::ENVD_VERSION;

/// The `clientID` field E2B clients require; Paddock has no separate orchestrator nodes yet.
pub const CLIENT_ID: &str = "paddock";

/// An error in E2B's shape: `{"code": <status>, "message": "..."}` with the status of the
/// underlying [`ApiError`].
#[derive(Debug)]
pub struct E2bError(pub ApiError);

impl From<ApiError> for E2bError {
    fn from(e: ApiError) -> Self {
        E2bError(e)
    }
}

impl From<paddock_service::Error> for E2bError {
    fn from(e: paddock_service::Error) -> Self {
        E2bError(e.into())
    }
}

impl IntoResponse for E2bError {
    fn into_response(self) -> Response {
        let (status, _) = self.0.status_code();
        if let ApiError::Internal(detail) = &self.0 {
            tracing::error!(%detail, "internal error");
        }
        let retry = match &self.0 {
            ApiError::RateLimited(s) => Some(*s),
            _ => None,
        };
        let mut r = e2b_error(status, &self.0.to_string());
        if let Some(s) = retry {
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(s.max(1)),
            );
        }
        r
    }
}

/// `{"code": status, "message": message}` with `status`.
pub fn e2b_error(status: StatusCode, message: &str) -> Response {
    common::json_status(
        status,
        &wire::ErrorBody {
            code: status.as_u16(),
            message: message.to_owned(),
        },
    )
}

/// The envd access token of sandbox `id` (hex, 32 chars).
pub fn access_token(state: &AppState, id: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&state.secret).expect("HMAC takes keys of any length");
    mac.update(b"e2b-envd-access-token\0");
    mac.update(id.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// Constant-time equality of two byte strings (lengths are not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
