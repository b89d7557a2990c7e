//! `paddock logs`: a sandbox's lifecycle events and command history, and with `--follow`
//! its new events from the server-sent event stream (`/v1/events`) until it stops.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use futures::StreamExt;
use serde_json::Value;
use time::OffsetDateTime;

use super::api::Api;
use super::exec::LineSplitter;
use super::format::{self, one_line};
use super::{Conn, write_stdout};

/// Event kinds after which a sandbox is stopped.
pub(crate) const FINAL_KINDS: [&str; 5] = ["killed", "expired", "shutdown", "failed", "lost"];

/// `paddock logs`.
#[derive(Args, Debug)]
pub(crate) struct LogsArgs {
    /// The sandbox.
    pub(crate) id: String,
    /// Keep printing new events until the sandbox stops.
    #[arg(long, short = 'f')]
    pub(crate) follow: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// One event's line: `<at>  <kind>  k=v ...`.
pub(crate) fn event_line(e: &Value) -> String {
    let mut line = format!("{}  {}", stamp(&e["at"]), format::cell(&e["kind"]));
    let data = data_text(&e["data"]);
    if !data.is_empty() {
        line.push_str("  ");
        line.push_str(&data);
    }
    line
}

/// An event's data as `k=v k2=v2` (strings bare, others as JSON).
fn data_text(v: &Value) -> String {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", format::cell(v)))
            .collect::<Vec<_>>()
            .join(" "),
        Value::Null => String::new(),
        other => one_line(&other.to_string()),
    }
}

/// One command's line: `<at>  exec  <command>  (<status>, <duration>)`.
pub(crate) fn exec_line(x: &Value) -> String {
    let status = match (&x["status"], &x["exit_code"]) {
        (Value::String(s), _) => one_line(s),
        (_, Value::Number(n)) => format!("exit status {n}"),
        _ => "running".into(),
    };
    let mut line = format!(
        "{}  exec  {}  ({status}",
        stamp(&x["at"]),
        format::command(&x["command"])
    );
    if let Some(ms) = x["duration_ms"].as_u64() {
        line.push_str(", ");
        line.push_str(&duration_ms(ms));
    }
    line.push(')');
    line
}

/// One file change or test run: `<at>  upload  path=/home/user/x` (the outcome when it
/// failed).
pub(crate) fn activity_line(a: &Value) -> String {
    let label = match a["action"].as_str().unwrap_or_default() {
        "files.write" => "upload",
        "files.archive_extract" => "upload (archive)",
        "files.delete" => "delete",
        "files.mkdir" => "mkdir",
        "files.move" => "move",
        "tests.run" => "test",
        other => other,
    };
    let mut line = format!("{}  {label}", stamp(&a["at"]));
    if let Some(d) = a["detail"].as_str() {
        line.push_str("  ");
        line.push_str(&one_line(d));
    }
    match a["outcome"].as_str() {
        Some("ok") | None => {}
        Some(o) => line.push_str(&format!("  ({})", one_line(o))),
    }
    line
}

/// A time as `2025-01-01T12:00:00.500Z`: always UTC with milliseconds, so that lines align.
/// Anything that is not an RFC 3339 time is shown as it is.
pub(crate) fn stamp(v: &Value) -> String {
    let Some(t) = v.as_str().and_then(format::parse_time) else {
        return format::cell(v);
    };
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// `850ms`, `1.2s`, `3m5s`.
pub(crate) fn duration_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format::short_duration(ms / 1000)
    }
}

