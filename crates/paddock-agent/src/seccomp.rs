//! The seccomp policy every sandbox process runs under.
//!
//! A denylist on top of the namespace and capability boundary: it removes the kernel surface
//! that sandboxes never need and that has a history of privilege escalations. Everything not
//! listed is allowed, so ordinary programs (compilers, package managers, browsers) keep
//! working. Each entry says why it is denied. Denied calls fail with `EPERM`, except
//! `clone3`, which fails with `ENOSYS` so that libc falls back to `clone`, whose flags (unlike
//! `clone3`'s, which live in memory) a filter can inspect.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
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

/// Builds the two BPF programs: the `EPERM` denylist and the `ENOSYS` for `clone3`.
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
    Ok(vec![eperm.try_into()?, enosys.try_into()?])
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
        assert_eq!(super::programs().unwrap().len(), 2);
    }
}
