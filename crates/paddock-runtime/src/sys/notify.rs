//! Seccomp user notifications (`SECCOMP_IOCTL_NOTIF_*`) and the per-thread calls the
//! runtime's `statfs` answerer makes (`statfs.rs`): receive a notification, check it is
//! still pending, answer it; `fstatfs` into the C struct the sandbox expects back; the
//! thread's filesystem ids.

use std::os::fd::{AsRawFd, BorrowedFd};

pub(crate) enum Resp {
    Done,
    Error(i32),
    Continue,
}

/// One pending notification, or None (it vanished: the caller was killed).
pub(crate) fn recv(listener: BorrowedFd<'_>) -> Option<libc::seccomp_notif> {
    // SAFETY: the kernel requires a zeroed struct; all-zero is a valid seccomp_notif.
    let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: RECV writes one seccomp_notif into `n`, which we own and which has the size
    // the ioctl number encodes.
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV as _,
            &mut n as *mut libc::seccomp_notif,
        )
    };
    (r == 0).then_some(n)
}

/// Whether notification `id` is still pending (its caller alive and waiting).
pub(crate) fn id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    let mut id = id;
    // SAFETY: ID_VALID reads one u64 from the pointer, which points at our local.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _,
            &mut id as *mut u64,
        ) == 0
    }
}

/// The kernel's `statfs` of an open file, as the C struct the caller expects back.
pub(crate) fn fstatfs(fd: BorrowedFd<'_>) -> Option<libc::statfs> {
    // SAFETY: an all-zero statfs is valid; fstatfs fills the struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open descriptor and `st` a writable statfs.
    (unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } == 0).then_some(st)
}

pub(crate) fn send(listener: BorrowedFd<'_>, id: u64, resp: Resp) {
    let (val, error, flags) = match resp {
        Resp::Done => (0, 0, 0),
        Resp::Error(e) => (0, -e, 0),
        Resp::Continue => (0, 0, FLAG_CONTINUE),
    };
    let mut r = libc::seccomp_notif_resp {
        id,
        val,
        error,
        flags,
    };
    // SAFETY: SEND reads one seccomp_notif_resp from the pointer, our fully initialised
    // local. A failure (the caller died meanwhile) needs no handling.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND as _,
            &mut r as *mut libc::seccomp_notif_resp,
        )
    };
}

/// Sets this thread's filesystem uid and gid (per-thread system calls).
pub(crate) fn set_fs_ids(uid: u32, gid: u32) {
    // SAFETY: setfsgid/setfsuid change only this thread's filesystem ids; they take
    // plain integers and cannot fail in a way that touches memory.
    unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
    }
}

/// Whether this thread's filesystem uid and gid are 0 (setfsuid with an invalid id
/// returns the current one without changing it).
pub(crate) fn fs_ids_are_root() -> bool {
    // SAFETY: as above; -1 (u32::MAX) is never a valid id, so these only read.
    unsafe { libc::setfsuid(u32::MAX) == 0 && libc::setfsgid(u32::MAX) == 0 }
}

/// `SECCOMP_USER_NOTIF_FLAG_CONTINUE`.
const FLAG_CONTINUE: u32 = 1;

/// The bytes of a `statfs` struct, as `statfs(2)` writes them into the caller's memory.
pub(crate) fn statfs_bytes(st: &libc::statfs) -> &[u8] {
    // SAFETY: `libc::statfs` is a plain C struct of integers with no padding a read could
    // expose uninitialised (every field is written by the kernel or by us); the slice
    // borrows `st` and covers exactly its size.
    unsafe {
        std::slice::from_raw_parts(
            (st as *const libc::statfs).cast::<u8>(),
            std::mem::size_of::<libc::statfs>(),
        )
    }
}
