//! Authentication: the [`Caller`] and [`Admin`] extractors, checking a presented key, and the
//! data plane's buckets. Keys themselves (their form, hashing, minting) are [`keys`]; the
//! token buckets are [`limit`].
//!
//! A key is `pdk_` followed by 40 lowercase hex digits (160 random bits). The same key is
//! also accepted as `e2b_<hex>`, the only form some E2B SDKs (e.g. the Python SDK 2.31)
//! let through before sending a request; both hash to the same stored key. Keys made before
//! keys were hex (`pdk_` and 40 base62 characters) keep working in their `pdk_` form.
//! Only a key's SHA-256 is stored. A request names its key in `Authorization: Bearer <key>` or
//! `X-API-Key: <key>`; anything else, a revoked key or an expired key is 401 with the same
//! body, so a client cannot tell which of them it hit.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use paddock_store::{ApiKey, Store, now_ms};

use self::keys::canonical;
pub use self::keys::{
    E2B_KEY_PREFIX, e2b_form, generate_key, hash_key, looks_like_key, new_key_in, random_id,
    server_secret,
};
pub use self::limit::RateLimiter;
pub use paddock_service::auth::{keys, limit};

use crate::error::ApiError;
use paddock_service::state::AppState;

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

/// The caller of a request, as an extractor: the domain's [`keys::Caller`] (which it
/// dereferences to, so domain calls take `&caller` as before), found from the request's key
/// or the console's session cookie and admitted by the route's role.
#[derive(Debug, Clone)]
pub struct Caller(pub keys::Caller);

impl std::ops::Deref for Caller {
    type Target = keys::Caller;

    fn deref(&self) -> &keys::Caller {
        &self.0
    }
}

impl From<keys::Caller> for Caller {
    fn from(c: keys::Caller) -> Caller {
        Caller(c)
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(c) = parts.extensions.get::<keys::Caller>() {
            return Ok(Caller(c.clone()));
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
        Ok(Caller(c))
    }
}

/// Checks a presented key: well formed, known, not revoked, not expired, within its rate.
pub async fn authenticate(state: &AppState, key: Option<&str>) -> Result<keys::Caller, ApiError> {
    let c = authenticate_unmetered(state, key).await?;
    state.limiter.check(&c.key.id)?;
    Ok(c)
}

/// [`authenticate`] without taking a token of the REST rate: for the port proxy, which
/// charges its own bucket ([`data_bucket`]).
pub async fn authenticate_unmetered(
    state: &AppState,
    key: Option<&str>,
) -> Result<keys::Caller, ApiError> {
    let hash = hash_key(&canonical(key.ok_or(BAD_KEY)?).ok_or(BAD_KEY)?);
    // A key used a moment ago is not read again (`paddock_service::hotpath::KeyCache`).
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
fn usable(k: ApiKey) -> Result<keys::Caller, ApiError> {
    let now = now_ms();
    if k.revoked_at.is_some() || k.expires_at.is_some_and(|e| e <= now) {
        return Err(BAD_KEY);
    }
    Ok(keys::Caller { key: k })
}

/// [`authenticate_unmetered`] against a store, never cached (the control plane has no
/// [`AppState`]).
pub async fn authenticate_in(
    store: &dyn Store,
    key: Option<&str>,
) -> Result<keys::Caller, ApiError> {
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
    .map_err(ApiError::from)
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
