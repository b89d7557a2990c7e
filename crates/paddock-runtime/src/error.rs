//! The runtime's error type.

use paddock_core::{IdError, LimitsError};

/// Everything that can go wrong in the native runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The template does not exist.
    #[error("unknown template {0:?}")]
    UnknownTemplate(String),
    /// A limit is out of range.
    #[error("invalid limits: {0}")]
    InvalidLimits(LimitsError),
    /// An id that is not a sandbox id.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// The user does not exist in the sandbox's template.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// A request argument is malformed (empty command, bad cwd, bad env name).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No sandbox with this id exists on this host.
    #[error("sandbox {0} not found")]
    NotFound(String),
    /// The thing is in use (a template that running sandboxes start from).
    #[error("{0}")]
    InUse(String),
    /// Every uid range is in use.
    #[error("no free uid range for another sandbox")]
    Exhausted,
    /// The setup stage failed; the message comes from the agent's setup sequence.
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    /// A host operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The agent answered with an error.
    #[error("agent: {0}")]
    Agent(connectrpc::ConnectError),
    /// Nothing accepts connections on this port inside the sandbox.
    #[error("port {0} is not open in the sandbox: {1}")]
    PortClosed(u16, String),
    /// The host lacks something the runtime needs (btrfs, cgroup controllers).
    #[error("host not supported: {0}")]
    Unsupported(String),
    /// A registry could not be reached or refused a request (unreachable, 401, unknown tag).
    #[error("{0}")]
    Registry(String),
    /// An image or layer is malformed or does not match its digest.
    #[error("bad image: {0}")]
    BadImage(String),
}

// Manual `From` impls: the message already includes the inner error, so it is not also
// exposed as `source()` (which would print it twice in error chains).
impl From<LimitsError> for RuntimeError {
    fn from(e: LimitsError) -> Self {
        RuntimeError::InvalidLimits(e)
    }
}

impl From<connectrpc::ConnectError> for RuntimeError {
    fn from(e: connectrpc::ConnectError) -> Self {
        RuntimeError::Agent(e)
    }
}

impl RuntimeError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let what = what.into();
        move |source| RuntimeError::Io { what, source }
    }
}

/// Shorthand for runtime results.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
