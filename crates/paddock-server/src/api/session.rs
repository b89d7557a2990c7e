//! `/v1/session`: the web console's login (an API key for a session cookie), who the
//! session is (with its CSRF token), and logout. The rules are in [`crate::session`].

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Json;
use crate::auth::authenticate;
use crate::error::{ApiError, ApiResult};
use crate::session::{COOKIE_NAME, SESSION_TTL, check, cookie, csrf_token, origin_ok};
use crate::wire::typed_response;
use paddock_service::auth::keys::Caller;
use paddock_service::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/session", get(whoami).post(login).delete(logout))
}

/// A login.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Login)]
pub(crate) struct LoginBody {
    /// A key in either form (pdk_ or e2b_)
    api_key: String,
}

/// A key's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleWire {
    Viewer,
    Developer,
    Operator,
    Admin,
}

impl From<paddock_store::Role> for RoleWire {
    fn from(r: paddock_store::Role) -> RoleWire {
        match r {
            paddock_store::Role::Viewer => RoleWire::Viewer,
            paddock_store::Role::Developer => RoleWire::Developer,
            paddock_store::Role::Operator => RoleWire::Operator,
            paddock_store::Role::Admin => RoleWire::Admin,
        }
    }
}

/// Who a console session is.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Session {
    pub key_id: String,
    /// The key's name
    pub name: String,
    pub tenant: String,
    #[schema(inline)]
    pub role: RoleWire,
    pub admin: bool,
    /// Send as X-CSRF-Token on every cookie request that is not GET or HEAD
    pub csrf_token: String,
}

impl Session {
    fn of(c: &Caller, csrf: String) -> Session {
        Session {
            key_id: c.key.id.clone(),
            name: c.key.name.clone(),
            tenant: c.key.tenant.clone(),
            role: c.key.role.into(),
            admin: c.is_admin(),
            csrf_token: csrf,
        }
    }

    fn response(self, status: StatusCode) -> Response {
        typed_response(status, &self)
    }
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

/// Log in the web console
///
/// Checks an API key and starts a browser session: the answer sets the cookie
/// `paddock_session` (HttpOnly, SameSite=Strict, Path=/, Secure when the server speaks TLS
/// or its --public-url is https, Max-Age 43200). The session maps, in server memory, to the
/// key's id; the key is never sent back. Sessions end at logout, after 12 hours, when the
/// key is revoked or expires, or when the server restarts; at most 10,000 live at once (the
/// oldest is dropped). A request with an `Origin` other than the server's own is refused
/// with 403 `csrf`. Every route that takes an API key also takes the cookie; then every
/// method but GET and HEAD needs `X-CSRF-Token` (from this answer or GET /v1/session) and
/// an `Origin`, when sent, equal to the server's own (the request's Host with the server's
/// scheme, or the origin of --public-url), else 403 `csrf`; the WebSocket terminal needs
/// the server's own `Origin`.
#[utoipa::path(
    post,
    path = "/v1/session",
    tag = "session",
    operation_id = "login",
    security(()),
    request_body = LoginBody,
    responses(
        (status = 201, description = "Logged in; the cookie is set", body = Session,
            headers(("Set-Cookie" = String, description = "paddock_session=<random id>; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200[; Secure]"))),
        (status = 400, description = "Bad input"),
        (status = 401, description = "Not a valid key"),
        (status = 403, description = "Another origin (`csrf`)"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn login(
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
    let mut resp = Session::of(&c, csrf).response(StatusCode::CREATED);
    resp.headers_mut()
        .insert(SET_COOKIE, set_cookie(&state, &id, SESSION_TTL.as_secs()));
    Ok(resp)
}

/// Who the session is, and its CSRF token
///
/// Needs the session cookie (not an API key); 401 without a live session.
#[utoipa::path(
    get,
    path = "/v1/session",
    tag = "session",
    operation_id = "get_session",
    security(()),
    responses(
        (status = 200, description = "The session's key and CSRF token", body = Session),
        (status = 401, description = "No live session"),
    )
)]
pub(crate) async fn whoami(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> ApiResult<Response> {
    let id = cookie(req.headers()).ok_or(ApiError::Unauthorized("no session; log in"))?;
    let c = check(&state, id, req.method(), req.headers(), false).await?;
    Ok(Session::of(&c, csrf_token(id)).response(StatusCode::OK))
}

/// Log out
///
/// Ends the session and clears the cookie. Needs the cookie and `X-CSRF-Token`.
#[utoipa::path(
    delete,
    path = "/v1/session",
    tag = "session",
    operation_id = "logout",
    security(()),
    params(("X-CSRF-Token" = String, Header, description = "The session's CSRF token")),
    responses(
        (status = 204, description = "Logged out; the cookie is cleared (Max-Age=0)"),
        (status = 401, description = "No live session"),
        (status = 403, description = "No or a wrong CSRF token, or another origin (`csrf`)"),
    )
)]
pub(crate) async fn logout(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> ApiResult<Response> {
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
