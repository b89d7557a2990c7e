//! `/v1/secrets`: tenant secrets, write-only (`docs/secrets.md`), and the master key's
//! rotation (`POST /v1/secret-key/rotate`, admin). No route returns a value.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use paddock_store::SecretRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Json;
use crate::auth::{Admin, Caller};
use crate::error::{ApiError, ApiResult};
use crate::secrets::{self, MasterKey, SecretUse};
use crate::state::AppState;
use crate::wire::form_urlencoded_pairs;
use crate::wire::{json_response, no_content, parse_limit, rfc3339, unknown_param};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/secrets", get(list).post(create))
        .route("/v1/secrets/{name}", get(info).put(update).delete(destroy))
        .route("/v1/secret-key/rotate", post(rotate))
}

/// The wire form of a secret: never its value.
pub fn secret_json(s: &SecretRecord) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "version": s.current_version,
        "metadata": s.metadata,
        "created_at": rfc3339(Some(s.created_at)),
        "updated_at": rfc3339(Some(s.updated_at)),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    value: String,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    value: String,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    /// A file on the server's host holding the new key (same format and mode rules as
    /// `--secrets-key-file`).
    key_file: String,
}

async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(b): Json<CreateBody>,
) -> ApiResult<Response> {
    let res = secrets::create(
        &state,
        &caller,
        &b.name,
        &b.value,
        b.metadata.unwrap_or_default(),
    )
    .await?;
    Ok(json_response(StatusCode::CREATED, secret_json(&res)))
}

async fn update(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    Json(b): Json<UpdateBody>,
) -> ApiResult<Response> {
    let res = secrets::update(&state, &caller, &name, &b.value, b.metadata).await?;
    Ok(json_response(StatusCode::OK, secret_json(&res)))
}

async fn info(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let s = secrets::get(&state, &caller, &name).await?;
    Ok(json_response(StatusCode::OK, secret_json(&s)))
}

async fn destroy(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    secrets::delete(&state, &caller, &name).await?;
    Ok(no_content())
}

async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut limit = 100;
    let mut after = None;
    for (k, v) in form_urlencoded_pairs(q.as_deref().unwrap_or("")) {
        match k.as_str() {
            "limit" => limit = parse_limit(&v)?,
            "after" => after = Some(v),
            other => return Err(unknown_param(other)),
        }
    }
    let list = secrets::list(&state, &caller, after.as_deref(), limit).await?;
    let next = (list.len() == limit as usize)
        .then(|| list.last().map(|s| s.name.clone()))
        .flatten();
    Ok(json_response(
        StatusCode::OK,
        json!({
            "secrets": list.iter().map(secret_json).collect::<Vec<_>>(),
            "next": next,
        }),
    ))
}

async fn rotate(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Json(b): Json<RotateBody>,
) -> ApiResult<Response> {
    let res = async {
        let key = MasterKey::from_file(std::path::Path::new(&b.key_file))
            .map_err(ApiError::BadRequest)?;
        let id = key.id().to_owned();
        let n = secrets::rotate(&state, key).await?;
        Ok((n, id))
    }
    .await;
    let (n, id) = state
        .audited(&caller, "secret.rotate_key", None, None, res)
        .await?;
    Ok(json_response(
        StatusCode::OK,
        json!({ "reencrypted": n, "key_id": id }),
    ))
}

/// Parses a create request's `secrets`: `{"ENV": "name"}` (an env var) or
/// `{"KEY": {"secret": "name", "file": true}}` (a file `/run/secrets/KEY`; `secret` defaults
/// to `KEY`, `file` to false).
pub fn parse_uses(v: &BTreeMap<String, Value>) -> ApiResult<BTreeMap<String, SecretUse>> {
    let mut out = BTreeMap::new();
    for (k, v) in v {
        let u = match v {
            Value::String(s) => SecretUse {
                secret: s.clone(),
                file: false,
            },
            Value::Object(o) => {
                if let Some(bad) = o.keys().find(|f| *f != "secret" && *f != "file") {
                    return Err(ApiError::BadRequest(format!(
                        "secrets.{}: unknown field {:?} (expected secret, file)",
                        crate::state::truncate(k, 64),
                        crate::state::truncate(bad, 64)
                    )));
                }
                let secret = match o.get("secret") {
                    None => k.clone(),
                    Some(Value::String(s)) => s.clone(),
                    Some(_) => {
                        return Err(ApiError::BadRequest(format!(
                            "secrets.{}.secret must be a string",
                            crate::state::truncate(k, 64)
                        )));
                    }
                };
                let file = match o.get("file") {
                    None => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        return Err(ApiError::BadRequest(format!(
                            "secrets.{}.file must be true or false",
                            crate::state::truncate(k, 64)
                        )));
                    }
                };
                SecretUse { secret, file }
            }
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "secrets.{} must be a secret name or {{\"secret\": NAME, \"file\": BOOL}}",
                    crate::state::truncate(k, 64)
                )));
            }
        };
        out.insert(k.clone(), u);
    }
    secrets::check_uses(&out)?;
    Ok(out)
}
