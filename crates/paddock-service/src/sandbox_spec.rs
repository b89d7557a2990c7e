//! What a sandbox may ask for, checked the same on every surface (REST, E2B, rollouts):
//! its timeout against the server's maximum, its metadata's sizes and its number of env
//! variables; and [`NewSandbox`], a create's request once checked.

use std::collections::BTreeMap;
use std::time::Duration;

use paddock_core::Limits;

use crate::error::{Error, Result};
use crate::state::AppState;

/// Most metadata pairs per sandbox, and their sizes.
pub const MAX_METADATA: usize = 64;
pub const MAX_METADATA_KEY: usize = 128;
pub const MAX_METADATA_VALUE: usize = 1024;
/// Most env vars per sandbox.
pub const MAX_ENV: usize = 256;

/// Checks a requested timeout against the server's maximum.
pub fn check_timeout(state: &AppState, secs: u64) -> Result<Duration> {
    let max = state.cfg.max_timeout.as_secs();
    if secs == 0 || secs > max {
        return Err(Error::BadRequest(format!(
            "timeout must be between 1 and {max} seconds, got {secs}"
        )));
    }
    Ok(Duration::from_secs(secs))
}

/// Checks metadata sizes.
pub fn check_metadata(m: &BTreeMap<String, String>) -> Result<()> {
    if m.len() > MAX_METADATA {
        return Err(Error::BadRequest(format!(
            "at most {MAX_METADATA} metadata entries"
        )));
    }
    for (k, v) in m {
        if k.is_empty() || k.len() > MAX_METADATA_KEY || v.len() > MAX_METADATA_VALUE {
            return Err(Error::BadRequest(format!(
                "metadata keys must be 1 to {MAX_METADATA_KEY} bytes and values at most {MAX_METADATA_VALUE}"
            )));
        }
    }
    Ok(())
}

/// What a client asks for when creating a sandbox, already validated at the edge.
#[derive(Debug, Clone)]
pub struct NewSandbox {
    pub template: String,
    pub timeout: Duration,
    pub limits: Limits,
    pub env: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub user: Option<String>,
    pub webhook_url: Option<String>,
    pub network: paddock_core::NetworkPolicy,
    /// Every port is reachable through the proxy without a token (E2B's default).
    pub ports_public: bool,
    /// At its timeout the sandbox is paused in this mode instead of destroyed.
    pub pause_on_timeout: Option<paddock_runtime::PauseMode>,
    /// A paused sandbox resumes on its first data-plane request.
    pub auto_resume: bool,
    /// Tenant secrets to give the sandbox, by env var or file name (`crate::secrets`).
    pub secrets: BTreeMap<String, crate::secrets::SecretUse>,
    /// Labels the node must carry (`crate::fleet::placement`); none on a single host.
    pub node_selector: BTreeMap<String, String>,
    /// The isolation backend asked for; None: the template's default, else the server's
    /// (`crate::isolation`).
    pub isolation: Option<paddock_core::Isolation>,
    /// Volumes to mount, by name (resolved for the caller's tenant at create).
    pub volumes: Vec<crate::volumes::VolumeUse>,
}
