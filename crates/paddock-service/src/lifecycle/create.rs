//! A create, in its steps: the record ([`record`]), the admission under the create lock
//! (budget, quota, a warm pool's sandbox, the row; [`admit`]), the sandbox brought up
//! (personalised from the pool or created cold, then the template's start command;
//! [`bring_up`]), and the outcome recorded ([`settle`]).

use std::sync::Arc;

use paddock_core::{Isolation, SandboxId};
use paddock_runtime::{CreateSpec, Sandbox};
use paddock_store::{
    OnTimeout, SandboxRecord, SandboxSpec, SandboxState, SpecSecret, SpecVolume, StopReason, now_ms,
};

use super::check_selector;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::event_kind::EventKind;
use crate::sandbox_spec::NewSandbox;
use crate::state::{AppState, Metrics};

/// Creates a sandbox for `caller`: records it, starts it, starts its timeout.
pub async fn create(
    state: &Arc<AppState>,
    caller: &Caller,
    mut spec: NewSandbox,
) -> Result<SandboxRecord> {
    spec.template = crate::templates::resolve_alias(state, &spec.template);
    // Secrets first: an unknown one is refused before anything is recorded.
    let secrets = crate::secrets::resolve(state, &caller.key.tenant, &spec.secrets).await?;
    check_selector(state, &spec.node_selector)?;
    let isolation = crate::isolation::choose(state, &spec)?;
    let volumes = crate::volumes::resolve(state, &caller.key.tenant, &spec.volumes).await?;
    let _busy = state.pools.busy();
    let now = now_ms();
    let mut id = SandboxId::random();
    let mut rec = record(state, caller, &spec, &id, isolation, now);
    let want = crate::pools::Want {
        template: &spec.template,
        isolation,
        limits: &spec.limits,
        user: spec.user.as_deref(),
        env: !spec.env.is_empty() || !secrets.env.is_empty(),
        secret_files: !secrets.files.is_empty(),
        volumes: !volumes.is_empty(),
        offline: spec.network.mode == paddock_core::NetworkMode::None,
    };
    let pooled = admit(state, caller, &mut rec, &want).await?;
    if let Some(s) = &pooled {
        id = s.id.clone();
    }
    let cold = CreateSpec {
        template: spec.template,
        limits: spec.limits,
        env: spec.env,
        user: spec.user,
        id: Some(id),
        network: spec.network,
        secret_env: secrets.env,
        secret_files: secrets.files,
        isolation,
        volumes,
    };
    let (created, from_pool) = bring_up(state, &rec, pooled, cold).await;
    settle(state, rec, created, now, from_pool).await
}

/// The new sandbox's record, `starting`, with id `id` (a pooled sandbox's replaces it in
/// [`admit`]).
fn record(
    state: &AppState,
    caller: &Caller,
    spec: &NewSandbox,
    id: &SandboxId,
    isolation: Isolation,
    now: i64,
) -> SandboxRecord {
    let timeout_ms = i64::try_from(spec.timeout.as_millis()).unwrap_or(i64::MAX);
    SandboxRecord {
        id: id.to_string(),
        tenant: caller.key.tenant.clone(),
        key_id: caller.key.id.clone(),
        template: spec.template.clone(),
        state: SandboxState::Starting,
        stop_reason: None,
        spec: SandboxSpec {
            timeout_ms: Some(timeout_ms),
            memory_bytes: Some(spec.limits.memory_bytes),
            cpu_millis: Some(spec.limits.cpu_millis),
            pids: Some(spec.limits.pids),
            disk_bytes: Some(spec.limits.disk_bytes),
            tmp_bytes: Some(spec.limits.tmp_bytes),
            user: Some(
                spec.user
                    .clone()
                    .unwrap_or_else(|| paddock_core::DEFAULT_USER.to_owned()),
            ),
            network: Some(spec.network.clone()),
            isolation: Some(isolation),
            ports_public: spec.ports_public,
            on_timeout: if spec.pause_on_timeout.is_some() {
                OnTimeout::Pause
            } else {
                OnTimeout::Kill
            },
            auto_pause_mode: spec.pause_on_timeout,
            auto_resume: spec.auto_resume,
            volumes: spec
                .volumes
                .iter()
                .map(|v| SpecVolume {
                    name: v.name.clone(),
                    path: v.path.clone(),
                    read_only: v.read_only,
                })
                .collect(),
            secrets: spec
                .secrets
                .iter()
                .map(|(k, u)| {
                    (
                        k.clone(),
                        SpecSecret {
                            secret: u.secret.clone(),
                            file: u.file,
                        },
                    )
                })
                .collect(),
            node: state.cfg.node.as_ref().map(|n| n.id.clone()),
            ..SandboxSpec::default()
        },
        metadata: spec.metadata.clone(),
        env_keys: spec.env.keys().cloned().collect(),
        created_at: now,
        ready_at: None,
        expires_at: None,
        stopped_at: None,
        warnings_sent: 0,
        webhook_url: spec.webhook_url.clone(),
    }
}

