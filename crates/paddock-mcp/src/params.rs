//! The tools' inputs (their JSON Schemas come from these types through `schemars`) and the
//! descriptions a model reads to pick a tool.

use schemars::JsonSchema;
use serde::Deserialize;

/// `create_sandbox`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSandbox {
    /// Template (image) to start from, e.g. `base`, `python`, `node`, `code-interpreter`.
    /// Default: `base` (the host's tools, read-only, with bash and coreutils).
    #[serde(default)]
    pub(crate) template: Option<String>,
    /// Seconds the sandbox lives before it is destroyed with everything in it.
    /// Default 300; at most the server's maximum.
    #[serde(default)]
    pub(crate) timeout: Option<u64>,
    /// Outbound network: `none` (loopback only, the default), `all` (the internet, never the
    /// host or private ranges) or `allow` (only the names and CIDRs in `allow`).
    #[serde(default)]
    pub(crate) network: Option<NetworkMode>,
    /// With `network: allow`: domain names (`pypi.org`, `*.pythonhosted.org`) and IPv4
    /// CIDRs the sandbox may reach. At most 256.
    #[serde(default)]
    pub(crate) allow: Option<Vec<String>>,
}

/// A sandbox's outbound network.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum NetworkMode {
    None,
    All,
    Allow,
}

impl NetworkMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::All => "all",
            NetworkMode::Allow => "allow",
        }
    }
}

/// `list_sandboxes`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListSandboxes {
    /// Also list stopped sandboxes (default: only starting and running ones).
    #[serde(default)]
    pub(crate) include_stopped: bool,
}

/// `kill_sandbox`, and every tool that only needs the sandbox.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SandboxOnly {
    /// The sandbox's id, as `create_sandbox` or `list_sandboxes` gave it.
    pub(crate) sandbox_id: String,
}

/// `run_command`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunCommand {
    /// The sandbox's id, as `create_sandbox` or `list_sandboxes` gave it.
    pub(crate) sandbox_id: String,
    /// A shell command line, run with `bash -l -c` (pipes, `&&` and redirections work).
    pub(crate) command: String,
    /// Working directory (absolute, or relative to the user's home). Default: the home.
    #[serde(default)]
    pub(crate) cwd: Option<String>,
    /// Seconds the command may run before it is killed. Default: the server's exec timeout
    /// (60 unless configured); 0: no limit of its own (the sandbox's timeout still applies).
    #[serde(default)]
    pub(crate) timeout: Option<u64>,
}

/// `run_code`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunCode {
    /// The sandbox's id; it must run the `code-interpreter` template.
    pub(crate) sandbox_id: String,
    /// The code to run. State (variables, imports) persists between calls.
    pub(crate) code: String,
    /// `python` (default), `javascript` (or `js`) or `bash`.
    #[serde(default)]
    pub(crate) language: Option<String>,
    /// Seconds before the execution is interrupted (the interpreter and its state stay
    /// usable). Default 300; 0: no limit.
    #[serde(default)]
    pub(crate) timeout: Option<u64>,
}

/// `write_file`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WriteFile {
    /// The sandbox's id.
    pub(crate) sandbox_id: String,
    /// Absolute path, or relative to the user's home. Missing parent directories are created;
    /// an existing file is replaced.
    pub(crate) path: String,
    /// The whole content, as UTF-8 text.
    pub(crate) content: String,
}

/// `read_file`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadFile {
    /// The sandbox's id.
    pub(crate) sandbox_id: String,
    /// Absolute path, or relative to the user's home.
    pub(crate) path: String,
}

/// `list_files`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListFiles {
    /// The sandbox's id.
    pub(crate) sandbox_id: String,
    /// Directory to list: absolute, or relative to the user's home. Default: the home.
    #[serde(default)]
    pub(crate) path: Option<String>,
    /// How deep to go: 1 (default, the directory's own entries) to 16.
    #[serde(default)]
    pub(crate) depth: Option<u32>,
}

/// `get_url`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GetUrl {
    /// The sandbox's id.
    pub(crate) sandbox_id: String,
    /// TCP port inside the sandbox (1-65535) that a server listens on, or will.
    pub(crate) port: u16,
}

pub(crate) const CREATE_SANDBOX: &str = "Create an isolated Linux sandbox (a fresh machine with its own \
filesystem, processes and network) and return its `sandbox_id`. Pass the id to run_command, \
run_code, write_file, read_file, list_files and get_url. Defaults: template `base`, timeout 300 \
s, no outbound network (`network: all` for the internet, or `allow` with names/CIDRs). For \
Python or JavaScript with persistent state and charts use template `code-interpreter` and \
run_code. The sandbox is destroyed when its timeout ends; call kill_sandbox when you are done.";

