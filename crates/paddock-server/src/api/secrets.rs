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
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::Json;
use crate::auth::{Admin, Caller};
use crate::error::{ApiError, ApiResult};
use crate::wire::form_urlencoded_pairs;
use crate::wire::{no_content, parse_limit, rfc3339, typed_response, unknown_param};
use paddock_service::secrets::{self, MasterKey, SecretUse};
use paddock_service::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/secrets", get(list).post(create))
        .route("/v1/secrets/{name}", get(info).put(update).delete(destroy))
        .route("/v1/secret-key/rotate", post(rotate))
}

/// A secret's metadata; never its value.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Secret)]
pub struct SecretView {
    #[schema(example = "sec_0123456789abcdef")]
    pub id: String,
    pub name: String,
    /// The current version, served to new sandboxes
    pub version: i64,
    pub metadata: BTreeMap<String, String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Value,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Value,
}

impl From<&SecretRecord> for SecretView {
    fn from(s: &SecretRecord) -> SecretView {
        SecretView {
            id: s.id.clone(),
            name: s.name.clone(),
            version: s.current_version,
            metadata: s.metadata.clone(),
            created_at: rfc3339(Some(s.created_at)),
            updated_at: rfc3339(Some(s.updated_at)),
        }
    }
}

impl SecretView {
    fn response(self, status: StatusCode) -> Response {
        typed_response(status, &self)
    }
}

/// A page of secrets.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SecretList {
    pub secrets: Vec<SecretView>,
    /// The `after` of the next page; null on the last
    pub next: Option<String>,
}

/// A new secret.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewSecret)]
pub(crate) struct CreateBody {
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
    name: String,
    #[schema(max_length = 65536, write_only)]
    value: String,
    /// At most 32 entries (keys 128 bytes, values 1024, 8192 in total).
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

/// A secret's new value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SecretValue)]
pub(crate) struct UpdateBody {
    #[schema(max_length = 65536, write_only)]
    value: String,
    /// Replaces the stored metadata when given. At most 32 entries (keys 128 bytes, values
    /// 1024, 8192 in total).
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

/// The new master key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RotateKey)]
pub(crate) struct RotateBody {
    /// A file on the server's host holding the new key (same format and mode rules as
    /// `--secrets-key-file`).
    key_file: String,
}

/// A rotation's result.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Rotated {
    /// Versions re-encrypted
    pub reencrypted: usize,
    /// Fingerprint of the new key
    pub key_id: String,
}

/// Create a secret
///
/// The value is sealed with AES-256-GCM under the server's master key and is never returned
/// by any route. Version 1. Name: 1 to 128 bytes of `[A-Za-z0-9_.-]` starting with a letter
/// or digit; value at most 65536 bytes; metadata at most 32 entries (keys 128 bytes, values
/// 1024, 8192 in total); at most 1000 secrets per tenant (429 `quota_exceeded`). A taken
/// name is 409. Without a master key (`--secrets-key-file` or `PADDOCK_SECRETS_KEY`) every
/// secret route answers 503 `unavailable` saying how to configure one.
#[utoipa::path(
    post,
    path = "/v1/secrets",
    tag = "secrets",
    operation_id = "create_secret",
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created", body = SecretView),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 409, description = "The name is taken"),
        (status = 413, description = "The body is too large"),
        (status = 415, description = "Not JSON"),
        (status = 429, description = "1000 secrets already (`quota_exceeded`), or rate limited"),
        (status = 503, description = "No master key configured"),
    )
)]
pub(crate) async fn create(
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
    Ok(SecretView::from(&res).response(StatusCode::CREATED))
}

/// Store a new version of a secret's value
///
/// The new version becomes current; the 10 newest versions are kept. `metadata`, when
/// given, replaces the stored metadata. Sandboxes already running keep the value they got
/// at create.
#[utoipa::path(
    put,
    path = "/v1/secrets/{name}",
    tag = "secrets",
    operation_id = "update_secret",
    params(("name" = String, Path, description = "The secret's name or id (`sec_...`)")),
    request_body = UpdateBody,
    responses(
        (status = 200, description = "The secret at its new version", body = SecretView),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such secret"),
        (status = 413, description = "The body is too large"),
        (status = 415, description = "Not JSON"),
        (status = 503, description = "No master key configured"),
    )
)]
pub(crate) async fn update(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    Json(b): Json<UpdateBody>,
) -> ApiResult<Response> {
    let res = secrets::update(&state, &caller, &name, &b.value, b.metadata).await?;
    Ok(SecretView::from(&res).response(StatusCode::OK))
}

