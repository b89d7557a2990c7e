//! Starting the setup stage without copying the server: `posix_spawn`, with descriptors
//! placed at fixed numbers by its file actions.
//!
//! `std::process::Command` forks whenever a `pre_exec` hook is set, and placing a descriptor
//! at a fixed number needs one. A fork of the server (many threads, tens of MiB resident)
//! copies its page tables, write-protects every private page (with TLB shootdowns to the
//! other cores), makes the server take copy-on-write faults afterwards, and has the child
//! tear the copy down again at its exec: in a profile of sustained creates that was about a
//! fifth of the server's CPU. glibc's `posix_spawn` starts the child with
//! `clone(CLONE_VM | CLONE_VFORK)` on a stack of its own, so nothing is copied, and its file
//! actions do the `dup2`s. Neither `std` nor `rustix` offers `posix_spawn` with file actions,
//! so this calls libc.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;

/// Descriptors at or above this number are free for the copies made while the child's
/// descriptors are placed; every fixed number passed to [`spawn`] is below it.
const SCRATCH_FD: RawFd = 64;

/// A child started by [`spawn`].
#[derive(Debug)]
pub(crate) struct Spawned {
    pub pid: rustix::process::Pid,
    /// The write end of the child's stdin.
    pub stdin: OwnedFd,
    /// The read end of the child's stdout.
    pub stdout: OwnedFd,
}

/// Starts `program` with `args` and an empty environment: stdin and stdout on new pipes
/// (returned), stderr on `stderr`, and each `(fd, at)` of `place` open at number `at` across
/// the exec (every `at` above 2 and below 64). Signals are as `std` leaves them for a child:
/// none blocked, and `SIGPIPE` back to its default action.
pub(crate) fn spawn(
    program: &OsStr,
    args: &[&str],
    stderr: BorrowedFd<'_>,
    place: &[(BorrowedFd<'_>, RawFd)],
) -> std::io::Result<Spawned> {
    if let Some((_, at)) = place.iter().find(|(_, at)| !(3..SCRATCH_FD).contains(at)) {
        return Err(std::io::Error::other(format!(
            "descriptor number {at} is outside 3..{SCRATCH_FD}"
        )));
    }
    let nul = |s: &[u8]| CString::new(s).map_err(|_| std::io::Error::other("NUL in argument"));
    let path = nul(program.as_bytes())?;
    let mut argv_owned = vec![path.clone()];
    for a in args {
        argv_owned.push(nul(a.as_bytes())?);
    }
    let mut argv: Vec<*mut libc::c_char> =
        argv_owned.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv.push(std::ptr::null_mut());
    let mut envp: [*mut libc::c_char; 1] = [std::ptr::null_mut()];

    let (in_r, in_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let (out_r, out_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // Copies of the sources above every target number (close-on-exec, so they close at the
    // exec): no `dup2` onto a target can then clobber a source still to be placed, and a
    // source already at its target number is still moved by a real `dup2`, which clears
    // close-on-exec on the target.
    let mut sources: Vec<(OwnedFd, RawFd)> = Vec::with_capacity(place.len() + 3);
    for (fd, at) in [(in_r.as_fd(), 0), (out_w.as_fd(), 1), (stderr, 2)]
        .into_iter()
        .chain(place.iter().copied())
    {
        sources.push((rustix::io::fcntl_dupfd_cloexec(fd, SCRATCH_FD)?, at));
    }

    let mut actions = FileActions::new()?;
    for (src, at) in &sources {
        actions.dup2(src.as_raw_fd(), *at)?;
    }
    let attr = SpawnAttr::new()?;

    let mut pid: libc::pid_t = 0;
    // SAFETY: `pid` is a live `pid_t`; `path`, `argv`'s strings (owned by `argv_owned`)
    // and both NULL-terminated arrays outlive the call; `actions` and `attr` were
    // initialised by their `init` functions and are destroyed only after the call. In the
    // child, glibc performs only the file actions and the attributes before `execve`.
    let r = unsafe {
        libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            &actions.0,
            &attr.0,
            argv.as_ptr(),
            envp.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::from_raw_os_error(r));
    }
    drop((in_r, out_w, sources));
    Ok(Spawned {
        pid: rustix::process::Pid::from_raw(pid)
            .ok_or_else(|| std::io::Error::other("posix_spawn returned pid 0"))?,
        stdin: in_w,
        stdout: out_r,
    })
}

/// Waits for a child [`spawn`] started and collects its exit status.
pub(crate) fn wait(pid: rustix::process::Pid) {
    let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
}

/// `posix_spawn_file_actions_t`, destroyed on drop.
struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> std::io::Result<FileActions> {
        // SAFETY: an all-zero `posix_spawn_file_actions_t` is only storage; `init` below
        // initialises it before any other use.
        let mut a = FileActions(unsafe { std::mem::zeroed() });
        // SAFETY: `a.0` is a live, writable `posix_spawn_file_actions_t`.
        let r = unsafe { libc::posix_spawn_file_actions_init(&mut a.0) };
        if r != 0 {
            // Not initialised: `Drop` must not destroy it.
            std::mem::forget(a);
            return Err(std::io::Error::from_raw_os_error(r));
        }
        Ok(a)
    }

    fn dup2(&mut self, fd: RawFd, at: RawFd) -> std::io::Result<()> {
        // SAFETY: `self.0` was initialised by `init`; `adddup2` records the two integers.
        let r = unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, fd, at) };
        if r != 0 {
            return Err(std::io::Error::from_raw_os_error(r));
        }
        Ok(())
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: `self.0` was initialised by `init` (see `new`) and is destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// `posix_spawnattr_t` with an empty signal mask and `SIGPIPE` at its default action,
/// destroyed on drop.
struct SpawnAttr(libc::posix_spawnattr_t);

impl SpawnAttr {
    fn new() -> std::io::Result<SpawnAttr> {
        let check = |r: libc::c_int| {
            if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::from_raw_os_error(r))
            }
        };
        // SAFETY: an all-zero `posix_spawnattr_t` is only storage; `init` below initialises
        // it before any other use.
        let mut a = SpawnAttr(unsafe { std::mem::zeroed() });
        // SAFETY: `a.0` is a live, writable `posix_spawnattr_t`.
        if let Err(e) = check(unsafe { libc::posix_spawnattr_init(&mut a.0) }) {
            // Not initialised: `Drop` must not destroy it.
            std::mem::forget(a);
            return Err(e);
        }
        // SAFETY: `empty` and `pipe` are live `sigset_t`s initialised by `sigemptyset`
        // before they are read; `a.0` was initialised above. The setters copy the sets.
        unsafe {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            let mut pipe: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut pipe);
            libc::sigaddset(&mut pipe, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigmask(&mut a.0, &empty))?;
            check(libc::posix_spawnattr_setsigdefault(&mut a.0, &pipe))?;
            check(libc::posix_spawnattr_setflags(
                &mut a.0,
                (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
            ))?;
        }
        Ok(a)
    }
}

