//! The state every handler shares: config, store, runtime, event bus, limits and metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use paddock_runtime::{Runtime, Sandbox};
use paddock_store::{AuditEntry, Event, SandboxRecord, SandboxState, Store, now_ms};
use tokio::sync::{Notify, broadcast};

use crate::auth::keys::Caller;
use crate::auth::limit::RateLimiter;
use crate::config::ServerConfig;
use crate::error::{Coded, Error, Result};
use crate::event_kind::EventKind;
use crate::webhooks::Webhooks;

/// Shared server state.
#[derive(Debug)]
pub struct AppState {
    pub cfg: Arc<ServerConfig>,
    pub store: Arc<dyn Store>,
    pub runtime: Arc<Runtime>,
    /// Every stored event, for SSE subscribers.
    pub events: broadcast::Sender<Event>,
    pub limiter: RateLimiter,
    /// The data plane's buckets (E2B envd and the port proxy), checked by the edge's `auth::data_bucket`.
    pub data_limiter: RateLimiter,
    pub metrics: Metrics,
    /// Serialises the quota check and the insert of a new sandbox row per key.
    pub create_lock: tokio::sync::Mutex<()>,
    /// Serialises pauses and resumes (`pausing`), so two never race on one sandbox.
    pub pause_lock: tokio::sync::Mutex<()>,
    /// CPU and memory samples of running sandboxes (E2B metrics).
    pub usage: crate::usage::history::UsageHistory,
    /// Deadlines of running sandboxes.
    pub deadlines: crate::lifecycle::deadlines::Deadlines,
    /// Wakes the lifecycle task when a deadline changes.
    pub deadlines_changed: Notify,
    pub webhooks: Webhooks,
    /// Alert rules' evaluation and delivery (`crate::alerts`).
    pub alerts: crate::alerts::tracker::Alerts,
    pub started: Instant,
    /// The server's secret (`<data>/secret.key`): derives E2B envd access tokens.
    pub secret: Vec<u8>,
    /// Tenant secrets: the master key and the write lock (`crate::secrets`).
    pub secrets: crate::secrets::keyring::Secrets,
    /// Warm pools per template (`crate::pools`).
    pub pools: crate::pools::Pools,
    /// The rollouts running in this process (`crate::rollouts`).
    pub rollouts: crate::rollouts::live::Rollouts,
    /// API keys by hash for a moment (`crate::hotpath`).
    pub keys: crate::hotpath::KeyCache,
    /// Store writes behind answers (`crate::hotpath`).
    pub behind: crate::hotpath::Behind,
}

/// What reconciliation found for a sandbox record ([`AppState::record_lifecycle`]).
#[derive(Debug)]
pub enum Reconciled {
    /// Its sandbox runs (or is paused) and is this server's again; the event's payload.
    Adopted(serde_json::Value),
    /// Its sandbox no longer exists.
    Lost,
    /// Its sandbox was found but could not be restored (why).
    Failed(String),
}

/// Counters exported at `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub sandboxes_created: AtomicU64,
    pub sandbox_create_failures: AtomicU64,
    pub sandboxes_expired: AtomicU64,
    pub sandboxes_killed: AtomicU64,
    pub execs: AtomicU64,
    /// Requests by route and status, their latency, and body bytes by surface.
    pub http: crate::metrics::HttpMetrics,
    /// Time from a create request's record to its sandbox running.
    pub create_latency: crate::metrics::Histogram,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

impl AppState {
    /// The state of a server on `cfg`, `store` and `runtime`, with its background parts
    /// (webhook delivery) started. Reads the server's secret from the data directory, or
    /// makes it.
    pub fn new(
        cfg: ServerConfig,
        store: Arc<dyn Store>,
        runtime: Arc<Runtime>,
        allow_private_webhooks: bool,
    ) -> std::io::Result<AppState> {
        let (events, _) = broadcast::channel(4096);
        let webhook_secret = cfg.webhook_secret.clone();
        let secret = crate::auth::keys::server_secret(&cfg.data_dir)?;
        Ok(AppState {
            // Only a server that alone writes its keys may cache them (`crate::hotpath`).
            keys: crate::hotpath::KeyCache::new(cfg.node.is_none() && cfg.database_url.is_none()),
            behind: crate::hotpath::Behind::default(),
            pools: crate::pools::Pools::new(&cfg.pools),
            secrets: crate::secrets::keyring::Secrets::new(cfg.secrets_key.clone()),
            limiter: RateLimiter::new(cfg.rate_per_sec, cfg.rate_burst),
            data_limiter: RateLimiter::new(cfg.data_rate_per_sec, cfg.data_rate_burst),
            cfg: Arc::new(cfg),
            store,
            runtime,
            events,
            metrics: Metrics::default(),
            create_lock: tokio::sync::Mutex::new(()),
            pause_lock: tokio::sync::Mutex::new(()),
            usage: crate::usage::history::UsageHistory::default(),
            deadlines: crate::lifecycle::deadlines::Deadlines::default(),
            deadlines_changed: Notify::new(),
            alerts: crate::alerts::tracker::Alerts::new(webhook_secret.clone()),
            webhooks: Webhooks::start(allow_private_webhooks, webhook_secret),
            started: Instant::now(),
            secret,
            rollouts: crate::rollouts::live::Rollouts::default(),
        })
    }

