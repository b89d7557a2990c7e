//! The hand-off from the host runtime to the agent's setup stage.
//!
//! The runtime prepares directories and cgroups, then starts `paddock-agent setup` and writes
//! one [`SetupConfig`] as JSON to its stdin. This is a boundary type between two processes of
//! ours, so it is `Serialize`; nothing outside the runtime and agent should use it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The file descriptor number on which the agent finds its listening unix socket.
pub const AGENT_LISTEN_FD: i32 = 3;

/// The file descriptor number on which PID 1 keeps the sandbox's `statfs` seccomp listener
/// (see [`SetupConfig::statfs_notify`]): the agent holds it for the sandbox's life so it
/// outlives a restart of the host process that answers it, which takes its own copy with
/// `pidfd_getfd`.
pub const STATFS_LISTENER_FD: i32 = 4;

/// The file descriptor number on which the setup stage finds a prepared network namespace
/// when [`SetupConfig::join_netns`] is set (the runtime's stock of network slots,
/// `docs/network.md`). Closed before the agent starts.
pub const SETUP_NETNS_FD: i32 = 5;

/// Everything the setup stage needs to build the sandbox and start the agent as its PID 1.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupConfig {
    /// Sandbox id; also the hostname.
    pub id: String,
    /// First host uid/gid of the sandbox's range; sandbox uid 0 maps to it.
    pub id_base: u32,
    /// Number of ids mapped.
    pub id_count: u32,
    /// The template's layers on the host, bottom first: the overlay's lower layers.
    pub lowers: Vec<PathBuf>,
    /// Empty directories where the id-mapped views of `lowers` are attached, one each.
    pub lower_mnts: Vec<PathBuf>,
    /// For each of `lowers`, the host uid its owners are based at: 0 for a layer of the
    /// layer store (template ids `0..id_count`), another sandbox's `id_base` for a snapshot of
    /// that sandbox's writable layer. Each lower is id-mapped from its base to `id_base`
    /// (host uid 0, which owns overlayfs's whiteouts, stays 0). Empty: every base is 0.
    #[serde(default)]
    pub lower_id_bases: Vec<u32>,
    /// Default working directory of processes (the template's `WORKDIR`); None: the user's
    /// home.
    pub workdir: Option<String>,
    /// Overlay upper and work directories (on the quota-limited layer filesystem).
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Empty directory where the sandbox root is assembled.
    pub root: PathBuf,
    /// Host directories bound into the root, e.g. `/usr` for the `base` template.
    pub binds: Vec<SetupMount>,
    /// Size of the `/tmp` and `/dev/shm` tmpfs mounts.
    pub tmp_bytes: u64,
    /// `cgroup.procs` files the setup process writes itself into before anything else.
    pub cgroup_procs: Vec<PathBuf>,
    /// Environment every process in the sandbox starts with.
    pub env: BTreeMap<String, String>,
    /// Path of the agent binary on the host, executed as PID 1 after the root is sealed.
    pub agent: PathBuf,
    /// The agent's private loader and libraries on the host, bound read-only at
    /// `/opt/paddock/lib`; PID 1 is started through that loader, so it needs no library
    /// from the image. None: the agent is statically linked and is executed directly.
    pub agent_lib: Option<PathBuf>,
    /// Path of the `sudo` shim binary on the host (its interpreter is in `agent_lib`).
    pub sudo: PathBuf,
    /// Agent log level (a `tracing` filter).
    pub log: String,
    /// Route `statfs(2)` through a seccomp user-notification listener kept at
    /// [`STATFS_LISTENER_FD`], so the host can answer it with the sandbox's disk limit (the
    /// layer filesystem's own numbers are the whole host's). False on kernels without
    /// `pidfd_getfd`, where nobody could answer.
    #[serde(default)]
    pub statfs_notify: bool,
    /// Secret values given as environment variables, on top of `env` (kept apart so that
    /// `Debug` never prints them).
    #[serde(default)]
    pub secret_env: BTreeMap<String, SecretValue>,
    /// Secret files: a read-only tmpfs at [`SECRETS_DIR`] holding each as a file of mode 0400
    /// owned by `secret_owner`. Empty: no mount.
    #[serde(default)]
    pub secret_files: BTreeMap<String, SecretValue>,
    /// The sandbox-side uid and gid owning the secret files (the sandbox's default user).
    #[serde(default)]
    pub secret_owner: (u32, u32),
    /// Set for a gVisor sandbox: after building the root the setup stage starts the agent
    /// under `runsc` instead of executing it itself (`docs/isolation.md`).
    #[serde(default)]
    pub gvisor: Option<GvisorSetup>,
    /// Volumes: host directories (on the layer filesystem, in template id space) mounted
    /// id-mapped at their targets, read-write or read-only, after the root is assembled.
    #[serde(default)]
    pub volumes: Vec<SetupVolume>,
    /// Join the network namespace open at [`SETUP_NETNS_FD`] (prepared by the runtime, owned
    /// by the host's user namespace, with loopback and `eth0` configured) instead of
    /// creating a fresh one with loopback only.
    #[serde(default)]
    pub join_netns: bool,
}

