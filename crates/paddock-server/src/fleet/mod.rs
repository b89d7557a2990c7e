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
//! **Must not depend on:** the runtime directly in `control`, `forward` and `placement` (a
//! control plane opens none).

pub use paddock_service::fleet::*;

pub mod control;
pub mod fanout;
pub mod forward;
pub mod layers;
pub mod volumes;

/// A node's answer to a request without the fleet token.
pub fn unauthorized_node() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    crate::error::ApiError::Unauthorized(
        "this is a fleet node: requests come through a control plane",
    )
    .into_response()
}
