//! The typed parts of a create's body (`NewSandboxV2`) that Paddock reads beyond plain
//! fields, `autoResume`, `network` and `volumeMounts`, and their checks. Their wrong shapes
//! are refused by these checks (which the create runs inside its audited task, with their
//! own messages), never by the body parser, so each is read as a [`Shaped`] value.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::error::ApiError;

/// A field read as `T` when it has `T`'s shape, or else why it has not (the message
/// `serde_json::from_value` gives), for the create's checks to refuse or ignore.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::e2b) enum Shaped<T> {
    Is(T),
    Not(String),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Shaped<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Any JSON value is taken; only then is it read as a `T`.
        let v = serde_json::Value::deserialize(d)?;
        Ok(match T::deserialize(v) {
            Ok(t) => Shaped::Is(t),
            Err(e) => Shaped::Not(e.to_string()),
        })
    }
}

/// `autoResume: {"enabled": bool}`. Any other key is ignored; a value that is not an object
/// is "not enabled".
#[derive(Debug, Default, Clone, PartialEq)]
pub(in crate::e2b) struct AutoResume {
    /// `enabled`, absent or null as None.
    pub enabled: Option<Shaped<bool>>,
}

impl<'de> Deserialize<'de> for AutoResume {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AutoResume;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<AutoResume, A::Error> {
                let mut out = AutoResume::default();
                while let Some(k) = m.next_key::<String>()? {
                    if k == "enabled" {
                        out.enabled = m.next_value()?;
                    } else {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// E2B's `network` object as far as Paddock reads it; a key with a null value counts as
/// absent.
#[derive(Debug, Default, Clone, PartialEq)]
pub(in crate::e2b) struct NetworkBody {
    /// `allowPublicTraffic` (public when absent).
    pub allow_public_traffic: Option<bool>,
    /// `allowOut`: CIDRs and names.
    pub allow_out: Option<Shaped<Vec<Shaped<String>>>>,
    /// `denyOut`: only `["0.0.0.0/0"]` is supported.
    pub deny_out: Option<Shaped<Vec<Shaped<String>>>>,
    /// `maskRequestHost` is set (not supported).
    pub mask_request_host: bool,
    /// The other keys with a value, and `allowPublicTraffic` when it is not a boolean: none
    /// is supported (the first in key order is named).
    pub unsupported: BTreeSet<String>,
}

impl<'de> Deserialize<'de> for NetworkBody {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NetworkBody;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<NetworkBody, A::Error> {
                let mut n = NetworkBody::default();
                while let Some(k) = m.next_key::<String>()? {
                    n.unsupported.remove(&k);
                    match k.as_str() {
                        "allowPublicTraffic" => {
                            n.allow_public_traffic = None;
                            match m.next_value::<Option<Shaped<bool>>>()? {
                                Some(Shaped::Is(b)) => n.allow_public_traffic = Some(b),
                                Some(Shaped::Not(_)) => {
                                    n.unsupported.insert(k);
                                }
                                None => {}
                            }
                        }
                        "allowOut" => n.allow_out = m.next_value()?,
                        "denyOut" => n.deny_out = m.next_value()?,
                        "maskRequestHost" => {
                            n.mask_request_host = m.next_value::<Option<IgnoredAny>>()?.is_some();
                        }
                        _ => {
                            if m.next_value::<Option<IgnoredAny>>()?.is_some() {
                                n.unsupported.insert(k);
                            }
                        }
                    }
                }
                Ok(n)
            }
        }
        d.deserialize_map(V)
    }
}

/// `autoResume.enabled`: not an object, or no `enabled`, is not enabled.
pub(in crate::e2b) fn auto_resume_enabled(
    a: Option<&Shaped<AutoResume>>,
) -> Result<bool, ApiError> {
    match a {
        Some(Shaped::Is(AutoResume {
            enabled: Some(enabled),
        })) => match enabled {
            Shaped::Is(b) => Ok(*b),
            Shaped::Not(_) => Err(ApiError::BadRequest(
                "autoResume.enabled must be a boolean".into(),
            )),
        },
        _ => Ok(false),
    }
}

/// `volumeMounts: [{"name", "path"}]`: read-write mounts of the tenant's volumes.
pub(in crate::e2b) fn volume_uses(
    mounts: Option<Vec<Shaped<paddock_service::volumes::VolumeUse>>>,
) -> Result<Vec<paddock_service::volumes::VolumeUse>, ApiError> {
    mounts
        .unwrap_or_default()
        .into_iter()
        .map(|m| match m {
            Shaped::Is(m) => Ok(m),
            Shaped::Not(e) => Err(ApiError::BadRequest(format!("volumeMounts: {e}"))),
        })
        .collect()
}

/// Maps E2B's `allow_internet_access` and `network` onto Paddock: (all ports public, policy).
///
/// - Internet access is E2B's default (mode `all`); `allow_internet_access: false` is `none`.
/// - Ports are public unless `allowPublicTraffic: false` (then they need the traffic token).
/// - `denyOut: ["0.0.0.0/0"]` with `allowOut` is an allow list (mode `allow`, CIDRs and
///   names); `allowOut` alone opens CIDRs in mode `all` (private ranges, say). Other deny
///   lists, DNS server lists, egress proxies, transform rules and HTTPS ports are refused.
pub(in crate::e2b) fn e2b_network(
    n: Option<&Shaped<NetworkBody>>,
    internet: Option<bool>,
) -> Result<(bool, paddock_core::NetworkPolicy), ApiError> {
    use paddock_core::{NetworkMode, NetworkPolicy};
    let base = if internet == Some(false) {
        NetworkPolicy::none()
    } else {
        NetworkPolicy::all()
    };
    let n = match n {
        None => return Ok((true, base)),
        Some(Shaped::Is(n)) => n,
        Some(Shaped::Not(_)) => {
            return Err(ApiError::BadRequest("network must be an object".into()));
        }
    };
    if let Some(k) = n.unsupported.first() {
        return Err(ApiError::BadRequest(format!(
            "network.{k} is not supported by Paddock yet"
        )));
    }
    if n.mask_request_host {
        return Err(ApiError::BadRequest(
            "network.maskRequestHost is not supported by Paddock yet".into(),
        ));
    }
    let strings = |k: &str, list: &Option<Shaped<Vec<Shaped<String>>>>| match list {
        None => Ok(Vec::new()),
        Some(Shaped::Is(items)) => items
            .iter()
            .map(|v| match v {
                Shaped::Is(s) => Ok(s.clone()),
                Shaped::Not(_) => Err(ApiError::BadRequest(format!(
                    "network.{k} must list strings"
                ))),
            })
            .collect(),
        Some(Shaped::Not(_)) => Err(ApiError::BadRequest(format!("network.{k} must be a list"))),
    };
    let public = n.allow_public_traffic.unwrap_or(true);
    let (allow, deny) = (
        strings("allowOut", &n.allow_out)?,
        strings("denyOut", &n.deny_out)?,
    );
    let policy = match (deny.as_slice(), base.mode) {
        ([], _) if allow.is_empty() => base,
        (_, NetworkMode::None) => {
            return Err(ApiError::BadRequest(
                "network rules need internet access (allow_internet_access is false)".into(),
            ));
        }
        ([], _) => NetworkPolicy::new(NetworkMode::All, &allow).map_err(|e| {
            ApiError::BadRequest(format!(
                "network.allowOut: {e} (domain names need denyOut [\"0.0.0.0/0\"])"
            ))
        })?,
        ([d], _) if d == "0.0.0.0/0" => NetworkPolicy::new(NetworkMode::Allow, &allow)
            .map_err(|e| ApiError::BadRequest(format!("network.allowOut: {e}")))?,
        _ => {
            return Err(ApiError::BadRequest(
                "network.denyOut: only [\"0.0.0.0/0\"] (deny all but allowOut) is supported; \
                 private, link-local and metadata ranges are always denied"
                    .into(),
            ));
        }
    };
    Ok((public, policy))
}

#[cfg(test)]
mod tests {
    use paddock_core::{NetworkMode, NetworkPolicy};
    use serde_json::Value;

