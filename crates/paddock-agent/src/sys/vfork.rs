//! Starting a command without copying the agent: `clone(CLONE_VM | CLONE_VFORK)` on a stack
//! of its own, as glibc's `posix_spawn` does, instead of std's `fork` (which a `pre_exec`
//! hook forces). A fork copies PID 1's page tables and marks every page copy-on-write, so
//! the agent takes a fault on each page it writes afterwards; on the exec round trip that
//! was most of the agent's own cost besides the command (`BENCHMARKS.md`).
//!
//! The child shares the agent's memory until it execs, and the agent's thread waits for that
//! (`CLONE_VFORK`). So the child only makes raw system calls on memory prepared before the
//! clone: no allocation, no lock, no libc wrapper that keeps process-wide state (glibc's
//! `setuid` family would signal the agent's threads), no panic. Every signal is blocked in
//! the agent's thread across the clone; the child resets handled signals to their default
//! (a handler would run on the shared memory), `SIGPIPE` to its default (std's rule) and
//! its mask to empty before it execs.
//!
//! It does what `sys::spawn` and `new_session` do on the fork path: its own session,
//! subreaper, `oom_score_adj` 500, the user's groups and ids, the working directory entered
//! as the user, standard streams from the descriptors given. A start that fails in the
//! child (exec error, or a step before it) is reported by errno over a close-on-exec pipe,
//! and the caller starts the command again through std, which gives the canonical error
//! (and runs a script without `#!` through `/bin/sh` as `execvp` does).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};

/// The child's stack. The child runs a few frames of raw system calls.
const STACK: usize = 64 * 1024;

/// What the child needs, all prepared before the clone.
pub(crate) struct Plan {
    /// Paths to try in order (the program, or each `PATH` directory joined with it).
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
    cwd: CString,
}

impl Plan {
    /// `program` as given (a name without `/` is looked up in `path`, a `PATH` value),
    /// `args` after it, `env` as the whole environment. None when a string holds a NUL
    /// byte (the caller's own checks refuse those first).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new<'a>(
        program: &str,
        args: &[String],
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
        path: &str,
        uid: u32,
        gid: u32,
        groups: &[u32],
        cwd: &CStr,
    ) -> Option<Plan> {
        let candidates = if program.contains('/') {
            vec![CString::new(program).ok()?]
        } else {
            path.split(':')
                .map(|d| if d.is_empty() { "." } else { d })
                .map(|d| CString::new(format!("{}/{program}", d.trim_end_matches('/'))))
                .collect::<Result<Vec<_>, _>>()
                .ok()?
        };
        let argv = std::iter::once(program)
            .chain(args.iter().map(String::as_str))
            .map(CString::new)
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        let envp = env
            .into_iter()
            .map(|(k, v)| CString::new(format!("{k}={v}")))
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        Some(Plan {
            candidates,
            argv,
            envp,
            uid,
            gid,
            groups: groups.to_vec(),
            cwd: cwd.to_owned(),
        })
    }
}

/// A command's standard streams for [`spawn`]: the agent's ends and the child's (all
/// close-on-exec; the child's become its 0, 1 and 2, and close here once it runs).
pub(crate) struct Pipes {
    pub(crate) out_r: OwnedFd,
    pub(crate) err_r: OwnedFd,
    pub(crate) in_w: Option<OwnedFd>,
    pub(crate) child: [OwnedFd; 3],
}

impl Pipes {
    /// Stdout and stderr pipes, and stdin: a pipe when `stdin`, else `/dev/null`.
    pub(crate) fn new(stdin: bool) -> std::io::Result<Pipes> {
        use rustix::pipe::{PipeFlags, pipe_with};
        let (out_r, out_w) = pipe_with(PipeFlags::CLOEXEC)?;
        let (err_r, err_w) = pipe_with(PipeFlags::CLOEXEC)?;
        let (in_r, in_w) = if stdin {
            let (r, w) = pipe_with(PipeFlags::CLOEXEC)?;
            (r, Some(w))
        } else {
            (OwnedFd::from(std::fs::File::open("/dev/null")?), None)
        };
        Ok(Pipes {
            out_r,
            err_r,
            in_w,
            child: [in_r, out_w, err_w],
        })
    }

    pub(crate) fn child_ends(&self) -> [std::os::fd::RawFd; 3] {
        use std::os::fd::AsRawFd as _;
        [
            self.child[0].as_raw_fd(),
            self.child[1].as_raw_fd(),
            self.child[2].as_raw_fd(),
        ]
    }
}

/// The child's view of a [`Plan`]: raw pointers only.
struct Raw {
    candidates: Vec<*const libc::c_char>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    uid: u32,
    gid: u32,
    groups: *const libc::gid_t,
    ngroups: usize,
    cwd: *const libc::c_char,
    stdio: [RawFd; 3],
    /// Write end of the error pipe (close-on-exec).
    err: RawFd,
}

