//! Warm pools per template (`docs/pools.md`): sandboxes made before anyone asks for them,
//! handed out by a create of their template and never reused.
//!
//! - A pooled sandbox is made by [`refill::run`] with `Runtime::create_pooled`: the template's
//!   default limits, no env of a create, and, if the template has one, its start command
//!   running and its ready check passed. It is one of two kinds: *networked*, with the
//!   network of `Runtime::pool_network` (link, addresses and rules, nothing allowed), or
//!   *offline*, made without a link (mode `none`), for creates that ask for no network:
//!   removing a link at the hand-out costs what the pool saves. The share of offline
//!   slots follows the share of offline creates in the recent demand ([`Pool::targets`]). The runtime hides it from `list` and `get`, and
//!   the store has no record of it, so no API reaches it and a restart destroys it as a
//!   sandbox without a record.
//! - Its id is the id its create will have: a fresh random one, which nothing but this
//!   module knows until the hand-out. So its hostname, cgroup paths and records are the
//!   sandbox's own from the start, and nothing in it names anything else.
//! - [`Pools::take`] gives a create one when the create can use it (see [`Want`]); the
//!   create then personalises it (`Runtime::personalise`: env, limits, network policy) and
//!   records it like a cold one. Anything a pooled sandbox cannot be given cheaply makes
//!   the create a miss, which creates cold.
//! - Sizes: `min..=max` per template (`--pool`, `PUT /v1/pools/{template}`); the target is
//!   the number of creates of the template in the last [`DEMAND_WINDOW`], within them.
//!   [`refill::run`] refills one sandbox at a time, after the creates in flight, and drops stale
//!   ones (template rebuilt or deleted, pool shrunk) at once.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paddock_core::{Isolation, Limits};
use paddock_runtime::{CreateSpec, Runtime, Sandbox};
use paddock_store::{SandboxRecord, SandboxState, now_ms};
use tokio::sync::Notify;

pub mod refill;

/// Most sandboxes one template's pool may hold.
pub const MAX_POOL_SIZE: u32 = 64;
/// Most pooled sandboxes of all templates together (the sum of the maxima).
pub const MAX_POOLED_TOTAL: u32 = 256;
/// Creates counted as a template's recent demand.
pub const DEMAND_WINDOW: Duration = Duration::from_secs(60);
/// How often [`run`] looks for stale pooled sandboxes when nothing wakes it.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Longest a refill waits for creates in flight before it goes ahead anyway.
const YIELD_MAX: Duration = Duration::from_secs(2);
/// Pause after a failed fill of a template before it is tried again.
const FAIL_PAUSE: Duration = Duration::from_secs(5);

/// A pool's size: it holds between `min` and `max` sandboxes, as many as recent demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSize {
    pub min: u32,
    pub max: u32,
}

impl PoolSize {
    /// Checks the bounds; the error names the limit broken.
    pub fn new(min: i64, max: i64) -> Result<PoolSize, String> {
        let lim = i64::from(MAX_POOL_SIZE);
        for (name, v) in [("min", min), ("max", max)] {
            if v < 0 {
                return Err(format!("pool {name} {v} is negative; sizes are 0 to {lim}"));
            }
            if v > lim {
                return Err(format!(
                    "pool {name} {v} is above the maximum of {lim} sandboxes per template"
                ));
            }
        }
        if min > max {
            return Err(format!("pool min {min} is above its max {max}"));
        }
        Ok(PoolSize {
            min: min as u32,
            max: max as u32,
        })
    }

    /// `N` (min = max = N) or `MIN..MAX`, as `--pool TEMPLATE=...` takes it.
    pub fn parse(s: &str) -> Result<PoolSize, String> {
        let num = |v: &str| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| format!("pool size {s:?} is not N or MIN..MAX"))
        };
        match s.split_once("..") {
            Some((a, b)) => PoolSize::new(num(a)?, num(b)?),
            None => {
                let n = num(s)?;
                PoolSize::new(n, n)
            }
        }
    }
}

/// Checks a whole set of pool sizes against [`MAX_POOLED_TOTAL`].
pub fn check_total<'a>(sizes: impl Iterator<Item = &'a PoolSize>) -> Result<(), String> {
    let total: u64 = sizes.map(|s| u64::from(s.max)).sum();
    if total > u64::from(MAX_POOLED_TOTAL) {
        return Err(format!(
            "pools would hold up to {total} sandboxes, above the maximum of {MAX_POOLED_TOTAL} for all templates together"
        ));
    }
    Ok(())
}

