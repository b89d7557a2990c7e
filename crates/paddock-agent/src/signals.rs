//! Signals to processes of the sandbox, never by a bare pid number that may have been reused.
//!
//! PID 1 reaps every exit in the sandbox (`procs::reap`), so a number looked up in the process
//! table can be reaped and handed to a new process between the lookup and a `kill(2)`. Every
//! process the agent starts therefore has a pidfd, opened right after spawn while the table
//! lock keeps the reaper away and held until it is reaped; signals go through it
//! (`pidfd_send_signal`), and a reaped process is simply gone (`ESRCH`).
//! Descendants found through `/proc` get a pidfd of their own, checked against the start
//! time seen in the walk before anything is sent.
//!
//! Where `pidfd_open` does not exist (gVisor's Sentry answers `ENOSYS`), the handle is a
//! descriptor of the process's `/proc/<pid>` directory instead, opened at the same moment
//! (under the table lock, before the reaper can collect it). Such a directory stays bound to
//! the process it was opened for: once that process is reaped its `stat` reads pid 0 and
//! state `X`, never another process's. A signal then goes by number right after that check,
//! and for the agent's own children only while the reaper is held (the table lock, taken by
//! [`signal`] first in this mode), so the number cannot be freed between the check and the
//! `kill`. Inside gVisor this is the only path, and the Sentry, not the host kernel, is the
//! boundary it enforces.

use std::sync::atomic::{AtomicBool, Ordering};

use std::os::fd::{BorrowedFd, OwnedFd};

/// `PIDFD_SIGNAL_PROCESS_GROUP` (Linux 6.9): the signal goes to the process group whose id
/// is the pidfd's process.
const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 4;

/// How far a signal reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The process alone.
    Process,
    /// Its process group: every started process leads its own session and group.
    Group,
}

/// Opens a pidfd on `pid`. Only race-free for an unreaped child of this process (or a
/// number checked afterwards, as [`kill_tree`] does).
pub(crate) fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    let p = rustix::process::Pid::from_raw(pid as i32)
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    if !NO_PIDFD.load(Ordering::Relaxed) {
        match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
            Err(rustix::io::Errno::NOSYS) => NO_PIDFD.store(true, Ordering::Relaxed),
            r => return Ok(r?),
        }
    }
    let fd = rustix::fs::open(
        format!("/proc/{pid}"),
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    // The directory may belong to a number reused just before the open; the caller checks
    // the start time (or holds the reaper), as it does for a pidfd.
    Ok(fd)
}

/// Set once `pidfd_open` answered `ENOSYS`: handles are `/proc/<pid>` directories (module doc).
static NO_PIDFD: AtomicBool = AtomicBool::new(false);

/// Whether handles are `/proc/<pid>` directories rather than pidfds (module doc).
fn fallback() -> bool {
    NO_PIDFD.load(Ordering::Relaxed)
}

