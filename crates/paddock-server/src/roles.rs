//! Roles on routes: one table, [`ROUTES`], gives every route of the router the lowest
//! [`Role`] that may call it (or [`Need::Public`]), and [`enforce`] (a route layer over the
//! whole router) looks each matched route up in it.
//!
//! How it holds:
//! - [`enforce`] runs after routing and before any handler. A route missing from the table is
//!   answered 500 `internal` ("route ... has no role"), so a route added without a role fails
//!   every test that calls it; the table check in `tests/roles.rs` walks every route of the
//!   OpenAPI document with every role, and the unit tests below fail when an OpenAPI route
//!   has no row or a row names no OpenAPI route.
//! - [`enforce`] records the route's need in the request ([`RouteNeed`]); every way a caller
//!   is established for a route (`auth::Caller`, the E2B caller, the PTY's query key) passes
//!   it through [`admit`], which answers 403 `forbidden` before the handler does anything. A
//!   caller established without a recorded need is refused (fail closed).
//! - Ownership is not in the table: a `developer` sees only the sandboxes its own key created
//!   (`auth::Caller::sees`); another developer's sandbox is 404 like a missing one.
//!
//! The table is published in `docs/roles.md` (between the `roles-table` markers), which a
//! unit test keeps equal to [`markdown_table`].

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Extensions, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use paddock_store::Role;

use crate::error::ApiError;
use paddock_service::auth::keys::Caller;
use paddock_service::state::AppState;

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// No key (the route checks its own credentials, or has none).
    Public,
    /// A key with at least this role.
    Role(Role),
}

use Need::Public;
const V: Need = Need::Role(Role::Viewer);
const D: Need = Need::Role(Role::Developer);
const O: Need = Need::Role(Role::Operator);
const A: Need = Need::Role(Role::Admin);

