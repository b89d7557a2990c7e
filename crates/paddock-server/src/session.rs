//! Browser sessions for the web console: the in-memory session map and the session cookie
//! as an alternative to the API-key header ([`from_cookie`], used by [`crate::auth::Caller`]
//! and the WebSocket terminal). The routes (`POST/GET/DELETE /v1/session`) are
//! `api::session`.
//!
//! Logging in presents an API key once; the server answers with a random session id in the
//! `paddock_session` cookie (`HttpOnly`, `SameSite=Strict`, `Path=/`, and `Secure` when the
//! server speaks TLS or its `--public-url` is https). The id maps, in memory, to the key's id and a CSRF token; the key itself
//! is never sent back and never stored in the browser. A session ends at logout, after
//! [`SESSION_TTL`], when its key is revoked or expires, or when the server restarts (the map is
//! not persisted). At most [`MAX_SESSIONS`] live at once; beyond that the oldest is dropped.
//!
//! CSRF: a cookie-authenticated request whose method is not `GET`/`HEAD` must carry
//! `X-CSRF-Token` equal to the session's token, and an `Origin` header, when present, equal to
//! the server's own origin (the request's `Host` with the scheme the server speaks, or the
//! origin of `--public-url`); otherwise 403 `csrf`. The WebSocket terminal (a `GET`) needs the
//! matching `Origin` too. Requests authenticated by an API key are unaffected.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::header::{COOKIE, HOST, ORIGIN};
use axum::http::{HeaderMap, Method};
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The cookie's name.
pub const COOKIE_NAME: &str = "paddock_session";
/// The cookie as it starts a `Cookie` or `Set-Cookie` entry (the proxy never passes it on).
pub const COOKIE_PREFIX: &str = "paddock_session=";
/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after login (absolute, not sliding).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once.
pub const MAX_SESSIONS: usize = 10_000;

/// One logged-in browser.
#[derive(Debug, Clone)]
struct Session {
    key_id: String,
    csrf: String,
    created: Instant,
}

/// The live sessions, by the SHA-256 of their id (a leaked map holds no usable cookie).
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A new session of key `key_id`: its id (the cookie) and its CSRF token.
    pub fn insert(&self, key_id: String) -> (String, String) {
        let id = random_token();
        let csrf = random_token();
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, s| s.created.elapsed() < SESSION_TTL);
        if m.len() >= MAX_SESSIONS
            && let Some(oldest) = m
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(
            digest(&id),
            Session {
                key_id,
                csrf: csrf.clone(),
                created: Instant::now(),
            },
        );
        (id, csrf)
    }

    /// The CSRF token of a live session.
    pub fn csrf(&self, id: &str) -> Option<String> {
        self.get(id).map(|s| s.csrf)
    }

    fn get(&self, id: &str) -> Option<Session> {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let d = digest(id);
        match m.get(&d) {
            Some(s) if s.created.elapsed() < SESSION_TTL => Some(s.clone()),
            Some(_) => {
                m.remove(&d);
                None
            }
            None => None,
        }
    }

    /// Ends a session; whether it existed.
    pub fn remove(&self, id: &str) -> bool {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&digest(id)).is_some()
    }

    /// Sessions currently kept (expired ones included until they are next seen).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
    const GONE: ApiError = ApiError::Unauthorized("the session has ended; log in again");
    let s = state.sessions.get(id).ok_or(GONE)?;
    let safe = *method == Method::GET || *method == Method::HEAD;
    if !safe {
        let token = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if token.is_none_or(|t| !constant_eq(t.as_bytes(), s.csrf.as_bytes())) {
            return Err(ApiError::Csrf("missing or wrong X-CSRF-Token"));
        }
    }
    if !origin_ok(state, headers, ws) {
        return Err(ApiError::Csrf("the request comes from another origin"));
    }
    let key = state.store.get_key(&s.key_id).await?.ok_or(GONE)?;
    let now = paddock_store::now_ms();
    if key.revoked_at.is_some() || key.expires_at.is_some_and(|e| e <= now) {
        state.sessions.remove(id);
        return Err(GONE);
    }
    state.limiter.check(&key.id)?;
    Ok(Caller { key })
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
    fn sessions_expire_and_are_removed() {
        let s = Sessions::default();
        let (id, csrf) = s.insert("key_1".into());
        assert_eq!(s.get(&id).map(|x| x.csrf), Some(csrf));
        assert!(s.get("other").is_none());
        assert!(s.remove(&id));
        assert!(s.get(&id).is_none());
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