pub(crate) const LIST_SANDBOXES: &str = concat!(
    "List your sandboxes: id, template, state and when each expires. Default: only starting ",
    "and running ones (`include_stopped: true` adds stopped ones). At most ",
    "100 are returned (`more: true` says there are others). Use it to find a sandbox_id ",
    "you lost."
);

pub(crate) const KILL_SANDBOX: &str = "Destroy a sandbox at once, with its files and processes. It \
cannot be undone; its id stops working. Call it when a task is done.";

pub(crate) const RUN_COMMAND: &str = concat!(
    "Run a shell command in a sandbox and wait for it to end; returns `stdout`, `stderr` and ",
    "`exit_code` (0 is success; 127: command not found; `timed_out: true` when the time ",
    "limit killed it). The command runs with `bash -l -c` as the sandbox's user, in its home ",
    "unless `cwd` is given; files and installed packages persist between calls, shell state ",
    "(cd, variables) does not. Default time limit: the server's (60 s unless configured); ",
    "set `timeout` for longer work. Each stream keeps its first 65,536 bytes ",
    "(`stdout_truncated`); redirect big output to a file and read_file parts of it. ",
    "For a server that must keep running, start it in the background (`nohup cmd > log 2>&1 &`) ",
    "and call get_url."
);

pub(crate) const RUN_CODE: &str = concat!(
    "Run code in the sandbox's stateful interpreter (like a notebook cell) and return its ",
    "results: stdout, stderr, the value of the last expression and rich outputs (text, HTML, ",
    "JSON; PNG charts come back as images, a matplotlib chart's data also as `chart` JSON), or the ",
    "error with its traceback. Variables and ",
    "imports persist between calls. `language`: `python` (default), `javascript`/`js` or ",
    "`bash`. The sandbox must be made from the `code-interpreter` template ",
    "(create_sandbox with template `code-interpreter`). Runs at most `timeout` seconds ",
    "(default 300), then is interrupted. Text output is capped at 65,536 bytes ",
    "in all and at most 4 images are returned."
);

pub(crate) const WRITE_FILE: &str = concat!(
    "Write a UTF-8 text file in a sandbox, replacing it if it exists; parent directories are ",
    "created. Returns the path and size written. Content up to 2 MiB per call; for binary or ",
    "bigger data, write a script and run it with run_command."
);

pub(crate) const READ_FILE: &str = concat!(
    "Read a file from a sandbox. Text comes back as `content`; a file that is not UTF-8 comes ",
    "back base64-encoded as `content_base64`. At most the first 131,072 bytes are returned ",
    "(`truncated: true` and `size_read` say when the file is longer): read big files in parts ",
    "with run_command (`sed -n 1,200p FILE`, `head -c`, `tail`)."
);

pub(crate) const LIST_FILES: &str = concat!(
    "List a directory in a sandbox: name, path, type (file, dir, symlink, other) and size of ",
    "each entry. Default: the user's home, depth 1 (`depth` up to 16 lists subdirectories ",
    "too). At most 1,000 entries are returned (`truncated: true` says there were more)."
);

pub(crate) const GET_URL: &str = concat!(
    "Get the URL at which a port of a sandbox is reachable over HTTP (and WebSocket) from ",
    "outside, through the Paddock server's proxy, for example to open a web app started in ",
    "the sandbox. Start the server first with run_command (in the background, listening on ",
    "0.0.0.0 or 127.0.0.1); `listening` says whether anything listens yet. The URL carries the ",
    "sandbox's access token unless the port is public: treat it as a secret. `path_url` is ",
    "the same port under the server's own address (needs the token too)."
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{
        LIST_FILES_CAP, LIST_SANDBOXES_CAP, OUTPUT_CAP, READ_FILE_CAP, RUN_CODE_CAP,
        RUN_CODE_TIMEOUT_SECS, WRITE_FILE_CAP,
    };

    /// The descriptions name the caps the code applies.
    #[test]
    fn descriptions_state_the_caps() {
        assert_eq!(LIST_SANDBOXES_CAP, 100);
        assert!(LIST_SANDBOXES.contains("100 are returned"));
        assert_eq!(OUTPUT_CAP, 65_536);
        assert!(RUN_COMMAND.contains("65,536 bytes"));
        assert_eq!(RUN_CODE_CAP, 65_536);
        assert!(RUN_CODE.contains("65,536 bytes"));
        assert_eq!(RUN_CODE_TIMEOUT_SECS, 300);
        assert!(RUN_CODE.contains("(default 300)"));
        assert_eq!(WRITE_FILE_CAP, 2 << 20);
        assert!(WRITE_FILE.contains("2 MiB"));
        assert_eq!(READ_FILE_CAP, 131_072);
        assert!(READ_FILE.contains("131,072 bytes"));
        assert_eq!(LIST_FILES_CAP, 1000);
        assert!(LIST_FILES.contains("1,000 entries"));
    }
}
