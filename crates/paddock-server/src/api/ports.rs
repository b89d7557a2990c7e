//! `/v1/sandboxes/{id}/ports`: the ports listening in a sandbox, their proxy URLs, and which
//! of them are public. The proxy itself is [`crate::proxy`].

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use paddock_store::SandboxRecord;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::e2b::ENVD_PORT;
use crate::error::{ApiError, ApiResult};
use crate::proxy::{self, MAX_PUBLIC_PORTS};
use crate::wire::origin::base;
use crate::wire::typed_response;
use paddock_service::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/sandboxes/{id}/ports", get(list))
        .route("/v1/sandboxes/{id}/ports/{port}", get(get_one))
        .route(
            "/v1/sandboxes/{id}/ports/{port}/public",
            post(make_public).delete(make_private),
        )
}

/// The path of a route about one port, for the OpenAPI document.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct PortPath {
    /// Sandbox id
    #[param(pattern = "^[a-z0-9]{20}$")]
    id: String,
    /// TCP port inside the sandbox (not 49983, the agent's)
    #[param(minimum = 1, maximum = 65535)]
    port: u16,
}

/// One port of a sandbox.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Port)]
pub struct PortView {
    pub port: u16,
    /// Whether a process listens on it now
    pub listening: bool,
    /// Local address it is bound to (0.0.0.0, 127.0.0.1, ::)
    pub address: Option<String>,
    /// Public ports need no access token
    pub public: bool,
    /// Host-routed URL, http://{port}-{id}.{domain}[:server port]/ (needs wildcard DNS for
    /// the domain; *.localhost resolves to loopback in browsers and curl)
    pub url: String,
    /// Path-routed URL, {server}/proxy/{id}/{port}/
    pub path_url: String,
    /// The sandbox's access token (GET of one port only); send it as X-Access-Token or
    /// ?paddock_token=
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub access_token: Option<String>,
}

/// A sandbox's ports.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = PortList)]
pub struct PortList {
    pub ports: Vec<PortView>,
    /// The sandbox's access token for private ports
    pub access_token: String,
}

/// The wire form of one port.
fn port_view(
    state: &AppState,
    headers: &HeaderMap,
    rec: &SandboxRecord,
    port: u16,
    address: Option<std::net::IpAddr>,
) -> PortView {
    let (scheme, authority, host_port) = base(state, headers);
    let domain = state.cfg.domain.trim_matches('.');
    let suffix = host_port.map(|p| format!(":{p}")).unwrap_or_default();
    PortView {
        port,
        listening: address.is_some(),
        address: address.map(|a| a.to_string()),
        public: proxy::is_public(rec, port),
        url: format!("{scheme}://{port}-{}.{domain}{suffix}/", rec.id),
        path_url: format!("{scheme}://{authority}/proxy/{}/{port}/", rec.id),
        access_token: None,
    }
}

/// A port from the path: 1..=65535 and not envd's.
fn parse_port(p: &str) -> ApiResult<u16> {
    match p.parse::<u16>() {
        Ok(ENVD_PORT) => Err(ApiError::BadRequest(format!(
            "port {ENVD_PORT} is the sandbox agent's and is never proxied"
        ))),
        Ok(p) if p > 0 => Ok(p),
        _ => Err(ApiError::BadRequest(format!(
            "{:?} is not a port (1 to 65535)",
            paddock_service::state::truncate(p, 16)
        ))),
    }
}

