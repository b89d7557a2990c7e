//! `/v1/session`: the web console's login (an API key for a session cookie), who the
//! session is (with its CSRF token), and logout. The rules are in [`crate::session`].

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::Json;
use crate::auth::{Caller, authenticate};
use crate::error::{ApiError, ApiResult};
use crate::session::{COOKIE_NAME, SESSION_TTL, check, cookie, csrf_token, origin_ok};
use crate::state::AppState;
use crate::wire::json_response;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/session", get(whoami).post(login).delete(logout))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    api_key: String,
}

fn whoami_json(c: &Caller, csrf: &str) -> serde_json::Value {
    serde_json::json!({
        "key_id": c.key.id,
        "name": c.key.name,
        "tenant": c.key.tenant,
        "role": c.key.role.as_str(),
        "admin": c.is_admin(),
        "csrf_token": csrf,
    })
}

fn set_cookie(state: &AppState, value: &str, max_age: u64) -> HeaderValue {
    let secure = if crate::session::https(state) {
        "; Secure"
    } else {
        ""
    };
    let v = format!(
        "{COOKIE_NAME}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `POST /v1/session` `{"api_key": "..."}`: checks the key and starts a session.
async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(body): Json<LoginBody>,
) -> ApiResult<Response> {
    // A login from another site's page would log the browser in as the attacker's key.
    if !origin_ok(&state, &headers, false) {
        return Err(ApiError::Csrf("the request comes from another origin"));
    }
    let res = authenticate(&state, Some(body.api_key.as_str()));
    let c = match res.await {
        Ok(c) => c,
        Err(e) => {
            state
                .audit(None, "session.login", None, "denied", None)
                .await;
            return Err(e);
        }
    };
    let id = crate::session::start(state.store.as_ref(), &c.key.id).await?;
    let csrf = csrf_token(&id);
    state
        .audit(Some(&c), "session.login", None, "ok", None)
        .await;
    let mut resp = json_response(StatusCode::CREATED, whoami_json(&c, &csrf));
    resp.headers_mut()
        .insert(SET_COOKIE, set_cookie(&state, &id, SESSION_TTL.as_secs()));
    Ok(resp)
}

/// `GET /v1/session`: who the session is, and its CSRF token. 401 without a live session.
async fn whoami(State(state): State<Arc<AppState>>, req: Request) -> ApiResult<Response> {
    let id = cookie(req.headers()).ok_or(ApiError::Unauthorized("no session; log in"))?;
    let c = check(&state, id, req.method(), req.headers(), false).await?;
    Ok(json_response(
        StatusCode::OK,
        whoami_json(&c, &csrf_token(id)),
    ))
}

/// `DELETE /v1/session`: ends the session (CSRF-checked like every cookie request) and
/// clears the cookie.
async fn logout(State(state): State<Arc<AppState>>, req: Request) -> ApiResult<Response> {
    let id = cookie(req.headers()).ok_or(ApiError::Unauthorized("no session; log in"))?;
    let c = check(&state, id, req.method(), req.headers(), false).await?;
    crate::session::end(state.store.as_ref(), id).await?;
    state
        .audit(Some(&c), "session.logout", None, "ok", None)
        .await;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(SET_COOKIE, set_cookie(&state, "", 0));
    Ok(resp)
}
