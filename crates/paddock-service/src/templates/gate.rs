//! The layer gate. Making a template (build, pull, import, bootstrap, or a fleet node
//! fetching one from a peer, `crate::fleet::layers`) holds it shared for its whole run, since
//! its new layers belong to no template until it ends; a layer prune holds it exclusively. A
//! template started during a prune waits for it (a prune is short); a prune asked for while
//! templates are being made is refused (they can take minutes).

use std::sync::{Arc, LazyLock};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

static LAYER_GATE: LazyLock<Arc<RwLock<()>>> = LazyLock::new(|| Arc::new(RwLock::new(())));

/// The gate held shared, as while making a template; waits for a running prune to end.
pub async fn making() -> OwnedRwLockReadGuard<()> {
    LAYER_GATE.clone().read_owned().await
}

/// The gate held exclusively, for a prune; None while a template is being made.
pub fn try_prune() -> Option<OwnedRwLockWriteGuard<()>> {
    LAYER_GATE.clone().try_write_owned().ok()
}
