//! The E2B control plane's wire bodies: a typed `Serialize` struct for every answer (the
//! `Sandbox` of create, connect and fork, `ListedSandbox`, `SandboxMetric`, `Secret`,
//! snapshots, volumes and volume entries, and both error shapes), with closed enums for the
//! states, timeout actions and entry types they carry. Names and shapes follow
//! `docs/e2b-wire.md` (section 2).
//!
//! Every body goes out through `serde_json::Value` ([`super::common::json_status`]), whose
//! objects keep their keys sorted: the bytes are those of the `json!` bodies these types
//! replaced, which the tests below build side by side.
//!
//! By concept: this file has sandboxes, metrics, secrets, snapshots, forks and errors;
//! `volumes` the volume control and content APIs' bodies; `create` the typed parts of a
//! create's body that Paddock reads (`network`, `autoResume`, `volumeMounts`) and their
//! checks.

use std::collections::BTreeMap;

use paddock_store::{SandboxRecord, SandboxState, SecretRecord};
use serde::Serialize;
use serde_json::Value;

use super::{CLIENT_ID, ENVD_VERSION};
use crate::wire::rfc3339;

mod create;
mod volumes;

pub(super) use create::{
    AutoResume, NetworkBody, Shaped, auto_resume_enabled, e2b_network, volume_uses,
};
pub(super) use volumes::{ContentErrorBody, VolumeBody, VolumeEntry};

/// E2B's error body, `{"code": <http status>, "message"}` (also each failed child of a fork).
#[derive(Debug, Serialize)]
pub(super) struct ErrorBody {
    pub code: u16,
    pub message: String,
}

/// E2B's `Sandbox`: what create, connect and resume answer, and each forked child.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SandboxBody {
    /// The template's name.
    alias: String,
    #[serde(rename = "clientID")]
    client_id: &'static str,
    domain: String,
    envd_access_token: String,
    envd_version: &'static str,
    #[serde(rename = "sandboxID")]
    sandbox_id: String,
    #[serde(rename = "templateID")]
    template_id: String,
    /// The access token again when some ports are not public (`allowPublicTraffic: false`),
    /// which then need it; null otherwise.
    traffic_access_token: Option<String>,
}

impl SandboxBody {
    /// `r` with its envd access `token`, for clients reaching this server at `domain`.
    pub(super) fn of(r: &SandboxRecord, token: String, domain: &str) -> SandboxBody {
        SandboxBody {
            alias: r.template.clone(),
            client_id: CLIENT_ID,
            domain: domain.to_owned(),
            traffic_access_token: (!r.spec.ports_public).then(|| token.clone()),
            envd_access_token: token,
            envd_version: ENVD_VERSION,
            sandbox_id: r.id.clone(),
            template_id: r.template.clone(),
        }
    }
}

/// A listed sandbox's state: E2B lists only running and paused ones.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum ListedState {
    Running,
    Paused,
}

impl ListedState {
    fn of(s: SandboxState) -> ListedState {
        if s == SandboxState::Paused {
            ListedState::Paused
        } else {
            ListedState::Running
        }
    }
}

/// What a sandbox's timeout does.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum OnTimeout {
    Kill,
    Pause,
}

/// A listed sandbox's `lifecycle`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Lifecycle {
    auto_resume: bool,
    on_timeout: OnTimeout,
}

/// E2B's `ListedSandbox` (`GET /v2/sandboxes`, `GET /sandboxes`) and, with the access token,
/// `SandboxDetail` (`GET /sandboxes/{id}`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListedSandbox {
    alias: String,
    allow_internet_access: bool,
    #[serde(rename = "clientID")]
    client_id: &'static str,
    /// Whole cores, at least one.
    cpu_count: u64,
    #[serde(rename = "diskSizeMB")]
    disk_size_mb: u64,
    domain: String,
    /// RFC 3339: the deadline, else when it stopped, else when it was created.
    end_at: Value,
    /// `SandboxDetail` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    envd_access_token: Option<String>,
    envd_version: &'static str,
    lifecycle: Lifecycle,
    #[serde(rename = "memoryMB")]
    memory_mb: u64,
    metadata: BTreeMap<String, String>,
    #[serde(rename = "sandboxID")]
    sandbox_id: String,
    /// RFC 3339: when it was ready, else when it was created.
    started_at: Value,
    state: ListedState,
    #[serde(rename = "templateID")]
    template_id: String,
}

