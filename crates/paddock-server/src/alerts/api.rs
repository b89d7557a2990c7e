//! `/v1/alerts` (what is firing, and what fired since a time) and `/v1/alerts/rules` (CRUD
//! and a test message). Operators and admins write, everyone reads; node and capacity rules
//! are admins' only.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use paddock_store::{AlertFiring, AlertRule, FiringFilter, Role, now_ms};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::deliver;
use super::rules::{self, Params};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::wire::json::Json;
use crate::wire::{form_urlencoded_pairs, json_response, no_content, rfc3339, truncate};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/alerts", get(list_firings))
        .route("/v1/alerts/rules", get(list_rules).post(create_rule))
        .route("/v1/alerts/rules/{id}", get(get_rule).delete(delete_rule))
        .route("/v1/alerts/rules/{id}/test", post(test_rule))
}

/// A new rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    kind: String,
    #[serde(default)]
    params: Option<Map<String, Value>>,
    url: String,
    #[serde(default)]
    format: Option<String>,
    /// Admins only: the tenant the rule watches (default: the caller's).
    #[serde(default)]
    tenant: Option<String>,
}

fn firing_json(f: &AlertFiring) -> Value {
    json!({
        "id": f.id,
        "rule_id": f.rule_id,
        "tenant": f.tenant,
        "subject": f.subject,
        "dedup_key": deliver::dedup_key(&f.rule_id, &f.subject),
        "summary": f.summary,
        "data": f.data,
        "state": if f.resolved_at.is_some() { "resolved" } else { "firing" },
        "started_at": rfc3339(Some(f.started_at)),
        "last_seen_at": rfc3339(Some(f.last_seen_at)),
        "resolved_at": rfc3339(f.resolved_at),
    })
}

fn rule_not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("alert rule {} not found", truncate(id, 64)))
}

/// The rule `id` if `caller` may see it (its tenant's, or any for admins).
async fn rule_for(state: &AppState, caller: &Caller, id: &str) -> ApiResult<AlertRule> {
    match state.store.get_alert_rule(id).await? {
        Some(r) if caller.is_admin() || r.tenant == caller.tenant() => Ok(r),
        _ => Err(rule_not_found(id)),
    }
}

fn may_see_urls(c: &Caller) -> bool {
    c.key.role >= Role::Operator
}

/// `GET /v1/alerts[?state=firing|all][&since=T][&limit=N]`: firings, newest first. The
/// default is what is firing now; `since` (RFC 3339 or ms) also lists episodes resolved
/// since then.
async fn list_firings(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let (mut open_only, mut since, mut limit) = (None, None, 100u32);
    for (k, v) in form_urlencoded_pairs(q.as_deref().unwrap_or("")) {
        match k.as_str() {
            "state" => {
                open_only = Some(match v.as_str() {
                    "firing" => true,
                    "all" => false,
                    _ => {
                        return Err(ApiError::BadRequest(format!(
                            "state {:?} must be firing or all",
                            truncate(&v, 32)
                        )));
                    }
                })
            }
            "since" => since = Some(crate::cost::parse_time("since", &v)?),
            "limit" => limit = crate::wire::parse_limit(&v)?,
            other => return Err(crate::wire::unknown_param(other)),
        }
    }
    let f = FiringFilter {
        tenant: (!caller.is_admin()).then(|| caller.tenant().to_owned()),
        // With `since`, resolved episodes too unless `state=firing` says otherwise.
        open_only: open_only.unwrap_or(since.is_none()),
        since,
        limit,
    };
    let firings = state.store.list_firings(&f).await?;
    Ok(json_response(
        StatusCode::OK,
        json!({ "alerts": firings.iter().map(firing_json).collect::<Vec<_>>() }),
    ))
}

