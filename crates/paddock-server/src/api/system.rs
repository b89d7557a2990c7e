//! Health, status, Prometheus metrics, and request counting (the OpenAPI document is
//! served by `openapi::serve`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::BodyExt as _;
use paddock_store::SandboxState;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Admin, Caller};
use crate::error::ApiResult;
use crate::wire::typed_response;
use paddock_service::hostload::HostLoad;
use paddock_service::metrics::Surface;
use paddock_service::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
}

/// `GET /v1/health`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`
    pub status: &'static str,
}

/// The host's load at the request, and what the running sandboxes use together (from their
/// last two usage samples, taken every --metrics-interval). A figure the host does not give
/// is null.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoadView {
    /// 1, 5 and 15 minute load averages
    #[schema(min_items = 3, max_items = 3)]
    pub load_avg: Option<[f64; 3]>,
    pub cpus: usize,
    pub memory_total_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
    /// Size of the filesystem holding the sandboxes' writable layers
    pub disk_total_bytes: Option<u64>,
    pub disk_free_bytes: Option<u64>,
    /// CPU the running sandboxes use, in cores
    pub sandbox_cpu_cores: f64,
    pub sandbox_memory_bytes: u64,
}

/// The server's limits.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServerLimits {
    pub max_timeout_secs: u64,
    pub default_timeout_secs: u64,
    /// Largest JSON request body
    pub max_json_body_bytes: usize,
    /// Largest output captured per stream of an exec
    pub max_output_bytes: usize,
    pub max_sandboxes_per_key: u32,
    pub rate_per_sec: f64,
    pub rate_burst: f64,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Status)]
pub struct StatusView {
    pub version: &'static str,
    pub uptime_secs: u64,
    pub sandboxes_running: usize,
    /// Always `native`
    pub runtime: &'static str,
    pub domain: String,
    /// Always true
    pub proxy: bool,
    pub load: LoadView,
    pub limits: ServerLimits,
}

/// Liveness
#[utoipa::path(
    get,
    path = "/v1/health",
    operation_id = "health",
    tag = "system",
    security(()),
    responses((status = 200, description = "Server is up", body = Health))
)]
pub(crate) async fn health() -> Response {
    typed_response(StatusCode::OK, &Health { status: "ok" })
}