/// The pid behind a `/proc/<pid>` directory handle, or `ESRCH` once its process is reaped
/// (the Sentry then shows pid 0 and state `X`; Linux fails the read with `ESRCH`).
fn proc_dir_pid(dir: BorrowedFd<'_>) -> std::io::Result<i32> {
    let fd = rustix::fs::openat(
        dir,
        "stat",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let mut buf = [0u8; 512];
    let n = rustix::io::read(&fd, &mut buf)?;
    let text = String::from_utf8_lossy(&buf[..n]);
    let esrch = || std::io::Error::from_raw_os_error(libc::ESRCH);
    let pid: i32 = text
        .split(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(esrch)?;
    let state = text
        .get(text.rfind(')').ok_or_else(esrch)? + 2..)
        .and_then(|r| r.chars().next());
    if pid <= 0 || matches!(state, Some('X' | 'x')) {
        return Err(esrch());
    }
    Ok(pid)
}

/// `pidfd_send_signal(pidfd, sig, NULL, flags)`, or in the fallback (module doc) a check
/// that the handle's process is unreaped and `kill` by its number (`flags` is then the group
/// flag or 0).
fn send(pidfd: BorrowedFd<'_>, sig: i32, flags: libc::c_uint) -> std::io::Result<()> {
    if fallback() {
        let pid = proc_dir_pid(pidfd)?;
        let target = if flags & PIDFD_SIGNAL_PROCESS_GROUP != 0 {
            -pid
        } else {
            pid
        };
        // The number was just checked to be the handle's unreaped process (module doc).
        return crate::sys::kill(target, sig);
    }
    crate::sys::pidfd_send_signal(pidfd, sig, flags)
}

/// Sends `sig` to the process behind `pidfd` (number `pid`), or to its process group.
///
/// Kernels before 6.9 cannot address a group through a pidfd (`EINVAL`); there the group
/// gets `kill(-pid)`, but only after `hold_reaper` has run and while what it returns is
/// alive: the caller returns the process table's guard, so the reaper cannot collect the
/// leader meanwhile, and a signal 0 through the pidfd shows the leader is not reaped yet. An
/// unreaped leader keeps its number, which is the group's id, from being reused.
pub(crate) fn signal<G>(
    pidfd: BorrowedFd<'_>,
    pid: u32,
    sig: i32,
    scope: Scope,
    hold_reaper: impl FnOnce() -> G,
) -> std::io::Result<()> {
    signal_with(
        pidfd,
        pid,
        sig,
        scope,
        hold_reaper,
        PIDFD_SIGNAL_PROCESS_GROUP,
    )
}

/// [`signal`] with the group flag to try first (0 goes straight to the fallback; tests).
fn signal_with<G>(
    pidfd: BorrowedFd<'_>,
    pid: u32,
    sig: i32,
    scope: Scope,
    hold_reaper: impl FnOnce() -> G,
    group_flag: libc::c_uint,
) -> std::io::Result<()> {
    if fallback() {
        // The reaper is held from the check to the signal (module doc).
        let _guard = hold_reaper();
        let flag = match scope {
            Scope::Process => 0,
            Scope::Group => PIDFD_SIGNAL_PROCESS_GROUP,
        };
        return send(pidfd, sig, flag);
    }
    let by_flag = match (scope, group_flag) {
        (Scope::Process, _) => return send(pidfd, sig, 0),
        (Scope::Group, 0) => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
        (Scope::Group, f) => send(pidfd, sig, f),
    };
    match by_flag {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let _guard = hold_reaper();
            send(pidfd, 0, 0)?;
            // The group id is pinned as explained above.
            crate::sys::kill(-(pid as i32), sig)
        }
        r => r,
    }
}

/// Kills the process `root` that started at `start` (clock ticks since boot, field 22 of its
/// `stat`) and all of its descendants with SIGKILL. Descendants are found through `/proc`;
/// because every started process is a subreaper, a double-forked daemon is still a
/// descendant. Each victim is signalled through a pidfd opened after the walk and checked
/// against the start time the walk saw, so a number reused meanwhile is left alone. Repeats
/// a few times to catch processes forked while the first pass ran. In the `/proc/<pid>`
/// fallback (module doc) a descendant reaped by its own parent between the check in `send`
/// and the `kill` could free its number; reusing it needs the pid counter to wrap around
/// within that window, and every process it could then hit is in the same sandbox.
pub(crate) fn kill_tree(root: u32, start: u64) {
    for _ in 0..4 {
        let victims = descendants(root, start);
        if victims.is_empty() {
            return;
        }
        for (pid, start) in victims {
            let Ok(fd) = pidfd_open(pid) else { continue };
            if stat(pid).is_some_and(|s| s.start == start) {
                let _ = send(std::os::fd::AsFd::as_fd(&fd), libc::SIGKILL, 0);
            }
        }
    }
}

/// The fields of `/proc/<pid>/stat` the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) zombie: bool,
    pub(crate) ppid: u32,
    pub(crate) start: u64,
}

/// Reads `/proc/<pid>/stat`.
pub(crate) fn stat(pid: u32) -> Option<Stat> {
    use std::io::Read as _;
    // A stat line is a few hundred bytes (at most 52 numbers and a 16-byte name): read it
    // into a buffer on the stack, usually in one read. `read_to_string` sizes a heap buffer
    // from the file's size, which procfs reports as 0, and grows it in five reads.
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut buf = [0u8; 1024];
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                if buf[n - 1] == b'\n' {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    parse_stat(std::str::from_utf8(&buf[..n]).ok()?)
}

/// Parses a `stat` line. The command name may contain spaces and parentheses, so the fields
/// are taken after the last `)`: state (field 3), ppid (4), ..., starttime (22).
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = text.get(text.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split(' ').collect();
    Some(Stat {
        zombie: *f.first()? == "Z",
        ppid: f.get(1)?.parse().ok()?,
        start: f.get(19)?.trim().parse().ok()?,
    })
}

/// `root` (if it is still the process that started at `start`) and its living descendants,
/// each with its start time.
fn descendants(root: u32, start: u64) -> Vec<(u32, u64)> {
    let mut procs: Vec<(u32, Stat)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(s) = stat(pid) {
                procs.push((pid, s));
            }
        }
    }
    // A reused root number leads to someone else's tree: walk nothing.
    let Some(root_stat) = procs.iter().find(|(p, _)| *p == root).map(|(_, s)| *s) else {
        return Vec::new();
    };
    if root_stat.start != start {
        return Vec::new();
    }
    let mut out = Vec::new();
    if !root_stat.zombie {
        out.push((root, start));
    }
    let mut frontier = vec![root];
    let mut i = 0;
    while i < frontier.len() {
        let cur = frontier[i];
        for (p, s) in &procs {
            if s.ppid == cur && !frontier.contains(p) {
                frontier.push(*p);
                if !s.zombie {
                    out.push((*p, s.start));
                }
            }
        }
        i += 1;
    }
    out
}

