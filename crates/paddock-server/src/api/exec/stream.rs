//! Process events as a response body: NDJSON lines or SSE events, with keepalives and
//! exactly one `end`.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use connectrpc::ConnectError;
use paddock_envd::process::__buffa::oneof::process_event::Event;
use paddock_envd::process::__buffa::oneof::process_event::data_event::Output;
use serde_json::Value;
use tokio::sync::mpsc;

use super::wire::{DataLine, EndLine, ProcessEvent};
use super::{Ended, Finish, Format, KEEPALIVE};

/// Converts one agent event into its line, and reports the end.
pub(super) fn to_end(
    item: Result<Event, ConnectError>,
    seq: &mut u64,
) -> (Option<ProcessEvent>, Option<Ended>) {
    match item {
        Ok(Event::Start(s)) => (Some(ProcessEvent::Start { pid: s.pid }), None),
        Ok(Event::Data(d)) => {
            let line = |b: &[u8]| DataLine::new(*seq, b);
            let v = match d.output {
                Some(Output::Stdout(b)) => ProcessEvent::Stdout(line(&b)),
                Some(Output::Stderr(b)) => ProcessEvent::Stderr(line(&b)),
                Some(Output::Pty(b)) => ProcessEvent::Pty(line(&b)),
                None => return (None, None),
            };
            *seq += 1;
            (Some(v), None)
        }
        Ok(Event::End(e)) => {
            let end = Ended {
                exit_code: e.exited.then_some(e.exit_code),
                status: e.status.clone(),
                timed_out: false,
            };
            let line = EndLine {
                exit_code: end.exit_code,
                status: e.status,
                error: e.error,
                timed_out: None,
                duration_ms: None,
            };
            (Some(ProcessEvent::End(line)), Some(end))
        }
        Ok(Event::Keepalive(_)) => (None, None),
        Err(e) => {
            let timed_out = e.code == connectrpc::ErrorCode::DeadlineExceeded;
            let end = Ended {
                exit_code: None,
                status: if timed_out {
                    "timeout".into()
                } else {
                    "error".into()
                },
                timed_out,
            };
            let msg = if timed_out {
                "the command timed out and was killed".to_owned()
            } else {
                tracing::warn!("process stream: {e}");
                "the connection to the process was lost".to_owned()
            };
            let line = EndLine {
                exit_code: None,
                status: end.status.clone(),
                error: Some(msg),
                timed_out: None,
                duration_ms: None,
            };
            (Some(ProcessEvent::End(line)), Some(end))
        }
    }
}

/// One line (NDJSON) or event (SSE) of a stream.
pub(super) fn frame(format: Format, e: &ProcessEvent) -> Bytes {
    let v = e.to_value();
    match format {
        Format::Sse => {
            let kind = v["type"].as_str().unwrap_or("message");
            let id = v
                .get("seq")
                .and_then(Value::as_u64)
                .map(|s| format!("id: {s}\n"))
                .unwrap_or_default();
            Bytes::from(format!("event: {kind}\n{id}data: {v}\n\n"))
        }
        _ => Bytes::from(format!("{v}\n")),
    }
}

/// A streaming response over the process events in `rx`, data sequence numbers starting at
/// `seq`. Sends `first` before anything else, keepalives after silence, exactly one `end`.
pub(super) fn stream_response(
    format: Format,
    mut rx: mpsc::Receiver<Result<Event, ConnectError>>,
    mut seq: u64,
    first: Option<ProcessEvent>,
    finish: Option<(Finish, u32)>,
) -> Response {
    let (tx, body_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(32);
    tokio::spawn(async move {
        let mut client_gone = false;
        let send = async |v: &ProcessEvent, gone: &mut bool| {
            if !*gone && tx.send(Ok(frame(format, v))).await.is_err() {
                *gone = true;
            }
        };
        if let Some(v) = first {
            send(&v, &mut client_gone).await;
        }
        let mut end = Ended::default();
        loop {
            match tokio::time::timeout(KEEPALIVE, rx.recv()).await {
                Err(_) => send(&ProcessEvent::Keepalive, &mut client_gone).await,
                Ok(None) => {
                    end.status = "error".into();
                    let v = ProcessEvent::End(EndLine {
                        exit_code: None,
                        status: "error".into(),
                        error: Some("the process stream ended without an end event".into()),
                        timed_out: None,
                        duration_ms: None,
                    });
                    send(&v, &mut client_gone).await;
                    break;
                }
                Ok(Some(item)) => {
                    let (v, e) = to_end(item, &mut seq);
                    if let Some(mut v) = v {
                        if let (Some(e), ProcessEvent::End(line)) = (&e, &mut v) {
                            line.timed_out = Some(e.timed_out);
                            if let Some((f, _)) = &finish {
                                line.duration_ms = Some(f.started.elapsed().as_millis() as u64);
                            }
                        }
                        send(&v, &mut client_gone).await;
                    }
                    if let Some(e) = e {
                        end = e;
                        break;
                    }
                }
            }
            // A client that left stops the stream; without a history to finish there is
            // nothing more to do.
            if client_gone && finish.is_none() {
                return;
            }
        }
        if let Some((f, pid)) = finish {
            f.done(Some(pid), &end).await;
        }
    });
    let ct = match format {
        Format::Sse => "text/event-stream",
        _ => "application/x-ndjson",
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, ct)
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(body_rx),
        ))
        .unwrap_or_default()
}