/// Server version, uptime, running sandboxes and limits
#[utoipa::path(
    get,
    path = "/v1/status",
    operation_id = "status",
    tag = "system",
    responses(
        (status = 200, description = "Status", body = StatusView),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn status(State(state): State<Arc<AppState>>, _c: Caller) -> ApiResult<Response> {
    // The btrfs filesystem of the sandboxes' writable layers (the runtime's `<data>/layers`).
    let layers = state.cfg.data_dir.join("layers");
    let host = tokio::task::spawn_blocking(move || HostLoad::read(&layers))
        .await
        .unwrap_or_default();
    let (sandbox_cpu_cores, sandbox_memory_bytes) = state.usage.totals();
    let body = StatusView {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: state.started.elapsed().as_secs(),
        sandboxes_running: state.deadlines.len(),
        runtime: "native",
        domain: state.cfg.domain.clone(),
        proxy: true,
        load: LoadView {
            load_avg: host.load_avg,
            cpus: host.cpus,
            memory_total_bytes: host.memory_total_bytes,
            memory_available_bytes: host.memory_available_bytes,
            disk_total_bytes: host.disk_total_bytes,
            disk_free_bytes: host.disk_free_bytes,
            sandbox_cpu_cores,
            sandbox_memory_bytes,
        },
        limits: ServerLimits {
            max_timeout_secs: state.cfg.max_timeout.as_secs(),
            default_timeout_secs: state.cfg.default_timeout.as_secs(),
            max_json_body_bytes: state.cfg.max_json_body,
            max_output_bytes: state.cfg.max_output,
            max_sandboxes_per_key: state.cfg.max_sandboxes_per_key,
            rate_per_sec: state.cfg.rate_per_sec,
            rate_burst: state.cfg.rate_burst,
        },
    };
    Ok(typed_response(StatusCode::OK, &body))
}

/// Prometheus metrics (admin key)
///
/// Prometheus text format. Needs an admin key (scrapers send it as a bearer token).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "system",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not an admin key"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>, _a: Admin) -> ApiResult<Response> {
    let m = &state.metrics;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        );
    };
    counter(
        "paddock_sandboxes_created_total",
        "Sandboxes created.",
        m.sandboxes_created.load(Ordering::Relaxed),
    );
    counter(
        "paddock_sandbox_create_failures_total",
        "Sandbox creations that failed.",
        m.sandbox_create_failures.load(Ordering::Relaxed),
    );
    counter(
        "paddock_sandboxes_expired_total",
        "Sandboxes destroyed at their timeout.",
        m.sandboxes_expired.load(Ordering::Relaxed),
    );
    counter(
        "paddock_sandboxes_killed_total",
        "Sandboxes destroyed on request.",
        m.sandboxes_killed.load(Ordering::Relaxed),
    );
    counter(
        "paddock_execs_total",
        "Commands started in sandboxes.",
        m.execs.load(Ordering::Relaxed),
    );
    let ns = state.runtime.net_slot_stats();
    counter(
        "paddock_net_slot_hits_total",
        "Networked creates that took a prepared network slot.",
        ns.hits,
    );
    counter(
        "paddock_net_slot_misses_total",
        "Networked creates that found no prepared network slot and made their network cold.",
        ns.misses,
    );
    let _ = write!(
        out,
        "# HELP paddock_sandboxes_running Sandboxes running now.\n# TYPE paddock_sandboxes_running gauge\npaddock_sandboxes_running {}\n",
        state.deadlines.len()
    );
    let _ = write!(
        out,
        "# HELP paddock_uptime_seconds Seconds since the server started.\n# TYPE paddock_uptime_seconds gauge\npaddock_uptime_seconds {}\n",
        state.started.elapsed().as_secs()
    );
    let _ = write!(
        out,
        "# HELP paddock_net_slots_ready Prepared network slots ready now.\n# TYPE paddock_net_slots_ready gauge\npaddock_net_slots_ready {}\n# HELP paddock_net_slots_target Prepared network slots the refill keeps (--net-slots).\n# TYPE paddock_net_slots_target gauge\npaddock_net_slots_target {}\n",
        ns.ready, ns.target
    );
    m.http.render(&mut out);
    let _ = writeln!(
        out,
        "# HELP paddock_sandbox_create_seconds Time from a create request to its sandbox running.\n# TYPE paddock_sandbox_create_seconds histogram"
    );
    m.create_latency
        .render(&mut out, "paddock_sandbox_create_seconds", "");
    state.pools.render(&mut out);
    let active = state
        .store
        .list_sandboxes(&paddock_store::SandboxFilter {
            states: vec![SandboxState::Starting, SandboxState::Running],
            ..Default::default()
        })
        .await?;
    let _ = writeln!(
        out,
        "# HELP paddock_sandboxes Sandboxes by state (starting, running).\n# TYPE paddock_sandboxes gauge"
    );
    for st in [SandboxState::Starting, SandboxState::Running] {
        let n = active.iter().filter(|r| r.state == st).count();
        let _ = writeln!(out, "paddock_sandboxes{{state=\"{}\"}} {n}", st.as_str());
    }
    let _ = writeln!(
        out,
        "# HELP paddock_sandbox_memory_bytes Memory in use per sandbox.\n# TYPE paddock_sandbox_memory_bytes gauge"
    );
    let rt = state.runtime.clone();
    let sandboxes = rt.list();
    let lines = tokio::task::spawn_blocking(move || {
        let mut s = String::new();
        for sbx in sandboxes {
            let st = sbx.stats(&rt);
            let _ = writeln!(
                s,
                "paddock_sandbox_memory_bytes{{sandbox=\"{}\"}} {}",
                sbx.id, st.memory_bytes
            );
            let _ = writeln!(
                s,
                "paddock_sandbox_cpu_seconds_total{{sandbox=\"{}\"}} {:.3}",
                sbx.id,
                st.cpu_usage_ns as f64 / 1e9
            );
        }
        s
    })
    .await
    .unwrap_or_default();
    out.push_str(&lines);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// Counts requests by route and status, times them to the response head and counts their