/// The `GET /v1/sandboxes/{id}/logs` answer as text, events and commands in time order.
/// Also returns the last event sequence number and whether the sandbox has stopped.
pub(crate) fn render_logs(v: &Value) -> (String, Option<i64>, bool) {
    let mut lines: Vec<(Option<OffsetDateTime>, usize, String)> = Vec::new();
    let mut last = None;
    let mut stopped = false;
    let empty = Vec::new();
    let events = v["events"].as_array().unwrap_or(&empty);
    for e in events {
        if let Some(s) = e["seq"].as_i64() {
            last = Some(last.map_or(s, |l: i64| l.max(s)));
        }
        stopped |= is_final(e);
        let at = e["at"].as_str().and_then(format::parse_time);
        lines.push((at, lines.len(), event_line(e)));
    }
    for x in v["execs"].as_array().unwrap_or(&empty) {
        let at = x["at"].as_str().and_then(format::parse_time);
        lines.push((at, lines.len(), exec_line(x)));
    }
    for a in v["activity"].as_array().unwrap_or(&empty) {
        let at = a["at"].as_str().and_then(format::parse_time);
        lines.push((at, lines.len(), activity_line(a)));
    }
    // Stable: equal times keep events before commands, each in the server's order.
    lines.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut out = String::new();
    for (_, _, l) in lines {
        out.push_str(&l);
        out.push('\n');
    }
    (out, last, stopped)
}

fn is_final(e: &Value) -> bool {
    e["kind"].as_str().is_some_and(|k| FINAL_KINDS.contains(&k))
}

/// One server-sent event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub(crate) event: String,
    pub(crate) data: String,
    pub(crate) id: Option<String>,
}

/// An incremental `text/event-stream` parser (`event:`, `data:`, `id:` fields; `:` comments;
/// a blank line ends an event).
#[derive(Default)]
pub(crate) struct SseParser {
    lines: LineSplitter,
    event: String,
    data: Vec<String>,
    id: Option<String>,
}

impl SseParser {
    /// Adds bytes; returns the events they complete.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for line in self.lines.push(chunk) {
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if !self.data.is_empty() {
                    out.push(SseEvent {
                        event: if self.event.is_empty() {
                            "message".into()
                        } else {
                            std::mem::take(&mut self.event)
                        },
                        data: self.data.join("\n"),
                        id: self.id.clone(),
                    });
                }
                self.data.clear();
                self.event.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "event" => self.event = value.to_owned(),
                "data" => self.data.push(value.to_owned()),
                "id" => self.id = Some(value.to_owned()),
                _ => {}
            }
        }
        out
    }
}

