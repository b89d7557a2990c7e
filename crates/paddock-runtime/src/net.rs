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

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use paddock_core::{NetworkMode, NetworkPolicy};

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

/// Longest a forwarded DNS query waits for the upstream resolver.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Most DNS queries of one sandbox in flight at once; more are dropped (the client retries).
const MAX_INFLIGHT: usize = 64;
/// Most open DNS-over-TCP connections of one sandbox; more wait in the listen backlog.
const MAX_TCP_CONNS: usize = 16;
/// A DNS-over-TCP connection with no complete query for this long is closed (RFC 7766
/// suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

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

/// `resolv.conf` of a sandbox in `mode`.
pub fn resolv_conf(mode: NetworkMode, slot: u32) -> String {
    match mode {
        NetworkMode::None => "# No network: this sandbox has loopback only.\n".into(),
        _ => format!(
            "# Paddock's resolver for this sandbox ({} mode).\nnameserver {}\noptions timeout:2 attempts:2\n",
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

/// The networking of one runtime.
pub struct Net {
    table: String,
    upstream: SocketAddr,
    attached: Mutex<HashMap<u32, Attached>>,
    /// Serialises changes to the table's existence (made by the first networked sandbox,
    /// deleted with the last), so an attach never meets a half-deleted table.
    table_lock: Mutex<()>,
    /// Whether the table with its base chains exists (known without asking `nft`).
    has_base: Mutex<bool>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("table", &self.table)
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
        .map_err(|e| {
            RuntimeError::Unsupported(format!(
                "running {program:?}: {e} (install nftables for sandbox networking)"
            ))
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

impl Net {
    /// The networking of runtime instance `instance`; nothing on the host is touched yet.
    pub fn new(instance: &str, upstream: SocketAddr) -> Net {
        Net {
            table: format!("paddock_{instance}"),
            upstream,
            attached: Mutex::new(HashMap::new()),
            table_lock: Mutex::new(()),
            has_base: Mutex::new(false),
        }
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
            return Err(RuntimeError::Unsupported(
                "networked sandboxes exist but `nft` is not installed".into(),
            ));
        }
        let _g = self.table_lock.lock().expect("net poisoned");
        let mut script = format!("add table inet {0}\ndelete table inet {0}\n", self.table);
        if !networked.is_empty() {
            script.push_str(&self.base_ruleset());
            for (slot, p) in &networked {
                script.push_str(&self.sandbox_rules(*slot, p, false));
            }
        }
        run("nft", &["-f", "-"], &script)?;
        *self.has_base.lock().expect("net poisoned") = !networked.is_empty();
        Ok(())
    }

    fn base_ruleset(&self) -> String {
        format!(
            r#"table inet {t} {{
  set ifs {{ type ifname; }}
  set dns_ok {{ type ifname . ipv4_addr; }}
  map jumps {{ type ifname : verdict; }}
  set blocked {{ type ipv4_addr; flags interval; elements = {{ {blocked} }} }}
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
            t = self.table,
            blocked = BLOCKED.join(", ")
        )
    }

    /// The commands adding slot's chain, set and map entries (`replace`: flush the old
    /// ones first, for a policy change).
    fn sandbox_rules(&self, slot: u32, p: &NetworkPolicy, replace: bool) -> String {
        let t = &self.table;
        let ifn = ifname(slot);
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
                "add rule inet {t} s{slot} ip daddr @blocked drop\nadd rule inet {t} s{slot} accept\n"
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
        if !replace {
            s.push_str(&format!(
                "add element inet {t} ifs {{ \"{ifn}\" }}\nadd element inet {t} dns_ok {{ \"{ifn}\" . {h} }}\nadd element inet {t} jumps {{ \"{ifn}\" : jump s{slot} }}\n",
                h = host_addr(slot)
            ));
        }
        s
    }

    /// Gives sandbox `slot` (PID 1 `pid`) its link, rules and resolver.
    pub fn attach(&self, slot: u32, pid: i32, p: &NetworkPolicy) -> Result<()> {
        let _g = self.table_lock.lock().expect("net poisoned");
        let ifn = ifname(slot);
        let (h, g) = (host_addr(slot), sandbox_addr(slot));
        // Forwarding is what lets routed sandbox traffic leave; it is host-wide.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(RuntimeError::io("enabling IPv4 forwarding"))?;
        if std::path::Path::new("/sys/class/net").join(&ifn).exists() {
            Self::remove_link(slot);
        }
        veth_up(&ifn, pid, h, g)?;
        let mut script = format!("add table inet {}\n", self.table);
        let mut has_base = self.has_base.lock().expect("net poisoned");
        if !*has_base {
            script.push_str(&self.base_ruleset());
        }
        script.push_str(&self.sandbox_rules(slot, p, false));
        run("nft", &["-f", "-"], &script)?;
        *has_base = true;
        drop(has_base);
        self.start_resolver(slot, p.clone())
    }

    /// Re-attaches the resolver of an adopted sandbox (its link and rules survived).
    pub fn adopt(&self, slot: u32, p: &NetworkPolicy) -> Result<()> {
        if p.mode == NetworkMode::None {
            return Ok(());
        }
        self.start_resolver(slot, p.clone())
    }

    /// Changes a networked sandbox's policy in place (both old and new are not `none`).
    pub fn update(&self, slot: u32, p: &NetworkPolicy) -> Result<()> {
        run("nft", &["-f", "-"], &self.sandbox_rules(slot, p, true))?;
        if let Some(a) = self.attached.lock().expect("net poisoned").get(&slot) {
            *a.policy.write().expect("policy poisoned") = p.clone();
        }
        Ok(())
    }

    /// Removes everything of sandbox `slot`: resolver, rules, link. Safe to call for a slot
    /// that never had a network.
    pub fn detach(&self, slot: u32) {
        let _g = self.table_lock.lock().expect("net poisoned");
        let now_empty = {
            let mut at = self.attached.lock().expect("net poisoned");
            if let Some(a) = at.remove(&slot) {
                a.resolver.abort();
            }
            at.is_empty()
        };
        let t = &self.table;
        let ifn = ifname(slot);
        let mut has_base = self.has_base.lock().expect("net poisoned");
        if *has_base {
            let script = format!(
                "delete element inet {t} jumps {{ \"{ifn}\" }}\ndelete element inet {t} dns_ok {{ \"{ifn}\" . {h} }}\ndelete element inet {t} ifs {{ \"{ifn}\" }}\ndelete chain inet {t} s{slot}\ndelete set inet {t} a{slot}\n",
                h = host_addr(slot)
            );
            // One transaction; if part of it is already gone (a failed attach), line by line
            // so a missing element does not keep the others in place.
            if run("nft", &["-f", "-"], &script).is_err() {
                for line in script.lines() {
                    let _ = run("nft", &["-f", "-"], line);
                }
            }
        }
        if std::path::Path::new("/sys/class/net").join(&ifn).exists() {
            Self::remove_link(slot);
        }
        // The last networked sandbox takes the table with it: an idle Paddock leaves no
        // rule in the host's firewall.
        if now_empty && *has_base {
            let _ = run("nft", &["delete", "table", "inet", t], "");
            *has_base = false;
        }
    }

    /// Host interfaces named like sandbox links (`pdk<slot>`), with their slots.
    pub fn host_links() -> Vec<u32> {
        std::fs::read_dir("/sys/class/net")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()?
                            .strip_prefix("pdk")?
                            .parse::<u32>()
                            .ok()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Deletes the link of `slot` (both ends of the pair go together), if it exists.
    pub fn remove_link(slot: u32) {
        let ifn = ifname(slot);
        let r = netlink(None, move |h| async move {
            let del = async {
                if let Some(index) = link_index(&h, &ifn).await? {
                    h.link().del(index).execute().await?;
                }
                Ok::<_, rtnetlink::Error>(())
            };
            del.await.map_err(|e| format!("deleting {ifn}: {e}"))
        });
        if let Err(e) = r {
            tracing::warn!(slot, "removing sandbox link: {e}");
        }
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
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            RuntimeError::Unsupported("sandbox networking needs a tokio runtime".into())
        })?;
        let _guard = handle.enter();
        let udp =
            tokio::net::UdpSocket::from_std(udp).map_err(RuntimeError::io("resolver socket"))?;
        let tcp =
            tokio::net::TcpListener::from_std(tcp).map_err(RuntimeError::io("resolver socket"))?;
        let ctx = Resolver {
            policy: policy.clone(),
            upstream: self.upstream,
            table: self.table.clone(),
            slot,
        };
        // One task for both: aborting it (detach) stops both listeners and, through the
        // TCP loop's JoinSet, every open TCP connection.
        let resolver = handle.spawn(async move {
            tokio::join!(
                resolve_loop(Arc::new(udp), ctx.clone()),
                resolve_tcp_loop(tcp, ctx)
            );
        });
        if let Some(old) = self
            .attached
            .lock()
            .expect("net poisoned")
            .insert(slot, Attached { policy, resolver })
        {
            old.resolver.abort();
        }
        Ok(())
    }
}

/// Runs `f` with a netlink route connection, on a short-lived thread of its own with a
/// small runtime of its own, inside the network namespace `netns` when given (so no thread
/// that serves anything else ever changes namespace, and callers need no tokio context).
/// Blocks until `f` is done.
fn netlink<F, Fut>(netns: Option<std::fs::File>, f: F) -> Result<()>
where
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::result::Result<(), String>>,
{
    let nl_err = |e: String| RuntimeError::Io {
        what: "configuring the sandbox link".into(),
        source: std::io::Error::other(e),
    };
    std::thread::Builder::new()
        .name("paddock-netlink".into())
        .spawn(move || -> Result<()> {
            if let Some(ns) = &netns {
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(ns),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(|e| {
                    RuntimeError::io("entering the sandbox's network namespace")(e.into())
                })?;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(RuntimeError::io("netlink runtime"))?;
            rt.block_on(async move {
                let (conn, handle, _) = rtnetlink::new_connection()
                    .map_err(RuntimeError::io("opening a netlink socket"))?;
                // The connection task ends when the last handle is dropped.
                tokio::spawn(conn);
                f(handle).await.map_err(nl_err)
            })
        })
        .map_err(RuntimeError::io("starting netlink thread"))?
        .join()
        .map_err(|_| RuntimeError::io("netlink thread")(std::io::Error::other("it panicked")))?
}

/// The index of link `name` in the namespace of `h`'s socket, or None.
async fn link_index(
    h: &rtnetlink::Handle,
    name: &str,
) -> std::result::Result<Option<u32>, rtnetlink::Error> {
    use futures::TryStreamExt;
    match h
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
    {
        Ok(m) => Ok(m.map(|m| m.header.index)),
        // ENODEV: no such link.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates the veth pair of a sandbox: `ifn` on the host with address `h`/30, `eth0` in the
/// network namespace of `pid` with `g`/30 and a default route through `h`, both up.
fn veth_up(ifn: &str, pid: i32, h: Ipv4Addr, g: Ipv4Addr) -> Result<()> {
    use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
    use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(RuntimeError::io("opening the sandbox's network namespace"))?;
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name("eth0".to_owned())
        .setns_by_pid(pid as u32)
        .build();
    // Created down and brought up once addressed: asking for IFF_UP at creation with the peer
    // in another namespace fails (ENOTCONN on Linux 6.18).
    let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(ifn.to_owned())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    let ifn = ifn.to_owned();
    let step = |what: &'static str| move |e: rtnetlink::Error| format!("{what}: {e}");
    netlink(None, move |host| async move {
        host.link()
            .add(veth)
            .execute()
            .await
            .map_err(step("creating the veth pair"))?;
        let index = link_index(&host, &ifn)
            .await
            .map_err(step("finding the host link"))?
            .ok_or("the new host link is gone")?;
        host.address()
            .add(index, h.into(), 30)
            .execute()
            .await
            .map_err(step("addressing the host link"))?;
        host.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(step("bringing the host link up"))
    })?;
    // The sandbox's side, through a socket made inside its namespace.
    netlink(Some(ns), move |inner| async move {
        let index = link_index(&inner, "eth0")
            .await
            .map_err(step("finding eth0"))?
            .ok_or("eth0 did not appear in the sandbox")?;
        inner
            .address()
            .add(index, g.into(), 30)
            .execute()
            .await
            .map_err(step("addressing eth0"))?;
        inner
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(step("bringing eth0 up"))?;
        inner
            .route()
            .add(RouteMessageBuilder::<Ipv4Addr>::new().gateway(h).build())
            .execute()
            .await
            .map_err(step("adding the default route"))
    })
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(program).is_file())
}

/// What a sandbox's resolver answers by: its policy (changed in place by `update`), the
/// upstream resolver, and where allowed addresses are pinned.
#[derive(Clone)]
struct Resolver {
    policy: Arc<RwLock<NetworkPolicy>>,
    upstream: SocketAddr,
    table: String,
    slot: u32,
}

impl Resolver {
    async fn answer(&self, q: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let p = self.policy.read().expect("policy poisoned").clone();
        answer(q, &p, self.upstream, transport, &self.table, self.slot).await
    }
}

/// How a query reached the resolver, and so how it is forwarded upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

async fn resolve_loop(sock: Arc<tokio::net::UdpSocket>, ctx: Resolver) {
    let inflight = Arc::new(tokio::sync::Semaphore::new(MAX_INFLIGHT));
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(permit) = inflight.clone().try_acquire_owned() else {
            continue;
        };
        let q = buf[..n].to_vec();
        let (sock, ctx) = (sock.clone(), ctx.clone());
        tokio::spawn(async move {
            if let Some(answer) = ctx.answer(&q, Transport::Udp).await {
                let _ = sock.send_to(&answer, from).await;
            }
            drop(permit);
        });
    }
}

/// DNS over TCP (RFC 7766): each message is preceded by its length as two big-endian
/// bytes; a connection may carry several queries, answered in order.
async fn resolve_tcp_loop(listener: tokio::net::TcpListener, ctx: Resolver) {
    let conns = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNS));
    // Owned here, so aborting this task aborts every connection with it.
    let mut open = tokio::task::JoinSet::new();
    loop {
        let Ok(permit) = conns.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            // Reap finished connections while waiting.
            Some(_) = open.join_next(), if !open.is_empty() => continue,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let ctx = ctx.clone();
        open.spawn(async move {
            let _ = serve_tcp(stream, &ctx).await;
            drop(permit);
        });
    }
}

async fn serve_tcp(mut stream: tokio::net::TcpStream, ctx: &Resolver) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    loop {
        let Ok(q) = tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await else {
            return Ok(());
        };
        let Some(q) = q? else { return Ok(()) };
        let Some(a) = ctx.answer(&q, Transport::Tcp).await else {
            return Ok(());
        };
        let Some(out) = framed(&a) else {
            return Ok(());
        };
        stream.write_all(&out).await?;
    }
}

/// `msg` with its two-byte length in front (`None` if it is too long for that).
fn framed(msg: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(msg.len()).ok()?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    Some(out)
}

/// One length-prefixed DNS message; `None` at a clean end of stream.
async fn read_framed<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; 2];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    r.read_exact(&mut msg).await?;
    Ok(Some(msg))
}

