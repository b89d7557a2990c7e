//! The code interpreter server that runs inside a sandbox on port 49999 and speaks the HTTP
//! API the `e2b-code-interpreter` SDKs call (`/execute`, `/contexts`, `/health`; the wire
//! format is in `docs/code-interpreter.md`).
//!
//! Each context is one Jupyter kernel process, driven over the Jupyter messaging protocol
//! (ZeroMQ through nteract's `jupyter-zmq-client` on the pure-Rust `zeromq` crate, so the
//! sandbox needs no libzmq):
//! - `python`: ipykernel (`python3 -m ipykernel_launcher`);
//! - `javascript` (`js`): tslab's `jslab` kernel (its `zeromq` npm dependency ships its
//!   native addon inside the npm tarball);
//! - `bash`: `bash_kernel` from PyPI.
//!
//! The server ships inside the agent binary (`paddock-agent code-server --port 49999`), so a
//! template needs only the kernels.
//!
//! Limits (all explicit, answered with a clear 4xx): [`MAX_CODE_BYTES`] of code per
//! request, [`MAX_OUTPUT_BYTES`] of output per execution (then output is dropped with one
//! stderr note), [`MAX_CONTEXTS`] contexts, [`MAX_ENV_VARS`] environment variables per
//! execution.
//!
//! Invariants:
//! - One execution at a time per context; a second waits its turn (as Jupyter queues).
//! - An execution whose client went away, or whose `timeout` passed, interrupts its kernel
//!   (SIGINT, as Jupyter's `interrupt_mode: signal`) and drains it to idle, so the next
//!   execution starts clean; a kernel that does not go idle within [`INTERRUPT_GRACE`] is
//!   restarted (its state is lost, the context stays usable).
//! - Kernels are signalled only while their `Child` is unreaped, so the pid is theirs.

mod kernel;
mod server;
mod wire;

use std::time::Duration;

pub use server::{Options, router, serve};
pub use wire::Event;

/// Most bytes of code one execution may carry.
pub const MAX_CODE_BYTES: usize = 1024 * 1024;
/// Most bytes of output (stdout, stderr, results) one execution sends; the rest is dropped.
pub const MAX_OUTPUT_BYTES: usize = 32 * 1024 * 1024;
/// Most contexts (kernels) at once.
pub const MAX_CONTEXTS: usize = 32;
/// Most environment variables one execution may set.
pub const MAX_ENV_VARS: usize = 256;
/// How long an interrupted kernel has to go idle before it is restarted.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(5);
/// How long a kernel has to start and answer `kernel_info`.
pub const KERNEL_START_TIMEOUT: Duration = Duration::from_secs(60);
/// The port the SDKs reach the server on.
pub const PORT: u16 = 49999;

/// Errors of the code interpreter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel could not be started.
    #[error("cannot start the {language} kernel: {reason}")]
    KernelStart {
        /// The context's language.
        language: &'static str,
        /// Why.
        reason: String,
    },
    /// The kernel went away or broke the protocol.
    #[error("the kernel failed: {0}")]
    Kernel(String),
    /// Binding or serving HTTP.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A context's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    /// ipykernel.
    Python,
    /// tslab's jslab.
    JavaScript,
    /// bash_kernel.
    Bash,
}

impl Language {
    /// Parses a language name as the SDKs send it (`None`, empty: Python).
    pub fn parse(name: Option<&str>) -> Option<Language> {
        match name.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("python") | Some("python3") => Some(Language::Python),
            Some("javascript") | Some("js") => Some(Language::JavaScript),
            Some("bash") | Some("sh") => Some(Language::Bash),
            _ => None,
        }
    }

    /// The name contexts report.
    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::Bash => "bash",
        }
    }
}

/// The languages accepted, for error messages.
pub const LANGUAGES: &str = "python, javascript (js), bash";
