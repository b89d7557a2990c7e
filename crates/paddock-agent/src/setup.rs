//! The setup stage: builds a sandbox around a fresh process and turns it into the agent.
//!
//! The host runtime starts `paddock-agent setup` as host root, writes a [`SetupConfig`] to its
//! stdin and reads one status line from its stdout: `ok <host pid of the sandbox's PID 1>`,
//! `refused <reason>` (the template cannot be used, [`Error::Template`]: the reason names only
//! paths in the sandbox and is answered to the client) or `err <message>` (logged only). Everything happens in one linear sequence, [`run`], whose comments state
//! each ordering constraint. It is written against raw syscalls because the order *is* the
//! security argument; see `docs/isolation.md` for the same sequence in prose.
//!
//! Two processes take part:
//! - **H**, the process the runtime spawned: it stays in the host's user and pid namespaces,
//!   joins the cgroups, builds the mount namespace and root filesystem, then forks C.
//! - **C**, which is PID 1 of a new pid namespace. It mounts `/proc`, enters fresh net, uts,
//!   ipc and cgroup namespaces, pivots into the root, enters the sandbox user namespace, drops
//!   capabilities, installs seccomp and execs the agent.
//!
//! The user namespace is entered *last*: every other namespace and every mount is therefore
//! owned by the host's initial user namespace, so the sandbox's root has no capability over
//! them (it can never mount, set the hostname or change routes), whatever seccomp allows.

use std::ffi::{CStr, CString};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Context, Error, Result, bail};
use paddock_core::{
    AGENT_LIB_DIR, AGENT_LISTEN_FD, AGENT_LOADER as LOADER, AGENT_MOUNTPOINT, SetupConfig,
};

use crate::{seccomp, sys};

mod gvisor;
mod paths;

pub(crate) use paths::{dir_in_root, file_in_root};

/// Capabilities a sandbox root keeps, within its own user namespace only: Docker's default
/// set minus `NET_RAW` (no raw sockets, security test B8) and `MKNOD` (useless without a host
/// capability, and device nodes are never wanted).
const KEPT_CAPS: &[caps::Capability] = &[
    caps::Capability::CAP_CHOWN,
    caps::Capability::CAP_DAC_OVERRIDE,
    caps::Capability::CAP_FOWNER,
    caps::Capability::CAP_FSETID,
    caps::Capability::CAP_KILL,
    caps::Capability::CAP_SETGID,
    caps::Capability::CAP_SETUID,
    caps::Capability::CAP_SETPCAP,
    caps::Capability::CAP_NET_BIND_SERVICE,
    caps::Capability::CAP_SYS_CHROOT,
    caps::Capability::CAP_AUDIT_WRITE,
    caps::Capability::CAP_SETFCAP,
];

/// `/proc` entries that leak host information or offer kernel knobs; covered by `/dev/null`
/// (files) or an empty read-only tmpfs (directories). The list follows runc's masked paths.
const MASKED_FILES: &[&str] = &[
    "kcore",
    "keys",
    "timer_list",
    "sched_debug",
    "latency_stats",
    "kallsyms",
    "kmsg",
    "sysrq-trigger",
];
const MASKED_DIRS: &[&str] = &["acpi", "scsi", "firmware", "asound", "driver"];
/// `/proc` entries left visible but read-only.
const READONLY_PROC: &[&str] = &["sys", "irq", "bus", "fs"];

/// Entry point of `paddock-agent setup`. Never returns.
pub fn main() -> ! {
    let mut out = std::io::stdout();
    let code = match run() {
        Ok(pid) => {
            let _ = writeln!(out, "ok {pid}");
            0
        }
        Err(e) => {
            let _ = match e.template_refusal() {
                Some(reason) => writeln!(out, "refused {}", reason.replace('\n', " ")),
                None => writeln!(out, "err {}", format!("{e:#}").replace('\n', " ")),
            };
            1
        }
    };
    let _ = out.flush();
    std::process::exit(code)
}

