//! The fleet (`docs/fleet.md`): many nodes running sandboxes, stateless control planes in
//! front of them, one shared store.
//!
//! - A **node** (`paddock node`) is the single-host server with a name: it runs sandboxes,
//!   serves the whole API on its own listener to control planes only (every request must
//!   carry the fleet token in [`TOKEN_HEADER`], else 401), registers itself in the store and
//!   heartbeats every [`HEARTBEAT`] (`node`). It reconciles, times out and samples only the
//!   sandboxes it holds (`spec.node` of their records), so each of those duties runs exactly
//!   once in the fleet: on the one node that holds the sandbox.
//! - A **control plane** (`paddock control`, `control`) has no runtime: it answers
//!   `/v1/nodes` itself, places creates (`placement`) and forwards every other request to
//!   the node that holds the sandbox it names, or to any ready node (`forward`), streaming
//!   bodies and splicing upgrades. Every control plane watches heartbeats; marking a node
//!   dead is a conditional update, so exactly one of them sees each death and marks the
//!   node's sandboxes `lost`.
//! - The **fleet token** is one shared secret (`--fleet-token-file` or
//!   `PADDOCK_FLEET_TOKEN`). The store keeps only its SHA-256; a control plane or node whose
//!   token does not match the stored hash refuses to start.
//!
//! This crate holds the fleet's domain: the token, a node's configuration and labels,
//! `node` (registration and heartbeats) and `placement`; the control plane's HTTP side
//! (`control`, `fanout`, `forward`, `layers`, `volumes`) is `paddock-server`'s `fleet`.
//!
//! **Must not depend on:** the runtime directly in `placement` (a control plane opens none).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use paddock_store::{PgStore, SqliteStore, Store};
use sha2::{Digest, Sha256};

pub mod node;
pub mod placement;

/// The header carrying the fleet token on requests from control planes to nodes.
pub const TOKEN_HEADER: &str = "x-paddock-node-token";
/// How often a node heartbeats.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A node whose last heartbeat is older than this is dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(10);
/// Shortest fleet token accepted.
pub const MIN_TOKEN_LEN: usize = 32;
/// Longest fleet token accepted.
pub const MAX_TOKEN_LEN: usize = 256;
/// The tenant of fleet events (`node.ready`, `node.draining`, `node.dead`): no real
/// tenant, so only admin keys see them.
pub const FLEET_TENANT: &str = "fleet";
/// Most labels per node, and their sizes.
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_LEN: usize = 63;

/// The fleet's shared secret.
#[derive(Clone)]
pub struct FleetToken {
    secret: String,
    hash: [u8; 32],
}

impl std::fmt::Debug for FleetToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetToken(<redacted>)")
    }
}

impl FleetToken {
    /// The token from a file (trailing whitespace trimmed) or, without one, `env`.
    pub fn load(file: Option<&std::path::Path>, env: Option<&str>) -> Result<FleetToken, String> {
        let raw = match (file, env) {
            (Some(p), _) => std::fs::read_to_string(p)
                .map_err(|e| format!("reading the fleet token file {}: {e}", p.display()))?,
            (None, Some(v)) => v.to_owned(),
            (None, None) => {
                return Err("a fleet token is needed: --fleet-token-file FILE or PADDOCK_FLEET_TOKEN (e.g. `openssl rand -hex 32`)".into());
            }
        };
        Self::new(raw.trim())
    }

    pub fn new(secret: &str) -> Result<FleetToken, String> {
        if secret.len() < MIN_TOKEN_LEN || secret.len() > MAX_TOKEN_LEN {
            return Err(format!(
                "the fleet token must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters, got {}",
                secret.len()
            ));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the fleet token must be printable ASCII without spaces".into());
        }
        Ok(FleetToken {
            secret: secret.to_owned(),
            hash: Sha256::digest(secret.as_bytes()).into(),
        })
    }

