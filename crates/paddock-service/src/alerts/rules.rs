//! Alert rules: the kinds, their parameters and limits, and the checks a new rule passes
//! before anything is stored (`docs/alerts.md`).

use paddock_store::AlertRule;
use serde_json::{Map, Value, json};

/// Every kind, in the order the docs list them.
pub const KINDS: [&str; 6] = [
    "node_down",
    "sandbox_failed",
    "sandbox_oom",
    "create_failures",
    "capacity",
    "budget",
];

/// Most rules per tenant.
pub const MAX_RULES_PER_TENANT: usize = 100;
/// Longest webhook URL.
pub const MAX_URL_LEN: usize = 2048;
/// Default quiet time after which an event kind (`sandbox_failed`, `sandbox_oom`) resolves.
pub const DEFAULT_QUIET_SECS: u64 = 300;

/// Whether a kind watches the whole host or fleet (admins only).
pub fn is_fleet_kind(kind: &str) -> bool {
    matches!(kind, "node_down" | "capacity")
}

/// The parameters of a rule, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Params {
    /// `degraded` (default true): also fire for a node whose heartbeats stopped but that is
    /// not dead yet.
    NodeDown { degraded: bool },
    /// Every `failed` sandbox; resolves after `quiet_secs` without another.
    SandboxFailed { quiet_secs: u64 },
    /// Every OOM kill in a sandbox; resolves after `quiet_secs` without another.
    SandboxOom { quiet_secs: u64 },
    /// At least `count` failed creates within `window_secs`.
    CreateFailures { count: u64, window_secs: u64 },
    /// `resource` above `threshold` (percent for memory and disk, a count for sandboxes)
    /// on this host or across the fleet.
    Capacity {
        resource: Resource,
        threshold: f64,
        fleet: bool,
    },
    /// The tenant's budget crossed its warning level (`warning`) or spent (`exceeded`).
    Budget { exceeded: bool },
}

/// What a capacity rule measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Memory,
    Disk,
    Sandboxes,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::Disk => "disk",
            Resource::Sandboxes => "sandboxes",
        }
    }
}

fn uint(
    p: &Map<String, Value>,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, String> {
    match p.get(name) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                format!("params.{name} must be a whole number from {min} to {max}, not {v}")
            }),
    }
}

