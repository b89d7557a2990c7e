//! The `statfs` listener's installation (`crate::seccomp`), and the raw system calls the
//! filter's tests probe it with.

use std::io;
use std::os::fd::{FromRawFd as _, OwnedFd};

/// Installs `prog` as a seccomp filter of this thread with
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER` and returns the listener. Requires `no_new_privs`.
#[cfg(target_arch = "x86_64")]
pub(crate) fn install_with_listener(prog: &[seccompiler::sock_filter]) -> io::Result<OwnedFd> {
    /// `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
    const NEW_LISTENER: libc::c_ulong = 1 << 3;
    let len = u16::try_from(prog.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?;
    let fprog = libc::sock_fprog {
        len,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, `len` instructions borrowed for the call; the kernel
    // copies them and never writes through the pointer. `seccompiler::sock_filter` is the
    // same C struct as `libc::sock_filter`.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            NEW_LISTENER,
            &raw const fprog,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new descriptor, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Raw system calls with arguments a filter inspects, for its tests: each returns the
/// errno, or 0 when the call succeeded (closing any descriptor it made).
#[cfg(test)]
pub(crate) mod probe {
    use std::io::Error;

    fn errno_of(r: libc::c_long) -> i32 {
        if r < 0 {
            return Error::last_os_error().raw_os_error().unwrap_or(-1);
        }
        0
    }

    /// `socket(family, ty, proto)` with 64-bit arguments, as a caller may pass them.
    pub(crate) fn socket(family: i64, ty: i32, proto: i64) -> i32 {
        // SAFETY: socket takes no pointers; a descriptor it returns is closed at once.
        let r = unsafe { libc::syscall(libc::SYS_socket, family, ty, proto) };
        if r >= 0 {
            // SAFETY: closing the descriptor just made, which nothing else owns.
            unsafe { libc::close(r as i32) };
        }
        errno_of(r)
    }

    /// `socketpair(family, SOCK_STREAM, 0)`.
    pub(crate) fn socketpair(family: i64) -> i32 {
        let mut fds = [-1i32; 2];
        // SAFETY: `fds` is a valid two-int out array.
        let r = unsafe {
            libc::syscall(
                libc::SYS_socketpair,
                family,
                libc::SOCK_STREAM,
                0,
                fds.as_mut_ptr(),
            )
        };
        for fd in fds.into_iter().filter(|f| *f >= 0) {
            // SAFETY: closing descriptors just made, which nothing else owns.
            unsafe { libc::close(fd) };
        }
        errno_of(r)
    }

    /// `getpid` and `socket(AF_VSOCK, SOCK_STREAM, 0)` by their x32 numbers.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn x32_getpid_and_socket() -> (i32, i32) {
        // SAFETY: getpid and socket with x32 numbers; no pointers are passed, and a
        // descriptor the socket call might make is closed at once.
        let (pid, sock) = unsafe {
            (
                libc::syscall(0x4000_0000 | libc::SYS_getpid),
                libc::syscall(0x4000_0000 | libc::SYS_socket, libc::AF_VSOCK, 1, 0),
            )
        };
        if sock >= 0 {
            // SAFETY: as in `socket`.
            unsafe { libc::close(sock as i32) };
        }
        (errno_of(pid), errno_of(sock))
    }
}
