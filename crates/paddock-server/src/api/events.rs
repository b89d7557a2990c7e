//! `/v1/events`: lifecycle events as a JSON page or a live SSE stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use paddock_store::{Event, EventFilter};
use serde::Serialize;
use tokio_stream::wrappers::BroadcastStream;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::wire::form_urlencoded_pairs;
use crate::wire::{EventView, event_json, typed_response};
use paddock_service::event_kind::EventKind;
use paddock_service::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/events", get(events))
}

/// A page of events.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventView>,
}

/// The query of `GET /v1/events`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct EventsQuery {
    /// Only this sandbox
    sandbox_id: Option<String>,
    /// Only events with a greater sequence number
    after: Option<i64>,
    /// Page size (1-1000)
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Lifecycle events
///
/// `GET /v1/events[?sandbox_id=ID][&after=SEQ][&limit=N]`. With `Accept: text/event-stream`
/// it replays stored events after `after` (or the `Last-Event-ID` header) and then streams
/// new ones live, each with `id: <seq>` and the event's kind as the SSE event name;
/// otherwise it returns one JSON page.
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "events",
    tag = "events",
    params(EventsQuery),
    responses(
        (status = 200, description = "Events", content(
            (EventList = "application/json"),
            (EventView = "text/event-stream"),
        )),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut f = EventFilter::default();
    for (k, v) in form_urlencoded_pairs(q.as_deref().unwrap_or("")) {
        match k.as_str() {
            "sandbox_id" => {
                // Checks ownership; another tenant's id is 404 like a missing one.
                state.record_for(&caller, &v).await?;
                f.sandbox_id = Some(v);
            }
            "after" => {
                f.after_seq = Some(v.parse().map_err(|_| {
                    ApiError::BadRequest(format!("after {v:?} is not a sequence number"))
                })?)
            }
            "limit" => f.limit = Some(crate::wire::parse_limit(&v)?),
            other => return Err(crate::wire::unknown_param(other)),
        }
    }
    if !caller.is_admin() {
        f.tenant = Some(caller.tenant().to_owned());
    }
    // A developer sees the events of the sandboxes it sees, and its tenant's other events.
    let visible = {
        let (state, caller) = (state.clone(), caller.clone());
        move |e: Event| {
            let (state, caller) = (state.clone(), caller.clone());
            async move {
                let seen = caller.key.role != paddock_store::Role::Developer
                    || match e.sandbox_id.as_ref() {
                        None => true,
                        Some(id) => {
                            matches!(state.store.get_sandbox(id).await, Ok(Some(r)) if caller.sees(&r))
                        }
                    };
                seen.then_some(e)
            }
        }
    };
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    if !sse {
        f.limit = Some(f.limit.unwrap_or(1000));
        let mut rows = Vec::new();
        for e in state.store.list_events(&f).await? {
            rows.extend(visible(e).await);
        }
        let events = rows.iter().map(EventView::of).collect();
        return Ok(typed_response(StatusCode::OK, &EventList { events }));
    }
    if f.after_seq.is_none() {
        f.after_seq = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok()?.parse().ok());
    }
    // Subscribe before reading the backlog, so nothing falls between the two; events seen
    // in both are skipped by sequence number.
    let live = BroadcastStream::new(state.events.subscribe());
    let backlog = if f.after_seq.is_some() {
        state
            .store
            .list_events(&EventFilter {
                limit: Some(10_000),
                ..f.clone()
            })
            .await?
    } else {
        Vec::new()
    };
    let mut visible_backlog: Vec<Event> = Vec::new();
    for e in backlog {
        visible_backlog.extend(visible(e).await);
    }
    let backlog = visible_backlog;
    let mut last = backlog
        .last()
        .map(|e| e.seq)
        .or(f.after_seq)
        .unwrap_or(i64::MIN);
    let filter = f.clone();
    let live = live.filter_map(move |r| {
        let keep = match r {
            Ok(e) if e.seq > last && matches_filter(&filter, &e) => {
                last = e.seq;
                return futures::future::Either::Left(visible(e));
            }
            // A lagging subscriber loses events; say so rather than silently skip.
            Err(_) => Some(Event {
                seq: 0,
                at: paddock_store::now_ms(),
                tenant: String::new(),
                sandbox_id: None,
                kind: EventKind::Lagged.as_str().into(),
                data: serde_json::json!({"message": "events were dropped; reconnect with Last-Event-ID"}),
            }),
            _ => None,
        };
        futures::future::Either::Right(futures::future::ready(keep))
    });
    // On a fleet node, other processes (nodes, control planes) store events too: the
    // store is the stream, polled every `FLEET_EVENT_POLL`.
    let live: std::pin::Pin<Box<dyn futures::Stream<Item = Event> + Send>> =
        if state.cfg.node.is_some() {
            Box::pin(poll_store(state.clone(), f.clone(), last))
        } else {
            Box::pin(live)
        };
    let stream = futures::stream::iter(backlog).chain(live).map(|e| {
        let mut ev = SseEvent::default()
            .event(e.kind.clone())
            .data(event_json(&e).to_string());
        if e.seq > 0 {
            ev = ev.id(e.seq.to_string());
        }
        Ok::<_, Infallible>(ev)
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// How often an SSE stream of a fleet node looks for new events in the store.
pub const FLEET_EVENT_POLL: Duration = Duration::from_millis(500);

/// Events after `last` matching `f`, read from the store as they arrive.
fn poll_store(
    state: Arc<AppState>,
    f: EventFilter,
    last: i64,
) -> impl futures::Stream<Item = Event> + Send {
    futures::stream::unfold(
        (state, f, last, std::collections::VecDeque::new()),
        |(state, f, mut last, mut queue)| async move {
            loop {
                if let Some(e) = queue.pop_front() {
                    return Some((e, (state, f, last, queue)));
                }
                let page = state
                    .store
                    .list_events(&EventFilter {
                        after_seq: Some(last),
                        limit: Some(1000),
                        ..f.clone()
                    })
                    .await;
                match page {
                    Ok(rows) if !rows.is_empty() => {
                        last = rows.last().map_or(last, |e| e.seq);
                        queue.extend(rows);
                    }
                    Ok(_) => tokio::time::sleep(FLEET_EVENT_POLL).await,
                    Err(e) => {
                        tracing::warn!("reading events: {e}");
                        tokio::time::sleep(FLEET_EVENT_POLL).await;
                    }
                }
            }
        },
    )
}

fn matches_filter(f: &EventFilter, e: &Event) -> bool {
    f.tenant.as_ref().is_none_or(|t| *t == e.tenant)
        && f.sandbox_id
            .as_ref()
            .is_none_or(|s| e.sandbox_id.as_ref() == Some(s))
}
