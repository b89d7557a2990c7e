//! A sandbox's create parameters and pause state as the store keeps them: [`SandboxSpec`],
//! stored as JSON in the `spec` column of `sandboxes`, and the closed vocabularies of a
//! record ([`StopReason`]).
//!
//! The spec is versioned ([`SPEC_VERSION`]). Rows written before the version field existed
//! have none and read as version 1; every field is optional or defaulted so those rows (and
//! those of older servers that wrote fewer fields) still load. A row with a newer version
//! than this server knows is refused as corrupt instead of being misread. Keys this version
//! does not know are ignored on read (and dropped on the next write).

use std::collections::BTreeMap;
use std::fmt;

use paddock_core::{Isolation, NetworkPolicy, PauseMode};
use serde::{Deserialize, Serialize};

/// The spec version this crate writes and the newest it reads.
pub const SPEC_VERSION: u32 = 1;

fn v1() -> u32 {
    1
}

/// What the sandbox's timeout does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// Destroy it (reason `expired`).
    #[default]
    Kill,
    /// Pause it, in [`SandboxSpec::auto_pause_mode`].
    Pause,
}

impl OnTimeout {
    pub fn as_str(self) -> &'static str {
        match self {
            OnTimeout::Kill => "kill",
            OnTimeout::Pause => "pause",
        }
    }
}

/// A volume mounted into the sandbox, as recorded at create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecVolume {
    /// The volume's name or id, as the create named it.
    pub name: String,
    /// Absolute path inside the sandbox.
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A tenant secret given to the sandbox, as recorded at create (the name, never the value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecSecret {
    /// The secret's name (or id).
    pub secret: String,
    /// As a file `/run/secrets/<key>` instead of an env var.
    #[serde(default)]
    pub file: bool,
}

/// A sandbox's create parameters (no env values) and its pause state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// The layout of this spec; [`SPEC_VERSION`] when written by this crate, 1 when absent.
    #[serde(default = "v1")]
    pub version: u32,
    /// The timeout the sandbox was given (at create, or last set), in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<i64>,
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    #[serde(default)]
    pub cpu_millis: Option<u32>,
    #[serde(default)]
    pub pids: Option<u32>,
    #[serde(default)]
    pub disk_bytes: Option<u64>,
    #[serde(default)]
    pub tmp_bytes: Option<u64>,
    /// The user commands run as by default.
    #[serde(default)]
    pub user: Option<String>,
    /// The network policy (None: rows that predate it, which had no network).
    #[serde(default)]
    pub network: Option<NetworkPolicy>,
    /// The isolation backend it runs on (None: rows that predate it, `native`).
    #[serde(default)]
    pub isolation: Option<Isolation>,
    /// Every port is public (E2B creates unless they say otherwise).
    #[serde(default)]
    pub ports_public: bool,
    /// The ports marked public one by one, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_ports: Vec<u16>,
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// The mode a timeout pauses in when [`OnTimeout::Pause`] (None: `full`).
    #[serde(default)]
    pub auto_pause_mode: Option<PauseMode>,
    /// A paused sandbox resumes on its first data-plane request.
    #[serde(default)]
    pub auto_resume: bool,
    #[serde(default)]
    pub volumes: Vec<SpecVolume>,
    /// Env var or file name → secret.
    #[serde(default)]
    pub secrets: BTreeMap<String, SpecSecret>,
    /// The fleet node holding it (None on a single host).
    #[serde(default)]
    pub node: Option<String>,
    /// While paused: the mode it was paused in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_mode: Option<PauseMode>,
    /// While paused: when it was paused (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<i64>,
    /// While paused: what was left of its timeout at the pause, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_ms: Option<i64>,
}

impl Default for SandboxSpec {
    fn default() -> SandboxSpec {
        SandboxSpec {
            version: SPEC_VERSION,
            timeout_ms: None,
            memory_bytes: None,
            cpu_millis: None,
            pids: None,
            disk_bytes: None,
            tmp_bytes: None,
            user: None,
            network: None,
            isolation: None,
            ports_public: false,
            public_ports: Vec::new(),
            on_timeout: OnTimeout::Kill,
            auto_pause_mode: None,
            auto_resume: false,
            volumes: Vec::new(),
            secrets: BTreeMap::new(),
            node: None,
            paused_mode: None,
            paused_at: None,
            remaining_ms: None,
        }
    }
}

impl SandboxSpec {
    /// Reads a stored spec, checking its version.
    pub fn from_stored(s: &str) -> Result<SandboxSpec, String> {
        if !s.trim_start().starts_with('{') {
            return Err("a sandbox spec is a JSON object".into());
        }
        let spec: SandboxSpec = serde_json::from_str(s).map_err(|e| e.to_string())?;
        if spec.version == 0 || spec.version > SPEC_VERSION {
            return Err(format!(
                "spec version {} is not one this server reads (1 to {SPEC_VERSION})",
                spec.version
            ));
        }
        Ok(spec)
    }

    /// The spec as stored (always at [`SPEC_VERSION`]).
    pub fn to_stored(&self) -> String {
        let mut s = self.clone();
        s.version = SPEC_VERSION;
        serde_json::to_string(&s).unwrap_or_else(|_| "{}".into())
    }

    /// The network policy (none for rows that predate it).
    pub fn network(&self) -> NetworkPolicy {
        self.network.clone().unwrap_or_else(NetworkPolicy::none)
    }

    /// The isolation backend (`native` for rows that predate it).
    pub fn isolation(&self) -> Isolation {
        self.isolation.unwrap_or_default()
    }

