//! The wire form of rollouts (`Rollout`, `RolloutTarget` in the OpenAPI document): what the
//! routes answer and the NDJSON progress lines carry. States and kinds are stored as
//! strings; here they are closed enums ([`RolloutState`], [`TargetState`], [`RolloutKind`]).

use std::collections::BTreeMap;

use paddock_store::{RolloutRecord, RolloutTarget};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::text::rfc3339;

/// A rollout's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// The server stopped while it ran.
    Interrupted,
}

impl RolloutState {
    /// The state of a stored name (every name the runner writes; anything else, which only
    /// a damaged store could hold, reads as `interrupted`).
    pub fn parse(s: &str) -> RolloutState {
        match s {
            "running" => RolloutState::Running,
            "succeeded" => RolloutState::Succeeded,
            "failed" => RolloutState::Failed,
            "cancelled" => RolloutState::Cancelled,
            _ => RolloutState::Interrupted,
        }
    }
}

/// A target's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    Pending,
    Running,
    Succeeded,
    Failed,
    RolledBack,
    Skipped,
    /// The server stopped while it ran.
    Interrupted,
}

impl TargetState {
    /// Every state, in the order of a rollout's `counts`.
    pub const ALL: [TargetState; 7] = [
        TargetState::Pending,
        TargetState::Running,
        TargetState::Succeeded,
        TargetState::Failed,
        TargetState::RolledBack,
        TargetState::Skipped,
        TargetState::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Pending => "pending",
            TargetState::Running => "running",
            TargetState::Succeeded => "succeeded",
            TargetState::Failed => "failed",
            TargetState::RolledBack => "rolled_back",
            TargetState::Skipped => "skipped",
            TargetState::Interrupted => "interrupted",
        }
    }

    /// The state of a stored name (anything unknown, which only a damaged store could
    /// hold, reads as `interrupted`).
    pub fn parse(s: &str) -> TargetState {
        TargetState::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .unwrap_or(TargetState::Interrupted)
    }
}

/// What a rollout does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RolloutKind {
    Command,
    Upload,
}

impl RolloutKind {
    /// The kind of a stored name (`command` or `upload`; anything else reads as `command`).
    pub fn parse(s: &str) -> RolloutKind {
        if s == "upload" {
            RolloutKind::Upload
        } else {
            RolloutKind::Command
        }
    }
}

/// One sandbox of a rollout: its state, and its outcome's fields (`exit_code`, `status`,
/// `stdout_tail` and `stderr_tail` (the last 4096 bytes), `error`, `started_at`,
/// `finished_at`, `duration_ms`, `outcome_before_rollback` (`succeeded` or `failed`) and
/// `rollback` (the rollback command's outcome: the same fields, and `ok`)), as they are
/// known.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = RolloutTarget))]
pub struct TargetView {
    pub sandbox_id: String,
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub state: TargetState,
    /// The outcome's fields, as they are known.
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub result: Map<String, Value>,
}

impl From<&RolloutTarget> for TargetView {
    fn from(t: &RolloutTarget) -> TargetView {
        let mut result = t.result.as_object().cloned().unwrap_or_default();
        // The identity fields are the target's own.
        result.remove("sandbox_id");
        result.remove("state");
        TargetView {
            sandbox_id: t.sandbox_id.clone(),
            state: TargetState::parse(&t.state),
            result,
        }
    }
}

/// A rollout, with its targets' counts and targets when read one by one.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = Rollout))]
pub struct RolloutView {
    pub id: String,
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub kind: RolloutKind,
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub state: RolloutState,
    /// Why it ended as it did (e.g. `2 failures reached max_failures 2`).
    pub reason: Option<String>,
    pub key_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Value,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub finished_at: Value,
    /// The request without uploaded bytes
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub spec: Value,
    /// Targets per state, and `total` (not in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<BTreeMap<String, usize>>,
    /// Not in lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandboxes: Option<Vec<TargetView>>,
}