    use super::*;
    use paddock_service::volumes::VolumeUse;

    /// The fields of the create body these types replaced, read as before.
    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct OldBody {
        auto_resume: Option<Value>,
        network: Option<Value>,
        mcp: Option<Value>,
        volume_mounts: Option<Vec<Value>>,
    }

    /// The same fields as they are read now.
    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct NewBody {
        auto_resume: Option<Shaped<AutoResume>>,
        network: Option<Shaped<NetworkBody>>,
        mcp: Option<IgnoredAny>,
        volume_mounts: Option<Vec<Shaped<VolumeUse>>>,
    }

    /// The checks as they were, on JSON values.
    fn old_auto_resume(a: &Option<Value>) -> Result<bool, ApiError> {
        Ok(match a {
            None | Some(Value::Null) => false,
            Some(v) => match v.get("enabled") {
                Some(Value::Bool(b)) => *b,
                None | Some(Value::Null) => false,
                Some(_) => {
                    return Err(ApiError::BadRequest(
                        "autoResume.enabled must be a boolean".into(),
                    ));
                }
            },
        })
    }

    fn old_network(
        n: Option<&Value>,
        internet: Option<bool>,
    ) -> Result<(bool, NetworkPolicy), ApiError> {
        let base = if internet == Some(false) {
            NetworkPolicy::none()
        } else {
            NetworkPolicy::all()
        };
        let Some(n) = n else {
            return Ok((true, base));
        };
        let o = n
            .as_object()
            .ok_or_else(|| ApiError::BadRequest("network must be an object".into()))?;
        let strings = |k: &str| -> Result<Vec<String>, ApiError> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| {
                        v.as_str().map(str::to_owned).ok_or_else(|| {
                            ApiError::BadRequest(format!("network.{k} must list strings"))
                        })
                    })
                    .collect(),
                Some(_) => Err(ApiError::BadRequest(format!("network.{k} must be a list"))),
            }
        };
        let mut public = true;
        for (k, v) in o {
            match (k.as_str(), v) {
                ("allowPublicTraffic", Value::Bool(b)) => public = *b,
                ("allowOut" | "denyOut" | "maskRequestHost", _) | (_, Value::Null) => {}
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "network.{k} is not supported by Paddock yet"
                    )));
                }
            }
        }
        if o.get("maskRequestHost").is_some_and(|v| !v.is_null()) {
            return Err(ApiError::BadRequest(
                "network.maskRequestHost is not supported by Paddock yet".into(),
            ));
        }
        let (allow, deny) = (strings("allowOut")?, strings("denyOut")?);
        let policy = match (deny.as_slice(), base.mode) {
            ([], _) if allow.is_empty() => base,
            (_, NetworkMode::None) => {
                return Err(ApiError::BadRequest(
                    "network rules need internet access (allow_internet_access is false)".into(),
                ));
            }
            ([], _) => NetworkPolicy::new(NetworkMode::All, &allow).map_err(|e| {
                ApiError::BadRequest(format!(
                    "network.allowOut: {e} (domain names need denyOut [\"0.0.0.0/0\"])"
                ))
            })?,
            ([d], _) if d == "0.0.0.0/0" => NetworkPolicy::new(NetworkMode::Allow, &allow)
                .map_err(|e| ApiError::BadRequest(format!("network.allowOut: {e}")))?,
            _ => {
                return Err(ApiError::BadRequest(
                    "network.denyOut: only [\"0.0.0.0/0\"] (deny all but allowOut) is supported; \
                     private, link-local and metadata ranges are always denied"
                        .into(),
                ));
            }
        };
        Ok((public, policy))
    }

    fn old_volumes(m: Option<Vec<Value>>) -> Result<Vec<VolumeUse>, ApiError> {
        m.unwrap_or_default()
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<_, _>>()
            .map_err(|e| ApiError::BadRequest(format!("volumeMounts: {e}")))
    }

    /// An outcome as text: the value, or the error's status and message.
    fn outcome<T: fmt::Debug>(r: Result<T, ApiError>) -> String {
        match r {
            Ok(v) => format!("ok {v:?}"),
            Err(e) => format!("{} {e}", e.status_code().0),
        }
    }

    /// Every shape of `autoResume`, `network`, `mcp` and `volumeMounts` is accepted or refused
    /// as when they were JSON values, with the same message, at the same stage (the parser
    /// or the create's checks).
    #[test]
    fn create_fields_are_checked_as_before() {
        let cases = [
            r#"{}"#,
            r#"{"autoResume": null, "network": null, "mcp": null, "volumeMounts": null}"#,
            r#"{"autoResume": {"enabled": true}}"#,
            r#"{"autoResume": {"enabled": false, "other": [1]}}"#,
            r#"{"autoResume": {"enabled": null}}"#,
            r#"{"autoResume": {"enabled": "yes"}}"#,
            r#"{"autoResume": {"enabled": 1}}"#,
            r#"{"autoResume": {}}"#,
            r#"{"autoResume": true}"#,
            r#"{"autoResume": [true]}"#,
            r#"{"autoResume": "x"}"#,
            r#"{"network": {}}"#,
            r#"{"network": "x"}"#,
            r#"{"network": [true]}"#,
            r#"{"network": 5}"#,
            r#"{"network": {"allowPublicTraffic": false}}"#,
            r#"{"network": {"allowPublicTraffic": null}}"#,
            r#"{"network": {"allowPublicTraffic": "no"}}"#,
            r#"{"network": {"allowPublicTraffic": "no", "zzz": 1}}"#,
            r#"{"network": {"aaa": 1, "allowPublicTraffic": "no"}}"#,
            r#"{"network": {"dnsServers": ["1.1.1.1"], "transform": {}}}"#,
            r#"{"network": {"dnsServers": null}}"#,
            r#"{"network": {"maskRequestHost": "h"}}"#,
            r#"{"network": {"maskRequestHost": null}}"#,
            r#"{"network": {"maskRequestHost": "h", "zzz": 1}}"#,
            r#"{"network": {"allowOut": ["10.0.0.0/8"]}}"#,
            r#"{"network": {"allowOut": ["pypi.org"]}}"#,
            r#"{"network": {"allowOut": ["pypi.org"], "denyOut": ["0.0.0.0/0"]}}"#,
            r#"{"network": {"allowOut": [], "denyOut": ["0.0.0.0/0"]}}"#,
            r#"{"network": {"denyOut": ["10.0.0.0/8"]}}"#,
            r#"{"network": {"allowOut": "pypi.org"}}"#,
            r#"{"network": {"allowOut": [1]}}"#,
            r#"{"network": {"allowOut": [null], "denyOut": 3}}"#,
            r#"{"network": {"allowOut": null, "denyOut": ["0.0.0.0/0", "::/0"]}}"#,
            r#"{"network": {"allowOut": {"a": 1}}}"#,
            r#"{"mcp": {}}"#,
            r#"{"mcp": false}"#,
            r#"{"volumeMounts": []}"#,
            r#"{"volumeMounts": [{"name": "v", "path": "/mnt/v"}]}"#,
            r#"{"volumeMounts": [{"volume": "v", "path": "/mnt/v", "readOnly": true}]}"#,
            r#"{"volumeMounts": [{"name": "v"}]}"#,
            r#"{"volumeMounts": [{"name": "v", "path": "/p", "x": 1}]}"#,
            r#"{"volumeMounts": [5, {"name": "v", "path": "/p"}]}"#,
            r#"{"volumeMounts": [null]}"#,
            r#"{"volumeMounts": {"name": "v"}}"#,
            r#"{"volumeMounts": "v"}"#,
        ];
        for case in cases {
            let old = crate::wire::json::parse::<OldBody>(case.as_bytes());
            let new = crate::wire::json::parse::<NewBody>(case.as_bytes());
            let (old, new) = match (old, new) {
                (Ok(o), Ok(n)) => (o, n),
                (Err(o), Err(n)) => {
                    assert_eq!(o.to_string(), n.to_string(), "{case}");
                    continue;
                }
                (o, n) => panic!("{case}: parsed as {o:?} before, {n:?} now"),
            };
            assert_eq!(
                outcome(old_auto_resume(&old.auto_resume)),
                outcome(auto_resume_enabled(new.auto_resume.as_ref())),
                "{case}"
            );
            for internet in [None, Some(true), Some(false)] {
                assert_eq!(
                    outcome(old_network(
                        old.network.as_ref().filter(|v| !v.is_null()),
                        internet
                    )),
                    outcome(e2b_network(new.network.as_ref(), internet)),
                    "{case} {internet:?}"
                );
            }
            assert_eq!(
                old.mcp.as_ref().is_some_and(|v| !v.is_null()),
                new.mcp.is_some(),
                "{case}"
            );
            assert_eq!(
                outcome(old_volumes(old.volume_mounts)),
                outcome(volume_uses(new.volume_mounts)),
                "{case}"
            );
        }
    }
}