/// Every route: method (`*` for any), the path as the router spells it, the need.
/// `HEAD` is looked up as `GET`.
pub const ROUTES: &[(&str, &str, Need)] = &[
    // System.
    ("GET", "/v1/health", Public),
    ("GET", "/v1/openapi.json", Public),
    ("GET", "/v1/status", V),
    ("GET", "/metrics", A),
    ("POST", "/mcp", V),
    // Console sessions: the login checks the key it is given, the others the session's
    // cookie (which acts with its key's role everywhere else).
    ("POST", "/v1/session", Public),
    ("GET", "/v1/session", Public),
    ("DELETE", "/v1/session", Public),
    // Keys and audit.
    ("GET", "/v1/keys", A),
    ("POST", "/v1/keys", A),
    ("DELETE", "/v1/keys/{id}", A),
    ("GET", "/v1/audit", A),
    // Usage and cost.
    ("GET", "/v1/usage", V),
    ("GET", "/v1/usage/prices", V),
    ("PUT", "/v1/usage/prices", A),
    ("GET", "/v1/usage/budgets", V),
    ("PUT", "/v1/usage/budgets/{tenant}", A),
    // Alerts (node and capacity rules: admins only, checked by the route).
    ("GET", "/v1/alerts", V),
    ("GET", "/v1/alerts/rules", V),
    ("POST", "/v1/alerts/rules", O),
    ("GET", "/v1/alerts/rules/{id}", V),
    ("DELETE", "/v1/alerts/rules/{id}", O),
    ("POST", "/v1/alerts/rules/{id}/test", O),
    // Events.
    ("GET", "/v1/events", V),
    // Sandboxes.
    ("POST", "/v1/sandboxes", D),
    ("GET", "/v1/sandboxes", V),
    ("GET", "/v1/sandboxes/{id}", V),
    ("DELETE", "/v1/sandboxes/{id}", D),
    ("POST", "/v1/sandboxes/{id}/timeout", D),
    ("GET", "/v1/sandboxes/{id}/stats", V),
    ("GET", "/v1/sandboxes/{id}/logs", V),
    ("POST", "/v1/sandboxes/{id}/pause", D),
    ("POST", "/v1/sandboxes/{id}/resume", D),
    ("GET", "/v1/sandboxes/{id}/network", V),
    ("PUT", "/v1/sandboxes/{id}/network", D),
    ("POST", "/v1/sandboxes/{id}/tests", D),
    // Commands and processes.
    ("POST", "/v1/sandboxes/{id}/exec", D),
    ("GET", "/v1/sandboxes/{id}/processes", V),
    ("GET", "/v1/sandboxes/{id}/processes/{pid}/output", V),
    ("POST", "/v1/sandboxes/{id}/processes/{pid}/stdin", D),
    ("POST", "/v1/sandboxes/{id}/processes/{pid}/stdin/close", D),
    ("POST", "/v1/sandboxes/{id}/processes/{pid}/signal", D),
    ("GET", "/v1/sandboxes/{id}/pty", D),
    // Code interpreter.
    ("POST", "/v1/sandboxes/{id}/code", D),
    ("GET", "/v1/sandboxes/{id}/code/contexts", V),
    ("POST", "/v1/sandboxes/{id}/code/contexts", D),
    ("DELETE", "/v1/sandboxes/{id}/code/contexts/{ctx}", D),
    ("POST", "/v1/sandboxes/{id}/code/contexts/{ctx}/restart", D),
    (
        "POST",
        "/v1/sandboxes/{id}/code/contexts/{ctx}/interrupt",
        D,
    ),
    // Files.
    ("GET", "/v1/sandboxes/{id}/files", V),
    ("PUT", "/v1/sandboxes/{id}/files", D),
    ("DELETE", "/v1/sandboxes/{id}/files", D),
    ("GET", "/v1/sandboxes/{id}/fs/list", V),
    ("GET", "/v1/sandboxes/{id}/fs/stat", V),
    ("POST", "/v1/sandboxes/{id}/fs/mkdir", D),
    ("POST", "/v1/sandboxes/{id}/fs/move", D),
    ("GET", "/v1/sandboxes/{id}/archive", V),
    ("PUT", "/v1/sandboxes/{id}/archive", D),
    // Ports.
    ("GET", "/v1/sandboxes/{id}/ports", V),
    ("GET", "/v1/sandboxes/{id}/ports/{port}", V),
    ("POST", "/v1/sandboxes/{id}/ports/{port}/public", D),
    ("DELETE", "/v1/sandboxes/{id}/ports/{port}/public", D),
    // Services.
    ("GET", "/v1/sandboxes/{id}/services", V),
    ("POST", "/v1/sandboxes/{id}/services", D),
    ("GET", "/v1/sandboxes/{id}/services/{name}", V),
    ("DELETE", "/v1/sandboxes/{id}/services/{name}", D),
    ("GET", "/v1/sandboxes/{id}/services/{name}/logs", V),
    ("POST", "/v1/sandboxes/{id}/services/{name}/start", D),
    ("POST", "/v1/sandboxes/{id}/services/{name}/stop", D),
    ("POST", "/v1/sandboxes/{id}/services/{name}/restart", D),
    // Rollouts: a developer's reach only their own sandboxes, and they see only their own
    // rollouts (`rollouts::get`); viewers read the tenant's.
    ("GET", "/v1/rollouts", V),
    ("POST", "/v1/rollouts", D),
    ("GET", "/v1/rollouts/{id}", V),
    ("POST", "/v1/rollouts/{id}/cancel", D),
    // Nodes: served by control planes (`paddock control`) only.
    ("GET", "/v1/nodes", O),
    ("GET", "/v1/nodes/{id}", O),
    ("POST", "/v1/nodes/{id}/drain", O),
    ("POST", "/v1/nodes/{id}/undrain", O),
    // Snapshots and forks (a snapshot belongs to the tenant of its sandbox).
    ("POST", "/v1/sandboxes/{id}/snapshots", D),
    ("POST", "/v1/sandboxes/{id}/fork", D),
    ("GET", "/v1/snapshots", V),
    ("GET", "/v1/snapshots/{name}", V),
    ("DELETE", "/v1/snapshots/{name}", D),
    // Volumes (the tenant's own).
    // Warm pools (host-wide: operators and admins).
    ("GET", "/v1/pools", O),
    ("GET", "/v1/pools/{template}", O),
    ("PUT", "/v1/pools/{template}", O),
    ("DELETE", "/v1/pools/{template}", O),
    ("GET", "/v1/volumes", V),
    ("POST", "/v1/volumes", D),
    ("GET", "/v1/volumes/{name}", V),
    ("DELETE", "/v1/volumes/{name}", D),
    // Secrets (values are write-only for every role).
    ("GET", "/v1/secrets", V),
    ("POST", "/v1/secrets", O),
    ("GET", "/v1/secrets/{name}", V),
    ("PUT", "/v1/secrets/{name}", O),
    ("DELETE", "/v1/secrets/{name}", O),
    ("POST", "/v1/secret-key/rotate", A),
    // Templates and layers.
    ("GET", "/v1/templates", V),
    ("GET", "/v1/templates/{name}", V),
    ("DELETE", "/v1/templates/{name}", D),
    ("POST", "/v1/templates/{name}/build", D),
    ("POST", "/v1/templates/{name}/bootstrap", D),
    ("POST", "/v1/templates/{name}/pull", D),
    ("POST", "/v1/templates/{name}/import", D),
    ("GET", "/v1/templates/{name}/log", D),
    // The layer store is the host's, shared by every tenant: admin only.
    ("GET", "/v1/layers", A),
    ("POST", "/v1/layers/prune", A),
    // The E2B control API (not in the OpenAPI document; same rules as its /v1 twins).
    ("POST", "/sandboxes", D),
    ("GET", "/sandboxes", V),
    ("POST", "/v2/sandboxes", D),
    ("GET", "/v2/sandboxes", V),
    ("GET", "/sandboxes/{id}", V),
    ("DELETE", "/sandboxes/{id}", D),
    ("POST", "/sandboxes/{id}/connect", D),
    ("POST", "/v2/sandboxes/{id}/connect", D),
    ("POST", "/sandboxes/{id}/timeout", D),
    ("GET", "/sandboxes/{id}/metrics", V),
    ("POST", "/sandboxes/{id}/refreshes", D),
    ("POST", "/sandboxes/{id}/pause", D),
    ("POST", "/sandboxes/{id}/resume", D),
    ("POST", "/sandboxes/{id}/fork", D),
    ("POST", "/sandboxes/{id}/snapshots", D),
    ("GET", "/snapshots", V),
    // `delete_snapshot`; every other method there is answered 400 "not supported".
    ("DELETE", "/templates/{*rest}", D),
    ("POST", "/volumes", D),
    ("GET", "/volumes", V),
    ("GET", "/volumes/{id}", V),
    ("DELETE", "/volumes/{id}", D),
    ("GET", "/secrets", V),
    ("POST", "/secrets", O),
    ("GET", "/secrets/{id}", V),
    ("POST", "/secrets/{id}", O),
    ("DELETE", "/secrets/{id}", O),
    // E2B routes Paddock answers 400 "not supported" to, whatever the method.
    ("*", "/sandboxes/{id}/network", V),
    ("*", "/snapshots/{*rest}", V),
    ("*", "/templates", V),
    ("*", "/templates/{*rest}", V),
    ("*", "/v2/templates", V),
    ("*", "/v2/templates/{*rest}", V),
    ("*", "/v3/templates", V),
    ("*", "/v3/templates/{*rest}", V),
    // The volume content API checks the volume's own token (no key).
    ("GET", "/volumecontent/{id}/path", Public),
    ("PATCH", "/volumecontent/{id}/path", Public),
    ("DELETE", "/volumecontent/{id}/path", Public),
    ("GET", "/volumecontent/{id}/dir", Public),
    ("POST", "/volumecontent/{id}/dir", Public),
    ("GET", "/volumecontent/{id}/file", Public),
    ("PUT", "/volumecontent/{id}/file", Public),
];