    /// Whether a presented header value is the token (compared by hash, in constant time).
    pub fn matches(&self, presented: Option<&http::HeaderValue>) -> bool {
        let Some(p) = presented else { return false };
        let h: [u8; 32] = Sha256::digest(p.as_bytes()).into();
        h.iter()
            .zip(&self.hash)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    pub fn header_value(&self) -> http::HeaderValue {
        http::HeaderValue::from_str(&self.secret).expect("checked printable ASCII")
    }

    /// Stores the token's hash if the fleet has none yet, else checks it matches.
    pub async fn check_store(&self, store: &dyn Store) -> Result<(), String> {
        let mine = hex::encode(self.hash);
        let stored = store
            .fleet_setting_init("token_sha256", &mine)
            .await
            .map_err(|e| format!("reading the fleet token's hash: {e}"))?;
        if stored != mine {
            return Err(
                "fleet token refused: it is not the token this fleet's database was set up with"
                    .into(),
            );
        }
        Ok(())
    }
}

/// What makes a server a node of a fleet.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Stable id (kept in `<data>/node.id`).
    pub id: String,
    pub name: String,
    /// Base URL control planes reach this node at (None: `http://` and the listen address).
    pub advertise: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub token: FleetToken,
    /// Most sandboxes this node runs.
    pub max_sandboxes: u32,
    /// CPU limits may add up to this many times the node's CPUs.
    pub cpu_overcommit: f64,
}

/// Parses `k=v` labels (and node selectors): 1 to 63 characters of `[A-Za-z0-9._/-]` each side.
pub fn parse_labels(items: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut m = BTreeMap::new();
    for it in items {
        let (k, v) = it
            .split_once('=')
            .ok_or_else(|| format!("label {it:?}: expected KEY=VALUE"))?;
        m.insert(k.to_owned(), v.to_owned());
    }
    check_labels(&m)?;
    Ok(m)
}

/// Checks label (or selector) sizes and characters.
pub fn check_labels(m: &BTreeMap<String, String>) -> Result<(), String> {
    if m.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels"));
    }
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= MAX_LABEL_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
    };
    for (k, v) in m {
        if !ok(k) || !ok(v) {
            return Err(format!(
                "label {:?}={:?}: keys and values are 1 to {MAX_LABEL_LEN} characters of A-Z a-z 0-9 . _ / -",
                crate::text::truncate(k, 70),
                crate::text::truncate(v, 70)
            ));
        }
    }
    Ok(())
}

/// Opens the store a `--database-url` names: `postgres://...` (or `postgresql://`, or any
/// form `tokio_postgres` parses that starts so) for PostgreSQL; `sqlite:PATH` (or a bare
/// path) for a fleet on one host's file (development, tests).
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let s = PgStore::connect(url).await.map_err(|e| e.to_string())?;
        return Ok(Arc::new(s));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.contains("://") {
        return Err(format!(
            "--database-url: unknown scheme in {:?}; expected postgres://USER:PASSWORD@HOST:PORT/DB or sqlite:PATH",
            path.split("://").next().unwrap_or_default()
        ));
    }
    let s = SqliteStore::open(std::path::Path::new(path)).map_err(|e| e.to_string())?;
    Ok(Arc::new(s))
}

/// The node a sandbox record says holds it (`spec.node`; None on a single host).
pub fn node_of(r: &paddock_store::SandboxRecord) -> Option<&str> {
    r.spec.node.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_labels() {
        assert!(FleetToken::new("short").is_err());
        assert!(FleetToken::new(&"a b".repeat(20)).is_err());
        let t = FleetToken::new(&"x".repeat(40)).unwrap();
        assert!(t.matches(Some(&t.header_value())));
        assert!(!t.matches(Some(&http::HeaderValue::from_static("nope"))));
        assert!(!t.matches(None));
        assert_eq!(format!("{t:?}"), "FleetToken(<redacted>)");
        let l = parse_labels(&["zone=a".into(), "gpu=none".into()]).unwrap();
        assert_eq!(l["zone"], "a");
        assert!(parse_labels(&["zone".into()]).is_err());
        assert!(parse_labels(&["zone=a b".into()]).is_err());
        assert!(parse_labels(&[format!("k={}", "v".repeat(64))]).is_err());
    }

    #[tokio::test]
    async fn a_second_token_is_refused() {
        let s = SqliteStore::open_in_memory().unwrap();
        FleetToken::new(&"a".repeat(32))
            .unwrap()
            .check_store(&s)
            .await
            .unwrap();
        FleetToken::new(&"a".repeat(32))
            .unwrap()
            .check_store(&s)
            .await
            .unwrap();
        let e = FleetToken::new(&"b".repeat(32))
            .unwrap()
            .check_store(&s)
            .await
            .unwrap_err();
        assert!(e.contains("refused"), "{e}");
    }
}
