//! The kinds of events: every `kind` the server stores in the event table and sends to SSE
//! subscribers (`/v1/events`), webhooks and alert rules, closed. Their names on the wire
//! are [`EventKind::as_str`]; the console, webhooks and alert evaluation read them, so a name
//! never changes (`docs/api.md` lists them; a test keeps the list whole).

use std::fmt;

use paddock_store::StopReason;

/// What an event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A sandbox is running (`template`, `ready_ms`, `pooled`).
    Created,
    /// A sandbox could not be created or restored (`error`), or stopped as failed.
    Failed,
    /// A sandbox was deleted.
    Killed,
    /// A sandbox's timeout ended it.
    Expired,
    /// A process of a sandbox was killed for memory (`command`, `pid`, or `oom_kills`), or
    /// the sandbox stopped so.
    Oom,
    /// A sandbox's runtime half is gone (a restart found it missing, or its node died).
    Lost,
    /// A sandbox was stopped by the server's shutdown.
    Shutdown,
    /// A restart found a sandbox alive and took it back.
    Adopted,
    /// A sandbox's timeout was set anew (`timeout_secs`, `expires_at`).
    TimeoutChanged,
    /// A sandbox's timeout is near (`expires_at`, `remaining_secs`, `warning`).
    TimeoutWarning,
    /// A sandbox's network policy was replaced (`network`).
    NetworkChanged,
    /// A sandbox was paused (`mode`, `reason`).
    Paused,
    /// A sandbox was resumed (`mode`, `reboot`).
    Resumed,
    /// A snapshot of a sandbox was taken (`snapshot_id`).
    Snapshot,
    /// A template's start command exited (`pid`, `exit_code`, `status`).
    StartExited,
    /// An alert rule fired.
    AlertFiring,
    /// An alert rule's condition ended.
    AlertResolved,
    /// A tenant's spending crossed its budget's warning level.
    BudgetWarning,
    /// A tenant's spending crossed its budget.
    BudgetExceeded,
    /// A fleet node registered, came back or was undrained (tenant `fleet`).
    NodeReady,
    /// A fleet node was drained (tenant `fleet`).
    NodeDraining,
    /// A fleet node stopped heartbeating (tenant `fleet`).
    NodeDead,
    /// A fleet node fetched a template from a peer (tenant `fleet`).
    TemplateFetched,
    /// Not stored: an SSE subscriber fell behind and lost events.
    Lagged,
}

impl EventKind {
    /// Every kind, in the order of the enum.
    pub const ALL: [EventKind; 24] = [
        EventKind::Created,
        EventKind::Failed,
        EventKind::Killed,
        EventKind::Expired,
        EventKind::Oom,
        EventKind::Lost,
        EventKind::Shutdown,
        EventKind::Adopted,
        EventKind::TimeoutChanged,
        EventKind::TimeoutWarning,
        EventKind::NetworkChanged,
        EventKind::Paused,
        EventKind::Resumed,
        EventKind::Snapshot,
        EventKind::StartExited,
        EventKind::AlertFiring,
        EventKind::AlertResolved,
        EventKind::BudgetWarning,
        EventKind::BudgetExceeded,
        EventKind::NodeReady,
        EventKind::NodeDraining,
        EventKind::NodeDead,
        EventKind::TemplateFetched,
        EventKind::Lagged,
    ];

    /// The name on the wire and in the store.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Failed => "failed",
            EventKind::Killed => "killed",
            EventKind::Expired => "expired",
            EventKind::Oom => "oom",
            EventKind::Lost => "lost",
            EventKind::Shutdown => "shutdown",
            EventKind::Adopted => "adopted",
            EventKind::TimeoutChanged => "timeout_changed",
            EventKind::TimeoutWarning => "timeout_warning",
            EventKind::NetworkChanged => "network_changed",
            EventKind::Paused => "paused",
            EventKind::Resumed => "resumed",
            EventKind::Snapshot => "snapshot",
            EventKind::StartExited => "start_exited",
            EventKind::AlertFiring => "alert.firing",
            EventKind::AlertResolved => "alert.resolved",
            EventKind::BudgetWarning => "budget_warning",
            EventKind::BudgetExceeded => "budget_exceeded",
            EventKind::NodeReady => "node.ready",
            EventKind::NodeDraining => "node.draining",
            EventKind::NodeDead => "node.dead",
            EventKind::TemplateFetched => "template.fetched",
            EventKind::Lagged => "lagged",
        }
    }

    /// The kind named `s` (a stored event's `kind`); None for a name this server does not
    /// make.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether this is one of the alert announcements (`alert.*`).
    pub fn is_alert(self) -> bool {
        matches!(self, EventKind::AlertFiring | EventKind::AlertResolved)
    }
}

/// The event of a sandbox stopping for `reason`: named like the reason.
impl From<StopReason> for EventKind {
    fn from(reason: StopReason) -> EventKind {
        match reason {
            StopReason::Killed => EventKind::Killed,
            StopReason::Expired => EventKind::Expired,
            StopReason::Failed => EventKind::Failed,
            StopReason::Oom => EventKind::Oom,
            StopReason::Lost => EventKind::Lost,
            StopReason::Shutdown => EventKind::Shutdown,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<EventKind> for str {
    fn eq(&self, k: &EventKind) -> bool {
        self == k.as_str()
    }
}

impl PartialEq<EventKind> for String {
    fn eq(&self, k: &EventKind) -> bool {
        self == k.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for k in EventKind::ALL {
            assert!(seen.insert(k.as_str()), "{k} twice");
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("nope"), None);
    }

    #[test]
    fn every_kind_is_documented() {
        let doc = include_str!("../../../docs/api.md");
        for k in EventKind::ALL {
            assert!(
                doc.contains(&format!("| `{k}` |")),
                "docs/api.md lacks event kind {k}"
            );
        }
    }

    #[test]
    fn stop_reasons_keep_their_names() {
        for r in StopReason::ALL {
            assert_eq!(EventKind::from(r).as_str(), r.as_str());
        }
    }
}
