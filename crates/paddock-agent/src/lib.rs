//! The Paddock agent: the process that runs as PID 1 inside every sandbox.
//!
//! One binary, two stages. `paddock-agent setup` is started by the host runtime as host root;
//! it builds the sandbox (namespaces, mounts, cgroups, capabilities, seccomp) around itself in
//! one linear sequence ([`setup`]) and finally executes `paddock-agent init` as the sandbox's
//! PID 1. `init` ([`init`]) reaps zombies, runs processes ([`procs`]) and performs file
//! operations ([`fs`], [`files`], [`archive`]) from inside the sandbox, as the requested user, and serves
//! all of it over the E2B envd protocol on a unix socket inherited from the host.
//!
//! **Invariant:** nothing the agent does after `setup` can reach host resources: it runs in
//! the sandbox's mount namespace, as the sandbox's root, under its seccomp filter. A path given
//! by a client is resolved by the kernel inside the sandbox root, so a symlink planted by
//! sandbox code can never lead outside it.

pub mod archive;
pub mod code_server;
pub mod error;
pub mod files;
pub mod fs;
pub mod init;
pub mod procs;
mod rpc;
pub mod seccomp;
pub mod services;
pub mod setup;
mod signals;
pub mod sudo;
// The workspace denies `unsafe_code`; this module is the one place of the crate allowed it.
#[allow(
    unsafe_code,
    reason = "syscalls for namespaces, mounts, seccomp and process spawning; each block has a SAFETY note"
)]
mod sys;
pub mod users;

/// Locks a mutex, recovering the data if a panic poisoned it. The agent is PID 1 of the
/// sandbox: with `expect` on poison, one panic under a lock would make every later request
/// that takes it panic too, breaking the sandbox for good. The state behind the agent's locks
/// (tables, logs, buffers, maps) is consistent at every point a panic can occur, since each
/// critical section is a handful of inserts, removes and field updates.
#[allow(clippy::disallowed_methods)] // The one place that calls `Mutex::lock`.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Entry point of the `paddock-agent` binary: dispatches on the first argument.
pub fn main() -> ! {
    match std::env::args().nth(1).as_deref() {
        Some("setup") => setup::main(),
        Some("init") => init::main(),
        Some("code-server") => code_server::main(std::env::args().skip(2).collect()),
        Some("--version") => {
            println!("paddock-agent {}", env!("CARGO_PKG_VERSION"));
            std::process::exit(0)
        }
        _ => {
            eprintln!(
                "usage: paddock-agent setup|init (started by the Paddock runtime, not by hand)\n       paddock-agent code-server [--port 49999] [--cwd DIR]"
            );
            std::process::exit(2)
        }
    }
}
