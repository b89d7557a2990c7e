//! Snapshots and forks (`docs/persistence.md`), shared by the REST (`api/snapshots.rs`), E2B
//! (`e2b/snapshots.rs`) and CLI front ends.
//!
//! A snapshot is a runtime template (`paddock_runtime::template::SnapshotDef`) named by its
//! id, recorded in the template catalogue with the key that took it. It belongs to the tenant
//! of the sandbox it was taken of: other tenants get 404 for it, as if it did not exist.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use paddock_core::SandboxId;
use paddock_runtime::template::Template;
use paddock_store::{SandboxRecord, SandboxState, TemplateRecord, now_ms};
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::event_kind::EventKind;
use crate::lifecycle::{self, NewSandbox};
use crate::state::AppState;

/// Most children one fork makes.
pub const MAX_FORK: u32 = 20;

/// A fork count: 1 to [`MAX_FORK`], default 1.
pub fn count_of(c: Option<i64>) -> Result<u32> {
    match c {
        None => Ok(1),
        Some(n) if (1..=i64::from(MAX_FORK)).contains(&n) => Ok(n as u32),
        Some(n) => Err(Error::BadRequest(format!(
            "count must be 1 to {}, got {n}",
            MAX_FORK
        ))),
    }
}

/// Why memory snapshots (`full`) and memory forks are refused.
pub const FULL_REFUSED: &str = "memory (full) snapshots are not available on this host: \
    CRIU 3.17 fails to checkpoint on this kernel (vDSO layout); take a filesystem snapshot \
    (mode \"filesystem\", E2B memory false): sandboxes made from it start fresh from its files";

/// Takes a `filesystem` snapshot of `caller`'s sandbox `id` (running or paused), named
/// `name` (default `snap-<random>`).
pub async fn take(
    state: &Arc<AppState>,
    caller: &Caller,
    id: &str,
    name: Option<String>,
) -> Result<Template> {
    let rec = state.record_for(caller, id).await?;
    if !matches!(rec.state, SandboxState::Running | SandboxState::Paused) {
        return Err(Error::Conflict(format!(
            "sandbox {id} is {}: only a running or paused sandbox can be snapshotted",
            rec.state
        )));
    }
    let name = name.unwrap_or_else(|| format!("snap-{}", SandboxId::random()));
    let rt = state.runtime.clone();
    let (sid, sname) = (id.to_owned(), name.clone());
    let t = tokio::task::spawn_blocking(move || rt.snapshot(&sid, &sname))
        .await
        .map_err(|e| Error::Internal(format!("snapshot task: {e}")))?
        .map_err(|e| match e {
            paddock_runtime::RuntimeError::InvalidArgument { reason, .. }
                if reason.contains("already exists") =>
            {
                Error::Conflict(reason)
            }
            e => Error::from(e),
        })?;
    let record = TemplateRecord {
        name: t.name.clone(),
        source: t.source.clone(),
        layers: t.layer_ids.clone(),
        config: serde_json::to_value(&t.config).unwrap_or(Value::Null),
        created_at: now_ms(),
        created_by: Some(caller.key.id.clone()),
    };
    if let Err(e) = state.store.upsert_template(&record).await {
        let _ = state.runtime.remove_template(&name, false);
        return Err(e.into());
    }
    state
        .emit(
            &rec.tenant,
            Some(id),
            EventKind::Snapshot,
            json!({ "snapshot_id": name }),
            rec.webhook_url.as_deref(),
        )
        .await;
    Ok(t)
}

/// The tenant a snapshot belongs to: that of the sandbox it was taken of.
async fn tenant_of(state: &AppState, t: &Template) -> Option<String> {
    let s = t.snapshot.as_ref()?;
    state
        .store
        .get_sandbox(&s.sandbox)
        .await
        .ok()
        .flatten()
        .map(|r| r.tenant)
}

/// Snapshot `name` if `caller` may see it; anything else is a 404.
pub async fn get(state: &AppState, caller: &Caller, name: &str) -> Result<Template> {
    let unknown = || Error::NotFound(format!("unknown snapshot {:?}", truncate(name)));
    let t = state
        .runtime
        .template(name)
        .filter(|t| t.snapshot.is_some())
        .ok_or_else(unknown)?;
    if tenant_of(state, &t)
        .await
        .is_some_and(|tn| caller.may_access(&tn))
    {
        Ok(t)
    } else {
        Err(unknown())
    }
}

fn truncate(s: &str) -> String {
    crate::state::truncate(s, 64).to_owned()
}