impl Drop for SpawnAttr {
    fn drop(&mut self) {
        // SAFETY: `self.0` was initialised by `init` (see `new`) and is destroyed once.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    #[test]
    fn places_descriptors_and_pipes_stdio() {
        // A pipe's write end placed at 5: the child writes to it, reads stdin and lists its
        // descriptors on stdout.
        let (keep_r, keep_w) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
        let devnull = std::fs::File::create("/dev/null").expect("/dev/null");
        // What this process (the test harness, other tests' threads) leaves open across an
        // exec, before and after the spawn: none of it is the spawn's doing.
        let mut inherited = open_across_exec();
        let child = spawn(
            OsStr::new("/bin/sh"),
            &[
                "-c",
                "read line; echo \"got $line\"; echo to5 >&5; ls /proc/self/fd | sort -n | tr '\\n' ' '",
            ],
            devnull.as_fd(),
            &[(keep_w.as_fd(), 5)],
        )
        .expect("spawn");
        drop(keep_w);
        let mut stdin = std::fs::File::from(child.stdin);
        stdin.write_all(b"hello\n").expect("stdin");
        drop(stdin);
        let mut out = String::new();
        std::fs::File::from(child.stdout)
            .read_to_string(&mut out)
            .expect("stdout");
        wait(child.pid);
        let mut on5 = String::new();
        std::fs::File::from(keep_r)
            .read_to_string(&mut on5)
            .expect("fd 5");
        assert_eq!(on5, "to5\n");
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("got hello"));
        // 0, 1, 2, 5, what this test process leaves open across an exec itself (the test
        // harness's own descriptors), and the directory `ls` opened: none of the pipes or
        // the copies made for the placing crossed the exec.
        let fds: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert!(fds.starts_with(&["0", "1", "2"]), "{fds:?}");
        assert!(fds.contains(&"5"), "{fds:?}");
        inherited.extend(open_across_exec());
        let extra: Vec<&&str> = fds
            .iter()
            .filter(|f| !["0", "1", "2", "5"].contains(f) && !inherited.contains(&f.to_string()))
            .collect();
        assert!(extra.len() <= 1, "{fds:?}, inherited {inherited:?}");
    }

    /// This process's descriptors above 2 without close-on-exec (`/proc/self/fdinfo` flags).
    fn open_across_exec() -> Vec<String> {
        std::fs::read_dir("/proc/self/fdinfo")
            .expect("fdinfo")
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let info = std::fs::read_to_string(e.path()).ok()?;
                let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
                let flags = u32::from_str_radix(flags.trim(), 8).ok()?;
                (flags & libc::O_CLOEXEC as u32 == 0 && name.parse::<i32>().ok()? > 2)
                    .then_some(name)
            })
            .collect()
    }

    #[test]
    fn refuses_a_number_among_the_scratch_copies() {
        let devnull = std::fs::File::create("/dev/null").expect("/dev/null");
        let err = spawn(
            OsStr::new("/bin/true"),
            &[],
            devnull.as_fd(),
            &[(devnull.as_fd(), SCRATCH_FD)],
        )
        .expect_err("64 is scratch");
        assert!(err.to_string().contains("outside"), "{err}");
    }

    #[test]
    fn a_missing_program_is_an_error() {
        let devnull = std::fs::File::create("/dev/null").expect("/dev/null");
        let err = spawn(OsStr::new("/nonexistent/x"), &[], devnull.as_fd(), &[])
            .expect_err("no such program");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    }
}
