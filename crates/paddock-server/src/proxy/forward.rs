//! One proxied request, by concept: [`admit`] (the sandbox, the caller's access and rate, a
//! paused sandbox resumed), [`upstream_request`] (the head rebuilt for the sandbox's port),
//! [`exchange`] (connect inside the sandbox, handshake, send), [`client_head`] (the answer's
//! head for the client), then the body: a WebSocket bridge, a spliced body, or the copied one.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::response::Builder;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use paddock_runtime::Sandbox;
use paddock_store::{SandboxRecord, SandboxState};

use super::{
    Access, BODY_IDLE_TIMEOUT, CONNECT_TIMEOUT, CONNECTS, RESPONSE_TIMEOUT, authorize,
    connection_listed, cookie_name, fail, foreign_cookies, hop_or_ours, https, is_public,
    split_token, upstream, wants_websocket,
};
use crate::error::ApiError;
use paddock_service::state::AppState;

/// Forwards `req` to `port` of sandbox `id`; `prefix` is the path routing prefix
/// (`/proxy/{id}/{port}`), taken off the path before it goes upstream.
pub(super) async fn forward(
    state: &Arc<AppState>,
    id: &str,
    port: u16,
    prefix: Option<String>,
    mut req: Request,
) -> Response {
    let (query, query_token) = split_token(req.uri().query());
    let (rec, sbx) = match admit(
        state,
        id,
        port,
        &prefix,
        req.headers(),
        query_token.as_deref(),
    )
    .await
    {
        Ok(x) => x,
        Err(r) => return r,
    };
    let websocket = wants_websocket(&req);
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let slot = splice_slot(&req, websocket);
    let up_req = match upstream_request(state, req, prefix.as_deref(), query.as_deref(), websocket)
    {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let (mut resp, takeover) = match exchange(&sbx, id, port, slot.is_some(), up_req).await {
        Ok(x) => x,
        Err(r) => return r,
    };

    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching && !websocket {
        return fail(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("port {port} of sandbox {id} switched protocols without being asked"),
        );
    }
    let upstream_upgrade = switching.then(|| hyper::upgrade::on(&mut resp));
    let (rparts, rbody) = resp.into_parts();
    let token_cookie = query_token.as_deref().filter(|_| !switching);
    let out = client_head(state, &rec, port, prefix.as_deref(), token_cookie, &rparts);
    if let (Some(client), Some(upstream)) = (client_upgrade, upstream_upgrade) {
        return bridge_websocket(out, client, upstream, id, port);
    }
    if let Some(slot) = slot {
        match spliced_body(&slot, &takeover, rparts.status, &rparts.headers) {
            Some(body) => return out.body(body).unwrap_or_default(),
            None => takeover.release(),
        }
    }
    out.body(Body::new(tower_http::timeout::TimeoutBody::new(
        BODY_IDLE_TIMEOUT,
        rbody,
    )))
    .unwrap_or_default()
}

/// The sandbox a request may reach: its record exists, the caller has access and rate for
/// this port, and it is running (a paused one that resumes on traffic is resumed first),
/// on this host. Otherwise the answer to send.
async fn admit(
    state: &Arc<AppState>,
    id: &str,
    port: u16,
    prefix: &Option<String>,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<(SandboxRecord, Arc<Sandbox>), Response> {
    let rec = match state.store.get_sandbox(id).await {
        Ok(Some(r)) => r,
        Ok(None) => return Err(ApiError::sandbox_not_found(id).into_response()),
        Err(e) => return Err(ApiError::from(e).into_response()),
    };
    let bucket = match authorize(state, &rec, port, prefix.is_some(), headers, query_token).await {
        Access::Granted(b) => b,
        Access::Denied(r) => return Err(r),
    };
    if let Err(e) = crate::auth::data_bucket(state, &bucket) {
        return Err(e.into_response());
    }
    if rec.state == SandboxState::Paused {
        if !paddock_service::pausing::auto_resume(&rec) {
            return Err(crate::error::paused_error(id).into_response());
        }
        if let Err(e) = paddock_service::pausing::resume(state, id, false, None).await {
            return Err(ApiError::from(e).into_response());
        }
    } else if rec.state != SandboxState::Running {
        return Err(ApiError::Conflict(format!("sandbox {id} is {}", rec.state)).into_response());
    }
    match state.runtime.get(id) {
        Ok(sbx) => Ok((rec, sbx)),
        Err(_) => Err(
            ApiError::Conflict(format!("sandbox {id} is not running on this host")).into_response(),
        ),
    }
}

/// The connection's splice slot when the response body may be spliced from the sandbox's
/// socket into the client's (`upstream`, `crate::splice`): a body-less GET, not a WebSocket,
/// from a connection that can splice.
fn splice_slot(req: &Request, websocket: bool) -> Option<crate::splice::SpliceSlot> {
    req.extensions()
        .get::<crate::splice::SpliceSlot>()
        .cloned()
        .filter(|_| {
            !websocket
                && req.method() == Method::GET
                && !req.headers().contains_key(header::TRANSFER_ENCODING)
                && req
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .is_none_or(|v| v.as_bytes() == b"0")
        })
}

/// The request as it goes upstream: HTTP/1.1, the path without the routing prefix and the
/// query without the token, hop-by-hop headers and Paddock's credentials (token cookies,
/// API keys) dropped, `X-Forwarded-*` set by us, and the upgrade headers of a WebSocket.
fn upstream_request(
    state: &AppState,
    req: Request,
    prefix: Option<&str>,
    query: Option<&str>,
    websocket: bool,
) -> Result<http::Request<Body>, ApiError> {
    let path = req.uri().path();
    let path = match prefix {
        Some(p) => path.strip_prefix(p).unwrap_or("/"),
        None => path,
    };
    let target = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let orig_host = req.headers().get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let listed = connection_listed(req.headers());
    let (parts, body) = req.into_parts();
    let mut up = http::Request::builder()
        .method(parts.method.clone())
        .uri(target)
        .version(Version::HTTP_11);
    let headers = up.headers_mut().expect("a fresh builder has headers");
    for (k, v) in &parts.headers {
        if hop_or_ours(k) || listed.iter().any(|l| l == k.as_str()) || k == header::COOKIE {
            continue;
        }
        if k == header::AUTHORIZATION
            && v.to_str().is_ok_and(|s| {
                s.split_once(' ')
                    .is_some_and(|(_, t)| crate::auth::looks_like_key(t.trim()))
            })
        {
            continue;
        }
        headers.append(k, v.clone());
    }
    if let Some(c) = foreign_cookies(&parts.headers) {
        headers.insert(header::COOKIE, c);
    }
    if let Some(h) = &orig_host {
        headers.insert(header::HOST, h.clone());
        headers.insert("x-forwarded-host", h.clone());
    }
    if let Some(ip) = peer
        && let Ok(v) = HeaderValue::from_str(&ip.to_string())
    {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if https(state) { "https" } else { "http" }),
    );
    if let Some(p) = prefix
        && let Ok(v) = HeaderValue::from_str(p)
    {
        headers.insert("x-forwarded-prefix", v);
    }
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    up.body(body)
        .map_err(|_| ApiError::BadRequest("invalid request target".into()))
}

/// The answer when nothing takes the connection on `port`: 502 `port_closed`, or for the
/// code interpreter's port 409 `no_interpreter` naming the template that has it (the code
/// interpreter SDKs call port 49999 of any sandbox they are given, show a 409 with its
/// message, and take a 502 for a timeout).
fn port_closed(id: &str, port: u16, why: &str) -> Response {
    if port == crate::code::INTERPRETER_PORT {
        return fail(
            StatusCode::CONFLICT,
            "no_interpreter",
            format!(
                "sandbox {id} has no code interpreter (port {port} is not open: {why}); \
                 create it from template {}",
                crate::code::TEMPLATE
            ),
        );
    }
    fail(
        StatusCode::BAD_GATEWAY,
        "port_closed",
        format!("port {port} is not open in sandbox {id} ({why})"),
    )
}

/// Connects to `port` inside the sandbox (bounded by [`CONNECT_TIMEOUT`] and
/// [`super::MAX_CONCURRENT_CONNECTS`]), makes an HTTP/1.1 connection on it and sends the
/// request; the response head within [`RESPONSE_TIMEOUT`]. `park` parks the upstream socket
/// after the response head so its body can be spliced ([`upstream::UpstreamIo`]).
async fn exchange(
    sbx: &Sandbox,
    id: &str,
    port: u16,
    park: bool,
    up_req: http::Request<Body>,
) -> Result<(http::Response<Incoming>, upstream::Takeover), Response> {
    let connect = async {
        let _slot = CONNECTS.acquire().await;
        sbx.connect_port(port, CONNECT_TIMEOUT).await
    };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(paddock_runtime::RuntimeError::PortClosed { reason: why, .. })) => {
            return Err(port_closed(id, port, &why));
        }
        Ok(Err(e)) => {
            tracing::warn!(sandbox = %id, port, "proxy connect: {e}");
            return Err(port_closed(id, port, "no connection"));
        }
        Err(_) => return Err(port_closed(id, port, "connect timed out")),
    };
    let _ = stream.set_nodelay(true);
    let (stream, takeover) = upstream::UpstreamIo::new(stream, park);
    let (mut sender, conn) = match hyper::client::conn::http1::Builder::new()
        .handshake::<_, Body>(TokioIo::new(stream))
        .await
    {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(sandbox = %id, port, "proxy handshake: {e}");
            return Err(port_closed(id, port, "no connection"));
        }
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("proxy upstream connection: {e}");
        }
    });
    match tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(up_req)).await {
        Ok(Ok(r)) => Ok((r, takeover)),
        Ok(Err(e)) => {
            tracing::debug!(sandbox = %id, port, "proxy upstream: {e}");
            Err(fail(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!(
                    "port {port} of sandbox {id} closed the connection or sent an invalid response"
                ),
            ))
        }
        Err(_) => Err(fail(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!(
                "port {port} of sandbox {id} sent no response within {} s",
                RESPONSE_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// The answer's head for the client: the upstream status and headers without hop-by-hop
/// ones and without any `Set-Cookie` that would plant or clear a Paddock cookie (token
/// cookies, the console's session); and, when a token came in the query (`token_cookie`),
/// the token cookie that lets a browser follow links (not for a public port).
fn client_head(
    state: &AppState,
    rec: &SandboxRecord,
    port: u16,
    prefix: Option<&str>,
    token_cookie: Option<&str>,
    rparts: &http::response::Parts,
) -> Builder {
    let listed = connection_listed(&rparts.headers);
    let mut out = Response::builder().status(rparts.status);
    let oh = out.headers_mut().expect("a fresh builder has headers");
    for (k, v) in &rparts.headers {
        if hop_or_ours(k) || listed.iter().any(|l| l == k.as_str()) {
            continue;
        }
        // A sandbox must not plant or clear token cookies, its own or another's, nor the
        // console's session cookie.
        if k == header::SET_COOKIE && {
            let c = v.as_bytes().trim_ascii_start();
            c.starts_with(b"paddock_token_")
                || c.starts_with(crate::session::COOKIE_PREFIX.as_bytes())
        } {
            continue;
        }
        oh.append(k, v.clone());
    }
    if let Some(t) = token_cookie {
        // The query token was checked by `admit`; keep it in a cookie for the links that follow.
        let path = match prefix {
            Some(p) => format!("{p}/"),
            None => "/".into(),
        };
        let secure = if https(state) { "; Secure" } else { "" };
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{}={t}; HttpOnly; SameSite=Lax; Path={path}{secure}",
            cookie_name(&rec.id, port)
        )) && !is_public(rec, port)
        {
            oh.append(header::SET_COOKIE, v);
        }
    }
    out
}

/// Answers a WebSocket upgrade and copies the two upgraded connections into each other
/// once both sides have switched.
fn bridge_websocket(
    mut out: Builder,
    client: OnUpgrade,
    upstream: OnUpgrade,
    id: &str,
    port: u16,
) -> Response {
    if let Some(oh) = out.headers_mut() {
        oh.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        oh.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    let id = id.to_owned();
    tokio::spawn(async move {
        let (c, u) = tokio::join!(client, upstream);
        match (c, u) {
            (Ok(c), Ok(u)) => {
                let mut c = TokioIo::new(c);
                let mut u = TokioIo::new(u);
                let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
            }
            (c, u) => tracing::debug!(
                sandbox = %id,
                port,
                "websocket upgrade failed: client {:?}, upstream {:?}",
                c.err(),
                u.err()
            ),
        }
    });
    out.body(Body::empty()).unwrap_or_default()
}

/// The response body spliced from the sandbox's socket, when the response has a body of
/// known length (`Content-Length`, not chunked, not 1xx/204/304) and the socket was parked
/// after its head.
fn spliced_body(
    slot: &crate::splice::SpliceSlot,
    takeover: &upstream::Takeover,
    status: StatusCode,
    headers: &HeaderMap,
) -> Option<Body> {
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || headers.contains_key(header::TRANSFER_ENCODING)
    {
        return None;
    }
    let len: u64 = headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let (tcp, mut pre) = takeover.take()?;
    pre.truncate(usize::try_from(len).unwrap_or(usize::MAX));
    let rest = len - pre.len() as u64;
    let body = crate::splice::SpliceBody::new(
        slot.clone(),
        crate::splice::Source::Tcp(tcp),
        pre,
        rest,
        BODY_IDLE_TIMEOUT,
    )
    .ok()?;
    Some(Body::new(body))
}
