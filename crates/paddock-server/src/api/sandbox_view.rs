//! The wire form of a sandbox (`Sandbox` in the OpenAPI document): what create, get, list,
//! pause, resume and friends answer. Built from the store's typed record field by field.

use std::collections::BTreeMap;

use paddock_core::{Isolation, PauseMode};
use paddock_store::{OnTimeout, SandboxRecord, SandboxState, StopReason};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::network::NetworkPolicyBody;
use crate::wire::rfc3339;
use paddock_service::state::AppState;

/// The path parameter of every `/v1/sandboxes/{id}/...` route, for the OpenAPI document.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct SandboxIdPath {
    /// Sandbox id
    #[param(pattern = "^[a-z0-9]{20}$")]
    pub id: String,
}

/// A sandbox's state.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StateWire {
    Starting,
    Running,
    Paused,
    Stopped,
}

/// Why a sandbox stopped.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StopReasonWire {
    Killed,
    Expired,
    Failed,
    Oom,
    Lost,
    Shutdown,
}

/// How a paused sandbox is paused.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PauseModeWire {
    Full,
    Filesystem,
}

/// What a sandbox's timeout does.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeoutWire {
    Kill,
    Pause,
}

/// The isolation backend a sandbox runs on.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IsolationWire {
    Native,
    Gvisor,
}

impl From<SandboxState> for StateWire {
    fn from(s: SandboxState) -> StateWire {
        match s {
            SandboxState::Starting => StateWire::Starting,
            SandboxState::Running => StateWire::Running,
            SandboxState::Paused => StateWire::Paused,
            SandboxState::Stopped => StateWire::Stopped,
        }
    }
}

impl From<StopReason> for StopReasonWire {
    fn from(r: StopReason) -> StopReasonWire {
        match r {
            StopReason::Killed => StopReasonWire::Killed,
            StopReason::Expired => StopReasonWire::Expired,
            StopReason::Failed => StopReasonWire::Failed,
            StopReason::Oom => StopReasonWire::Oom,
            StopReason::Lost => StopReasonWire::Lost,
            StopReason::Shutdown => StopReasonWire::Shutdown,
        }
    }
}

impl From<PauseMode> for PauseModeWire {
    fn from(m: PauseMode) -> PauseModeWire {
        match m {
            PauseMode::Full => PauseModeWire::Full,
            PauseMode::Filesystem => PauseModeWire::Filesystem,
        }
    }
}

impl From<OnTimeout> for OnTimeoutWire {
    fn from(o: OnTimeout) -> OnTimeoutWire {
        match o {
            OnTimeout::Kill => OnTimeoutWire::Kill,
            OnTimeout::Pause => OnTimeoutWire::Pause,
        }
    }
}

impl From<Isolation> for IsolationWire {
    fn from(i: Isolation) -> IsolationWire {
        match i {
            Isolation::Native => IsolationWire::Native,
            Isolation::Gvisor => IsolationWire::Gvisor,
        }
    }
}

/// A sandbox's limits.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LimitsView {
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u32>,
    pub pids: Option<u32>,
    pub disk_bytes: Option<u64>,
}

/// A sandbox.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Sandbox)]
pub struct SandboxView {
    pub id: String,
    pub template: String,
    #[schema(inline)]
    pub state: StateWire,
    #[schema(inline)]
    pub stop_reason: Option<StopReasonWire>,
    pub metadata: BTreeMap<String, String>,
    pub env_keys: Vec<String>,
    pub user: Option<String>,
    #[schema(inline)]
    pub limits: LimitsView,
    /// Its timeout in seconds.
    pub timeout: Option<i64>,
    /// How a paused sandbox is paused: `full` (frozen, memory kept) or `filesystem`
    /// (processes stopped, files kept); null unless paused
    #[schema(inline)]
    pub paused_mode: Option<PauseModeWire>,
    /// What its timeout does
    #[schema(inline)]
    pub on_timeout: OnTimeoutWire,
    /// A paused sandbox resumes on its first data-plane request (E2B envd, port proxy)
    pub auto_resume: bool,
    pub network: NetworkPolicyBody,
    #[schema(inline)]
    pub isolation: IsolationWire,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: serde_json::Value,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ready_at: serde_json::Value,
    /// When it is destroyed. While paused: the end of its retention (`--paused-retention`,
    /// default 30 days).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: serde_json::Value,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub stopped_at: serde_json::Value,
    pub domain: String,
    /// Id of the fleet node holding it; null on a single host
    pub node: Option<String>,
}

impl SandboxView {
    pub fn of(state: &AppState, r: &SandboxRecord) -> SandboxView {
        let spec = &r.spec;
        SandboxView {
            id: r.id.clone(),
            template: r.template.clone(),
            state: r.state.into(),
            stop_reason: r.stop_reason.map(Into::into),
            metadata: r.metadata.clone(),
            env_keys: r.env_keys.clone(),
            user: spec.user.clone(),
            limits: LimitsView {
                memory_bytes: spec.memory_bytes,
                cpu_millis: spec.cpu_millis,
                pids: spec.pids,
                disk_bytes: spec.disk_bytes,
            },
            timeout: spec.timeout_ms.map(|ms| ms / 1000),
            paused_mode: spec.paused_mode.map(Into::into),
            on_timeout: spec.on_timeout.into(),
            auto_resume: spec.auto_resume,
            network: NetworkPolicyBody::from(&spec.network()),
            isolation: spec.isolation().into(),
            created_at: rfc3339(Some(r.created_at)),
            ready_at: rfc3339(r.ready_at),
            expires_at: rfc3339(r.expires_at),
            stopped_at: rfc3339(r.stopped_at),
            domain: state.cfg.domain.clone(),
            node: spec.node.clone(),
        }
    }
}
