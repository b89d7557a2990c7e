//! Admin routes: API keys (`/v1/keys`) and the audit trail (`/v1/audit`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get};
use paddock_store::{ApiKey, AuditFilter, Role, now_ms};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Json;
use super::session::RoleWire;
use crate::auth::{Admin, new_key_in};
use crate::error::{ApiError, ApiResult};
use crate::wire::form_urlencoded_pairs;
use crate::wire::{no_content, rfc3339, typed_response};
use paddock_service::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/keys", get(list_keys).post(create_key))
        .route("/v1/keys/{id}", delete(revoke_key))
        .route("/v1/audit", get(audit))
}

/// A role as a key may be created with: `user` is the old name of `developer`.
#[allow(dead_code)] // A schema only: the request reads the role as text (`Role::parse`).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NewRoleWire {
    Admin,
    Operator,
    Developer,
    Viewer,
    User,
}

/// `POST /v1/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateKey)]
pub(crate) struct CreateKeyBody {
    /// 1 to 128 bytes
    #[schema(min_length = 1, max_length = 128)]
    name: String,
    /// See docs/roles.md; `user` is the old name of `developer`
    #[serde(default)]
    #[schema(inline, value_type = Option<NewRoleWire>, nullable = false, default = "developer")]
    role: Option<String>,
    /// Existing tenant id; default: a new tenant named after the key
    #[serde(default)]
    #[schema(nullable = false)]
    tenant: Option<String>,
    #[serde(default)]
    #[schema(nullable = false)]
    max_sandboxes: Option<u32>,
    /// Seconds until the key stops working (positive)
    #[serde(default)]
    #[schema(nullable = false, minimum = 1)]
    expires_in: Option<u64>,
    #[serde(default)]
    #[schema(nullable = false)]
    webhook_url: Option<String>,
}

/// An API key (never its hash; its secret only in the create response).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = ApiKey)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    #[schema(inline)]
    pub role: RoleWire,
    pub tenant: String,
    /// The first characters of the secret
    pub prefix: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: serde_json::Value,
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub expires_at: serde_json::Value,
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub revoked_at: serde_json::Value,
    #[schema(required = true)]
    pub max_sandboxes: Option<u32>,
    #[schema(required = true)]
    pub webhook_url: Option<String>,
    /// The secret, `pdk_` and 40 hex digits; only in the create response
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub key: Option<String>,
    /// The same secret as `e2b_<hex>`, the form E2B SDKs accept (either form
    /// authenticates); only in the create response
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub e2b_key: Option<Option<String>>,
}

impl KeyView {
    /// The wire form of a key, without its secret.
    fn of(k: &ApiKey) -> KeyView {
        KeyView {
            id: k.id.clone(),
            name: k.name.clone(),
            role: k.role.into(),
            tenant: k.tenant.clone(),
            prefix: k.prefix.clone(),
            created_at: rfc3339(Some(k.created_at)),
            expires_at: rfc3339(k.expires_at),
            revoked_at: rfc3339(k.revoked_at),
            max_sandboxes: k.max_sandboxes,
            webhook_url: k.webhook_url.clone(),
            key: None,
            e2b_key: None,
        }
    }
}

/// The API keys.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// One entry of the audit trail.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = AuditEntry)]
pub struct AuditView {
    pub id: i64,
    #[schema(value_type = String, format = DateTime)]
    pub at: serde_json::Value,
    /// A key id, or `system` for the server's own actions
    pub actor: String,
    #[schema(required = true)]
    pub tenant: Option<String>,
    /// Such as `sandbox.create`, `exec`, `files.write`, `key.create`
    pub action: String,
    #[schema(required = true)]
    pub sandbox_id: Option<String>,
    /// `ok`, or the error code
    pub outcome: String,
    /// Short, secret-free detail (command line, path)
    #[schema(required = true)]
    pub detail: Option<String>,
}

/// A page of the audit trail, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditView>,
}

