//! `/v1/alerts` (what is firing, and what fired since a time) and `/v1/alerts/rules` (CRUD
//! and a test message). Operators and admins write, everyone reads; node and capacity rules
//! are admins' only. The rules, their evaluation and delivery are the domain module
//! [`paddock_service::alerts`]; these are its routes and wire types.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use paddock_store::{AlertFiring, AlertRule, FiringFilter, Role, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::wire::json::Json;
use crate::wire::{form_urlencoded_pairs, no_content, rfc3339, truncate, typed_response};
use paddock_service::alerts::deliver;
use paddock_service::alerts::rules::{self, Params};
use paddock_service::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/alerts", get(list_firings))
        .route("/v1/alerts/rules", get(list_rules).post(create_rule))
        .route("/v1/alerts/rules/{id}", get(get_rule).delete(delete_rule))
        .route("/v1/alerts/rules/{id}/test", post(test_rule))
}

/// A new alert rule. `kind` and `format` are read as strings so that a bad one gets the
/// error naming every allowed value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateAlertRule)]
pub(crate) struct RuleBody {
    #[schema(inline, value_type = AlertKind)]
    kind: String,
    /// The kind's parameters (see the operation)
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    params: Option<Map<String, Value>>,
    #[schema(max_length = 2048)]
    url: String,
    #[serde(default)]
    #[schema(inline, value_type = Option<AlertFormat>)]
    format: Option<String>,
    /// Admins only
    #[serde(default)]
    tenant: Option<String>,
}

/// What an alert rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    NodeDown,
    SandboxFailed,
    SandboxOom,
    CreateFailures,
    Capacity,
    Budget,
}

impl AlertKind {
    pub const ALL: [AlertKind; 6] = [
        AlertKind::NodeDown,
        AlertKind::SandboxFailed,
        AlertKind::SandboxOom,
        AlertKind::CreateFailures,
        AlertKind::Capacity,
        AlertKind::Budget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::NodeDown => "node_down",
            AlertKind::SandboxFailed => "sandbox_failed",
            AlertKind::SandboxOom => "sandbox_oom",
            AlertKind::CreateFailures => "create_failures",
            AlertKind::Capacity => "capacity",
            AlertKind::Budget => "budget",
        }
    }

    /// The kind of a stored rule (one of [`rules::KINDS`], checked at create).
    pub fn parse(s: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// How a rule's messages are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertFormat {
    /// The alert as JSON (default).
    Json,
    /// `{"text": ...}` for a Slack incoming webhook.
    Slack,
}

/// Whose resources a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuleScope {
    Tenant,
    Fleet,
}

/// An alert rule.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = AlertRule)]
pub struct RuleView {
    pub id: String,
    pub tenant: String,
    #[schema(inline)]
    pub kind: AlertKind,
    /// The parameters, defaults filled in
    #[schema(value_type = Object)]
    pub params: Value,
    /// In full for operators and admins; scheme and host only for others
    pub url: String,
    #[schema(inline)]
    pub format: AlertFormat,
    #[schema(inline)]
    pub scope: RuleScope,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Value,
    pub created_by: Option<String>,
}

impl RuleView {
    /// A rule as the API shows it. The URL (Slack's carry a secret) only to operators and
    /// admins; others see its scheme and host. A kind the store holds but this server does
    /// not know (never written by it) is an internal error.
    pub fn of(r: &AlertRule, full_url: bool) -> ApiResult<RuleView> {
        let url = if full_url {
            r.url.clone()
        } else {
            reqwest::Url::parse(&r.url)
                .map(|u| format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("")))
                .unwrap_or_else(|_| "…".into())
        };
        let kind = AlertKind::parse(&r.kind).ok_or_else(|| {
            ApiError::Internal(format!("alert rule {} has unknown kind {:?}", r.id, r.kind))
        })?;
        Ok(RuleView {
            id: r.id.clone(),
            tenant: r.tenant.clone(),
            kind,
            params: r.params.clone(),
            url,
            format: if r.format == "slack" {
                AlertFormat::Slack
            } else {
                AlertFormat::Json
            },
            scope: if r.fleet {
                RuleScope::Fleet
            } else {
                RuleScope::Tenant
            },
            created_at: rfc3339(Some(r.created_at)),
            created_by: r.created_by.clone(),
        })
    }
}

/// The alert rules.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuleList {
    /// Oldest first.
    pub rules: Vec<RuleView>,
}

