//! Paddock's shared vocabulary: sandbox ids, specs and limits.
//!
//! This crate does no IO. Everything here is plain data plus validation, so every other
//! crate (runtime, agent, server, CLI) can agree on it without pulling each other in.

mod id;
mod isolation;
mod limits;
mod network;
mod pause;
mod pax;
mod setup;

pub use id::{IdError, SandboxId};
pub use isolation::{Isolation, UnknownIsolation};
pub use limits::{Limits, LimitsError, parse_size};
pub use network::{Cidr, DomainRule, MAX_ALLOW, NetworkMode, NetworkPolicy};
pub use pause::PauseMode;
pub use pax::{PaxError, PaxRecords, pax_records};
pub use setup::{
    AGENT_LISTEN_FD, GVISOR_AGENT_DIR, GVISOR_AGENT_SOCK, GVISOR_COMPAT_DIR, GVISOR_COMPAT_LIB,
    GVISOR_COMPAT_PRELOAD, GvisorSetup, MAX_SECRET_FILES_BYTES, RESERVED_MOUNT_PATHS, SECRETS_DIR,
    SETUP_NETNS_FD, STATFS_LISTENER_FD, SecretValue, SetupConfig, SetupMount, SetupVolume,
    check_mount_path, valid_secret_name,
};

/// The version of the envd protocol the agent implements, reported to E2B clients.
///
/// The E2B SDK changes its wire format below 0.6.4 (see `shared/e2b-compat.md` 3.4).
pub const ENVD_VERSION: &str = "0.6.13";

/// Name of the unprivileged default user inside every sandbox (uid/gid 1000).
pub const DEFAULT_USER: &str = "user";

/// Directory inside every sandbox holding Paddock's shims (`sudo`), first on `PATH`.
pub const SHIM_DIR: &str = "/opt/paddock/bin";

/// Where the agent's private loader and libraries appear in every sandbox (the runtime's
/// `agentlib` bundle). The bundle's copy of the `sudo` shim runs on them.
pub const AGENT_LIB_DIR: &str = "/opt/paddock/lib";

/// The loader's file name in [`AGENT_LIB_DIR`]: the ELF interpreter of the bundle's `sudo`
/// shim.
pub const AGENT_LOADER: &str = "ld.so";

/// The `sudo` shim's file name in the bundle: a copy of `paddock-sudo` whose ELF interpreter
/// is [`AGENT_LIB_DIR`]`/`[`AGENT_LOADER`].
pub const AGENT_SUDO: &str = "paddock-sudo";

/// The file in [`AGENT_LIB_DIR`] over which the agent binary is bound, for the loader to run.
pub const AGENT_MOUNTPOINT: &str = "paddock-agent";

/// `PATH` of every process the agent starts (and of login shells, via `/etc/profile`).
pub const SANDBOX_PATH: &str =
    "/opt/paddock/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The agent's in-sandbox socket for `sudo` (see `paddock-agent`'s `sudo` module).
pub const SUDO_SOCKET: &str = "/run/paddock/sudo.sock";