    /// What a timeout does: `Some(mode)` pauses, `None` kills.
    pub fn pause_on_timeout(&self) -> Option<PauseMode> {
        (self.on_timeout == OnTimeout::Pause)
            .then(|| self.auto_pause_mode.unwrap_or(PauseMode::Full))
    }

    /// Forgets the pause state (at resume).
    pub fn clear_paused(&mut self) {
        self.paused_mode = None;
        self.paused_at = None;
        self.remaining_ms = None;
    }
}

/// Why a sandbox stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopReason {
    /// Deleted through the API.
    Killed,
    /// Its timeout (or a paused sandbox's retention) ran out.
    Expired,
    /// Its create or its start command failed, or its agent died.
    Failed,
    /// Its agent died after the kernel's OOM killer ran in it.
    Oom,
    /// Gone after a restart of the server or its node.
    Lost,
    /// The server shut down with `--kill-on-shutdown`.
    Shutdown,
}

impl StopReason {
    pub const ALL: [StopReason; 6] = [
        StopReason::Killed,
        StopReason::Expired,
        StopReason::Failed,
        StopReason::Oom,
        StopReason::Lost,
        StopReason::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Killed => "killed",
            StopReason::Expired => "expired",
            StopReason::Failed => "failed",
            StopReason::Oom => "oom",
            StopReason::Lost => "lost",
            StopReason::Shutdown => "shutdown",
        }
    }

    pub fn parse(s: &str) -> Option<StopReason> {
        StopReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Specs as servers before the version field wrote them, copied from real data
    /// directories: this session's create (every field) and an older server's (fewer
    /// fields, no version).
    const STORED_FULL: &str = r#"{"auto_pause_mode":null,"auto_resume":false,"cpu_millis":1000,"disk_bytes":2147483648,"isolation":"native","memory_bytes":536870912,"network":{"allow":[],"mode":"none"},"node":null,"on_timeout":"kill","pids":512,"ports_public":false,"secrets":{},"timeout_ms":300000,"tmp_bytes":268435456,"user":"user","volumes":[]}"#;
    const STORED_OLD: &str = r#"{"cpu_millis":1000,"disk_bytes":2147483648,"memory_bytes":536870912,"network":{"allow":[],"mode":"all"},"pids":512,"ports_public":true,"timeout_ms":120000,"tmp_bytes":268435456,"user":"user"}"#;
    const STORED_PAUSED: &str = r#"{"auto_pause_mode":"filesystem","auto_resume":true,"cpu_millis":500,"disk_bytes":1073741824,"isolation":"gvisor","memory_bytes":268435456,"network":{"allow":["10.1.0.0/16","pypi.org"],"mode":"allow"},"node":"n1","on_timeout":"pause","pids":64,"ports_public":false,"public_ports":[8080,3000],"secrets":{"TOKEN":{"secret":"gh","file":false}},"timeout_ms":60000,"tmp_bytes":1048576,"user":"root","volumes":[{"name":"data","path":"/data","read_only":true}],"paused_mode":"full","paused_at":1700000000000,"remaining_ms":42000}"#;

    #[test]
    fn specs_stored_before_versioning_load() {
        let s = SandboxSpec::from_stored(STORED_FULL).unwrap();
        assert_eq!(s.version, 1);
        assert_eq!(s.timeout_ms, Some(300_000));
        assert_eq!(s.memory_bytes, Some(536_870_912));
        assert_eq!(s.cpu_millis, Some(1000));
        assert_eq!(s.pids, Some(512));
        assert_eq!(s.user.as_deref(), Some("user"));
        assert_eq!(s.network(), NetworkPolicy::none());
        assert_eq!(s.isolation(), Isolation::Native);
        assert_eq!(s.pause_on_timeout(), None);

        let s = SandboxSpec::from_stored(STORED_OLD).unwrap();
        assert_eq!(s.version, 1);
        assert!(s.ports_public);
        assert_eq!(s.network(), NetworkPolicy::all());
        assert_eq!(s.isolation, None);
        assert_eq!(s.node, None);

        let s = SandboxSpec::from_stored(STORED_PAUSED).unwrap();
        assert_eq!(s.pause_on_timeout(), Some(PauseMode::Filesystem));
        assert_eq!(s.paused_mode, Some(PauseMode::Full));
        assert_eq!(s.remaining_ms, Some(42_000));
        assert_eq!(s.public_ports, vec![8080, 3000]);
        assert_eq!(s.secrets["TOKEN"].secret, "gh");
        assert_eq!(s.volumes[0].name, "data");
        assert_eq!(s.node.as_deref(), Some("n1"));
        assert_eq!(s.isolation(), Isolation::Gvisor);
    }

    #[test]
    fn a_stored_spec_round_trips_with_its_version() {
        for raw in [STORED_FULL, STORED_OLD, STORED_PAUSED] {
            let s = SandboxSpec::from_stored(raw).unwrap();
            let again = s.to_stored();
            let v: serde_json::Value = serde_json::from_str(&again).unwrap();
            assert_eq!(v["version"], SPEC_VERSION);
            assert_eq!(SandboxSpec::from_stored(&again).unwrap(), s);
        }
    }

    #[test]
    fn a_newer_spec_version_is_refused() {
        let e = SandboxSpec::from_stored(r#"{"version": 2}"#).unwrap_err();
        assert!(e.contains("spec version 2"), "{e}");
        assert!(SandboxSpec::from_stored(r#"{"version": 0}"#).is_err());
        assert!(SandboxSpec::from_stored("[]").is_err());
    }

    #[test]
    fn stop_reasons_round_trip() {
        for r in StopReason::ALL {
            assert_eq!(StopReason::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert_eq!(StopReason::parse("deleted"), None);
    }
}