/// The query of `GET /v1/audit`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct AuditQuery {
    /// Only this sandbox
    sandbox_id: Option<String>,
    /// Only this key id or `system`
    actor: Option<String>,
    /// Only this tenant
    tenant: Option<String>,
    /// Only entries with a smaller id
    before: Option<i64>,
    /// Page size (1-1000, default 100)
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The path of `DELETE /v1/keys/{id}`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct KeyPath {
    /// Key id
    id: String,
}

/// Creates a key (and its tenant, if new). Used by the API and at first start.
pub async fn new_key(
    state: &AppState,
    name: &str,
    role: Role,
    tenant: Option<&str>,
    max_sandboxes: Option<u32>,
    expires_at: Option<i64>,
    webhook_url: Option<String>,
) -> ApiResult<(ApiKey, String)> {
    new_key_in(
        state.store.as_ref(),
        name,
        role,
        tenant,
        max_sandboxes,
        expires_at,
        webhook_url,
    )
    .await
    .map_err(ApiError::from)
}

/// Create an API key (admin)
///
/// The secret `key` is in this response only.
#[utoipa::path(
    post,
    path = "/v1/keys",
    operation_id = "create_key",
    tag = "admin",
    request_body = CreateKeyBody,
    responses(
        (status = 201, description = "The key with its secret", body = KeyView),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not an admin key"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn create_key(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Json(body): Json<CreateKeyBody>,
) -> ApiResult<Response> {
    let res = async {
        if body.name.is_empty() || body.name.len() > 128 {
            return Err(ApiError::BadRequest("name must be 1 to 128 bytes".into()));
        }
        let role = match body.role.as_deref() {
            None => Role::Developer,
            Some(r) => Role::parse(r).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "unknown role {r:?}: expected admin, operator, developer or viewer"
                ))
            })?,
        };
        if let Some(url) = &body.webhook_url {
            state
                .webhooks
                .check_url(url)
                .await
                .map_err(ApiError::BadRequest)?;
        }
        let expires_at = match body.expires_in {
            Some(0) => return Err(ApiError::BadRequest("expires_in must be positive".into())),
            Some(s) => Some(
                now_ms().saturating_add(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)),
            ),
            None => None,
        };
        new_key(
            &state,
            &body.name,
            role,
            body.tenant.as_deref(),
            body.max_sandboxes,
            expires_at,
            body.webhook_url.clone(),
        )
        .await
    }
    .await;
    let detail = Some(format!("name={}", body.name));
    let (k, secret) = state
        .audited(&caller, "key.create", None, detail, res)
        .await?;
    let v = KeyView {
        e2b_key: Some(crate::auth::e2b_form(&secret)),
        key: Some(secret),
        ..KeyView::of(&k)
    };
    Ok(typed_response(StatusCode::CREATED, &v))
}

/// List API keys (admin)
#[utoipa::path(
    get,
    path = "/v1/keys",
    operation_id = "list_keys",
    tag = "admin",
    responses(
        (status = 200, description = "Keys", body = KeyList),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not an admin key"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn list_keys(
    State(state): State<Arc<AppState>>,
    Admin(_): Admin,
) -> ApiResult<Response> {
    let keys = state.store.list_keys(None).await?;
    let keys = keys.iter().map(KeyView::of).collect();
    Ok(typed_response(StatusCode::OK, &KeyList { keys }))
}

