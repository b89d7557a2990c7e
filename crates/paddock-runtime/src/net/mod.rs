//! Per-sandbox networking: a routed veth link, an nftables policy, NAT and a filtering DNS
//! resolver. Policies are [`NetworkPolicy`]: `none`, `allow` (CIDRs and names), `all`.
//!
//! **Layout.** A sandbox in mode `allow` or `all` gets a veth pair: `pdk<slot>` on the host
//! with `10.200.0.0/16` address `base+1`, and `eth0` in the sandbox's network namespace with
//! `base+2` (`base = 10.200.0.0 + 4 * slot`, one /30 per uid slot, so host-wide unique like
//! the slots) and a default route through the host end. No bridge: sandboxes share no L2.
//! Mode `none` has no interface at all, only loopback.
//!
//! **Rules** live in one nftables table per runtime instance, `inet paddock_<instance>`,
//! rebuilt atomically at [`Net::open`] (so a crash leaves no stale rule: anything not
//! belonging to an adopted sandbox is gone). The ruleset, in the order it matches:
//! - input from a sandbox interface: DNS (udp/tcp 53) to that sandbox's own host address is
//!   accepted, everything else dropped. The host's own services and addresses are never
//!   reachable.
//! - forward into a sandbox interface: only replies (`ct state established,related`); so
//!   nothing reaches a sandbox unasked, and no sandbox reaches another.
//! - forward from a sandbox interface (chain `sandbox`): IPv6 dropped; then
//!   `iifname . ip daddr @allow accept` (the set of every sandbox's allowed ranges keyed by
//!   its link: listed CIDRs and, in `allow` mode, addresses its resolver returned for
//!   allowed names); a link not in `all_ifs` (mode `allow`) drops the rest; mode `all`
//!   drops `@blocked` (private, loopback, link-local and metadata, CGNAT, multicast,
//!   reserved) and `@hostnets` and accepts the rest.
//! - postrouting: masquerade what leaves from sandbox interfaces.
//!
//! So a sandbox's rules are only set elements keyed by its link name: no chain or set per
//! sandbox. They are added and removed over netlink (`nfnl`) in one atomic batch; the table
//! itself is written by `nft` once (at open if sandboxes are adopted, else with the first
//! networked sandbox) and deleted [`TABLE_IDLE_GRACE`] after the last one goes, or when the
//! runtime closes or is dropped with none left. (A process killed within the grace period
//! leaves the empty table, which matches nothing, until the next open rebuilds it.)
//!
//! **DNS.** Each networked sandbox's `/etc/resolv.conf` names its host address, where a
//! resolver task of this runtime answers: names its policy allows are forwarded to the
//! upstream resolver, and in `allow` mode the A records of the answer are added to the
//! sandbox's allow set *before* the answer is returned; other names get NXDOMAIN. So an IP
//! literal, another resolver, or a spoofed Host/SNI reaches nothing that was not resolved
//! from an allowed name. AAAA answers are dropped (no IPv6 route).
//!
//! Links, addresses and routes are made over netlink from Rust (`rtnetlink`): the sandbox's
//! side through a netlink socket created inside its network namespace. Rules are written with
//! the `nft` tool, so they stay readable with `nft list table inet paddock_<instance>`; that
//! one run is most of a networked create's extra cost (measured in `BENCHMARKS.md`).

mod hostnets;
mod links;
mod nfnl;
mod resolver;

pub use hostnets::MIN_CONNECTED_PREFIX;
pub use resolver::host_resolver;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, RwLock};

use paddock_core::{Cidr, NetworkMode, NetworkPolicy};

use crate::error::{Result, RuntimeError};
use nfnl::{Change, Elem, Nfnl, Op};

/// How long the table outlives the last networked sandbox: a burst of creates and destroys
/// does not rewrite it each time, and an idle Paddock still leaves no rule behind.
pub const TABLE_IDLE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The network all sandbox links are carved from.
pub const SUBNET: &str = "10.200.0.0/16";

