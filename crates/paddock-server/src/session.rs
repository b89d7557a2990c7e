//! Browser sessions for the web console: sessions in the store and the session cookie as
//! an alternative to the API-key header ([`from_cookie`], used by [`crate::auth::Caller`]
//! and the WebSocket terminal; [`caller_in`] for the control plane, which has no
//! [`AppState`]). The routes (`POST/GET/DELETE /v1/session`) are `api::session`.
//!
//! Logging in presents an API key once; the server answers with a random session id in the
//! `paddock_session` cookie (`HttpOnly`, `SameSite=Strict`, `Path=/`, and `Secure` when the
//! server speaks TLS or its `--public-url` is https). The store keeps the SHA-256 of the id
//! with the key's id and the expiry (`paddock_store::SessionStore`), so every server and
//! control plane on one store (a fleet) knows every session; the key itself is never sent
//! back and never stored in the browser. The CSRF token is derived from the id
//! ([`csrf_token`]), so it is not stored at all and any process can check it.
//! A session ends at logout (its row is deleted), after [`SESSION_TTL`], or when its key is
//! revoked (the revocation deletes its rows) or expires. Each key keeps at most
//! [`MAX_SESSIONS_PER_KEY`]; a login beyond that ends the key's oldest. Expired rows are
//! purged at each login. Every cookie request reads the store once (the session joined with
//! its key, one indexed statement), uncached, so a logout or revocation on one process holds
//! on the next request to any other.
//!
//! CSRF: a cookie-authenticated request whose method is not `GET`/`HEAD` must carry
//! `X-CSRF-Token` equal to the session's token, and an `Origin` header, when present, equal to
//! the server's own origin (the request's `Host` with the scheme the server speaks, or the
//! origin of `--public-url`); otherwise 403 `csrf`. The WebSocket terminal (a `GET`) needs the
//! matching `Origin` too. Requests authenticated by an API key are unaffected.

use std::time::Duration;

use axum::http::header::{COOKIE, HOST, ORIGIN};
use axum::http::{HeaderMap, Method};
use paddock_store::{SessionRecord, Store};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use paddock_service::auth::keys::Caller;
use paddock_service::state::AppState;

/// The cookie's name.
pub const COOKIE_NAME: &str = "paddock_session";
/// The cookie as it starts a `Cookie` or `Set-Cookie` entry (the proxy never passes it on).
pub const COOKIE_PREFIX: &str = "paddock_session=";
/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after login (absolute, not sliding).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions one key keeps; a login beyond that ends the key's oldest.
pub const MAX_SESSIONS_PER_KEY: u32 = 100;

const GONE: ApiError = ApiError::Unauthorized("the session has ended; log in again");

/// Starts a session of key `key_id` in the store: its id (the cookie value).
pub async fn start(store: &dyn Store, key_id: &str) -> Result<String, ApiError> {
    let id = random_token();
    let now = paddock_store::now_ms();
    let ttl = i64::try_from(SESSION_TTL.as_millis()).unwrap_or(i64::MAX);
    store
        .insert_session(
            &SessionRecord {
                token_hash: digest(&id),
                key_id: key_id.to_owned(),
                created_at: now,
                expires_at: now.saturating_add(ttl),
            },
            MAX_SESSIONS_PER_KEY,
        )
        .await?;
    Ok(id)
}

/// Ends the session with cookie value `id`; whether it existed.
pub async fn end(store: &dyn Store, id: &str) -> Result<bool, ApiError> {
    Ok(store.delete_session(&digest(id)).await?)
}

/// The CSRF token of session `id`: derived from the id (which only the browser and, per
/// request, the server see), so nothing of it is stored and every process agrees on it.
pub fn csrf_token(id: &str) -> String {
    hex::encode(Sha256::digest(format!("paddock-csrf\0{id}").as_bytes()))
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut b[..]);
    hex::encode(b)
}

fn digest(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// The session id in the request's cookies, if any.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Whether the server is reached over https: it speaks TLS, or its public URL
/// (`--public-url`, a TLS terminator in front) is https.
pub fn https(state: &AppState) -> bool {
    state.cfg.tls.is_some() || state.cfg.public_url.starts_with("https://")
}

/// The origin (`scheme://host[:port]`) of a URL, lowercased.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}").to_ascii_lowercase())
}

