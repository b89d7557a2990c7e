//! The domain's error: what a service call can fail with, without any HTTP. The edge
//! (`paddock-server`'s `ApiError`) turns each variant into the variant of the same name, and
//! store and runtime errors through its own conversions of those, so a client sees the same
//! status, code and message whichever layer failed.

use paddock_runtime::RuntimeError;
use paddock_store::StoreError;

/// A failed domain call. The messages are those a client reads.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or a field is out of range (`invalid_request`).
    #[error("{0}")]
    BadRequest(String),
    /// The thing does not exist or belongs to another tenant (`not_found`).
    #[error("{0}")]
    NotFound(String),
    /// The state does not allow this (`conflict`).
    #[error("{0}")]
    Conflict(String),
    /// A selector matches nothing (`no_match`); nothing was changed.
    #[error("{0}")]
    NoMatch(String),
    /// A body larger than its limit (`payload_too_large`).
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// The template's start command failed or its ready check did not pass (`start_failed`).
    #[error("{0}")]
    StartFailed(String),
    /// The sandbox's setup refused its template (`template_unusable`).
    #[error("{0}")]
    TemplateUnusable(String),
    /// Too many requests; retry after this many seconds (`rate_limited`).
    #[error("too many requests; retry after {0} s")]
    RateLimited(u64),
    /// A quota or budget is used up (`quota_exceeded`).
    #[error("{0}")]
    QuotaExceeded(String),
    /// The host cannot take more sandboxes or is shutting down (`unavailable`).
    #[error("{0}")]
    Unavailable(String),
    /// No node of the fleet can take the sandbox (`no_capacity`).
    #[error("{0}")]
    NoCapacity(String),
    /// The sandbox's agent failed in a way the client cannot fix (`agent_error`).
    #[error("{0}")]
    Agent(String),
    /// An image registry failed or refused (`registry_error`).
    #[error("{0}")]
    Registry(String),
    /// The sandbox's disk limit is reached (`insufficient_storage`).
    #[error("{0}")]
    InsufficientStorage(String),
    /// The database cannot be reached (`store_unavailable`); the detail is logged only.
    #[error("the database is unavailable; retry shortly")]
    StoreUnavailable(String),
    /// A bug or a host failure; the detail is logged only (`internal`).
    #[error("internal error")]
    Internal(String),
    /// The store failed; the edge answers it as it answers any store error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runtime failed; the edge answers it as it answers any runtime error.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Shorthand for domain results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error's stable code, as an audit entry records it (`AppState::audited`).
pub trait Coded {
    fn code(&self) -> &'static str;
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        use Error::*;
        match self {
            BadRequest(_) => "invalid_request",
            NotFound(_) => "not_found",
            Conflict(_) => "conflict",
            NoMatch(_) => "no_match",
            PayloadTooLarge(_) => "payload_too_large",
            StartFailed(_) => "start_failed",
            TemplateUnusable(_) => "template_unusable",
            RateLimited(_) => "rate_limited",
            QuotaExceeded(_) => "quota_exceeded",
            Unavailable(_) => "unavailable",
            NoCapacity(_) => "no_capacity",
            Agent(_) => "agent_error",
            Registry(_) => "registry_error",
            InsufficientStorage(_) => "insufficient_storage",
            StoreUnavailable(_) => "store_unavailable",
            Internal(_) => "internal",
            Store(e) => Error::from_store(e).code(),
            Runtime(e) => classify(e, false).code(),
        }
    }
}

impl Error {
    /// What a client reads of this error: store and runtime errors as
    /// [`Error::from_store`] and [`Error::from_runtime`] put them (an internal failure is
    /// `internal error`, never its detail).
    pub fn message(&self) -> String {
        match self {
            Error::Store(e) => Error::from_store(e).to_string(),
            Error::Runtime(e) => classify(e, false).to_string(),
            other => other.to_string(),
        }
    }

