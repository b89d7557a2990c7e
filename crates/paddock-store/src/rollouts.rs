//! Rollouts: a command or an upload run on every sandbox matching a metadata selector, and
//! each sandbox's outcome. The server runs them (`paddock_service::rollouts`); this is what
//! survives a restart. States are the server's words, stored as text.

use crate::{Millis, Result};

/// A rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutRecord {
    /// `ro_` and random characters.
    pub id: String,
    pub tenant: String,
    /// The API key that started it.
    pub key_id: String,
    /// The fleet node running it (None: a single server).
    pub runner: Option<String>,
    /// `command` or `upload`.
    pub kind: String,
    /// The request as JSON, without uploaded content.
    pub spec: serde_json::Value,
    /// `running`, `succeeded`, `failed`, `cancelled`, `interrupted`.
    pub state: String,
    /// Why it ended as it did (e.g. `2 failures reached max_failures 2`).
    pub reason: Option<String>,
    pub created_at: Millis,
    pub finished_at: Option<Millis>,
}

/// One sandbox of a rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutTarget {
    pub rollout_id: String,
    /// The order targets start in, from 0.
    pub seq: u32,
    pub sandbox_id: String,
    /// `pending`, `running`, `succeeded`, `failed`, `rolled_back`, `skipped`, `interrupted`.
    pub state: String,
    /// Exit code, status, output tails, times and the rollback's outcome, as JSON.
    pub result: serde_json::Value,
}

/// Rollouts and their targets.
#[async_trait::async_trait]
pub trait RolloutStore: Send + Sync {
    /// Inserts a rollout with its targets, in one transaction.
    async fn insert_rollout(&self, r: &RolloutRecord, targets: &[RolloutTarget]) -> Result<()>;
    /// Updates state, reason and `finished_at`; false if there is none.
    async fn update_rollout(&self, r: &RolloutRecord) -> Result<bool>;
    /// Updates a target's state and result; false if there is none.
    async fn update_rollout_target(&self, t: &RolloutTarget) -> Result<bool>;
    /// The rollout and its targets in `seq` order.
    async fn get_rollout(&self, id: &str) -> Result<Option<(RolloutRecord, Vec<RolloutTarget>)>>;
    /// Rollouts of `tenant` (all with None), only those of `key_id` if given, newest first,
    /// at most `limit`.
    async fn list_rollouts(
        &self,
        tenant: Option<&str>,
        key_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RolloutRecord>>;
    /// Marks every `running` rollout of `runner` `interrupted` (finished at `at`, with
    /// `reason`), and their `pending` and `running` targets `interrupted`; returns how many
    /// rollouts. Called when the server that ran them starts again.
    async fn interrupt_rollouts(
        &self,
        runner: Option<&str>,
        at: Millis,
        reason: &str,
    ) -> Result<u64>;
}
