//! The port proxy: HTTP and WebSocket to any TCP port a process listens on inside a
//! sandbox, at `http://{port}-{id}.{domain}` (host routing) and `/proxy/{id}/{port}/...`
//! (path routing). User-facing notes: `docs/proxy.md`.
//!
//! [`route`] runs in front of everything else (the E2B data plane and the REST router):
//! - It refuses what a proxy must never accept, for every request the server gets: `CONNECT`,
//!   an absolute-form request target on HTTP/1 (`GET http://127.0.0.1:7070/v1/keys`), a
//!   duplicate `Host`, and a connection on which a request carried both `Content-Length` and
//!   `Transfer-Encoding` ([`framing`]); 400 and the connection closed.
//! - A request naming a sandbox by Host (or `E2b-Sandbox-Id`/`E2b-Sandbox-Port`) goes on to
//!   [`crate::e2b::envd::route`], which sends envd's port 49983 to the agent and every other
//!   port to [`host`]. A path under `/proxy/` is served by path routing here. Neither ever
//!   reaches a REST route.
//!
//! **Access.** A port is private unless the sandbox marked it public
//! (`POST /v1/sandboxes/{id}/ports/{port}/public`, stored as `spec.public_ports`). A private
//! port needs the sandbox's access token ([`crate::e2b::access_token`]) in `X-Access-Token`,
//! `X-Paddock-Token` or `E2b-Traffic-Access-Token`, in the query parameter `paddock_token`
//! (removed before forwarding; the answer sets the cookie `paddock_token_{id}_{port}` so a
//! browser can follow links), or in that cookie (consulted only when no token is given
//! explicitly); path routing also takes an API key of the sandbox's tenant. A token that is
//! presented and wrong is 403 even when another credential would do, so a mistake is never
//! silently ignored.
//!
//! **Forwarding.** The connection is made inside the sandbox's network namespace to
//! `127.0.0.1:{port}` ([`paddock_runtime::Sandbox::connect_port`]), so nothing but the
//! sandbox's own loopback is ever reached and it works in every network mode. Requests go
//! upstream as HTTP/1.1 whatever the client spoke; hop-by-hop headers are dropped both ways,
//! `X-Forwarded-For/-Proto/-Host` (and `-Prefix` for path routing) replace whatever the
//! client sent, and Paddock's own credentials (tokens, token cookies, API keys) never reach the
//! sandbox. A WebSocket upgrade is forwarded and the two upgraded connections are copied into
//! each other.
//!
//! **Rate.** A granted request takes a token of the data-plane rate (`--data-rate`,
//! `--data-rate-burst`, shared with the E2B data plane, apart from the REST rate): of the key
//! presented (path routing) or of the key that created the sandbox (access token), and of the
//! sandbox itself for a public port reached without credentials. Beyond it: 429
//! `rate_limited` with `Retry-After`.
//!
//! **Timeouts.** Connect [`CONNECT_TIMEOUT`], response head [`RESPONSE_TIMEOUT`], response
//! body idle [`BODY_IDLE_TIMEOUT`]; the request head and body are bounded by the server's
//! `--header-timeout` and `--body-idle-timeout`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use paddock_store::SandboxRecord;

use crate::auth::DataBucket;
use crate::e2b::{ENVD_PORT, access_token, ct_eq};

mod forward;
pub mod framing;
pub mod upstream;
use crate::error::ApiError;
use paddock_service::state::AppState;

/// Longest wait for the TCP connection to the sandbox's port.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait, after the request was sent, for the response head.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest pause between two chunks of a response body (server-sent events and long polls
/// need more than the request side's 30 s).
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Most upstream connects in flight at once, server-wide: each one enters the sandbox's
/// network namespace on a short-lived thread, so a flood of requests must not become a flood
/// of threads. Waiting for a slot counts against [`CONNECT_TIMEOUT`].
pub const MAX_CONCURRENT_CONNECTS: usize = 256;
static CONNECTS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(MAX_CONCURRENT_CONNECTS);
/// Most ports one sandbox may mark public.
pub const MAX_PUBLIC_PORTS: usize = 64;
/// The query parameter that carries an access token.
pub const TOKEN_PARAM: &str = "paddock_token";

