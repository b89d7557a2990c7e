//! `libpaddock-gvisor-compat.so`: preloaded into every dynamically linked glibc program of a
//! gVisor sandbox (`/etc/ld.so.preload`, bound read-only by the setup stage;
//! `docs/isolation.md`, "What is different on gVisor").
//!
//! The Sentry of the runsc this was written for (Debian's `0.0~20221219`) rejects the
//! `AT_NO_AUTOMOUNT` flag of `statx(2)` and `newfstatat(2)` with `EINVAL`. coreutils 9 passes
//! it on every `statx` (`ls -l`, `stat`), and glibc's `statx` fallback passes it on to
//! `fstatat`, so a seccomp `ENOSYS` does not help. The flag only stops the kernel from
//! triggering an automount, and a gVisor sandbox has no automount points, so dropping it
//! changes no answer. These wrappers make the system call themselves with the flag cleared;
//! every other flag and argument goes through unchanged, and errors come back through glibc's
//! `syscall`, which sets `errno`.
//!
//! Built by `paddock-runtime`'s build script with `rustc --crate-type cdylib -C panic=abort`
//! (no_std: it links no library and needs nothing from the image but the `syscall` function
//! of the process's own libc). It is never loaded into a native sandbox.
#![no_std]

use core::ffi::{c_char, c_int, c_long, c_uint, c_void};

const AT_NO_AUTOMOUNT: c_int = 0x800;
#[cfg(target_arch = "x86_64")]
const SYS_STATX: c_long = 332;
#[cfg(target_arch = "x86_64")]
const SYS_NEWFSTATAT: c_long = 262;
#[cfg(target_arch = "aarch64")]
const SYS_STATX: c_long = 291;
#[cfg(target_arch = "aarch64")]
const SYS_NEWFSTATAT: c_long = 79;

unsafe extern "C" {
    /// glibc's `syscall(3)`: the raw call, `-1` and `errno` on failure.
    fn syscall(n: c_long, ...) -> c_long;
}

/// `statx(2)` without `AT_NO_AUTOMOUNT`.
///
/// # Safety
/// The caller's contract is `statx(2)`'s: `path` a C string, `buf` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn statx(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mask: c_uint,
    buf: *mut c_void,
) -> c_int {
    // SAFETY: the arguments are the caller's, passed on as the kernel reads them.
    unsafe { syscall(SYS_STATX, dirfd, path, flags & !AT_NO_AUTOMOUNT, mask, buf) as c_int }
}

/// `fstatat(3)` (glibc 2.33+ exports it; `struct stat` is the kernel's on x86_64 and
/// aarch64) without `AT_NO_AUTOMOUNT`.
///
/// # Safety
/// The caller's contract is `fstatat(3)`'s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fstatat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_void,
    flags: c_int,
) -> c_int {
    // SAFETY: as for `statx`.
    unsafe { syscall(SYS_NEWFSTATAT, dirfd, path, buf, flags & !AT_NO_AUTOMOUNT) as c_int }
}

/// `fstatat64(3)`: the same call on 64-bit targets.
///
/// # Safety
/// The caller's contract is `fstatat64(3)`'s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fstatat64(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_void,
    flags: c_int,
) -> c_int {
    // SAFETY: as for `statx`.
    unsafe { syscall(SYS_NEWFSTATAT, dirfd, path, buf, flags & !AT_NO_AUTOMOUNT) as c_int }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