/// body bytes, for `/metrics` (labels: [`paddock_service::metrics`]).
pub async fn count_requests(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let (surface, route) = classify(&state, &req);
    let (bytes_in, bytes_out) = state.metrics.http.byte_counters(surface);
    let req = req.map(|b| counted(b, bytes_in));
    let t0 = std::time::Instant::now();
    let resp = next.run(req).await;
    state
        .metrics
        .http
        .record(&route, resp.status().as_u16(), t0.elapsed());
    resp.map(|b| counted(b, bytes_out))
}

/// The surface and route label of a request (decided like the routing itself).
fn classify(state: &AppState, req: &Request) -> (Surface, String) {
    if let Some(m) = req.extensions().get::<MatchedPath>() {
        return (Surface::Rest, m.as_str().to_owned());
    }
    match crate::e2b::target::target(req.headers(), req.uri(), &state.cfg.domain) {
        Some(t) if t.port == crate::e2b::ENVD_PORT => (
            Surface::Envd,
            paddock_service::metrics::envd_route(req.uri().path()),
        ),
        Some(_) => (Surface::Proxy, "proxy".to_owned()),
        None if req.uri().path().starts_with("/proxy/") => (Surface::Proxy, "proxy".to_owned()),
        None => (Surface::Rest, "unmatched".to_owned()),
    }
}

/// `body`, adding the length of every data frame that passes to `counter`.
fn counted(body: Body, counter: Arc<AtomicU64>) -> Body {
    Body::new(body.map_frame(move |f| {
        if let Some(d) = f.data_ref() {
            counter.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
        f
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Health and status are the `json!` bodies they replaced: unknown host figures null.
    #[test]
    fn health_and_status_serialise_as_before() {
        assert_eq!(
            serde_json::to_value(Health { status: "ok" })
                .unwrap()
                .to_string(),
            r#"{"status":"ok"}"#
        );
        let s = StatusView {
            version: "0.1.0",
            uptime_secs: 3,
            sandboxes_running: 1,
            runtime: "native",
            domain: "localhost".into(),
            proxy: true,
            load: LoadView {
                load_avg: Some([0.5, 0.25, 0.0]),
                cpus: 2,
                memory_total_bytes: None,
                memory_available_bytes: Some(7),
                disk_total_bytes: None,
                disk_free_bytes: None,
                sandbox_cpu_cores: 0.5,
                sandbox_memory_bytes: 8,
            },
            limits: ServerLimits {
                max_timeout_secs: 86400,
                default_timeout_secs: 300,
                max_json_body_bytes: 1 << 20,
                max_output_bytes: 1 << 20,
                max_sandboxes_per_key: 20,
                rate_per_sec: 20.0,
                rate_burst: 40.0,
            },
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"version": "0.1.0", "uptime_secs": 3, "sandboxes_running": 1,
                "runtime": "native", "domain": "localhost", "proxy": true,
                "load": {"load_avg": [0.5, 0.25, 0.0], "cpus": 2, "memory_total_bytes": null,
                    "memory_available_bytes": 7, "disk_total_bytes": null,
                    "disk_free_bytes": null, "sandbox_cpu_cores": 0.5,
                    "sandbox_memory_bytes": 8},
                "limits": {"max_timeout_secs": 86400, "default_timeout_secs": 300,
                    "max_json_body_bytes": 1048576, "max_output_bytes": 1048576,
                    "max_sandboxes_per_key": 20, "rate_per_sec": 20.0, "rate_burst": 40.0}})
        );
    }
}