/// Headers that carry an access token.
const TOKEN_HEADERS: [&str; 3] = [
    "x-access-token",
    "x-paddock-token",
    "e2b-traffic-access-token",
];

/// The name of the cookie that carries the token of `port` of sandbox `id`.
pub fn cookie_name(id: &str, port: u16) -> String {
    format!("paddock_token_{id}_{port}")
}

/// An error in the API's `{"code", "message"}` shape with a code [`ApiError`] has no
/// variant for.
fn fail(status: StatusCode, code: &'static str, message: String) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "code": code, "message": message })),
    )
        .into_response()
}

/// 400, and on HTTP/1 the connection is closed after it.
fn refuse(version: Version, message: &str) -> Response {
    let mut r = ApiError::BadRequest(message.to_owned()).into_response();
    if version < Version::HTTP_2 {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Middleware in front of everything: refuses proxy abuse, serves path routing.
pub async fn route(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let v = req.version();
    if req
        .extensions()
        .get::<framing::Flag>()
        .is_some_and(framing::Flag::raised)
    {
        return refuse(
            v,
            "a request with both Content-Length and Transfer-Encoding is not accepted",
        );
    }
    if req.method() == Method::CONNECT {
        return refuse(v, "CONNECT is not supported");
    }
    if v < Version::HTTP_2 && (req.uri().scheme().is_some() || req.uri().authority().is_some()) {
        return refuse(
            v,
            "absolute-form request targets are not accepted; send the path only",
        );
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return refuse(v, "more than one Host header");
    }
    if let (Some(h), Some(a)) = (first, req.uri().authority())
        && !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes())
    {
        return refuse(v, "the Host header and the request's authority differ");
    }
    if crate::e2b::target::target(req.headers(), req.uri(), &state.cfg.domain).is_some() {
        return next.run(req).await;
    }
    let path = req.uri().path();
    if path == "/proxy" || path.starts_with("/proxy/") {
        return by_path(&state, req).await;
    }
    next.run(req).await
}

/// Host routing (`{port}-{id}.{domain}`, or `E2b-Sandbox-Id` with a port other than envd's),
/// called by [`crate::e2b::envd::route`].
pub async fn host(state: &Arc<AppState>, id: &str, port: u16, req: Request) -> Response {
    if port == 0 {
        return ApiError::BadRequest("port 0 is not a port".into()).into_response();
    }
    forward::forward(state, id, port, None, req).await
}

/// `/proxy/{id}/{port}/{rest}`.
async fn by_path(state: &Arc<AppState>, req: Request) -> Response {
    const USAGE: &str = "expected /proxy/{sandbox id}/{port}/{path}";
    let path = req.uri().path().to_owned();
    let rest = path.strip_prefix("/proxy").unwrap_or("");
    let mut parts = rest.splitn(4, '/').skip(1);
    let (Some(id), Some(port)) = (parts.next(), parts.next()) else {
        return ApiError::NotFound(USAGE.into()).into_response();
    };
    let Ok(port) = port.parse::<u16>() else {
        return ApiError::BadRequest(format!(
            "{:?} is not a port; {USAGE}",
            paddock_service::state::truncate(port, 16)
        ))
        .into_response();
    };
    if port == 0 {
        return ApiError::BadRequest("port 0 is not a port".into()).into_response();
    }
    if id.parse::<paddock_core::SandboxId>().is_err() {
        return ApiError::sandbox_not_found(id).into_response();
    }
    let prefix = format!("/proxy/{id}/{port}");
    if path == prefix {
        // Relative links only work below a directory: /proxy/ID/PORT -> /proxy/ID/PORT/.
        let q = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        return Response::builder()
            .status(StatusCode::PERMANENT_REDIRECT)
            .header(header::LOCATION, format!("{prefix}/{q}"))
            .body(Body::empty())
            .unwrap_or_default();
    }
    if port == ENVD_PORT {
        return fail(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "port {ENVD_PORT} is the sandbox agent's and is not proxied; use the API or the E2B data plane"
            ),
        );
    }
    // A path-routed page is served on the console's own origin: with a console session in
    // the browser, the sandbox's scripts could use it. Such a browser gets the host URL.
    if crate::session::cookie(req.headers()).is_some() {
        return fail(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this browser is logged in to the Paddock console on this origin, which a path-routed page would share; open http(s)://{port}-{id}.{}/ instead, or log out of the console",
                state.cfg.domain
            ),
        );
    }
    let id = id.to_owned();
    forward::forward(state, &id, port, Some(prefix), req).await
}

