//! The cost routes (`docs/cost.md`): `GET /v1/usage` (the report), `GET|PUT
//! /v1/usage/prices`, `GET /v1/usage/budgets` and `PUT /v1/usage/budgets/{tenant}`. Query
//! parsing, who may see what, and the audit are here; metering, prices, reports and budgets
//! are the domain module [`paddock_service::cost`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, put};
use paddock_store::{Role, UsageFilter, now_ms};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::wire::{form_urlencoded_pairs, parse_time, typed_response};
use paddock_service::cost::budgets::{self, BudgetList, TenantBudget};
use paddock_service::cost::{GroupBy, HOUR_MS, MAX_RANGE_HOURS};
use paddock_service::cost::{Prices, UsageReport};
use paddock_service::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/usage", get(report))
        .route("/v1/usage/prices", get(get_prices).put(put_prices))
        .route("/v1/usage/budgets", get(list_budgets))
        .route("/v1/usage/budgets/{tenant}", put(set_budget))
}

/// The price table (viewer)
#[utoipa::path(
    get,
    path = "/v1/usage/prices",
    tag = "cost",
    operation_id = "get_prices",
    responses(
        (status = 200, description = "Every price (0 when unset)", body = Prices),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not allowed"),
    )
)]
pub(crate) async fn get_prices(
    State(state): State<Arc<AppState>>,
    _c: Caller,
) -> ApiResult<Response> {
    Ok(typed_response(
        StatusCode::OK,
        &paddock_service::cost::prices(&state),
    ))
}

/// Replace the price table (admin)
///
/// Every entry a finite number of at least 0; entries left out are 0. An invalid table is a
/// 400 naming the bad entry and changes nothing.
#[utoipa::path(
    put,
    path = "/v1/usage/prices",
    tag = "cost",
    operation_id = "put_prices",
    request_body = Prices,
    responses(
        (status = 200, description = "The new table", body = Prices),
        (status = 400, description = "A bad entry"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not an admin"),
        (status = 413, description = "Larger than 4096 bytes"),
    )
)]
pub(crate) async fn put_prices(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<Response> {
    let res = paddock_service::cost::set_prices(&state, &body);
    let p = state
        .audited(&caller, "usage.prices", None, None, res)
        .await?;
    Ok(typed_response(StatusCode::OK, &p))
}

/// Usage and cost over a time range (viewer)
///
/// Summed over whole UTC hours from `from` (default 24 h before `to`) to `to` (default
/// now), at most 366 days, grouped by sandbox, key, tenant or template, each group priced
/// by the price table. Admins see every tenant (`tenant` narrows), operators and viewers
/// their tenant, developers their own key's sandboxes. CPU-seconds, memory and disk
/// GiB-hours (the layer's referenced bytes) and egress bytes (sent out of the sandbox's
/// link) are metered at every sampling round (`metered` lists them).
#[utoipa::path(
    get,
    path = "/v1/usage",
    tag = "cost",
    operation_id = "usage_report",
    params(
        ("from" = Option<String>, Query, description = "RFC 3339, or milliseconds since the epoch"),
        ("to" = Option<String>, Query, description = "RFC 3339, or milliseconds since the epoch"),
        ("by" = Option<paddock_service::cost::GroupBy>, Query, description = "What to group by (default sandbox)"),
        ("tenant" = Option<String>, Query, description = "Admins only"),
    ),
    responses(
        (status = 200, description = "The report", body = UsageReport),
        (status = 400, description = "Bad query"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not allowed"),
    )
)]
pub(crate) async fn report(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let (mut from, mut to, mut by, mut tenant) = (None, None, GroupBy::Sandbox, None);
    for (k, v) in form_urlencoded_pairs(q.as_deref().unwrap_or("")) {
        match k.as_str() {
            "from" => from = Some(parse_time("from", &v)?),
            "to" => to = Some(parse_time("to", &v)?),
            "by" => by = GroupBy::parse(&v)?,
            "tenant" => tenant = Some(v),
            other => return Err(crate::wire::unknown_param(other)),
        }
    }
    let to = to.unwrap_or_else(now_ms);
    let from = from.unwrap_or(to - 24 * HOUR_MS);
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    // Whole hours: the hour holding `from` up to and including the hour holding `to`.
    let (from_hour, to_hour) = (from.div_euclid(HOUR_MS), to.div_euclid(HOUR_MS) + 1);
    if to_hour - from_hour > MAX_RANGE_HOURS {
        return Err(ApiError::BadRequest(format!(
            "the range is longer than {} days",
            MAX_RANGE_HOURS / 24
        )));
    }
    let mut f = UsageFilter {
        from_hour,
        to_hour,
        ..Default::default()
    };
    if caller.is_admin() {
        f.tenant = tenant;
    } else {
        if tenant.is_some_and(|t| t != caller.tenant()) {
            return Err(ApiError::BadRequest(
                "tenant= names another tenant; only admins may".into(),
            ));
        }
        f.tenant = Some(caller.tenant().to_owned());
    }
    if caller.key.role == Role::Developer {
        f.key_id = Some(caller.key.id.clone());
    }
    let report = paddock_service::cost::usage_report(&state, &f, by).await?;
    Ok(typed_response(StatusCode::OK, &report))
}

/// Monthly budgets and what was spent this month (viewer; admins see every tenant)
#[utoipa::path(
    get,
    path = "/v1/usage/budgets",
    tag = "cost",
    operation_id = "list_budgets",
    responses(
        (status = 200, description = "Every budget the caller may see, by tenant", body = paddock_service::cost::budgets::BudgetList),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not allowed"),
    )
)]
pub(crate) async fn list_budgets(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Response> {
    let budgets = budgets::views(&state, |t| caller.is_admin() || t == caller.tenant()).await?;
    Ok(typed_response(StatusCode::OK, &BudgetList { budgets }))
}

// Described for the document only: the service reads the body by hand (`budgets::parse`),
// which names the bad field.
/// A budget as set: `warn_at` defaults to 0.8; a bad field is a 400 naming it.
#[allow(dead_code)]
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetBudget {
    #[schema(minimum = 0)]
    amount: f64,
    #[schema(exclusive_minimum = 0, maximum = 1, default = 0.8)]
    warn_at: Option<f64>,
}

/// Set a tenant's monthly budget (admin)
///
/// Spending `warn_at` of it emits `budget_warning`, all of it `budget_exceeded`; then
/// creates of the tenant are refused with 429 `quota_exceeded` until the month ends or the
/// budget is raised. An invalid body is a 400 naming the field and changes nothing.
#[utoipa::path(
    put,
    path = "/v1/usage/budgets/{tenant}",
    tag = "cost",
    operation_id = "set_budget",
    params(("tenant" = String, Path, description = "The tenant")),
    request_body = SetBudget,
    responses(
        (status = 200, description = "The budget", body = paddock_service::cost::budgets::TenantBudget),
        (status = 400, description = "A bad field"),
        (status = 401, description = "No or a bad key"),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such tenant"),
        (status = 413, description = "Larger than 1024 bytes"),
    )
)]
pub(crate) async fn set_budget(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(tenant): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let res = budgets::set(&state, &tenant, &body).await;
    let b = state
        .audited(
            &caller,
            "usage.budget",
            None,
            Some(format!(
                "tenant={}",
                paddock_service::state::truncate(&tenant, 64)
            )),
            res,
        )
        .await?;
    let body = TenantBudget {
        tenant,
        amount: b.amount,
        warn_at: b.warn_at,
    };
    Ok(typed_response(StatusCode::OK, &body))
}
