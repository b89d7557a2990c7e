//! Small text helpers the domain shares with the HTTP edge (which re-exports them from its
//! `wire`): timestamps, the wire form of an event, cutting strings, a command's argv.

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

// The one wire form of an event, for the domain's webhooks and the edge's routes alike.
/// A lifecycle event as clients see it (SSE, `/v1/events`, `.../logs`, webhooks).
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = Event))]
pub struct EventView {
    /// Strictly increasing across the store
    pub seq: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: serde_json::Value,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub sandbox_id: Option<String>,
    /// The event kind, such as created, failed, timeout_warning, timeout_changed, expired,
    /// killed, oom, adopted, lost, shutdown, paused, resumed (every kind: docs/api.md)
    pub kind: String,
    /// What the kind carries (docs/api.md)
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: serde_json::Value,
}

impl EventView {
    pub fn of(e: &Event) -> EventView {
        EventView {
            seq: e.seq,
            at: rfc3339(Some(e.at)),
            sandbox_id: e.sandbox_id.clone(),
            kind: e.kind.clone(),
            data: e.data.clone(),
        }
    }
}

/// The wire form of an event, as JSON (a `serde_json` object keeps its keys sorted).
pub fn event_json(e: &Event) -> serde_json::Value {
    serde_json::to_value(EventView::of(e)).unwrap_or_default()
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
