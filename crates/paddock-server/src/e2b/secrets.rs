//! The E2B `Secret` API (SDK 2.63: `Secret.create`, `update`, `get_info`, `list`, `exists`,
//! `destroy`): `/secrets` and `/secrets/{secretID}` over Paddock's tenant secrets, and the
//! `${e2b.secrets.NAME}` placeholders of `Secret.fill` in a create's `envVars`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use super::E2bError;
use super::common::{E2bCaller, body, json_status};
use super::wire::SecretBody;
use crate::error::ApiError;
use crate::wire::form_urlencoded_pairs;
use crate::wire::no_content;
use paddock_service::secrets::{self, SecretUse};
use paddock_service::state::AppState;

type E2bResult<T> = Result<T, E2bError>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/secrets", get(list).post(create))
        .route("/secrets/{id}", get(info).post(update).delete(destroy))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSecret {
    name: String,
    value: String,
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretUpdate {
    value: String,
    metadata: Option<BTreeMap<String, String>>,
}

async fn create(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    req: Request,
) -> E2bResult<Response> {
    let b: NewSecret = body(&state, req).await?;
    let s = secrets::create(
        &state,
        &caller,
        &b.name,
        &b.value,
        b.metadata.unwrap_or_default(),
    )
    .await?;
    Ok(json_status(StatusCode::CREATED, &SecretBody::from(&s)))
}

async fn update(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
    req: Request,
) -> E2bResult<Response> {
    let b: SecretUpdate = body(&state, req).await?;
    let s = secrets::update(&state, &caller, &id, &b.value, b.metadata).await?;
    Ok(json_status(StatusCode::OK, &SecretBody::from(&s)))
}

async fn info(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
) -> E2bResult<Response> {
    let s = secrets::get(&state, &caller, &id).await?;
    Ok(json_status(StatusCode::OK, &SecretBody::from(&s)))
}

async fn destroy(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    Path(id): Path<String>,
) -> E2bResult<Response> {
    secrets::delete(&state, &caller, &id).await?;
    Ok(no_content())
}

/// `GET /secrets?limit=&nextToken=`: a page by name; `x-next-token` names the next one.
async fn list(
    State(state): State<Arc<AppState>>,
    E2bCaller(caller): E2bCaller,
    RawQuery(q): RawQuery,
) -> E2bResult<Response> {
    let mut limit = 100;
    let mut after = None;
    for (k, v) in form_urlencoded_pairs(q.as_deref().unwrap_or("")) {
        match k.as_str() {
            "limit" => limit = crate::wire::parse_limit(&v)?,
            "nextToken" => after = Some(v),
            other => return Err(crate::wire::unknown_param(other).into()),
        }
    }
    let page = secrets::list(&state, &caller, after.as_deref(), limit).await?;
    let mut r = json_status(
        StatusCode::OK,
        &page.iter().map(SecretBody::from).collect::<Vec<_>>(),
    );
    if page.len() == limit as usize
        && let Some(last) = page.last()
        && let Ok(v) = HeaderValue::from_str(&last.name)
    {
        r.headers_mut().insert("x-next-token", v);
    }
    Ok(r)
}

/// Takes the `envVars` whose value is a `Secret.fill` placeholder, `${e2b.secrets.NAME}`, out
/// of `env` as secret uses. A placeholder inside a longer value is refused (only whole values
/// are resolved).
pub fn take_placeholders(
    env: &mut BTreeMap<String, String>,
) -> Result<BTreeMap<String, SecretUse>, ApiError> {
    const OPEN: &str = "${e2b.secrets.";
    let mut uses = BTreeMap::new();
    for (k, v) in env.iter() {
        let Some(pos) = v.find(OPEN) else { continue };
        let name = v
            .strip_prefix(OPEN)
            .and_then(|r| r.strip_suffix('}'))
            .filter(|n| pos == 0 && !n.contains('}'));
        let Some(name) = name else {
            return Err(ApiError::BadRequest(format!(
                "envVars.{}: a secret placeholder must be the whole value",
                paddock_service::state::truncate(k, 64)
            )));
        };
        uses.insert(
            k.clone(),
            SecretUse {
                secret: name.to_owned(),
                file: false,
            },
        );
    }
    for k in uses.keys() {
        env.remove(k);
    }
    secrets::check_uses(&uses)?;
    Ok(uses)
}