fn only(p: &Map<String, Value>, allowed: &[&str]) -> Result<(), String> {
    match p.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) if allowed.is_empty() => Err(format!(
            "unknown parameter params.{k}: this kind takes none"
        )),
        Some(k) => Err(format!(
            "unknown parameter params.{k}: expected {}",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

impl Params {
    /// Checks `params` for `kind`, naming the bad parameter.
    pub fn parse(kind: &str, p: &Map<String, Value>) -> Result<Params, String> {
        match kind {
            "node_down" => {
                only(p, &["degraded"])?;
                let degraded = match p.get("degraded") {
                    None => true,
                    Some(v) => v
                        .as_bool()
                        .ok_or_else(|| format!("params.degraded must be true or false, not {v}"))?,
                };
                Ok(Params::NodeDown { degraded })
            }
            "sandbox_failed" | "sandbox_oom" => {
                only(p, &["quiet_secs"])?;
                let quiet_secs = uint(p, "quiet_secs", DEFAULT_QUIET_SECS, 1, 86_400)?;
                Ok(if kind == "sandbox_oom" {
                    Params::SandboxOom { quiet_secs }
                } else {
                    Params::SandboxFailed { quiet_secs }
                })
            }
            "create_failures" => {
                only(p, &["count", "window_secs"])?;
                if !p.contains_key("count") {
                    return Err("params.count is required (failed creates that fire)".into());
                }
                Ok(Params::CreateFailures {
                    count: uint(p, "count", 0, 1, 10_000)?,
                    window_secs: uint(p, "window_secs", 300, 10, 86_400)?,
                })
            }
            "capacity" => {
                only(p, &["resource", "threshold", "scope"])?;
                let resource = match p.get("resource").and_then(Value::as_str) {
                    Some("memory") => Resource::Memory,
                    Some("disk") => Resource::Disk,
                    Some("sandboxes") => Resource::Sandboxes,
                    _ => {
                        return Err(format!(
                            "params.resource must be memory, disk or sandboxes, not {}",
                            p.get("resource").unwrap_or(&Value::Null)
                        ));
                    }
                };
                let t = p.get("threshold").and_then(Value::as_f64);
                let threshold = match resource {
                    Resource::Sandboxes => t
                        .filter(|t| t.fract() == 0.0 && *t >= 1.0 && *t <= 1e6)
                        .ok_or_else(|| {
                            format!(
                                "params.threshold for sandboxes must be a count from 1 to 1000000, not {}",
                                p.get("threshold").unwrap_or(&Value::Null)
                            )
                        })?,
                    _ => t.filter(|t| *t > 0.0 && *t < 100.0).ok_or_else(|| {
                        format!(
                            "params.threshold must be a percentage above 0 and below 100, not {}",
                            p.get("threshold").unwrap_or(&Value::Null)
                        )
                    })?,
                };
                let fleet = match p.get("scope").map(|v| v.as_str()) {
                    None | Some(Some("host")) => false,
                    Some(Some("fleet")) => true,
                    Some(_) => {
                        return Err(format!(
                            "params.scope must be host or fleet, not {}",
                            p.get("scope").unwrap_or(&Value::Null)
                        ));
                    }
                };
                Ok(Params::Capacity {
                    resource,
                    threshold,
                    fleet,
                })
            }
            "budget" => {
                only(p, &["level"])?;
                let exceeded = match p.get("level").map(|v| v.as_str()) {
                    None | Some(Some("warning")) => false,
                    Some(Some("exceeded")) => true,
                    Some(_) => {
                        return Err(format!(
                            "params.level must be warning or exceeded, not {}",
                            p.get("level").unwrap_or(&Value::Null)
                        ));
                    }
                };
                Ok(Params::Budget { exceeded })
            }
            other => Err(format!(
                "unknown kind {:?}: expected {}",
                crate::text::truncate(other, 64),
                KINDS.join(", ")
            )),
        }
    }

    /// The parameters as stored and shown, defaults filled in.
    pub fn json(&self) -> Value {
        match self {
            Params::NodeDown { degraded } => json!({ "degraded": degraded }),
            Params::SandboxFailed { quiet_secs } | Params::SandboxOom { quiet_secs } => {
                json!({ "quiet_secs": quiet_secs })
            }
            Params::CreateFailures { count, window_secs } => {
                json!({ "count": count, "window_secs": window_secs })
            }
            Params::Capacity {
                resource,
                threshold,
                fleet,
            } => json!({
                "resource": resource.as_str(),
                "threshold": threshold,
                "scope": if *fleet { "fleet" } else { "host" },
            }),
            Params::Budget { exceeded } => {
                json!({ "level": if *exceeded { "exceeded" } else { "warning" } })
            }
        }
    }

    /// A stored rule's parameters (checked when it was made; a rule that no longer parses
    /// is skipped and logged).
    pub fn of(rule: &AlertRule) -> Option<Params> {
        let empty = Map::new();
        let p = rule.params.as_object().unwrap_or(&empty);
        Params::parse(&rule.kind, p)
            .inspect_err(|e| tracing::error!(rule = %rule.id, "skipping alert rule: {e}"))
            .ok()
    }
}

/// Checks a delivery format.
pub fn parse_format(f: Option<&str>) -> Result<&'static str, String> {
    match f {
        None | Some("json") => Ok("json"),
        Some("slack") => Ok("slack"),
        Some(other) => Err(format!(
            "format {:?} must be json or slack",
            crate::text::truncate(other, 32)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn parameters_are_checked_and_defaulted() {
        assert_eq!(
            Params::parse("sandbox_oom", &p(json!({}))),
            Ok(Params::SandboxOom {
                quiet_secs: DEFAULT_QUIET_SECS
            })
        );
        assert_eq!(
            Params::parse(
                "create_failures",
                &p(json!({"count": 3, "window_secs": 60}))
            ),
            Ok(Params::CreateFailures {
                count: 3,
                window_secs: 60
            })
        );
        assert_eq!(
            Params::parse("capacity", &p(json!({"resource": "disk", "threshold": 90}))),
            Ok(Params::Capacity {
                resource: Resource::Disk,
                threshold: 90.0,
                fleet: false
            })
        );
        for (kind, bad, says) in [
            ("nosuch", json!({}), "unknown kind"),
            (
                "capacity",
                json!({"resource": "memory", "threshold": 150}),
                "threshold",
            ),
            (
                "capacity",
                json!({"resource": "memory", "threshold": 0}),
                "threshold",
            ),
            (
                "capacity",
                json!({"resource": "gpu", "threshold": 50}),
                "resource",
            ),
            (
                "capacity",
                json!({"resource": "sandboxes", "threshold": 2.5}),
                "threshold",
            ),
            (
                "capacity",
                json!({"resource": "disk", "threshold": 50, "scope": "rack"}),
                "scope",
            ),
            ("create_failures", json!({}), "count"),
            ("create_failures", json!({"count": 0}), "count"),
            (
                "create_failures",
                json!({"count": 2, "window_secs": 1}),
                "window_secs",
            ),
            (
                "sandbox_failed",
                json!({"threshold": 1}),
                "params.threshold",
            ),
            ("budget", json!({"level": "panic"}), "level"),
            ("node_down", json!({"degraded": "yes"}), "degraded"),
        ] {
            let e = Params::parse(kind, &p(bad.clone())).expect_err(&bad.to_string());
            assert!(e.contains(says), "{kind} {bad}: {e}");
        }
        assert_eq!(parse_format(None), Ok("json"));
        assert!(parse_format(Some("xml")).is_err());
    }
}
