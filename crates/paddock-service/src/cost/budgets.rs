//! Budgets per tenant (`docs/cost.md`): an amount per UTC month at the current prices.
//! Crossing `warn_at` of it emits `budget_warning`, reaching it `budget_exceeded` (each once
//! per tenant and month, recorded in the store so a restart does not announce it again;
//! raising the budget above what was spent forgets the crossing); from then on creates of
//! the tenant are refused with 429 `quota_exceeded`. Kept in `<data>/budgets.json`.
//! `budget` alert rules (`crate::alerts`) fire on the same levels.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::event_kind::EventKind;
use crate::state::AppState;

/// A tenant's monthly budget (its wire form, and its entry in `budgets.json`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Budget {
    /// Per UTC month, at the current prices.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub amount: f64,
    /// The fraction of `amount` that warns (0 < warn_at <= 1, default 0.8).
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0, maximum = 1))]
    pub warn_at: f64,
}

/// A tenant's budget and what it spent this month.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BudgetView {
    pub amount: f64,
    pub warn_at: f64,
    /// Spent this UTC month at the current prices.
    pub spent: f64,
}

/// Every budget the caller may see, by tenant.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BudgetList {
    pub budgets: BTreeMap<String, BudgetView>,
}

/// A tenant's budget, as set.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantBudget {
    pub tenant: String,
    pub amount: f64,
    pub warn_at: f64,
}

/// Largest budget body.
pub(crate) const MAX_BODY: usize = 1024;

fn path(state: &AppState) -> std::path::PathBuf {
    state.cfg.data_dir.join("budgets.json")
}

/// Every budget, by tenant.
pub fn all(state: &AppState) -> BTreeMap<String, Budget> {
    let Ok(b) = std::fs::read(path(state)) else {
        return BTreeMap::new();
    };
    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
    let mut out = BTreeMap::new();
    for (t, b) in v.as_object().into_iter().flatten() {
        if let (Some(amount), Some(warn_at)) = (b["amount"].as_f64(), b["warn_at"].as_f64()) {
            out.insert(t.clone(), Budget { amount, warn_at });
        }
    }
    out
}

/// Parses `{"amount": N, "warn_at"?: F}`, naming the bad field.
pub fn parse(body: &[u8]) -> Result<Budget, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("budget is not JSON: {e}"))?;
    let o = v.as_object().ok_or("budget must be a JSON object")?;
    if let Some(k) = o.keys().find(|k| *k != "amount" && *k != "warn_at") {
        return Err(format!("unknown field {k:?}: expected amount, warn_at"));
    }
    let amount = o
        .get("amount")
        .and_then(Value::as_f64)
        .filter(|a| a.is_finite() && *a >= 0.0)
        .ok_or("amount must be a finite number of at least 0")?;
    let warn_at = match o.get("warn_at") {
        None => 0.8,
        Some(w) => w
            .as_f64()
            .filter(|w| *w > 0.0 && *w <= 1.0)
            .ok_or("warn_at must be a number above 0 and at most 1")?,
    };
    Ok(Budget { amount, warn_at })
}

/// Every budget of the tenants `visible` accepts, with what each spent this month.
pub async fn views(
    state: &AppState,
    visible: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, BudgetView>> {
    let mut budgets = BTreeMap::new();
    for (t, b) in all(state) {
        if !visible(&t) {
            continue;
        }
        let spent = super::spent_this_month(state, &t).await?;
        budgets.insert(
            t,
            BudgetView {
                amount: b.amount,
                warn_at: b.warn_at,
                spent,
            },
        );
    }
    Ok(budgets)
}

/// Sets `tenant`'s budget from `body` (at most [`MAX_BODY`] bytes); a bad body or an
/// unknown tenant changes nothing. Levels now above what was spent are announced again
/// when crossed, and `budget` alert rules look again.
pub async fn set(state: &AppState, tenant: &str, body: &[u8]) -> Result<Budget> {
    let res = async {
        if body.len() > MAX_BODY {
            return Err(Error::PayloadTooLarge(MAX_BODY));
        }
        if state.store.get_tenant(tenant).await?.is_none() {
            return Err(Error::NotFound(format!(
                "tenant {} not found",
                crate::state::truncate(tenant, 64)
            )));
        }
        let b = parse(body).map_err(Error::BadRequest)?;
        let mut every = all(state);
        every.insert(tenant.to_owned(), b);
        let p = path(state);
        let tmp = p.with_extension("json.tmp");
        let text = serde_json::to_string(&every)
            .map_err(|e| Error::Internal(format!("writing budgets.json: {e}")))?;
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &p))
            .map_err(|e| Error::Internal(format!("writing budgets.json: {e}")))?;
        forget_uncrossed(state, tenant, &b).await;
        Ok(b)
    }
    .await;
    state.alerts.wake.notify_one();
    res
}