/// Who is asking, as far as the proxy is concerned: granted, and charged to a data-plane
/// bucket, or refused with this answer.
enum Access {
    Granted(DataBucket),
    Denied(Response),
}

/// Decides whether `req` may reach `port` of sandbox `rec`. `query_token` is the token found
/// in the query string, if any.
async fn authorize(
    state: &AppState,
    rec: &SandboxRecord,
    port: u16,
    path_routed: bool,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Access {
    let id = rec.id.as_str();
    if is_public(rec, port) {
        // Anyone may send these: the sandbox's own bucket, not its owner's.
        return Access::Granted(DataBucket::Sandbox(id.to_owned()));
    }
    let token = access_token(state, id);
    let cookie = cookie_name(id, port);
    let mut presented = Vec::new();
    for h in TOKEN_HEADERS {
        presented.extend(headers.get_all(h).iter().map(|v| v.as_bytes()));
    }
    if let Some(q) = query_token {
        presented.push(q.as_bytes());
    }
    // A cookie counts only when no token is given explicitly, so a stale cookie never
    // blocks a fresh token.
    let cookies: Vec<String> = cookie_values(headers, &cookie);
    if presented.is_empty() {
        presented.extend(cookies.iter().map(|c| c.as_bytes()));
    }
    if !presented.is_empty() {
        // Every token presented must be right: a wrong one is never silently outvoted.
        if presented.iter().all(|p| ct_eq(p, token.as_bytes())) {
            return Access::Granted(DataBucket::Key(rec.key_id.clone()));
        }
        return Access::Denied(fail(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the access token is not valid for sandbox {id}"),
        ));
    }
    if path_routed && let Some(key) = api_key(headers) {
        return match crate::auth::authenticate_unmetered(state, Some(key)).await {
            // A viewer may read a sandbox's records, not talk to its ports.
            Ok(c) if c.sees(rec) && c.key.role >= paddock_store::Role::Developer => {
                Access::Granted(DataBucket::Key(c.key.id))
            }
            Ok(c) if c.sees(rec) => Access::Denied(
                ApiError::Forbidden("reaching a port needs the developer role or higher".into())
                    .into_response(),
            ),
            Ok(_) => Access::Denied(ApiError::sandbox_not_found(id).into_response()),
            Err(e) => Access::Denied(e.into_response()),
        };
    }
    Access::Denied(fail(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!(
            "port {port} of sandbox {id} is private: send the sandbox's access token in \
             X-Access-Token or ?{TOKEN_PARAM}=, or make the port public"
        ),
    ))
}

/// Whether the sandbox marked `port` public, or all its ports are (sandboxes created through
/// the E2B API, unless they asked for `allowPublicTraffic: false`).
pub fn is_public(rec: &SandboxRecord, port: u16) -> bool {
    all_public(rec) || public_ports(rec).contains(&port)
}

/// Whether every port of the sandbox is public.
pub fn all_public(rec: &SandboxRecord) -> bool {
    rec.spec.ports_public
}

/// The ports a sandbox marked public, sorted.
pub fn public_ports(rec: &SandboxRecord) -> Vec<u16> {
    let mut v = rec.spec.public_ports.clone();
    v.sort_unstable();
    v.dedup();
    v
}

/// A Paddock API key in `X-API-Key` or `Authorization: Bearer`.
fn api_key(h: &HeaderMap) -> Option<&str> {
    if let Some(v) = h.get("x-api-key") {
        return v.to_str().ok();
    }
    let auth = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = auth.split_once(' ')?;
    let key = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && crate::auth::looks_like_key(key)).then_some(key)
}