/// What a create asks for, as far as taking a pooled sandbox goes.
#[derive(Debug)]
pub struct Want<'a> {
    pub template: &'a str,
    pub isolation: Isolation,
    pub limits: &'a Limits,
    pub user: Option<&'a str>,
    /// The create has env vars or secret env vars.
    pub env: bool,
    /// The create's network mode is `none`: an offline slot fits best; a slot of the other
    /// kind still serves, more slowly (its link removed or made at the hand-out).
    pub offline: bool,
    pub secret_files: bool,
    pub volumes: bool,
}

/// A sandbox waiting in a pool.
#[derive(Debug)]
struct Pooled {
    sbx: Arc<Sandbox>,
    /// Its template as it was when it was made ([`fingerprint`]): a rebuilt template's
    /// pool is stale.
    made_from: String,
    limits: Limits,
    /// Its template has a start command or ready check, already run.
    started: bool,
    /// Made without a network link (mode `none`), for offline creates.
    offline: bool,
}

#[derive(Debug, Default)]
struct Pool {
    size: Option<PoolSize>,
    ready: VecDeque<Pooled>,
    /// Times of recent creates of the template (within [`DEMAND_WINDOW`]), and whether
    /// each was offline.
    demand: VecDeque<(Instant, bool)>,
    hits: u64,
    misses: u64,
    /// Bumped whenever the pool is emptied: a fill begun before is not added.
    generation: u64,
    /// The last fill's error and when, cleared by a good fill.
    failed: Option<(Instant, String)>,
}

impl Pool {
    /// Recent creates: all of them, and the offline ones.
    fn demand(&mut self, now: Instant) -> (u32, u32) {
        while self
            .demand
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > DEMAND_WINDOW)
        {
            self.demand.pop_front();
        }
        let all = u32::try_from(self.demand.len()).unwrap_or(u32::MAX);
        let offline = self.demand.iter().filter(|(_, o)| *o).count();
        (all, u32::try_from(offline).unwrap_or(u32::MAX))
    }

    /// The refill's targets: sandboxes in all, and how many of them offline. The offline
    /// share is the share of offline creates in the recent demand, rounded up (no demand:
    /// none offline, since E2B's default and the common create are networked).
    fn targets(&mut self, now: Instant) -> (u32, u32) {
        let Some(s) = self.size else {
            return (0, 0);
        };
        let (all, offline) = self.demand(now);
        let target = all.clamp(s.min, s.max);
        if all == 0 {
            return (target, 0);
        }
        let off = (u64::from(target) * u64::from(offline)).div_ceil(u64::from(all));
        (target, u32::try_from(off).unwrap_or(target).min(target))
    }

    fn ready_offline(&self) -> u32 {
        u32::try_from(self.ready.iter().filter(|x| x.offline).count()).unwrap_or(u32::MAX)
    }
}

/// One pool's numbers, for the API and `/metrics`.
#[derive(Debug, Clone)]
pub struct PoolInfo {
    pub template: String,
    pub size: Option<PoolSize>,
    pub target: u32,
    /// How many of `target` are offline slots (made without a link).
    pub target_offline: u32,
    pub ready: u32,
    /// How many of `ready` are offline slots.
    pub ready_offline: u32,
    pub hits: u64,
    pub misses: u64,
    /// Memory charged to each pooled sandbox's cgroup, on average (None: none ready).
    pub memory_bytes: Option<u64>,
    pub last_error: Option<String>,
}

/// The warm pools of this server.
#[derive(Debug, Default)]
pub struct Pools {
    pools: Mutex<BTreeMap<String, Pool>>,
    /// Wakes [`run`]: a take, a size change, a flush.
    wake: Notify,
    /// Creates in flight; a refill waits for them (up to [`YIELD_MAX`]).
    busy: AtomicUsize,
    /// Templates whose pools must stay empty for now (a delete in progress).
    held: Mutex<HashSet<String>>,
    /// A fill is running.
    filling: AtomicBool,
    /// Set at shutdown: nothing is filled any more.
    closed: AtomicBool,
}

