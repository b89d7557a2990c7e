//! The setup stage's ending for a gVisor sandbox: H has joined the cgroups and built the root
//! in its private mount namespace (steps 2 to 7b); here it gives the sandbox a network
//! namespace of its own, writes the OCI bundle and has `runsc` start the agent as PID 1 on
//! that root. What C does for a native sandbox (pid, uts, ipc namespaces, `/proc`, the user
//! namespace, capabilities, seccomp) is the Sentry's job here: it is the kernel the sandbox
//! sees, and it never hands the sandbox's system calls to the host's.
//!
//! Every process runsc starts (the Sentry, the gofer) inherits H's cgroups, mount namespace
//! and network namespace, so the sandbox's limits apply to all of it and its mounts vanish
//! with its last process.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use paddock_core::{
    AGENT_LIB_DIR, AGENT_LOADER, AGENT_MOUNTPOINT, GVISOR_AGENT_DIR, GVISOR_AGENT_SOCK,
    GVISOR_COMPAT_DIR, GVISOR_COMPAT_LIB, GvisorSetup, SetupConfig,
};
use serde_json::json;

use super::{KEPT_CAPS, inside, loopback_up, mount, unshare};
use crate::error::{Context, Result, bail};

/// Starts the sandbox under runsc and returns the host pid of its Sentry (the process whose
/// life is the sandbox's).
pub(super) fn start(cfg: &SetupConfig, g: &GvisorSetup, root: &Path) -> Result<i32> {
    // The directory the agent binds its socket in: a host directory, so runsc's
    // `--host-uds=create` makes the socket one the runtime can connect to.
    let target = super::dir_in_root(root, GVISOR_AGENT_DIR)?;
    let dir = g.agent_dir.to_str().context("agent dir is not UTF-8")?;
    mount(Some(dir), &target, None, libc::MS_BIND, None).context("binding the agent dir")?;
    let nse = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount(
        None,
        &target,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | nse,
        None,
    )
    .context("remounting the agent dir")?;

    if let Some(compat) = &g.compat {
        bind_compat(root, compat, &g.bundle).context("preloading the gVisor compat library")?;
    }

    // A network namespace with loopback only; the runtime adds the sandbox's link to it as
    // for a native sandbox. gVisor's own network stack does not start on this runsc and
    // kernel, so the Sentry uses this namespace's stack (`--network=host`).
    unshare(libc::CLONE_NEWNET).context("unshare network namespace")?;
    loopback_up().context("bringing up loopback")?;

    fs::create_dir_all(&g.bundle).context("creating the bundle dir")?;
    let spec = bundle_spec(cfg, root)?;
    fs::write(
        g.bundle.join("config.json"),
        serde_json::to_vec_pretty(&spec)?,
    )
    .context("writing config.json")?;

    let runsc = |args: &[&str]| {
        let mut c = Command::new(&g.runsc);
        c.arg("--root")
            .arg(&g.state_dir)
            .args([
                "--platform",
                &g.platform,
                "--network=host",
                "--host-uds=create",
                "--overlay2=none",
                "--ignore-cgroups",
            ])
            .args(args)
            .env_clear()
            .stdin(Stdio::null());
        c
    };
    let status = runsc(&["run", "--detach", "--bundle"])
        .arg(&g.bundle)
        .arg(&cfg.id)
        .stdout(Stdio::null())
        .status()
        .context("starting runsc")?;
    if !status.success() {
        bail!("runsc run failed ({status}); see the sandbox's agent.log");
    }
    let out = runsc(&["state", &cfg.id])
        .stdout(Stdio::piped())
        .output()
        .context("runsc state")?;
    let state: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing runsc state")?;
    match state.get("pid").and_then(|p| p.as_i64()) {
        Some(pid) if pid > 0 => Ok(pid as i32),
        _ => bail!("runsc state names no sandbox pid"),
    }
}

/// The most of an image's own `/etc/ld.so.preload` that is kept (it lists a few paths).
const MAX_IMAGE_PRELOAD: u64 = 64 * 1024;

