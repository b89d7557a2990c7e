//! `statfs(2)` answered with each sandbox's disk limit.
//!
//! A sandbox's root is an overlay whose upper layer is a subvolume of one btrfs filesystem,
//! limited by a qgroup. The kernel's `statfs` of that filesystem reports the whole
//! filesystem (btrfs ignores qgroups there), so `df` inside a sandbox would show the host's
//! disk, not the sandbox's limit, and programs that size their work by free space would be
//! misled. Project quotas, which do make `statfs` report a limit on ext4 and XFS, need
//! `CONFIG_QUOTA`, which the supported kernels need not have; a filesystem per sandbox would
//! cost a loop device and a `mkfs` per create.
//!
//! So the setup stage installs a seccomp filter that turns every `statfs` (the path form;
//! `fstatfs` is untouched) into a user notification, and PID 1 keeps the listener at a fixed
//! descriptor. This module takes its own copy with `pidfd_getfd` when a sandbox starts or is
//! adopted, and one thread answers every sandbox's notifications:
//! - the path is read from the caller's memory and resolved inside the caller's root with
//!   `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` and `O_PATH` only (nothing is ever
//!   opened for reading or writing), on this thread with the caller's filesystem uid, gid
//!   and groups, so permission checks are the caller's or stricter;
//! - a path on the sandbox's root mount gets the filesystem's numbers with the size set to
//!   the limit and the free space to what the limit leaves (usage from the qgroup, cached
//!   for a second), written back into the caller's buffer;
//! - everything else, and every failure, is handed back to the kernel
//!   (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`), which then gives its own answer or error.
//!
//! While no process answers (the server restarting), a `statfs` in the sandbox waits; it is
//! answered once the next runtime adopts the sandbox. The only process that may touch a
//! sandbox's memory here is the caller, between the kernel's notification and our answer,
//! checked with `SECCOMP_IOCTL_NOTIF_ID_VALID` after `/proc/<pid>` is opened and before the
//! answer is written, so a recycled pid is never written to.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, StatxFlags};
use rustix::process::PidfdGetfdFlags;

use crate::sys::notify as sys;

/// How long a qgroup reading answers `statfs` calls (reading it commits a btrfs transaction).
const USAGE_TTL: Duration = Duration::from_secs(1);
/// Longest path read from a caller (`PATH_MAX`).
const MAX_PATH: usize = 4096;

/// What one sandbox's answers need.
#[derive(Debug)]
struct Entry {
    id: String,
    listener: OwnedFd,
    /// Mount id of the sandbox's root (PID 1's `/`).
    root_mnt: u64,
    /// The disk limit; None answers every call with the kernel's numbers.
    limit: Option<u64>,
    /// The sandbox's writable subvolume on the host, whose qgroup holds its usage.
    subvol: PathBuf,
    usage: Mutex<Option<(Instant, u64)>>,
}

/// The thread that answers every registered sandbox's `statfs` notifications.
#[derive(Debug)]
pub(crate) struct StatfsServer {
    epoll: Arc<OwnedFd>,
    entries: Arc<Mutex<HashMap<RawFd, Arc<Entry>>>>,
}

impl StatfsServer {
    /// Starts the answering thread, or None when this kernel cannot hand a sandbox's
    /// listener to the host (`pidfd_getfd`, Linux 5.6), in which case sandboxes are made
    /// without the filter and `statfs` reports the layer filesystem.
    pub(crate) fn start() -> Option<StatfsServer> {
        if !supported() {
            tracing::info!("statfs: pidfd_getfd unavailable; df in sandboxes shows the host");
            return None;
        }
        let epoll = rustix::event::epoll::create(rustix::event::epoll::CreateFlags::CLOEXEC)
            .map_err(|e| tracing::warn!("statfs: epoll: {e}"))
            .ok()?;
        let s = StatfsServer {
            epoll: Arc::new(epoll),
            entries: Arc::default(),
        };
        let (epoll, entries) = (s.epoll.clone(), s.entries.clone());
        std::thread::Builder::new()
            .name("paddock-statfs".into())
            .spawn(move || serve(&epoll, &entries))
            .map_err(|e| tracing::warn!("statfs: thread: {e}"))
            .ok()?;
        Some(s)
    }

