//! The runtime's error type.

use paddock_core::{IdError, LimitsError};

/// Everything that can go wrong in the native runtime.
///
/// Each variant names what failed in fields; the `Display` texts are one lowercase line.
/// The server turns the client-facing ones (unknown template or user, invalid argument,
/// not found, in use, registry, bad image, closed port) into API errors built from these
/// fields; the rest are logged, never sent, so they may name host paths.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The template does not exist.
    #[error("unknown template {name:?}")]
    UnknownTemplate { name: String },
    /// A limit is out of range.
    #[error("invalid limits: {0}")]
    InvalidLimits(LimitsError),
    /// An id that is not a sandbox id.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// The user does not exist in the sandbox's template.
    #[error("unknown user {user:?}")]
    UnknownUser { user: String },
    /// A request argument is malformed (empty command, bad cwd, bad env name); `what` names
    /// the argument, `reason` is the client-facing sentence.
    #[error("invalid {what}: {reason}")]
    InvalidArgument { what: &'static str, reason: String },
    /// No sandbox with this id exists on this host.
    #[error("sandbox {id} not found")]
    NotFound { id: String },
    /// A template that running sandboxes start from.
    #[error(
        "template {template} is used by {} running sandbox(es): {}",
        .sandboxes.len(),
        .sandboxes.join(", ")
    )]
    TemplateInUse {
        template: String,
        sandboxes: Vec<String>,
    },
    /// A template that snapshots stand on (their sandboxes' files are on its layers).
    #[error(
        "template {template} has {} snapshot(s) standing on it: {}",
        .snapshots.len(),
        .snapshots.join(", ")
    )]
    TemplateHasSnapshots {
        template: String,
        snapshots: Vec<String>,
    },
    /// A volume that sandboxes mount.
    #[error(
        "volume {volume} is mounted by {} sandbox(es): {}",
        .sandboxes.len(),
        .sandboxes.join(", ")
    )]
    VolumeInUse {
        volume: String,
        sandboxes: Vec<String>,
    },
    /// The sandbox is already paused (in `mode`).
    #[error("sandbox {id} is already paused ({mode})")]
    AlreadyPaused { id: String, mode: &'static str },
    /// Every uid range is in use.
    #[error("no free uid range for another sandbox")]
    Exhausted,
    /// The setup stage refused the sandbox's template: a directory or file it makes in the
    /// template's root (`/opt/paddock`, the `sudo` shim, a mount point) is a symlink or not
    /// of the kind needed. `reason` names only paths inside the sandbox, so a client may be
    /// told it; nothing was made on the host.
    #[error("template {template} cannot be used: {reason}")]
    TemplateUnusable { template: String, reason: String },
    /// The setup stage failed in a way the client cannot fix (logged, never sent).
    #[error("sandbox {id} setup failed: {failure}")]
    Setup { id: String, failure: SetupFailure },
    /// A blocking task of the runtime panicked or was cancelled.
    #[error("{what} task failed: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// A record or configuration could not be encoded.
    #[error("encoding {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A host command ran but failed.
    #[error("{what} failed ({status})")]
    Command {
        what: &'static str,
        status: std::process::ExitStatus,
    },
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
    #[error("port {port} is not open in the sandbox: {reason}")]
    PortClosed { port: u16, reason: String },
    /// The host lacks something the runtime needs; `resource` names it (btrfs, cgroup,
    /// loop device, nftables, ...).
    #[error("host not supported ({resource}): {reason}")]
    Unsupported {
        resource: &'static str,
        reason: String,
    },
    /// The sandbox asks for an isolation backend this host cannot provide (gVisor without
    /// `runsc`), or for something that backend cannot do.
    #[error("{reason}")]
    IsolationUnavailable {
        isolation: paddock_core::Isolation,
        reason: String,
    },
    /// A registry could not be reached or refused a request (unreachable, 401, unknown tag).
    #[error("{reason}")]
    Registry { reference: String, reason: String },
    /// An image or layer is malformed or does not match its digest.
    #[error("bad image: {reason}")]
    BadImage { reason: String },
}

/// How a sandbox's setup stage failed ([`RuntimeError::Setup`]). The setup stage answers
/// the runtime with one status line on its stdout: `ok <pid>`, `refused <reason>` (the
/// template cannot be used: [`RuntimeError::TemplateUnusable`]) or `err <message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupFailure {
    /// The setup stage said why (`err <message>`); the message may name host paths.
    #[error("{message}")]
    Reported { message: String },
    /// A status line the runtime does not know.
    #[error("bad status {line:?}")]
    BadStatus { line: String },
    /// The setup stage ended without a status line; `log` is its stderr.
    #[error("setup ended without status: {log}")]
    NoStatus { log: String },
    /// A gVisor sandbox without `runsc` on the host.
    #[error("runsc is not installed")]
    NoRunsc,
    /// The gVisor Sentry exited before its agent `stage` ("started", "listened"): the one
    /// failure a gVisor start is retried after.
    #[error("the gVisor sandbox exited before its agent {stage}")]
    SentryDied { stage: &'static str },
    /// The agent under gVisor did not start within `secs`.
    #[error("the agent did not start within {secs}s under gVisor")]
    AgentLate { secs: u64 },
    /// The agent's socket under gVisor could not be taken: `what` failed.
    #[error("the agent socket {what}")]
    AgentSocket { what: String },
}

