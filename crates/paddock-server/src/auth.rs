//! API keys: generation, hashing, the [`Caller`] extractor, and per-key rate limiting.
//!
//! A key is `pdk_` followed by 40 lowercase hex digits (160 random bits). The same key is
//! also accepted as `e2b_<hex>`, the only form some E2B SDKs (e.g. the Python SDK 2.31)
//! let through before sending a request; both hash to the same stored key. Keys made before
//! keys were hex (`pdk_` and 40 base62 characters) keep working in their `pdk_` form.
//! Only a key's SHA-256 is stored. A request names its key in `Authorization: Bearer <key>` or
//! `X-API-Key: <key>`; anything else, a revoked key or an expired key is 401 with the same
//! body, so a client cannot tell which of them it hit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use paddock_store::{ApiKey, Role, SandboxFilter, SandboxRecord, Store, now_ms};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

const KEY_PREFIX: &str = "pdk_";
/// The prefix E2B SDKs expect; `e2b_<hex>` names the same key as `pdk_<hex>`.
pub const E2B_KEY_PREFIX: &str = "e2b_";
const KEY_CHARS: usize = 40;

/// A new random secret key: `pdk_` and 40 lowercase hex digits.
pub fn generate_key() -> String {
    let mut bytes = [0u8; KEY_CHARS / 2];
    rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// Whether `s` looks like a Paddock key in either form (for the proxy, which must never
/// forward one to a sandbox).
pub fn looks_like_key(s: &str) -> bool {
    s.starts_with(KEY_PREFIX) || s.starts_with(E2B_KEY_PREFIX)
}

/// The E2B form (`e2b_<hex>`) of a key whose material is hex; `None` for older base62 keys.
pub fn e2b_form(key: &str) -> Option<String> {
    let tail = key.strip_prefix(KEY_PREFIX)?;
    is_hex_tail(tail).then(|| format!("{E2B_KEY_PREFIX}{tail}"))
}

fn is_hex_tail(t: &str) -> bool {
    t.len() == KEY_CHARS
        && t.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The stored form of a presented key: `e2b_<hex>` becomes `pdk_<hex>`; `None` when the key
/// is not well formed.
fn canonical(key: &str) -> Option<std::borrow::Cow<'_, str>> {
    if let Some(tail) = key.strip_prefix(E2B_KEY_PREFIX) {
        return is_hex_tail(tail).then(|| format!("{KEY_PREFIX}{tail}").into());
    }
    let tail = key.strip_prefix(KEY_PREFIX)?;
    (tail.len() == KEY_CHARS && tail.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then_some(key.into())
}

/// Hex SHA-256 of a secret key: what the store keeps.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A random public id with a prefix, e.g. `key_8f3k...`.
pub fn random_id(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &paddock_core::SandboxId::random().as_str()[..16]
    )
}

/// The server's 32-byte secret, kept in `<data>/secret.key` (mode 0600), made on first use.
pub fn server_secret(data_dir: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let p = data_dir.join("secret.key");
    match std::fs::read(&p) {
        Ok(s) if s.len() == 32 => return Ok(s),
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} is not 32 bytes; remove it to make a new one (E2B access tokens change)",
                p.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut secret = vec![0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut secret[..]);
    let tmp = data_dir.join("secret.key.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&secret)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &p)?;
    Ok(secret)
}

/// The authenticated key of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKey,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.key.role == Role::Admin
    }
    pub fn tenant(&self) -> &str {
        &self.key.tenant
    }
    /// Whether this caller may see a resource of `tenant`. Admins see every tenant.
    pub fn may_access(&self, tenant: &str) -> bool {
        self.is_admin() || self.key.tenant == tenant
    }
    /// Whether this caller may see sandbox `r`: admins every sandbox, operators and viewers
    /// those of their tenant, developers only those their own key created.
    pub fn sees(&self, r: &SandboxRecord) -> bool {
        self.may_access(&r.tenant) && (self.key.role != Role::Developer || r.key_id == self.key.id)
    }
    /// Narrows a sandbox listing to what [`Caller::sees`].
    pub fn scope(&self, f: &mut SandboxFilter) {
        if !self.is_admin() {
            f.tenant = Some(self.key.tenant.clone());
        }
        if self.key.role == Role::Developer {
            f.key_id = Some(self.key.id.clone());
        }
    }
}

/// The key named in the request headers, if any.
pub fn presented_key(parts: &Parts) -> Option<&str> {
    if let Some(v) = parts.headers.get("x-api-key") {
        return v.to_str().ok();
    }
    let auth = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(c.clone());
        }
        // A key in the headers wins; without one, the console's session cookie
        // (CSRF-checked, see `session`).
        let c = match presented_key(parts) {
            Some(k) => authenticate(state, Some(k)).await?,
            None => {
                match crate::session::from_cookie(state, &parts.method, &parts.headers, false).await
                {
                    Some(r) => r?,
                    None => authenticate(state, None).await?,
                }
            }
        };
        crate::roles::admit(&parts.extensions, &c)?;
        parts.extensions.insert(c.clone());
        Ok(c)
    }
}

