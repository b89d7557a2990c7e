//! The seccomp policy every sandbox process runs under.
//!
//! A denylist on top of the namespace and capability boundary: it removes the kernel surface
//! that sandboxes never need and that has a history of privilege escalations. Everything not
//! listed is allowed, so ordinary programs (compilers, package managers, browsers) keep
//! working. Each entry says why it is denied. Denied calls fail with `EPERM`, except
//! `clone3`, which fails with `ENOSYS` so that libc falls back to `clone`, whose flags (unlike
//! `clone3`'s, which live in memory) a filter can inspect, and sockets of an address family
//! (or netlink protocol) outside [`ALLOWED_FAMILIES`], which fail with `EAFNOSUPPORT` as on a
//! kernel built without that family.
//!
//! On x86_64 every x32 syscall number (`nr | 0x40000000`, same audit arch as x86_64) fails
//! with `EPERM`: the denylists below name x86_64 numbers only, so on a kernel with the x32 ABI
//! enabled they would otherwise be bypassed by setting that bit. A kernel without x32 answers
//! `ENOSYS`, so `EPERM` tells the filter's work from the kernel's. Calls of any other
//! architecture (i386 through `int 0x80`) kill the process (seccompiler's arch check).
use std::collections::BTreeMap;

use crate::error::{Context, Result};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

/// Syscalls denied outright, with the reason for each.
const DENIED: &[(i64, &str)] = &[
    (libc::SYS_mount, "mounts stay as the setup stage left them"),
    (libc::SYS_umount2, "unmounting would reveal masked paths"),
    (libc::SYS_pivot_root, "no new roots"),
    (
        libc::SYS_unshare,
        "new namespaces reopen kernel surface (CVE-2022-0492 and kin)",
    ),
    (libc::SYS_setns, "entering other namespaces"),
    (libc::SYS_open_tree, "new mount API"),
    (libc::SYS_move_mount, "new mount API"),
    (libc::SYS_fsopen, "new mount API"),
    (libc::SYS_fsconfig, "new mount API"),
    (libc::SYS_fsmount, "new mount API"),
    (libc::SYS_fspick, "new mount API"),
    (libc::SYS_mount_setattr, "new mount API"),
    (
        libc::SYS_bpf,
        "eBPF verifier bugs are a recurring escape route",
    ),
    (
        libc::SYS_perf_event_open,
        "kernel profiling leaks host state and has had escalations",
    ),
    (libc::SYS_keyctl, "the kernel keyring is not namespaced"),
    (libc::SYS_add_key, "the kernel keyring is not namespaced"),
    (
        libc::SYS_request_key,
        "the kernel keyring is not namespaced",
    ),
    (
        libc::SYS_userfaultfd,
        "used to widen kernel race windows in exploits",
    ),
    (libc::SYS_kexec_load, "loading a new kernel"),
    (libc::SYS_kexec_file_load, "loading a new kernel"),
    (libc::SYS_init_module, "kernel modules"),
    (libc::SYS_finit_module, "kernel modules"),
    (libc::SYS_delete_module, "kernel modules"),
    (
        libc::SYS_open_by_handle_at,
        "bypasses path-based confinement (the 'shocker' escape)",
    ),
    (
        libc::SYS_name_to_handle_at,
        "companion of open_by_handle_at",
    ),
    (
        libc::SYS_io_uring_setup,
        "io_uring bypasses seccomp for the operations it performs",
    ),
    (libc::SYS_io_uring_enter, "io_uring"),
    (libc::SYS_io_uring_register, "io_uring"),
    (libc::SYS_swapon, "host swap configuration"),
    (libc::SYS_swapoff, "host swap configuration"),
    (libc::SYS_reboot, "host power state"),
    (libc::SYS_syslog, "host kernel log"),
    (libc::SYS_acct, "host process accounting"),
    (libc::SYS_settimeofday, "host clock"),
    (libc::SYS_clock_settime, "host clock"),
    (libc::SYS_clock_adjtime, "host clock"),
    (libc::SYS_adjtimex, "host clock"),
    (libc::SYS_iopl, "raw port IO"),
    (libc::SYS_ioperm, "raw port IO"),
    (libc::SYS_quotactl, "host quota configuration"),
    (libc::SYS_lookup_dcookie, "kernel profiling"),
    (libc::SYS_vhangup, "terminal hangup of other sessions"),
];

