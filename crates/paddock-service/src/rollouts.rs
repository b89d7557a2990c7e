//! Rollouts (`docs/rollouts.md`): a command, or an upload, run on every running sandbox
//! matching a metadata selector, in parallel under a cap, stopping after `max_failures`
//! failures and then running a rollback command on the sandboxes already changed.
//!
//! - [`Spec`] is a checked request; [`start`] selects the targets (the sandbox list's
//!   metadata filter, scoped by [`Caller::scope`], so a developer reaches only their own
//!   sandboxes), writes the rollout and its targets to the store and spawns the runner
//!   (`run`).
//! - The store is the truth: every change of a target is written there first, then sent to
//!   the rollout's live subscribers ([`Rollouts`]), which the NDJSON progress stream reads.
//! - A rollout still `running` when its server starts again is marked `interrupted`
//!   ([`interrupt_stale`]).

pub mod live;
mod run;
pub mod spec;
pub mod view;

use std::sync::Arc;

use paddock_store::{
    RolloutRecord, RolloutTarget, SandboxFilter, SandboxState, StoreError, now_ms,
};
use serde_json::json;
use tokio::sync::{broadcast, watch};

use live::Live;
pub use live::Rollouts;
pub use spec::{Action, Spec, Upload};

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::state::AppState;

/// Most sandboxes one rollout may reach; a selector matching more is refused.
pub const MAX_TARGETS: usize = 1000;
/// Bytes kept of the end of each command's stdout and of its stderr, per sandbox.
pub const TAIL_BYTES: usize = 4096;
/// What an interrupted rollout's `reason` says.
const INTERRUPTED: &str = "the server stopped while the rollout ran";

/// The fleet node id of this server (None on a single server).
fn runner(state: &AppState) -> Option<String> {
    state.cfg.node.as_ref().map(|n| n.id.clone())
}

/// Marks the rollouts this server was running when it stopped `interrupted`.
pub async fn interrupt_stale(state: &AppState) -> Result<u64, StoreError> {
    let n = state
        .store
        .interrupt_rollouts(runner(state).as_deref(), now_ms(), INTERRUPTED)
        .await?;
    if n > 0 {
        tracing::warn!("{n} rollouts were running when the server stopped: marked interrupted");
    }
    Ok(n)
}

/// A started rollout: its id, and the runner's task, which ends with the final rollout.
pub struct Started {
    pub id: String,
    pub progress: broadcast::Receiver<view::Progress>,
    pub done: tokio::task::JoinHandle<()>,
}

/// Selects the targets, records the rollout and starts running it.
pub async fn start(state: &Arc<AppState>, caller: &Caller, spec: Spec) -> Result<Started> {
    let mut f = SandboxFilter {
        states: vec![SandboxState::Running],
        metadata: spec.selector.clone(),
        limit: Some(MAX_TARGETS as u32 + 1),
        ..SandboxFilter::default()
    };
    caller.scope(&mut f);
    let sandboxes = state.store.list_sandboxes(&f).await?;
    if sandboxes.is_empty() {
        return Err(Error::NoMatch(format!(
            "selector {} matches no running sandbox this key may reach; nothing was changed",
            spec::selector_text(&spec.selector)
        )));
    }
    if sandboxes.len() > MAX_TARGETS {
        return Err(Error::BadRequest(format!(
            "selector {} matches more than {MAX_TARGETS} sandboxes; narrow it",
            spec::selector_text(&spec.selector)
        )));
    }
    let id = crate::auth::random_id("ro");
    let rec = RolloutRecord {
        id: id.clone(),
        tenant: caller.tenant().to_owned(),
        key_id: caller.key.id.clone(),
        runner: runner(state),
        kind: spec.action.kind().to_owned(),
        spec: spec.to_json(),
        state: "running".into(),
        reason: None,
        created_at: now_ms(),
        finished_at: None,
    };
    let targets: Vec<RolloutTarget> = sandboxes
        .iter()
        .enumerate()
        .map(|(i, s)| RolloutTarget {
            rollout_id: id.clone(),
            seq: i as u32,
            sandbox_id: s.id.clone(),
            state: "pending".into(),
            result: json!({}),
        })
        .collect();
    state.store.insert_rollout(&rec, &targets).await?;
    let (progress, rx) = broadcast::channel(1024);
    let (cancel, cancelled) = watch::channel(false);
    state.rollouts.map().insert(
        id.clone(),
        Live {
            progress: progress.clone(),
            cancel,
        },
    );
    let st = state.clone();
    let done = tokio::spawn(async move {
        let rid = rec.id.clone();
        run::run(&st, rec, targets, spec, progress, cancelled).await;
        st.rollouts.map().remove(&rid);
    });
    Ok(Started {
        id,
        progress: rx,
        done,
    })
}

/// The rollout `id` if `caller` may see it: its tenant's for viewers and operators, only
/// their own for developers (another key's rollout names sandboxes they cannot see), every
/// one for admins. Others are 404 like a missing one.
pub async fn get(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<(RolloutRecord, Vec<RolloutTarget>)> {
    match state.store.get_rollout(id).await? {
        Some((r, t)) if sees(caller, &r) => Ok((r, t)),
        _ => Err(Error::NotFound(format!("no rollout {id:?}"))),
    }
}

fn sees(caller: &Caller, r: &RolloutRecord) -> bool {
    caller.may_access(&r.tenant)
        && (caller.key.role != paddock_store::Role::Developer || r.key_id == caller.key.id)
}

/// The rollouts `caller` may see, newest first.
pub async fn list(state: &AppState, caller: &Caller, limit: u32) -> Result<Vec<RolloutRecord>> {
    let tenant = (!caller.is_admin()).then(|| caller.tenant().to_owned());
    let key = (caller.key.role == paddock_store::Role::Developer).then(|| caller.key.id.clone());
    Ok(state
        .store
        .list_rollouts(tenant.as_deref(), key.as_deref(), limit)
        .await?)
}

/// Cancels a running rollout: no sandbox starts after this; those running finish.
pub async fn cancel(state: &AppState, caller: &Caller, id: &str) -> Result<()> {
    let (r, _) = get(state, caller, id).await?;
    if r.state != "running" {
        return Err(Error::Conflict(format!(
            "rollout {id} is {}; only a running rollout can be cancelled",
            r.state
        )));
    }
    if !state.rollouts.cancel(id) {
        return Err(Error::Conflict(format!(
            "rollout {id} is not running on this server"
        )));
    }
    Ok(())
}
