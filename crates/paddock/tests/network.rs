//! Network modes against a fake internet (security-tests.md rows D1-D5); the fake internet
//! is described in `fakenet/mod.rs`. The sandboxes' resolver forwards to its DNS server
//! (`dns_upstream`), so nothing is sent to any other address.

mod common;
mod fakenet;
mod server;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{out, root, sh};
use fakenet::{FakeNet, sh_host};
use paddock_core::{NetworkMode, NetworkPolicy};
use paddock_runtime::{CreateSpec, Runtime, RuntimeConfig, Sandbox};
use reqwest::{Method, StatusCode};
use serde_json::json;
use server::{Server, call};

fn runtime() -> Arc<Runtime> {
    static RT: OnceLock<Arc<Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        let tag = std::env::var("PADDOCK_TEST_TAG").unwrap_or_default();
        let mut cfg = RuntimeConfig::new(format!("/var/tmp/paddock-test-network{tag}"));
        cfg.agent_bin = PathBuf::from(env!("CARGO_BIN_EXE_paddock-agent"));
        cfg.dns_upstream = Some("198.51.100.1:53".parse().unwrap());
        Runtime::open(cfg).expect("opening the test runtime")
    })
    .clone()
}

async fn create(p: NetworkPolicy) -> Arc<Sandbox> {
    runtime()
        .create(CreateSpec {
            network: p,
            ..CreateSpec::default()
        })
        .await
        .expect("creating sandbox")
}

/// `python3` one-liners run in the sandbox: fetch a URL (prints the body or `ERR <what>`),
/// resolve a name, send a raw DNS query to a server.
const PROBE: &str = r#"
import socket, sys, urllib.request
what, arg = sys.argv[1], sys.argv[2]
try:
    if what == "get":
        print(urllib.request.urlopen(arg, timeout=3).read().decode().strip())
    elif what == "resolve":
        print(socket.gethostbyname(arg))
    elif what == "resolveall":
        print(",".join(sorted(socket.gethostbyname_ex(arg)[2])))
    elif what == "tcp":
        h, p = arg.rsplit(":", 1)
        socket.create_connection((h, int(p)), timeout=3).close(); print("connected")
    elif what == "dns":
        srv, name = arg.split(",")
        q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\x00\x00\x01\x00\x01"
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); s.sendto(q, (srv, 53)); s.recv(512); print("answered")
    elif what == "dnstcp":
        srv = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
        q = b"\x56\x78\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"".join(bytes([len(l)]) + l.encode() for l in arg.split(".")) + b"\x00\x00\x01\x00\x01"
        s = socket.create_connection((srv, 53), timeout=3); s.sendall(len(q).to_bytes(2, "big") + q)
        f = s.makefile("rb"); r = f.read(int.from_bytes(f.read(2), "big"))
        rcode, ancount = r[3] & 15, int.from_bytes(r[6:8], "big")
        print(socket.inet_ntoa(r[-4:]) if rcode == 0 and ancount else "ERR rcode %d" % rcode)
except Exception as e:
    print("ERR", type(e).__name__)
"#;

async fn probe(s: &Sandbox, what: &str, arg: &str) -> String {
    let r = sh(
        s,
        &format!(
            "python3 -c '{}' {what} '{arg}'",
            PROBE.replace('\'', "'\\''")
        ),
    )
    .await;
    out(&r).trim().to_owned()
}

