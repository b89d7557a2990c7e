//! Host side of Paddock's `native` isolation backend.
//!
//! [`Runtime`] owns everything a sandbox is made of on the host: a btrfs subvolume for its
//! writable layer ([`layers`]), its cgroups ([`cgroup`]), a uid range, the agent socket, and
//! a record on disk. It starts the agent's setup stage (see `paddock_agent::setup`), which
//! builds the namespaces and mounts, and it talks to the agent over the socket
//! ([`client`]). It knows nothing about HTTP APIs, tenants or SQL.
//!
//! **Invariant:** every host resource of a sandbox is named after its id under a prefix this
//! runtime owns (`<data>/layers/sandboxes/<id>`, `/sys/fs/cgroup/*/paddock/<id>`), and the
//! record is written before the sandbox runs, so [`Runtime::open`] can find and adopt or
//! destroy everything after a crash.

pub mod agentlib;
pub mod cgroup;
pub mod client;
pub mod datadir;
mod error;
pub mod layerexport;
pub mod layers;
pub mod layerstore;
pub mod net;
pub mod oci;
mod runtime;
mod slots;
mod statfs;
// The workspace denies `unsafe_code`; this module is the one place of the crate allowed it.
#[allow(
    unsafe_code,
    reason = "ioctls for btrfs subvolumes, quotas and seccomp notifications; each block has a SAFETY note"
)]
mod sys;
pub mod template;
pub mod volfs;

pub use client::{AgentClient, AgentTransport};
pub use error::{Result, RuntimeError, SetupFailure};
pub use runtime::{
    AdoptionReport, CreateSpec, ExecRequest, ExecResult, HostSandbox, ListeningPort, MAX_NET_SLOTS,
    NetSlotStats, PauseMode, Personalise, RAW_LENGTH_HEADER, RAW_UPGRADE, RawExchange, Runtime,
    RuntimeConfig, Sandbox, Stats, VolumeMount, default_agent_bin,
};
pub use sys::set_recv_lowat;
