//! A rollout's request: its wire form ([`Body`]), the checks, and the checked [`Spec`].

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::text::command_argv;

/// Default and maximum sandboxes worked on at once.
pub const DEFAULT_CONCURRENCY: u32 = 4;
pub const MAX_CONCURRENCY: u32 = 64;
/// Default failures that stop a rollout (and start its rollback).
pub const DEFAULT_MAX_FAILURES: u32 = 1;
/// Default and maximum time for one sandbox's command, upload or rollback, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
pub const MAX_TIMEOUT_SECS: u64 = 3600;
/// Most bytes an upload may carry (decoded), and most files in its `files` form.
pub const MAX_UPLOAD_BYTES: usize = 16 << 20;
pub const MAX_UPLOAD_FILES: usize = 1000;
/// The request body's cap: the upload in base64 and room for the rest.
pub const MAX_BODY_BYTES: usize = MAX_UPLOAD_BYTES / 3 * 4 + (1 << 20);
/// Most bytes of a path in the sandbox.
const MAX_PATH: usize = 4096;

/// A command given as an argv array or as a shell command line (`bash -l -c`).
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum CommandBody {
    Line(String),
    Argv(Vec<String>),
}

/// `POST /v1/rollouts`: exactly one of `cmd`, `command` and `upload`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", schema(as = CreateRollout))]
pub struct Body {
    /// Metadata pairs every target must have (exact match, as the sandbox list's
    /// metadata.KEY=VALUE); only running sandboxes the key may reach. At least one pair.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    selector: BTreeMap<String, String>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    /// A shell command line (bash -l -c)
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(inline))]
    upload: Option<UploadBody>,
    /// Run on every sandbox whose command or upload was started when max_failures is reached
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(inline))]
    rollback: Option<CommandBody>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 64, default = 4))]
    concurrency: Option<u32>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, default = 1))]
    max_failures: Option<u32>,
    /// Seconds per sandbox for the command, upload or rollback
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 3600, default = 300)
    )]
    timeout: Option<u64>,
    #[serde(default)]
    user: Option<String>,
}

/// Exactly one of tar (with path) or files; at most 16 MiB decoded
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadBody {
    /// The directory a `tar` is extracted into.
    #[serde(default)]
    path: Option<String>,
    /// A tar, tar.gz or tar.zst, base64.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(format = Byte))]
    tar: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(inline, max_items = 1000))]
    files: Option<Vec<FileBody>>,
}

/// A file to write.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct FileBody {
    path: String,
    /// The file's bytes, base64.
    #[cfg_attr(feature = "openapi", schema(format = Byte))]
    content: String,
}

/// What a rollout does in each sandbox.
#[derive(Debug, Clone)]
pub enum Action {
    Command(Vec<String>),
    Upload(Upload),
}

/// Files to put in each sandbox.
#[derive(Debug, Clone)]
pub enum Upload {
    /// A tar (plain, gzip or zstd) extracted into a directory.
    Tar { dir: String, data: Bytes },
    /// Files written at absolute paths (parents created).
    Files(Vec<(String, Bytes)>),
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Command(_) => "command",
            Action::Upload(_) => "upload",
        }
    }
}

/// A checked rollout request.
#[derive(Debug, Clone)]
pub struct Spec {
    pub selector: BTreeMap<String, String>,
    pub action: Action,
    pub rollback: Option<Vec<String>>,
    pub concurrency: u32,
    pub max_failures: u32,
    pub timeout: Duration,
    pub user: Option<String>,
}

/// `k=v,k2=v2`, for messages.
pub fn selector_text(s: &BTreeMap<String, String>) -> String {
    let t = s
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    crate::text::truncate(&t, 256)
}

fn decode(what: &str, b64: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| Error::BadRequest(format!("{what} is not valid base64: {e}")))
}

fn check_path(what: &str, p: &str) -> Result<()> {
    if !p.starts_with('/') || p.len() > MAX_PATH {
        return Err(Error::BadRequest(format!(
            "{what} must be an absolute path of at most {MAX_PATH} bytes, got {:?}",
            crate::text::truncate(p, 64)
        )));
    }
    Ok(())
}

