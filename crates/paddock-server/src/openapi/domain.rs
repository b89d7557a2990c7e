//! The OpenAPI descriptions of the domain's wire types. `paddock-service` knows no
//! `utoipa`, so each of its types the document names has a twin here with the same name,
//! fields, serde attributes and schema attributes; the twins are never built, only
//! described (the router tests check the document, `tests/architecture.rs` that the service
//! crate has no HTTP dependency). A change to one of those types changes its twin: the test
//! below compares their fields, variants and serde attributes line by line. `SetBudget`
//! is only here: the service reads a budget by hand (`budgets::parse`, naming the bad field).

#![allow(dead_code)]

/// Twins of `paddock_service::rollouts` types.
pub mod rollouts {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};
    use serde_json::{Map, Value};
    use utoipa::ToSchema;

    /// A rollout's state.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum RolloutState {
        Running,
        Succeeded,
        Failed,
        Cancelled,
        /// The server stopped while it ran.
        Interrupted,
    }

    /// A target's state.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum TargetState {
        Pending,
        Running,
        Succeeded,
        Failed,
        RolledBack,
        Skipped,
        /// The server stopped while it ran.
        Interrupted,
    }

    /// What a rollout does.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum RolloutKind {
        Command,
        Upload,
    }

    /// One sandbox of a rollout: its state, and its outcome's fields (`exit_code`, `status`,
    /// `stdout_tail` and `stderr_tail` (the last 4096 bytes), `error`, `started_at`,
    /// `finished_at`, `duration_ms`, `outcome_before_rollback` (`succeeded` or `failed`) and
    /// `rollback` (the rollback command's outcome: the same fields, and `ok`)), as they are
    /// known.
    #[derive(Debug, Clone, Serialize, ToSchema)]
    #[schema(as = RolloutTarget)]
    pub struct TargetView {
        pub sandbox_id: String,
        #[schema(inline)]
        pub state: TargetState,
        /// The outcome's fields, as they are known.
        #[serde(flatten)]
        #[schema(value_type = Object)]
        pub result: Map<String, Value>,
    }

    /// A rollout, with its targets' counts and targets when read one by one.
    #[derive(Debug, Clone, Serialize, ToSchema)]
    #[schema(as = Rollout)]
    pub struct RolloutView {
        pub id: String,
        #[schema(inline)]
        pub kind: RolloutKind,
        #[schema(inline)]
        pub state: RolloutState,
        /// Why it ended as it did (e.g. `2 failures reached max_failures 2`).
        pub reason: Option<String>,
        pub key_id: String,
        #[schema(value_type = String, format = DateTime)]
        pub created_at: Value,
        #[schema(value_type = Option<String>, format = DateTime)]
        pub finished_at: Value,
        /// The request without uploaded bytes
        #[schema(value_type = Object)]
        pub spec: Value,
        /// Targets per state, and `total` (not in lists).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub counts: Option<BTreeMap<String, usize>>,
        /// Not in lists.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub sandboxes: Option<Vec<TargetView>>,
    }

    /// The kind of a progress line.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum ProgressKind {
        /// The rollout as started (first).
        Rollout,
        /// A change of one sandbox.
        Sandbox,
        /// The finished rollout (last).
        End,
    }

    /// One line of a rollout's NDJSON progress: `rollout` first, a `sandbox` line per change,
    /// `end` last.
    #[derive(Debug, Clone, Serialize, ToSchema)]
    #[schema(as = RolloutProgress)]
    pub struct Progress {
        #[schema(inline)]
        pub r#type: ProgressKind,
        /// In `rollout` and `end` lines.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub rollout: Option<RolloutView>,
        /// In `sandbox` lines.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub sandbox: Option<TargetView>,
    }

    /// A command given as an argv array or as a shell command line (`bash -l -c`).
    #[derive(Debug, Deserialize, ToSchema)]
    #[serde(untagged)]
    pub enum CommandBody {
        Line(String),
        Argv(Vec<String>),
    }

    /// `POST /v1/rollouts`: exactly one of `cmd`, `command` and `upload`.
    #[derive(Debug, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    #[schema(as = CreateRollout)]
    pub struct Body {
        /// Metadata pairs every target must have (exact match, as the sandbox list's
        /// metadata.KEY=VALUE); only running sandboxes the key may reach. At least one pair.
        #[serde(default)]
        #[schema(required = true)]
        selector: BTreeMap<String, String>,
        #[serde(default)]
        cmd: Option<Vec<String>>,
        /// A shell command line (bash -l -c)
        #[serde(default)]
        command: Option<String>,
        #[serde(default)]
        #[schema(inline)]
        upload: Option<UploadBody>,
        /// Run on every sandbox whose command or upload was started when max_failures is reached
        #[serde(default)]
        #[schema(inline)]
        rollback: Option<CommandBody>,
        #[serde(default)]
        #[schema(minimum = 1, maximum = 64, default = 4)]
        concurrency: Option<u32>,
        #[serde(default)]
        #[schema(minimum = 1, default = 1)]
        max_failures: Option<u32>,
        /// Seconds per sandbox for the command, upload or rollback
        #[serde(default)]
        #[schema(minimum = 1, maximum = 3600, default = 300)]
        timeout: Option<u64>,
        #[serde(default)]
        user: Option<String>,
    }

    /// Exactly one of tar (with path) or files; at most 16 MiB decoded
    #[derive(Debug, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct UploadBody {
        /// The directory a `tar` is extracted into.
        #[serde(default)]
        path: Option<String>,
        /// A tar, tar.gz or tar.zst, base64.
        #[serde(default)]
        #[schema(format = Byte)]
        tar: Option<String>,
        #[serde(default)]
        #[schema(inline, max_items = 1000)]
        files: Option<Vec<FileBody>>,
    }

    /// A file to write.
    #[derive(Debug, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct FileBody {
        path: String,
        /// The file's bytes, base64.
        #[schema(format = Byte)]
        content: String,
    }
}

