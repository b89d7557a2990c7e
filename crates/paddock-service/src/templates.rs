//! Templates in the server: their record in the store (`catalogue`), the gate that keeps a
//! layer prune away from a template being made (`gate`), and the server's view of names and
//! limits. The build engine (build files, steps, layers, debootstrap) is the domain crate
//! `paddock-templates`; `api/templates.rs` serves it.

use paddock_core::Limits;

use crate::state::AppState;

pub mod catalogue;
pub mod gate;

/// The template `name` stands for on this server (`paddock_templates::resolve_alias`).
pub fn resolve_alias(state: &AppState, name: &str) -> String {
    paddock_templates::resolve_alias(&state.runtime, name)
}

/// The limits a sandbox of `template` gets for what its create does not name: the server's
/// defaults (`--memory` and friends) with the template's `LIMITS` in their place.
pub fn default_limits(state: &AppState, template: &str) -> Limits {
    paddock_templates::default_limits(&state.runtime, &state.cfg.default_limits, template)
}
