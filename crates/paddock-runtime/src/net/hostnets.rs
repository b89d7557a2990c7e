//! The host's own networks, which no sandbox reaches in any mode: its addresses, every
//! subnet directly connected to it and the gateways of its routes, read from the kernel
//! over netlink at start and again whenever an address, route or link changes (a thread
//! subscribed to rtnetlink's IPv4 address, IPv4 route and link groups). They go into the
//! table's set `hostnets`; whatever the fixed blocked ranges already cover is left out, so
//! sandbox links (`10.200.0.0/16`) changing never rewrites the set.
//!
//! The same thread prunes the interface elements (`ifs`, `dns_ok`) of sandbox links
//! that vanished (a sandbox whose namespace died): the table names only links that exist.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{OnceLock, Weak};
use std::time::Duration;

use paddock_core::Cidr;

use super::Shared;
use crate::error::{Result, RuntimeError};

/// Shortest prefix a directly connected network may have to count as one: shorter ones
/// (`0.0.0.0/1` of a VPN, `default dev ppp0`) are catch-alls, not a subnet next to the host.
pub const MIN_CONNECTED_PREFIX: u8 = 8;

/// How long the monitor gathers a burst of change notifications before it re-reads.
const COALESCE: Duration = Duration::from_millis(20);
/// Longest the first read of the host's networks may take.
const FIRST_READ: Duration = Duration::from_secs(10);

/// The fixed blocked ranges, parsed.
pub(super) fn blocked() -> &'static [Cidr] {
    static B: OnceLock<Vec<Cidr>> = OnceLock::new();
    B.get_or_init(|| {
        super::BLOCKED
            .iter()
            .map(|c| c.parse().expect("BLOCKED entries are CIDRs"))
            .collect()
    })
}

/// Whether network `inner` lies inside network `outer`.
fn covers(outer: &Cidr, inner: &Cidr) -> bool {
    outer.prefix <= inner.prefix && outer.contains(inner.addr)
}

/// `addr/prefix` with its host bits cleared.
fn network(addr: Ipv4Addr, prefix: u8) -> Cidr {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    Cidr {
        addr: Ipv4Addr::from(u32::from(addr) & mask),
        prefix: prefix.min(32),
    }
}

/// The networks of `found` not covered by the blocked ranges, none inside another (an
/// interval set refuses overlapping elements), sorted.
pub(super) fn normalize(mut found: Vec<Cidr>) -> Vec<Cidr> {
    found.sort_by_key(|c| (c.prefix, c.addr));
    let mut out: Vec<Cidr> = Vec::new();
    for c in found {
        if blocked().iter().any(|b| covers(b, &c)) || out.iter().any(|o| covers(o, &c)) {
            continue;
        }
        out.push(c);
    }
    out.sort();
    out
}

/// Whether `ip` is a host network or in a blocked range.
pub(super) fn is_blocked(ip: Ipv4Addr, hostnets: &[Cidr]) -> bool {
    blocked().iter().chain(hostnets).any(|c| c.contains(ip))
}

