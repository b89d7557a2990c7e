//! Small text helpers the domain shares with the HTTP edge (which re-exports them from its
//! `wire`): timestamps, the JSON form of an event, cutting strings, a command's argv.

use paddock_store::{Event, Millis};

use crate::error::Error;

/// An RFC 3339 UTC timestamp, or null.
pub fn rfc3339(ms: Option<Millis>) -> serde_json::Value {
    let Some(ms) = ms else {
        return serde_json::Value::Null;
    };
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map_or(serde_json::Value::Null, serde_json::Value::String)
}

/// The wire form of an event (SSE, `/v1/events`, webhooks), as JSON: the fields of the
/// edge's `EventView` (a `serde_json` object keeps its keys sorted, so the bytes are the
/// same however it is built).
pub fn event_json(e: &Event) -> serde_json::Value {
    serde_json::json!({
        "seq": e.seq,
        "at": rfc3339(Some(e.at)),
        "sandbox_id": e.sandbox_id,
        "kind": e.kind,
        "data": e.data,
    })
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The argv of a request that names a command as `cmd` (an argv array) or `command` (a
/// shell command line, run by `bash -l -c`): exactly one of them, not empty. Shared by exec,
/// services and rollouts.
pub fn command_argv(
    cmd: Option<Vec<String>>,
    command: Option<String>,
) -> Result<Vec<String>, Error> {
    match (cmd, command) {
        (Some(c), None) if c.first().is_some_and(|p| !p.is_empty()) => Ok(c),
        (Some(_), None) => Err(Error::BadRequest("cmd must not be empty".into())),
        (None, Some(c)) if !c.trim().is_empty() => {
            Ok(vec!["/bin/bash".into(), "-l".into(), "-c".into(), c])
        }
        (None, Some(_)) => Err(Error::BadRequest("command must not be empty".into())),
        _ => Err(Error::BadRequest(
            "give exactly one of `cmd` (an argv array) and `command` (a shell command line)".into(),
        )),
    }
}