/// H's sequence. Returns the host pid of C, the sandbox's PID 1, once C has exec'd the agent.
fn run() -> Result<i32> {
    // 1. Read the config first: nothing below may depend on the environment we inherited.
    let mut raw = String::new();
    std::io::stdin()
        .read_to_string(&mut raw)
        .context("reading setup config")?;
    let cfg: SetupConfig = serde_json::from_str(&raw).context("parsing setup config")?;

    // 2. Join the sandbox's cgroups before creating anything, so every process and every
    //    page from here on is charged to and limited by them. C's cgroup namespace (step 11)
    //    is rooted at whatever cgroup C is in when it unshares, so this must come first.
    for procs in &cfg.cgroup_procs {
        fs::write(procs, "0").with_context(|| format!("joining cgroup {}", procs.display()))?;
    }

    // 3. Create the sandbox's user namespace in a throwaway child and keep a handle on it. It
    //    is needed now for id-mapped mounts (step 5) and joined by C only at the very end.
    //    H must write the maps itself: a process cannot map host ids into its own new user
    //    namespace.
    ensure_single_threaded()?;
    let userns = make_userns(cfg.id_base, cfg.id_count).context("creating user namespace")?;

    // 4. A private mount namespace; no mount below ever propagates to the host.
    unshare(libc::CLONE_NEWNS).context("unshare mount namespace")?;
    mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE, None).context("making / private")?;

    // 5. The root filesystem: the template seen through an id mapping (template uid 0 appears
    //    as the sandbox's root, i.e. host uid `id_base`), under a per-sandbox upper layer.
    //    nosuid/nodev: no setuid binary or device node in the image ever takes effect.
    //    Each layer of the template is id-mapped on its own mount point; overlayfs stacks them
    //    (lowerdir lists the top layer first).
    if cfg.lowers.is_empty() || cfg.lowers.len() != cfg.lower_mnts.len() {
        bail!("the template has no layers or mismatched mount points");
    }
    if !cfg.lower_id_bases.is_empty() && cfg.lower_id_bases.len() != cfg.lowers.len() {
        bail!("the template's layers and their id bases do not match");
    }
    for (i, (l, m)) in cfg.lowers.iter().zip(&cfg.lower_mnts).enumerate() {
        match cfg.lower_id_bases.get(i).copied().unwrap_or(0) {
            0 => attach_idmapped(l, m, &userns, true).context("id-mapping template")?,
            // A snapshot of another sandbox's writable layer: its owners are that sandbox's
            // host ids, mapped onto this sandbox's range by a user namespace of their own
            // (host uid 0, the owner of overlayfs's whiteouts and of what setup wrote, stays
            // 0, as it appeared to the sandbox the snapshot was taken of). No fallback to a
            // plain bind here: unmapped, the files would belong to another sandbox's ids.
            // A gVisor sandbox (`id_base` 0) maps the snapshot's ids onto its own 0..count;
            // host uid 0 then stays unmapped (shown as the overflow id), as it does in a
            // native sandbox's user namespace.
            base => {
                let map = match cfg.id_base {
                    0 => format!("{base} 0 {}\n", cfg.id_count),
                    id_base => format!("0 0 1\n{base} {id_base} {}\n", cfg.id_count),
                };
                let ns = make_userns_map(&map).context("creating a snapshot's id mapping")?;
                attach_idmapped_strict(l, m, &ns).context("id-mapping snapshot")?;
            }
        }
    }
    let lowerdir: Vec<String> = cfg
        .lower_mnts
        .iter()
        .rev()
        .map(|m| m.display().to_string())
        .collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir.join(":"),
        cfg.upper.display(),
        cfg.work.display()
    );
    let ro_nosuid = libc::MS_NOSUID | libc::MS_NODEV;
    mount(
        Some("overlay"),
        &cfg.root,
        Some("overlay"),
        ro_nosuid,
        Some(&opts),
    )
    .context("mounting overlay root")?;
    let root = cfg.root.clone();

    // 6. Host directories the template asks for (host /usr for `base`), read-only, id-mapped
    //    so host root's files appear owned by the sandbox's root, never writable by it.
    for b in &cfg.binds {
        let t = b.target.to_str().context("bind target is not UTF-8")?;
        let target = dir_in_root(&root, t)?;
        attach_idmapped(&b.source, &target, &userns, true)
            .with_context(|| format!("binding {}", b.source.display()))?;
    }

    // 6b. The agent's private loader and libraries, read-only, with the agent binary bound
    //     over the bundle's empty `paddock-agent` file so the loader can open it by path after
    //     pivot_root. Nothing of the agent then comes from the image (it may have no glibc).
    if let Some(lib) = &cfg.agent_lib {
        let target = dir_in_root(&root, AGENT_LIB_DIR)?;
        bind_readonly(lib, &target).context("binding the agent's libraries")?;
        bind_readonly(&cfg.agent, &target.join(AGENT_MOUNTPOINT))
            .context("binding the agent binary")?;
    }

    // 6c. The `sudo` shim, read-only and nosuid, in the shim directory: run by a sandbox user
    //     it asks PID 1 over a socket to run a command as root (module `sudo`). Setuid
    //     binaries cannot work under no_new_privs, so this is how `sudo` works here.
    let sudo = file_in_root(&root, &format!("{}/sudo", paddock_core::SHIM_DIR))?;
    bind_readonly(&cfg.sudo, &sudo).context("binding sudo shim")?;
    // A template's own sudo (setuid, so powerless here) is replaced by the shim as well, so
    // `sudo` works whatever PATH a login shell of the template sets.
    for own in ["usr/bin/sudo", "bin/sudo"] {
        let p = root.join(own);
        if p.symlink_metadata().is_ok_and(|m| m.is_file()) {
            bind_readonly(&cfg.sudo, &p).context("binding sudo shim")?;
        }
    }

    // 7. Size-limited tmpfs for /tmp and /dev/shm (their pages are charged to the memory
    //    cgroup joined in step 2), and a minimal /dev with its own devpts instance.
    let owner = format!("uid={0},gid={0}", cfg.id_base);
    let tmp_opts = format!("size={},mode=1777,{owner}", cfg.tmp_bytes);
    mount_tmpfs(&dir_in_root(&root, "/tmp")?, &tmp_opts)?;
    build_dev(&root, &cfg, &owner)?;

    // 7b. Secret files, if any: a small tmpfs at /run/secrets (never the writable layer),
    //     each file 0400 owned by the sandbox's default user, then remounted read-only. The
    //     mount belongs to the host's user namespace, so nothing inside can make it writable
    //     or unmount it.
    if !cfg.secret_files.is_empty() {
        write_secret_files(&root, &cfg).context("writing secret files")?;
    }

    // 7c. Volumes, id-mapped like the template (their files are in template id space on
    //     disk), read-write or read-only. The mount point is made inside the root without
    //     following any symlink (refused: before pivot_root it could point at the host).
    for v in &cfg.volumes {
        let target = volume_mount_point(&root, &v.target, cfg.id_base)
            .with_context(|| format!("preparing the mount point of volume at {}", v.target))?;
        attach_idmapped_inner(&v.source, &target, &userns, v.read_only, true)
            .with_context(|| format!("mounting volume at {}", v.target))?;
    }

    // 7d. A gVisor sandbox: runsc starts the agent on this root (module `gvisor`); C's steps
    //     are gVisor's business there.
    if let Some(g) = &cfg.gvisor {
        return gvisor::start(&cfg, g, &root);
    }

    // 8. The agent binary is opened now, while the host's filesystem is still reachable. It
    //    is executed from this descriptor after pivot_root; the file is owned by host root,
    //    which is unmapped in the sandbox, so the sandbox can never write to it.
    //    With a library bundle, the bundle's loader is what gets executed (step 18).
    let agent = match &cfg.agent_lib {
        Some(lib) => open_path(&lib.join(LOADER)).context("opening the agent's loader")?,
        None => open_path(&cfg.agent).context("opening agent binary")?,
    };
    let listen = AGENT_LISTEN_FD;

    // 9. A new pid namespace: the next child is its PID 1. When it dies the kernel kills every
    //    other process in the namespace, which is what makes destroy reliable.
    unshare(libc::CLONE_NEWPID).context("unshare pid namespace")?;
    let (err_r, err_w) = pipe().context("creating error pipe")?;
    ensure_single_threaded()?;
    // H is single-threaded (checked just above, and again by `fork`), so the child may run
    // arbitrary code after fork: no other thread can hold a lock (the allocator's, stdio's).
    let pid = match sys::fork().context("fork")? {
        sys::Forked::Parent(pid) => pid,
        sys::Forked::Child => {
            drop(err_r);
            let err = child(&cfg, &root, &userns, &agent, listen);
            let mut w = fs::File::from(err_w);
            let _ = write!(w, "{err:#}");
            // Skips the atexit handlers that belong to H.
            sys::exit_now(1)
        }
    };
    drop(err_w);
    // 10. C reports failures on the pipe; a successful exec closes it (O_CLOEXEC) empty.
    let mut msg = String::new();
    fs::File::from(err_r).read_to_string(&mut msg).ok();
    if !msg.is_empty() {
        wait_child(pid);
        return Err(Error::Child { message: msg });
    }
    Ok(pid)
}

