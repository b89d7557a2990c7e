//! A sandbox's network policy: what its processes may reach outside the sandbox.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Most entries of an allow list.
pub const MAX_ALLOW: usize = 256;

/// How a sandbox reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Loopback only: no interface, no resolver, nothing leaves.
    #[default]
    None,
    /// Only the listed CIDRs and domain names.
    Allow,
    /// The internet, but never the host, other sandboxes, link-local, metadata or private
    /// addresses (unless listed).
    All,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Allow => "allow",
            NetworkMode::All => "all",
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IPv4 network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        };
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 CIDR"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?} has a bad prefix length"))?;
        let host_bits = if prefix == 0 {
            u32::MAX
        } else {
            !(u32::MAX << (32 - u32::from(prefix)))
        };
        if u32::from(addr) & host_bits != 0 {
            return Err(format!(
                "{s:?} has host bits set (did you mean {}/{prefix}?)",
                Ipv4Addr::from(u32::from(addr) & !host_bits)
            ));
        }
        Ok(Cidr { addr, prefix })
    }
}

/// A domain-name rule: `example.com` (that name only) or `*.example.com` (any name below
/// it, not the name itself).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DomainRule {
    pub name: String,
    pub wildcard: bool,
}

impl DomainRule {
    /// Whether `name` (any case, with or without the final dot) matches.
    pub fn matches(&self, name: &str) -> bool {
        let n = name.trim_end_matches('.').to_ascii_lowercase();
        if self.wildcard {
            n.len() > self.name.len()
                && n.ends_with(&self.name)
                && n.as_bytes()[n.len() - self.name.len() - 1] == b'.'
        } else {
            n == self.name
        }
    }
}

impl fmt::Display for DomainRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

impl std::str::FromStr for DomainRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, lower),
        };
        let ok_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(ok_label) {
            return Err(format!("{s:?} is not a domain name (or *.domain)"));
        }
        Ok(DomainRule { name, wildcard })
    }
}

/// What a sandbox may reach. Serialised as `{"mode": "allow", "allow": ["10.1.0.0/16",
/// "pypi.org", "*.pythonhosted.org"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkPolicy {
    pub mode: NetworkMode,
    /// CIDRs reachable in `allow` mode, and private ranges opened up in `all` mode.
    pub cidrs: Vec<Cidr>,
    /// Names the sandbox's resolver answers in `allow` mode (their addresses become
    /// reachable once resolved).
    pub domains: Vec<DomainRule>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    mode: NetworkMode,
    #[serde(default)]
    allow: Vec<String>,
}

impl NetworkPolicy {
    /// Parses a mode and an allow list of CIDRs and domain names, checking every entry.
    pub fn new(mode: NetworkMode, allow: &[String]) -> Result<NetworkPolicy, String> {
        if allow.len() > MAX_ALLOW {
            return Err(format!("at most {MAX_ALLOW} allow entries"));
        }
        let mut p = NetworkPolicy {
            mode,
            ..Default::default()
        };
        for a in allow {
            let a = a.trim();
            if a.contains(':') {
                return Err(format!(
                    "{a:?}: IPv6 is not supported; sandboxes have IPv4 networking only"
                ));
            }
            if a.starts_with(|c: char| c.is_ascii_digit()) && !a.contains(char::is_alphabetic) {
                p.cidrs.push(a.parse()?);
            } else {
                p.domains.push(a.parse()?);
            }
        }
        match mode {
            NetworkMode::None if !allow.is_empty() => {
                return Err("mode none takes no allow list".into());
            }
            NetworkMode::All if !p.domains.is_empty() => {
                return Err(
                    "mode all allows every name already; its allow list takes only CIDRs (to open private ranges)"
                        .into(),
                );
            }
            _ => {}
        }
        p.cidrs.sort();
        p.cidrs.dedup();
        p.domains.sort();
        p.domains.dedup();
        Ok(p)
    }

    /// No network at all.
    pub fn none() -> NetworkPolicy {
        NetworkPolicy::default()
    }

    /// The internet, nothing private.
    pub fn all() -> NetworkPolicy {
        NetworkPolicy {
            mode: NetworkMode::All,
            ..Default::default()
        }
    }

    /// The allow list as strings (CIDRs, then domains).
    pub fn allow_list(&self) -> Vec<String> {
        self.cidrs
            .iter()
            .map(ToString::to_string)
            .chain(self.domains.iter().map(ToString::to_string))
            .collect()
    }

    /// Whether the resolver answers `name` in this policy.
    pub fn allows_name(&self, name: &str) -> bool {
        match self.mode {
            NetworkMode::None => false,
            NetworkMode::All => true,
            NetworkMode::Allow => self.domains.iter().any(|d| d.matches(name)),
        }
    }
}

impl Serialize for NetworkPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            mode: self.mode,
            allow: self.allow_list(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for NetworkPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        NetworkPolicy::new(w.mode, &w.allow).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_allow_lists() {
        let p = NetworkPolicy::new(
            NetworkMode::Allow,
            &[
                "10.1.0.0/16".into(),
                "PyPI.org.".into(),
                "*.pythonhosted.org".into(),
                "1.2.3.4".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            p.allow_list(),
            vec![
                "1.2.3.4/32",
                "10.1.0.0/16",
                "pypi.org",
                "*.pythonhosted.org"
            ]
        );
        assert!(p.allows_name("pypi.org"));
        assert!(p.allows_name("files.pythonhosted.org."));
        assert!(!p.allows_name("pythonhosted.org"));
        assert!(!p.allows_name("evilpypi.org"));
        assert!(!p.allows_name("pypi.org.evil.com"));
        let j = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<NetworkPolicy>(&j).unwrap(), p);
    }

    #[test]
    fn rejects_bad_entries() {
        for bad in [
            "10.0.0.1/8",
            "300.1.1.1",
            "a..b",
            "-x.com",
            "::1",
            "fd00::/8",
            "1.2.3.4/33",
        ] {
            assert!(
                NetworkPolicy::new(NetworkMode::Allow, &[bad.into()]).is_err(),
                "{bad}"
            );
        }
        assert!(NetworkPolicy::new(NetworkMode::None, &["1.2.3.4".into()]).is_err());
        assert!(NetworkPolicy::new(NetworkMode::All, &["x.com".into()]).is_err());
        assert!(serde_json::from_str::<NetworkPolicy>(r#"{"mode":"some"}"#).is_err());
    }

    #[test]
    fn cidr_contains() {
        let c: Cidr = "10.200.0.0/16".parse().unwrap();
        assert!(c.contains("10.200.3.4".parse().unwrap()));
        assert!(!c.contains("10.201.0.0".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
    }
}