/// Go's `ProcessState.String()` wording, which E2B clients display.
pub(crate) fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGKILL => "killed".into(),
        libc::SIGTERM => "terminated".into(),
        libc::SIGINT => "interrupt".into(),
        libc::SIGHUP => "hangup".into(),
        libc::SIGSEGV => "segmentation fault".into(),
        libc::SIGABRT => "aborted".into(),
        libc::SIGPIPE => "broken pipe".into(),
        libc::SIGBUS => "bus error".into(),
        libc::SIGFPE => "floating point exception".into(),
        libc::SIGQUIT => "quit".into(),
        libc::SIGUSR1 => "user defined signal 1".into(),
        libc::SIGUSR2 => "user defined signal 2".into(),
        libc::SIGXCPU => "CPU time limit exceeded".into(),
        n => format!("signal {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_are_parsed() {
        let line = "42 (a) b (c) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 1 2\n";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                zombie: false,
                ppid: 7,
                start: 12345
            })
        );
        assert_eq!(parse_stat("1 (x) Z 0"), None);
    }

    /// A tree of a shell and its background child is killed through pidfds; a wrong start
    /// time for the root (a reused number) kills nothing.
    #[test]
    fn kill_tree_checks_the_root_start_time() {
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 1000 & wait"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = stat(pid).unwrap().start;
        // Wait (bounded) for the background sleep to appear.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while descendants(pid, start).len() < 2 {
            assert!(std::time::Instant::now() < deadline, "no child appeared");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let kids: Vec<u32> = descendants(pid, start).iter().map(|v| v.0).collect();
        kill_tree(pid, start + 1);
        assert!(
            child.try_wait().unwrap().is_none(),
            "a wrong start time killed it"
        );
        kill_tree(pid, start);
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        // The sleep was re-parented to init (or a subreaper) and killed, so it is gone or a
        // zombie waiting there.
        for k in kids.into_iter().filter(|k| *k != pid) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while stat(k).is_some_and(|s| !s.zombie) {
                assert!(std::time::Instant::now() < deadline, "{k} survived");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }

    /// A shell leading its own process group, with a background `sleep` in that group.
    fn group() -> (std::process::Child, u32) {
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 1000 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = stat(pid).unwrap().start;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let sleep = loop {
            if let Some((p, _)) = descendants(pid, start).into_iter().find(|(p, _)| *p != pid) {
                break p;
            }
            assert!(std::time::Instant::now() < deadline, "no child appeared");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        (child, sleep)
    }

    fn gone_or_zombie(pid: u32) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while stat(pid).is_some_and(|s| !s.zombie) {
            assert!(std::time::Instant::now() < deadline, "{pid} survived");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Group signals reach the whole group both through `PIDFD_SIGNAL_PROCESS_GROUP` (when
    /// the kernel has it) and through the fallback for older kernels.
    #[test]
    fn group_signals_reach_the_group_with_and_without_the_kernel_flag() {
        for flag in [PIDFD_SIGNAL_PROCESS_GROUP, 0] {
            let (mut child, sleep) = group();
            let fd = pidfd_open(child.id()).unwrap();
            let mut held = false;
            let r = signal_with(
                std::os::fd::AsFd::as_fd(&fd),
                child.id(),
                libc::SIGKILL,
                Scope::Group,
                || held = true,
                flag,
            );
            r.unwrap();
            // (With the flag, a kernel before 6.9 takes the fallback as well.)
            assert!(
                held || flag != 0,
                "the fallback ran without holding the reaper"
            );
            let status = child.wait().unwrap();
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(libc::SIGKILL)
            );
            gone_or_zombie(sleep);
        }
    }

    /// Once its process is reaped, a pidfd sends nothing (`ESRCH`), in either path: the
    /// number may already belong to someone else.
    #[test]
    fn a_reaped_process_gets_no_signal() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let fd = pidfd_open(child.id()).unwrap();
        child.wait().unwrap();
        for (scope, flag) in [
            (Scope::Process, 0),
            (Scope::Group, PIDFD_SIGNAL_PROCESS_GROUP),
            (Scope::Group, 0),
        ] {
            let e = signal_with(
                std::os::fd::AsFd::as_fd(&fd),
                child.id(),
                libc::SIGKILL,
                scope,
                || (),
                flag,
            )
            .expect_err("signal after the reap");
            assert_eq!(e.raw_os_error(), Some(libc::ESRCH), "{scope:?} {flag}");
        }
    }
}
