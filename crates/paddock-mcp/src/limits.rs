//! Every cap the tools apply, in one place (the tool descriptions and `docs/mcp.md` state
//! them; a unit test in `params` keeps the descriptions in step).

/// Sandboxes `list_sandboxes` returns (one page of `GET /v1/sandboxes`).
pub const LIST_SANDBOXES_CAP: usize = 100;
/// Bytes of each of stdout and stderr `run_command` returns (sent as the exec's
/// `max_output`, so the server stops capturing there).
pub const OUTPUT_CAP: usize = 65_536;
/// Bytes of text (stdout, stderr, text results, errors) `run_code` returns in all.
pub const RUN_CODE_CAP: usize = 65_536;
/// Seconds `run_code` lets code run when the call gives no `timeout`.
pub const RUN_CODE_TIMEOUT_SECS: u64 = 300;
/// Images (PNG, JPEG) `run_code` returns.
pub const RUN_CODE_IMAGES: usize = 4;
/// Bytes of one image `run_code` returns (a larger one is described, not sent).
pub const RUN_CODE_IMAGE_BYTES: usize = 1 << 20;
/// Bytes of `write_file`'s content.
pub const WRITE_FILE_CAP: usize = 2 << 20;
/// Bytes of a file `read_file` returns.
pub const READ_FILE_CAP: usize = 131_072;
/// Entries `list_files` returns.
pub const LIST_FILES_CAP: usize = 1000;
/// Bytes of a JSON answer of the API the tools read (sandbox records, listings, exec
/// results: 2 × 64 KiB of output escaped as JSON fits).
pub const JSON_ANSWER_CAP: usize = 4 << 20;
/// Bytes of a `run_code` NDJSON stream read before it is cut (the text kept is
/// [`RUN_CODE_CAP`]; images are base64 in the stream).
pub const RUN_CODE_STREAM_CAP: usize = 16 << 20;
/// Bytes of an MCP request body on `/mcp` (a `write_file` of [`WRITE_FILE_CAP`] bytes,
/// escaped as JSON, fits).
pub const MCP_BODY_CAP: usize = 8 << 20;