/// The need of `method` on the route `path` (as the router spells it); `None` if the table
/// has no row for it.
pub fn need(method: &Method, path: &str) -> Option<Need> {
    let m = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    ROUTES
        .iter()
        .find(|(rm, rp, _)| *rp == path && (*rm == m || *rm == "*"))
        .map(|r| r.2)
}

/// The need of the route a request matched, as [`enforce`] recorded it.
#[derive(Clone, Copy, Debug)]
pub struct RouteNeed(pub Need);

/// The route layer over the whole router: looks the matched route up in [`ROUTES`] and
/// records its need for [`admit`]; a route without a row is a 500.
pub async fn enforce(State(_): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let Some(n) = path.as_deref().and_then(|p| need(req.method(), p)) else {
        return ApiError::Internal(format!(
            "route {} {} has no role in roles::ROUTES",
            req.method(),
            path.as_deref().unwrap_or("?")
        ))
        .into_response();
    };
    req.extensions_mut().insert(RouteNeed(n));
    next.run(req).await
}

/// Checks an authenticated caller against the need [`enforce`] recorded for this request:
/// 403 `forbidden` naming both roles if the caller's is too low. Without a recorded need
/// (a caller established outside the routed API) nothing is allowed.
pub fn admit(ext: &Extensions, caller: &Caller) -> Result<(), ApiError> {
    match ext.get::<RouteNeed>() {
        Some(RouteNeed(n)) => allows(*n, caller),
        None => Err(ApiError::Internal(
            "a caller was checked on a route without a role".into(),
        )),
    }
}