/// Whether an episode is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FiringState {
    Firing,
    Resolved,
}

/// One episode of an alert.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Alert)]
pub struct FiringView {
    pub id: i64,
    pub rule_id: String,
    pub tenant: String,
    /// sandbox:<id>, node:<id>, tenant:<id>, host:<node>:<resource> or fleet:<resource>
    pub subject: String,
    /// <rule_id>/<subject>: the same in every message of one episode
    pub dedup_key: String,
    pub summary: String,
    #[schema(value_type = Object)]
    pub data: Value,
    #[schema(inline)]
    pub state: FiringState,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Value,
    #[schema(value_type = String, format = DateTime)]
    pub last_seen_at: Value,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub resolved_at: Value,
}

impl From<&AlertFiring> for FiringView {
    fn from(f: &AlertFiring) -> FiringView {
        FiringView {
            id: f.id,
            rule_id: f.rule_id.clone(),
            tenant: f.tenant.clone(),
            subject: f.subject.clone(),
            dedup_key: deliver::dedup_key(&f.rule_id, &f.subject),
            summary: f.summary.clone(),
            data: f.data.clone(),
            state: if f.resolved_at.is_some() {
                FiringState::Resolved
            } else {
                FiringState::Firing
            },
            started_at: rfc3339(Some(f.started_at)),
            last_seen_at: rfc3339(Some(f.last_seen_at)),
            resolved_at: rfc3339(f.resolved_at),
        }
    }
}

/// Alert episodes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertList {
    /// Newest first.
    pub alerts: Vec<FiringView>,
}

/// How a test message went: `status` when delivered, `error` when not.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TestDelivery {
    pub delivered: bool,
    /// The webhook's HTTP status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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

/// Alerts firing now, or since a time (viewer)
///
/// Without parameters: the episodes firing now, newest first. `since` (RFC 3339 or ms
/// since the epoch) also lists episodes resolved since then; `state=firing` keeps only open
/// ones, `state=all` every episode. Admins see every tenant's, others their tenant's.
#[utoipa::path(
    get,
    path = "/v1/alerts",
    tag = "alerts",
    operation_id = "list_alerts",
    params(
        ("state" = Option<String>, Query, description = "`firing` or `all`"),
        ("since" = Option<String>, Query, description = "RFC 3339, or milliseconds since the epoch"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100)"),
    ),
    responses(
        (status = 200, description = "Firings", body = AlertList),
        (status = 400, description = "Bad query"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not allowed"),
    )
)]
pub(crate) async fn list_firings(
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
            "since" => since = Some(crate::wire::parse_time("since", &v)?),
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
    let list = AlertList {
        alerts: firings.iter().map(FiringView::from).collect(),
    };
    Ok(typed_response(StatusCode::OK, &list))
}

/// List alert rules (viewer)
///
/// The caller's tenant's rules (every rule for admins), oldest first.
#[utoipa::path(
    get,
    path = "/v1/alerts/rules",
    tag = "alerts",
    operation_id = "list_alert_rules",
    responses(
        (status = 200, description = "Rules", body = RuleList),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not allowed"),
    )
)]
pub(crate) async fn list_rules(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Response> {
    let tenant = (!caller.is_admin()).then(|| caller.tenant().to_owned());
    let all = state.store.list_alert_rules(tenant.as_deref()).await?;
    let full = may_see_urls(&caller);
    let rules = all
        .iter()
        .map(|r| RuleView::of(r, full))
        .collect::<ApiResult<_>>()?;
    Ok(typed_response(StatusCode::OK, &RuleList { rules }))
}

/// Get an alert rule (viewer)
#[utoipa::path(
    get,
    path = "/v1/alerts/rules/{id}",
    tag = "alerts",
    operation_id = "get_alert_rule",
    params(("id" = String, Path, description = "Rule id")),
    responses(
        (status = 200, description = "The rule", body = RuleView),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not allowed"),
        (status = 404, description = "No such rule"),
    )
)]
pub(crate) async fn get_rule(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let r = rule_for(&state, &caller, &id).await?;
    Ok(typed_response(
        StatusCode::OK,
        &RuleView::of(&r, may_see_urls(&caller))?,
    ))
}