/// Twins of `paddock_service::volumes` types.
pub mod volumes {
    use serde::{Deserialize, Serialize};
    use utoipa::ToSchema;

    /// A volume a create asks for: by name (or id), at `path`.
    #[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
    #[serde(deny_unknown_fields)]
    #[schema(as = VolumeMount)]
    pub struct VolumeUse {
        /// The volume's name or id.
        #[serde(alias = "volume")]
        pub name: String,
        /// Absolute path inside the sandbox.
        pub path: String,
        #[serde(default)]
        pub read_only: bool,
    }
}

/// Twins of `paddock_service::cost` types.
pub mod cost {
    use serde::Serialize;
    use serde_json::Value;
    use utoipa::ToSchema;

    /// A price table: every entry of [`PRICE_ENTRIES`], finite and non-negative (0 when unset).
    /// Its wire form is also the form of `<data>/prices.json`.
    #[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, ToSchema)]
    pub struct Prices {
        #[schema(minimum = 0)]
        pub cpu_second: f64,
        #[schema(minimum = 0)]
        pub memory_gib_hour: f64,
        #[schema(minimum = 0)]
        pub disk_gib_hour: f64,
        #[schema(minimum = 0)]
        pub egress_gib: f64,
    }

    /// What a group (or everything) used, and its cost; amounts rounded to 6 decimals.
    #[derive(Debug, Clone, Serialize, ToSchema)]
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
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum GroupBy {
        Sandbox,
        Key,
        Tenant,
        Template,
    }

    /// One group of a report: its name under the `by` field, and its totals.
    #[derive(Debug, Clone, Serialize, ToSchema)]
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

    /// A metered amount.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum Metered {
        CpuSeconds,
        MemoryGibHours,
        DiskGibHours,
        EgressBytes,
    }

    /// Usage and cost over whole UTC hours.
    #[derive(Debug, Clone, Serialize, ToSchema)]
    pub struct UsageReport {
        /// The start of the first hour.
        #[schema(value_type = String, format = DateTime)]
        pub from: Value,
        /// The end of the last hour.
        #[schema(value_type = String, format = DateTime)]
        pub to: Value,
        #[schema(inline)]
        pub by: GroupBy,
        pub prices: Prices,
        pub groups: Vec<UsageGroup>,
        pub total: UsageTotals,
        /// What is metered.
        #[schema(inline)]
        pub metered: Vec<Metered>,
    }
}

