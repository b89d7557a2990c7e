//! Sandbox links over netlink: the veth pair of a sandbox, its check and its removal.

use std::net::Ipv4Addr;

use crate::error::{Result, RuntimeError};

/// Runs `f` with a netlink route connection, on a short-lived thread of its own with a
/// small runtime of its own, inside the network namespace `netns` when given (so no thread
/// that serves anything else ever changes namespace, and callers need no tokio context).
/// Blocks until `f` is done.
pub(super) fn netlink<T, F, Fut>(netns: Option<std::fs::File>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::result::Result<T, String>>,
{
    let nl_err = |e: String| RuntimeError::Io {
        what: "configuring the sandbox link".into(),
        source: std::io::Error::other(e),
    };
    std::thread::Builder::new()
        .name("paddock-netlink".into())
        .spawn(move || -> Result<T> {
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
pub(super) async fn link_index(
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
pub(super) fn veth_up(ifn: &str, pid: i32, h: Ipv4Addr, g: Ipv4Addr) -> Result<()> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(RuntimeError::io("opening the sandbox's network namespace"))?;
    veth_up_in(ifn, ns, h, g, false)
}

/// A fresh network namespace for the stock of network slots (`docs/network.md`), made on a
/// short-lived thread of its own (which inherits the caller's CPU priority) and held only by the returned
/// descriptor: when the last holder closes it, the kernel removes it and the veth pair
/// with it. Loopback is up and the link of `ifn` is made as [`veth_up`] makes it.
pub(super) fn prepared_netns(ifn: &str, h: Ipv4Addr, g: Ipv4Addr) -> Result<std::fs::File> {
    let ns = std::thread::Builder::new()
        .name("paddock-netns".into())
        .spawn(|| -> Result<std::fs::File> {
            crate::sys::unshare_netns()
                .map_err(RuntimeError::io("creating a network namespace"))?;
            std::fs::File::open("/proc/thread-self/ns/net")
                .map_err(RuntimeError::io("opening the new network namespace"))
        })
        .map_err(RuntimeError::io("starting netns thread"))?
        .join()
        .map_err(|_| RuntimeError::io("netns thread")(std::io::Error::other("it panicked")))??;
    veth_up_in(
        ifn,
        ns.try_clone().map_err(RuntimeError::io("netns fd"))?,
        h,
        g,
        true,
    )?;
    Ok(ns)
}

/// [`veth_up`] into the network namespace `ns`, bringing its loopback up first if `lo`.
fn veth_up_in(ifn: &str, ns: std::fs::File, h: Ipv4Addr, g: Ipv4Addr, lo: bool) -> Result<()> {
    use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
    use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
    use std::os::fd::AsRawFd;
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name("eth0".to_owned())
        .setns_by_fd(ns.as_raw_fd())
        .build();
    // Created down and brought up once addressed: asking for IFF_UP at creation with the peer
    // in another namespace fails (ENOTCONN on Linux 6.18).
    let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(ifn.to_owned())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    let ifn = ifn.to_owned();
    let step = |what: &'static str| move |e: rtnetlink::Error| format!("{what}: {e}");
    // `ns` stays open (the message names its descriptor) until the pair exists.
    let inner_ns = ns.try_clone().map_err(RuntimeError::io("netns fd"))?;
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
    drop(ns);
    // The sandbox's side, through a socket made inside its namespace.
    netlink(Some(inner_ns), move |inner| async move {
        if lo {
            let lo = link_index(&inner, "lo")
                .await
                .map_err(step("finding lo"))?
                .ok_or("no loopback in the namespace")?;
            inner
                .link()
                .set(LinkUnspec::new_with_index(lo).up().build())
                .execute()
                .await
                .map_err(step("bringing lo up"))?;
        }
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

/// Host interfaces named like sandbox links (`pdk<slot>`), with their slots.
pub(super) fn host_links() -> Vec<u32> {
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

/// Whether the host has a link of `slot`.
pub(super) fn link_exists(slot: u32) -> bool {
    std::path::Path::new("/sys/class/net")
        .join(super::ifname(slot))
        .exists()
}

/// Deletes the link of `slot` (both ends of the pair go together), if it exists.
pub(super) fn remove_link(slot: u32) {
    let ifn = super::ifname(slot);
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

/// Whether link `index` is up and has address `addr`/30.
async fn addressed_and_up(
    h: &rtnetlink::Handle,
    index: u32,
    addr: Ipv4Addr,
) -> std::result::Result<bool, rtnetlink::Error> {
    use futures::TryStreamExt;
    use rtnetlink::packet_route::address::AddressAttribute;
    use rtnetlink::packet_route::link::LinkFlags;
    let up = h
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await?
        .is_some_and(|m| m.header.flags.contains(LinkFlags::Up));
    let mut addrs = h.address().get().set_link_index_filter(index).execute();
    let mut has = false;
    while let Some(m) = addrs.try_next().await? {
        has |= m.header.prefix_len == 30
            && m.attributes.iter().any(
                |a| matches!(a, AddressAttribute::Address(std::net::IpAddr::V4(x)) if *x == addr),
            );
    }
    Ok(up && has)
}

/// Whether `h`'s namespace has a default route through `gw`.
async fn default_route_via(
    h: &rtnetlink::Handle,
    gw: Ipv4Addr,
) -> std::result::Result<bool, rtnetlink::Error> {
    use futures::TryStreamExt;
    use rtnetlink::RouteMessageBuilder;
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
    let mut routes = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    let mut found = false;
    while let Some(r) = routes.try_next().await? {
        found |= r.header.destination_prefix_length == 0
            && r.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Gateway(RouteAddress::Inet(x)) if *x == gw));
    }
    Ok(found)
}

/// Whether the link of `slot` is whole: `pdk<slot>` up with `h`/30 on the host, and in the
/// network namespace of `pid` `eth0` up with `g`/30 and the default route through `h`.
pub(super) fn link_whole(slot: u32, pid: i32, h: Ipv4Addr, g: Ipv4Addr) -> Result<bool> {
    let ifn = super::ifname(slot);
    let step = |what: &'static str| move |e: rtnetlink::Error| format!("{what}: {e}");
    let host_ok = netlink(None, move |host| async move {
        match link_index(&host, &ifn)
            .await
            .map_err(step("finding the host link"))?
        {
            None => Ok(false),
            Some(i) => addressed_and_up(&host, i, h)
                .await
                .map_err(step("reading the host link")),
        }
    })?;
    if !host_ok {
        return Ok(false);
    }
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(RuntimeError::io("opening the sandbox's network namespace"))?;
    netlink(Some(ns), move |inner| async move {
        let Some(i) = link_index(&inner, "eth0")
            .await
            .map_err(step("finding eth0"))?
        else {
            return Ok(false);
        };
        Ok(addressed_and_up(&inner, i, g)
            .await
            .map_err(step("reading eth0"))?
            && default_route_via(&inner, h)
                .await
                .map_err(step("reading the sandbox's routes"))?)
    })
}

/// Deletes `eth0` in the network namespace of `pid`, if it is there (a pair whose host end
/// was renamed or moved away; `veth_up` needs the name free).
pub(super) fn remove_inner_eth0(pid: i32) -> Result<()> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(RuntimeError::io("opening the sandbox's network namespace"))?;
    netlink(Some(ns), move |inner| async move {
        let del = async {
            if let Some(index) = link_index(&inner, "eth0").await? {
                inner.link().del(index).execute().await?;
            }
            Ok::<_, rtnetlink::Error>(())
        };
        del.await.map_err(|e| format!("deleting eth0: {e}"))
    })
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
        super::remove_link(65000);
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
