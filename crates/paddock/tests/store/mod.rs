//! The cases of the store conformance suite (`tests/store.rs`), each a function of a fresh,
//! empty store: `core` (tenants, keys, templates, sandboxes, events, audit, execs), `fleet`
//! (nodes, settings), `data` (secrets, usage, volumes), `alerts` (rules, firings, budget
//! crossings), `leases`, `rollouts` (rollouts and their targets), `sessions` (the console's sessions).

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;

use paddock_store::{ApiKey, Role, SandboxRecord, SandboxState, StoreError, Tenant};

mod alerts;
mod core;
mod data;
mod fleet;
mod leases;
mod rollouts;
mod sessions;

pub use self::core::*;
pub use alerts::*;
pub use data::*;
pub use fleet::*;
pub use leases::*;
pub use rollouts::*;
pub use sessions::*;

pub fn tenant(id: &str, created_at: i64) -> Tenant {
    Tenant {
        id: id.into(),
        name: format!("name-{id}"),
        created_at,
    }
}

pub fn key(id: &str, tenant: &str, hash: &str, created_at: i64) -> ApiKey {
    ApiKey {
        id: id.into(),
        tenant: tenant.into(),
        name: format!("key {id}"),
        role: Role::Admin,
        hash: hash.into(),
        prefix: "pdk_abcd".into(),
        created_at,
        expires_at: None,
        revoked_at: None,
        max_sandboxes: None,
        webhook_url: None,
    }
}

pub fn sandbox(id: &str, tenant: &str, created_at: i64, meta: &[(&str, &str)]) -> SandboxRecord {
    SandboxRecord {
        id: id.into(),
        tenant: tenant.into(),
        key_id: "key_a".into(),
        template: "base".into(),
        state: SandboxState::Running,
        stop_reason: None,
        spec: paddock_store::SandboxSpec {
            timeout_ms: Some(1000),
            node: Some("n1".into()),
            ..Default::default()
        },
        metadata: pairs(meta),
        env_keys: vec!["A".into()],
        created_at,
        ready_at: Some(created_at + 1),
        expires_at: None,
        stopped_at: None,
        warnings_sent: 0,
        webhook_url: None,
    }
}

pub fn pairs(p: &[(&str, &str)]) -> BTreeMap<String, String> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Panics unless `r` is a [`StoreError::Conflict`].
#[track_caller]
pub fn assert_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>) {
    match r {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
}
