//! The rollouts running in this process (held by the server's state): each one's progress
//! channel and cancel switch.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{broadcast, watch};

/// The rollouts running in this process: their progress channels and cancel switches.
#[derive(Debug, Default)]
pub struct Rollouts {
    live: Mutex<HashMap<String, Live>>,
}

#[derive(Debug, Clone)]
pub(super) struct Live {
    /// Progress lines (`{"type": "sandbox"|"end", ...}`).
    pub(super) progress: broadcast::Sender<super::view::Progress>,
    /// Set to true by a cancel.
    pub(super) cancel: watch::Sender<bool>,
}

impl Rollouts {
    pub(super) fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The progress of a running rollout, from now on; None if it is not running here.
    pub fn subscribe(&self, id: &str) -> Option<broadcast::Receiver<super::view::Progress>> {
        self.map().get(id).map(|l| l.progress.subscribe())
    }

    /// Asks a running rollout to stop starting sandboxes; false if it is not running here.
    pub(super) fn cancel(&self, id: &str) -> bool {
        match self.map().get(id) {
            Some(l) => {
                let _ = l.cancel.send(true);
                true
            }
            None => false,
        }
    }
}