/// C's sequence, running as PID 1 of the new pid namespace. Returns only on error.
fn child(
    cfg: &SetupConfig,
    root: &Path,
    userns: &OwnedFd,
    agent: &OwnedFd,
    listen: RawFd,
) -> Error {
    match child_inner(cfg, root, userns, agent, listen) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

enum Never {}

fn child_inner(
    cfg: &SetupConfig,
    root: &Path,
    userns: &OwnedFd,
    agent: &OwnedFd,
    listen: RawFd,
) -> Result<Never> {
    // 11. /proc for the new pid namespace. Only a process inside that namespace can mount it,
    //     so this is C's first step; masking needs the mount to exist.
    let proc_dir = dir_in_root(root, "/proc")?;
    let nse = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount(Some("proc"), &proc_dir, Some("proc"), nse, None).context("mounting /proc")?;
    for f in MASKED_FILES {
        let p = proc_dir.join(f);
        if p.exists() {
            mount(Some("/dev/null"), &p, None, libc::MS_BIND, None)
                .with_context(|| format!("masking /proc/{f}"))?;
        }
    }
    for d in MASKED_DIRS {
        let p = proc_dir.join(d);
        if p.is_dir() {
            mount(
                Some("tmpfs"),
                &p,
                Some("tmpfs"),
                libc::MS_RDONLY | nse,
                Some("size=0"),
            )
            .with_context(|| format!("masking /proc/{d}"))?;
        }
    }
    for d in READONLY_PROC {
        let p = proc_dir.join(d);
        if p.exists() {
            mount(
                Some(&p.to_string_lossy()),
                &p,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )?;
            let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | nse;
            mount(None, &p, None, flags, None).with_context(|| format!("read-only /proc/{d}"))?;
        }
    }

    // 12. Network (loopback only), hostname and IPC namespaces, plus a cgroup namespace rooted
    //     at the sandbox's cgroup (joined in step 2). They are created while C is still host
    //     root, so they belong to the host's user namespace and the sandbox cannot reconfigure
    //     them. The hostname and loopback must be set now for the same reason.
    //     With a prepared network namespace (the runtime's stock of network slots), C
    //     joins it instead: made by the runtime as host root, it is owned by the host's
    //     user namespace too, and nothing has ever run in it.
    if cfg.join_netns {
        sys::setup::join_netns_at(paddock_core::SETUP_NETNS_FD)
            .context("joining the prepared network namespace")?;
        unshare(libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWCGROUP)
            .context("unshare uts/ipc/cgroup")?;
    } else {
        unshare(
            libc::CLONE_NEWNET | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWCGROUP,
        )
        .context("unshare net/uts/ipc/cgroup")?;
    }
    rustix::system::sethostname(cfg.id.as_bytes()).context("sethostname")?;
    loopback_up().context("bringing up loopback")?;

    // 13. Enter the root. pivot_root(".", ".") stacks the old root on top of the new one, and
    //     the lazy unmount then drops the host's whole tree from this namespace.
    rustix::process::chdir(root).context("chdir to root")?;
    rustix::process::pivot_root(".", ".").context("pivot_root")?;
    rustix::mount::unmount(".", rustix::mount::UnmountFlags::DETACH).context("detach old root")?;
    rustix::process::chdir("/").context("chdir /")?;

    // 14. Enter the sandbox user namespace (step 3) and become its root, i.e. host uid
    //     `id_base`. From now on no capability reaches anything owned by the host's namespace.
    //     setns needs a single-threaded caller, which C is.
    rustix::thread::move_into_link_name_space(
        userns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::User),
    )
    .context("entering user namespace")?;
    set_ids().context("becoming sandbox root")?;

    // 15. Capabilities: keep a container-like set in the bounding, permitted, effective and
    //     inheritable sets, none ambient. Must precede seccomp, which filters capset callers.
    let keep: caps::CapsHashSet = KEPT_CAPS.iter().copied().collect();
    for c in caps::all() {
        if !keep.contains(&c) {
            caps::drop(None, caps::CapSet::Bounding, c).ok();
        }
    }
    caps::clear(None, caps::CapSet::Ambient).ok();
    for set in [
        caps::CapSet::Inheritable,
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
    ] {
        caps::set(None, set, &keep).with_context(|| format!("setting {set:?} capabilities"))?;
    }

    // 16. Descriptors: stdin becomes /dev/null (the runtime's config pipe is spent), the
    //     agent's listening socket moves to its fixed number, and every other descriptor is
    //     marked close-on-exec, so the agent starts with exactly 0, 1, 2 and the socket.
    //     stdout and stderr become /dev/null as well: they are the runtime's status pipe and
    //     the setup log on the host, and neither may stay reachable from inside (through
    //     /proc/1/fd). The agent's own logs are therefore not kept for now.
    let null = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("/dev/null")?;
    for fd in 0..=2 {
        dup2(null.as_raw_fd(), fd)?;
    }
    if listen != AGENT_LISTEN_FD {
        dup2(listen, AGENT_LISTEN_FD)?;
    }
    // Close-on-exec only changes descriptor flags: the agent and error pipe fds are needed
    // until exec (and are CLOEXEC already), and no Rust object is used after it.
    sys::setup::cloexec_from(4).context("close_range")?;

    // 17. no_new_privs, then seccomp. no_new_privs is required to install a filter without a
    //     host capability, and it also makes setuid binaries powerless from here on.
    rustix::thread::set_no_new_privs(true).context("no_new_privs")?;
    seccomp::install().context("installing seccomp filter")?;
    //     The statfs listener goes to its fixed descriptor without close-on-exec, so PID 1
    //     holds it (the agent marks it close-on-exec at once, as it does the socket).
    let mut statfs_fd = None;
    if cfg.statfs_notify {
        let l = seccomp::install_statfs_notify()?;
        dup2(l.as_raw_fd(), paddock_core::STATFS_LISTENER_FD)?;
        statfs_fd = Some(paddock_core::STATFS_LISTENER_FD);
    }

    // 18. Become the agent. The environment is built from scratch: nothing from the host.
    //     With a library bundle the loader runs the agent with the bundle as its only
    //     library directory and the image's loader cache ignored.
    let agent_path = CString::new(format!("{AGENT_LIB_DIR}/{AGENT_MOUNTPOINT}"))?;
    let lib_dir = CString::new(AGENT_LIB_DIR)?;
    let mut argv: Vec<&CStr> = vec![c"paddock-agent"];
    if cfg.agent_lib.is_some() {
        argv.extend([
            c"--inhibit-cache",
            c"--library-path",
            lib_dir.as_c_str(),
            // (No `--argv0`: it needs glibc 2.33; nothing reads the agent's argv[0].)
            agent_path.as_c_str(),
        ]);
    }
    argv.push(c"init");
    let env_vars = agent_env(cfg)?.into_iter().chain([format!(
        "PADDOCK_STATFS_FD={}",
        statfs_fd.map(|f| f.to_string()).unwrap_or_default()
    )]);
    let env_c: Vec<CString> = env_vars
        .into_iter()
        .map(CString::new)
        .collect::<Result<_, _>>()?;
    let envp: Vec<&CStr> = env_c.iter().map(CString::as_c_str).collect();
    // The descriptor is the agent executable (or its loader) opened in step 8.
    let e = sys::setup::exec_fd(agent.as_fd(), &argv, &envp);
    Err(e).context("exec agent")
}