    /// Starts answering sandbox `id`, whose PID 1 is `pidfd`/`pid`. A sandbox made without
    /// the filter has no listener and is skipped.
    pub(crate) fn register(
        &self,
        id: &str,
        pidfd: BorrowedFd<'_>,
        pid: i32,
        limit: Option<u64>,
        subvol: PathBuf,
    ) {
        let listener = match rustix::process::pidfd_getfd(
            pidfd,
            paddock_core::STATFS_LISTENER_FD,
            PidfdGetfdFlags::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::debug!(sandbox = id, "statfs: no listener: {e}");
                return;
            }
        };
        if !is_seccomp_listener(listener.as_fd()) {
            tracing::warn!(sandbox = id, "statfs: descriptor 4 of PID 1 is no listener");
            return;
        }
        let Some(root_mnt) = mount_id_of(&format!("/proc/{pid}/root")) else {
            tracing::warn!(sandbox = id, "statfs: cannot read the root mount");
            return;
        };
        let raw = listener.as_raw_fd();
        let entry = Arc::new(Entry {
            id: id.to_string(),
            listener,
            root_mnt,
            limit,
            subvol,
            usage: Mutex::new(None),
        });
        let mut map = lock(&self.entries);
        map.retain(|_, e| e.id != id);
        if let Err(e) = rustix::event::epoll::add(
            &*self.epoll,
            entry.listener.as_fd(),
            rustix::event::epoll::EventData::new_u64(raw as u64),
            rustix::event::epoll::EventFlags::IN,
        ) {
            tracing::warn!(sandbox = id, "statfs: epoll add: {e}");
            return;
        }
        map.insert(raw, entry);
    }

    /// Stops answering sandbox `id` (its processes are gone or going).
    pub(crate) fn unregister(&self, id: &str) {
        let mut map = lock(&self.entries);
        map.retain(|_, e| {
            if e.id == id {
                let _ = rustix::event::epoll::delete(&*self.epoll, e.listener.as_fd());
                false
            } else {
                true
            }
        });
    }
}

/// Whether this kernel has `pidfd_getfd`: the test takes a copy of our own stdin.
fn supported() -> bool {
    let Ok(me) = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    ) else {
        return false;
    };
    rustix::process::pidfd_getfd(&me, 0, PidfdGetfdFlags::empty()).is_ok()
}

/// Whether `fd` is a seccomp listener (an anonymous inode named `[seccomp]`).
fn is_seccomp_listener(fd: BorrowedFd<'_>) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|l| l.as_os_str() == "anon_inode:seccomp notify")
        .unwrap_or(false)
}

fn mount_id_of(path: &str) -> Option<u64> {
    let fd = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).ok()?;
    mount_id(fd.as_fd())
}

fn mount_id(fd: BorrowedFd<'_>) -> Option<u64> {
    let st = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID).ok()?;
    (st.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id)
}

/// The answering loop. Answers are given one at a time: each is a few system calls (plus,
/// at most once a second per sandbox, a qgroup read).
fn serve(epoll: &OwnedFd, entries: &Mutex<HashMap<RawFd, Arc<Entry>>>) {
    let own_groups = rustix::process::getgroups().unwrap_or_default();
    let mut events: Vec<rustix::event::epoll::Event> = Vec::with_capacity(64);
    loop {
        events.clear();
        if let Err(e) =
            rustix::event::epoll::wait(epoll, rustix::buffer::spare_capacity(&mut events), None)
        {
            if e != rustix::io::Errno::INTR {
                tracing::error!("statfs: epoll wait: {e}; statfs answers stop");
                return;
            }
            continue;
        }
        for ev in &events {
            use rustix::event::epoll::EventFlags;
            let (flags, data) = (ev.flags, ev.data);
            let raw = data.u64() as RawFd;
            let Some(entry) = lock(entries).get(&raw).cloned() else {
                continue;
            };
            if flags.intersects(EventFlags::HUP | EventFlags::ERR)
                && !flags.contains(EventFlags::IN)
            {
                // Every process of the sandbox is gone.
                let _ = rustix::event::epoll::delete(epoll, entry.listener.as_fd());
                lock(entries).remove(&raw);
                continue;
            }
            answer_one(&entry, &own_groups);
        }
    }
}

/// Receives one notification of `e` and answers it.
fn answer_one(e: &Entry, own_groups: &[rustix::process::Gid]) {
    let Some(n) = sys::recv(e.listener.as_fd()) else {
        return;
    };
    let resp = match decide(e, &n, own_groups) {
        Some(Ok(())) => sys::Resp::Done,
        Some(Err(errno)) => sys::Resp::Error(errno),
        None => sys::Resp::Continue,
    };
    sys::send(e.listener.as_fd(), n.id, resp);
}

