//! Admin routes: API keys (`/v1/keys`) and the audit trail (`/v1/audit`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get};
use paddock_store::{ApiKey, AuditFilter, Role, now_ms};
use serde::Deserialize;

use super::Json;
use crate::auth::{Admin, new_key_in};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::wire::form_urlencoded_pairs;
use crate::wire::{json_response, no_content, rfc3339};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/keys", get(list_keys).post(create_key))
        .route("/v1/keys/{id}", delete(revoke_key))
        .route("/v1/audit", get(audit))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyBody {
    name: String,
    #[serde(default)]
    role: Option<String>,
    /// Existing tenant id. Without it, a new tenant named after the key is created.
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    max_sandboxes: Option<u32>,
    /// Seconds until the key stops working.
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    webhook_url: Option<String>,
}

/// The wire form of a key (never its secret or hash).
fn key_json(k: &ApiKey) -> serde_json::Value {
    serde_json::json!({
        "id": k.id,
        "name": k.name,
        "role": k.role.as_str(),
        "tenant": k.tenant,
        "prefix": k.prefix,
        "created_at": rfc3339(Some(k.created_at)),
        "expires_at": rfc3339(k.expires_at),
        "revoked_at": rfc3339(k.revoked_at),
        "max_sandboxes": k.max_sandboxes,
        "webhook_url": k.webhook_url,
    })
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
}

async fn create_key(
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
    let mut v = key_json(&k);
    v["e2b_key"] = crate::auth::e2b_form(&secret).into();
    v["key"] = secret.into();
    Ok(json_response(StatusCode::CREATED, v))
}

async fn list_keys(State(state): State<Arc<AppState>>, Admin(_): Admin) -> ApiResult<Response> {
    let keys = state.store.list_keys(None).await?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::json!({ "keys": keys.iter().map(key_json).collect::<Vec<_>>() }),
    ))
}

async fn revoke_key(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let res = state.store.revoke_key(&id, now_ms()).await;
    // Refused from now on, not only once the cached copy ages out (`crate::hotpath`).
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
            Some(format!("key={}", crate::state::truncate(&id, 64))),
            res,
        )
        .await?;
    Ok(no_content())
}

/// `GET /v1/audit[?sandbox_id=][&actor=][&before=ID][&limit=N]`, newest first.
async fn audit(
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
    Ok(json_response(
        StatusCode::OK,
        serde_json::json!({ "entries": rows.iter().map(|a| serde_json::json!({
            "id": a.id,
            "at": rfc3339(Some(a.at)),
            "actor": a.actor,
            "tenant": a.tenant,
            "action": a.action,
            "sandbox_id": a.sandbox_id,
            "outcome": a.outcome,
            "detail": a.detail,
        })).collect::<Vec<_>>() }),
    ))
}
