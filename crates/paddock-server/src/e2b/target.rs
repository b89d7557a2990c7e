//! Which sandbox and port a request addresses on the data plane: the `E2b-Sandbox-Id` and
//! `E2b-Sandbox-Port` headers, or a Host of `{port}-{id}.{domain}`. A leaf that the E2B data
//! plane ([`super::envd`]), the port proxy, request tracing, the fleet's control plane and
//! the router's timeouts all read, so none of them imports another for it.

use axum::http::{HeaderMap, header};

use super::ENVD_PORT;

/// Where a data-plane request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    pub port: u16,
}

/// The sandbox and port a request names, if it is a data-plane request.
pub fn target(headers: &HeaderMap, uri: &axum::http::Uri, domain: &str) -> Option<Target> {
    if let Some(id) = headers.get("e2b-sandbox-id") {
        let port = headers
            .get("e2b-sandbox-port")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(ENVD_PORT);
        return Some(Target {
            id: id.to_str().unwrap_or("").to_owned(),
            port,
        });
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.host())?;
    host_target(host, domain)
}

/// Parses `{port}-{id}.{domain}[:port]`.
pub fn host_target(host: &str, domain: &str) -> Option<Target> {
    let host = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let (label, rest) = host.split_once('.')?;
    if !rest.eq_ignore_ascii_case(domain) {
        return None;
    }
    let (port, id) = label.split_once('-')?;
    let port = port.parse().ok()?;
    id.parse::<paddock_core::SandboxId>().ok()?;
    Some(Target {
        id: id.to_owned(),
        port,
    })
}
