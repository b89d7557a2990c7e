//! `/v1/sandboxes/{id}/ports`: the ports listening in a sandbox, their proxy URLs, and which
//! of them are public. The proxy itself is [`crate::proxy`].

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use paddock_store::SandboxRecord;

use crate::auth::Caller;
use crate::e2b::ENVD_PORT;
use crate::error::{ApiError, ApiResult};
use crate::proxy::{self, MAX_PUBLIC_PORTS};
use crate::state::AppState;
use crate::wire::json_response;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/sandboxes/{id}/ports", get(list))
        .route("/v1/sandboxes/{id}/ports/{port}", get(get_one))
        .route(
            "/v1/sandboxes/{id}/ports/{port}/public",
            post(make_public).delete(make_private),
        )
}

/// Where clients reach this server: the scheme, the authority for path URLs, and the port to
/// append to host URLs (None for the scheme's default). The configured public URL wins
/// unless it names no usable address (port 0 or an unspecified address, as with
/// `--listen 0.0.0.0:7070`); then the Host the client used is the best guess.
fn base(state: &AppState, headers: &HeaderMap) -> (String, String, Option<u16>) {
    let public = state.cfg.public_url.trim_end_matches('/');
    let (scheme, authority) = public.split_once("://").unwrap_or(("http", public));
    let authority = authority.split('/').next().unwrap_or(authority);
    let (host, port) = split_authority(authority);
    let unusable = port == Some(0)
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
    let authority = match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(h) if unusable && !h.is_empty() && h.bytes().all(authority_byte) => h.to_owned(),
        _ => authority.to_owned(),
    };
    let (_, port) = split_authority(&authority);
    let default = if scheme == "https" { 443 } else { 80 };
    (scheme.to_owned(), authority, port.filter(|p| *p != default))
}

/// The port to append to `{port}-{id}.{domain}` URLs (None: the scheme's default).
pub(crate) fn url_port(state: &AppState, headers: &HeaderMap) -> Option<u16> {
    base(state, headers).2
}

fn authority_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
}

/// `host[:port]`, `[v6][:port]`.
fn split_authority(a: &str) -> (&str, Option<u16>) {
    match a.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse().ok()),
        _ => (a, None),
    }
}

/// The wire form of one port.
fn port_json(
    state: &AppState,
    headers: &HeaderMap,
    rec: &SandboxRecord,
    port: u16,
    address: Option<std::net::IpAddr>,
) -> serde_json::Value {
    let (scheme, authority, host_port) = base(state, headers);
    let domain = state.cfg.domain.trim_matches('.');
    let suffix = host_port.map(|p| format!(":{p}")).unwrap_or_default();
    serde_json::json!({
        "port": port,
        "listening": address.is_some(),
        "address": address.map(|a| a.to_string()),
        "public": proxy::is_public(rec, port),
        "url": format!("{scheme}://{port}-{}.{domain}{suffix}/", rec.id),
        "path_url": format!("{scheme}://{authority}/proxy/{}/{port}/", rec.id),
    })
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
            crate::state::truncate(p, 16)
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

/// `GET /v1/sandboxes/{id}/ports`: every listening TCP port (envd's excluded), and the
/// public ports that do not listen yet.
async fn list(
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
    let items: Vec<_> = seen
        .into_iter()
        .map(|(p, a)| port_json(&state, &headers, &rec, p, a))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        serde_json::json!({
            "ports": items,
            "access_token": crate::e2b::access_token(&state, &rec.id),
        }),
    ))
}

/// `GET /v1/sandboxes/{id}/ports/{port}`: one port, listening or not (its URLs work as soon
/// as something listens).
async fn get_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Path((id, port)): Path<(String, String)>,
) -> ApiResult<Response> {
    let port = parse_port(&port)?;
    let (rec, ports) = listening(&state, &caller, &id).await?;
    let address = ports.iter().find(|p| p.port == port).map(|p| p.address);
    let mut v = port_json(&state, &headers, &rec, port, address);
    v["access_token"] = crate::e2b::access_token(&state, &rec.id).into();
    Ok(json_response(StatusCode::OK, v))
}

/// Adds or removes `port` in the record's `spec.public_ports`.
async fn set_public(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    id: &str,
    port: &str,
    public: bool,
) -> ApiResult<serde_json::Value> {
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
    Ok(port_json(state, headers, &rec, port, None))
}

/// `POST /v1/sandboxes/{id}/ports/{port}/public`: anyone with the URL may reach the port.
async fn make_public(
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

/// `DELETE /v1/sandboxes/{id}/ports/{port}/public`: the port needs the access token again.
async fn make_private(
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

/// Fills in `listening` and `address` of a port's JSON.
async fn with_listening(state: &AppState, id: &str, mut v: serde_json::Value) -> Response {
    if let Ok(sbx) = state.runtime.get(id)
        && let Ok(Ok(ports)) = tokio::task::spawn_blocking(move || sbx.listening_ports()).await
        && let Some(p) = ports
            .iter()
            .find(|p| Some(u64::from(p.port)) == v["port"].as_u64())
    {
        v["listening"] = true.into();
        v["address"] = p.address.to_string().into();
    }
    json_response(StatusCode::OK, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(split_authority("a.b:70"), ("a.b", Some(70)));
        assert_eq!(split_authority("a.b"), ("a.b", None));
        assert_eq!(split_authority("[::1]:8"), ("[::1]", Some(8)));
        assert_eq!(split_authority("[::1]"), ("[::1]", None));
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("8000").ok(), Some(8000));
        for bad in ["0", "49983", "65536", "x", "-1"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }
}
