//! The agent's error type: what the setup stage, the seccomp filter and PID 1's start-up
//! can fail with.
//!
//! The setup stage reports its error to the runtime as one line (`err <message>`), so the
//! `Display` of every variant is one line and a [`Error::Context`] prints its step and its
//! source together (`mounting /proc: Operation not permitted`). Request-level errors of the
//! running agent are not here: they are Connect or HTTP errors built where they happen
//! (`fs`, `files`, `procs`).

/// Everything the agent's own sequences can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed.
    #[error("{0}")]
    Os(#[from] std::io::Error),
    /// The setup configuration is not valid JSON of the expected shape.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// Reading or setting capabilities failed.
    #[error("{0}")]
    Caps(#[from] caps::errors::CapsError),
    /// The seccomp filter could not be built or installed.
    #[error("{0}")]
    Seccomp(#[from] seccompiler::Error),
    /// A seccomp rule could not be built.
    #[error("{0}")]
    SeccompRule(#[from] seccompiler::BackendError),
    /// A string for a system call holds a NUL byte (a path, an environment entry).
    #[error("{0}")]
    Nul(#[from] std::ffi::NulError),
    /// A step of a sequence failed: `what` names the step, `source` says why.
    #[error("{what}: {source}")]
    Context {
        what: String,
        #[source]
        source: Box<Error>,
    },
    /// Something the sequence needs is absent (a non-UTF-8 path, a missing status line).
    #[error("{what}")]
    Missing { what: String },
    /// The sequence refuses to go on (a multi-threaded fork, a template without layers).
    #[error("{reason}")]
    Refused { reason: String },
    /// The template cannot hold a sandbox: a directory or file the setup stage makes in its
    /// root is a symlink or not of the kind needed. `reason` names only paths inside the
    /// sandbox: the setup stage reports it as `refused <reason>`, which the client is told.
    #[error("{reason}")]
    Template { reason: String },
    /// The sandbox's PID 1 failed before it executed the agent; `message` is what it
    /// reported over the error pipe.
    #[error("{message}")]
    Child { message: String },
}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Self {
        Error::Os(e.into())
    }
}

impl Error {
    /// The reason of the [`Error::Template`] this error is or wraps (under the steps'
    /// contexts, which may name host paths and are left out).
    pub(crate) fn template_refusal(&self) -> Option<&str> {
        match self {
            Error::Template { reason } => Some(reason),
            Error::Context { source, .. } => source.template_refusal(),
            _ => None,
        }
    }
}

/// Shorthand for the agent's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Names the step that failed, like `anyhow::Context`, but into [`Error::Context`].
pub(crate) trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T>;
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::Context {
            what: what.into(),
            source: Box::new(e.into()),
        })
    }

    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::Context {
            what: what().into(),
            source: Box::new(e.into()),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.ok_or_else(|| Error::Missing { what: what.into() })
    }

    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.ok_or_else(|| Error::Missing {
            what: what().into(),
        })
    }
}

/// Returns an [`Error::Refused`] built like `format!`.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::Refused { reason: format!($($arg)*) })
    };
}
pub(crate) use bail;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_prints_step_and_source_on_one_line() {
        let e: Result<()> =
            Err(std::io::Error::from_raw_os_error(libc::EPERM)).context("mounting /proc");
        let e = e.expect_err("an error");
        assert_eq!(
            e.to_string(),
            "mounting /proc: Operation not permitted (os error 1)"
        );
        assert!(std::error::Error::source(&e).is_some());
        let nested: Result<()> = Err(e).context("building the root");
        assert_eq!(
            nested.expect_err("an error").to_string(),
            "building the root: mounting /proc: Operation not permitted (os error 1)"
        );
    }

    #[test]
    fn a_template_refusal_is_found_under_contexts() {
        let e: Result<()> = Err(Error::Template {
            reason: "the template's /opt/paddock is a symlink".into(),
        });
        let e = e.context("binding /var/lib/x").expect_err("an error");
        assert_eq!(
            e.template_refusal(),
            Some("the template's /opt/paddock is a symlink")
        );
        let other: Result<()> = Err(std::io::Error::from_raw_os_error(libc::EPERM)).context("x");
        assert_eq!(other.expect_err("an error").template_refusal(), None);
    }
}