/// Create an alert rule (operator)
///
/// Kinds and their `params`: `node_down` (`degraded`: bool, default true; admins only),
/// `sandbox_failed` and `sandbox_oom` (`quiet_secs` 1..86400, default 300: resolves after
/// that long without another), `create_failures` (`count` 1..10000, required;
/// `window_secs` 10..86400, default 300), `capacity` (`resource`: memory, disk or
/// sandboxes; `threshold`: a percentage above 0 and below 100, or for sandboxes a count
/// from 1; `scope`: host or fleet; admins only), `budget` (`level`: warning or exceeded,
/// default warning). `url`: http or https, at most 2048 bytes, not a private address
/// unless the server allows private webhooks. `format`: json (default) or slack
/// (`{"text": ...}`). `tenant`: admins only. At most 100 rules per tenant. Any bad field is
/// a 400 naming it and stores nothing.
#[utoipa::path(
    post,
    path = "/v1/alerts/rules",
    tag = "alerts",
    operation_id = "create_alert_rule",
    request_body = RuleBody,
    responses(
        (status = 201, description = "The rule", body = RuleView),
        (status = 400, description = "A bad field"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not allowed, or a fleet kind without admin"),
    )
)]
pub(crate) async fn create_rule(
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
    Ok(typed_response(
        StatusCode::CREATED,
        &RuleView::of(&r, true)?,
    ))
}

/// Delete an alert rule and its firings (operator; fleet rules admin)
#[utoipa::path(
    delete,
    path = "/v1/alerts/rules/{id}",
    tag = "alerts",
    operation_id = "delete_alert_rule",
    params(("id" = String, Path, description = "Rule id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not allowed"),
        (status = 404, description = "No such rule"),
    )
)]
pub(crate) async fn delete_rule(
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

/// Send a test message to a rule's webhook (operator)
///
/// One attempt, no retry, nothing stored; the message has status `test`.
#[utoipa::path(
    post,
    path = "/v1/alerts/rules/{id}/test",
    tag = "alerts",
    operation_id = "test_alert_rule",
    params(("id" = String, Path, description = "Rule id")),
    responses(
        (status = 200, description = "How the attempt went", body = TestDelivery),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not allowed"),
        (status = 404, description = "No such rule"),
    )
)]
pub(crate) async fn test_rule(
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
    let result = match out {
        Ok(status) => TestDelivery {
            delivered: true,
            status: Some(status),
            error: None,
        },
        Err(e) => TestDelivery {
            delivered: false,
            status: None,
            error: Some(e),
        },
    };
    Ok(typed_response(StatusCode::OK, &result))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The closed kinds are the rule kinds the server checks, and a rule's wire form is the
    /// `json!` body it replaced.
    #[test]
    fn rules_and_firings_serialise_as_before() {
        assert_eq!(AlertKind::ALL.map(AlertKind::as_str), rules::KINDS);
        let r = AlertRule {
            id: "alr-1".into(),
            tenant: "t".into(),
            fleet: true,
            kind: "capacity".into(),
            params: json!({"resource": "disk", "threshold": 90.0, "scope": "host"}),
            url: "https://hooks.example.com/secret".into(),
            format: "slack".into(),
            created_at: 0,
            created_by: None,
        };
        assert_eq!(
            serde_json::to_value(RuleView::of(&r, false).unwrap()).unwrap(),
            json!({
                "id": "alr-1", "tenant": "t", "kind": "capacity",
                "params": {"resource": "disk", "threshold": 90.0, "scope": "host"},
                "url": "https://hooks.example.com/…", "format": "slack", "scope": "fleet",
                "created_at": "1970-01-01T00:00:00Z", "created_by": null,
            })
        );
        let f = AlertFiring {
            id: 7,
            rule_id: "alr-1".into(),
            tenant: "t".into(),
            subject: "host:n1:disk".into(),
            summary: "disk at 91%".into(),
            data: json!({}),
            started_at: 0,
            last_seen_at: 1_000,
            resolved_at: None,
        };
        let v = serde_json::to_value(FiringView::from(&f)).unwrap();
        assert_eq!(v["state"], "firing");
        assert_eq!(v["dedup_key"], deliver::dedup_key("alr-1", "host:n1:disk"));
        assert!(v["resolved_at"].is_null());
        let sent = TestDelivery {
            delivered: true,
            status: Some(200),
            error: None,
        };
        assert_eq!(
            serde_json::to_value(sent).unwrap(),
            json!({"delivered": true, "status": 200})
        );
    }
}