/// The agent's environment, built from scratch (nothing from the host), without the
/// statfs listener's descriptor.
fn agent_env(cfg: &SetupConfig) -> Result<Vec<String>> {
    Ok(vec![
        format!("PADDOCK_SANDBOX_ID={}", cfg.id),
        format!("PADDOCK_LOG={}", cfg.log),
        format!(
            "PADDOCK_SANDBOX_ENV={}",
            serde_json::to_string(&{
                let mut env = cfg.env.clone();
                env.extend(cfg.secret_env.iter().map(|(k, v)| (k.clone(), v.0.clone())));
                env
            })?
        ),
        format!("PADDOCK_WORKDIR={}", cfg.workdir.as_deref().unwrap_or("")),
        format!("PATH={}", paddock_core::SANDBOX_PATH),
    ])
}

/// Fails unless this process has exactly one thread. H forks children that run arbitrary
/// Rust (allocating, formatting) before they exec: in a multi-threaded process another thread
/// could hold the allocator's or stdio's lock at the fork, and the child would deadlock or
/// corrupt state. `setns` into a user namespace and `unshare(CLONE_NEWUSER)` also require a
/// single thread. Nothing in H starts threads today; this keeps it that way.
fn ensure_single_threaded() -> Result<()> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    match sys::threads_in(&status) {
        Some(1) => Ok(()),
        Some(n) => {
            bail!("the setup stage must be single-threaded before it forks, but has {n} threads")
        }
        None => bail!("no Threads: line in /proc/self/status"),
    }
}