/// Destinations `all` mode never reaches unless the policy lists them.
pub const BLOCKED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/3",
];

/// The sandbox end of a slot's link.
pub fn sandbox_addr(slot: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + 4 * slot + 2)
}

/// The host end of a slot's link (the sandbox's gateway and resolver).
pub fn host_addr(slot: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + 4 * slot + 1)
}

/// The host-side interface name of a slot.
pub fn ifname(slot: u32) -> String {
    format!("pdk{slot}")
}

/// How a `resolv.conf` naming Paddock's resolver begins.
pub const RESOLV_CONF_MARK: &str = "# Paddock's resolver";

/// `resolv.conf` of a sandbox in `mode`.
pub fn resolv_conf(mode: NetworkMode, slot: u32) -> String {
    match mode {
        NetworkMode::None => "# No network: this sandbox has loopback only.\n".into(),
        _ => format!(
            "{RESOLV_CONF_MARK} for this sandbox ({} mode).\nnameserver {}\noptions timeout:2 attempts:2\n",
            mode,
            host_addr(slot)
        ),
    }
}

/// A live sandbox's network: its policy (shared with its resolver) and the resolver task.
struct Attached {
    policy: Arc<RwLock<NetworkPolicy>>,
    resolver: tokio::task::JoinHandle<()>,
}

/// A sandbox's policy elements as they are in the table.
#[derive(Debug, Clone)]
struct SlotPolicy {
    /// Which attach made them (a resolver of an earlier sandbox of the slot pins nothing).
    generation: u64,
    /// Whether the link is in `all_ifs` (mode `all`).
    all: bool,
    /// Its ranges in `allow` (first and last address): listed CIDRs, then pinned addresses.
    ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
}

impl SlotPolicy {
    fn new(generation: u64, p: &NetworkPolicy) -> SlotPolicy {
        SlotPolicy {
            generation,
            all: p.mode == NetworkMode::All,
            ranges: cidr_ranges(&p.cidrs),
        }
    }

    fn covers(&self, ip: Ipv4Addr) -> bool {
        self.ranges.iter().any(|(a, b)| *a <= ip && ip <= *b)
    }
}

/// The ranges of `cidrs`, without those inside another (an interval set refuses overlaps).
fn cidr_ranges(cidrs: &[Cidr]) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let mut r: Vec<(u32, u32)> = cidrs
        .iter()
        .map(|c| {
            let mask = if c.prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(c.prefix.min(32)))
            };
            let first = u32::from(c.addr) & mask;
            (first, first | !mask)
        })
        .collect();
    // Widest first for each start, so a nested range always follows its container.
    r.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(r.len());
    for (a, b) in r {
        if out.last().is_some_and(|(_, e)| b <= *e) {
            continue;
        }
        out.push((a, b));
    }
    out.into_iter()
        .map(|(a, b)| (Ipv4Addr::from(a), Ipv4Addr::from(b)))
        .collect()
}

/// What of this instance's table exists, known without asking `nft`.
#[derive(Default)]
struct TableState {
    /// The table with its base chains and sets.
    has_base: bool,
    /// Slots whose policy elements (in `all_ifs` and `allow`) exist.
    policies: BTreeMap<u32, SlotPolicy>,
    /// Slots whose interface elements (in `ifs`, `dns_ok`) exist.
    ifaces: BTreeSet<u32>,
    /// The netlink socket the elements are changed through (opened on first use).
    nl: Option<Nfnl>,
    /// Counts attaches: names a slot's policy generation, and a deferred table deletion
    /// goes ahead only if no attach came since it was scheduled.
    epoch: u64,
}

impl std::fmt::Debug for TableState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableState")
            .field("has_base", &self.has_base)
            .field("policies", &self.policies)
            .field("ifaces", &self.ifaces)
            .finish()
    }
}