/// Probes until `done` holds for the result, for at most 15 s; whether it did.
async fn poll_probe(s: &Sandbox, what: &str, arg: &str, done: impl Fn(&str) -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if done(&probe(s, what, arg).await) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The test runtime's instance name (its nftables table is `paddock_<instance>`).
fn instance() -> String {
    let tag = std::env::var("PADDOCK_TEST_TAG").unwrap_or_default();
    std::fs::read_to_string(format!("/var/tmp/paddock-test-network{tag}/instance"))
        .expect("instance name")
        .trim()
        .to_owned()
}

fn assert_blocked(got: &str, what: &str) {
    assert!(
        got.starts_with("ERR"),
        "{what} should be blocked, got {got:?}"
    );
}

/// Every mode against the fake internet, the host, the metadata address and another
/// sandbox, in one sequence (they share the fake internet).
#[tokio::test(flavor = "multi_thread")]
async fn network_modes_against_a_fake_internet() {
    let fake = FakeNet::up();
    let rt = runtime();

    // --- none: nothing, not even DNS.
    let none = create(NetworkPolicy::none()).await;
    assert_blocked(
        &probe(&none, "get", "http://198.51.100.1/none").await,
        "none: IP literal",
    );
    assert_blocked(&probe(&none, "resolve", "allowed.test").await, "none: DNS");
    assert_blocked(
        &probe(&none, "dns", "198.51.100.1,leak-none.test").await,
        "none: direct DNS",
    );
    assert_blocked(
        &probe(&none, "tcp", "198.51.100.1:53").await,
        "none: direct DNS over TCP",
    );
    let r = sh(&none, "awk 'NR>2 {print $1}' /proc/net/dev").await;
    assert_eq!(out(&r), "lo:\n", "{r:?}");

    // --- allow: an allowed name, and nothing else.
    let allow = create(
        NetworkPolicy::new(
            NetworkMode::Allow,
            &["allowed.test".into(), "*.wild.test".into()],
        )
        .unwrap(),
    )
    .await;
    assert_eq!(
        probe(&allow, "get", "http://allowed.test/a").await,
        "host 198.51.100.1"
    );
    assert_eq!(
        probe(&allow, "get", "http://www.wild.test/w").await,
        "host 198.51.100.1"
    );
    assert_blocked(
        &probe(&allow, "resolve", "other.test").await,
        "allow: other name",
    );
    assert_blocked(
        &probe(&allow, "resolve", "wild.test").await,
        "allow: wildcard's parent",
    );
    assert_blocked(
        &probe(&allow, "get", "http://198.51.100.2/literal").await,
        "allow: IP literal",
    );
    // Another resolver is unreachable, so a name cannot be smuggled out through it.
    assert_blocked(
        &probe(&allow, "dns", "198.51.100.2,leak-allow.test").await,
        "allow: direct DNS",
    );
    assert_blocked(
        &probe(&allow, "tcp", "198.51.100.2:53").await,
        "allow: direct DNS over TCP",
    );
    // A Host header naming an allowed site does not open another address.
    let r = sh(
        &allow,
        "python3 -c 'import urllib.request as u; print(u.urlopen(u.Request(\"http://198.51.100.2/spoof\", headers={\"Host\": \"allowed.test\"}), timeout=3).read())' 2>&1 | tail -1",
    )
    .await;
    assert!(!out(&r).contains("host 198.51.100"), "{r:?}");

    // --- allow: an allowed name (here picked by sandbox code under the wildcard) whose
    // answer names a blocked address or the host's uplink opens nothing: those records are
    // dropped from the answer and never pinned.
    for (name, what) in [
        ("meta.wild.test", "metadata"),
        ("lo.wild.test", "loopback"),
        ("gw.wild.test", "the host's gateway"),
        ("lan.wild.test", "the host's connected subnet"),
    ] {
        assert_blocked(
            &probe(&allow, "resolveall", name).await,
            &format!("allow: a name answering {what}"),
        );
    }
    assert_eq!(
        probe(&allow, "resolveall", "mixed.wild.test").await,
        "198.51.100.1",
        "only the public address of a mixed answer"
    );
    for target in [
        "169.254.169.254:80",
        "198.51.100.129:80",
        "198.51.100.130:80",
    ] {
        assert_blocked(
            &probe(&allow, "tcp", target).await,
            &format!("allow: {target} after resolving a name answering it"),
        );
    }
    // The sandbox's elements of the allow set (`"pdk<slot>" . <range>`).
    let pinned: String = sh_host(&format!("nft list set inet paddock_{} allow", instance()))
        .split([',', '{', '}', '\n'])
        .filter(|e| e.contains(&format!("\"pdk{}\"", allow.slot)))
        .collect::<Vec<_>>()
        .join(",");
    for bad in [
        "169.254.169.254",
        "127.0.0.1",
        "10.0.0.5",
        "198.51.100.129",
        "198.51.100.130",
    ] {
        assert!(!pinned.contains(bad), "{bad} pinned: {pinned}");
    }

    // --- allow, DNS over TCP: the same policy, forwarded over TCP, and an answer pins its
    // addresses as over UDP.
    let tcp =
        create(NetworkPolicy::new(NetworkMode::Allow, &["tcp-only.test".into()]).unwrap()).await;
    assert_blocked(
        &probe(&tcp, "get", "http://198.51.100.2/tcp-before").await,
        "allow: before the name was resolved over TCP",
    );
    assert_eq!(probe(&tcp, "dnstcp", "tcp-only.test").await, "198.51.100.2");
    assert_eq!(
        probe(&tcp, "get", "http://198.51.100.2/tcp-after").await,
        "host 198.51.100.2"
    );
    assert_blocked(
        &probe(&tcp, "dnstcp", "leak-tcp.test").await,
        "allow: other name over TCP",
    );

    // --- allow with a CIDR. Listing a blocked range opens it, also for names answering it.
    let cidr = create(
        NetworkPolicy::new(
            NetworkMode::Allow,
            &[
                "198.51.100.2/32".into(),
                "169.254.169.254/32".into(),
                "meta.wild.test".into(),
            ],
        )
        .unwrap(),
    )
    .await;
    assert_eq!(
        probe(&cidr, "resolveall", "meta.wild.test").await,
        "169.254.169.254"
    );
    assert_eq!(
        probe(&cidr, "get", "http://198.51.100.2/cidr").await,
        "host 198.51.100.2"
    );
    assert_blocked(
        &probe(&cidr, "get", "http://198.51.100.1/cidr").await,
        "cidr: other address",
    );
    assert_blocked(
        &probe(&cidr, "resolve", "allowed.test").await,
        "cidr: names",
    );

    // --- all: the fake internet, but not the host, the metadata service or a sandbox.
    let all = create(NetworkPolicy::all()).await;
    assert_eq!(
        probe(&all, "get", "http://other.test/all").await,
        "host 198.51.100.2"
    );
    assert_eq!(
        probe(&all, "get", "http://198.51.100.1/all").await,
        "host 198.51.100.1"
    );
    assert_blocked(
        &probe(&all, "get", "http://169.254.169.254/latest/meta-data/").await,
        "all: metadata",
    );
    let gw = paddock_runtime::net::host_addr(all.slot);
    // The host's own addresses, its uplink's router and a neighbour on its directly
    // connected (public) uplink subnet.
    for target in [
        format!("{gw}:18765"),
        "198.51.100.254:18765".to_owned(),
        "10.200.0.1:18765".to_owned(),
        "198.51.100.129:80".to_owned(),
        "198.51.100.130:80".to_owned(),
    ] {
        assert_blocked(
            &probe(&all, "tcp", &target).await,
            &format!("all: host {target}"),
        );
    }
    // The host's real uplink and default gateway are in the set too (read, never probed:
    // tests touch no network but their own).
    let hostnets = sh_host(&format!(
        "nft list set inet paddock_{} hostnets",
        instance()
    ));
    let default_gw = sh_host("ip -4 route show default | awk '{print $3; exit}'");
    let default_gw = default_gw.trim();
    if let Ok(ip) = default_gw.parse::<std::net::Ipv4Addr>() {
        assert!(
            rt.network_hostnets().iter().any(|c| c.contains(ip)),
            "default gateway {ip} not blocked: {hostnets}"
        );
    }
    assert!(hostnets.contains("198.51.100.128/25"), "{hostnets}");
    // A route added while running is picked up: 198.51.100.77 is internet (through the
    // router) until a route makes its /26 directly connected, and again once it is gone.
    assert_eq!(
        probe(&all, "get", "http://198.51.100.77/before-route").await,
        "host 198.51.100.77"
    );
    sh_host("ip route add 198.51.100.64/26 dev pdkfakeh");
    let now_blocked = poll_probe(&all, "tcp", "198.51.100.77:80", |g| g.starts_with("ERR")).await;
    sh_host("ip route del 198.51.100.64/26 dev pdkfakeh");
    assert!(
        now_blocked,
        "a directly connected route added after start was not blocked"
    );
    assert!(
        poll_probe(&all, "get", "http://198.51.100.77/after-route", |g| g
            == "host 198.51.100.77")
        .await,
        "the route's removal was not picked up"
    );

    // The sandbox's own loopback is its own: nothing of the host's is there.
    assert_blocked(
        &probe(&all, "tcp", "127.0.0.1:18765").await,
        "all: host loopback",
    );
    // Another sandbox's listener.
    let r = root(
        &cidr,
        "nohup python3 -m http.server 8080 >/dev/null 2>&1 & sleep 0.5",
    )
    .await;
    assert_eq!(r.exit_code, Some(0));
    let peer = paddock_runtime::net::sandbox_addr(cidr.slot);
    assert_blocked(
        &probe(&all, "tcp", &format!("{peer}:8080")).await,
        "all: other sandbox",
    );
    let peer_none = format!("{}:8080", paddock_runtime::net::sandbox_addr(none.slot));
    assert_blocked(
        &probe(&all, "tcp", &peer_none).await,
        "all: none-mode sandbox",
    );

    // --- changing a policy while running.
    rt.set_network(none.id.as_str(), NetworkPolicy::all())
        .await
        .unwrap();
    assert_eq!(
        probe(&none, "get", "http://198.51.100.1/now-all").await,
        "host 198.51.100.1"
    );
    rt.set_network(
        none.id.as_str(),
        NetworkPolicy::new(NetworkMode::Allow, &["allowed.test".into()]).unwrap(),
    )
    .await
    .unwrap();
    assert_blocked(
        &probe(&none, "get", "http://198.51.100.2/now-allow").await,
        "changed to allow",
    );
    assert_eq!(
        probe(&none, "get", "http://allowed.test/now-allow").await,
        "host 198.51.100.1"
    );
    rt.set_network(none.id.as_str(), NetworkPolicy::none())
        .await
        .unwrap();
    assert_blocked(
        &probe(&none, "get", "http://198.51.100.1/back-to-none").await,
        "back to none",
    );

    // What reached the fake internet and the host.
    let dns = fake.log("dns.log");
    assert!(!dns.contains("leak-"), "a direct DNS query got out: {dns}");
    assert!(
        dns.contains("tcp tcp-only.test\n"),
        "not forwarded over TCP: {dns}"
    );
    assert!(
        !dns.contains("other.test\nwild.test") && dns.contains("allowed.test"),
        "{dns}"
    );
    assert_eq!(
        fake.log("probe.log"),
        "",
        "the host or metadata service was reached"
    );
    let web = fake.log("web.log");
    for bad in [
        "/none",
        "/literal",
        "/spoof",
        "/tcp-before",
        "/back-to-none",
        "/now-allow\n198.51.100.2",
    ] {
        assert!(!web.contains(bad), "{bad} reached the fake internet: {web}");
    }

    // While the table exists, a networked create and destroy run no `nft` (the sandbox's
    // elements go over netlink), and what a sandbox pinned goes with it.
    let before = paddock_runtime::net::nft_runs();
    let quick =
        create(NetworkPolicy::new(NetworkMode::Allow, &["allowed.test".into()]).unwrap()).await;
    assert_eq!(
        probe(&quick, "get", "http://allowed.test/quick").await,
        "host 198.51.100.1"
    );
    let quick_slot = quick.slot;
    rt.destroy(quick.id.as_str()).await.unwrap();
    assert_eq!(
        paddock_runtime::net::nft_runs(),
        before,
        "a networked create, pin or destroy ran nft"
    );
    let allowed = sh_host(&format!("nft list set inet paddock_{} allow", instance()));
    assert!(
        !allowed.contains(&format!("\"pdk{quick_slot}\"")),
        "a destroyed sandbox's allowed addresses stayed: {allowed}"
    );

    // A link that vanished (its sandbox died behind the runtime's back) leaves no name in
    // the table: another runtime may make a link of that name next.
    let dying = create(NetworkPolicy::all()).await;
    let ifn = format!("\"pdk{}\"", dying.slot);
    let ifs = || sh_host(&format!("nft list set inet paddock_{} ifs", instance()));
    assert!(ifs().contains(&ifn), "{}", ifs());
    sh_host(&format!("kill -9 {}", dying.pid));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ifs().contains(&ifn) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !std::path::Path::new(&format!("/sys/class/net/pdk{}", dying.slot)).exists(),
        "the dead sandbox's link is still there"
    );
    assert!(
        !ifs().contains(&ifn),
        "a vanished link stays named: {}",
        ifs()
    );

    // Destroy leaves no link, rule or resolver behind.
    let slots: Vec<u32> = [&none, &allow, &tcp, &cidr, &all, &dying]
        .iter()
        .map(|s| s.slot)
        .collect();
    for s in [none, allow, tcp, cidr, all, dying] {
        rt.destroy(s.id.as_str()).await.unwrap();
    }
    assert_no_network_objects(&slots);
    stocked_slots_match_cold_networks().await;
    drop(fake);
}