/// Makes a user namespace with `base..base+count` mapped to `0..count` and returns an fd on it.
fn make_userns(base: u32, count: u32) -> Result<OwnedFd> {
    make_userns_map(&format!("0 {base} {count}\n"))
}

/// Makes a user namespace whose uid and gid maps are `map` (`/proc/PID/uid_map` lines) and
/// returns an fd on it.
fn make_userns_map(map: &str) -> Result<OwnedFd> {
    let (r, w) = pipe()?;
    let (r2, w2) = pipe()?;
    // H is single-threaded (`run` checks it before calling this; `fork` checks again).
    let pid = match sys::fork().context("fork")? {
        sys::Forked::Parent(pid) => pid,
        sys::Forked::Child => {
            drop(r);
            drop(w2);
            // Failures are reported by the byte written.
            let ok = sys::setup::unshare_namespaces(libc::CLONE_NEWUSER).is_ok();
            let mut w = fs::File::from(w);
            let _ = w.write_all(if ok { b"y" } else { b"n" });
            // Wait until the parent has taken its handle, signalled by the pipe closing.
            let mut buf = [0u8; 1];
            let _ = fs::File::from(r2).read(&mut buf);
            sys::exit_now(0)
        }
    };
    drop(w);
    drop(r2);
    let mut buf = [0u8; 1];
    let res = (|| {
        fs::File::from(r).read_exact(&mut buf)?;
        if buf[0] != b'y' {
            bail!("unshare(CLONE_NEWUSER) failed in helper");
        }
        fs::write(format!("/proc/{pid}/uid_map"), map).context("writing uid_map")?;
        fs::write(format!("/proc/{pid}/gid_map"), map).context("writing gid_map")?;
        let fd = fs::File::open(format!("/proc/{pid}/ns/user")).context("opening userns")?;
        Ok(OwnedFd::from(fd))
    })();
    drop(w2);
    wait_child(pid);
    res
}

