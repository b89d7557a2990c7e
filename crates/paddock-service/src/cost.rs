//! Cost: metered usage of sandboxes, priced by a price table (`docs/cost.md`).
//!
//! - Metering: at every sampling round (`usage::run`) each running sandbox's CPU time since
//!   its previous sample (CPU-seconds), its memory and its layer's referenced bytes times the
//!   time between the two samples (memory and disk GiB-hours), and the bytes it sent out of
//!   its network link since (egress; a counter that went back, as when a link is re-created
//!   at adoption, counts from 0) are added to its row of the hour in the store (`UsageStore`).
//! - Prices: `<data>/prices.json`, set by `PUT /v1/usage/prices` (admin), every entry a
//!   finite non-negative number; an invalid table is a 400 naming the entry and changes
//!   nothing. Without one every price is 0.
//! - Reports: `GET /v1/usage?from&to&by`, summed per sandbox, key, tenant or template over
//!   whole UTC hours, with the cost of each group.
//!
//! The routes are the edge's `api/cost.rs`; this module is the domain (metering, prices, reports,
//! budgets) and knows nothing of HTTP.

use std::collections::BTreeMap;

use paddock_store::{UsageFilter, UsageRow, now_ms};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::state::AppState;
use crate::text::rfc3339;
use crate::usage::history::Sample;

pub mod budgets;

pub const HOUR_MS: i64 = 3_600_000;
const GIB: f64 = (1u64 << 30) as f64;
/// Longest report range: 366 days.
pub const MAX_RANGE_HOURS: i64 = 366 * 24;
/// Largest price table body.
pub(crate) const MAX_PRICES_BYTES: usize = 4096;

/// The price of each metered amount, in the operator's currency.
pub const PRICE_ENTRIES: [&str; 4] = [
    "cpu_second",
    "memory_gib_hour",
    "disk_gib_hour",
    "egress_gib",
];

/// A price table: every entry of [`PRICE_ENTRIES`], finite and non-negative (0 when unset).
/// Its wire form is also the form of `<data>/prices.json`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Prices {
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub cpu_second: f64,
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub memory_gib_hour: f64,
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub disk_gib_hour: f64,
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub egress_gib: f64,
}

impl Prices {
    /// Parses a table, naming the first bad entry in the error. Entries left out are 0.
    pub fn parse(body: &[u8]) -> Result<Prices, String> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| format!("price table is not JSON: {e}"))?;
        let obj = v
            .as_object()
            .ok_or("price table must be a JSON object of numbers")?;
        let mut p = Prices::default();
        for (k, v) in obj {
            let n = v
                .as_f64()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| {
                    format!("price {k:?} must be a finite number of at least 0, not {v}")
                })?;
            match k.as_str() {
                "cpu_second" => p.cpu_second = n,
                "memory_gib_hour" => p.memory_gib_hour = n,
                "disk_gib_hour" => p.disk_gib_hour = n,
                "egress_gib" => p.egress_gib = n,
                other => {
                    return Err(format!(
                        "unknown price {other:?}: expected {}",
                        PRICE_ENTRIES.join(", ")
                    ));
                }
            }
        }
        Ok(p)
    }

    fn cost(&self, t: &Totals) -> f64 {
        t.cpu_seconds * self.cpu_second
            + t.memory_gib_hours * self.memory_gib_hour
            + t.disk_gib_hours * self.disk_gib_hour
            + t.egress_bytes as f64 / GIB * self.egress_gib
    }
}

fn prices_path(state: &AppState) -> std::path::PathBuf {
    state.cfg.data_dir.join("prices.json")
}

/// The current price table (all 0 without one; a table that no longer parses is logged
/// and counts as all 0).
pub fn prices(state: &AppState) -> Prices {
    match std::fs::read(prices_path(state)) {
        Ok(b) => Prices::parse(&b).unwrap_or_else(|e| {
            tracing::error!("ignoring prices.json: {e}");
            Prices::default()
        }),
        Err(_) => Prices::default(),
    }
}

/// One sampling round's usage: for each sandbox with a previous sample, what it used since.
pub async fn meter(state: &AppState, prev: &BTreeMap<String, Sample>, round: &[(String, Sample)]) {
    let mut deltas = Vec::new();
    for (id, cur) in round {
        let Some(p) = prev.get(id) else { continue };
        let dt_ms = cur.at_ms - p.at_ms;
        if dt_ms <= 0 {
            continue;
        }
        let Ok(Some(rec)) = state.store.get_sandbox(id).await else {
            continue;
        };
        deltas.push(UsageRow {
            sandbox_id: id.clone(),
            hour: cur.at_ms / HOUR_MS,
            tenant: rec.tenant,
            key_id: rec.key_id,
            template: rec.template,
            cpu_seconds: cur.cpu_ns.saturating_sub(p.cpu_ns) as f64 / 1e9,
            memory_gib_hours: gib_hours(cur.mem_bytes, dt_ms),
            disk_gib_hours: gib_hours(cur.disk_bytes, dt_ms),
            egress_bytes: i64::try_from(counter_delta(p.egress_bytes, cur.egress_bytes))
                .unwrap_or(i64::MAX),
        });
    }
    if !deltas.is_empty() {
        if let Err(e) = state.store.add_usage(&deltas).await {
            tracing::error!("storing usage: {e}");
        }
        let tenants: std::collections::BTreeSet<&str> =
            deltas.iter().map(|d| d.tenant.as_str()).collect();
        for t in tenants {
            budgets::watch(state, t).await;
        }
    }
}