impl ListedSandbox {
    /// `r`, with its access `token` for `SandboxDetail` (None for a list).
    pub(super) fn of(r: &SandboxRecord, token: Option<String>, domain: &str) -> ListedSandbox {
        ListedSandbox {
            alias: r.template.clone(),
            allow_internet_access: r.spec.network().mode == paddock_core::NetworkMode::All,
            client_id: CLIENT_ID,
            cpu_count: cpu_count(r),
            disk_size_mb: r.spec.disk_bytes.unwrap_or(0) >> 20,
            domain: domain.to_owned(),
            end_at: rfc3339(Some(r.expires_at.or(r.stopped_at).unwrap_or(r.created_at))),
            envd_access_token: token,
            envd_version: ENVD_VERSION,
            lifecycle: Lifecycle {
                auto_resume: paddock_service::pausing::auto_resume(r),
                on_timeout: if paddock_service::pausing::pause_on_timeout(r).is_some() {
                    OnTimeout::Pause
                } else {
                    OnTimeout::Kill
                },
            },
            memory_mb: r.spec.memory_bytes.unwrap_or(0) >> 20,
            metadata: r.metadata.clone(),
            sandbox_id: r.id.clone(),
            started_at: rfc3339(Some(r.ready_at.unwrap_or(r.created_at))),
            state: ListedState::of(r.state),
            template_id: r.template.clone(),
        }
    }
}

/// A sandbox's whole cores, at least one.
pub(super) fn cpu_count(r: &SandboxRecord) -> u64 {
    u64::from(r.spec.cpu_millis.unwrap_or(0))
        .div_ceil(1000)
        .max(1)
}

/// E2B's `SandboxMetric`: one sample of `GET /sandboxes/{id}/metrics`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SandboxMetric {
    pub cpu_count: u64,
    /// CPU use since the previous sample, in percent of the sandbox's allowance.
    pub cpu_used_pct: f64,
    pub disk_total: u64,
    pub disk_used: u64,
    /// Always 0: the page cache is counted in `memUsed`.
    pub mem_cache: u64,
    pub mem_total: u64,
    pub mem_used: u64,
    /// RFC 3339.
    pub timestamp: Value,
    pub timestamp_unix: i64,
}

/// E2B's `Secret`: never the value.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SecretBody {
    created_at: Value,
    current_version: i64,
    metadata: BTreeMap<String, String>,
    name: String,
    #[serde(rename = "secretID")]
    secret_id: String,
    updated_at: Value,
}

impl From<&SecretRecord> for SecretBody {
    fn from(s: &SecretRecord) -> SecretBody {
        SecretBody {
            created_at: rfc3339(Some(s.created_at)),
            current_version: s.current_version,
            metadata: s.metadata.clone(),
            name: s.name.clone(),
            secret_id: s.id.clone(),
            updated_at: rfc3339(Some(s.updated_at)),
        }
    }
}

/// A snapshot as E2B names it: `{"snapshotID", "names"}` (its one name is its id).
#[derive(Debug, Serialize)]
pub(super) struct SnapshotInfo {
    names: Vec<String>,
    #[serde(rename = "snapshotID")]
    snapshot_id: String,
}

impl SnapshotInfo {
    /// The snapshot (a template) named `name`.
    pub(super) fn of(name: &str) -> SnapshotInfo {
        SnapshotInfo {
            names: vec![name.to_owned()],
            snapshot_id: name.to_owned(),
        }
    }
}

/// One child of a fork: `{"sandbox": Sandbox}` or `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum ForkResult {
    Sandbox(Box<SandboxBody>),
    Error(ErrorBody),
}

#[cfg(test)]
mod tests {
    use paddock_core::{NetworkMode, NetworkPolicy, PauseMode};
    use paddock_store::{OnTimeout as StoredOnTimeout, SandboxSpec};
    use serde_json::json;

    use super::*;

    /// The bytes a body goes out as (`common::json_status`: through `serde_json::Value`).
    fn wire<T: Serialize>(t: &T) -> String {
        serde_json::to_value(t).unwrap().to_string()
    }