/// Whether `origin` is the server's own: the request's `Host` with the scheme the server
/// speaks (https under TLS), or the origin of `--public-url`.
fn is_own(state: &AppState, headers: &HeaderMap, origin: &str) -> bool {
    let origin = origin.to_ascii_lowercase();
    if origin_of(&state.cfg.public_url).is_some_and(|o| o == origin) {
        return true;
    }
    let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let scheme = if state.cfg.tls.is_some() {
        "https"
    } else {
        "http"
    };
    origin == format!("{scheme}://{}", host.to_ascii_lowercase())
}

/// Whether the request's `Origin` is the server's own. `require` makes a missing `Origin` a
/// failure (WebSockets, which browsers always send it with).
pub fn origin_ok(state: &AppState, headers: &HeaderMap, require: bool) -> bool {
    match headers.get(ORIGIN) {
        None => !require,
        Some(o) => o.to_str().is_ok_and(|o| is_own(state, headers, o)),
    }
}

/// The caller behind the request's session cookie, or `None` when there is no cookie.
/// A cookie naming no live session, a revoked or expired key, or a failed CSRF check is an
/// error. `ws` marks a WebSocket upgrade: a `GET` that must still come from our own origin.
pub async fn from_cookie(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    ws: bool,
) -> Option<Result<Caller, ApiError>> {
    let id = cookie(headers)?;
    Some(check(state, id, method, headers, ws).await)
}

pub(crate) async fn check(
    state: &AppState,
    id: &str,
    method: &Method,
    headers: &HeaderMap,
    ws: bool,
) -> Result<Caller, ApiError> {
    let own = origin_ok(state, headers, ws);
    let c = caller_in(state.store.as_ref(), id, method, headers, own).await?;
    state.limiter.check(&c.key.id)?;
    Ok(c)
}

/// The caller behind session cookie `id`, against a store: the session must be live, its
/// key neither revoked nor expired, and a request other than `GET`/`HEAD` must carry the
/// session's CSRF token. `origin_ok` is the caller's verdict on the request's `Origin`.
/// Takes no token of any rate (the caller charges its own).
pub async fn caller_in(
    store: &dyn Store,
    id: &str,
    method: &Method,
    headers: &HeaderMap,
    origin_ok: bool,
) -> Result<Caller, ApiError> {
    let now = paddock_store::now_ms();
    let key = store.session_key(&digest(id), now).await?.ok_or(GONE)?;
    let safe = *method == Method::GET || *method == Method::HEAD;
    if !safe {
        let token = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if token.is_none_or(|t| !constant_eq(t.as_bytes(), csrf_token(id).as_bytes())) {
            return Err(ApiError::Csrf("missing or wrong X-CSRF-Token"));
        }
    }
    if !origin_ok {
        return Err(ApiError::Csrf("the request comes from another origin"));
    }
    if key.revoked_at.is_some() || key.expires_at.is_some_and(|e| e <= now) {
        store.delete_session(&digest(id)).await?;
        return Err(GONE);
    }
    Ok(Caller { key })
}

/// Whether `origin` is `http://<Host>` of the request: the control plane's own-origin rule
/// (it speaks plain HTTP).
pub fn origin_is_host(headers: &HeaderMap, require: bool) -> bool {
    let Some(o) = headers.get(ORIGIN) else {
        return !require;
    };
    let (Ok(o), Some(Ok(host))) = (o.to_str(), headers.get(HOST).map(|h| h.to_str())) else {
        return false;
    };
    o.eq_ignore_ascii_case(&format!("http://{host}"))
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; paddock_session=abc ; b=2"),
        );
        assert_eq!(cookie(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("paddock_session="));
        assert_eq!(cookie(&h), None);
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("x=1"));
        h.append(COOKIE, HeaderValue::from_static("paddock_session=z"));
        assert_eq!(cookie(&h), Some("z"));
    }

    #[test]
    fn csrf_tokens_are_per_session_and_compared_whole() {
        assert_eq!(csrf_token("a"), csrf_token("a"));
        assert_ne!(csrf_token("a"), csrf_token("b"));
        assert_ne!(csrf_token("a"), digest("a"));
        assert!(constant_eq(b"abc", b"abc"));
        assert!(!constant_eq(b"abc", b"abd"));
        assert!(!constant_eq(b"abc", b"ab"));
    }

    #[test]
    fn origins_are_scheme_and_authority() {
        assert_eq!(
            origin_of("https://Sandboxes.Example.com/x?y").as_deref(),
            Some("https://sandboxes.example.com")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:7070").as_deref(),
            Some("http://127.0.0.1:7070")
        );
        assert_eq!(origin_of("nonsense"), None);
        assert_eq!(origin_of("http://"), None);
    }
}
