//! The agent's system calls that need `unsafe`, as safe functions: each states the
//! invariant that makes it sound in its `SAFETY` note, so the rest of the crate calls them
//! without `unsafe`. Calls with a safe `rustix` equivalent use `rustix` at the call site
//! instead. Still outside this module (they must stay where they are or be `unsafe` to
//! call): `pre_exec` closures and what they run between fork and exec (`procs`), the
//! setup stage's namespace, mount and exec sequence (`setup`), the seccomp filter's
//! installation and user notifications (`seccomp`), and the `sudo` shim.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};
use std::sync::Mutex;

/// `kill(2)` with a raw pid (negative: a process group) and signal number (0: a check).
/// Callers make sure the number still names the process they mean (see `signals`).
pub(crate) fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes two integers and shares no memory with the kernel.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `pidfd_send_signal(2)` with `flags` (rustix's has none, and the agent needs
/// `PIDFD_SIGNAL_PROCESS_GROUP`).
pub(crate) fn pidfd_send_signal(
    pidfd: BorrowedFd<'_>,
    sig: i32,
    flags: libc::c_uint,
) -> io::Result<()> {
    // SAFETY: a descriptor borrowed for the call, a signal number, a null siginfo (the
    // kernel fills in its own) and flags: no memory is shared.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            flags,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `setsid(2)`, async-signal-safe (for a child between fork and exec). Not rustix's:
/// gVisor's Sentry answers 0 rather than the new session id, which rustix takes for an
/// invalid pid and panics on; only -1 is a failure.
pub(crate) fn setsid() -> io::Result<()> {
    // SAFETY: setsid takes no arguments and touches no memory.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// This thread's filesystem ids (`setfsgid`, then `setfsuid`); false where the kernel has
/// none (`ENOSYS`: gVisor's Sentry), and then nothing changed.
pub(crate) fn set_thread_fs_ids(uid: u32, gid: u32) -> bool {
    // SAFETY: setfsgid/setfsuid take plain integers and change only this thread's
    // filesystem credentials; the kernel drops filesystem capabilities for a non-zero fsuid
    // and restores them when it returns to 0.
    unsafe {
        // It returns the previous fsgid, never -1 but where it does not exist.
        if libc::syscall(libc::SYS_setfsgid, gid) == -1 {
            return false;
        }
        libc::syscall(libc::SYS_setfsuid, uid);
    }
    true
}

/// This thread's effective uid and gid (real and saved unchanged), by raw `setresuid` and
/// `setresgid`, which change the calling thread only (libc's change every thread). To a
/// non-zero uid the gid goes first while the thread is still root; back to 0, after it.
pub(crate) fn set_thread_effective_ids(uid: u32, gid: u32) {
    let keep = u32::MAX; // -1: unchanged
    // SAFETY: setresuid/setresgid take plain integers and change only this thread's ids.
    unsafe {
        if uid == 0 {
            libc::syscall(libc::SYS_setresuid, keep, 0u32, keep);
            libc::syscall(libc::SYS_setresgid, keep, gid, keep);
        } else {
            libc::syscall(libc::SYS_setresgid, keep, gid, keep);
            libc::syscall(libc::SYS_setresuid, keep, uid, keep);
        }
    }
}

/// Descriptors already taken by [`take_inherited_fd`].
static TAKEN: Mutex<BTreeSet<RawFd>> = Mutex::new(BTreeSet::new());

/// Takes ownership of descriptor `n`, which the setup stage handed over at that fixed
/// number (the agent's listener, the statfs listener). Each number is taken once per
/// process, and only while it is open; a second take, or a closed number, is an error.
pub(crate) fn take_inherited_fd(n: RawFd) -> io::Result<OwnedFd> {
    let mut taken = crate::lock(&TAKEN);
    if taken.contains(&n) {
        return Err(io::Error::other(format!(
            "descriptor {n} was taken already"
        )));
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; it fails with EBADF if `n` is not
    // open.
    if unsafe { libc::fcntl(n, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    taken.insert(n);
    // SAFETY: `n` is open, and nothing else in this process owns it: the setup stage placed
    // it there for this process to take, and `TAKEN` makes sure it is taken only once.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}
