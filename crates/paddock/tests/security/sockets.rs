//! Row B, network side: raw sockets, socket address families and the x32 syscall ABI.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b8_raw_sockets_are_denied() {
    // On gVisor the Sentry refuses every raw and packet socket itself (EAFNOSUPPORT: runsc
    // runs without `--net-raw`), before our filter or a capability could matter.
    let gvisor = common::isolation() == paddock_core::Isolation::Gvisor;
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    let code = r#"
import socket
for name, fam, typ, proto in [
    ("packet_raw", socket.AF_PACKET, socket.SOCK_RAW, 0x0300),
    ("packet_dgram", socket.AF_PACKET, socket.SOCK_DGRAM, 0x0300),
    ("inet_raw", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    ("inet_raw_tcp", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
    ("inet6_raw", socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
]:
    try:
        socket.socket(fam, typ, proto).close()
        print(f"{name}=opened")
    except PermissionError as e:
        print(f"{name}=PermissionError {e.errno}")
    except OSError as e:
        print(f"{name}=OSError {e.errno}")
"#;
    for who in ["root", "user"] {
        let r = s
            .exec(ExecRequest {
                argv: vec!["/usr/bin/python3".into(), "-c".into(), code.into()],
                user: Some(who.into()),
                timeout: Some(Duration::from_secs(30)),
                ..Default::default()
            })
            .await
            .expect("exec");
        let got = kv(&out(&r));
        assert_eq!(got.len(), 5, "{who}: {r:?}");
        for (name, v) in &got {
            // Packet sockets are a family of their own, refused by the seccomp family filter
            // before the kernel's capability check; raw inet sockets need `NET_RAW`.
            let want = if gvisor || name.starts_with("packet") {
                format!("OSError {}", libc::EAFNOSUPPORT)
            } else {
                format!("PermissionError {}", libc::EPERM)
            };
            assert_eq!(v, &want, "{who}: {name}");
        }
    }
    destroy(&s).await;
}

/// Probes `socket()` and `socketpair()` by family and netlink protocol; prints `name=errno`.
const FAMILIES_PY: &str = r#"
import socket
S, D, R, Q = socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW, socket.SOCK_SEQPACKET
def probe(name, fam, typ, proto=0):
    try:
        socket.socket(fam, typ, proto).close()
        print(f"{name}=0")
    except OSError as e:
        print(f"{name}={e.errno}")
def pair(name, fam, typ):
    try:
        a, b = socket.socketpair(fam, typ)
        a.close(); b.close()
        print(f"{name}=0")
    except OSError as e:
        print(f"{name}={e.errno}")
probe("unix_stream", 1, S); probe("unix_dgram", 1, D); probe("unix_seqpacket", 1, Q)
probe("inet_stream", 2, S); probe("inet_dgram", 2, D)
probe("inet6_stream", 10, S); probe("inet6_dgram", 10, D)
probe("netlink_route", 16, R, 0); probe("netlink_sock_diag", 16, R, 4)
pair("pair_unix_stream", 1, S); pair("pair_unix_dgram", 1, D)
probe("vsock_stream", 40, S); probe("vsock_dgram", 40, D)
probe("packet", 17, R, 0x0300); probe("alg", 38, Q); probe("bluetooth", 31, R, 0)
probe("xdp", 44, R); probe("key", 15, R, 2); probe("tipc", 30, Q); probe("rds", 21, Q)
probe("can", 29, R, 1); probe("smc", 43, S); probe("qipcrtr", 42, D); probe("kcm", 41, D)
probe("netlink_audit", 16, R, 9); probe("netlink_xfrm", 16, R, 6)
probe("netlink_netfilter", 16, R, 12); probe("netlink_uevent", 16, R, 15)
probe("netlink_generic", 16, R, 16); probe("netlink_selinux", 16, R, 7)
pair("pair_inet", 2, S); pair("pair_vsock", 40, S)
# glibc's getaddrinfo with AI_ADDRCONFIG lists interfaces over NETLINK_ROUTE.
try:
    socket.getaddrinfo("localhost", 80, flags=socket.AI_ADDRCONFIG)
    print("getaddrinfo_addrconfig=0")
except OSError as e:
    print(f"getaddrinfo_addrconfig={e.errno}")
"#;

/// Families a sandbox keeps (the seccomp `ALLOWED_FAMILIES` and `NETLINK_PROTOCOLS`).
const ALLOWED_PROBES: &[&str] = &[
    "unix_stream",
    "unix_dgram",
    "unix_seqpacket",
    "inet_stream",
    "inet_dgram",
    "inet6_stream",
    "inet6_dgram",
    "netlink_route",
    "netlink_sock_diag",
    "pair_unix_stream",
    "pair_unix_dgram",
    "getaddrinfo_addrconfig",
];

/// `socket(AF_VSOCK)` (the hypervisor's services on a VM host) and every other family or
/// netlink protocol outside the allow list fail with `EAFNOSUPPORT`, as root and as the user;
/// the families sandboxes need, and the tools that use netlink (`ip`, `ss`), work.
/// Filter, not kernel: the packet family (the kernel answers `EPERM` without `NET_RAW`) and
/// the netlink protocols (the kernel lets anyone open them) would not give `EAFNOSUPPORT`
/// without the filter, and the test process checks that the host itself opens vsock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b13_socket_families_outside_the_allow_list_fail_with_eafnosupport() {
    if not_on_gvisor(
        "socket families are the Sentry's (unsupported ones fail with EPROTONOSUPPORT or EAFNOSUPPORT); the agent's filter is not installed",
    ) {
        return;
    }
    // On the host (no filter) the kernel opens these, so the sandbox's answer is the filter's.
    use rustix::net::{AddressFamily, SocketType, netlink, socket};
    assert!(
        socket(
            AddressFamily::NETLINK,
            SocketType::RAW,
            Some(netlink::AUDIT)
        )
        .is_ok(),
        "the host kernel refuses NETLINK_AUDIT itself"
    );
    let host_vsock = socket(AddressFamily::VSOCK, SocketType::STREAM, None).is_ok();
    eprintln!("host opens AF_VSOCK: {host_vsock}");

    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    for who in ["root", "user"] {
        let r = s
            .exec(ExecRequest {
                argv: vec!["/usr/bin/python3".into(), "-c".into(), FAMILIES_PY.into()],
                user: Some(who.into()),
                timeout: Some(Duration::from_secs(30)),
                ..Default::default()
            })
            .await
            .expect("exec");
        let got = kv(&out(&r));
        assert_eq!(got.len(), 33, "{who}: {r:?}");
        let mut wrong = Vec::new();
        for (name, v) in &got {
            let want = if ALLOWED_PROBES.contains(&name.as_str()) {
                0
            } else {
                libc::EAFNOSUPPORT
            };
            if v.parse::<i32>().ok() != Some(want) {
                wrong.push(format!("{name}: got {v}, want {want}"));
            }
        }
        assert!(wrong.is_empty(), "as {who}: {wrong:#?}");
    }
    // The tools that need netlink keep working (both are on the host's /usr that `base` sees).
    let r = sh(&s, "ip -o addr show lo && ss -ltn && echo done").await;
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert!(out(&r).contains("127.0.0.1"), "{r:?}");
    assert!(out(&r).ends_with("done\n"), "{r:?}");
    destroy(&s).await;
}

/// Probes x32 syscall numbers from a statically linked binary (nothing of the image's libc
/// in the way); prints `name=errno` (0: the call succeeded).
#[cfg(target_arch = "x86_64")]
const X32_C: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
#define X32 0x40000000L
#define BAD ((void *)1)
static void report(const char *name, long r) {
    printf("%s=%d\n", name, r < 0 ? errno : 0);
}
int main(int argc, char **argv) {
    (void)argv;
    report("native_getpid", syscall(SYS_getpid));
    report("x32_getpid", syscall(X32 | SYS_getpid));
    if (argc > 1) return 0; /* on the host: nothing that could change it */
    report("x32_mount", syscall(X32 | SYS_mount, "x", "/tmp", "tmpfs", 0, NULL));
    report("x32_unshare", syscall(X32 | SYS_unshare, 0x10000000 /* CLONE_NEWUSER */));
    report("x32_socket_vsock", syscall(X32 | SYS_socket, 40, 1, 0));
    report("x32_bpf", syscall(X32 | SYS_bpf, 5, BAD, 128));
    report("x32_max", syscall(X32 | 0x3fffffffL));
    return 0;
}
"#;

/// Every x32 syscall number (`nr | 0x40000000`) fails with `EPERM`, so the x86_64 denylist
/// cannot be bypassed on a kernel with the x32 ABI enabled. The kernel itself answers
/// `ENOSYS` (x32 disabled) or runs the call (enabled), never `EPERM` for `getpid`: the test
/// process checks that on the host, so the sandbox's `EPERM` is the filter's.
#[cfg(target_arch = "x86_64")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b14_x32_syscalls_fail_with_eperm_from_the_filter() {
    // The Sentry has no x32 syscall table: there every x32 number fails with ENOSYS, its own
    // answer (our filter is not installed under gVisor).
    let gvisor = common::isolation() == paddock_core::Isolation::Gvisor;
    // The same static probe on the host, where no filter runs: the kernel's own answer.
    // Only the harmless getpid probes run there (`host` argument).
    let dir = std::env::temp_dir().join(format!("paddock-x32-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("x32.c"), X32_C).unwrap();
    let cc = std::process::Command::new("gcc")
        .args(["-static", "-O0", "-o"])
        .arg(dir.join("x32"))
        .arg(dir.join("x32.c"))
        .output()
        .expect("running gcc");
    assert!(cc.status.success(), "gcc -static on the host: {cc:?}");
    let host = std::process::Command::new(dir.join("x32"))
        .arg("host")
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let host = kv(&String::from_utf8_lossy(&host.stdout));
    eprintln!("host kernel: {host:?}");
    assert_eq!(host.get("native_getpid").map(String::as_str), Some("0"));
    let kernel = host.get("x32_getpid").cloned().unwrap_or_default();
    assert!(
        kernel == "0" || kernel == libc::ENOSYS.to_string(),
        "the host kernel answers x32 getpid with {kernel}"
    );

    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    let script = format!(
        "cat > /tmp/x32.c <<'EOF'\n{X32_C}\nEOF\n\
         gcc -static -O0 -o /tmp/x32 /tmp/x32.c >&2 || exit 99\n\
         ldd /tmp/x32 >&2; /tmp/x32"
    );
    let r = sh(&s, &script).await;
    assert_eq!(r.exit_code, Some(0), "building or running the probe: {r:?}");
    assert!(
        err(&r).contains("not a dynamic executable"),
        "the probe is not static: {r:?}"
    );
    for who in ["root", "user"] {
        let r = sh_as(&s, Some(who), "/tmp/x32").await;
        let got = kv(&out(&r));
        assert_eq!(got.len(), 7, "{who}: {r:?}");
        for (name, v) in &got {
            let want = if name == "native_getpid" {
                0
            } else if gvisor {
                libc::ENOSYS
            } else {
                libc::EPERM
            };
            assert_eq!(v.parse::<i32>().ok(), Some(want), "{who}: {name}: {r:?}");
        }
    }
    destroy(&s).await;
}