/// Revoke an API key (admin)
#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    operation_id = "revoke_key",
    tag = "admin",
    params(KeyPath),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not an admin key"),
        (status = 404, description = "No such key"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn revoke_key(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let res = state.store.revoke_key(&id, now_ms()).await;
    // Refused from now on, not only once the cached copy ages out (`paddock_service::hotpath`).
    state.keys.clear();
    let res = match res {
        Ok(true) => Ok(()),
        Ok(false) => Err(ApiError::NotFound("key not found".into())),
        Err(e) => Err(e.into()),
    };
    state
        .audited(
            &caller,
            "key.revoke",
            None,
            Some(format!("key={}", paddock_service::state::truncate(&id, 64))),
            res,
        )
        .await?;
    Ok(no_content())
}

/// Audit trail, newest first (admin)
///
/// `GET /v1/audit[?sandbox_id=][&actor=][&tenant=][&before=ID][&limit=N]`.
#[utoipa::path(
    get,
    path = "/v1/audit",
    operation_id = "audit",
    tag = "admin",
    params(AuditQuery),
    responses(
        (status = 200, description = "Entries", body = AuditList),
        (status = 400, description = "Bad input"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not an admin key"),
        (status = 429, description = "Rate limited"),
    )
)]
pub(crate) async fn audit(
    State(state): State<Arc<AppState>>,
    Admin(_): Admin,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut f = AuditFilter {
        limit: Some(100),
        ..Default::default()
    };
    for (k, v) in form_urlencoded_pairs(q.as_deref().unwrap_or("")) {
        match k.as_str() {
            "sandbox_id" => f.sandbox_id = Some(v),
            "actor" => f.actor = Some(v),
            "tenant" => f.tenant = Some(v),
            "before" => {
                f.before_id = Some(
                    v.parse()
                        .map_err(|_| ApiError::BadRequest(format!("before {v:?} is not an id")))?,
                )
            }
            "limit" => f.limit = Some(crate::wire::parse_limit(&v)?),
            other => return Err(crate::wire::unknown_param(other)),
        }
    }
    // Entries written behind answers (an exec's) are in before the listing.
    state.behind.settled().await;
    let rows = state.store.list_audit(&f).await?;
    let entries = rows
        .iter()
        .map(|a| AuditView {
            id: a.id,
            at: rfc3339(Some(a.at)),
            actor: a.actor.clone(),
            tenant: a.tenant.clone(),
            action: a.action.clone(),
            sandbox_id: a.sandbox_id.clone(),
            outcome: a.outcome.clone(),
            detail: a.detail.clone(),
        })
        .collect();
    Ok(typed_response(StatusCode::OK, &AuditList { entries }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Keys and audit entries are the `json!` bodies they replaced: null dates and limits
    /// kept, the secret in both forms only when created.
    #[test]
    fn keys_and_audit_entries_serialise_as_before() {
        let k = ApiKey {
            id: "key_1".into(),
            tenant: "t".into(),
            name: "ci".into(),
            role: paddock_store::Role::Developer,
            hash: "h".into(),
            prefix: "pdk_ab".into(),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            max_sandboxes: None,
            webhook_url: None,
        };
        let listed = json!({"id": "key_1", "name": "ci", "role": "developer", "tenant": "t",
            "prefix": "pdk_ab", "created_at": "1970-01-01T00:00:00Z", "expires_at": null,
            "revoked_at": null, "max_sandboxes": null, "webhook_url": null});
        assert_eq!(serde_json::to_value(KeyView::of(&k)).unwrap(), listed);
        let created = KeyView {
            key: Some("pdk_x".into()),
            e2b_key: Some(Some("e2b_x".into())),
            ..KeyView::of(&k)
        };
        let mut with_secret = listed;
        with_secret["key"] = "pdk_x".into();
        with_secret["e2b_key"] = "e2b_x".into();
        assert_eq!(serde_json::to_value(created).unwrap(), with_secret);
        // A secret without an E2B form still names the field, as null.
        let created = KeyView {
            key: Some("pdk_x".into()),
            e2b_key: Some(None),
            ..KeyView::of(&k)
        };
        with_secret["e2b_key"] = serde_json::Value::Null;
        assert_eq!(serde_json::to_value(created).unwrap(), with_secret);
        let a = AuditView {
            id: 3,
            at: rfc3339(Some(1000)),
            actor: "system".into(),
            tenant: None,
            action: "exec".into(),
            sandbox_id: None,
            outcome: "ok".into(),
            detail: None,
        };
        assert_eq!(
            serde_json::to_value(AuditList { entries: vec![a] }).unwrap(),
            json!({"entries": [{"id": 3, "at": "1970-01-01T00:00:01Z", "actor": "system",
                "tenant": null, "action": "exec", "sandbox_id": null, "outcome": "ok",
                "detail": null}]})
        );
    }
}