/// `Some(Ok)`: the answer was written into the caller's buffer; `Some(Err)`: fail the call
/// with this errno; `None`: let the kernel answer.
fn decide(
    e: &Entry,
    n: &libc::seccomp_notif,
    own_groups: &[rustix::process::Gid],
) -> Option<Result<(), i32>> {
    if n.data.nr != libc::SYS_statfs as i32 {
        return None;
    }
    let limit = e.limit?;
    // Open the caller's /proc directory first, then check the notification is still live:
    // from then on the directory names that very process even if the pid is recycled.
    let proc_dir = rustix::fs::open(
        format!("/proc/{}", n.pid),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    if !sys::id_valid(e.listener.as_fd(), n.id) {
        return None;
    }
    let mem = open_in(&proc_dir, "mem", OFlags::RDWR)?;
    let path = read_cstr(&mem, n.data.args[0])?;
    let creds = Creds::of(&proc_dir)?;
    let full = if path.starts_with('/') {
        path
    } else {
        let cwd = std::fs::read_link(format!("/proc/{}/cwd", n.pid)).ok()?;
        let cwd = cwd.to_str()?;
        if !cwd.starts_with('/') || cwd.ends_with(" (deleted)") {
            return None;
        }
        format!("{cwd}/{path}")
    };
    let root = rustix::fs::openat(
        &proc_dir,
        "root",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let rel = match full.trim_start_matches('/') {
        "" => ".",
        r => r,
    };
    let target = creds.with(own_groups, || {
        rustix::fs::openat2(
            &root,
            rel,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    })?;
    let target = target.ok()?;
    if mount_id(target.as_fd())? != e.root_mnt {
        return None;
    }
    let mut st = sys::fstatfs(target.as_fd())?;
    let used = e.usage()?;
    let bsize = u64::try_from(st.f_bsize).ok().filter(|b| *b > 0)?;
    let blocks = limit / bsize;
    let used_blocks = used.div_ceil(bsize).min(blocks);
    let free = blocks - used_blocks;
    st.f_blocks = blocks;
    st.f_bfree = free;
    st.f_bavail = free.min(st.f_bavail);
    let bytes = sys::statfs_bytes(&st);
    if !sys::id_valid(e.listener.as_fd(), n.id) {
        return None;
    }
    match mem.write_all_at(bytes, n.data.args[1]) {
        Ok(()) => Some(Ok(())),
        Err(_) => Some(Err(libc::EFAULT)),
    }
}

impl Entry {
    /// Bytes the sandbox's subvolume uses, at most [`USAGE_TTL`] old.
    fn usage(&self) -> Option<u64> {
        let mut u = lock(&self.usage);
        if let Some((at, v)) = *u
            && at.elapsed() < USAGE_TTL
        {
            return Some(v);
        }
        let v = crate::layers::qgroup_usage(&self.subvol)?;
        *u = Some((Instant::now(), v));
        Some(v)
    }
}

/// A poisoned lock is taken anyway: every value behind these locks stays valid.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_in(dir: &OwnedFd, name: &str, flags: OFlags) -> Option<File> {
    let fd = rustix::fs::openat(dir, name, flags | OFlags::CLOEXEC, Mode::empty()).ok()?;
    Some(File::from(fd))
}

/// Reads a NUL-terminated string at `addr` of the caller, page by page (the string may end
/// just before an unmapped page).
fn read_cstr(mem: &File, addr: u64) -> Option<String> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < MAX_PATH {
        let to_page_end = 4096 - (at % 4096) as usize;
        let mut buf = vec![0u8; to_page_end.min(MAX_PATH - out.len())];
        let n = mem.read_at(&mut buf, at).ok()?;
        if n == 0 {
            return None;
        }
        if let Some(end) = buf[..n].iter().position(|b| *b == 0) {
            out.extend_from_slice(&buf[..end]);
            return String::from_utf8(out).ok().filter(|s| !s.is_empty());
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    None
}

/// A caller's filesystem identity, from `/proc/<pid>/status` (host ids).
struct Creds {
    fsuid: u32,
    fsgid: u32,
    groups: Vec<rustix::process::Gid>,
}

impl Creds {
    fn of(proc_dir: &OwnedFd) -> Option<Creds> {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut open_in(proc_dir, "status", OFlags::RDONLY)?, &mut text)
            .ok()?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>())
        };
        let fsuid = field("Uid:")?.get(3)?.parse().ok()?;
        let fsgid = field("Gid:")?.get(3)?.parse().ok()?;
        let groups = field("Groups:")?
            .iter()
            .map(|g| g.parse().ok().map(rustix::process::Gid::from_raw))
            .collect::<Option<Vec<_>>>()?;
        Some(Creds {
            fsuid,
            fsgid,
            groups,
        })
    }

    /// Runs `f` on this thread with these filesystem ids and groups, then restores root's
    /// (and `own_groups`). Changing the filesystem uid from 0 also drops the thread's
    /// effective file capabilities (`CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`, ...) until it
    /// is restored. None if the ids could not be taken on or restored.
    fn with<T>(&self, own_groups: &[rustix::process::Gid], f: impl FnOnce() -> T) -> Option<T> {
        if rustix::thread::set_thread_groups(&self.groups).is_err() {
            return None;
        }
        sys::set_fs_ids(self.fsuid, self.fsgid);
        let out = f();
        sys::set_fs_ids(0, 0);
        if rustix::thread::set_thread_groups(own_groups).is_err() || !sys::fs_ids_are_root() {
            // This thread now has the wrong identity and must not answer anything more.
            tracing::error!("statfs: could not restore the answering thread's identity");
            std::process::abort();
        }
        Some(out)
    }
}