/// Address families `socket()` accepts; every other family fails with `EAFNOSUPPORT`, as if the
/// kernel had been built without it. Families reach kernel code that network namespaces and
/// nftables do not cover (vsock reaches the hypervisor's services on VM hosts; AF_ALG, AF_KEY,
/// AF_PACKET, Bluetooth, TIPC, RDS and kin have a history of privilege escalations).
pub const ALLOWED_FAMILIES: &[(i32, &str)] = &[
    (
        libc::AF_UNIX,
        "local sockets (X, D-Bus, databases, the sudo shim)",
    ),
    (libc::AF_INET, "IPv4"),
    (
        libc::AF_INET6,
        "IPv6 (inside a namespace that has none beyond loopback)",
    ),
    (
        libc::AF_NETLINK,
        "only the protocols in NETLINK_PROTOCOLS: interface and socket listings",
    ),
];

/// Netlink protocols `socket(AF_NETLINK, ...)` accepts; the others fail with `EAFNOSUPPORT`.
pub const NETLINK_PROTOCOLS: &[(i32, &str)] = &[
    (
        libc::NETLINK_ROUTE,
        "`ip addr`/`ip route`, glibc's getifaddrs (getaddrinfo with AI_ADDRCONFIG)",
    ),
    (
        libc::NETLINK_SOCK_DIAG,
        "`ss`, which lists sockets through it",
    ),
];

/// `socketpair()` makes connected pairs of one family only: AF_UNIX.
pub const SOCKETPAIR_FAMILIES: &[i32] = &[libc::AF_UNIX];

/// Namespace flags that `clone` may not carry.
const CLONE_NS_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    0x80, // CLONE_NEWTIME
];

fn arch() -> TargetArch {
    #[cfg(target_arch = "x86_64")]
    return TargetArch::x86_64;
    #[cfg(target_arch = "aarch64")]
    return TargetArch::aarch64;
}

/// Builds the BPF programs: the x32 guard (x86_64 only), the `EPERM` denylist, the `ENOSYS`
/// for `clone3` and the `EAFNOSUPPORT` for socket families. The kernel runs every installed
/// filter and applies the most severe answer, so their order does not matter.
pub fn programs() -> Result<Vec<BpfProgram>> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (nr, _why) in DENIED {
        rules.insert(*nr, vec![]);
    }
    // clone with any namespace flag: one rule per flag, rules are OR-ed.
    let clone_rules = CLONE_NS_FLAGS
        .iter()
        .map(|f| {
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                Len::Qword,
                Op::MaskedEq(*f),
                *f,
            )?])
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    // TIOCSTI injects keystrokes into a terminal another process reads (CVE-2019-10063).
    // Compared as a 32-bit value because the kernel truncates the command to an int, so the
    // "high bit" variant is caught too.
    rules.insert(
        libc::SYS_ioctl,
        vec![SeccompRule::new(vec![SeccompCondition::new(
            1,
            Len::Dword,
            Op::Eq,
            libc::TIOCSTI,
        )?])?],
    );
    let eperm = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch(),
    )?;
    let enosys = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, vec![])]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch(),
    )?;
    let eafnosupport = SeccompFilter::new(
        family_rules()?,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EAFNOSUPPORT as u32),
        arch(),
    )?;
    let mut programs = Vec::new();
    #[cfg(target_arch = "x86_64")]
    programs.push(x32_guard());
    programs.extend([
        eperm.try_into()?,
        enosys.try_into()?,
        eafnosupport.try_into()?,
    ]);
    Ok(programs)
}

