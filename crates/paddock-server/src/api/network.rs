//! `/v1/sandboxes/{id}/network`: a sandbox's network policy, read and changed while it
//! runs. The wire types here are what clients send and see; requests convert into
//! `paddock_core::NetworkPolicy` with its validation ([`NetworkPolicyBody::into_policy`]).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use paddock_core::{MAX_ALLOW, NetworkMode, NetworkPolicy};
use paddock_store::SandboxRecord;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Json;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::wire::json_response;
use paddock_service::lifecycle;
use paddock_service::state::AppState;

/// How a sandbox reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkModeWire {
    None,
    Allow,
    All,
}

impl From<NetworkModeWire> for NetworkMode {
    fn from(m: NetworkModeWire) -> NetworkMode {
        match m {
            NetworkModeWire::None => NetworkMode::None,
            NetworkModeWire::Allow => NetworkMode::Allow,
            NetworkModeWire::All => NetworkMode::All,
        }
    }
}

impl From<NetworkMode> for NetworkModeWire {
    fn from(m: NetworkMode) -> NetworkModeWire {
        match m {
            NetworkMode::None => NetworkModeWire::None,
            NetworkMode::Allow => NetworkModeWire::Allow,
            NetworkMode::All => NetworkModeWire::All,
        }
    }
}

/// A sandbox's network policy, as sent (create, `PUT .../network`) and shown.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NetworkPolicy)]
pub struct NetworkPolicyBody {
    /// none: loopback only (default). allow: only the listed CIDRs and names. all: the
    /// internet, never the host, other sandboxes, link-local, metadata or private ranges
    /// (unless listed).
    #[schema(inline)]
    pub mode: NetworkModeWire,
    /// IPv4 CIDRs (`10.1.0.0/16`, `1.2.3.4`) and, in mode allow, domain names (`pypi.org`,
    /// `*.pythonhosted.org`).
    #[serde(default)]
    #[schema(max_items = 256)]
    pub allow: Vec<String>,
}

impl NetworkPolicyBody {
    /// The policy, every entry checked (at most [`MAX_ALLOW`] entries; CIDRs and names;
    /// IPv4 only; none takes no list; all takes only CIDRs). A bad policy answers 400
    /// `invalid_json`, as when the policy was decoded straight off the wire.
    pub fn into_policy(self) -> ApiResult<NetworkPolicy> {
        debug_assert_eq!(MAX_ALLOW, 256, "the schema's maxItems");
        NetworkPolicy::new(self.mode.into(), &self.allow)
            .map_err(|e| ApiError::InvalidJson(format!("invalid JSON body: network: {e}")))
    }
}

impl From<&NetworkPolicy> for NetworkPolicyBody {
    fn from(p: &NetworkPolicy) -> NetworkPolicyBody {
        NetworkPolicyBody {
            mode: p.mode.into(),
            allow: p.allow_list(),
        }
    }
}

/// A sandbox's network: its policy and its address.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NetworkState {
    pub network: NetworkPolicyBody,
    /// The sandbox's IPv4 address on its link.
    pub address: Option<String>,
}

impl NetworkState {
    fn of(state: &AppState, r: &SandboxRecord) -> NetworkState {
        NetworkState {
            network: NetworkPolicyBody::from(&r.spec.network()),
            address: state
                .runtime
                .get(&r.id)
                .ok()
                .and_then(|s| s.address())
                .map(|a| a.to_string()),
        }
    }

    fn response(self) -> Response {
        json_response(
            StatusCode::OK,
            serde_json::to_value(self).unwrap_or_default(),
        )
    }
}

/// A sandbox's network policy and address
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/network",
    tag = "network",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "The policy, and the sandbox's IPv4 address on its link (null in mode none)", body = NetworkState),
        (status = 404, description = "No such sandbox"),
    )
)]
pub(crate) async fn get_network(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let r = state.record_for(&caller, &id).await?;
    Ok(NetworkState::of(&state, &r).response())
}

/// Change a running sandbox's network policy
///
/// Applied at once. Going to `none` removes the sandbox's link (open connections die);
/// leaving `none` creates one. In `allow` mode, domain names are enforced by the sandbox's
/// own resolver, which pins the addresses of allowed names into its firewall set.
#[utoipa::path(
    put,
    path = "/v1/sandboxes/{id}/network",
    tag = "network",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = NetworkPolicyBody,
    responses(
        (status = 200, description = "The new state", body = NetworkState),
        (status = 400, description = "Bad mode or allow entry"),
        (status = 404, description = "No such sandbox"),
        (status = 409, description = "The sandbox is not running"),
    )
)]
pub(crate) async fn put_network(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<NetworkPolicyBody>,
) -> ApiResult<Response> {
    let policy = body.into_policy()?;
    let detail = format!("mode={}", policy.mode);
    let res: ApiResult<_> = async {
        let mut r = state.record_for(&caller, &id).await?;
        lifecycle::set_network(&state, &mut r, policy).await?;
        Ok(r)
    }
    .await;
    let r = state
        .audited(&caller, "sandbox.network", Some(&id), Some(detail), res)
        .await?;
    Ok(NetworkState::of(&state, &r).response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_convert_with_the_policys_checks() {
        let ok: NetworkPolicyBody =
            serde_json::from_str(r#"{"mode":"allow","allow":["pypi.org","10.9.0.0/16"]}"#).unwrap();
        let p = ok.into_policy().unwrap();
        assert_eq!(p.allow_list(), ["10.9.0.0/16", "pypi.org"]);
        assert_eq!(
            serde_json::to_value(NetworkPolicyBody::from(&p)).unwrap(),
            serde_json::json!({"mode": "allow", "allow": ["10.9.0.0/16", "pypi.org"]})
        );
        for bad in [
            r#"{"mode":"none","allow":["1.2.3.4"]}"#,
            r#"{"mode":"all","allow":["example.com"]}"#,
            r#"{"mode":"allow","allow":["fd00::/8"]}"#,
        ] {
            let b: NetworkPolicyBody = serde_json::from_str(bad).unwrap();
            let e = b.into_policy().unwrap_err();
            assert!(matches!(e, ApiError::InvalidJson(_)), "{bad}: {e:?}");
        }
        for bad in [r#"{"mode":"some"}"#, r#"{"mode":"all","extra":1}"#, r#"{}"#] {
            assert!(
                serde_json::from_str::<NetworkPolicyBody>(bad).is_err(),
                "{bad}"
            );
        }
    }
}