impl TableState {
    /// Applies `changes` over netlink in one atomic batch.
    fn apply(&mut self, table: &str, changes: &[Change]) -> Result<()> {
        if self.nl.is_none() {
            self.nl = Some(Nfnl::open()?);
        }
        let r = self
            .nl
            .as_mut()
            .map_or(Ok(()), |nl| nl.apply(table, changes));
        if r.is_err() {
            // A socket in an unknown state is not reused.
            self.nl = None;
        }
        r
    }

    /// Applies `changes`; if the batch fails as a whole (part of it already gone), each
    /// element on its own, so a missing element does not keep the others in place.
    fn apply_each(&mut self, table: &str, changes: &[Change]) {
        if self.apply(table, changes).is_ok() {
            return;
        }
        for c in changes {
            for e in &c.elems {
                let one = Change {
                    op: c.op,
                    set: c.set,
                    elems: vec![e.clone()],
                };
                let _ = self.apply(table, &[one]);
            }
        }
    }
}

/// The interface elements of `slot` (`ifs`, `dns_ok`).
fn iface_changes(slot: u32, op: Op) -> Vec<Change> {
    let ifn = ifname(slot);
    vec![
        Change {
            op,
            set: "ifs",
            elems: vec![Elem::ifname(&ifn)],
        },
        Change {
            op,
            set: "dns_ok",
            elems: vec![Elem::ifname_addr(&ifn, host_addr(slot))],
        },
    ]
}

/// The policy elements of `slot` (`all_ifs`, `allow`).
fn policy_changes(slot: u32, sp: &SlotPolicy, op: Op) -> Vec<Change> {
    let ifn = ifname(slot);
    let mut v = Vec::new();
    if sp.all {
        v.push(Change {
            op,
            set: "all_ifs",
            elems: vec![Elem::ifname(&ifn)],
        });
    }
    v.push(Change {
        op,
        set: "allow",
        elems: sp
            .ranges
            .iter()
            .map(|(a, b)| Elem::ifname_range(&ifn, *a, *b))
            .collect(),
    });
    v
}

/// The table and what the route monitor keeps current in it.
struct Shared {
    table: String,
    /// Held for every change to the table: serialises them, so an attach never meets a
    /// half-deleted table and a prune never meets a half-made link.
    state: Mutex<TableState>,
    /// The host's addresses, connected subnets and gateways (`hostnets`).
    hostnets: RwLock<Vec<Cidr>>,
}

/// The networking of one runtime.
pub struct Net {
    shared: Arc<Shared>,
    upstream: SocketAddr,
    attached: Mutex<HashMap<u32, Attached>>,
    /// Whether the route monitor runs (started with the first networked sandbox).
    monitor: Mutex<bool>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("table", &self.shared.table)
            .field("upstream", &self.upstream)
            .finish()
    }
}