/// The reply to one query: NXDOMAIN for a name the policy does not allow, else the
/// upstream's answer, its A records pinned into the sandbox's allow set first (`allow`
/// mode) and its AAAA records removed.
async fn answer(
    q: &[u8],
    p: &NetworkPolicy,
    upstream: SocketAddr,
    transport: Transport,
    table: &str,
    slot: u32,
) -> Option<Vec<u8>> {
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::{RData, RecordType};
    let msg = Message::from_vec(q).ok()?;
    let allowed = !msg.queries().is_empty()
        && msg
            .queries()
            .iter()
            .all(|qq| p.allows_name(&qq.name().to_ascii()));
    if !allowed {
        let mut r = Message::error_msg(msg.id(), msg.op_code(), ResponseCode::NXDomain);
        r.add_queries(msg.queries().to_vec());
        r.set_recursion_desired(msg.recursion_desired());
        r.set_recursion_available(true);
        return r.to_vec().ok();
    }
    let servfail = || {
        Message::error_msg(msg.id(), msg.op_code(), ResponseCode::ServFail)
            .to_vec()
            .ok()
    };
    let reply = match transport {
        Transport::Udp => forward(q, upstream).await,
        Transport::Tcp => forward_tcp(q, upstream).await,
    };
    let Some(reply) = reply else {
        // Upstream unreachable or silent: say so at once instead of letting the client
        // wait out its own timeout.
        return servfail();
    };
    let Ok(mut resp) = Message::from_vec(&reply) else {
        return servfail();
    };
    if resp.id() != msg.id() {
        return None;
    }
    let answers: Vec<_> = resp
        .take_answers()
        .into_iter()
        .filter(|r| r.record_type() != RecordType::AAAA)
        .collect();
    if p.mode == NetworkMode::Allow {
        let ips: Vec<String> = answers
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect();
        if !ips.is_empty() {
            let script = format!(
                "add element inet {table} a{slot} {{ {} }}\n",
                ips.join(", ")
            );
            let pinned =
                tokio::task::spawn_blocking(move || run("nft", &["-f", "-"], &script)).await;
            if !matches!(pinned, Ok(Ok(()))) {
                tracing::warn!(slot, "pinning resolved addresses failed: {pinned:?}");
                let r = Message::error_msg(msg.id(), msg.op_code(), ResponseCode::ServFail);
                return r.to_vec().ok();
            }
        }
    }
    resp.insert_answers(answers);
    resp.to_vec().ok()
}

