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
//! - forward from a sandbox interface: IPv6 dropped; then the sandbox's chain `s<slot>`:
//!   `ip daddr @a<slot> accept` (its allow set: listed CIDRs and, in `allow` mode, addresses
//!   its resolver returned for allowed names), then `allow` mode drops the rest, `all` mode
//!   drops `@blocked` (private, loopback, link-local and metadata, CGNAT, multicast,
//!   reserved) and accepts the rest.
//! - postrouting: masquerade what leaves from sandbox interfaces.
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
mod resolver;

pub use hostnets::MIN_CONNECTED_PREFIX;
pub use resolver::host_resolver;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, RwLock};

use paddock_core::{Cidr, NetworkMode, NetworkPolicy};

use crate::error::{Result, RuntimeError};

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

/// What of this instance's table exists, known without asking `nft`.
#[derive(Debug, Default)]
struct TableState {
    /// The table with its base chains and sets.
    has_base: bool,
    /// Slots whose chain `s<slot>` and set `a<slot>` exist.
    chains: BTreeSet<u32>,
    /// Slots whose interface elements (in `ifs`, `dns_ok`, `jumps`) exist.
    ifaces: BTreeSet<u32>,
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

/// Runs `program args` with `stdin`, failing with its stderr.
fn run(program: &str, args: &[&str], stdin: &str) -> Result<()> {
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

/// Runs an `nft -f` script; if it fails as a whole (part of it already gone), line by line,
/// so a missing element does not keep the others in place.
fn nft_each(script: &str) {
    if script.is_empty() || run("nft", &["-f", "-"], script).is_ok() {
        return;
    }
    for line in script.lines() {
        let _ = run("nft", &["-f", "-"], line);
    }
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

    /// The commands adding the interface elements of `slot`.
    fn iface_elements(&self, slot: u32) -> String {
        format!(
            "add element inet {t} ifs {{ \"{ifn}\" }}\nadd element inet {t} dns_ok {{ \"{ifn}\" . {h} }}\nadd element inet {t} jumps {{ \"{ifn}\" : jump s{slot} }}\n",
            t = self.table,
            ifn = ifname(slot),
            h = host_addr(slot)
        )
    }

    /// The commands deleting the interface elements of `slot`.
    fn iface_deletions(&self, slot: u32) -> String {
        format!(
            "delete element inet {t} jumps {{ \"{ifn}\" }}\ndelete element inet {t} dns_ok {{ \"{ifn}\" . {h} }}\ndelete element inet {t} ifs {{ \"{ifn}\" }}\n",
            t = self.table,
            ifn = ifname(slot),
            h = host_addr(slot)
        )
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
            if let Err(e) = run("nft", &["-f", "-"], &script) {
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
            nft_each(&self.iface_deletions(slot));
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
        if !networked.is_empty() {
            script.push_str(&self.base_ruleset());
            for (slot, p) in &networked {
                script.push_str(&self.chain_rules(*slot, p, false));
                script.push_str(&sh.iface_elements(*slot));
            }
        }
        run("nft", &["-f", "-"], &script)?;
        let slots: BTreeSet<u32> = networked.iter().map(|(s, _)| *s).collect();
        *st = TableState {
            has_base: !networked.is_empty(),
            chains: slots.clone(),
            ifaces: slots,
        };
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
  map jumps {{ type ifname : verdict; }}
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
    iifname @ifs meta nfproto ipv6 drop
    iifname @ifs iifname vmap @jumps
    iifname @ifs drop
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

    /// The commands adding slot's chain and set (`replace`: flush the old ones first, for a
    /// policy change).
    fn chain_rules(&self, slot: u32, p: &NetworkPolicy, replace: bool) -> String {
        let t = &self.shared.table;
        let mut s = String::new();
        if replace {
            s.push_str(&format!(
                "flush chain inet {t} s{slot}\nflush set inet {t} a{slot}\n"
            ));
        } else {
            s.push_str(&format!(
                "add set inet {t} a{slot} {{ type ipv4_addr; flags interval; }}\nadd chain inet {t} s{slot}\n"
            ));
        }
        s.push_str(&format!(
            "add rule inet {t} s{slot} ip daddr @a{slot} accept\n"
        ));
        match p.mode {
            NetworkMode::All => s.push_str(&format!(
                "add rule inet {t} s{slot} ip daddr @blocked drop\nadd rule inet {t} s{slot} ip daddr @hostnets drop\nadd rule inet {t} s{slot} accept\n"
            )),
            _ => s.push_str(&format!("add rule inet {t} s{slot} drop\n")),
        }
        if !p.cidrs.is_empty() {
            let list: Vec<String> = p.cidrs.iter().map(ToString::to_string).collect();
            s.push_str(&format!(
                "add element inet {t} a{slot} {{ {} }}\n",
                list.join(", ")
            ));
        }
        s
    }

    /// Gives sandbox `slot` (PID 1 `pid`) its rules, link and resolver. The rules come
    /// first: from the moment the link exists, its traffic is filtered.
    pub fn attach(&self, slot: u32, pid: i32, p: &NetworkPolicy) -> Result<()> {
        self.ensure_monitor()?;
        let sh = &self.shared;
        let mut st = sh.lock();
        let (h, g) = (host_addr(slot), sandbox_addr(slot));
        // Forwarding is what lets routed sandbox traffic leave; it is host-wide.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(RuntimeError::io("enabling IPv4 forwarding"))?;
        if links::link_exists(slot) {
            links::remove_link(slot);
        }
        let mut script = format!("add table inet {}\n", sh.table);
        if !st.has_base {
            script.push_str(&self.base_ruleset());
        }
        script.push_str(&self.chain_rules(slot, p, false));
        script.push_str(&sh.iface_elements(slot));
        run("nft", &["-f", "-"], &script)?;
        st.has_base = true;
        st.chains.insert(slot);
        st.ifaces.insert(slot);
        links::veth_up(&ifname(slot), pid, h, g)?;
        drop(st);
        self.start_resolver(slot, p.clone())
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
            run("nft", &["-f", "-"], &sh.iface_elements(slot))?;
            st.ifaces.insert(slot);
        }
        if !whole {
            links::veth_up(&ifname(slot), pid, h, g)?;
        }
        drop(st);
        self.start_resolver(slot, p.clone())?;
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
        let st = self.shared.lock();
        run("nft", &["-f", "-"], &self.chain_rules(slot, p, true))?;
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
        let t = &sh.table;
        if st.has_base {
            let mut script = String::new();
            if st.ifaces.remove(&slot) {
                script.push_str(&sh.iface_deletions(slot));
            }
            if st.chains.remove(&slot) {
                script.push_str(&format!(
                    "delete chain inet {t} s{slot}\ndelete set inet {t} a{slot}\n"
                ));
            }
            nft_each(&script);
        }
        if links::link_exists(slot) {
            links::remove_link(slot);
        }
        // The last networked sandbox takes the table with it: an idle Paddock leaves no
        // rule in the host's firewall.
        if st.has_base && st.chains.is_empty() && st.ifaces.is_empty() {
            let _ = run("nft", &["delete", "table", "inet", t], "");
            st.has_base = false;
        }
    }

    /// Host interfaces named like sandbox links (`pdk<slot>`), with their slots.
    pub fn host_links() -> Vec<u32> {
        links::host_links()
    }

    /// Deletes the link of `slot` (both ends of the pair go together), if it exists.
    pub fn remove_link(slot: u32) {
        links::remove_link(slot);
    }

    fn start_resolver(&self, slot: u32, p: NetworkPolicy) -> Result<()> {
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
}
