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