/// Rules matching the `socket` and `socketpair` calls to refuse. The family and the protocol
/// are C `int`s, so they are compared as 32-bit values: the kernel ignores the upper half of
/// the register, and so must the filter, or setting a high bit would slip past it.
fn family_rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>> {
    let ne = |arg: u8, v: i32| SeccompCondition::new(arg, Len::Dword, Op::Ne, v as u64);
    // A family that is none of the allowed ones (the conditions of one rule are AND-ed).
    let other_family = SeccompRule::new(
        ALLOWED_FAMILIES
            .iter()
            .map(|(f, _)| ne(0, *f))
            .collect::<Result<_, _>>()?,
    )?;
    // Netlink with a protocol that is none of the allowed ones.
    let mut netlink = vec![SeccompCondition::new(
        0,
        Len::Dword,
        Op::Eq,
        libc::AF_NETLINK as u64,
    )?];
    for (p, _) in NETLINK_PROTOCOLS {
        netlink.push(ne(2, *p)?);
    }
    let other_netlink = SeccompRule::new(netlink)?;
    let other_pair = SeccompRule::new(
        SOCKETPAIR_FAMILIES
            .iter()
            .map(|f| ne(0, *f))
            .collect::<Result<_, _>>()?,
    )?;
    Ok(BTreeMap::from([
        (libc::SYS_socket, vec![other_family, other_netlink]),
        (libc::SYS_socketpair, vec![other_pair]),
    ]))
}

/// The x32 guard, written by hand because seccompiler matches syscall numbers only for
/// equality and has no "every number from here on" condition. An x32 call carries the same
/// audit arch as an x86_64 one, so seccompiler's own programs let it through as a number no
/// rule names. Calls of another arch are allowed here and killed by those programs.
#[cfg(target_arch = "x86_64")]
fn x32_guard() -> BpfProgram {
    use seccompiler::sock_filter;
    /// `AUDIT_ARCH_X86_64`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
    const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    // Offsets of `nr` and `arch` in `struct seccomp_data`.
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    let stmt = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    vec![
        /* 0 */ stmt(load, ARCH),
        /* 1 */
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            AUDIT_ARCH_X86_64,
            0,
            3,
        ),
        /* 2 */ stmt(load, NR),
        /* 3 */
        jump(
            libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
            X32_SYSCALL_BIT,
            0,
            1,
        ),
        /* 4 */
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        /* 5 */ stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ]
}

/// The `statfs` filter: every `statfs(2)` of the sandbox becomes a user notification, which
/// the host answers (the sandbox's disk limit for paths on its root filesystem, the kernel's
/// own answer for the rest). Hand-written for the same reason as the x32 guard: seccompiler
/// cannot ask for `SECCOMP_RET_USER_NOTIF`. `fstatfs` is left alone: `rm -r`, `find` and
/// `du` call it once per directory, and `df`, `os.statvfs` and Node's `fs.statfs` all use
/// the path form.
#[cfg(target_arch = "x86_64")]
fn statfs_notify_filter() -> BpfProgram {
    use seccompiler::sock_filter;
    const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    /// `SECCOMP_RET_USER_NOTIF` (linux/seccomp.h; not in every libc crate version).
    const RET_USER_NOTIF: u32 = 0x7fc0_0000;
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    let f = |code: u32, k: u32, jt: u8, jf: u8| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    vec![
        /* 0 */ f(load, ARCH, 0, 0),
        /* 1 */ f(jeq, AUDIT_ARCH_X86_64, 0, 3),
        /* 2 */ f(load, NR, 0, 0),
        /* 3 */ f(jeq, libc::SYS_statfs as u32, 0, 1),
        /* 4 */ f(ret, RET_USER_NOTIF, 0, 0),
        /* 5 */ f(ret, libc::SECCOMP_RET_ALLOW, 0, 0),
    ]
}