/// Counts a create in flight while it lives (see [`Pools::busy`]).
#[derive(Debug)]
pub struct Busy<'a>(&'a Pools);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Keeps a template's pool empty while it lives ([`Pools::hold`]).
#[derive(Debug)]
pub struct Hold<'a>(&'a Pools, String);

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        lock(&self.0.held).remove(&self.1);
        self.0.wake.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Pools {
    /// Pools with the sizes of `--pool`.
    pub fn new(sizes: &BTreeMap<String, PoolSize>) -> Pools {
        let p = Pools::default();
        {
            let mut all = lock(&p.pools);
            for (t, s) in sizes {
                all.entry(t.clone()).or_default().size = Some(*s);
            }
        }
        p
    }

    /// Marks a create in flight until the guard drops.
    pub fn busy(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self)
    }

    /// Whether `template` has a pool (a size set).
    pub fn has(&self, template: &str) -> bool {
        lock(&self.pools)
            .get(template)
            .is_some_and(|p| p.size.is_some())
    }

    /// A pooled sandbox for this create, or None (a miss, counted if the template has a
    /// pool). The caller personalises it or destroys it; it is never put back.
    pub fn take(&self, runtime: &Arc<Runtime>, w: &Want<'_>) -> Option<Arc<Sandbox>> {
        let now = Instant::now();
        let current = runtime.template(w.template).map(|t| fingerprint(&t));
        let (taken, stale) = {
            let mut all = lock(&self.pools);
            let p = all.get_mut(w.template).filter(|p| p.size.is_some())?;
            p.demand.push_back((now, w.offline));
            let mut stale = Vec::new();
            if current
                .as_ref()
                .is_none_or(|l| p.ready.front().is_some_and(|x| &x.made_from != l))
            {
                stale.extend(p.ready.drain(..));
                p.generation += 1;
            }
            // The oldest slot of the create's kind, else the oldest of the other: an offline
            // create has a networked slot's link removed, a networked one has an offline
            // slot's link made (`Runtime::set_network`), both at the hand-out.
            let pick = p
                .ready
                .iter()
                .position(|x| x.offline == w.offline)
                .or((!p.ready.is_empty()).then_some(0))
                .filter(|&i| usable(&p.ready[i], w));
            let taken = pick.and_then(|i| p.ready.remove(i)).map(|x| x.sbx);
            if taken.is_some() {
                p.hits += 1;
            } else {
                p.misses += 1;
            }
            (taken, stale)
        };
        for s in stale {
            discard(runtime, s.sbx);
        }
        self.wake.notify_one();
        taken
    }

    /// Destroys a taken sandbox that was not handed out after all (the create failed before
    /// it could be recorded).
    pub fn discard(&self, runtime: &Arc<Runtime>, sbx: Arc<Sandbox>) {
        discard(runtime, sbx);
    }

    /// Every pool's numbers, by template.
    pub fn info(&self) -> Vec<PoolInfo> {
        let now = Instant::now();
        let mut all = lock(&self.pools);
        all.iter_mut()
            .map(|(t, p)| {
                let mems: Vec<u64> = p.ready.iter().map(|x| x.sbx.cpu_and_memory().1).collect();
                let (target, target_offline) = p.targets(now);
                PoolInfo {
                    template: t.clone(),
                    size: p.size,
                    target,
                    target_offline,
                    ready: u32::try_from(p.ready.len()).unwrap_or(u32::MAX),
                    ready_offline: p.ready_offline(),
                    hits: p.hits,
                    misses: p.misses,
                    memory_bytes: (!mems.is_empty())
                        .then(|| mems.iter().sum::<u64>() / mems.len() as u64),
                    last_error: p.failed.as_ref().map(|(_, e)| e.clone()),
                }
            })
            .collect()
    }

    /// The pools' lines of `/metrics` (`docs/metrics.md`).
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let info = self.info();
        let mut family =
            |name: &str, kind: &str, help: &str, v: &dyn Fn(&PoolInfo) -> Option<u64>| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for p in &info {
                    if let Some(x) = v(p) {
                        let _ = writeln!(out, "{name}{{template=\"{}\"}} {x}", p.template);
                    }
                }
            };
        family(
            "paddock_pool_ready",
            "gauge",
            "Pooled sandboxes ready to hand out, per template.",
            &|p| Some(u64::from(p.ready)),
        );
        family(
            "paddock_pool_ready_offline",
            "gauge",
            "Pooled sandboxes ready to hand out that were made without a network link (for creates with network none), per template.",
            &|p| Some(u64::from(p.ready_offline)),
        );
        family(
            "paddock_pool_target",
            "gauge",
            "Pooled sandboxes the refill aims for (recent demand within the pool's min and max).",
            &|p| Some(u64::from(p.target)),
        );
        family(
            "paddock_pool_hits_total",
            "counter",
            "Creates served from the template's pool.",
            &|p| Some(p.hits),
        );
        family(
            "paddock_pool_misses_total",
            "counter",
            "Creates of a pooled template that found no usable pooled sandbox and ran cold.",
            &|p| Some(p.misses),
        );
        family(
            "paddock_pool_sandbox_memory_bytes",
            "gauge",
            "Memory charged to a pooled sandbox's cgroup, on average over the template's pool.",
            &|p| p.memory_bytes,
        );
    }

    /// Drops stale pooled sandboxes (template rebuilt or gone, pool over its maximum or
    /// held) and picks the template to fill next: the one furthest below its target that did
    /// not fail lately. Returns it with its pool's generation and the kind to make (offline
    /// while the pool has fewer offline slots than its offline target).
    #[allow(clippy::type_complexity)]
    fn next(&self, runtime: &Runtime) -> (Vec<Arc<Sandbox>>, Option<(String, u64, bool)>) {
        let now = Instant::now();
        let held = lock(&self.held).clone();
        let mut all = lock(&self.pools);
        let mut stale = Vec::new();
        let mut best: Option<(u32, String, u64, bool)> = None;
        for (t, p) in all.iter_mut() {
            let current = runtime.template(t).map(|x| fingerprint(&x));
            let max = p.size.map_or(0, |s| s.max) as usize;
            let drop_all = held.contains(t) || current.is_none();
            let before = p.ready.len();
            let mut keep = VecDeque::new();
            for x in p.ready.drain(..) {
                if drop_all || Some(&x.made_from) != current.as_ref() || keep.len() >= max {
                    stale.push(x.sbx);
                } else {
                    keep.push_back(x);
                }
            }
            p.ready = keep;
            if p.ready.len() != before {
                p.generation += 1;
            }
            if drop_all
                || p.failed
                    .as_ref()
                    .is_some_and(|(at, _)| at.elapsed() < FAIL_PAUSE)
            {
                continue;
            }
            let (target, target_offline) = p.targets(now);
            let have = u32::try_from(p.ready.len()).unwrap_or(u32::MAX);
            let offline = p.ready_offline() < target_offline;
            if have < target && best.as_ref().is_none_or(|(gap, ..)| target - have > *gap) {
                best = Some((target - have, t.clone(), p.generation, offline));
            }
        }
        (stale, best.map(|(_, t, g, o)| (t, g, o)))
    }

    /// Adds a fresh pooled sandbox, unless the pool changed since the fill began (then the
    /// caller destroys it).
    fn add(&self, template: &str, generation: u64, x: Pooled) -> Result<(), Pooled> {
        if self.closed.load(Ordering::SeqCst) || lock(&self.held).contains(template) {
            return Err(x);
        }
        let mut all = lock(&self.pools);
        match all.get_mut(template) {
            Some(p)
                if p.generation == generation
                    && (p.ready.len() as u32) < p.size.map_or(0, |s| s.max) =>
            {
                p.failed = None;
                p.ready.push_back(x);
                Ok(())
            }
            _ => Err(x),
        }
    }

    fn fill_failed(&self, template: &str, why: String) {
        if let Some(p) = lock(&self.pools).get_mut(template) {
            p.failed = Some((Instant::now(), why));
        }
    }
}