/// Refuses a create of `tenant` once its budget is spent.
pub async fn check(state: &AppState, tenant: &str) -> Result<()> {
    let Some(b) = all(state).get(tenant).copied() else {
        return Ok(());
    };
    let spent = super::spent_this_month(state, tenant).await?;
    if spent >= b.amount {
        return Err(Error::QuotaExceeded(format!(
            "the tenant's budget of {} for this month is spent ({spent:.4})",
            b.amount
        )));
    }
    Ok(())
}

/// The current period of budgets: the UTC month, `YYYY-MM`.
fn period() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{:04}-{:02}", now.year(), u8::from(now.month()))
}

/// The levels of a budget: (level, event kind, amount at which it is crossed).
fn levels(b: &Budget) -> [(&'static str, EventKind, f64); 2] {
    [
        ("warning", EventKind::BudgetWarning, b.amount * b.warn_at),
        ("exceeded", EventKind::BudgetExceeded, b.amount),
    ]
}

/// After usage of `tenant` was added: emits `budget_warning` / `budget_exceeded` once each
/// per tenant and month. The crossing is recorded in the store first, so the event comes
/// once however many servers meter and across restarts.
pub async fn watch(state: &AppState, tenant: &str) {
    let Some(b) = all(state).get(tenant).copied() else {
        return;
    };
    let Ok(spent) = super::spent_this_month(state, tenant).await else {
        return;
    };
    let month = period();
    for (level, kind, at) in levels(&b) {
        if spent < at {
            continue;
        }
        match state
            .store
            .record_budget_crossing(tenant, &month, level, paddock_store::now_ms())
            .await
        {
            Ok(true) => {
                state
                    .emit(
                        tenant,
                        None,
                        kind,
                        serde_json::json!({"amount": b.amount, "warn_at": b.warn_at, "spent": spent, "month": month}),
                        None,
                    )
                    .await;
            }
            Ok(false) => {}
            Err(e) => tracing::error!(tenant, "recording a budget crossing: {e}"),
        }
    }
}

/// After a budget changed: the levels now above what was spent are no longer crossed, so
/// crossing them later is announced again.
async fn forget_uncrossed(state: &AppState, tenant: &str, b: &Budget) {
    let Ok(spent) = super::spent_this_month(state, tenant).await else {
        return;
    };
    let month = period();
    for (level, _, at) in levels(b) {
        if spent < at
            && let Err(e) = state
                .store
                .clear_budget_crossing(tenant, &month, level)
                .await
        {
            tracing::error!(tenant, "clearing a budget crossing: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_name_their_bad_field() {
        assert_eq!(
            parse(br#"{"amount": 10}"#),
            Ok(Budget {
                amount: 10.0,
                warn_at: 0.8
            })
        );
        for (bad, says) in [
            (r#"{"amount": -1}"#, "amount"),
            (r#"{"amount": 1, "warn_at": 2}"#, "warn_at"),
            (r#"{"amount": 1, "warn_at": 0}"#, "warn_at"),
            (r#"{"warn_at": 0.5}"#, "amount"),
            (r#"{"amount": 1, "currency": "eur"}"#, "currency"),
            ("[]", "object"),
        ] {
            let e = parse(bad.as_bytes()).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