/// [`admit`] for routers outside the API's (`paddock control`'s own routes): looks the
/// matched route up in [`ROUTES`] itself; a route without a row is refused (500).
pub fn admit_route(ext: &Extensions, method: &Method, caller: &Caller) -> Result<(), ApiError> {
    let path = ext.get::<MatchedPath>().map(MatchedPath::as_str);
    match path.and_then(|p| need(method, p)) {
        Some(n) => allows(n, caller),
        None => Err(ApiError::Internal(format!(
            "route {method} {} has no role in roles::ROUTES",
            path.unwrap_or("?")
        ))),
    }
}

fn allows(n: Need, caller: &Caller) -> Result<(), ApiError> {
    match n {
        Public => Ok(()),
        Need::Role(r) if caller.key.role >= r => Ok(()),
        Need::Role(r) => Err(ApiError::Forbidden(format!(
            "this route needs the {} role or higher; this key is {}",
            r.as_str(),
            caller.key.role.as_str()
        ))),
    }
}

/// The table as Markdown, one row per route, for `docs/roles.md`.
pub fn markdown_table() -> String {
    let mut s = String::from(
        "| Method | Route | Lowest role | viewer | developer | operator | admin |\n|---|---|---|---|---|---|---|\n",
    );
    for (m, p, n) in ROUTES {
        let (lowest, cells) = match n {
            Public => ("none (public)".to_owned(), ["yes"; 4]),
            Need::Role(r) => (
                format!("`{}`", r.as_str()),
                Role::ALL.map(|x| if x >= *r { "yes" } else { "403" }),
            ),
        };
        let m = if *m == "*" { "any" } else { m };
        s.push_str(&format!(
            "| {m} | `{p}` | {lowest} | {} |\n",
            cells.join(" | ")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn openapi_routes() -> BTreeSet<(String, String)> {
        let doc = crate::openapi::document();
        let mut out = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for m in ops.as_object().expect("ops").keys() {
                if ["get", "post", "put", "delete", "patch"].contains(&m.as_str()) {
                    out.insert((m.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn every_openapi_route_has_a_role_and_every_v1_row_a_route() {
        let api = openapi_routes();
        let missing: Vec<_> = api
            .iter()
            .filter(|(m, p)| need(&m.parse().expect("method"), p).is_none())
            .collect();
        assert!(
            missing.is_empty(),
            "routes without a role in roles::ROUTES: {missing:?}"
        );
        let stale: Vec<_> = ROUTES
            .iter()
            .filter(|(m, p, _)| {
                (p.starts_with("/v1/") || *p == "/metrics" || *p == "/mcp")
                    && !api.contains(&(m.to_string(), p.to_string()))
            })
            .collect();
        assert!(stale.is_empty(), "rows naming no OpenAPI route: {stale:?}");
        let mut seen = BTreeSet::new();
        for (m, p, _) in ROUTES {
            assert!(seen.insert((m, p)), "duplicate row {m} {p}");
        }
    }

    /// With `PADDOCK_BLESS_ROLES=1` it rewrites the table in `docs/roles.md` instead.
    #[test]
    fn the_docs_publish_this_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/roles.md");
        let doc = std::fs::read_to_string(path).expect("docs/roles.md");
        let (start, end) = ("<!-- roles-table -->\n", "<!-- /roles-table -->");
        let from = doc.find(start).expect("start marker") + start.len();
        let to = doc.find(end).expect("end marker");
        if std::env::var_os("PADDOCK_BLESS_ROLES").is_some() {
            let new = format!("{}{}{}", &doc[..from], markdown_table(), &doc[to..]);
            std::fs::write(path, new).expect("write docs/roles.md");
            return;
        }
        assert!(
            doc[from..to] == markdown_table(),
            "docs/roles.md's table is stale: run PADDOCK_BLESS_ROLES=1 cargo test -p paddock-server --lib roles"
        );
    }

    #[test]
    fn roles_are_ordered_and_head_is_get() {
        assert!(Role::Viewer < Role::Developer);
        assert!(Role::Developer < Role::Operator);
        assert!(Role::Operator < Role::Admin);
        assert_eq!(need(&Method::HEAD, "/v1/sandboxes"), Some(V));
        assert_eq!(need(&Method::PATCH, "/v1/sandboxes"), None);
        assert_eq!(need(&Method::PATCH, "/v3/templates"), Some(V));
    }
}
