//! The alert machinery a server keeps in memory (held by the server's state): delivery,
//! recent failed creates per tenant, the OOM watch's counts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use paddock_store::now_ms;

use super::deliver;

/// Failed creates remembered per tenant (for `create_failures` rules).
const MAX_FAILURES_KEPT: usize = 10_000;

/// The alert machinery a server keeps in memory.
#[derive(Debug)]
pub struct Alerts {
    pub delivery: Arc<deliver::Delivery>,
    /// Times of failed creates per tenant, oldest first (at most [`MAX_FAILURES_KEPT`]).
    pub(super) create_failures: Mutex<HashMap<String, VecDeque<i64>>>,
    /// Per sandbox: the OOM kill count last seen, and whether an `oom` event was emitted
    /// since (so the watch does not emit a second one for the same kill).
    pub(super) oom: Mutex<HashMap<String, (u64, bool)>>,
    /// Wakes the periodic check early (a budget or rule changed).
    pub wake: tokio::sync::Notify,
}

impl Alerts {
    pub fn new(secret: Option<String>) -> Alerts {
        Alerts {
            delivery: Arc::new(deliver::Delivery::new(secret)),
            create_failures: Mutex::default(),
            oom: Mutex::default(),
            wake: tokio::sync::Notify::new(),
        }
    }

    pub(super) fn note_create_failure(&self, tenant: &str, at: i64) {
        let mut m = self
            .create_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let q = m.entry(tenant.to_owned()).or_default();
        if q.len() == MAX_FAILURES_KEPT {
            q.pop_front();
        }
        q.push_back(at);
    }

    /// Failed creates of `tenant` since `since`.
    pub(super) fn create_failures_since(&self, tenant: &str, since: i64) -> u64 {
        let mut m = self
            .create_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(q) = m.get_mut(tenant) else { return 0 };
        // Nothing older than a day is ever asked for.
        while q.front().is_some_and(|t| *t < now_ms() - 86_400_000) {
            q.pop_front();
        }
        q.iter().filter(|t| **t >= since).count() as u64
    }
}