/// Clones the tree at `src`, applies the user-namespace id mapping (and read-only) to the
/// clone and attaches it at `dst`. Filesystems that cannot be id-mapped get a plain bind,
/// where host-owned files appear as `nobody` inside: still read-only, just less tidy.
fn attach_idmapped(src: &Path, dst: &Path, userns: &OwnedFd, readonly: bool) -> Result<()> {
    attach_idmapped_inner(src, dst, userns, readonly, false)
}

/// [`attach_idmapped`], read-only, failing when the mapping cannot be applied.
fn attach_idmapped_strict(src: &Path, dst: &Path, userns: &OwnedFd) -> Result<()> {
    attach_idmapped_inner(src, dst, userns, true, true)
}

fn attach_idmapped_inner(
    src: &Path,
    dst: &Path,
    userns: &OwnedFd,
    readonly: bool,
    strict: bool,
) -> Result<()> {
    use rustix::mount::{MoveMountFlags, OpenTreeFlags, move_mount, open_tree};
    let tree = open_tree(
        rustix::fs::CWD,
        src,
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .with_context(|| format!("open_tree {}", src.display()))?;
    let mut set = libc::MOUNT_ATTR_IDMAP | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    if readonly {
        set |= libc::MOUNT_ATTR_RDONLY;
    }
    if let Err(e) = sys::setup::mount_setattr(tree.as_fd(), set, Some(userns.as_fd())) {
        if strict {
            bail!("mount_setattr (id mapping) {}: {e}", src.display());
        }
        // Not id-mappable (e.g. tmpfs before 6.3, or a nested mount that refuses): keep the
        // read-only and nosuid attributes without the mapping.
        sys::setup::mount_setattr(tree.as_fd(), set & !libc::MOUNT_ATTR_IDMAP, None)
            .with_context(|| format!("mount_setattr {}", src.display()))?;
    }
    move_mount(
        &tree,
        "",
        rustix::fs::CWD,
        dst,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .with_context(|| format!("move_mount to {}", dst.display()))?;
    Ok(())
}

/// The host path of the mount point `target` (checked by `paddock_core::check_mount_path`)
/// inside `root`: each component a directory, created (mode 0755, owned by the sandbox's
/// root through the overlay) if missing; a symlink or a non-directory anywhere is refused.
fn volume_mount_point(root: &Path, target: &str, id_base: u32) -> Result<PathBuf> {
    let t = paddock_core::check_mount_path(target).map_err(|e| Error::Child { message: e })?;
    let mut dir = root.to_path_buf();
    for part in t.trim_start_matches('/').split('/') {
        dir.push(part);
        match dir.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!("{} is not a directory in the template", dir.display()),
            Err(_) => {
                fs::create_dir(&dir).context("creating a volume's mount point")?;
                std::os::unix::fs::lchown(&dir, Some(id_base), Some(id_base))
                    .context("chown of a volume's mount point")?;
            }
        }
    }
    Ok(dir)
}

/// Mounts the tmpfs of [`paddock_core::SECRETS_DIR`] and writes the secret files into it.
/// `/run` and `/run/secrets` of the template must be directories or absent (a symlink there
/// could point out of the root before `pivot_root`, so it is refused).
fn write_secret_files(root: &Path, cfg: &SetupConfig) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut dir = root.to_path_buf();
    for part in paddock_core::SECRETS_DIR.trim_start_matches('/').split('/') {
        dir.push(part);
        match dir.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!("the template's {} is not a directory", dir.display()),
            Err(_) => fs::create_dir(&dir).context("creating the secrets mount point")?,
        }
    }
    let (uid, gid) = cfg.secret_owner;
    if uid >= cfg.id_count || gid >= cfg.id_count {
        bail!("the owner of the secret files is outside the sandbox's id range");
    }
    let (huid, hgid) = (cfg.id_base + uid, cfg.id_base + gid);
    let total: usize = cfg.secret_files.values().map(|v| v.0.len() + 4096).sum();
    let opts = format!(
        "size={},nr_inodes={},mode=0500,uid={huid},gid={hgid}",
        total + 65536,
        cfg.secret_files.len() + 16
    );
    mount_tmpfs(&dir, &opts)?;
    for (name, value) in &cfg.secret_files {
        if !paddock_core::valid_secret_name(name) {
            bail!("invalid secret file name");
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dir.join(name))
            .context("creating a secret file")?;
        f.write_all(value.0.as_bytes())
            .context("writing a secret file")?;
        std::os::unix::fs::fchown(&f, Some(huid), Some(hgid)).context("owning a secret file")?;
    }
    mount(
        None,
        &dir,
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(&opts),
    )
    .context("making the secrets mount read-only")
}