/// A secret's metadata (never its value)
#[utoipa::path(
    get,
    path = "/v1/secrets/{name}",
    tag = "secrets",
    operation_id = "get_secret",
    params(("name" = String, Path, description = "The secret's name or id (`sec_...`)")),
    responses(
        (status = 200, description = "The secret", body = SecretView),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such secret"),
        (status = 503, description = "No master key configured"),
    )
)]
pub(crate) async fn info(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let s = secrets::get(&state, &caller, &name).await?;
    Ok(SecretView::from(&s).response(StatusCode::OK))
}

/// Delete a secret and every version of it
#[utoipa::path(
    delete,
    path = "/v1/secrets/{name}",
    tag = "secrets",
    operation_id = "delete_secret",
    params(("name" = String, Path, description = "The secret's name or id (`sec_...`)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No or a bad key"),
        (status = 404, description = "No such secret"),
        (status = 503, description = "No master key configured"),
    )
)]
pub(crate) async fn destroy(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    secrets::delete(&state, &caller, &name).await?;
    Ok(no_content())
}

/// List the tenant's secrets
///
/// Names, versions and metadata, by name; never values. Page with `limit` (1 to 1000,
/// default 100) and `after` (the `next` of the previous page). Without a master key
/// (`--secrets-key-file` or `PADDOCK_SECRETS_KEY`) every secret route answers 503
/// `unavailable` saying how to configure one.
#[utoipa::path(
    get,
    path = "/v1/secrets",
    tag = "secrets",
    operation_id = "list_secrets",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)"),
        ("after" = Option<String>, Query, description = "List names after this one"),
    ),
    responses(
        (status = 200, description = "A page of secrets", body = SecretList),
        (status = 400, description = "Bad query"),
        (status = 401, description = "No or a bad key"),
        (status = 503, description = "No master key configured"),
    )
)]
pub(crate) async fn list(
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
    let page = SecretList {
        secrets: list.iter().map(SecretView::from).collect(),
        next,
    };
    Ok(typed_response(StatusCode::OK, &page))
}

/// Re-encrypt every secret under a new master key (admin)
///
/// `key_file` is a path on the server's host holding the new key (64 hex digits or base64
/// of 32 bytes; not readable by group or others). Every version of every tenant's secrets
/// is re-encrypted in one transaction, then the server uses the new key. Restart the server
/// with the new key afterwards: under the old one, creates naming secrets answer 503 naming
/// both key ids. A bad file or the key in use is 400 and changes nothing.
#[utoipa::path(
    post,
    path = "/v1/secret-key/rotate",
    tag = "secrets",
    operation_id = "rotate_secret_key",
    request_body = RotateBody,
    responses(
        (status = 200, description = "Rotated", body = Rotated),
        (status = 400, description = "A bad key file, or the key in use"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not an admin"),
        (status = 503, description = "No master key configured"),
    )
)]
pub(crate) async fn rotate(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Json(b): Json<RotateBody>,
) -> ApiResult<Response> {
    let res: ApiResult<_> = async {
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
    let rotated = Rotated {
        reencrypted: n,
        key_id: id,
    };
    Ok(typed_response(StatusCode::OK, &rotated))
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
                        paddock_service::state::truncate(k, 64),
                        paddock_service::state::truncate(bad, 64)
                    )));
                }
                let secret = match o.get("secret") {
                    None => k.clone(),
                    Some(Value::String(s)) => s.clone(),
                    Some(_) => {
                        return Err(ApiError::BadRequest(format!(
                            "secrets.{}.secret must be a string",
                            paddock_service::state::truncate(k, 64)
                        )));
                    }
                };
                let file = match o.get("file") {
                    None => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        return Err(ApiError::BadRequest(format!(
                            "secrets.{}.file must be true or false",
                            paddock_service::state::truncate(k, 64)
                        )));
                    }
                };
                SecretUse { secret, file }
            }
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "secrets.{} must be a secret name or {{\"secret\": NAME, \"file\": BOOL}}",
                    paddock_service::state::truncate(k, 64)
                )));
            }
        };
        out.insert(k.clone(), u);
    }
    secrets::check_uses(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A secret's wire form is the `json!` body it replaced: never its value.
    #[test]
    fn a_secret_serialises_as_before() {
        let s = SecretRecord {
            id: "sec_0123".into(),
            tenant: "t".into(),
            name: "DB".into(),
            current_version: 3,
            metadata: BTreeMap::from([("owner".to_owned(), "ops".to_owned())]),
            created_at: 0,
            updated_at: 1_000,
        };
        assert_eq!(
            serde_json::to_value(SecretView::from(&s)).unwrap(),
            serde_json::json!({
                "id": "sec_0123", "name": "DB", "version": 3, "metadata": {"owner": "ops"},
                "created_at": "1970-01-01T00:00:00Z", "updated_at": "1970-01-01T00:00:01Z",
            })
        );
    }
}