impl RolloutView {
    pub fn of(r: &RolloutRecord, targets: Option<&[RolloutTarget]>) -> RolloutView {
        let counts = targets.map(|ts| {
            let mut c: BTreeMap<String, usize> = TargetState::ALL
                .iter()
                .map(|s| (s.as_str().to_owned(), 0))
                .collect();
            for t in ts {
                *c.entry(TargetState::parse(&t.state).as_str().to_owned())
                    .or_default() += 1;
            }
            c.insert("total".into(), ts.len());
            c
        });
        RolloutView {
            id: r.id.clone(),
            kind: RolloutKind::parse(&r.kind),
            state: RolloutState::parse(&r.state),
            reason: r.reason.clone(),
            key_id: r.key_id.clone(),
            created_at: rfc3339(Some(r.created_at)),
            finished_at: rfc3339(r.finished_at),
            spec: r.spec.clone(),
            counts,
            sandboxes: targets.map(|ts| ts.iter().map(TargetView::from).collect()),
        }
    }
}

/// The kind of a progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ProgressKind {
    /// The rollout as started (first).
    Rollout,
    /// A change of one sandbox.
    Sandbox,
    /// The finished rollout (last).
    End,
}

/// One line of a rollout's NDJSON progress: `rollout` first, a `sandbox` line per change,
/// `end` last.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = RolloutProgress))]
pub struct Progress {
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub r#type: ProgressKind,
    /// In `rollout` and `end` lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
    /// In `sandbox` lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<TargetView>,
}

impl Progress {
    pub fn rollout(kind: ProgressKind, r: RolloutView) -> Progress {
        Progress {
            r#type: kind,
            rollout: Some(r),
            sandbox: None,
        }
    }

    pub fn sandbox(t: &RolloutTarget) -> Progress {
        Progress {
            r#type: ProgressKind::Sandbox,
            rollout: None,
            sandbox: Some(TargetView::from(t)),
        }
    }

    /// Whether this is the last line.
    pub fn is_end(&self) -> bool {
        self.r#type == ProgressKind::End
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every state name the runner writes reads as itself, and the view is the form the
    /// `json!` bodies had: the result's fields beside `sandbox_id` and `state`, counts of
    /// every state and `total`.
    #[test]
    fn views_are_the_stored_states_and_serialise_as_before() {
        for s in [
            "pending",
            "running",
            "succeeded",
            "failed",
            "rolled_back",
            "skipped",
            "interrupted",
        ] {
            assert_eq!(TargetState::parse(s).as_str(), s);
            assert_eq!(serde_json::to_value(TargetState::parse(s)).unwrap(), s);
        }
        for s in ["running", "succeeded", "failed", "cancelled", "interrupted"] {
            assert_eq!(
                serde_json::to_value(RolloutState::parse(s)).unwrap(),
                Value::String(s.into())
            );
        }
        let r = RolloutRecord {
            id: "ro_1".into(),
            tenant: "t".into(),
            key_id: "key_1".into(),
            runner: None,
            kind: "command".into(),
            spec: serde_json::json!({"command": "true"}),
            state: "failed".into(),
            reason: Some("1 sandboxes failed".into()),
            created_at: 0,
            finished_at: None,
        };
        let t = RolloutTarget {
            rollout_id: "ro_1".into(),
            seq: 0,
            sandbox_id: "sb1".into(),
            state: "failed".into(),
            result: serde_json::json!({"exit_code": 1, "status": "exit status 1"}),
        };
        let v = serde_json::to_value(RolloutView::of(&r, Some(&[t]))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": "ro_1", "kind": "command", "state": "failed",
                "reason": "1 sandboxes failed", "key_id": "key_1",
                "created_at": "1970-01-01T00:00:00Z", "finished_at": null,
                "spec": {"command": "true"},
                "counts": {"pending": 0, "running": 0, "succeeded": 0, "failed": 1,
                    "rolled_back": 0, "skipped": 0, "interrupted": 0, "total": 1},
                "sandboxes": [{"sandbox_id": "sb1", "state": "failed", "exit_code": 1,
                    "status": "exit status 1"}],
            })
        );
        let listed = serde_json::to_value(RolloutView::of(&r, None)).unwrap();
        assert!(listed.get("counts").is_none() && listed.get("sandboxes").is_none());
    }
}