impl UploadBody {
    fn check(self) -> Result<Upload> {
        match (self.tar, self.files) {
            (Some(tar), None) => {
                let dir = self.path.ok_or_else(|| {
                    Error::BadRequest("upload.tar needs upload.path, the directory".into())
                })?;
                check_path("upload.path", &dir)?;
                let data = decode("upload.tar", &tar)?;
                if data.is_empty() {
                    return Err(Error::BadRequest("upload.tar is empty".into()));
                }
                if data.len() > MAX_UPLOAD_BYTES {
                    return Err(too_big());
                }
                Ok(Upload::Tar {
                    dir,
                    data: data.into(),
                })
            }
            (None, Some(files)) => {
                if self.path.is_some() {
                    return Err(Error::BadRequest(
                        "upload.path goes with upload.tar; each of upload.files names its path"
                            .into(),
                    ));
                }
                if files.is_empty() || files.len() > MAX_UPLOAD_FILES {
                    return Err(Error::BadRequest(format!(
                        "upload.files must list 1 to {MAX_UPLOAD_FILES} files"
                    )));
                }
                let mut total = 0;
                let mut out = Vec::with_capacity(files.len());
                for f in files {
                    check_path("upload.files[].path", &f.path)?;
                    if f.path.ends_with('/') {
                        return Err(Error::BadRequest(format!(
                            "upload.files[].path {:?} names a directory; name the file",
                            crate::text::truncate(&f.path, 64)
                        )));
                    }
                    let data = decode("upload.files[].content", &f.content)?;
                    total += data.len();
                    if total > MAX_UPLOAD_BYTES {
                        return Err(too_big());
                    }
                    out.push((f.path, Bytes::from(data)));
                }
                Ok(Upload::Files(out))
            }
            _ => Err(Error::BadRequest(
                "upload needs exactly one of tar (with path) or files".into(),
            )),
        }
    }
}

fn too_big() -> Error {
    Error::BadRequest(format!(
        "the upload is larger than {MAX_UPLOAD_BYTES} bytes; use a volume or sync for more"
    ))
}

impl Body {
    /// Checks every field; the first problem is a 400 naming it.
    pub fn check(self) -> Result<Spec> {
        if self.selector.is_empty() {
            return Err(Error::BadRequest(
                "selector needs at least one metadata key=value pair (a rollout never reaches \
                 every sandbox by default)"
                    .into(),
            ));
        }
        crate::sandbox_spec::check_metadata(&self.selector)?;
        let action = match (self.cmd, self.command, self.upload) {
            (None, None, None) => {
                return Err(Error::BadRequest(
                    "a rollout needs a command (cmd or command) or an upload".into(),
                ));
            }
            (c, l, None) => Action::Command(command_argv(c, l)?),
            (None, None, Some(u)) => Action::Upload(u.check()?),
            _ => {
                return Err(Error::BadRequest(
                    "a rollout runs a command or an upload, not both".into(),
                ));
            }
        };
        let rollback = match self.rollback {
            None => None,
            Some(CommandBody::Line(l)) => Some(
                command_argv(None, Some(l))
                    .map_err(|_| Error::BadRequest("rollback must not be empty".into()))?,
            ),
            Some(CommandBody::Argv(a)) => Some(
                command_argv(Some(a), None)
                    .map_err(|_| Error::BadRequest("rollback must not be empty".into()))?,
            ),
        };
        let concurrency = self.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            return Err(Error::BadRequest(format!(
                "concurrency must be 1 to {MAX_CONCURRENCY}, got {concurrency}"
            )));
        }
        let max_failures = self.max_failures.unwrap_or(DEFAULT_MAX_FAILURES);
        if max_failures == 0 {
            return Err(Error::BadRequest("max_failures must be at least 1".into()));
        }
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if !(1..=MAX_TIMEOUT_SECS).contains(&timeout) {
            return Err(Error::BadRequest(format!(
                "timeout must be 1 to {MAX_TIMEOUT_SECS} seconds, got {timeout}"
            )));
        }
        if let Some(u) = &self.user
            && (u.is_empty() || u.len() > 64)
        {
            return Err(Error::BadRequest("user must be 1 to 64 bytes".into()));
        }
        Ok(Spec {
            selector: self.selector,
            action,
            rollback,
            concurrency,
            max_failures,
            timeout: Duration::from_secs(timeout),
            user: self.user,
        })
    }
}

impl Spec {
    /// What is stored and shown: the request without uploaded bytes (sizes instead).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "selector": self.selector,
            "rollback": self.rollback,
            "concurrency": self.concurrency,
            "max_failures": self.max_failures,
            "timeout": self.timeout.as_secs(),
            "user": self.user,
        });
        match &self.action {
            Action::Command(argv) => v["cmd"] = json!(argv),
            Action::Upload(Upload::Tar { dir, data }) => {
                v["upload"] = json!({ "path": dir, "tar_bytes": data.len() });
            }
            Action::Upload(Upload::Files(files)) => {
                v["upload"] = json!({
                    "files": files
                        .iter()
                        .map(|(p, d)| json!({ "path": p, "bytes": d.len() }))
                        .collect::<Vec<_>>()
                });
            }
        }
        v
    }
}
