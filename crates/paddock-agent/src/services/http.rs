//! The services' routes on the agent's socket (the host's server forwards its REST routes
//! here): `GET/POST /services`, `GET/DELETE /services/{name}`,
//! `POST /services/{name}/{start,stop,restart}`, `GET /services/{name}/logs?from=N`.
//! Errors are `{"code": <status>, "message"}`: 400 bad spec, 404 unknown name, 409 a name in
//! use or too many services.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{Service, ServiceError, Services, Spec};
use crate::files::ApiError;

/// Most bytes of output one logs response carries.
const LOGS_PAGE: usize = 256 * 1024;

pub fn router(services: Services) -> Router {
    Router::new()
        .route("/services", get(list).post(add))
        .route("/services/{name}", get(one).delete(remove))
        .route("/services/{name}/start", post(start))
        .route("/services/{name}/stop", post(stop))
        .route("/services/{name}/restart", post(restart))
        .route("/services/{name}/logs", get(logs))
        .with_state(services)
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let status = match e {
            ServiceError::Invalid(_) => StatusCode::BAD_REQUEST,
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::Conflict(_) => StatusCode::CONFLICT,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The spec (its health check as `health_check`) and the status (`health` is what the
/// check found).
fn service_json(s: &Service) -> Value {
    let mut v = serde_json::to_value(s.spec()).unwrap_or_default();
    if let (Some(o), Ok(Value::Object(st))) = (v.as_object_mut(), serde_json::to_value(s.status()))
    {
        if let Some(h) = o.remove("health") {
            o.insert("health_check".into(), h);
        }
        o.extend(st);
    }
    v
}

async fn list(State(svcs): State<Services>) -> Response {
    let all: Vec<Value> = svcs.list().iter().map(|s| service_json(s)).collect();
    Json(json!({ "services": all })).into_response()
}

async fn add(State(svcs): State<Services>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let spec: Spec = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid service: {e}")))?;
    let (svc, started) = svcs.add(spec)?;
    // Answer once the first start was tried, so the status shows it running (or why not).
    let _ = started.await;
    Ok((StatusCode::CREATED, Json(service_json(&svc))).into_response())
}

async fn one(State(svcs): State<Services>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let svc = svcs.get(&name)?;
    Ok(Json(service_json(&svc)).into_response())
}

async fn remove(
    State(svcs): State<Services>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    svcs.remove(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn start(
    State(svcs): State<Services>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let svc = svcs.get(&name)?;
    svc.start().await;
    Ok(Json(service_json(&svc)).into_response())
}

async fn stop(
    State(svcs): State<Services>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let svc = svcs.get(&name)?;
    svc.stop().await;
    Ok(Json(service_json(&svc)).into_response())
}

async fn restart(
    State(svcs): State<Services>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let svc = svcs.get(&name)?;
    svc.restart().await;
    Ok(Json(service_json(&svc)).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    #[serde(default)]
    from: u64,
}

/// `{"first_seq", "next_seq", "entries": [{"seq", "run", "stream", "data"}]}`, at most
/// [`LOGS_PAGE`] bytes; ask again `from` `next_seq` of the page (or the last entry + 1).
async fn logs(
    State(svcs): State<Services>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let svc: Arc<Service> = svcs.get(&name)?;
    let (first, next, chunks) = svc.output(q.from);
    let mut bytes = 0;
    let mut entries = Vec::new();
    let mut page_next = next;
    for (seq, run, stream, data) in chunks {
        if bytes + data.len() > LOGS_PAGE && !entries.is_empty() {
            page_next = seq;
            break;
        }
        bytes += data.len();
        entries.push(json!({
            "seq": seq,
            "run": run,
            "stream": stream,
            "data": String::from_utf8_lossy(&data),
        }));
    }
    Ok(
        Json(json!({ "first_seq": first, "next_seq": page_next, "entries": entries }))
            .into_response(),
    )
}