/// Twins of `paddock_service::cost::budgets` types.
pub mod budgets {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};
    use utoipa::ToSchema;

    /// A tenant's monthly budget (its wire form, and its entry in `budgets.json`).
    #[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
    pub struct Budget {
        /// Per UTC month, at the current prices.
        #[schema(minimum = 0)]
        pub amount: f64,
        /// The fraction of `amount` that warns (0 < warn_at <= 1, default 0.8).
        #[schema(exclusive_minimum = 0, maximum = 1)]
        pub warn_at: f64,
    }

    /// A budget as set: `warn_at` defaults to 0.8. Read by [`parse`], which names the bad
    /// field; described here for the document.
    #[allow(dead_code)]
    #[derive(Debug, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct SetBudget {
        #[schema(minimum = 0)]
        amount: f64,
        #[schema(exclusive_minimum = 0, maximum = 1, default = 0.8)]
        warn_at: Option<f64>,
    }

    /// A tenant's budget and what it spent this month.
    #[derive(Debug, Clone, Serialize, ToSchema)]
    pub struct BudgetView {
        pub amount: f64,
        pub warn_at: f64,
        /// Spent this UTC month at the current prices.
        pub spent: f64,
    }

    /// Every budget the caller may see, by tenant.
    #[derive(Debug, Clone, Serialize, ToSchema)]
    pub struct BudgetList {
        pub budgets: BTreeMap<String, BudgetView>,
    }

    /// A tenant's budget, as set.
    #[derive(Debug, Clone, Serialize, ToSchema)]
    pub struct TenantBudget {
        pub tenant: String,
        pub amount: f64,
        pub warn_at: f64,
    }
}

#[cfg(test)]
mod tests {
    /// The twins and the service's source, by file: each twin must keep its type's fields,
    /// variants and serde attributes.
    const TWINS: [(&str, &str, &[&str]); 5] = [
        (
            "rollouts/view.rs",
            include_str!("../../../paddock-service/src/rollouts/view.rs"),
            &[
                "RolloutState",
                "TargetState",
                "RolloutKind",
                "TargetView",
                "RolloutView",
                "ProgressKind",
                "Progress",
            ],
        ),
        (
            "rollouts/spec.rs",
            include_str!("../../../paddock-service/src/rollouts/spec.rs"),
            &["CommandBody", "Body", "UploadBody", "FileBody"],
        ),
        (
            "volumes.rs",
            include_str!("../../../paddock-service/src/volumes.rs"),
            &["VolumeUse"],
        ),
        (
            "cost.rs",
            include_str!("../../../paddock-service/src/cost.rs"),
            &[
                "Prices",
                "UsageTotals",
                "GroupBy",
                "UsageGroup",
                "Metered",
                "UsageReport",
            ],
        ),
        (
            "cost/budgets.rs",
            include_str!("../../../paddock-service/src/cost/budgets.rs"),
            &["Budget", "BudgetView", "BudgetList", "TenantBudget"],
        ),
    ];

    /// The lines of the definition of `name` in `src` that shape its JSON: fields,
    /// variants and serde attributes (its own and those above it), trimmed; without doc
    /// comments, derives and `#[schema]`/`#[allow]` attributes, which a twin may differ in.
    fn shape(src: &str, name: &str) -> Option<Vec<String>> {
        let lines: Vec<&str> = src.lines().collect();
        let start = lines.iter().position(|l| {
            let t = l.trim_start().replace("pub(crate) ", "pub ");
            t.starts_with(&format!("pub struct {name} "))
                || t.starts_with(&format!("pub enum {name} "))
        })?;
        let indent = lines[start].len() - lines[start].trim_start().len();
        let mut first = start;
        while first > 0 {
            let t = lines[first - 1].trim();
            if t.starts_with("#[") || t.starts_with("///") {
                first -= 1;
            } else {
                break;
            }
        }
        let end = (start..lines.len()).find(|&i| {
            lines[i].trim() == "}" && lines[i].len() - lines[i].trim_start().len() == indent
        })?;
        Some(
            lines[first..=end]
                .iter()
                .map(|l| l.trim().replace("pub(crate) ", "pub "))
                .filter(|l| {
                    !(l.is_empty()
                        || l.starts_with("///")
                        || l.starts_with("#[derive(")
                        || l.starts_with("#[schema(")
                        || l.starts_with("#[allow("))
                })
                .collect(),
        )
    }

    #[test]
    fn every_twin_has_the_shape_of_its_domain_type() {
        let twins = include_str!("domain.rs");
        for (file, src, names) in TWINS {
            for name in names {
                let want = shape(src, name)
                    .unwrap_or_else(|| panic!("paddock-service {file} has no type {name}"));
                let got = shape(twins, name).unwrap_or_else(|| panic!("no twin of {name}"));
                assert!(want.len() > 2, "{name}: the definition was not read whole");
                assert_eq!(
                    got, want,
                    "the twin of {name} ({file}) differs from the type: change it too"
                );
            }
        }
    }
}