/// Binds the compat library's directory (`compat`, host) read-only at
/// [`GVISOR_COMPAT_DIR`] and a preload list naming it first, then the image's own entries,
/// read-only over `/etc/ld.so.preload` (written to the sandbox's bundle directory). Every
/// path is walked inside the root without following a symlink (before runsc starts, one could
/// point at the host): a symlink or other odd file where `/opt/paddock`, `/etc` or the
/// preload file should be skips the preload with a note in the agent log, which leaves the
/// sandbox as it would be without it (`ls -l` then fails as `docs/isolation.md` says).
fn bind_compat(root: &Path, compat: &Path, bundle: &Path) -> Result<()> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let (Some(lib_dir), Some(etc)) = (real_dir(root, GVISOR_COMPAT_DIR)?, real_dir(root, "/etc")?)
    else {
        eprintln!("gvisor compat: a symlink or file in the template's path; not preloaded");
        return Ok(());
    };
    let target = etc.join("ld.so.preload");
    let mut list = format!("{GVISOR_COMPAT_DIR}/{GVISOR_COMPAT_LIB}\n");
    match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&target)
    {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => {
            let mut own = String::new();
            f.take(MAX_IMAGE_PRELOAD)
                .read_to_string(&mut own)
                .context("reading the template's /etc/ld.so.preload")?;
            list.push_str(&own);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&target)
                .context("creating the /etc/ld.so.preload mount point")?;
        }
        _ => {
            eprintln!(
                "gvisor compat: the template's /etc/ld.so.preload is not a file; not preloaded"
            );
            return Ok(());
        }
    }
    let preload = bundle.join("ld.so.preload");
    fs::create_dir_all(bundle).context("creating the bundle dir")?;
    fs::write(&preload, list).context("writing the preload list")?;
    super::bind_readonly(compat, &lib_dir).context("binding the compat library")?;
    super::bind_readonly(&preload, &target).context("binding /etc/ld.so.preload")
}

/// `path` inside `root` as a directory, made (mode 0755) where missing; `None` if a
/// component is a symlink or not a directory.
fn real_dir(root: &Path, path: &str) -> Result<Option<std::path::PathBuf>> {
    let mut dir = root.to_path_buf();
    for part in path.trim_start_matches('/').split('/') {
        dir.push(part);
        match dir.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(None),
            Err(_) => fs::create_dir(&dir).context("creating a mount point")?,
        }
    }
    Ok(Some(dir))
}

/// The OCI runtime spec: the root built by H, the agent through its private loader as the
/// process, `/tmp` the size-limited tmpfs H mounted (bound, so runsc does not put an
/// unlimited one of its own there), the same capability set as a native sandbox's root.
fn bundle_spec(cfg: &SetupConfig, root: &Path) -> Result<serde_json::Value> {
    let mut args: Vec<String> = Vec::new();
    if cfg.agent_lib.is_some() {
        args.extend([
            format!("{AGENT_LIB_DIR}/{AGENT_LOADER}"),
            "--inhibit-cache".into(),
            "--library-path".into(),
            AGENT_LIB_DIR.into(),
            format!("{AGENT_LIB_DIR}/{AGENT_MOUNTPOINT}"),
        ]);
    } else {
        // A static agent is bound over the loader's slot the same way.
        let bin = super::file_in_root(root, &format!("{AGENT_LIB_DIR}/{AGENT_MOUNTPOINT}"))?;
        super::bind_readonly(&cfg.agent, &bin).context("binding the agent binary")?;
        args.push(format!("{AGENT_LIB_DIR}/{AGENT_MOUNTPOINT}"));
    }
    args.push("init".into());
    let mut env = super::agent_env(cfg)?;
    env.push(format!(
        "PADDOCK_AGENT_SOCKET={GVISOR_AGENT_DIR}/{GVISOR_AGENT_SOCK}"
    ));
    let caps: Vec<String> = KEPT_CAPS.iter().map(|c| c.to_string()).collect();
    let tmp = inside(root, "/tmp");
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs"}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/tmp", "type": "bind", "source": tmp,
               "options": ["rbind", "rw", "nosuid", "nodev"]}),
    ];
    // Volumes (mounted id-mapped inside the root by step 7c) as mounts of their own: runsc
    // serves them with `--file-access-mounts=shared` (its default), so the Sentry revalidates
    // what it caches and sees another sandbox's writes to a shared volume; the root's
    // exclusive mode would not.
    for v in &cfg.volumes {
        let mode = if v.read_only { "ro" } else { "rw" };
        mounts.push(json!({
            "destination": v.target,
            "type": "bind",
            "source": inside(root, &v.target),
            "options": ["rbind", mode, "nosuid", "nodev"],
        }));
    }
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": env,
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps,
            },
            "noNewPrivileges": true,
        },
        "root": {"path": root, "readonly": false},
        "hostname": cfg.id,
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
        },
    }))
}
