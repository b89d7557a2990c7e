//! What a sandbox may ask for, checked the same on every surface (REST, E2B, rollouts):
//! its timeout against the server's maximum, its metadata's sizes and its number of env
//! variables.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Most metadata pairs per sandbox, and their sizes.
pub const MAX_METADATA: usize = 64;
pub const MAX_METADATA_KEY: usize = 128;
pub const MAX_METADATA_VALUE: usize = 1024;
/// Most env vars per sandbox.
pub const MAX_ENV: usize = 256;

/// Checks a requested timeout against the server's maximum.
pub fn check_timeout(state: &AppState, secs: u64) -> ApiResult<Duration> {
    let max = state.cfg.max_timeout.as_secs();
    if secs == 0 || secs > max {
        return Err(ApiError::BadRequest(format!(
            "timeout must be between 1 and {max} seconds, got {secs}"
        )));
    }
    Ok(Duration::from_secs(secs))
}

/// Checks metadata sizes.
pub fn check_metadata(m: &BTreeMap<String, String>) -> ApiResult<()> {
    if m.len() > MAX_METADATA {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_METADATA} metadata entries"
        )));
    }
    for (k, v) in m {
        if k.is_empty() || k.len() > MAX_METADATA_KEY || v.len() > MAX_METADATA_VALUE {
            return Err(ApiError::BadRequest(format!(
                "metadata keys must be 1 to {MAX_METADATA_KEY} bytes and values at most {MAX_METADATA_VALUE}"
            )));
        }
    }
    Ok(())
}