async fn listening(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<(SandboxRecord, Vec<paddock_runtime::ListeningPort>)> {
    let (rec, sbx) = state.sandbox_for(caller, id).await?;
    let ports = tokio::task::spawn_blocking(move || sbx.listening_ports())
        .await
        .map_err(|e| ApiError::Internal(format!("ports task: {e}")))??;
    Ok((rec, ports))
}

/// List listening ports with their proxy URLs
///
/// The port proxy serves every port but 49983 at `http://{port}-{id}.{domain}` (Host
/// routing) and at `/proxy/{id}/{port}/...` (path routing; the prefix is removed before
/// forwarding), HTTP/1.1, h2c and WebSocket. A private port needs the sandbox's access token
/// in `X-Access-Token` (or `X-Paddock-Token`, `E2b-Traffic-Access-Token`), in the query
/// parameter `paddock_token` (which sets the cookie `paddock_token_{id}_{port}`), or that
/// cookie; path routing also accepts an API key of the sandbox's tenant. Missing token 401,
/// wrong token 403, unknown sandbox 404, nothing listening 502 `port_closed`, no response
/// head in 60 s 504. See docs/proxy.md. Lists every listening TCP port (envd's excluded) and
/// the public ports that do not listen yet.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/ports",
    operation_id = "list_ports",
    tag = "ports",
    params(super::sandbox_view::SandboxIdPath),
    responses(
        (status = 200, description = "Listening ports (and public ports not listening yet)", body = PortList),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (rec, ports) = listening(&state, &caller, &id).await?;
    let mut seen = std::collections::BTreeMap::new();
    for p in ports {
        if p.port != ENVD_PORT {
            // A port bound on both 0.0.0.0 and :: is listed once, with the first address.
            seen.entry(p.port).or_insert(Some(p.address));
        }
    }
    for p in proxy::public_ports(&rec) {
        seen.entry(p).or_insert(None);
    }
    let ports = seen
        .into_iter()
        .map(|(p, a)| port_view(&state, &headers, &rec, p, a))
        .collect();
    let body = PortList {
        ports,
        access_token: crate::e2b::access_token(&state, &rec.id),
    };
    Ok(typed_response(StatusCode::OK, &body))
}

/// One port: URLs, public flag, access token
///
/// Answers for any port, listening or not: its URLs work as soon as something listens.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/ports/{port}",
    operation_id = "get_port",
    tag = "ports",
    params(PortPath),
    responses(
        (status = 200, description = "The port", body = PortView),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn get_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Path((id, port)): Path<(String, String)>,
) -> ApiResult<Response> {
    let port = parse_port(&port)?;
    let (rec, ports) = listening(&state, &caller, &id).await?;
    let address = ports.iter().find(|p| p.port == port).map(|p| p.address);
    let mut v = port_view(&state, &headers, &rec, port, address);
    v.access_token = Some(crate::e2b::access_token(&state, &rec.id));
    Ok(typed_response(StatusCode::OK, &v))
}

/// Adds or removes `port` in the record's `spec.public_ports`.
async fn set_public(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    id: &str,
    port: &str,
    public: bool,
) -> ApiResult<PortView> {
    let port = parse_port(port)?;
    state.sandbox_for(caller, id).await?;
    // Read again right before the write, so the window for a concurrent change of the
    // record is as small as it can be without a store-level compare-and-set.
    let mut rec = state.record_for(caller, id).await?;
    let mut ports = proxy::public_ports(&rec);
    if public && !ports.contains(&port) {
        if ports.len() >= MAX_PUBLIC_PORTS {
            return Err(ApiError::BadRequest(format!(
                "at most {MAX_PUBLIC_PORTS} public ports per sandbox"
            )));
        }
        ports.push(port);
        ports.sort_unstable();
    } else if !public {
        ports.retain(|p| *p != port);
    }
    rec.spec.public_ports = ports;
    state.store.update_sandbox(&rec).await?;
    Ok(port_view(state, headers, &rec, port, None))
}

/// Make a port public (no access token needed)
///
/// Stored with the sandbox (`spec.public_ports`, at most 64). Idempotent.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/ports/{port}/public",
    operation_id = "make_port_public",
    tag = "ports",
    params(PortPath),
    responses(
        (status = 200, description = "The port", body = PortView),
        (status = 400, description = "Bad input, or 64 public ports already"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn make_public(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Path((id, port)): Path<(String, String)>,
) -> ApiResult<Response> {
    let res = set_public(&state, &caller, &headers, &id, &port, true).await;
    let v = state
        .audited(
            &caller,
            "sandbox.port_public",
            Some(&id),
            Some(format!("port={port}")),
            res,
        )
        .await?;
    Ok(with_listening(&state, &id, v).await)
}

/// Make a port private again
///
/// The port needs the access token again. Idempotent.
#[utoipa::path(
    delete,
    path = "/v1/sandboxes/{id}/ports/{port}/public",
    operation_id = "make_port_private",
    tag = "ports",
    params(PortPath),
    responses(
        (status = 200, description = "The port", body = PortView),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such sandbox"),
        (status = 409, description = "The sandbox is not running"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn make_private(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Path((id, port)): Path<(String, String)>,
) -> ApiResult<Response> {
    let res = set_public(&state, &caller, &headers, &id, &port, false).await;
    let v = state
        .audited(
            &caller,
            "sandbox.port_private",
            Some(&id),
            Some(format!("port={port}")),
            res,
        )
        .await?;
    Ok(with_listening(&state, &id, v).await)
}

/// Fills in `listening` and `address` of a port.
async fn with_listening(state: &AppState, id: &str, mut v: PortView) -> Response {
    if let Ok(sbx) = state.runtime.get(id)
        && let Ok(Ok(ports)) = tokio::task::spawn_blocking(move || sbx.listening_ports()).await
        && let Some(p) = ports.iter().find(|p| p.port == v.port)
    {
        v.listening = true;
        v.address = Some(p.address.to_string());
    }
    typed_response(StatusCode::OK, &v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire form is the one the `json!` body had: `address` null when nothing listens,
    /// `access_token` absent unless set.
    #[test]
    fn a_port_serialises_as_before() {
        let mut v = PortView {
            port: 8000,
            listening: false,
            address: None,
            public: true,
            url: "http://8000-x.localhost/".into(),
            path_url: "http://h/proxy/x/8000/".into(),
            access_token: None,
        };
        assert_eq!(
            serde_json::to_string(&serde_json::to_value(&v).unwrap()).unwrap(),
            r#"{"address":null,"listening":false,"path_url":"http://h/proxy/x/8000/","port":8000,"public":true,"url":"http://8000-x.localhost/"}"#
        );
        v.access_token = Some("t".into());
        assert_eq!(serde_json::to_value(&v).unwrap()["access_token"], "t");
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("8000").ok(), Some(8000));
        for bad in ["0", "49983", "65536", "x", "-1"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }
}