/// Under the create lock, so parallel creates of one key cannot both pass the quota: the
/// tenant's budget and the key's quota, a warm pool's sandbox if one fits (`crate::pools`;
/// the record takes its id, which nobody has seen yet), and the record's row.
async fn admit(
    state: &Arc<AppState>,
    caller: &Caller,
    rec: &mut SandboxRecord,
    want: &crate::pools::Want<'_>,
) -> Result<Option<Arc<Sandbox>>> {
    let _g = state.create_lock.lock().await;
    crate::cost::budgets::check(state, &caller.key.tenant).await?;
    let max = caller
        .key
        .max_sandboxes
        .unwrap_or(state.cfg.max_sandboxes_per_key);
    let active = state.store.count_active_by_key(&caller.key.id).await?;
    if active >= u64::from(max) {
        return Err(Error::QuotaExceeded(format!(
            "this key already runs {active} sandboxes, its maximum is {max}"
        )));
    }
    let mut pooled = state.pools.take(&state.runtime, want);
    if let Some(s) = &pooled {
        rec.id = s.id.to_string();
    }
    if let Err(e) = state.store.insert_sandbox(rec).await {
        if let Some(s) = pooled.take() {
            state.pools.discard(&state.runtime, s);
        }
        return Err(e.into());
    }
    Ok(pooled)
}

/// The sandbox, up: a pooled one personalised (or, if that fails, destroyed and the create
/// gone cold under the same id: never handed out half-made), or one created cold and its
/// template's start command and ready check run (a pooled sandbox's ran when it was made; a
/// failure takes the sandbox down). Whether it came from the pool.
async fn bring_up(
    state: &Arc<AppState>,
    rec: &SandboxRecord,
    pooled: Option<Arc<Sandbox>>,
    cold: CreateSpec,
) -> (Result<Arc<Sandbox>>, bool) {
    let created = match pooled {
        Some(sbx) => {
            let p = paddock_runtime::Personalise {
                env: cold.env.clone(),
                secret_env: cold.secret_env.clone(),
                limits: cold.limits.clone(),
                network: cold.network.clone(),
            };
            match state.runtime.personalise(&sbx, p).await {
                Ok(()) => return (Ok(sbx), true),
                Err(e) => {
                    tracing::warn!(sandbox = %rec.id, "personalising a pooled sandbox: {e}; creating it cold");
                    drop(sbx);
                    let _ = state.runtime.destroy(&rec.id).await;
                    state.runtime.create(cold).await
                }
            }
        }
        None => state.runtime.create(cold).await,
    };
    let started = match created {
        Ok(sbx) => match crate::startcmd::start_template(state, rec, &sbx).await {
            Ok(()) => Ok(sbx),
            Err(e) => {
                if let Err(d) = state.runtime.destroy(&rec.id).await {
                    tracing::error!(sandbox = %rec.id, "destroying after a failed start: {d}");
                }
                Err(e)
            }
        },
        Err(e) => Err(Error::from(e)),
    };
    (started, false)
}

/// Records the outcome: `running` with its deadline, the metrics and the `created` event;
/// or `stopped` (`failed`) with the `failed` event, and the error.
async fn settle(
    state: &Arc<AppState>,
    mut rec: SandboxRecord,
    created: Result<Arc<Sandbox>>,
    now: i64,
    from_pool: bool,
) -> Result<SandboxRecord> {
    let hook = rec.webhook_url.clone();
    match created {
        Ok(_) => {
            let ready = now_ms();
            let timeout_ms = rec.spec.timeout_ms.unwrap_or(0);
            rec.state = SandboxState::Running;
            rec.ready_at = Some(ready);
            rec.expires_at = Some(ready.saturating_add(timeout_ms));
            state.store.update_sandbox(&rec).await?;
            state.deadlines.set(&rec);
            state.deadlines_changed.notify_one();
            Metrics::inc(&state.metrics.sandboxes_created);
            let took = u64::try_from(ready.saturating_sub(now)).unwrap_or(0);
            state
                .metrics
                .create_latency
                .observe(std::time::Duration::from_millis(took));
            state
                .emit(
                    &rec.tenant,
                    Some(&rec.id),
                    EventKind::Created,
                    serde_json::json!({
                        "template": rec.template,
                        "ready_ms": ready - now,
                        "pooled": from_pool,
                    }),
                    hook.as_deref(),
                )
                .await;
            Ok(rec)
        }
        Err(err) => {
            Metrics::inc(&state.metrics.sandbox_create_failures);
            rec.state = SandboxState::Stopped;
            rec.stop_reason = Some(StopReason::Failed);
            rec.stopped_at = Some(now_ms());
            state.store.update_sandbox(&rec).await?;
            state
                .emit(
                    &rec.tenant,
                    Some(&rec.id),
                    EventKind::Failed,
                    serde_json::json!({ "error": err.message() }),
                    hook.as_deref(),
                )
                .await;
            Err(err)
        }
    }
}