    /// A paused sandbox with limits, metadata, an allow list, pause at timeout and auto-resume;
    /// `plain` is a running one with nothing set.
    fn records() -> (SandboxRecord, SandboxRecord) {
        let spec = SandboxSpec {
            memory_bytes: Some(512 << 20),
            cpu_millis: Some(1500),
            disk_bytes: Some(2 << 30),
            network: Some(NetworkPolicy::new(NetworkMode::Allow, &["pypi.org".into()]).unwrap()),
            ports_public: false,
            on_timeout: StoredOnTimeout::Pause,
            auto_pause_mode: Some(PauseMode::Filesystem),
            auto_resume: true,
            ..SandboxSpec::default()
        };
        let full = SandboxRecord {
            id: "abcdefghij0123456789".into(),
            tenant: "t".into(),
            key_id: "k".into(),
            template: "code-interpreter".into(),
            state: SandboxState::Paused,
            stop_reason: None,
            spec,
            metadata: BTreeMap::from([("user".to_owned(), "a b".to_owned())]),
            env_keys: Vec::new(),
            created_at: 1_000,
            ready_at: Some(2_500),
            expires_at: Some(302_500),
            stopped_at: None,
            warnings_sent: 0,
            webhook_url: None,
        };
        let plain = SandboxRecord {
            id: "0123456789abcdefghij".into(),
            template: "base".into(),
            state: SandboxState::Running,
            spec: SandboxSpec {
                ports_public: true,
                network: Some(NetworkPolicy::all()),
                ..SandboxSpec::default()
            },
            metadata: BTreeMap::new(),
            ready_at: None,
            expires_at: None,
            ..full.clone()
        };
        (full, plain)
    }

    /// What `control::sandbox_json` built, the access token given.
    fn old_sandbox_json(token: &str, r: &SandboxRecord, domain: &str) -> Value {
        json!({
            "templateID": r.template,
            "sandboxID": r.id,
            "clientID": CLIENT_ID,
            "alias": r.template,
            "envdVersion": ENVD_VERSION,
            "envdAccessToken": token,
            "trafficAccessToken": (!r.spec.ports_public).then(|| token.to_owned()),
            "domain": domain,
        })
    }

    /// What `control::listed_json` built.
    fn old_listed_json(token: &str, r: &SandboxRecord, detail: bool, domain: &str) -> Value {
        let mut v = json!({
            "templateID": r.template,
            "alias": r.template,
            "sandboxID": r.id,
            "clientID": CLIENT_ID,
            "startedAt": rfc3339(Some(r.ready_at.unwrap_or(r.created_at))),
            "endAt": rfc3339(Some(r.expires_at.or(r.stopped_at).unwrap_or(r.created_at))),
            "cpuCount": cpu_count(r),
            "memoryMB": r.spec.memory_bytes.unwrap_or(0) >> 20,
            "diskSizeMB": r.spec.disk_bytes.unwrap_or(0) >> 20,
            "state": if r.state == SandboxState::Paused { "paused" } else { "running" },
            "envdVersion": ENVD_VERSION,
            "metadata": r.metadata,
            "domain": domain,
            "allowInternetAccess": r.spec.network().mode == paddock_core::NetworkMode::All,
            "lifecycle": {
                "autoResume": paddock_service::pausing::auto_resume(r),
                "onTimeout": if paddock_service::pausing::pause_on_timeout(r).is_some() { "pause" } else { "kill" },
            },
        });
        if detail {
            v["envdAccessToken"] = Value::String(token.to_owned());
        }
        v
    }