/// Where a gVisor sandbox's agent binds its socket (a host directory bound here; `runsc
/// --host-uds=create` makes the socket a host socket). The runtime moves the socket out of
/// the directory as soon as it appears, so nothing in the sandbox can replace it.
pub const GVISOR_AGENT_DIR: &str = "/run/paddock/agent";

/// The socket's file name in [`GVISOR_AGENT_DIR`].
pub const GVISOR_AGENT_SOCK: &str = "agent.sock";

/// What the setup stage needs to start a sandbox under gVisor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GvisorSetup {
    /// The `runsc` binary.
    pub runsc: PathBuf,
    /// `runsc --root`: its state directory.
    pub state_dir: PathBuf,
    /// Directory the OCI bundle's `config.json` is written to.
    pub bundle: PathBuf,
    /// Host directory bound at [`GVISOR_AGENT_DIR`].
    pub agent_dir: PathBuf,
    /// `runsc --platform` (`ptrace` here: the KVM platform hangs on this machine kind).
    pub platform: String,
    /// Host directory holding [`GVISOR_COMPAT_LIB`] and [`GVISOR_COMPAT_PRELOAD`]: bound
    /// read-only at [`GVISOR_COMPAT_DIR`], its preload file over `/etc/ld.so.preload`.
    /// `None`: no compat library for this target.
    #[serde(default)]
    pub compat: Option<PathBuf>,
}

/// Where a gVisor sandbox sees the compat library's directory.
pub const GVISOR_COMPAT_DIR: &str = "/opt/paddock/gvisor";

/// The compat library: glibc's `statx`/`fstatat` without the `AT_NO_AUTOMOUNT` flag, which
/// this runsc refuses (`docs/isolation.md`).
pub const GVISOR_COMPAT_LIB: &str = "libpaddock-gvisor-compat.so";

/// The file bound over the sandbox's `/etc/ld.so.preload`, naming the compat library.
pub const GVISOR_COMPAT_PRELOAD: &str = "ld.so.preload";

/// A volume mounted into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupVolume {
    /// The volume's data directory on the host.
    pub source: PathBuf,
    /// Absolute path inside the sandbox ([`check_mount_path`]).
    pub target: String,
    pub read_only: bool,
}

/// Paths a volume may not be mounted at or under: the system's own directories, Paddock's,
/// and the tmpfs mounts the setup stage makes.
pub const RESERVED_MOUNT_PATHS: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/opt/paddock",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
];

/// Checks a volume's mount path inside the sandbox: absolute, at most 512 bytes, no empty,
/// `.` or `..` component, no NUL, not `/`, not at or under a [`RESERVED_MOUNT_PATHS`] entry
/// (`/run/secrets` included). Returns the path without a trailing slash.
pub fn check_mount_path(p: &str) -> Result<String, String> {
    let t = p.trim_end_matches('/');
    if !p.starts_with('/') {
        return Err(format!("mount path {p:?} is not absolute"));
    }
    if t.is_empty() {
        return Err("a volume cannot be mounted at /".into());
    }
    if p.len() > 512 || p.contains('\0') {
        return Err("a mount path has at most 512 bytes and no NUL".into());
    }
    if t[1..]
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!("mount path {p:?} has an empty, . or .. component"));
    }
    for r in RESERVED_MOUNT_PATHS {
        if t == *r || t.starts_with(&format!("{r}/")) {
            return Err(format!(
                "mount path {p:?} is over the system path {r}: choose another directory"
            ));
        }
    }
    Ok(t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::check_mount_path;

    #[test]
    fn mount_paths() {
        for ok in [
            "/data",
            "/home/user/work/",
            "/mnt/a.b",
            "/srv/x y",
            "/library",
            "/runner",
        ] {
            assert!(check_mount_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/",
            "//",
            "data",
            "",
            "/proc",
            "/proc/1",
            "/sys/x",
            "/dev",
            "/etc/",
            "/usr/lib",
            "/bin",
            "/lib",
            "/lib64/x",
            "/run/secrets",
            "/run",
            "/tmp",
            "/opt/paddock/lib",
            "/a/../etc",
            "/a/./b",
            "/a//b",
        ] {
            assert!(check_mount_path(bad).is_err(), "{bad}");
        }
    }
}

/// Where a sandbox's secret files are: a tmpfs, never the writable layer.
pub const SECRETS_DIR: &str = "/run/secrets";

/// Largest total size of one sandbox's secret files (the size of the [`SECRETS_DIR`] tmpfs
/// is this much at most).
pub const MAX_SECRET_FILES_BYTES: usize = 4 << 20;

/// A secret's value on its way into a sandbox. `Debug` prints `<redacted>`, so a value can
/// never reach a log through a derived `Debug` of a struct that carries it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretValue(pub String);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Whether `name` may name a secret file under [`SECRETS_DIR`] (and a secret): 1 to 128 bytes
/// of `[A-Za-z0-9_.-]`, starting with a letter or digit (so never `.`, `..` or a path).
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A host path bound read-only into the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupMount {
    /// Host path.
    pub source: PathBuf,
    /// Path inside the sandbox root.
    pub target: PathBuf,
}