    /// Stores an event, publishes it to SSE subscribers and queues its webhooks.
    pub async fn emit(
        &self,
        tenant: &str,
        sandbox_id: Option<&str>,
        kind: EventKind,
        data: serde_json::Value,
        sandbox_webhook: Option<&str>,
    ) {
        let ev = Event {
            seq: 0,
            at: now_ms(),
            tenant: tenant.to_owned(),
            sandbox_id: sandbox_id.map(str::to_owned),
            kind: kind.as_str().to_owned(),
            data,
        };
        match self.store.insert_event(&ev).await {
            Ok(ev) => {
                let _ = self.events.send(ev.clone());
                self.webhooks
                    .deliver(self.store.as_ref(), &ev, sandbox_webhook)
                    .await;
            }
            Err(e) => tracing::error!("storing event {kind}: {e}"),
        }
    }

    /// Records one mutating call in the audit table. `outcome` is `ok` or an error code.
    pub async fn audit(
        &self,
        actor: Option<&Caller>,
        action: &str,
        sandbox_id: Option<&str>,
        outcome: &str,
        detail: Option<String>,
    ) {
        let a = audit_entry(actor, action, sandbox_id, outcome, detail);
        if let Err(e) = self.store.insert_audit(&a).await {
            tracing::error!("storing audit entry {action}: {e}");
        }
    }

    /// What reconciliation at start-up found for one sandbox record, as an event (to its
    /// webhook too) and a system audit entry: `adopted` (`data` is the event's payload),
    /// `lost` (its sandbox no longer exists) or `failed` (its sandbox could not be restored).
    pub async fn record_lifecycle(&self, r: &SandboxRecord, found: Reconciled) {
        let (kind, data, action, outcome, detail) = match found {
            Reconciled::Adopted(data) => (EventKind::Adopted, data, "sandbox.adopt", "ok", None),
            Reconciled::Lost => (
                EventKind::Lost,
                serde_json::json!({}),
                "sandbox.lost",
                "ok",
                None,
            ),
            Reconciled::Failed(why) => (
                EventKind::Failed,
                serde_json::json!({ "error": why }),
                "sandbox.adopt",
                "failed",
                Some(why),
            ),
        };
        self.emit(&r.tenant, Some(&r.id), kind, data, r.webhook_url.as_deref())
            .await;
        self.audit(None, action, Some(&r.id), outcome, detail).await;
    }

    /// [`AppState::audited`] with the audit entry written behind the answer
    /// (`crate::hotpath`): for the exec round trip.
    pub fn audited_behind<T, E: Coded>(
        self: &Arc<Self>,
        caller: &Caller,
        action: &'static str,
        sandbox_id: Option<&str>,
        detail: Option<String>,
        res: Result<T, E>,
    ) -> Result<T, E> {
        let outcome = match &res {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        let (this, caller, sandbox_id) =
            (self.clone(), caller.clone(), sandbox_id.map(str::to_owned));
        self.behind.spawn(async move {
            this.audit(
                Some(&caller),
                action,
                sandbox_id.as_deref(),
                outcome,
                detail,
            )
            .await;
        });
        res
    }

    /// Audits the outcome of `res` (its error's code) and passes it through; `res` may be
    /// a domain result or the edge's.
    pub async fn audited<T, E: Coded>(
        &self,
        caller: &Caller,
        action: &str,
        sandbox_id: Option<&str>,
        detail: Option<String>,
        res: Result<T, E>,
    ) -> Result<T, E> {
        let outcome = match &res {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        self.audit(Some(caller), action, sandbox_id, outcome, detail)
            .await;
        res
    }

    /// The record of sandbox `id` if `caller` may see it ([`Caller::sees`]). Another
    /// tenant's sandbox, or another developer's, is answered exactly like a missing one.
    pub async fn record_for(&self, caller: &Caller, id: &str) -> Result<SandboxRecord> {
        if id.parse::<paddock_core::SandboxId>().is_err() {
            return Err(Error::sandbox_not_found(id));
        }
        match self.store.get_sandbox(id).await? {
            Some(r) if caller.sees(&r) => Ok(r),
            _ => Err(Error::sandbox_not_found(id)),
        }
    }

    /// The running sandbox `id` of `caller`, for operations inside it.
    pub async fn sandbox_for(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(SandboxRecord, Arc<Sandbox>)> {
        let r = self.record_for(caller, id).await?;
        if r.state == SandboxState::Paused {
            return Err(crate::error::paused_error(id));
        }
        if r.state != SandboxState::Running {
            return Err(Error::Conflict(format!(
                "sandbox {id} is {}{}",
                r.state,
                r.stop_reason.map(|s| format!(" ({s})")).unwrap_or_default()
            )));
        }
        let s = self
            .runtime
            .get(id)
            .map_err(|_| Error::Conflict(format!("sandbox {id} is not running on this host")))?;
        Ok((r, s))
    }
}

/// The audit row of one call ([`AppState::audit`]); `at` is now.
pub fn audit_entry(
    actor: Option<&Caller>,
    action: &str,
    sandbox_id: Option<&str>,
    outcome: &str,
    detail: Option<String>,
) -> AuditEntry {
    AuditEntry {
        id: 0,
        at: now_ms(),
        actor: actor.map_or_else(|| "system".to_owned(), |c| c.key.id.clone()),
        tenant: actor.map(|c| c.key.tenant.clone()),
        action: action.to_owned(),
        sandbox_id: sandbox_id.map(str::to_owned),
        outcome: outcome.to_owned(),
        detail: detail.map(|d| truncate(&d, 512)),
    }
}

pub use crate::text::truncate;