    /// A store error as the domain variant a client sees.
    pub fn from_store(e: &StoreError) -> Error {
        match e {
            StoreError::Conflict(what) => Error::Conflict(format!("already exists: {what}")),
            StoreError::Unavailable(detail) => Error::StoreUnavailable(detail.clone()),
            other => Error::Internal(format!("store: {other}")),
        }
    }

    /// A runtime error as the domain variant a client sees (an agent failure the client
    /// cannot fix is logged here).
    pub fn from_runtime(e: &RuntimeError) -> Error {
        classify(e, true)
    }
}

/// A runtime error as the domain variant a client sees; `log`: warn about an agent failure
/// that becomes `agent_error`.
fn classify(e: &RuntimeError, log: bool) -> Error {
    use connectrpc::ErrorCode as C;
    match e {
        RuntimeError::UnknownTemplate { .. } | RuntimeError::UnknownUser { .. } => {
            Error::BadRequest(e.to_string())
        }
        RuntimeError::InvalidLimits(l) => Error::BadRequest(format!("invalid limits: {l}")),
        RuntimeError::InvalidId(_) => Error::NotFound("sandbox not found".into()),
        RuntimeError::InvalidArgument { reason, .. } => Error::BadRequest(reason.clone()),
        RuntimeError::NotFound { id } => Error::sandbox_not_found(id),
        RuntimeError::TemplateInUse { .. }
        | RuntimeError::TemplateHasSnapshots { .. }
        | RuntimeError::VolumeInUse { .. }
        | RuntimeError::AlreadyPaused { .. } => Error::Conflict(e.to_string()),
        RuntimeError::Registry { reason, .. } => Error::Registry(reason.clone()),
        RuntimeError::BadImage { reason } => Error::BadRequest(reason.clone()),
        RuntimeError::TemplateUnusable { .. } => Error::TemplateUnusable(e.to_string()),
        RuntimeError::IsolationUnavailable { reason, .. } => Error::BadRequest(reason.clone()),
        RuntimeError::Exhausted => {
            Error::Unavailable("this host cannot start more sandboxes".into())
        }
        RuntimeError::Agent(ce) => {
            let msg = ce.message.clone().unwrap_or_default();
            match ce.code {
                C::InvalidArgument => Error::BadRequest(msg),
                C::NotFound => Error::NotFound(msg),
                C::PermissionDenied => Error::BadRequest(format!("permission denied: {msg}")),
                C::ResourceExhausted => Error::InsufficientStorage(msg),
                C::FailedPrecondition | C::AlreadyExists => Error::Conflict(msg),
                C::Unauthenticated => Error::BadRequest(msg),
                C::DeadlineExceeded => Error::Conflict("deadline exceeded".into()),
                _ => {
                    if log {
                        tracing::warn!(code = ?ce.code, %msg, "agent error");
                    }
                    Error::Agent("the sandbox's agent failed".into())
                }
            }
        }
        RuntimeError::Setup { .. }
        | RuntimeError::Io { .. }
        | RuntimeError::Task { .. }
        | RuntimeError::Encode { .. }
        | RuntimeError::Command { .. }
        | RuntimeError::Unsupported { .. } => Error::Internal(e.to_string()),
        RuntimeError::PortClosed { port, reason } => {
            Error::Agent(format!("port {port} is not open in the sandbox ({reason})"))
        }
    }
}

impl Error {
    /// The not-found error of a sandbox id (also used for other tenants' sandboxes).
    pub fn sandbox_not_found(id: &str) -> Error {
        // The id is echoed only if it looks like an id, so odd input never reaches a body.
        if id.parse::<paddock_core::SandboxId>().is_ok() {
            Error::NotFound(format!("sandbox {id} not found"))
        } else {
            Error::NotFound("sandbox not found".into())
        }
    }
}

/// The error for an in-sandbox operation on a paused sandbox.
pub fn paused_error(id: &str) -> Error {
    Error::Conflict(format!(
        "sandbox {id} is paused: resume it first (POST /v1/sandboxes/{id}/resume, or E2B connect)"
    ))
}