/// Installs the `statfs` filter (see `statfs_notify_filter`) and returns its listener.
/// Requires `no_new_privs`. Until someone receives on the listener, a `statfs` blocks.
#[cfg(target_arch = "x86_64")]
pub fn install_statfs_notify() -> Result<std::os::fd::OwnedFd> {
    let prog = statfs_notify_filter();
    crate::sys::seccomp::install_with_listener(&prog).context("seccomp statfs listener")
}

/// Installs the policy on the calling thread; it is inherited by every descendant.
/// Requires `no_new_privs` to be set.
pub fn install() -> Result<()> {
    for p in programs()? {
        seccompiler::apply_filter(&p).context("seccomp apply")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn policy_compiles() {
        let n = if cfg!(target_arch = "x86_64") { 4 } else { 3 };
        assert_eq!(super::programs().unwrap().len(), n);
    }

    use crate::sys::seccomp::probe::{socket, socketpair};

    /// Installs the policy on a thread of its own (seccomp and no_new_privs are per thread,
    /// so the rest of the test process is untouched) and probes it there.
    #[test]
    fn families_and_x32_are_refused_by_the_filter() {
        let got = std::thread::spawn(|| {
            super::install().unwrap();
            let stream = libc::SOCK_STREAM;
            let raw = libc::SOCK_RAW;
            let high = 1i64 << 32;
            let mut v = vec![
                ("unix", socket(libc::AF_UNIX.into(), stream, 0)),
                ("inet", socket(libc::AF_INET.into(), stream, 0)),
                ("inet6", socket(libc::AF_INET6.into(), libc::SOCK_DGRAM, 0)),
                // The kernel reads an int: a high bit must change nothing either way.
                ("unix_high_bit", socket(high | 1, stream, 0)),
                ("vsock", socket(libc::AF_VSOCK.into(), stream, 0)),
                ("vsock_high_bit", socket(high | 40, stream, 0)),
                ("packet", socket(libc::AF_PACKET.into(), raw, 0)),
                ("alg", socket(libc::AF_ALG.into(), libc::SOCK_SEQPACKET, 0)),
                ("xdp", socket(libc::AF_XDP.into(), raw, 0)),
                ("key", socket(libc::AF_KEY.into(), raw, 2)),
                ("netlink_route", socket(16, raw, libc::NETLINK_ROUTE.into())),
                (
                    "netlink_diag",
                    socket(16, raw, libc::NETLINK_SOCK_DIAG.into()),
                ),
                ("netlink_audit", socket(16, raw, libc::NETLINK_AUDIT.into())),
                (
                    "netlink_generic",
                    socket(16, raw, libc::NETLINK_GENERIC.into()),
                ),
                ("netlink_uevent", socket(16, raw, 15)),
                ("netlink_route_high_bit", socket(16, raw, high)),
                ("pair_unix", socketpair(libc::AF_UNIX.into())),
                ("pair_inet", socketpair(libc::AF_INET.into())),
                ("pair_vsock", socketpair(libc::AF_VSOCK.into())),
            ];
            #[cfg(target_arch = "x86_64")]
            {
                let (pid, sock) = crate::sys::seccomp::probe::x32_getpid_and_socket();
                v.push(("x32_getpid", pid));
                v.push(("x32_socket", sock));
            }
            v
        })
        .join()
        .unwrap();
        let want = |name: &str| match name {
            "unix"
            | "inet"
            | "inet6"
            | "unix_high_bit"
            | "netlink_route"
            | "netlink_diag"
            | "netlink_route_high_bit"
            | "pair_unix" => 0,
            n if n.starts_with("x32") => libc::EPERM,
            _ => libc::EAFNOSUPPORT,
        };
        let wrong: Vec<_> = got
            .iter()
            .filter(|(n, e)| *e != want(n))
            .map(|(n, e)| format!("{n}: got {}, want {}", e, want(n)))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
