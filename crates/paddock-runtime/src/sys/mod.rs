//! The runtime's system calls that need `unsafe`, as safe functions: each states the
//! invariant that makes it sound in its `SAFETY` note, so the rest of the crate calls them
//! without `unsafe` (`tests/architecture.rs` in the `paddock` crate fails on `unsafe`
//! anywhere else). Calls with a safe `rustix` equivalent use `rustix` at the call site.
//!
//! - [`btrfs`]: subvolume, snapshot and qgroup ioctls (`layers`).
//! - [`notify`]: seccomp user notifications and the thread's filesystem ids (`statfs`).
//! - here: what a child runs between fork and exec, and `SO_RCVLOWAT` (the server's spliced
//!   bodies).

pub(crate) mod btrfs;
pub(crate) mod notify;

use std::os::fd::RawFd;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

/// Makes `cmd`'s child find descriptor `fd` of this process at number `at`, open across
/// its exec (`dup2`, or clearing close-on-exec when `fd == at`). The caller keeps `fd`
/// open until `spawn` returns; if it does not, the child's `dup2` fails with `EBADF` and
/// so does `spawn`.
pub(crate) fn pass_fd_at(cmd: &mut Command, fd: RawFd, at: RawFd) {
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it calls `fcntl` or `dup2` on plain integers
    // and reads errno, and allocates nothing (the error is built from the raw errno).
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec set, so clear it explicitly then.
            let r = if fd == at {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, at)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

/// Moves the calling thread into a new network namespace (`unshare(CLONE_NEWNET)`); the
/// caller is a short-lived thread made for it (`net::links::prepared_netns`).
pub(crate) fn unshare_netns() -> std::io::Result<()> {
    // SAFETY: only NEWNET is unshared (not FILES or FS), so the thread keeps sharing its
    // descriptor table and filesystem attributes with the others: no descriptor another
    // thread uses becomes invalid here. It changes only this thread's network namespace.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
        .map_err(Into::into)
}

/// Lowers the calling thread's CPU priority to nice `nice` (threads it starts inherit it).
pub(crate) fn nice_this_thread(nice: i32) {
    // SAFETY: gettid and setpriority take and return integers only; PRIO_PROCESS with a
    // thread id changes that one thread's nice value on Linux.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice);
    }
}

/// Sets `SO_RCVLOWAT` on socket `sock`: it reports readable (poll, epoll) only once `bytes`
/// are queued, or at its end or an error. For bulk bodies read by the server (`splice` in
/// `paddock-server`), so a fast source wakes it once per `bytes` rather than once per packet
/// train. No safe wrapper exists in `rustix` or `socket2`.
pub fn set_recv_lowat(sock: impl std::os::fd::AsFd, bytes: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let fd = sock.as_fd();
    // SAFETY: `fd` is a descriptor borrowed for the call, so it stays open; the option value
    // is a live `c_int` on the stack, and the length passed is its size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