/// Builds `/dev`: a small tmpfs with the usual character devices, a private devpts and shm.
fn build_dev(root: &Path, cfg: &SetupConfig, owner: &str) -> Result<()> {
    // Images need not carry their mount points; they are made in the writable layer.
    let dev = dir_in_root(root, "/dev")?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(&format!("size=64k,mode=755,{owner}")),
    )
    .context("mounting /dev")?;
    // Device nodes are created here by host root; the sandbox could never make its own.
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let p = dev.join(name);
        let c = CString::new(p.as_os_str().as_bytes())?;
        sys::setup::mknod_char(&c, major, minor).with_context(|| format!("mknod /dev/{name}"))?;
        // mknod applies the umask; device nodes must be world read-writable.
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
    }
    for d in ["pts", "shm"] {
        fs::create_dir(dev.join(d))?;
    }
    let pts_opts = format!(
        "newinstance,ptmxmode=0666,mode=0620,gid={}",
        cfg.id_base + 5
    );
    mount(
        Some("devpts"),
        dev.join("pts"),
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(&pts_opts),
    )
    .context("mounting devpts")?;
    let shm_opts = format!("size={},mode=1777,{owner}", cfg.tmp_bytes);
    mount_tmpfs(&dev.join("shm"), &shm_opts)?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))?;
    }
    // Links and dirs above were created by host root; give them to the sandbox's root.
    for entry in [
        "pts", "shm", "ptmx", "fd", "stdin", "stdout", "stderr", "null", "zero", "full", "random",
        "urandom", "tty",
    ] {
        std::os::unix::fs::lchown(dev.join(entry), Some(cfg.id_base), Some(cfg.id_base)).ok();
    }
    Ok(())
}