/// What a pooled sandbox depends on of its template: its layers, its configuration (env,
/// start command, limits, ...) and when it was made. Any change makes the pool stale.
fn fingerprint(t: &paddock_runtime::template::Template) -> String {
    format!(
        "{:?} {} {}",
        t.layers,
        serde_json::to_string(&t.config).unwrap_or_default(),
        t.created_unix_ms
    )
}

/// Whether pooled sandbox `x` can serve create `w`.
fn usable(x: &Pooled, w: &Want<'_>) -> bool {
    // Its start command already runs, without the create's env.
    let env_ok = !x.started || !w.env;
    w.isolation == Isolation::Native
        && !w.volumes
        && !w.secret_files
        && env_ok
        && w.user.is_none_or(|u| u == x.sbx.user)
        && w.limits.disk_bytes == x.limits.disk_bytes
        && w.limits.tmp_bytes == x.limits.tmp_bytes
}

/// Destroys a pooled sandbox in the background (from code that must not wait).
fn discard(runtime: &Arc<Runtime>, sbx: Arc<Sandbox>) {
    let id = sbx.id.to_string();
    drop(sbx);
    let rt = runtime.clone();
    tokio::spawn(async move {
        if let Err(e) = rt.destroy(&id).await {
            tracing::warn!(sandbox = %id, "destroying a pooled sandbox: {e}");
        }
    });
}
