//! NUL bytes in requests: refused at the edge with 400 and the field's name.
//!
//! Every string the API passes on ends up in a C string somewhere (argv, environment, paths,
//! user names, SQL JSON paths, file names), where a NUL either truncates it silently or fails
//! deep inside the agent (which used to answer 502 `agent_error`). So:
//!
//! - `reject_nul_in_target` (in [`crate::app`]), in front of every REST and E2B control route (not the data
//!   plane or the port proxy, which forward the target untouched), refuses a request whose
//!   path or any query parameter (name or value, after percent-decoding) contains NUL:
//!   files, fs, archive and PTY parameters, list filters (`metadata.K=V`), template names in
//!   the path.
//! - [`nul_field`], used by the JSON extractors ([`super::json::Json`], the E2B control routes'
//!   bodies), names the first string (key or value) of a JSON body that contains NUL: env
//!   keys and values, `cmd` arguments, `command`, `cwd`, `user`, `tag`, metadata, template
//!   names, paths of `fs/mkdir` and `fs/move`, and everything else. The one exception is an
//!   exec's top-level `stdin`, which is data for the process, not a C string.

use serde_json::Value;

/// Top-level JSON fields that carry bytes for a process, where NUL is data.
const DATA_FIELDS: [&str; 1] = ["stdin"];

/// The message for a field that contains NUL.
pub fn nul_message(field: &str) -> String {
    format!(
        "{} must not contain NUL bytes",
        paddock_service::state::truncate(field, 128)
    )
}

/// The path (`env.FOO`, `cmd[2]`, `metadata` key `K`) of the first JSON string in `bytes`
/// that contains NUL, if any. Cheap when there is none: NUL can only be written `\u0000`.
pub fn nul_field(bytes: &[u8]) -> Option<String> {
    if !bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return None;
    }
    let v: Value = serde_json::from_slice(bytes).ok()?;
    find(&v, "", true)
}

fn find(v: &Value, at: &str, top: bool) -> Option<String> {
    let name = |at: &str| {
        if at.is_empty() {
            "the body".to_owned()
        } else {
            at.to_owned()
        }
    };
    match v {
        Value::String(s) if s.contains('\0') => Some(name(at)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| find(x, &format!("{at}[{i}]"), false)),
        Value::Object(m) => m.iter().find_map(|(k, x)| {
            let path = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            if k.contains('\0') {
                return Some(format!("a key of {}", name(at)));
            }
            if top && DATA_FIELDS.contains(&k.as_str()) {
                return None;
            }
            find(x, &path, false)
        }),
        _ => None,
    }
}
