//! The in-memory view of running sandboxes' deadlines (held by the server's state), which
//! the timeout task of [`super`] sleeps on.

use std::collections::HashMap;
use std::sync::Mutex;

use paddock_store::{Millis, SandboxRecord, SandboxState};

/// The in-memory view of running sandboxes' deadlines.
#[derive(Debug, Default)]
pub struct Deadlines(pub(super) Mutex<HashMap<String, Deadline>>);

#[derive(Debug, Clone)]
pub(super) struct Deadline {
    pub(super) tenant: String,
    pub(super) expires_at: Millis,
    pub(super) timeout_ms: i64,
    pub(super) warnings_sent: u32,
    pub(super) webhook: Option<String>,
}

impl Deadlines {
    pub(crate) fn set(&self, r: &SandboxRecord) {
        let Some(expires_at) = r.expires_at else {
            return;
        };
        let timeout_ms = r
            .spec
            .timeout_ms
            .unwrap_or(expires_at - r.ready_at.unwrap_or(expires_at));
        self.0.lock().expect("deadlines poisoned").insert(
            r.id.clone(),
            Deadline {
                tenant: r.tenant.clone(),
                expires_at,
                timeout_ms,
                // A paused sandbox's deadline is the end of its retention: no warnings.
                warnings_sent: if r.state == SandboxState::Paused {
                    u32::MAX
                } else {
                    r.warnings_sent
                },
                webhook: r.webhook_url.clone(),
            },
        );
    }

    pub(crate) fn remove(&self, id: &str) {
        self.0.lock().expect("deadlines poisoned").remove(id);
    }

    /// Number of sandboxes with a deadline (the running ones).
    pub fn len(&self) -> usize {
        self.0.lock().expect("deadlines poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
