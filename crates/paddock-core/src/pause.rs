//! How a sandbox is paused: the runtime's modes, also recorded in the server's store.

use serde::{Deserialize, Serialize};

/// How a sandbox is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PauseMode {
    /// Processes and memory kept, frozen.
    Full,
    /// Processes stopped and memory freed; the writable layer kept.
    Filesystem,
}

impl PauseMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseMode::Full => "full",
            PauseMode::Filesystem => "filesystem",
        }
    }

    /// `full` or `filesystem`.
    pub fn parse(s: &str) -> Option<PauseMode> {
        match s {
            "full" => Some(PauseMode::Full),
            "filesystem" => Some(PauseMode::Filesystem),
            _ => None,
        }
    }
}