/// Mounts a tmpfs on `target`, an existing directory (made by [`dir_in_root`]).
fn mount_tmpfs(target: &Path, opts: &str) -> Result<()> {
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(opts),
    )
    .with_context(|| format!("mounting tmpfs on {}", target.display()))
}

/// Becomes uid/gid 0 of the user namespace just entered, with no supplementary groups.
fn set_ids() -> Result<()> {
    use rustix::thread::{Gid, Uid, set_thread_groups, set_thread_res_gid, set_thread_res_uid};
    // H is single-threaded here, so the thread's credentials are the process's.
    set_thread_groups(&[]).context("setgroups")?;
    set_thread_res_gid(Gid::ROOT, Gid::ROOT, Gid::ROOT).context("setresgid")?;
    set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT).context("setresuid")?;
    Ok(())
}

/// Sets IFF_UP on `lo` in the current network namespace.
fn loopback_up() -> Result<()> {
    let sock = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )?;
    sys::setup::loopback_up(sock.as_fd()).context("SIOCSIFFLAGS")
}

fn inside(root: &Path, p: impl AsRef<Path>) -> PathBuf {
    root.join(p.as_ref().strip_prefix("/").unwrap_or(p.as_ref()))
}

/// Binds `source` (a file or directory of the host) onto `target`, read-only, nosuid, nodev.
fn bind_readonly(source: &Path, target: &Path) -> Result<()> {
    let src = source.to_str().context("bind source path is not UTF-8")?;
    mount(Some(src), target, None, libc::MS_BIND, None)?;
    mount(
        None,
        target,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )
    .context("remounting read-only")
}

fn open_path(p: &Path) -> Result<OwnedFd> {
    Ok(OwnedFd::from(fs::File::open(p)?))
}

fn unshare(flags: libc::c_int) -> Result<()> {
    Ok(sys::setup::unshare_namespaces(flags)?)
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).context("pipe2")
}

fn dup2(from: RawFd, to: RawFd) -> Result<()> {
    sys::setup::dup2_at(from, to).with_context(|| format!("dup2 {from} -> {to}"))
}

/// Reaps child `pid` of this process, waiting for it to exit.
fn wait_child(pid: i32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty());
    }
}

fn mount(
    src: Option<&str>,
    target: impl AsRef<Path>,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let cs = |s: &[u8]| {
        CString::new(s).map_err(|_| Error::Refused {
            reason: "NUL in mount argument".into(),
        })
    };
    let src = src.map(|s| cs(s.as_bytes())).transpose()?;
    let target_c = cs(target.as_ref().as_os_str().as_bytes())?;
    let fstype = fstype.map(|s| cs(s.as_bytes())).transpose()?;
    let data = data.map(|s| cs(s.as_bytes())).transpose()?;
    if let Err(e) = sys::setup::mount(
        src.as_deref(),
        &target_c,
        fstype.as_deref(),
        flags,
        data.as_deref(),
    ) {
        bail!("mount {}: {e}", target.as_ref().display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_line_is_parsed() {
        assert_eq!(
            sys::threads_in("Name:\tx\nThreads:\t7\nSigQ:\t0/1\n"),
            Some(7)
        );
        assert_eq!(sys::threads_in("Name:\tx\n"), None);
    }

    /// The check sees a second thread: the test harness runs this on a thread of its own,
    /// and one more is parked here so the count is above one whatever the harness does.
    #[test]
    fn a_second_thread_is_refused_before_forking() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        let e = ensure_single_threaded().unwrap_err().to_string();
        assert!(e.contains("must be single-threaded"), "{e}");
        drop(tx);
        t.join().unwrap().ok();
    }

    /// A freshly forked child has one thread, so the check passes where setup runs it.
    #[test]
    fn a_forked_child_is_single_threaded() {
        assert!(crate::sys::fork_for_test(
            || ensure_single_threaded().is_ok()
        ));
    }
}
