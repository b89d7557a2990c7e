//! The setup stage's raw system calls (`crate::setup`): namespaces, descriptors at fixed
//! numbers, mounts and id-mapped mount attributes, device nodes, the loopback interface and
//! the final exec. Each takes checked Rust values (C strings, borrowed descriptors) and
//! builds the C arguments itself, so a caller cannot pass a dangling pointer.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd, RawFd};

fn check(r: libc::c_int) -> io::Result<()> {
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `unshare(2)` of namespaces (`CLONE_NEW*` flags only: sharing of descriptor tables or
/// filesystem attributes between threads is never touched, so no thread can lose a
/// descriptor another still uses).
pub(crate) fn unshare_namespaces(flags: libc::c_int) -> io::Result<()> {
    const NAMESPACES: libc::c_int = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUSER
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWCGROUP;
    if flags & !NAMESPACES != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unshare of more than namespaces: {flags:#x}"),
        ));
    }
    // SAFETY: unshare with namespace flags only takes an integer and changes which
    // namespaces this process is in; no memory and no descriptor is shared or freed.
    check(unsafe { libc::unshare(flags) })
}

/// `setns(2)` into the network namespace open at the fixed number `fd` (handed over by
/// the runtime, [`paddock_core::SETUP_NETNS_FD`]). A descriptor that is not a network
/// namespace fails (`EINVAL`), one that is not open fails with `EBADF`.
pub(crate) fn join_netns_at(fd: RawFd) -> io::Result<()> {
    // SAFETY: setns takes integers and shares no memory; the descriptor is only read, and
    // the CLONE_NEWNET type makes the kernel refuse any other kind of namespace.
    check(unsafe { libc::setns(fd, libc::CLONE_NEWNET) })
}

/// `dup2(2)` of `from` onto the fixed number `to` (0-2, the agent's socket, the statfs
/// listener), which no Rust object of this process owns: whatever was open there is
/// replaced, and the new descriptor is handed over across the coming exec.
/// A `from` that is not open fails with `EBADF`.
pub(crate) fn dup2_at(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 takes integers and shares no memory; `to` is a fixed number that no
    // OwnedFd of this process holds (the setup stage keeps its own descriptors elsewhere),
    // so nothing is closed behind an owner's back.
    if unsafe { libc::dup2(from, to) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks every descriptor from `first` up close-on-exec (`close_range` with
/// `CLOSE_RANGE_CLOEXEC`).
pub(crate) fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: CLOSE_RANGE_CLOEXEC only sets a descriptor flag; nothing is closed, so no
    // Rust owner loses its descriptor.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`: runs the executable open at `fd`.
/// Returns only on failure.
pub(crate) fn exec_fd(fd: BorrowedFd<'_>, argv: &[&CStr], envp: &[&CStr]) -> io::Error {
    let argv: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp: Vec<*const libc::c_char> = envp
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    // SAFETY: argv and envp are NULL-terminated arrays of pointers to NUL-terminated
    // strings borrowed for the call (the slices outlive it); `fd` is borrowed for it.
    unsafe {
        libc::execveat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr().cast(),
            envp.as_ptr().cast(),
            libc::AT_EMPTY_PATH,
        )
    };
    io::Error::last_os_error()
}

/// `mount(2)`.
pub(crate) fn mount(
    src: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let p = |o: Option<&CStr>| o.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is null or a NUL-terminated string borrowed for the call.
    check(unsafe { libc::mount(p(src), target.as_ptr(), p(fstype), flags, p(data).cast()) })
}

/// `struct mount_attr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, ...)` setting `attr_set` (and,
/// with `userns`, `MOUNT_ATTR_IDMAP`'s namespace) on the detached tree `tree`.
pub(crate) fn mount_setattr(
    tree: BorrowedFd<'_>,
    attr_set: u64,
    userns: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |u| u.as_raw_fd() as u64),
    };
    // SAFETY: `tree` (and `userns`) are descriptors borrowed for the call, the path is an
    // empty C string with AT_EMPTY_PATH, and `attr` is a correctly sized mount_attr that
    // outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &raw const attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the character device node `path` (`major`, `minor`) with mode 0666 less the umask.
pub(crate) fn mknod_char(path: &CStr, major: u32, minor: u32) -> io::Result<()> {
    // SAFETY: `path` is a NUL-terminated string borrowed for the call; the rest are integers.
    check(unsafe {
        libc::mknod(
            path.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    })
}

/// Sets `IFF_UP` on `lo` of the current network namespace, through `sock` (any socket of it).
pub(crate) fn loopback_up(sock: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS writes into the ifreq we own, which has the layout it expects;
    // `sock` is borrowed for the call.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: reading the union member SIOCGIFFLAGS just filled in.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own; `sock` is borrowed for the call.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })
}