/// The host's addresses, connected subnets and route gateways (IPv4), normalized.
async fn read(h: &rtnetlink::Handle) -> std::result::Result<Vec<Cidr>, rtnetlink::Error> {
    use futures::TryStreamExt;
    use rtnetlink::RouteMessageBuilder;
    use rtnetlink::packet_route::AddressFamily;
    use rtnetlink::packet_route::address::AddressAttribute;
    use rtnetlink::packet_route::route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteScope, RouteType,
    };
    let mut found = Vec::new();
    let mut addrs = h.address().get().execute();
    while let Some(m) = addrs.try_next().await? {
        if m.header.family != AddressFamily::Inet {
            continue;
        }
        for a in &m.attributes {
            if let AddressAttribute::Address(IpAddr::V4(ip))
            | AddressAttribute::Local(IpAddr::V4(ip)) = a
            {
                found.push(network(*ip, 32));
                if m.header.prefix_len >= MIN_CONNECTED_PREFIX {
                    found.push(network(*ip, m.header.prefix_len));
                }
            }
        }
    }
    let gateway = |attrs: &[RouteAttribute]| {
        attrs.iter().find_map(|a| match a {
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
            _ => None,
        })
    };
    let mut routes = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(r) = routes.try_next().await? {
        let table = r
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(r.header.table));
        if table != u32::from(RouteHeader::RT_TABLE_MAIN) || r.header.kind != RouteType::Unicast {
            continue;
        }
        let mut gateways: Vec<Ipv4Addr> = gateway(&r.attributes).into_iter().collect();
        for a in &r.attributes {
            if let RouteAttribute::MultiPath(hops) = a {
                gateways.extend(hops.iter().filter_map(|h| gateway(&h.attributes)));
            }
        }
        let prefix = r.header.destination_prefix_length;
        if gateways.is_empty()
            && r.header.scope == RouteScope::Link
            && prefix >= MIN_CONNECTED_PREFIX
        {
            let dst = r
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(*d),
                    _ => None,
                })
                .unwrap_or(Ipv4Addr::UNSPECIFIED);
            found.push(network(dst, prefix));
        }
        found.extend(gateways.into_iter().map(|g| network(g, 32)));
    }
    Ok(normalize(found))
}

/// Starts the thread that keeps `shared`'s host networks current and returns their first
/// reading. The thread ends with the next notification after `shared` is gone.
pub(super) fn start_monitor(shared: Weak<Shared>) -> Result<Vec<Cidr>> {
    use rtnetlink::MulticastGroup;
    let (tx, rx) = std::sync::mpsc::channel::<std::result::Result<Vec<Cidr>, String>>();
    std::thread::Builder::new()
        .name("paddock-hostnets".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(format!("netlink runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                use futures::StreamExt;
                let (conn, handle, mut changes) = match rtnetlink::new_multicast_connection(&[
                    MulticastGroup::Link,
                    MulticastGroup::Ipv4Ifaddr,
                    MulticastGroup::Ipv4Route,
                ]) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(format!("subscribing to route changes: {e}")));
                        return;
                    }
                };
                tokio::spawn(conn);
                // Subscribed before the first read, so no change between the two is missed.
                match read(&handle).await {
                    Ok(n) => {
                        let _ = tx.send(Ok(n));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("reading the host's routes: {e}")));
                        return;
                    }
                }
                while changes.next().await.is_some() {
                    while let Ok(Some(_)) = tokio::time::timeout(COALESCE, changes.next()).await {}
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    match read(&handle).await {
                        Ok(n) => shared.set_hostnets(n),
                        Err(e) => tracing::warn!("re-reading the host's routes: {e}"),
                    }
                    shared.prune_vanished_links();
                }
            });
        })
        .map_err(RuntimeError::io("starting the route monitor"))?;
    rx.recv_timeout(FIRST_READ)
        .map_err(|_| RuntimeError::Io {
            what: "starting the route monitor".into(),
            source: std::io::ErrorKind::TimedOut.into(),
        })?
        .map_err(|e| RuntimeError::Io {
            what: "reading the host's routes".into(),
            source: std::io::Error::other(e),
        })
}

/// The host networks in nftables element syntax.
pub(super) fn elements(nets: &[Cidr]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn normalize_drops_blocked_and_nested_networks() {
        let got = normalize(vec![
            c("127.0.0.1/32"),
            c("10.200.0.1/32"),
            c("10.200.0.0/30"),
            c("192.0.2.2/32"),
            c("192.0.2.0/24"),
            c("192.0.2.1/32"),
            c("198.51.100.254/32"),
            c("198.51.100.128/25"),
            c("203.0.113.7/32"),
        ]);
        assert_eq!(
            got,
            vec![
                c("192.0.2.0/24"),
                c("198.51.100.128/25"),
                c("203.0.113.7/32")
            ]
        );
        assert!(is_blocked("169.254.169.254".parse().unwrap(), &got));
        assert!(is_blocked("192.0.2.9".parse().unwrap(), &got));
        assert!(!is_blocked("198.51.100.1".parse().unwrap(), &got));
        assert_eq!(
            network("198.51.100.254".parse().unwrap(), 25),
            c("198.51.100.128/25")
        );
    }
}