/// The snapshots `caller` may see, oldest first; only those of sandbox `of` if given.
pub async fn list(state: &AppState, caller: &Caller, of: Option<&str>) -> Vec<Template> {
    let mut v: Vec<Template> = Vec::new();
    for t in state.runtime.snapshots() {
        if of.is_none_or(|id| t.snapshot.as_ref().is_some_and(|s| s.sandbox == id))
            && tenant_of(state, &t)
                .await
                .is_some_and(|tn| caller.may_access(&tn))
        {
            v.push(t);
        }
    }
    v.sort_by(|a, b| (a.created_unix_ms, &a.name).cmp(&(b.created_unix_ms, &b.name)));
    v
}

/// Deletes snapshot `name` of `caller`: 404 if unknown, 409 while sandboxes use it (or
/// snapshots of sandboxes made from it stand on it).
pub async fn delete(state: &Arc<AppState>, caller: &Caller, name: &str) -> Result<()> {
    get(state, caller, name).await?;
    let rt = state.runtime.clone();
    let n = name.to_owned();
    tokio::task::spawn_blocking(move || rt.remove_template(&n, false))
        .await
        .map_err(|e| Error::Internal(format!("snapshot delete task: {e}")))??;
    let _ = state.store.delete_template(name).await;
    Ok(())
}

/// Forks `caller`'s running sandbox `id` into `count` children (1 to [`MAX_FORK`]): one
/// snapshot, then `count` sandboxes made from it at once, each with the parent's env,
/// limits, user, network policy, metadata and secrets, and `timeout` (default: the parent's
/// create timeout). The parent keeps running. Returns the snapshot and each child's result.
pub async fn fork(
    state: &Arc<AppState>,
    caller: &Caller,
    id: &str,
    count: u32,
    timeout: Option<Duration>,
) -> Result<(Template, Vec<Result<SandboxRecord>>)> {
    if !(1..=MAX_FORK).contains(&count) {
        return Err(Error::BadRequest(format!(
            "count must be 1 to {MAX_FORK}, got {count}"
        )));
    }
    let parent = state.record_for(caller, id).await?;
    if parent.state != SandboxState::Running {
        return Err(Error::Conflict(format!(
            "sandbox {id} is {}: only a running sandbox can be forked",
            parent.state
        )));
    }
    let spec = child_spec(state, &parent, timeout)?;
    let t = take(state, caller, id, None).await?;
    let mut tasks = Vec::new();
    for _ in 0..count {
        let (state, caller, mut spec) = (state.clone(), caller.clone(), spec.clone());
        spec.template = t.name.clone();
        tasks.push(tokio::spawn(async move {
            lifecycle::create(&state, &caller, spec).await
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.push(
            task.await
                .unwrap_or_else(|e| Err(Error::Internal(format!("fork task: {e}")))),
        );
    }
    Ok((t, out))
}

/// What a child of `parent` is created with.
fn child_spec(
    state: &AppState,
    parent: &SandboxRecord,
    timeout: Option<Duration>,
) -> Result<NewSandbox> {
    let s = &parent.spec;
    let mut limits = paddock_core::Limits::default();
    if let Some(v) = s.memory_bytes {
        limits.memory_bytes = v;
    }
    if let Some(v) = s.cpu_millis {
        limits.cpu_millis = v;
    }
    if let Some(v) = s.pids {
        limits.pids = v;
    }
    if let Some(v) = s.disk_bytes {
        limits.disk_bytes = v;
    }
    if let Some(v) = s.tmp_bytes {
        limits.tmp_bytes = v;
    }
    let timeout = timeout.unwrap_or_else(|| {
        s.timeout_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map_or(state.cfg.default_timeout, Duration::from_millis)
    });
    let network = s.network();
    let secrets: BTreeMap<String, crate::secrets::SecretUse> = s
        .secrets
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                crate::secrets::SecretUse {
                    secret: v.secret.clone(),
                    file: v.file,
                },
            )
        })
        .collect();
    Ok(NewSandbox {
        template: String::new(),
        timeout,
        limits,
        env: state.runtime.env_of(&parent.id).unwrap_or_default(),
        metadata: parent.metadata.clone(),
        user: s.user.clone(),
        webhook_url: parent.webhook_url.clone(),
        network,
        ports_public: s.ports_public,
        pause_on_timeout: None,
        auto_resume: false,
        secrets,
        // A fork runs where its parent does (the request is forwarded to that node).
        node_selector: BTreeMap::new(),
        // And on the parent's isolation backend.
        isolation: s.isolation,
        volumes: s
            .volumes
            .iter()
            .map(|v| crate::volumes::VolumeUse {
                name: v.name.clone(),
                path: v.path.clone(),
                read_only: v.read_only,
            })
            .collect(),
    })
}