/// Sends `q` to `upstream` and waits for its reply (same id, from that address).
async fn forward(q: &[u8], upstream: SocketAddr) -> Option<Vec<u8>> {
    let up = tokio::net::UdpSocket::bind(("0.0.0.0", 0)).await.ok()?;
    up.connect(upstream).await.ok()?;
    up.send(q).await.ok()?;
    // A whole datagram whatever the EDNS size the client offered (a cut one would not
    // parse and would turn into SERVFAIL).
    let mut buf = vec![0u8; 65535];
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, up.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n >= 2 && buf[..2] == q[..2] {
            buf.truncate(n);
            return Some(buf);
        }
    }
}

/// Sends `q` to `upstream` over TCP and reads its reply, all within the upstream timeout.
async fn forward_tcp(q: &[u8], upstream: SocketAddr) -> Option<Vec<u8>> {
    use tokio::io::AsyncWriteExt;
    let out = framed(q)?;
    let exchange = async {
        let mut up = tokio::net::TcpStream::connect(upstream).await.ok()?;
        up.write_all(&out).await.ok()?;
        let reply = read_framed(&mut up).await.ok()??;
        (reply.len() >= 2 && reply[..2] == q[..2]).then_some(reply)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .ok()?
}

/// The first `nameserver` of the host's `/etc/resolv.conf`, port 53 (fallback 127.0.0.1).
pub fn host_resolver() -> SocketAddr {
    std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .and_then(|t| {
            t.lines()
                .filter_map(|l| l.trim().strip_prefix("nameserver"))
                .find_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        })
        .map_or_else(
            || SocketAddr::from(([127, 0, 0, 1], 53)),
            |ip| SocketAddr::new(ip, 53),
        )
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

#[cfg(test)]
mod netlink_tests {
    use std::process::Command;

    /// `veth_up` makes both ends over netlink (addresses, up, the sandbox's default route)
    /// and `remove_link` takes the pair away; in a throwaway namespace, on a slot and /30 no
    /// runtime uses.
    #[test]
    fn veth_pair_up_and_removed_over_netlink() {
        let mut ns = Command::new("unshare")
            .args(["-n", "sleep", "30"])
            .spawn()
            .unwrap();
        let pid = ns.id() as i32;
        // Wait until the child really is in a namespace of its own: before that, the peer and
        // the route would land in the host's namespace.
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .ok()
            .as_ref()
            == Some(&own)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "unshare -n never took effect"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let r = super::veth_up(
            "pdk65000",
            pid,
            "10.250.0.1".parse().unwrap(),
            "10.250.0.2".parse().unwrap(),
        );
        let inside = |args: &[&str]| {
            let out = Command::new("nsenter")
                .args(["-t", &pid.to_string(), "-n", "ip", "-4", "-o"])
                .args(args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let host = Command::new("ip")
            .args(["-4", "-o", "addr", "show", "dev", "pdk65000"])
            .output()
            .unwrap();
        let (addr, route) = (inside(&["addr", "show", "dev", "eth0"]), inside(&["route"]));
        super::Net::remove_link(65000);
        let gone = !std::path::Path::new("/sys/class/net/pdk65000").exists();
        let _ = ns.kill();
        let _ = ns.wait();
        r.unwrap();
        assert!(
            String::from_utf8_lossy(&host.stdout).contains("10.250.0.1/30"),
            "{host:?}"
        );
        assert!(addr.contains("10.250.0.2/30"), "{addr}");
        assert!(route.contains("default via 10.250.0.1 dev eth0"), "{route}");
        assert!(gone, "remove_link left pdk65000");
    }
}