/// Values of cookie `name` in every `Cookie` header.
fn cookie_values(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"').to_owned())
        })
        .collect()
}

/// The query without `paddock_token`, and the token if there was one (percent-decoded).
fn split_token(query: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(q) = query else {
        return (None, None);
    };
    let mut token = None;
    let kept: Vec<&str> = q
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            if key == TOKEN_PARAM {
                if let Some((_, v)) = form_urlencoded::parse(pair.as_bytes()).next() {
                    token = Some(v.into_owned());
                }
                false
            } else {
                true
            }
        })
        .collect();
    let rest = (!kept.is_empty()).then(|| kept.join("&"));
    (rest, token)
}

/// Whether a header never crosses the proxy, in either direction: hop-by-hop ones (RFC 9110
/// section 7.6.1) and Paddock's own routing and credential headers.
pub(crate) fn hop_or_ours(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "expect"
            | "x-access-token"
            | "x-paddock-token"
            | "e2b-traffic-access-token"
            | "e2b-sandbox-id"
            | "e2b-sandbox-port"
            | "x-api-key"
            | "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-forwarded-prefix"
            | "x-forwarded-port"
            | "x-real-ip"
    )
}

/// Header names listed in `Connection` (hop-by-hop by declaration).
pub(crate) fn connection_listed(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether the request asks for a WebSocket upgrade (HTTP/1.1 GET with `Upgrade: websocket`
/// and `Connection: upgrade`).
fn wants_websocket(req: &Request) -> bool {
    req.version() == Version::HTTP_11
        && req.method() == Method::GET
        && req
            .headers()
            .get_all(header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
            })
        && connection_listed(req.headers())
            .iter()
            .any(|c| c == "upgrade")
}

/// The `Cookie` header without Paddock's token cookies, or None if nothing is left.
fn foreign_cookies(h: &HeaderMap) -> Option<HeaderValue> {
    let kept: Vec<&str> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| {
            !c.is_empty()
                && !c.starts_with("paddock_token_")
                && !c.starts_with(crate::session::COOKIE_PREFIX)
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
}

/// Whether the scheme clients use is https (from the configured public URL).
fn https(state: &AppState) -> bool {
    state.cfg.public_url.starts_with("https://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_taken_out_of_the_query() {
        assert_eq!(split_token(None), (None, None));
        assert_eq!(
            split_token(Some("a=1&paddock_token=abc&b=2")),
            (Some("a=1&b=2".into()), Some("abc".into()))
        );
        assert_eq!(
            split_token(Some("paddock_token=a%20b")),
            (None, Some("a b".into()))
        );
        assert_eq!(
            split_token(Some("x=paddock_token&y")),
            (Some("x=paddock_token&y".into()), None)
        );
    }

    #[test]
    fn token_cookies_never_go_upstream() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; paddock_token_x_1=t; b=2"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("paddock_token_y_2=u"),
        );
        assert_eq!(foreign_cookies(&h).unwrap(), "a=1; b=2");
        assert_eq!(cookie_values(&h, "paddock_token_y_2"), vec!["u".to_owned()]);
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("paddock_token_x_1=t"),
        );
        assert!(foreign_cookies(&h).is_none());
        // Nor the console's session.
        let mut s = HeaderMap::new();
        s.append(
            header::COOKIE,
            HeaderValue::from_static("paddock_session=abc; c=3"),
        );
        assert_eq!(foreign_cookies(&s).unwrap(), "c=3");
    }

    #[test]
    fn only_paddock_keys_count_as_api_keys() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer app"),
        );
        assert_eq!(api_key(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer pdk_x"),
        );
        assert_eq!(api_key(&h), Some("pdk_x"));
        // The E2B form of a key is a key too (and so is never forwarded to a sandbox).
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer e2b_0123"),
        );
        assert_eq!(api_key(&h), Some("e2b_0123"));
    }
}