async fn list_rules(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Response> {
    let tenant = (!caller.is_admin()).then(|| caller.tenant().to_owned());
    let all = state.store.list_alert_rules(tenant.as_deref()).await?;
    let full = may_see_urls(&caller);
    Ok(json_response(
        StatusCode::OK,
        json!({ "rules": all.iter().map(|r| rules::rule_json(r, full)).collect::<Vec<_>>() }),
    ))
}

async fn get_rule(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let r = rule_for(&state, &caller, &id).await?;
    Ok(json_response(
        StatusCode::OK,
        rules::rule_json(&r, may_see_urls(&caller)),
    ))
}

/// `POST /v1/alerts/rules`: checks everything (kind, parameters, URL, format, tenant, the
/// per-tenant limit) before storing; a bad rule is a 400 naming what is wrong and stores
/// nothing.
async fn create_rule(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<RuleBody>,
) -> ApiResult<Response> {
    let res = async {
        let params = Params::parse(&body.kind, &body.params.clone().unwrap_or_default())
            .map_err(ApiError::BadRequest)?;
        let format = rules::parse_format(body.format.as_deref()).map_err(ApiError::BadRequest)?;
        if body.url.len() > rules::MAX_URL_LEN {
            return Err(ApiError::BadRequest(format!(
                "url is longer than {} bytes",
                rules::MAX_URL_LEN
            )));
        }
        state
            .webhooks
            .check_url(&body.url)
            .await
            .map_err(ApiError::BadRequest)?;
        let fleet = rules::is_fleet_kind(&body.kind);
        if fleet && !caller.is_admin() {
            return Err(ApiError::Forbidden(format!(
                "{} rules watch the whole host or fleet: admins only",
                body.kind
            )));
        }
        let tenant = match &body.tenant {
            None => caller.tenant().to_owned(),
            Some(t) if t == caller.tenant() => t.clone(),
            Some(t) if caller.is_admin() => {
                if state.store.get_tenant(t).await?.is_none() {
                    return Err(ApiError::BadRequest(format!(
                        "tenant {} does not exist",
                        truncate(t, 64)
                    )));
                }
                t.clone()
            }
            Some(_) => {
                return Err(ApiError::Forbidden(
                    "tenant names another tenant; only admins may".into(),
                ));
            }
        };
        if state.store.list_alert_rules(Some(&tenant)).await?.len() >= rules::MAX_RULES_PER_TENANT {
            return Err(ApiError::BadRequest(format!(
                "a tenant has at most {} alert rules",
                rules::MAX_RULES_PER_TENANT
            )));
        }
        let r = AlertRule {
            id: format!("alr-{}", paddock_core::SandboxId::random()),
            tenant,
            fleet,
            kind: body.kind.clone(),
            params: params.json(),
            url: body.url.clone(),
            format: format.to_owned(),
            created_at: now_ms(),
            created_by: Some(caller.key.id.clone()),
        };
        state.store.insert_alert_rule(&r).await?;
        Ok(r)
    }
    .await;
    let r = state
        .audited(
            &caller,
            "alert.rule.create",
            None,
            Some(format!("kind={}", truncate(&body.kind, 32))),
            res,
        )
        .await?;
    // Conditions that already hold fire now, not at the next tick.
    state.alerts.wake.notify_one();
    Ok(json_response(
        StatusCode::CREATED,
        rules::rule_json(&r, true),
    ))
}

async fn delete_rule(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let res = async {
        let r = rule_for(&state, &caller, &id).await?;
        if r.fleet && !caller.is_admin() {
            return Err(ApiError::Forbidden(format!(
                "{} rules are admins' only",
                r.kind
            )));
        }
        if !state.store.delete_alert_rule(&id).await? {
            return Err(rule_not_found(&id));
        }
        Ok(())
    }
    .await;
    state
        .audited(
            &caller,
            "alert.rule.delete",
            None,
            Some(format!("rule={}", truncate(&id, 64))),
            res,
        )
        .await?;
    Ok(no_content())
}

/// `POST /v1/alerts/rules/{id}/test`: one attempt of a `test` message to the rule's webhook,
/// answered with how it went (no retry, nothing stored).
async fn test_rule(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let r = rule_for(&state, &caller, &id).await?;
    let now = now_ms();
    let f = AlertFiring {
        id: 0,
        rule_id: r.id.clone(),
        tenant: r.tenant.clone(),
        subject: "test".into(),
        summary: format!("test message of alert rule {} ({})", r.id, r.kind),
        data: json!({}),
        started_at: now,
        last_seen_at: now,
        resolved_at: None,
    };
    let body = deliver::body(&r, &f, deliver::Status::Test).to_string();
    let out = state.alerts.delivery.attempt(&r.url, &body).await;
    state
        .audit(
            Some(&caller),
            "alert.rule.test",
            None,
            if out.is_ok() { "ok" } else { "undelivered" },
            Some(format!("rule={}", truncate(&id, 64))),
        )
        .await;
    Ok(json_response(
        StatusCode::OK,
        match out {
            Ok(status) => json!({"delivered": true, "status": status}),
            Err(e) => json!({"delivered": false, "error": e}),
        },
    ))
}