/// `bytes` held for `dt_ms`, in GiB-hours.
fn gib_hours(bytes: u64, dt_ms: i64) -> f64 {
    bytes as f64 / GIB * dt_ms as f64 / HOUR_MS as f64
}

/// What a cumulative counter added from `prev` to `cur`; a counter that went back was reset
/// (its link re-created) and counts from 0.
fn counter_delta(prev: u64, cur: u64) -> u64 {
    if cur >= prev { cur - prev } else { cur }
}

/// What `tenant` has spent this UTC month at the current prices.
pub async fn spent_this_month(state: &AppState, tenant: &str) -> Result<f64> {
    let now = time::OffsetDateTime::now_utc();
    let month_start = now
        .replace_day(1)
        .map_err(|e| Error::Internal(e.to_string()))?
        .replace_time(time::Time::MIDNIGHT);
    let from_ms = (month_start.unix_timestamp_nanos() / 1_000_000) as i64;
    let rows = state
        .store
        .list_usage(&UsageFilter {
            tenant: Some(tenant.to_owned()),
            from_hour: from_ms / HOUR_MS,
            to_hour: now_ms() / HOUR_MS + 1,
            ..Default::default()
        })
        .await?;
    let mut t = Totals::default();
    for r in &rows {
        t.add(r);
    }
    Ok(prices(state).cost(&t))
}

/// Replaces the price table with `body` (every entry a finite number of at least 0, at
/// most [`MAX_PRICES_BYTES`]); an invalid table changes nothing.
pub fn set_prices(state: &AppState, body: &[u8]) -> Result<Prices> {
    if body.len() > MAX_PRICES_BYTES {
        return Err(Error::PayloadTooLarge(MAX_PRICES_BYTES));
    }
    let p = Prices::parse(body).map_err(Error::BadRequest)?;
    let path = prices_path(state);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string(&p)
        .map_err(|e| Error::Internal(format!("writing prices.json: {e}")))?;
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::Internal(format!("writing prices.json: {e}")))?;
    Ok(p)
}

/// The usage of the hours `f` selects, grouped `by`, priced at the current prices.
pub async fn usage_report(state: &AppState, f: &UsageFilter, by: GroupBy) -> Result<UsageReport> {
    let rows = state.store.list_usage(f).await?;
    let prices = prices(state);
    let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
    let mut total = Totals::default();
    for r in &rows {
        groups.entry(by.of(r).to_owned()).or_default().add(r);
        total.add(r);
    }
    let groups = groups
        .into_iter()
        .map(|(k, t)| UsageGroup::new(by, k, t.view(&prices)))
        .collect();
    Ok(UsageReport {
        from: rfc3339(Some(f.from_hour * HOUR_MS)),
        to: rfc3339(Some(f.to_hour * HOUR_MS)),
        by,
        prices,
        groups,
        total: total.view(&prices),
        metered: vec![
            Metered::CpuSeconds,
            Metered::MemoryGibHours,
            Metered::DiskGibHours,
            Metered::EgressBytes,
        ],
    })
}

#[derive(Debug, Default, Clone)]
struct Totals {
    cpu_seconds: f64,
    memory_gib_hours: f64,
    disk_gib_hours: f64,
    egress_bytes: i64,
    sandboxes: std::collections::BTreeSet<String>,
}

impl Totals {
    fn add(&mut self, r: &UsageRow) {
        self.cpu_seconds += r.cpu_seconds;
        self.memory_gib_hours += r.memory_gib_hours;
        self.disk_gib_hours += r.disk_gib_hours;
        self.egress_bytes = self.egress_bytes.saturating_add(r.egress_bytes);
        self.sandboxes.insert(r.sandbox_id.clone());
    }
    fn view(&self, prices: &Prices) -> UsageTotals {
        let round = |x: f64| (x * 1e6).round() / 1e6;
        UsageTotals {
            cpu_seconds: round(self.cpu_seconds),
            memory_gib_hours: round(self.memory_gib_hours),
            disk_gib_hours: round(self.disk_gib_hours),
            egress_bytes: self.egress_bytes,
            sandboxes: self.sandboxes.len(),
            cost: round(prices.cost(self)),
        }
    }
}

/// What a group (or everything) used, and its cost; amounts rounded to 6 decimals.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageTotals {
    pub cpu_seconds: f64,
    pub memory_gib_hours: f64,
    /// GiB-hours of the layer's referenced bytes.
    pub disk_gib_hours: f64,
    /// Bytes sent out of the sandbox's link.
    pub egress_bytes: i64,
    /// Sandboxes that used any of it.
    pub sandboxes: usize,
    /// At the current prices.
    pub cost: f64,
}

