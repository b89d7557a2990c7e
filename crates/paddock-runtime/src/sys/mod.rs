//! The runtime's system calls that need `unsafe`, as safe functions: each states the
//! invariant that makes it sound in its `SAFETY` note, so the rest of the crate calls them
//! without `unsafe` (`tests/architecture.rs` in the `paddock` crate fails on `unsafe`
//! anywhere else). Calls with a safe `rustix` equivalent use `rustix` at the call site.
//!
//! - [`btrfs`]: subvolume, snapshot and qgroup ioctls (`layers`).
//! - [`notify`]: seccomp user notifications and the thread's filesystem ids (`statfs`).
//! - [`spawn`]: the setup stage started by `posix_spawn`, its descriptors placed by file
//!   actions (no fork of the server).
//! - here: a thread's network namespace and priority, and `SO_RCVLOWAT` (the server's
//!   spliced bodies).

pub(crate) mod btrfs;
pub(crate) mod notify;
pub(crate) mod spawn;

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
