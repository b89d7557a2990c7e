//! Handing out a pooled sandbox: what a create changes on a sandbox that was made before
//! anyone asked for it (`docs/pools.md`). The pool itself (sizes, refill, metrics) is the
//! server's; the runtime only makes a pooled sandbox like any other, with
//! [`Runtime::pool_network`], and personalises it here.

use std::collections::BTreeMap;
use std::sync::Arc;

use paddock_core::{Isolation, Limits, NetworkMode, NetworkPolicy, SecretValue};

use std::sync::atomic::Ordering;

use super::write_record;
use super::{Runtime, Sandbox};
use crate::error::{Result, RuntimeError};

/// What a create gives the pooled sandbox it takes.
#[derive(Debug, Clone)]
pub struct Personalise {
    /// The create's env vars (the template's stay under them).
    pub env: BTreeMap<String, String>,
    /// Secrets as env vars, on top of `env`.
    pub secret_env: BTreeMap<String, SecretValue>,
    /// Memory, CPU and tasks are written to the cgroups; the disk and `/tmp` sizes must be
    /// the ones the sandbox was made with (the server checks before taking one).
    pub limits: Limits,
    pub network: NetworkPolicy,
}

impl Runtime {
    /// The network a pooled sandbox is made with: its link, addresses, rules and resolver
    /// exist, but its policy lets nothing out (`allow` with an empty list), so a hand-out
    /// only swaps set elements (or removes the link for `none`).
    pub fn pool_network() -> NetworkPolicy {
        NetworkPolicy {
            mode: NetworkMode::Allow,
            ..NetworkPolicy::default()
        }
    }

    /// Hands out pooled sandbox `sbx` (from [`Runtime::create_pooled`]): from now on
    /// [`Runtime::get`] finds it. Gives it its create's env, limits and network policy;
    /// runs before anyone can reach it (the server has no record naming it yet, or one
    /// still `starting`); on error the caller destroys it.
    pub async fn personalise(self: &Arc<Self>, sbx: &Arc<Sandbox>, p: Personalise) -> Result<()> {
        sbx.pooled.store(false, Ordering::SeqCst);
        let id = sbx.id.as_str();
        let t = self
            .template(&sbx.template)
            .ok_or_else(|| RuntimeError::UnknownTemplate {
                name: sbx.template.clone(),
            })?;
        let limits = match sbx.isolation {
            Isolation::Native => p.limits.clone(),
            Isolation::Gvisor => super::gvisor::host_limits(&p.limits),
        };
        self.cgroups.set_limits(id, &limits)?;
        let mut env = t.config.env.clone();
        env.extend(p.env.clone());
        env.extend(p.secret_env.iter().map(|(k, v)| (k.clone(), v.0.clone())));
        let env_set = sbx.set_env(&env);
        let net = self.set_network(id, p.network.clone());
        let (a, b) = tokio::join!(env_set, net);
        a?;
        b?;
        if let Some(mut r) = self.read_record(id) {
            r.env = p.env;
            r.memory_bytes = p.limits.memory_bytes;
            write_record(&sbx.dir, &r)?;
        }
        Ok(())
    }
}

impl Sandbox {
    /// Whether it waits in a warm pool, not handed out yet.
    pub fn is_pooled(&self) -> bool {
        self.pooled.load(Ordering::SeqCst)
    }
}
