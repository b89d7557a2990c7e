//! What a process started by the agent runs between fork and exec (`procs`), and the
//! registration of its output descriptors with tokio.

use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

use tokio::io::unix::AsyncFd;

/// Who a started process runs as and where, prepared before fork (so the child allocates
/// nothing).
pub(crate) struct Creds {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) groups: Vec<u32>,
    pub(crate) cwd: CString,
}

/// Makes `cmd`'s child, between fork and exec: start a new session (and, with
/// `controlling_tty`, make its stdin, a PTY slave by then, the controlling terminal), become
/// a subreaper, prefer itself over the agent when the sandbox runs out of memory, switch to
/// `creds` (dropping every capability unless the user is root) and enter the working
/// directory *as that user*, so a directory the user cannot enter fails the start.
pub(crate) fn prepare_child(cmd: &mut Command, creds: Creds, controlling_tty: bool) {
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (setsid, ioctl, prctl, open/write/close, the credential
    // calls, chdir) on values prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            super::setsid()?;
            if controlling_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            child_setup(&creds)
        })
    };
}

/// The part of [`prepare_child`] after the session.
///
/// # Safety
///
/// Only between fork and exec of a child (it changes the whole process's credentials).
unsafe fn child_setup(c: &Creds) -> io::Result<()> {
    match rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        // gVisor's Sentry refuses it to every process but PID 1: there a command's orphans go
        // to PID 1 and a tree kill misses a double-forked daemon (docs/isolation.md).
        Err(rustix::io::Errno::INVAL) => {}
        r => r?,
    }
    // SAFETY: raw credential syscalls, open/write/close and chdir on C strings prepared
    // before fork; all are async-signal-safe and touch no allocator.
    unsafe {
        // Before the uid change: afterwards the process is no longer dumpable and its /proc
        // files belong to root, so it could not open this one.
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            libc::write(fd, b"500".as_ptr().cast(), 3);
            libc::close(fd);
        }
        let groups: &[libc::gid_t] = &c.groups;
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0
            || libc::setresgid(c.gid, c.gid, c.gid) != 0
            || libc::setresuid(c.uid, c.uid, c.uid) != 0
            || libc::chdir(c.cwd.as_ptr()) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Registers `fd` with tokio's reactor.
pub(crate) fn async_fd(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open, owned by the AsyncFd from here on, and always returns the
    // same number; nothing replaces or closes it while registered.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}