/// The status line of the setup stage (`ok <pid>`, `refused <reason>`, `err <message>`), or
/// its absence (`line` empty: `log` is then what the stage wrote on stderr), as the pid of
/// the sandbox's PID 1 on the host or the error to answer.
pub(crate) fn setup_status(
    id: &str,
    template: &str,
    line: &str,
    log: impl FnOnce() -> String,
) -> Result<i32> {
    let failure = match line.trim().split_once(' ') {
        Some(("ok", pid)) => match pid.parse() {
            Ok(pid) => return Ok(pid),
            Err(_) => SetupFailure::BadStatus {
                line: line.trim().to_owned(),
            },
        },
        Some(("refused", reason)) => {
            return Err(RuntimeError::TemplateUnusable {
                template: template.to_owned(),
                reason: reason.to_owned(),
            });
        }
        Some(("err", message)) => SetupFailure::Reported {
            message: message.to_owned(),
        },
        _ if line.trim().is_empty() => SetupFailure::NoStatus {
            log: log().trim().to_owned(),
        },
        _ => SetupFailure::BadStatus {
            line: line.trim().to_owned(),
        },
    };
    Err(RuntimeError::Setup {
        id: id.to_owned(),
        failure,
    })
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
    pub(crate) fn task(what: &'static str) -> impl FnOnce(tokio::task::JoinError) -> RuntimeError {
        move |source| RuntimeError::Task { what, source }
    }

    pub(crate) fn encode(what: &'static str) -> impl FnOnce(serde_json::Error) -> RuntimeError {
        move |source| RuntimeError::Encode { what, source }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let what = what.into();
        move |source| RuntimeError::Io { what, source }
    }
}

/// Shorthand for runtime results.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn structured_errors_keep_their_source_and_one_lowercase_line() {
        let io = RuntimeError::io("writing record")(std::io::ErrorKind::NotFound.into());
        assert!(io.source().is_some(), "io error exposes its source");
        let enc = RuntimeError::encode("sandbox record")(
            serde_json::from_str::<u8>("x").expect_err("not json"),
        );
        assert!(enc.source().is_some(), "encode error exposes its source");
        let cases = [
            io,
            enc,
            RuntimeError::UnknownTemplate {
                name: "nope".into(),
            },
            RuntimeError::InvalidArgument {
                what: "command",
                reason: "empty command".into(),
            },
            RuntimeError::NotFound { id: "abc".into() },
            RuntimeError::TemplateInUse {
                template: "py".into(),
                sandboxes: vec!["a".into(), "b".into()],
            },
            RuntimeError::Setup {
                id: "abc".into(),
                failure: SetupFailure::Reported {
                    message: "mount failed".into(),
                },
            },
            RuntimeError::TemplateUnusable {
                template: "evil".into(),
                reason: "the template's /opt/paddock is a symlink".into(),
            },
            RuntimeError::PortClosed {
                port: 80,
                reason: "connection refused".into(),
            },
            RuntimeError::Unsupported {
                resource: "btrfs",
                reason: "mkfs.btrfs not found".into(),
            },
        ];
        for e in cases {
            let s = e.to_string();
            assert!(!s.contains('\n'), "one line: {s:?}");
            assert!(
                !s.starts_with(|c: char| c.is_ascii_uppercase()),
                "lowercase: {s:?}"
            );
        }
        let used = RuntimeError::TemplateInUse {
            template: "py".into(),
            sandboxes: vec!["a".into(), "b".into()],
        };
        // The API returns this text as the 409's message: it must not change.
        assert_eq!(
            used.to_string(),
            "template py is used by 2 running sandbox(es): a, b"
        );
    }

    #[test]
    fn the_setup_status_line_becomes_a_pid_a_refusal_or_a_failure() {
        let none = || -> String { unreachable!("the log is read only without a status") };
        assert_eq!(setup_status("abc", "t", "ok 42\n", none).ok(), Some(42));
        match setup_status(
            "abc",
            "evil",
            "refused the template's /opt/paddock is a symlink\n",
            none,
        ) {
            Err(RuntimeError::TemplateUnusable { template, reason }) => {
                assert_eq!(template, "evil");
                assert_eq!(reason, "the template's /opt/paddock is a symlink");
            }
            other => panic!("{other:?}"),
        }
        let failure = |line: &str| match setup_status("abc", "t", line, || " died \n".into()) {
            Err(RuntimeError::Setup { id, failure }) => {
                assert_eq!(id, "abc");
                failure
            }
            other => panic!("{line:?}: {other:?}"),
        };
        assert_eq!(
            failure("err mounting /proc: EPERM\n"),
            SetupFailure::Reported {
                message: "mounting /proc: EPERM".into()
            }
        );
        assert_eq!(
            failure("ok nope\n"),
            SetupFailure::BadStatus {
                line: "ok nope".into()
            }
        );
        assert_eq!(
            failure("what\n"),
            SetupFailure::BadStatus {
                line: "what".into()
            }
        );
        assert_eq!(failure(""), SetupFailure::NoStatus { log: "died".into() });
    }
}