/// Checks a presented key: well formed, known, not revoked, not expired, within its rate.
pub async fn authenticate(state: &AppState, key: Option<&str>) -> Result<Caller, ApiError> {
    let c = authenticate_unmetered(state, key).await?;
    state.limiter.check(&c.key.id)?;
    Ok(c)
}

/// [`authenticate`] without taking a token of the REST rate: for the port proxy, which
/// charges its own bucket ([`data_bucket`]).
pub async fn authenticate_unmetered(
    state: &AppState,
    key: Option<&str>,
) -> Result<Caller, ApiError> {
    let hash = hash_key(&canonical(key.ok_or(BAD_KEY)?).ok_or(BAD_KEY)?);
    // A key used a moment ago is not read again (`crate::hotpath::KeyCache`).
    let k = match state.keys.get(&hash) {
        Some(k) => k,
        None => {
            let generation = state.keys.generation();
            let k = state.store.key_by_hash(&hash).await?.ok_or(BAD_KEY)?;
            state.keys.put(hash, k.clone(), generation);
            k
        }
    };
    usable(k)
}

const BAD_KEY: ApiError = ApiError::Unauthorized("missing, invalid, revoked or expired API key");

/// A known key as a caller, unless it is revoked or expired.
fn usable(k: ApiKey) -> Result<Caller, ApiError> {
    let now = now_ms();
    if k.revoked_at.is_some() || k.expires_at.is_some_and(|e| e <= now) {
        return Err(BAD_KEY);
    }
    Ok(Caller { key: k })
}

/// [`authenticate_unmetered`] against a store, never cached (the control plane has no
/// [`AppState`]).
pub async fn authenticate_in(store: &dyn Store, key: Option<&str>) -> Result<Caller, ApiError> {
    let key = canonical(key.ok_or(BAD_KEY)?).ok_or(BAD_KEY)?;
    usable(store.key_by_hash(&hash_key(&key)).await?.ok_or(BAD_KEY)?)
}

/// Who a data-plane request (E2B envd, port proxy) is charged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataBucket {
    /// An API key: the key presented (path-routed proxy), or the key that created the
    /// sandbox when the request carries the sandbox's access token or a signed file URL.
    Key(String),
    /// A request no key stands behind (envd's open `/health`, a public port reached
    /// without credentials): the sandbox's own bucket, so anonymous traffic can neither
    /// spend its owner's rate nor go unlimited.
    Sandbox(String),
}

/// Takes one token of the data-plane rate (`--data-rate`, `--data-rate-burst`) from `bucket`.
pub fn data_bucket(state: &AppState, bucket: &DataBucket) -> Result<(), ApiError> {
    match bucket {
        DataBucket::Key(k) => state.data_limiter.check(&format!("key:{k}")),
        DataBucket::Sandbox(id) => state.data_limiter.check(&format!("sandbox:{id}")),
    }
}

/// A caller with the admin role (403 otherwise).
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let c = Caller::from_request_parts(parts, state).await?;
        if !c.is_admin() {
            return Err(ApiError::Forbidden(
                "this route needs the admin role".into(),
            ));
        }
        Ok(Admin(c))
    }
}

/// Buckets kept before full ones are dropped.
const PRUNE_AT: usize = 4096;

/// Token buckets, one per key: `rate` requests per second on average, `burst` at once.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of `key`, or says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        // A full bucket is the same as none: drop them once the map grows, so buckets of
        // sandboxes long gone do not pile up.
        if b.len() >= PRUNE_AT && !b.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            b.retain(|_, (t, l)| *t + now.duration_since(*l).as_secs_f64() * rate < burst);
        }
        let (tokens, last) = b.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / self.rate).ceil() as u64;
            Err(ApiError::RateLimited(wait.max(1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hex_and_have_an_e2b_form() {
        let k = generate_key();
        assert_eq!(k.len(), 44);
        let tail = k.strip_prefix("pdk_").expect("pdk_ prefix");
        assert!(
            tail.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let e = e2b_form(&k).expect("an e2b form");
        assert_eq!(e, format!("e2b_{tail}"));
        // Both forms are the same stored key.
        assert_eq!(canonical(&e).as_deref(), Some(k.as_str()));
        assert_eq!(canonical(&k).as_deref(), Some(k.as_str()));
        assert_ne!(generate_key(), k);
    }

    #[test]
    fn old_base62_keys_keep_working_in_their_pdk_form_only() {
        let old = "pdk_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789ABCD";
        assert_eq!(canonical(old).as_deref(), Some(old));
        assert_eq!(e2b_form(old), None);
        assert_eq!(
            canonical("e2b_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789ABCD"),
            None
        );
        for bad in [
            "",
            "pdk_",
            "e2b_abc",
            "pdk_x",
            "xyz_0123456789012345678901234567890123456789",
        ] {
            assert_eq!(canonical(bad), None, "{bad}");
        }
        assert_eq!(
            canonical("e2b_0123456789ABCDEF0123456789abcdef01234567"),
            None
        );
    }
}