/// What a networked sandbox sees of its network, with its own addresses, hex gateway and
/// id replaced by placeholders: resolv.conf, hostname, interfaces, routes, eth0's address,
/// neighbours and conntrack-free state, and its namespace's forwarding knobs.
async fn network_view(s: &Sandbox) -> String {
    let v = sh(
        s,
        "cat /etc/resolv.conf; hostname; awk 'NR>2 {print $1}' /proc/net/dev; cat /proc/net/route; \
         python3 -c 'import socket, fcntl, struct; s = socket.socket(); print(socket.inet_ntoa(fcntl.ioctl(s, 0x8915, struct.pack(\"256s\", b\"eth0\"))[20:24]))'; \
         cat /proc/net/arp; cat /proc/sys/net/ipv4/ip_forward",
    )
    .await;
    // What its root may do to the namespace (nothing: it belongs to the host's user
    // namespace), and that no descriptor of a namespace reached PID 1.
    let r = root(
        s,
        "python3 -c 'import socket, fcntl, struct; s = socket.socket()
try:
    fcntl.ioctl(s, 0x8922, struct.pack(\"16si\", b\"eth0\", 1400)); print(\"mtu changed\")
except OSError as e:
    print(\"mtu\", e.errno)'; ls -l /proc/1/fd | grep -c 'net:'",
    )
    .await;
    let r = out(&r);
    let (h, g) = (
        paddock_runtime::net::host_addr(s.slot),
        paddock_runtime::net::sandbox_addr(s.slot),
    );
    let hex = |ip: std::net::Ipv4Addr| format!("{:08X}", u32::from_le_bytes(ip.octets()));
    let net = std::net::Ipv4Addr::from(u32::from(h) - 1);
    format!("{}{r}", out(&v))
        .replace(&h.to_string(), "HOST")
        .replace(&g.to_string(), "SANDBOX")
        .replace(&hex(h), "HOSTHEX")
        .replace(&hex(net), "NETHEX")
        .replace(s.id.as_str(), "ID")
}

/// A sandbox on a prepared network slot (`--net-slots`) sees exactly what a cold networked
/// one sees, its policy holds, a take counts as a hit, and closing the runtime leaves no
/// stocked namespace, link, claim or marker behind.
async fn stocked_slots_match_cold_networks() {
    let tag = std::env::var("PADDOCK_TEST_TAG").unwrap_or_default();
    let dir = PathBuf::from(format!("/var/tmp/paddock-test-network-stock{tag}"));
    let mut cfg = RuntimeConfig::new(dir.clone());
    cfg.agent_bin = PathBuf::from(env!("CARGO_BIN_EXE_paddock-agent"));
    cfg.dns_upstream = Some("198.51.100.1:53".parse().unwrap());
    cfg.net_slots = 2;
    let stocked = Runtime::open(cfg).expect("opening a runtime with a stock");
    let ready = |n: usize| {
        let stocked = stocked.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while stocked.net_slot_stats().ready < n {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the stock never reached {n}: {:?}",
                    stocked.net_slot_stats()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    ready(2).await;
    let cold = create(NetworkPolicy::all()).await;
    let warm = stocked
        .create(CreateSpec {
            network: NetworkPolicy::all(),
            ..CreateSpec::default()
        })
        .await
        .expect("creating on a stocked slot");
    let stats = stocked.net_slot_stats();
    assert_eq!((stats.hits, stats.misses), (1, 0), "{stats:?}");
    let (vc, vw) = (network_view(&cold).await, network_view(&warm).await);
    assert!(vw.contains("eth0:") && vw.contains("SANDBOX"), "{vw}");
    assert!(vw.ends_with("mtu 1\n0\n"), "{vw}");
    assert_eq!(vc, vw, "a stocked slot's sandbox sees another network");
    // Its policy holds: the internet yes, the metadata address no, names through its resolver.
    assert_eq!(
        probe(&warm, "get", "http://198.51.100.1/stocked").await,
        "host 198.51.100.1"
    );
    assert_blocked(
        &probe(&warm, "get", "http://169.254.169.254/stocked").await,
        "stocked all: metadata",
    );
    assert_eq!(
        probe(&warm, "resolve", "allowed.test").await,
        "198.51.100.1"
    );
    // `allow` on a stocked slot: the allowed name only.
    ready(1).await;
    let allow = stocked
        .create(CreateSpec {
            network: NetworkPolicy::new(NetworkMode::Allow, &["allowed.test".into()]).unwrap(),
            ..CreateSpec::default()
        })
        .await
        .expect("creating on a stocked slot");
    assert_eq!(stocked.net_slot_stats().hits, 2);
    assert_eq!(
        probe(&allow, "get", "http://allowed.test/stocked").await,
        "host 198.51.100.1"
    );
    assert_blocked(
        &probe(&allow, "get", "http://198.51.100.2/stocked").await,
        "stocked allow: IP literal",
    );
    let used = [warm.slot, allow.slot];
    for s in [warm, allow] {
        stocked.destroy(s.id.as_str()).await.unwrap();
    }
    runtime().destroy(cold.id.as_str()).await.unwrap();
    assert_no_network_objects(&used);
    // Closing releases the stock: no marker, claim or link of a stocked slot stays.
    ready(2).await;
    let markers: Vec<u32> = std::fs::read_dir(dir.join("netslots"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    assert_eq!(markers.len(), 2, "{markers:?}");
    stocked.close().unwrap();
    drop(stocked);
    assert_eq!(std::fs::read_dir(dir.join("netslots")).unwrap().count(), 0);
    assert_no_network_objects(&markers);
}

/// No link, nftables chain or set, and no resolver socket of these slots remains. Called
/// once every sandbox of the caller is gone, so a slot claimed now is another runtime's
/// (the two tests here run at once and slots are host-wide): it is skipped.
fn assert_no_network_objects(slots: &[u32]) {
    let links = sh_host("ls /sys/class/net");
    let rules = sh_host("nft list ruleset");
    let sockets = sh_host("ss -Hltun 2>/dev/null || true");
    for slot in slots {
        if std::path::Path::new(&format!("/run/paddock/uid-slots/{slot}")).exists() {
            continue;
        }
        assert!(
            !links.lines().any(|l| l == format!("pdk{slot}")),
            "link pdk{slot} left behind"
        );
        assert!(
            !rules.contains(&format!("\"pdk{slot}\"")),
            "rules of slot {slot} left behind:\n{rules}"
        );
        let addr = paddock_runtime::net::host_addr(*slot).to_string();
        assert!(
            !sockets.contains(&format!("{addr}:53")),
            "resolver of slot {slot} left behind"
        );
    }
}

/// The slot of a sandbox from its address (`10.200.0.0 + 4 * slot + 2`).
fn slot_of(addr: &str) -> u32 {
    let ip: std::net::Ipv4Addr = addr.parse().expect("address");
    (u32::from(ip) - u32::from(std::net::Ipv4Addr::new(10, 200, 0, 0)) - 2) / 4
}

fn table_exists(s: &Server) -> bool {
    let inst = std::fs::read_to_string(s.data.join("instance")).unwrap();
    Command::new("nft")
        .args(["list", "table", "inet", &format!("paddock_{}", inst.trim())])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|st| st.success())
}

/// Through the API: policies at create and changed while running, bad input refused, and
/// after a `kill -9` of the server the adopted sandboxes keep their network (resolver
/// restarted) while a sandbox that died meanwhile leaves nothing; destroying the rest
/// removes every link, rule, resolver and finally the runtime's table.
#[tokio::test(flavor = "multi_thread")]
async fn network_api_and_cleanup_after_kill_9() {
    let mut s = Server::start(&["--dns-upstream", "127.0.0.1:9"]);
    // Bad policies are refused and create nothing.
    for bad in [
        json!({"mode": "some"}),
        json!({"mode": "allow", "allow": ["10.0.0.1/8"]}),
        json!({"mode": "none", "allow": ["1.2.3.4"]}),
        json!({"mode": "all", "allow": ["example.com"]}),
        json!({"mode": "allow", "allow": ["fd00::/8"]}),
    ] {
        let (st, v) = call(
            s.req(Method::POST, "/v1/sandboxes")
                .json(&json!({"network": bad})),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    let a = s.create(json!({"network": {"mode": "all"}})).await;
    let b = s
        .create(json!({"network": {"mode": "allow", "allow": ["example.test", "10.9.0.0/16"]}}))
        .await;
    let c = s.create(json!({})).await;
    // d's network will not be restorable after the crash (its resolver address taken).
    let d = s.create(json!({"network": {"mode": "all"}})).await;
    let idd = d["id"].as_str().unwrap().to_owned();
    let (_, nd) = call(s.req(Method::GET, &format!("/v1/sandboxes/{idd}/network"))).await;
    let slot_d = slot_of(nd["address"].as_str().unwrap());
    assert_eq!(a["network"], json!({"mode": "all", "allow": []}));
    assert_eq!(
        b["network"]["allow"],
        json!(["10.9.0.0/16", "example.test"])
    );
    assert_eq!(c["network"], json!({"mode": "none", "allow": []}));
    let id = |v: &serde_json::Value| v["id"].as_str().unwrap().to_owned();
    let (ida, idb, idc) = (id(&a), id(&b), id(&c));
    let (st, na) = call(s.req(Method::GET, &format!("/v1/sandboxes/{ida}/network"))).await;
    assert_eq!(st, StatusCode::OK, "{na}");
    let (st, nc) = call(s.req(Method::GET, &format!("/v1/sandboxes/{idc}/network"))).await;
    assert_eq!(
        (st, &nc["address"]),
        (StatusCode::OK, &serde_json::Value::Null)
    );
    // c joins the network while running; b leaves it.
    let (st, nc) = call(
        s.req(Method::PUT, &format!("/v1/sandboxes/{idc}/network"))
            .json(&json!({"mode": "allow", "allow": ["1.2.3.4"]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{nc}");
    let (st, nb) = call(
        s.req(Method::PUT, &format!("/v1/sandboxes/{idb}/network"))
            .json(&json!({"mode": "none"})),
    )
    .await;
    assert_eq!(
        (st, &nb["address"]),
        (StatusCode::OK, &serde_json::Value::Null),
        "{nb}"
    );
    let slot_a = slot_of(na["address"].as_str().unwrap());
    let slot_c = slot_of(nc["address"].as_str().unwrap());
    let links = || sh_host("ls /sys/class/net");
    assert!(links().lines().any(|l| l == format!("pdk{slot_a}")));
    assert!(links().lines().any(|l| l == format!("pdk{slot_c}")));
    assert!(table_exists(&s));

    // kill -9; c dies while the server is down.
    s.kill9();
    for pid in server::processes_of(&idc) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    // Tearing down a pid namespace can take seconds on a loaded machine; restart only once
    // c is really gone, or it would (rightly) be adopted.
    for _ in 0..400 {
        if server::processes_of(&idc).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        server::processes_of(&idc).is_empty(),
        "sandbox {idc} did not die"
    );
    // While the server is down, a's link vanishes (what a crash between recording a
    // sandbox and making its link leaves), and someone takes d's resolver address.
    sh_host(&format!("ip link del pdk{slot_a}"));
    let mut squatter = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('{}', 53)); print('bound', flush=True); time.sleep(300)",
                paddock_runtime::net::host_addr(slot_d)
            ),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(squatter.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "bound\n");
    s.restart();
    let _ = squatter.kill();
    let _ = squatter.wait();
    // `paddock ps` on the same data directory while the server runs leaves the server's
    // network alone (its resolvers hold their addresses: not a reason to fail anything).
    let ps = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .arg("ps")
        .arg("--data-dir")
        .arg(&s.data)
        .env("PADDOCK_AGENT_BIN", env!("CARGO_BIN_EXE_paddock-agent"))
        .output()
        .unwrap();
    assert!(ps.status.success(), "{ps:?}");
    assert!(String::from_utf8_lossy(&ps.stdout).contains(&ida), "{ps:?}");
    // d could not get its network back: failed, destroyed, never running.
    let (_, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{idd}"))).await;
    assert_eq!(
        (v["state"].as_str(), v["stop_reason"].as_str()),
        (Some("stopped"), Some("failed")),
        "{v}"
    );
    assert_eq!(server::leftovers(&idd), Vec::<String>::new());
    // a was adopted with its network re-created: link, rules, resolv.conf and a resolver
    // that answers.
    assert!(
        links().lines().any(|l| l == format!("pdk{slot_a}")),
        "a's link not re-created"
    );
    let (st, r) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{ida}/exec"))
            .json(&json!({"cmd": ["cat", "/etc/resolv.conf"]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    let want = format!("nameserver {}", paddock_runtime::net::host_addr(slot_a));
    assert!(
        r["stdout"].as_str().unwrap_or_default().contains(&want),
        "{r}"
    );
    let (st, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{ida}"))).await;
    assert_eq!(
        (st, v["state"].as_str()),
        (StatusCode::OK, Some("running")),
        "{v}"
    );
    // This server's table only: the other test's runtime may have taken the dead sandbox's
    // slot meanwhile (slots are host-wide).
    let inst = std::fs::read_to_string(s.data.join("instance")).unwrap();
    let rules = sh_host(&format!("nft list table inet paddock_{}", inst.trim()));
    assert!(
        !rules.contains(&format!("\"pdk{slot_c}\"")),
        "dead sandbox's rules kept: {rules}"
    );
    assert!(rules.contains(&format!("\"pdk{slot_a}\"")), "{rules}");
    assert!(
        std::path::Path::new(&format!("/run/paddock/uid-slots/{slot_c}")).exists()
            || !links().lines().any(|l| l == format!("pdk{slot_c}")),
        "dead sandbox's link kept"
    );
    let (st, r) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{ida}/exec"))
            .json(&json!({"cmd": ["python3", "-c", "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5); q = bytes.fromhex('12340100000100000000000007626c6f636b656404746573740000010001'); s.sendto(q, (open('/etc/resolv.conf').read().split('nameserver ')[1].split()[0], 53)); print(s.recv(512)[3] & 15)"]})),
    )
    .await;
    // The restarted resolver answers: mode all forwards to the dead upstream 127.0.0.1:9,
    // which it reports as SERVFAIL (rcode 2) at once. Without a resolver the query would
    // time out (input is dropped, not rejected).
    assert_eq!(
        (st, r["stdout"].as_str()),
        (StatusCode::OK, Some("2\n")),
        "{r}"
    );

    // Destroy the rest: nothing of any of them remains, and neither does the table.
    for i in [&ida, &idb] {
        let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{i}"))).await;
        assert_eq!(st, StatusCode::NO_CONTENT);
    }
    assert_no_network_objects(&[slot_a, slot_c, slot_d]);
    // Gone within the grace period that spares a burst of creates rewriting it.
    let within = paddock_runtime::net::TABLE_IDLE_GRACE + Duration::from_secs(10);
    server::eventually(
        within,
        "the runtime's nftables table to go with its last sandbox",
        || async {
            if table_exists(&s) {
                Err("it is still there")
            } else {
                Ok(())
            }
        },
    )
    .await;
}

/// The table outlives the last networked sandbox by a grace period only while its runtime
/// lives: a runtime dropped with no networked sandbox left deletes it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_runtime_takes_its_idle_table() {
    let tag = std::env::var("PADDOCK_TEST_TAG").unwrap_or_default();
    let dir = PathBuf::from(format!("/var/tmp/paddock-test-network-drop{tag}"));
    let mut cfg = RuntimeConfig::new(dir.clone());
    cfg.agent_bin = PathBuf::from(env!("CARGO_BIN_EXE_paddock-agent"));
    cfg.dns_upstream = Some("127.0.0.1:9".parse().unwrap());
    let rt = Runtime::open(cfg).expect("opening a second runtime");
    let inst = std::fs::read_to_string(dir.join("instance")).unwrap();
    let table = format!("paddock_{}", inst.trim());
    let exists = || {
        Command::new("nft")
            .args(["list", "table", "inet", &table])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|st| st.success())
    };
    let s = rt
        .create(CreateSpec {
            network: NetworkPolicy::all(),
            ..CreateSpec::default()
        })
        .await
        .expect("creating sandbox");
    assert!(exists(), "no table while a networked sandbox runs");
    rt.destroy(s.id.as_str()).await.unwrap();
    drop(s);
    drop(rt);
    assert!(!exists(), "the dropped runtime's table {table} stayed");
    // Leave nothing of the instance (its cgroups, its layer image's mount).
    let mut cfg = RuntimeConfig::new(dir);
    cfg.agent_bin = PathBuf::from(env!("CARGO_BIN_EXE_paddock-agent"));
    Runtime::open(cfg).unwrap().close().unwrap();
}

/// The slots a server's stock holds now (its marker files).
fn stock_markers(s: &Server) -> Vec<u32> {
    std::fs::read_dir(s.data.join("netslots"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A server's stock of network slots after `kill -9`: the kernel takes the stocked
/// namespaces and their links with the process, and the restart releases the markers and
/// claims the crash left, stocking afresh; `/metrics` counts a networked create's hit.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_leaves_no_stocked_network_slot() {
    let mut s = Server::start(&["--dns-upstream", "127.0.0.1:9", "--net-slots", "2"]);
    let full = |s: &Server| {
        // A marker is written before its slot's link is made.
        let m = stock_markers(s);
        let linked = m
            .iter()
            .all(|slot| std::path::Path::new(&format!("/sys/class/net/pdk{slot}")).exists());
        if m.len() == 2 && linked {
            Ok(m)
        } else {
            Err(format!("{m:?}"))
        }
    };
    let before = server::eventually_blocking(Duration::from_secs(30), "a full stock", || full(&s));
    s.kill9();
    server::eventually_blocking(
        Duration::from_secs(30),
        "the crashed stock's links to go",
        || match before
            .iter()
            .find(|slot| std::path::Path::new(&format!("/sys/class/net/pdk{slot}")).exists())
        {
            Some(slot) => Err(format!("pdk{slot} is still there")),
            None => Ok(()),
        },
    );
    s.restart();
    let after = server::eventually_blocking(Duration::from_secs(30), "a full stock", || full(&s));
    // No marker of the crash is left beside the new stock's, and every claim of a marker is
    // the marker's.
    for slot in &after {
        let claim = std::fs::read_to_string(format!("/run/paddock/uid-slots/{slot}")).unwrap();
        assert_eq!(
            std::path::Path::new(&claim),
            s.data.join("netslots").join(slot.to_string())
        );
    }
    for slot in before.iter().filter(|b| !after.contains(b)) {
        let claim =
            std::fs::read_to_string(format!("/run/paddock/uid-slots/{slot}")).unwrap_or_default();
        assert!(
            !claim.contains("netslots"),
            "slot {slot}'s claim by a crashed stock stayed"
        );
    }
    let sbx = s.create(json!({"network": {"mode": "all"}})).await;
    let metrics = s
        .req(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("paddock_net_slot_hits_total 1")
            && metrics.contains("paddock_net_slot_misses_total 0")
            && metrics.contains("paddock_net_slots_target 2"),
        "{metrics}"
    );
    let id = sbx["id"].as_str().unwrap();
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    s.stop();
    assert!(stock_markers(&s).is_empty(), "a clean stop left markers");
}