    /// Create's and connect's `Sandbox`, listed sandboxes and `SandboxDetail` are the `json!`
    /// bodies they replaced, key order and null `trafficAccessToken` included.
    #[test]
    fn sandboxes_serialise_as_before() {
        let (full, plain) = records();
        for r in [&full, &plain] {
            assert_eq!(
                wire(&SandboxBody::of(r, "tok".into(), "localhost:7070")),
                old_sandbox_json("tok", r, "localhost:7070").to_string()
            );
            assert_eq!(
                wire(&ListedSandbox::of(r, None, "example.com")),
                old_listed_json("tok", r, false, "example.com").to_string()
            );
            assert_eq!(
                wire(&ListedSandbox::of(r, Some("tok".into()), "example.com")),
                old_listed_json("tok", r, true, "example.com").to_string()
            );
        }
        assert_eq!(
            wire(&SandboxBody::of(&plain, "tok".into(), "d")),
            format!(
                r#"{{"alias":"base","clientID":"paddock","domain":"d","envdAccessToken":"tok","envdVersion":"{ENVD_VERSION}","sandboxID":"0123456789abcdefghij","templateID":"base","trafficAccessToken":null}}"#
            )
        );
        let listed = wire(&ListedSandbox::of(&full, None, "d"));
        assert!(listed.contains(r#""lifecycle":{"autoResume":true,"onTimeout":"pause"}"#));
        assert!(listed.contains(r#""state":"paused""#) && listed.contains(r#""cpuCount":2"#));
    }

    /// A metric sample is the `json!` body it replaced (`cpuUsedPct` a float, `memCache` 0).
    #[test]
    fn a_metric_serialises_as_before() {
        let (r, _) = records();
        let (at_ms, pct, mem, disk) = (5_250i64, 12.5f64, 300u64 << 20, Some(7u64 << 20));
        let unix = at_ms / 1000;
        let old = json!({
            "timestamp": rfc3339(Some(at_ms)),
            "timestampUnix": unix,
            "cpuCount": cpu_count(&r),
            "cpuUsedPct": pct,
            "memUsed": mem,
            "memTotal": r.spec.memory_bytes.unwrap_or(0),
            "memCache": 0,
            "diskUsed": disk.unwrap_or(0),
            "diskTotal": r.spec.disk_bytes.unwrap_or(0),
        });
        let new = SandboxMetric {
            cpu_count: cpu_count(&r),
            cpu_used_pct: pct,
            disk_total: r.spec.disk_bytes.unwrap_or(0),
            disk_used: disk.unwrap_or(0),
            mem_cache: 0,
            mem_total: r.spec.memory_bytes.unwrap_or(0),
            mem_used: mem,
            timestamp: rfc3339(Some(at_ms)),
            timestamp_unix: unix,
        };
        assert_eq!(wire(&new), old.to_string());
        // A whole percentage stays a float, as `json!` kept it.
        let whole = SandboxMetric {
            cpu_used_pct: 100.0,
            ..new
        };
        assert!(wire(&whole).contains(r#""cpuUsedPct":100.0"#));
    }

    /// A secret is the `json!` body it replaced: never its value.
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
        let old = json!({
            "secretID": s.id,
            "name": s.name,
            "currentVersion": s.current_version,
            "metadata": s.metadata,
            "createdAt": rfc3339(Some(s.created_at)),
            "updatedAt": rfc3339(Some(s.updated_at)),
        });
        assert_eq!(wire(&SecretBody::from(&s)), old.to_string());
    }

    /// Snapshots, fork results (a child or its error) and the error body are the `json!`
    /// bodies they replaced.
    #[test]
    fn snapshots_forks_and_errors_serialise_as_before() {
        let name = "snap-1";
        assert_eq!(
            wire(&SnapshotInfo::of(name)),
            json!({ "snapshotID": name, "names": [name] }).to_string()
        );
        let (r, _) = records();
        let e = crate::error::ApiError::Conflict("no room".into());
        let items = vec![
            ForkResult::Sandbox(Box::new(SandboxBody::of(&r, "tok".into(), "d"))),
            ForkResult::Error(ErrorBody {
                code: e.status_code().0.as_u16(),
                message: e.to_string(),
            }),
        ];
        let old = json!([
            { "sandbox": old_sandbox_json("tok", &r, "d") },
            { "error": { "code": e.status_code().0.as_u16(), "message": e.to_string() } },
        ]);
        assert_eq!(wire(&items), old.to_string());
        let status = axum::http::StatusCode::TOO_MANY_REQUESTS;
        assert_eq!(
            wire(&ErrorBody {
                code: status.as_u16(),
                message: "slow down".into(),
            }),
            json!({ "code": status.as_u16(), "message": "slow down" }).to_string()
        );
    }
}