/// `nft` runs for sandboxes (not for the host networks' set): the table's writes and
/// deletions. Creates and destroys while the table exists add none.
static NFT_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times this process ran `nft` for sandbox rules (tests check a create ran none).
pub fn nft_runs() -> u64 {
    NFT_RUNS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Runs `program args` with `stdin`, failing with its stderr; counted in [`nft_runs`].
fn run(program: &str, args: &[&str], stdin: &str) -> Result<()> {
    NFT_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    run_uncounted(program, args, stdin)
}

/// [`run`] without counting (the host networks' set, which changes with the host).
fn run_uncounted(program: &str, args: &[&str], stdin: &str) -> Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RuntimeError::Unsupported {
            resource: "nftables",
            reason: format!("running {program:?}: {e} (install nftables for sandbox networking)"),
        })?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin.as_bytes())
            .map_err(RuntimeError::io(format!("writing to {program}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(RuntimeError::io(format!("waiting for {program}")))?;
    if !out.status.success() {
        return Err(RuntimeError::Io {
            what: format!("{program} {}", args.join(" ")),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        });
    }
    Ok(())
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, TableState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn hostnets(&self) -> Vec<Cidr> {
        self.hostnets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The `nft` commands adding the interface elements of `slot` (for a rebuild, which
    /// must be one transaction with the table).
    fn iface_elements(&self, slot: u32) -> String {
        format!(
            "add element inet {t} ifs {{ \"{ifn}\" }}\nadd element inet {t} dns_ok {{ \"{ifn}\" . {h} }}\n",
            t = self.table,
            ifn = ifname(slot),
            h = host_addr(slot)
        )
    }

    /// The `nft` commands adding the policy elements of `slot` (for a rebuild).
    fn policy_elements(&self, slot: u32, sp: &SlotPolicy) -> String {
        let (t, ifn) = (&self.table, ifname(slot));
        let mut s = String::new();
        if sp.all {
            s.push_str(&format!("add element inet {t} all_ifs {{ \"{ifn}\" }}\n"));
        }
        if !sp.ranges.is_empty() {
            let list: Vec<String> = sp
                .ranges
                .iter()
                .map(|(a, b)| format!("\"{ifn}\" . {a}-{b}"))
                .collect();
            s.push_str(&format!(
                "add element inet {t} allow {{ {} }}\n",
                list.join(", ")
            ));
        }
        s
    }

    /// Adds `ips` to the allow ranges of `slot`, if its policy is still the one of
    /// `generation` (a resolver's pins; addresses already covered are left out).
    pub(super) fn pin(&self, slot: u32, generation: u64, ips: &[Ipv4Addr]) -> Result<()> {
        let mut st = self.lock();
        let Some(sp) = st.policies.get(&slot) else {
            return Err(RuntimeError::Unsupported {
                resource: "sandbox network",
                reason: format!("slot {slot} has no network any more"),
            });
        };
        if sp.generation != generation {
            return Err(RuntimeError::Unsupported {
                resource: "sandbox network",
                reason: format!("slot {slot} belongs to another sandbox now"),
            });
        }
        let mut new: Vec<Ipv4Addr> = ips.iter().copied().filter(|ip| !sp.covers(*ip)).collect();
        new.sort();
        new.dedup();
        if new.is_empty() {
            return Ok(());
        }
        let ifn = ifname(slot);
        let change = Change {
            op: Op::Add,
            set: "allow",
            elems: new
                .iter()
                .map(|ip| Elem::ifname_range(&ifn, *ip, *ip))
                .collect(),
        };
        st.apply(&self.table, &[change])?;
        if let Some(sp) = st.policies.get_mut(&slot) {
            sp.ranges.extend(new.iter().map(|ip| (*ip, *ip)));
        }
        Ok(())
    }

    /// Deletes the table if no networked sandbox came since the deletion was scheduled
    /// (`epoch`), or at once with `epoch` `None`, as long as none is attached.
    fn delete_idle_table(&self, epoch: Option<u64>) {
        let mut st = self.lock();
        if st.has_base
            && st.policies.is_empty()
            && st.ifaces.is_empty()
            && epoch.is_none_or(|e| e == st.epoch)
        {
            let _ = run("nft", &["delete", "table", "inet", &self.table], "");
            st.has_base = false;
        }
    }

    /// Replaces the host networks (from the route monitor), in the table too if it exists.
    fn set_hostnets(&self, nets: Vec<Cidr>) {
        let st = self.lock();
        {
            let mut cur = self
                .hostnets
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *cur == nets {
                return;
            }
            cur.clone_from(&nets);
        }
        tracing::info!(hostnets = %hostnets::elements(&nets), "the host's networks changed");
        if st.has_base {
            let mut script = format!("flush set inet {} hostnets\n", self.table);
            if !nets.is_empty() {
                script.push_str(&format!(
                    "add element inet {} hostnets {{ {} }}\n",
                    self.table,
                    hostnets::elements(&nets)
                ));
            }
            if let Err(e) = run_uncounted("nft", &["-f", "-"], &script) {
                tracing::error!("updating the host networks set: {e}");
            }
        }
    }

    /// Deletes the interface elements of sandbox links that no longer exist.
    fn prune_vanished_links(&self) {
        let mut st = self.lock();
        if !st.has_base {
            return;
        }
        let gone: Vec<u32> = st
            .ifaces
            .iter()
            .copied()
            .filter(|s| !links::link_exists(*s))
            .collect();
        for slot in gone {
            tracing::info!(slot, "removing the elements of a vanished sandbox link");
            st.apply_each(&self.table, &iface_changes(slot, Op::Delete));
            st.ifaces.remove(&slot);
        }
    }
}

impl Net {
    /// The networking of runtime instance `instance`; nothing on the host is touched yet.
    pub fn new(instance: &str, upstream: SocketAddr) -> Net {
        Net {
            shared: Arc::new(Shared {
                table: format!("paddock_{instance}"),
                state: Mutex::new(TableState::default()),
                hostnets: RwLock::new(Vec::new()),
            }),
            upstream,
            attached: Mutex::new(HashMap::new()),
            monitor: Mutex::new(false),
        }
    }

    /// Starts the route monitor unless it runs, with the host networks' first reading.
    fn ensure_monitor(&self) -> Result<()> {
        let mut started = self
            .monitor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !*started {
            let first = hostnets::start_monitor(Arc::downgrade(&self.shared))?;
            *self
                .shared
                .hostnets
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = first;
            *started = true;
        }
        Ok(())
    }

    /// The host networks no sandbox reaches (besides the blocked ranges), as last read.
    pub fn hostnets(&self) -> Vec<Cidr> {
        self.shared.hostnets()
    }

    /// Builds this instance's table from scratch with the live sandboxes' policies
    /// (slot, policy), atomically: nothing else survives. Without `nft` on the host this is
    /// a no-op as long as no sandbox is networked.
    pub fn rebuild(&self, live: &[(u32, NetworkPolicy)]) -> Result<()> {
        let networked: Vec<_> = live
            .iter()
            .filter(|(_, p)| p.mode != NetworkMode::None)
            .collect();
        if !which("nft") {
            if networked.is_empty() {
                return Ok(());
            }
            return Err(RuntimeError::Unsupported {
                resource: "nftables",
                reason: "networked sandboxes exist but `nft` is not installed".into(),
            });
        }
        if !networked.is_empty() {
            self.ensure_monitor()?;
        }
        let sh = &self.shared;
        let mut st = sh.lock();
        let mut script = format!("add table inet {0}\ndelete table inet {0}\n", sh.table);
        let mut policies = BTreeMap::new();
        if !networked.is_empty() {
            script.push_str(&self.base_ruleset());
            for (slot, p) in &networked {
                st.epoch += 1;
                let sp = SlotPolicy::new(st.epoch, p);
                script.push_str(&sh.policy_elements(*slot, &sp));
                script.push_str(&sh.iface_elements(*slot));
                policies.insert(*slot, sp);
            }
        }
        run("nft", &["-f", "-"], &script)?;
        st.has_base = !networked.is_empty();
        st.ifaces = policies.keys().copied().collect();
        st.policies = policies;
        Ok(())
    }

    fn base_ruleset(&self) -> String {
        let nets = self.shared.hostnets();
        let hostnets = if nets.is_empty() {
            String::new()
        } else {
            format!("elements = {{ {} }} ", hostnets::elements(&nets))
        };
        format!(
            r#"table inet {t} {{
  set ifs {{ type ifname; }}
  set dns_ok {{ type ifname . ipv4_addr; }}
  set all_ifs {{ type ifname; }}
  set allow {{ type ifname . ipv4_addr; flags interval; }}
  set blocked {{ type ipv4_addr; flags interval; elements = {{ {blocked} }} }}
  set hostnets {{ type ipv4_addr; flags interval; {hostnets}}}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname @ifs meta l4proto {{ tcp, udp }} th dport 53 iifname . ip daddr @dns_ok accept
    iifname @ifs drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    oifname @ifs ct state established,related accept
    oifname @ifs drop
    iifname @ifs jump sandbox
  }}
  chain sandbox {{
    meta nfproto ipv6 drop
    iifname . ip daddr @allow accept
    iifname != @all_ifs drop
    ip daddr @blocked drop
    ip daddr @hostnets drop
    accept
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    iifname @ifs masquerade
  }}
}}
"#,
            t = self.shared.table,
            blocked = BLOCKED.join(", ")
        )
    }

    /// Writes the table with its chains and sets (no element of a sandbox), replacing
    /// what was there: called only while no sandbox of this instance is attached or when
    /// the table is gone.
    fn write_base(&self) -> Result<()> {
        let t = &self.shared.table;
        let mut script = format!("add table inet {t}\ndelete table inet {t}\n");
        script.push_str(&self.base_ruleset());
        run("nft", &["-f", "-"], &script)
    }

    /// A network namespace for the stock of network slots: loopback up, and the link of
    /// `slot` made as [`Net::attach`] makes it (host end `pdk<slot>`, `eth0` inside with
    /// address and default route). Held by the returned descriptor only; no rule names it
    /// until [`Net::attach`] with no pid, which must come before anything runs in it.
    pub fn prepare_slot(&self, slot: u32) -> Result<std::fs::File> {
        if links::link_exists(slot) {
            links::remove_link(slot);
        }
        links::prepared_netns(&ifname(slot), host_addr(slot), sandbox_addr(slot))
    }

    /// Gives sandbox `slot` (PID 1 `pid`) its rules, link and resolver. The rules come
    /// first: from the moment the link exists, its traffic is filtered. With no `pid` the
    /// link exists already ([`Net::prepare_slot`]) and nothing runs behind it yet: only
    /// the rules and the resolver are made.
    pub fn attach(&self, slot: u32, pid: Option<i32>, p: &NetworkPolicy) -> Result<()> {
        self.ensure_monitor()?;
        let sh = &self.shared;
        let mut st = sh.lock();
        let (h, g) = (host_addr(slot), sandbox_addr(slot));
        // Forwarding is what lets routed sandbox traffic leave; it is host-wide.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(RuntimeError::io("enabling IPv4 forwarding"))?;
        if pid.is_some() && links::link_exists(slot) {
            links::remove_link(slot);
        }
        st.epoch += 1;
        let sp = SlotPolicy::new(st.epoch, p);
        let mut changes = policy_changes(slot, &sp, Op::Add);
        changes.extend(iface_changes(slot, Op::Add));
        if !st.has_base {
            self.write_base()?;
            st.has_base = true;
        }
        if let Err(e) = st.apply(&sh.table, &changes) {
            // The table may have been deleted behind our back (`nft flush ruleset`): write
            // it again, with every attached sandbox's elements in the same transaction, and
            // retry.
            tracing::warn!(
                slot,
                "adding the sandbox's elements: {e}; rewriting the table"
            );
            let mut script = format!("add table inet {0}\ndelete table inet {0}\n", sh.table);
            script.push_str(&self.base_ruleset());
            for (s, sp) in &st.policies {
                script.push_str(&sh.policy_elements(*s, sp));
            }
            for s in &st.ifaces {
                script.push_str(&sh.iface_elements(*s));
            }
            run("nft", &["-f", "-"], &script)?;
            st.apply(&sh.table, &changes)?;
        }
        st.policies.insert(slot, sp.clone());
        st.ifaces.insert(slot);
        if let Some(pid) = pid {
            links::veth_up(&ifname(slot), pid, h, g)?;
        }
        drop(st);
        self.start_resolver(slot, sp.generation, p.clone())
    }

    /// Restores the network of an adopted sandbox after [`Net::rebuild`]: checks its link
    /// (both ends, addresses, up, the sandbox's default route) and re-creates it if it is
    /// not whole, makes sure the table names it, and restarts its resolver. Returns whether
    /// the link had to be re-created (then the sandbox's `resolv.conf` should be rewritten).
    pub fn restore(&self, slot: u32, pid: i32, p: &NetworkPolicy) -> Result<bool> {
        if p.mode == NetworkMode::None {
            return Ok(false);
        }
        self.ensure_monitor()?;
        let sh = &self.shared;
        let mut st = sh.lock();
        let (h, g) = (host_addr(slot), sandbox_addr(slot));
        let whole = match links::link_whole(slot, pid, h, g) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(slot, "checking the sandbox link: {e}");
                false
            }
        };
        if !whole {
            tracing::warn!(slot, "the sandbox link is not whole; re-creating it");
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                .map_err(RuntimeError::io("enabling IPv4 forwarding"))?;
            if links::link_exists(slot) {
                links::remove_link(slot);
            }
            links::remove_inner_eth0(pid)?;
        }
        if !whole || !st.ifaces.contains(&slot) {
            // Named in the table before the link exists again (see `attach`).
            st.apply(&sh.table, &iface_changes(slot, Op::Add))?;
            st.ifaces.insert(slot);
        }
        if !whole {
            links::veth_up(&ifname(slot), pid, h, g)?;
        }
        let generation = match st.policies.get(&slot) {
            Some(sp) => sp.generation,
            None => {
                st.epoch += 1;
                let sp = SlotPolicy::new(st.epoch, p);
                st.apply(&sh.table, &policy_changes(slot, &sp, Op::Add))?;
                st.policies.insert(slot, sp);
                st.epoch
            }
        };
        drop(st);
        self.start_resolver(slot, generation, p.clone())?;
        Ok(!whole)
    }

    /// Deletes the link of `slot` if there is one (an adopted sandbox in mode `none` that a
    /// crash caught while it was being networked).
    pub fn release_link(&self, slot: u32) {
        if links::link_exists(slot) {
            links::remove_link(slot);
        }
    }

    /// Changes a networked sandbox's policy in place (both old and new are not `none`).
    pub fn update(&self, slot: u32, p: &NetworkPolicy) -> Result<()> {
        let sh = &self.shared;
        let mut st = sh.lock();
        let generation = st.policies.get(&slot).map_or(st.epoch, |sp| sp.generation);
        let new = SlotPolicy::new(generation, p);
        let mut changes = st
            .policies
            .get(&slot)
            .map(|old| policy_changes(slot, old, Op::Delete))
            .unwrap_or_default();
        changes.extend(policy_changes(slot, &new, Op::Add));
        // One batch: the old elements and the new ones swap atomically.
        st.apply(&sh.table, &changes)?;
        st.policies.insert(slot, new);
        drop(st);
        if let Some(a) = self
            .attached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&slot)
        {
            *a.policy
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = p.clone();
        }
        Ok(())
    }

    /// Removes everything of sandbox `slot`: resolver, rules, link. Safe to call for a slot
    /// that never had a network (then it changes nothing).
    pub fn detach(&self, slot: u32) {
        let sh = &self.shared;
        let mut st = sh.lock();
        if let Some(a) = self
            .attached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&slot)
        {
            a.resolver.abort();
        }
        if st.has_base {
            let mut changes = Vec::new();
            if st.ifaces.remove(&slot) {
                changes.extend(iface_changes(slot, Op::Delete));
            }
            if let Some(sp) = st.policies.remove(&slot) {
                changes.extend(policy_changes(slot, &sp, Op::Delete));
            }
            st.apply_each(&sh.table, &changes);
        }
        if links::link_exists(slot) {
            links::remove_link(slot);
        }
        // The last networked sandbox takes the table with it, after a grace period that
        // spares a burst of creates rewriting it: an idle Paddock leaves no rule in the
        // host's firewall.
        if st.has_base && st.policies.is_empty() && st.ifaces.is_empty() {
            let epoch = st.epoch;
            drop(st);
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    let sh = Arc::clone(&self.shared);
                    h.spawn(async move {
                        tokio::time::sleep(TABLE_IDLE_GRACE).await;
                        let _ =
                            tokio::task::spawn_blocking(move || sh.delete_idle_table(Some(epoch)))
                                .await;
                    });
                }
                Err(_) => self.shared.delete_idle_table(Some(epoch)),
            }
        }
    }

    /// Deletes the table now if no sandbox of this runtime is networked (at close: the
    /// grace period's task may not run any more).
    pub fn delete_idle_table(&self) {
        self.shared.delete_idle_table(None);
    }

    /// Host interfaces named like sandbox links (`pdk<slot>`), with their slots.
    pub fn host_links() -> Vec<u32> {
        links::host_links()
    }

    /// Deletes the link of `slot` (both ends of the pair go together), if it exists.
    pub fn remove_link(slot: u32) {
        links::remove_link(slot);
    }

    fn start_resolver(&self, slot: u32, generation: u64, p: NetworkPolicy) -> Result<()> {
        let addr = SocketAddr::from((host_addr(slot), 53));
        let udp = std::net::UdpSocket::bind(addr).map_err(RuntimeError::io(format!(
            "binding resolver on {addr} (UDP)"
        )))?;
        udp.set_nonblocking(true)
            .map_err(RuntimeError::io("resolver socket"))?;
        // TCP too: clients retry there when an answer was truncated, and some always use it.
        let tcp = std::net::TcpListener::bind(addr).map_err(RuntimeError::io(format!(
            "binding resolver on {addr} (TCP)"
        )))?;
        tcp.set_nonblocking(true)
            .map_err(RuntimeError::io("resolver socket"))?;
        let policy = Arc::new(RwLock::new(p));
        let handle =
            tokio::runtime::Handle::try_current().map_err(|_| RuntimeError::Unsupported {
                resource: "tokio runtime",
                reason: "sandbox networking needs a tokio runtime".into(),
            })?;
        let _guard = handle.enter();
        let udp =
            tokio::net::UdpSocket::from_std(udp).map_err(RuntimeError::io("resolver socket"))?;
        let tcp =
            tokio::net::TcpListener::from_std(tcp).map_err(RuntimeError::io("resolver socket"))?;
        let ctx = resolver::Resolver {
            policy: policy.clone(),
            upstream: self.upstream,
            shared: self.shared.clone(),
            slot,
            generation,
        };
        let resolver = handle.spawn(resolver::serve(udp, tcp, ctx));
        if let Some(old) = self
            .attached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(slot, Attached { policy, resolver })
        {
            old.resolver.abort();
        }
        Ok(())
    }
}

