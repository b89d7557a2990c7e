//! The agent's system calls that need `unsafe`, as safe functions: each states the
//! invariant that makes it sound in its `SAFETY` note, so the rest of the crate calls them
//! without `unsafe`. This module is the only one of the crate allowed `unsafe` (lib.rs
//! allows the lint here only; `tests/architecture.rs` in the `paddock` crate checks it).
//! Calls with a safe `rustix` equivalent use `rustix` at the call site instead.
//!
//! - here: signals by raw number (`kill`, `pidfd_send_signal`, the `sudo` shim's signal
//!   forwarding), `setsid`, per-thread filesystem and effective ids, descriptors handed
//!   over at fixed numbers, `fork` of a single-threaded process and `_exit`;
//! - [`setup`]: the setup stage's namespaces, mounts, device nodes, loopback and exec;
//! - [`spawn`]: what a started process runs between fork and exec, and async descriptors;
//! - [`vfork`]: starting a command with `clone(CLONE_VM | CLONE_VFORK)` instead of `fork`;
//! - [`seccomp`]: the `statfs` listener's installation (and the filter tests' raw probes).

pub(crate) mod seccomp;
pub(crate) mod setup;
pub(crate) mod spawn;
pub(crate) mod vfork;

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

/// What [`fork`] returned in this process.
pub(crate) enum Forked {
    /// This is the new child.
    Child,
    /// This is the parent; the child's pid.
    Parent(i32),
}

/// The `Threads:` count of a `/proc/<pid>/status` text.
pub(crate) fn threads_in(status: &str) -> Option<usize> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `fork(2)` of a process that has exactly one thread, checked in `/proc/self/status` first
/// (an error otherwise): the child may then run any Rust code (allocate, format) before it
/// execs or calls [`exit_now`], since no other thread can hold a lock at the fork.
pub(crate) fn fork() -> io::Result<Forked> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    match threads_in(&status) {
        Some(1) => {}
        n => {
            return Err(io::Error::other(format!(
                "fork needs a single-threaded process, but it has {n:?} threads"
            )));
        }
    }
    // SAFETY: the process is single-threaded (checked just above, and nothing between the
    // check and the call starts a thread), so the child inherits no lock held by another
    // thread and may run arbitrary code.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Forks even a multi-threaded process (the test harness) and runs `f` in the child, which
/// exits 0 when it returns true; true when the child did. For tests only.
#[cfg(test)]
pub(crate) fn fork_for_test(f: impl FnOnce() -> bool) -> bool {
    // SAFETY: the child only runs `f` and `_exit`; in a multi-threaded test process a lock
    // another thread held at the fork would show as a hang of the test, never as memory
    // unsafety in the parent, which only waits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        exit_now(if f() { 0 } else { 1 });
    }
    let pid = rustix::process::Pid::from_raw(pid).expect("a child pid");
    matches!(
        rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()),
        Ok(Some((_, st))) if st.exit_status() == Some(0)
    )
}

/// `_exit(2)`: ends this process at once, without running exit handlers or flushing
/// buffers that belong to the parent a forked child was copied from.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes an integer and never returns; skipping destructors and atexit
    // handlers is its purpose and cannot break memory safety.
    unsafe { libc::_exit(code) }
}

/// The descriptor [`forward_signals`] writes each signal number to (-1: none yet).
static SIGNAL_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn forward_signal(sig: libc::c_int) {
    let fd = SIGNAL_FD.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; `b` lives for the call; a failed write is
        // ignored (the agent kills the command when the connection closes anyway).
        unsafe { libc::write(fd, (&raw const b).cast(), 1) };
    }
}

/// From now on each of `signals` delivered to this process is written, as one byte, to
/// descriptor `fd` instead of acting (the `sudo` shim's forwarding to the agent). The
/// caller keeps `fd` open for the rest of the process's life.
pub(crate) fn forward_signals(fd: RawFd, signals: &[libc::c_int]) {
    SIGNAL_FD.store(fd, std::sync::atomic::Ordering::Relaxed);
    for &sig in signals {
        // SAFETY: installs a handler that only calls write(2) (async-signal-safe); the
        // sigaction struct is zero-initialised (a valid value) and fully set before use.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}