/// Prints the logs; with `--follow`, new events until the sandbox stops.
pub(crate) async fn run(a: LogsArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    let v: Value = api.get_json(&["v1", "sandboxes", &a.id, "logs"]).await?;
    let (text, mut last, stopped) = render_logs(&v);
    write_stdout(&text)?;
    if !a.follow || stopped || is_stopped(&api, &a.id).await? {
        return Ok(0);
    }
    let mut failures = 0u32;
    loop {
        let mut q = vec![("sandbox_id".to_owned(), a.id.clone())];
        if let Some(l) = last {
            q.push(("after".into(), l.to_string()));
        }
        let resp = api
            .send(
                api.request(reqwest::Method::GET, api.url(&["v1", "events"]))
                    .query(&q)
                    .header(reqwest::header::ACCEPT, "text/event-stream"),
            )
            .await?;
        let mut body = resp.bytes_stream();
        let mut parser = SseParser::default();
        'stream: while let Some(Ok(chunk)) = body.next().await {
            for ev in parser.push(&chunk) {
                let Ok(e) = serde_json::from_str::<Value>(&ev.data) else {
                    continue;
                };
                if ev.event == "lagged" || e["kind"] == "lagged" {
                    eprintln!("paddock: events were dropped; reconnecting");
                    break 'stream;
                }
                let seq = e["seq"].as_i64();
                if let (Some(s), Some(l)) = (seq, last)
                    && s <= l
                {
                    continue;
                }
                write_stdout(&format!("{}\n", event_line(&e)))?;
                if seq.is_some() {
                    last = seq;
                }
                failures = 0;
                if is_final(&e) {
                    return Ok(0);
                }
            }
        }
        if is_stopped(&api, &a.id).await? {
            return Ok(0);
        }
        failures += 1;
        if failures > 5 {
            bail!("the event stream keeps closing");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn is_stopped(api: &Api, id: &str) -> Result<bool> {
    let s: Value = api.get_json(&["v1", "sandboxes", id]).await?;
    Ok(s["state"] == "stopped")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sse() {
        let mut p = SseParser::default();
        assert!(p.push(b": keepalive\n\n").is_empty());
        let evs = p.push(b"event: created\nid: 4\ndata: {\"seq\":4}\n\nevent: kil");
        assert_eq!(
            evs,
            [SseEvent {
                event: "created".into(),
                data: "{\"seq\":4}".into(),
                id: Some("4".into())
            }]
        );
        let evs = p.push(b"led\r\ndata:a\r\ndata: b\r\n\r\ndata\n\n");
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].event, "killed");
        assert_eq!(evs[0].data, "a\nb");
        assert_eq!(evs[1].event, "message");
        assert_eq!(evs[1].data, "");
        assert_eq!(evs[1].id.as_deref(), Some("4"));
    }

    #[test]
    fn logs_text() {
        let v = json!({
            "events": [
                {"seq": 3, "at": "2025-01-01T12:00:00.5Z", "sandbox_id": "sbx_1", "kind": "created",
                 "data": {"template": "base", "ready_ms": 40}},
                {"seq": 9, "at": "2025-01-01T12:05:00Z", "sandbox_id": "sbx_1", "kind": "killed", "data": {}},
            ],
            "execs": [
                {"at": "2025-01-01T12:01:00Z", "command": ["python", "-c", "print(1)"], "pid": 7,
                 "exit_code": 0, "status": "exit status 0", "duration_ms": 1234},
                {"at": "2025-01-01T12:00:00Z", "command": "true", "pid": 6,
                 "exit_code": null, "status": "signal: killed", "duration_ms": 5},
            ],
            "activity": [
                {"at": "2025-01-01T12:00:30Z", "action": "files.archive_extract", "outcome": "ok",
                 "detail": "path=/home/user/app"},
                {"at": "2025-01-01T12:02:00Z", "action": "tests.run", "outcome": "ok",
                 "detail": "cwd=/home/user/app framework=auto cmd=pytest"},
                {"at": "2025-01-01T12:03:00Z", "action": "files.write", "outcome": "insufficient_storage",
                 "detail": "path=/home/user/big"},
            ],
        });
        let (text, last, stopped) = render_logs(&v);
        assert_eq!(
            text,
            "2025-01-01T12:00:00.000Z  exec  true  (signal: killed, 5ms)\n\
             2025-01-01T12:00:00.500Z  created  ready_ms=40 template=base\n\
             2025-01-01T12:00:30.000Z  upload (archive)  path=/home/user/app\n\
             2025-01-01T12:01:00.000Z  exec  python -c 'print(1)'  (exit status 0, 1.2s)\n\
             2025-01-01T12:02:00.000Z  test  cwd=/home/user/app framework=auto cmd=pytest\n\
             2025-01-01T12:03:00.000Z  upload  path=/home/user/big  (insufficient_storage)\n\
             2025-01-01T12:05:00.000Z  killed\n"
        );
        assert_eq!(last, Some(9));
        assert!(stopped);
        let (text, last, stopped) = render_logs(&json!({"events": [], "execs": []}));
        assert_eq!((text.as_str(), last, stopped), ("", None, false));
    }

    #[test]
    fn stamps_align() {
        assert_eq!(
            stamp(&json!("2025-01-01T12:00:00.123456Z")),
            "2025-01-01T12:00:00.123Z"
        );
        assert_eq!(
            stamp(&json!("2025-01-01T13:00:00+01:00")),
            "2025-01-01T12:00:00.000Z"
        );
        assert_eq!(stamp(&json!("soon")), "soon");
        assert_eq!(stamp(&json!(null)), "-");
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ms(850), "850ms");
        assert_eq!(duration_ms(1240), "1.2s");
        assert_eq!(duration_ms(185_000), "3m5s");
    }
}
