//! Alert rules, their firings (one open episode per rule and subject) and the budget
//! crossings already announced (`docs/alerts.md`).

use crate::{Millis, Result};

/// A rule: what to watch (`kind` and its `params`) and where to deliver (`url`, `format`).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    /// `alr-<random>`.
    pub id: String,
    pub tenant: String,
    /// Watches the whole host or fleet (node and capacity kinds; made by admins).
    pub fleet: bool,
    pub kind: String,
    /// The kind's parameters, checked by the server.
    pub params: serde_json::Value,
    pub url: String,
    /// `json` or `slack`.
    pub format: String,
    pub created_at: Millis,
    pub created_by: Option<String>,
}

/// One episode of a rule firing for a subject.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertFiring {
    pub id: i64,
    pub rule_id: String,
    pub tenant: String,
    /// What fired: `sandbox:<id>`, `node:<id>`, `tenant:<id>`, `host`, ...
    pub subject: String,
    pub summary: String,
    pub data: serde_json::Value,
    pub started_at: Millis,
    /// When the condition was last seen true.
    pub last_seen_at: Millis,
    pub resolved_at: Option<Millis>,
}

/// Which firings to read.
#[derive(Debug, Clone, Default)]
pub struct FiringFilter {
    /// Only this tenant's (None: all).
    pub tenant: Option<String>,
    /// Only open ones.
    pub open_only: bool,
    /// Only episodes open at or after this time (started, or resolved, since).
    pub since: Option<Millis>,
    pub limit: u32,
}

/// The alerts half of the store (a supertrait of [`crate::Store`]).
#[async_trait::async_trait]
pub trait AlertStore: Send + Sync {
    async fn insert_alert_rule(&self, r: &AlertRule) -> Result<()>;
    async fn get_alert_rule(&self, id: &str) -> Result<Option<AlertRule>>;
    /// The tenant's rules (every rule with None), oldest first.
    async fn list_alert_rules(&self, tenant: Option<&str>) -> Result<Vec<AlertRule>>;
    /// Removes a rule and its firings; false if there was none.
    async fn delete_alert_rule(&self, id: &str) -> Result<bool>;
    /// Opens an episode unless one is open for its rule and subject: the new firing (with
    /// its id), or None when one was already open (its `last_seen_at` is moved to
    /// `f.last_seen_at`).
    async fn open_firing(&self, f: &AlertFiring) -> Result<Option<AlertFiring>>;
    /// Closes the open episode of `rule_id` and `subject`, if any, and returns it.
    async fn resolve_firing(
        &self,
        rule_id: &str,
        subject: &str,
        at: Millis,
    ) -> Result<Option<AlertFiring>>;
    /// Firings matching `f`, newest first.
    async fn list_firings(&self, f: &FiringFilter) -> Result<Vec<AlertFiring>>;
    /// Records that `tenant` crossed `level` in `period`; false if it was recorded before.
    async fn record_budget_crossing(
        &self,
        tenant: &str,
        period: &str,
        level: &str,
        at: Millis,
    ) -> Result<bool>;
    /// Forgets a crossing (the budget was raised above what was spent), so the next one is
    /// announced again.
    async fn clear_budget_crossing(&self, tenant: &str, period: &str, level: &str) -> Result<()>;
}