/// What a report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Sandbox,
    Key,
    Tenant,
    Template,
}

impl GroupBy {
    pub fn parse(v: &str) -> Result<GroupBy> {
        match v {
            "sandbox" => Ok(GroupBy::Sandbox),
            "key" => Ok(GroupBy::Key),
            "tenant" => Ok(GroupBy::Tenant),
            "template" => Ok(GroupBy::Template),
            _ => Err(Error::BadRequest(format!(
                "by {v:?} must be sandbox, key, tenant or template"
            ))),
        }
    }

    /// A row's group.
    fn of(self, r: &UsageRow) -> &str {
        match self {
            GroupBy::Sandbox => &r.sandbox_id,
            GroupBy::Key => &r.key_id,
            GroupBy::Tenant => &r.tenant,
            GroupBy::Template => &r.template,
        }
    }
}

/// One group of a report: its name under the `by` field, and its totals.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageGroup {
    /// The sandbox id (by sandbox).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// The key id (by key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The tenant (by tenant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The template (by template).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

impl UsageGroup {
    fn new(by: GroupBy, name: String, totals: UsageTotals) -> UsageGroup {
        let mut g = UsageGroup {
            sandbox: None,
            key: None,
            tenant: None,
            template: None,
            totals,
        };
        *match by {
            GroupBy::Sandbox => &mut g.sandbox,
            GroupBy::Key => &mut g.key,
            GroupBy::Tenant => &mut g.tenant,
            GroupBy::Template => &mut g.template,
        } = Some(name);
        g
    }
}

/// A metered amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Metered {
    CpuSeconds,
    MemoryGibHours,
    DiskGibHours,
    EgressBytes,
}

/// Usage and cost over whole UTC hours.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageReport {
    /// The start of the first hour.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub from: Value,
    /// The end of the last hour.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub to: Value,
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub by: GroupBy,
    pub prices: Prices,
    pub groups: Vec<UsageGroup>,
    pub total: UsageTotals,
    /// What is metered.
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub metered: Vec<Metered>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_tables_name_their_bad_entry() {
        let p = Prices::parse(br#"{"cpu_second": 0.5, "egress_gib": 2}"#).expect("valid");
        assert_eq!(p.cpu_second, 0.5);
        assert_eq!(p.egress_gib, 2.0);
        assert_eq!(p.memory_gib_hour, 0.0);
        for (bad, names) in [
            (r#"{"cpu_second": -1}"#, "cpu_second"),
            (r#"{"memory_gib_hour": "3"}"#, "memory_gib_hour"),
            (r#"{"gpu_hour": 1}"#, "gpu_hour"),
            (r#"{"disk_gib_hour": null}"#, "disk_gib_hour"),
            (r#"[1, 2]"#, "object"),
            ("nope", "not JSON"),
        ] {
            let e = Prices::parse(bad.as_bytes()).expect_err(bad);
            assert!(e.contains(names), "{bad}: {e}");
        }
        let t = Totals {
            cpu_seconds: 10.0,
            memory_gib_hours: 2.0,
            egress_bytes: 1 << 30,
            ..Default::default()
        };
        let p = Prices {
            cpu_second: 0.1,
            memory_gib_hour: 1.0,
            disk_gib_hour: 5.0,
            egress_gib: 3.0,
        };
        assert!((p.cost(&t) - 6.0).abs() < 1e-9);
        assert_eq!(counter_delta(10, 25), 15);
        assert_eq!(counter_delta(25, 7), 7, "a reset counts from 0");
        assert!((gib_hours(1 << 30, HOUR_MS / 2) - 0.5).abs() < 1e-12);
    }

    /// A report group carries its name under the `by` field, as the `json!` body did.
    #[test]
    fn a_report_group_is_named_by_its_grouping() {
        let mut t = Totals::default();
        t.add(&UsageRow {
            sandbox_id: "s1".into(),
            cpu_seconds: 1.5,
            egress_bytes: 10,
            ..Default::default()
        });
        let p = Prices {
            cpu_second: 2.0,
            ..Default::default()
        };
        let g = UsageGroup::new(GroupBy::Template, "base".into(), t.view(&p));
        assert_eq!(
            serde_json::to_value(&g).unwrap(),
            serde_json::json!({
                "template": "base", "cpu_seconds": 1.5, "memory_gib_hours": 0.0,
                "disk_gib_hours": 0.0, "egress_bytes": 10, "sandboxes": 1, "cost": 3.0,
            })
        );
        assert_eq!(
            serde_json::to_value(p).unwrap(),
            serde_json::json!({
                "cpu_second": 2.0, "memory_gib_hour": 0.0, "disk_gib_hour": 0.0, "egress_gib": 0.0,
            })
        );
        assert!(GroupBy::parse("gpu").is_err());
    }
}
