//! Paddock's domain services, below the HTTP edge (`paddock-server`): the shared state
//! ([`state::AppState`]), sandbox lifecycle (create, stop, timeouts, reconciliation), pausing,
//! start commands, warm pools, tenant secrets, snapshots and forks, volumes, usage sampling,
//! cost and budgets, alerts, rollouts, webhooks, a fleet node's registration and placement.
//! In-process callers (benches, tests) use this crate directly.
//!
//! **Invariants:**
//! - Nothing here knows HTTP: errors are [`error::Error`], which the edge maps to its answers;
//!   wire types and routes are the edge's.
//! - A sandbox row is written before the runtime creates anything, so a crash at any point
//!   is found by reconciliation ([`lifecycle::reconcile`]).
//!
//! **Must not depend on:** `paddock-server` or any HTTP server crate (axum, hyper, tower,
//! utoipa); `reqwest` only as the outbound client of webhook and alert delivery.

pub mod alerts;
pub mod auth;
pub mod config;
pub mod cost;
pub mod error;
pub mod event_kind;
pub mod fleet;
pub mod hostload;
pub mod hotpath;
pub mod isolation;
pub mod lifecycle;
pub mod metrics;
pub mod pausing;
pub mod pools;
pub mod rollouts;
pub mod sandbox_spec;
pub mod secrets;
pub mod snapshots;
pub mod startcmd;
pub mod state;
pub mod templates;
pub mod text;
pub mod usage;
pub mod volumes;
pub mod webhooks;

pub use config::{ConfigError, ServerConfig};
pub use error::{Error, Result};
