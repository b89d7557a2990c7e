//! Roles (`docs/roles.md`): every route of the OpenAPI document called with a key of every
//! role against the real `paddock serve`, refusals (403 `forbidden`) that change nothing,
//! a developer who cannot see another developer's sandbox, and key creation with a role.

mod server;

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::{Server, call, require_root};

/// The lowest role of every route, as `docs/roles.md` publishes it (parsed from its table,
/// so this test checks the server against the published table, not against itself).
fn published_table() -> BTreeMap<(String, String), Option<String>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/roles.md"))
        .expect("docs/roles.md");
    let mut out = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (m, p, need) = (cells[1], cells[2], cells[3]);
        if !p.starts_with('`') {
            continue;
        }
        let p = p.trim_matches('`').to_owned();
        let need = need
            .starts_with('`')
            .then(|| need.trim_matches('`').to_owned());
        out.insert((m.to_owned(), p), need);
    }
    out
}

fn openapi_routes() -> Vec<(String, String)> {
    let doc = paddock_server::openapi::document();
    let mut out = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (m, op) in ops.as_object().expect("ops") {
            // The fleet's routes are served by `paddock control` only (a single host
            // answers them 404); they take their role from the same table there.
            let fleet = op["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "fleet"));
            if ["get", "post", "put", "delete", "patch"].contains(&m.as_str()) && !fleet {
                out.push((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// The tenant of key `id` (from the admin's key list).
async fn tenant_of(s: &Server, id: &str) -> String {
    let (_, ks) = call(s.req(Method::GET, "/v1/keys")).await;
    ks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["id"] == id)
        .and_then(|k| k["tenant"].as_str())
        .expect("the key's tenant")
        .to_owned()
}

const ROLES: [&str; 4] = ["viewer", "developer", "operator", "admin"];

fn rank(r: &str) -> usize {
    ROLES.iter().position(|x| *x == r).expect("a role")
}

/// `path` with its parameters filled: `sandbox` for `{id}`, harmless values elsewhere.
fn fill(path: &str, sandbox: &str) -> String {
    path.replace("{id}", sandbox)
        .replace("{pid}", "1")
        .replace("{port}", "8080")
        .replace("{ctx}", "nosuchcontext")
        // Invalid for every kind of name, so no allowed call makes anything (a valid
        // template name would start a real bootstrap).
        .replace("{name}", "-nosuch")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_openapi_route_with_every_role_is_allowed_or_403_as_published() {
    require_root("the roles test");
    let s = Server::start(&[]);
    let (op_id, operator) = s.new_key(json!({"name": "ops", "role": "operator"})).await;
    let tenant = tenant_of(&s, &op_id).await;
    let mut keys = BTreeMap::from([("admin", s.admin_key.clone()), ("operator", operator)]);
    for role in ["developer", "viewer"] {
        let (_, k) = s
            .new_key(json!({"name": role, "role": role, "tenant": tenant}))
            .await;
        keys.insert(role, k);
    }
    // The victim of every refused call: a running sandbox of the developer.
    let sbx = s
        .create_as(&keys["developer"], json!({"timeout": 3600}))
        .await;
    let id = sbx["id"].as_str().expect("id").to_owned();
    // Allowed calls go to a sandbox that does not exist, so they change nothing either.
    let missing = "zzzzzzzzzzzzzzzzzzzz";

    let table = published_table();
    let routes = openapi_routes();
    assert!(routes.len() > 70, "only {} routes", routes.len());
    let mut checked = 0;
    for (m, p) in &routes {
        let need = table
            .get(&(m.clone(), p.clone()))
            .unwrap_or_else(|| panic!("{m} {p} is not in docs/roles.md"));
        for role in ROLES {
            let allowed = need.as_deref().is_none_or(|n| rank(role) >= rank(n));
            let target = fill(p, if allowed { missing } else { &id });
            let method: Method = m.parse().expect("method");
            // A body no route accepts, so an allowed call fails validation at worst.
            let rb = s
                .req_as(&keys[role], method, &target)
                .header("content-type", "application/json")
                .body("\"not an object\"");
            let t = std::time::Instant::now();
            let (st, body) = call(rb).await;
            if t.elapsed() > std::time::Duration::from_secs(2) {
                eprintln!("slow: {role} {m} {target}: {:?} {st}", t.elapsed());
            }
            if allowed {
                // Public routes check their own credentials (a session cookie): 401 is theirs.
                assert!(
                    st != StatusCode::FORBIDDEN
                        && (st != StatusCode::UNAUTHORIZED || need.is_none())
                        && st != StatusCode::INTERNAL_SERVER_ERROR,
                    "{role} {m} {target}: expected allowed, got {st} {body}"
                );
            } else {
                assert_eq!(
                    st,
                    StatusCode::FORBIDDEN,
                    "{role} {m} {target}: expected 403, got {body}"
                );
                assert_eq!(body["code"], "forbidden", "{role} {m} {target}: {body}");
                let msg = body["message"].as_str().unwrap_or_default();
                assert!(
                    msg.contains(need.as_deref().unwrap_or("?")) && msg.contains(role),
                    "{role} {m} {target}: the message names both roles: {msg}"
                );
            }
            checked += 1;
        }
    }
    eprintln!(
        "{checked} calls checked ({} routes x 4 roles)",
        routes.len()
    );

    // The refused calls changed nothing: the sandbox runs, the keys all work, and no
    // refused call reached the audit trail.
    let (st, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!((st, v["state"].as_str()), (StatusCode::OK, Some("running")));
    let (_, ks) = call(s.req(Method::GET, "/v1/keys")).await;
    let ks = ks["keys"].as_array().expect("keys").clone();
    assert_eq!(ks.len(), 4, "{ks:?}");
    assert!(ks.iter().all(|k| k["revoked_at"].is_null()), "{ks:?}");
    let (_, audit) = call(s.req(Method::GET, "/v1/audit?limit=1000")).await;
    let viewer_id = ks
        .iter()
        .find(|k| k["role"] == "viewer")
        .and_then(|k| k["id"].as_str())
        .expect("viewer key")
        .to_owned();
    let by_viewer: Vec<_> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["actor"] == viewer_id.as_str())
        .collect();
    assert!(
        by_viewer.is_empty(),
        "refused calls were audited: {by_viewer:?}"
    );
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_developer_sees_only_its_own_sandboxes_and_e2b_routes_refuse_in_e2b_shape() {
    require_root("the roles test");
    let s = Server::start(&[]);
    let (dev1_id, dev1) = s.new_key(json!({"name": "dev1"})).await;
    let tenant = tenant_of(&s, &dev1_id).await;
    let key = |name: &str, role: &str| json!({"name": name, "role": role, "tenant": tenant});
    let (_, dev2) = s.new_key(key("dev2", "developer")).await;
    let (_, viewer) = s.new_key(key("viewer", "viewer")).await;
    let (_, operator) = s.new_key(key("ops", "operator")).await;
    let mine = s.create_as(&dev1, json!({})).await;
    let id = mine["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/sandboxes/{id}");

    // The other developer: 404 exactly like a missing sandbox, on every surface.
    let (st, v) = call(s.req_as(&dev2, Method::GET, &path)).await;
    let (st_missing, v_missing) =
        call(s.req_as(&dev2, Method::GET, "/v1/sandboxes/zzzzzzzzzzzzzzzzzzzz")).await;
    assert_eq!(
        (st, st_missing),
        (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND)
    );
    assert_eq!(v["code"], v_missing["code"]);
    let (st, _) = call(
        s.req_as(&dev2, Method::POST, &format!("{path}/exec"))
            .json(&json!({"cmd": ["true"]})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = call(s.req_as(&dev2, Method::DELETE, &path)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, list) = call(s.req_as(&dev2, Method::GET, "/v1/sandboxes")).await;
    assert_eq!(
        list["sandboxes"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );
    let (_, ev) = call(s.req_as(&dev2, Method::GET, "/v1/events")).await;
    let seen: Vec<_> = ev["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["sandbox_id"] == id.as_str())
        .collect();
    assert!(seen.is_empty(), "another developer's events: {seen:?}");
    let (st, _) = call(
        s.http
            .get(format!("{}/sandboxes/{id}", s.url))
            .header("x-api-key", &dev2),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "E2B get");
    let (_, e2b_list) = call(
        s.http
            .get(format!("{}/v2/sandboxes", s.url))
            .header("x-api-key", &dev2),
    )
    .await;
    assert_eq!(e2b_list.as_array().map(Vec::len), Some(0), "{e2b_list}");

    // The owner, the operator and the viewer see it; the viewer may not change it, and the
    // E2B route says so in E2B's error shape.
    for k in [&dev1, &operator, &viewer] {
        let (st, _) = call(s.req_as(k, Method::GET, &path)).await;
        assert_eq!(st, StatusCode::OK);
        let (_, list) = call(s.req_as(k, Method::GET, "/v1/sandboxes")).await;
        assert_eq!(
            list["sandboxes"].as_array().map(Vec::len),
            Some(1),
            "{list}"
        );
    }
    let (st, v) = call(
        s.http
            .delete(format!("{}/sandboxes/{id}", s.url))
            .header("x-api-key", &viewer),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["code"], 403, "E2B's shape: {v}");
    let (st, v) = call(
        s.req_as(&viewer, Method::POST, "/v1/sandboxes")
            .json(&json!({})),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    // The operator may act on the tenant's sandboxes, but not on keys.
    let (st, v) = call(s.req_as(&operator, Method::GET, "/v1/keys")).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, _) = call(s.req_as(&operator, Method::DELETE, &path)).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread")]
async fn key_roles_are_validated_and_listed() {
    require_root("the roles test");
    let s = Server::start(&[]);
    for bad in ["root", "", "Admin", "superuser"] {
        let (st, v) = call(
            s.req(Method::POST, "/v1/keys")
                .json(&json!({"name": "k", "role": bad})),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("admin, operator, developer or viewer"),
            "{bad}: {msg}"
        );
    }
    let (_, ks) = call(s.req(Method::GET, "/v1/keys")).await;
    assert_eq!(
        ks["keys"].as_array().map(Vec::len),
        Some(1),
        "nothing was made"
    );
    // `user`, the old name, is a developer.
    for (asked, got) in [
        ("user", "developer"),
        ("viewer", "viewer"),
        ("operator", "operator"),
    ] {
        let r = s
            .req(Method::POST, "/v1/keys")
            .json(&json!({"name": asked, "role": asked}))
            .send()
            .await
            .expect("create");
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["role"], got);
    }
    // A console session acts with its key's role.
    let (_, viewer) = s.new_key(json!({"name": "v2", "role": "viewer"})).await;
    let r = s
        .http
        .post(format!("{}/v1/session", s.url))
        .json(&json!({"api_key": viewer}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::CREATED);
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("cookie")
        .to_owned();
    let me: Value = r.json().await.expect("json");
    let (st, v) = call(
        s.http
            .post(format!("{}/v1/sandboxes", s.url))
            .header("cookie", cookie)
            .header("x-csrf-token", me["csrf_token"].as_str().expect("csrf"))
            .json(&json!({})),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
}
