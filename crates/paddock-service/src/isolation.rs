//! Which isolation backend a new sandbox gets (`docs/isolation.md`): the request's
//! (`"isolation"` on REST, the [`E2B_METADATA_KEY`] metadata entry on E2B creates), else
//! its template's (a build file's `ISOLATION`), else the server's `--isolation-default`.

use std::sync::Arc;

use paddock_core::Isolation;

use crate::error::{Error, Result};
use crate::sandbox_spec::NewSandbox;
use crate::state::AppState;

/// The metadata key an E2B create names its isolation backend with
/// (`Sandbox.create(metadata={"paddock.isolation": "gvisor"})`).
pub const E2B_METADATA_KEY: &str = "paddock.isolation";

/// Parses a requested backend; an unknown name is a 400 naming the choices.
pub fn parse(s: Option<&str>) -> Result<Option<Isolation>> {
    s.map(|s| {
        s.parse()
            .map_err(|e: paddock_core::UnknownIsolation| Error::BadRequest(e.to_string()))
    })
    .transpose()
}

/// The backend `spec` gets, refused with a 400 saying why when this host cannot provide it.
pub fn choose(state: &Arc<AppState>, spec: &NewSandbox) -> Result<Isolation> {
    let i = spec
        .isolation
        .or_else(|| {
            state
                .runtime
                .template(&spec.template)
                .and_then(|t| t.config.isolation)
        })
        .unwrap_or(state.cfg.isolation_default);
    if i == Isolation::Gvisor && !state.runtime.gvisor_available() {
        return Err(Error::BadRequest(
            "isolation gvisor is not available on this host: runsc is not installed \
             (apt-get install runsc)"
                .into(),
        ));
    }
    Ok(i)
}