impl Drop for Net {
    /// A runtime dropped within the grace period (a bench, a test, `paddock run`) takes its
    /// empty table with it; one with networked sandboxes left keeps it for the next open.
    fn drop(&mut self) {
        self.shared.delete_idle_table(None);
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(program).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_per_slot() {
        assert_eq!(host_addr(0), Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(sandbox_addr(0), Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(host_addr(64), Ipv4Addr::new(10, 200, 1, 1));
        assert_eq!(sandbox_addr(15_999), Ipv4Addr::new(10, 200, 249, 254));
        assert_eq!(ifname(15_999).len(), 8);
    }

    #[test]
    fn listed_cidrs_become_ranges_without_overlaps() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        let r = cidr_ranges(&[
            c("10.1.0.0/16"),
            c("10.1.0.0/24"),
            c("0.0.0.0/0"),
            c("1.2.3.4/32"),
        ]);
        assert_eq!(
            r,
            vec![(Ipv4Addr::new(0, 0, 0, 0), Ipv4Addr::new(255, 255, 255, 255))]
        );
        let r = cidr_ranges(&[c("10.1.0.0/24"), c("10.1.0.0/16"), c("1.2.3.4/32")]);
        assert_eq!(
            r,
            vec![
                (Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(1, 2, 3, 4)),
                (Ipv4Addr::new(10, 1, 0, 0), Ipv4Addr::new(10, 1, 255, 255)),
            ]
        );
    }
}