/// Starts `plan` with `stdio` as its descriptors 0, 1 and 2. `Ok(Some(pid))`: it runs (its
/// exec succeeded); `Ok(None)`: the child could not start it (the caller falls back to
/// std, which reports why); `Err`: the clone itself failed. The caller holds the process
/// table's lock, so the reaper cannot collect a failed child before this reaps it.
pub(crate) fn spawn(plan: &Plan, stdio: [RawFd; 3]) -> io::Result<Option<u32>> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just made and are owned here only.
    let (err_r, err_w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let nul = |v: &[CString]| {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect::<Vec<_>>()
    };
    let raw = Raw {
        candidates: plan.candidates.iter().map(|s| s.as_ptr()).collect(),
        argv: nul(&plan.argv),
        envp: nul(&plan.envp),
        uid: plan.uid,
        gid: plan.gid,
        groups: plan.groups.as_ptr(),
        ngroups: plan.groups.len(),
        cwd: plan.cwd.as_ptr(),
        stdio,
        err: err_w.as_raw_fd(),
    };
    let mut stack = vec![0u8; STACK];
    // The stack grows down; the top, 16-byte aligned.
    // SAFETY: the offset stays within the allocation.
    let top = unsafe { stack.as_mut_ptr().add(STACK) };
    let top = (top as usize & !15) as *mut libc::c_void;
    // SAFETY: every signal is blocked in this thread across the clone (the child inherits
    // the mask, so no handler of the agent runs on its stack before it resets them) and
    // restored after. The child runs `child` on `stack`, which outlives it: with
    // CLONE_VFORK this thread sleeps until the child has exec'd or exited, and `raw`, the
    // plan's strings and `stack` are dropped only after that.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw const raw).cast_mut().cast(),
        );
        let e = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(e);
        }
        pid
    };
    drop(err_w);
    drop(stack);
    let mut errno = [0u8; 4];
    let n = rustix::io::read(&err_r, &mut errno).unwrap_or(0);
    if n == 0 {
        return Ok(Some(pid as u32));
    }
    // The child failed before its exec and exited: collect it here (the caller holds the
    // table lock, which the reaper needs), so no zombie and no stray exit in the table.
    let mut status = 0;
    // SAFETY: waits for the child just made, writing its status into a local.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Ok(None)
}

/// The child: raw system calls only (module docs). Never returns.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Raw` of `spawn`, alive while the parent waits; every pointer in
    // it points at strings and arrays the parent keeps alive for as long. Only system
    // calls follow, on this child's own stack.
    unsafe {
        let r = &*(arg as *const Raw);
        let fail = |err: RawFd| -> ! {
            let e = *libc::__errno_location();
            let b = e.to_ne_bytes();
            libc::write(err, b.as_ptr().cast(), 4);
            libc::_exit(127)
        };
        for (i, &fd) in r.stdio.iter().enumerate() {
            let to = i as RawFd;
            if fd == to {
                // dup2 to itself would keep close-on-exec.
                let fl = libc::fcntl(fd, libc::F_GETFD);
                if fl < 0 || libc::fcntl(fd, libc::F_SETFD, fl & !libc::FD_CLOEXEC) < 0 {
                    fail(r.err);
                }
            } else if libc::dup2(fd, to) < 0 {
                fail(r.err);
            }
        }
        if libc::syscall(libc::SYS_setsid) < 0 {
            fail(r.err);
        }
        // gVisor refuses a subreaper to all but PID 1 (EINVAL): ignored, as on the fork path.
        if libc::syscall(libc::SYS_prctl, libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0
            && *libc::__errno_location() != libc::EINVAL
        {
            fail(r.err);
        }
        let fd = libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            libc::syscall(libc::SYS_write, fd, b"500".as_ptr(), 3);
            libc::syscall(libc::SYS_close, fd);
        }
        if libc::syscall(libc::SYS_setgroups, r.ngroups, r.groups) < 0
            || libc::syscall(libc::SYS_setresgid, r.gid, r.gid, r.gid) < 0
            || libc::syscall(libc::SYS_setresuid, r.uid, r.uid, r.uid) < 0
            || libc::syscall(libc::SYS_chdir, r.cwd) < 0
        {
            fail(r.err);
        }
        // Handled signals to their default (a handler would run on the agent's memory),
        // SIGPIPE too (std's rule for a child), then nothing blocked. glibc's `sigaction`
        // is a plain system call wrapper (it refuses its own two internal signals, which
        // only ever target the agent's threads).
        for sig in 1..=64 {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if (old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN)
                || sig == libc::SIGPIPE
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        let empty: libc::sigset_t = std::mem::zeroed();
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty,
            std::ptr::null_mut::<libc::sigset_t>(),
            8usize,
        );
        for &path in &r.candidates {
            libc::syscall(libc::SYS_execve, path, r.argv.as_ptr(), r.envp.as_ptr());
        }
        fail(r.err)
    }
}
