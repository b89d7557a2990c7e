//! Router tests: the real router (`app::router`) over a SQLite store in a temp directory
//! and a detached runtime (`Runtime::detached`: no cgroups, mounts or network), driven with
//! `tower::ServiceExt::oneshot`. No root, no network, no sandbox: what lies in front of
//! the sandboxes. Run as any user: `cargo test -p paddock-server --test router`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use paddock_runtime::{Runtime, RuntimeConfig};
use paddock_service::config::ServerConfig;
use paddock_service::state::AppState;
use paddock_store::{Role, SqliteStore, Store};
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// A router with its state, an admin key and the temp directory holding both.
struct App {
    router: Router,
    state: Arc<AppState>,
    admin: String,
    _dir: tempfile::TempDir,
}

async fn app() -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let cfg = ServerConfig::new(&data);
    paddock_runtime::datadir::create_private(&data).expect("data dir");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&data.join("paddock.db")).expect("store"));
    let runtime = Runtime::detached(RuntimeConfig::new(&data)).expect("detached runtime");
    let state = Arc::new(AppState::new(cfg, store, runtime, false).expect("state"));
    let (_, admin) = key(&state, Role::Admin).await;
    App {
        router: paddock_server::app::router(state.clone()),
        state,
        admin,
        _dir: dir,
    }
}

/// A new key of `role` in a tenant of its own: (id, secret).
async fn key(state: &AppState, role: Role) -> (String, String) {
    let name = format!("{}-{}", role.as_str(), rand_suffix());
    let (k, secret) =
        paddock_server::api::admin::new_key(state, &name, role, None, None, None, None)
            .await
            .expect("new key");
    (k.id, secret)
}

fn rand_suffix() -> String {
    paddock_core::SandboxId::random().as_str()[..6].to_owned()
}

/// One request through the router: status, and the body as JSON (`Null` if it is not).
async fn send(
    app: &App,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let req = match body {
        Some((ctype, bytes)) => req.header("content-type", ctype).body(Body::from(bytes)),
        None => req.body(Body::empty()),
    };
    let mut req = req.expect("request");
    // What the accept loop adds to every request.
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    let res = app.router.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn get(app: &App, path: &str, key: Option<&str>) -> (StatusCode, Value) {
    send(app, Method::GET, path, key, None).await
}

async fn post_json(app: &App, path: &str, key: &str, body: &str) -> (StatusCode, Value) {
    let body = Some(("application/json", body.as_bytes().to_vec()));
    send(app, Method::POST, path, Some(key), body).await
}

#[tokio::test]
async fn a_request_without_a_valid_key_is_401() {
    let app = app().await;
    let (st, v) = get(&app, "/v1/sandboxes", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v["message"].is_string(), "an API error: {v}");
    let (st, v) = get(&app, "/v1/sandboxes", Some("pdk_not-a-key")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let (st, v) = get(&app, "/v1/sandboxes", Some(&app.admin)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_revoked_key_is_401() {
    let app = app().await;
    let (id, secret) = key(&app.state, Role::Developer).await;
    assert_eq!(
        get(&app, "/v1/sandboxes", Some(&secret)).await.0,
        StatusCode::OK
    );
    let (st, v) = send(
        &app,
        Method::DELETE,
        &format!("/v1/keys/{id}"),
        Some(&app.admin),
        None,
    )
    .await;
    assert!(st.is_success(), "revoking: {st} {v}");
    let (st, v) = get(&app, "/v1/sandboxes", Some(&secret)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
}

#[tokio::test]
async fn roles_gate_routes() {
    let app = app().await;
    let (_, viewer) = key(&app.state, Role::Viewer).await;
    let (_, developer) = key(&app.state, Role::Developer).await;
    // Reading is for every role; keys and the audit trail are the admin's.
    assert_eq!(
        get(&app, "/v1/sandboxes", Some(&viewer)).await.0,
        StatusCode::OK
    );
    for k in [&viewer, &developer] {
        let (st, v) = get(&app, "/v1/audit", Some(k)).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
        let (st, v) = post_json(&app, "/v1/keys", k, r#"{"name": "x"}"#).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    }
    // A viewer may not create; the role check comes before the body is read.
    let (st, v) = post_json(&app, "/v1/sandboxes", &viewer, "{}").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(
        get(&app, "/v1/audit", Some(&app.admin)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_json_body_that_is_not_an_object_is_a_clear_400() {
    let app = app().await;
    let before = app.state.store.count_keys().await.expect("count");
    for body in [r#"["x"]"#, r#""x""#, "1", "null", "true"] {
        let (st, v) = post_json(&app, "/v1/keys", &app.admin, body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["code"], "invalid_json", "{body}: {v}");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(msg.contains("expected a JSON object"), "{body}: {msg}");
    }
    // The same through other routes and the E2B control API's reader.
    let (st, v) = post_json(&app, "/v1/sandboxes", &app.admin, r#"["base"]"#).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/sandboxes")
        .header("x-api-key", &app.admin)
        .header("content-type", "application/json")
        .body(Body::from(r#"["base"]"#))
        .expect("request");
    req.extensions_mut().insert(axum::extract::ConnectInfo(
        "127.0.0.1:40000".parse::<SocketAddr>().expect("addr"),
    ));
    let res = app.router.clone().oneshot(req).await.expect("infallible");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // Broken JSON and unknown fields stay 400s of their own.
    let (st, v) = post_json(&app, "/v1/keys", &app.admin, r#"{"name": "#).await;
    assert_eq!(
        (st, &v["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_json"))
    );
    let (st, v) = post_json(&app, "/v1/keys", &app.admin, r#"{"name": "x", "nope": 1}"#).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    // Nothing was made by any of them.
    assert_eq!(app.state.store.count_keys().await.expect("count"), before);
    // An object still works.
    let (st, v) = post_json(&app, "/v1/keys", &app.admin, r#"{"name": "ok"}"#).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn a_json_body_over_the_limit_is_413() {
    let app = app().await;
    let limit = app.state.cfg.max_json_body;
    let big = format!(r#"{{"name": "{}"}}"#, "a".repeat(limit));
    let (st, v) = post_json(&app, "/v1/keys", &app.admin, &big).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    // Just under it, the body is read (and refused for what it says, not its size).
    let fits = format!(r#"{{"name": "{}"}}"#, "a".repeat(limit - 32));
    let (st, v) = post_json(&app, "/v1/keys", &app.admin, &fits).await;
    assert_ne!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let app = app().await;
    let (st, v) = get(&app, "/v1/no-such-route", Some(&app.admin)).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    assert!(v["message"].is_string(), "{v}");
    let (st, v) = send(&app, Method::PATCH, "/v1/keys", Some(&app.admin), None).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED, "{v}");
}

#[tokio::test]
async fn the_openapi_document_is_served_as_built() {
    let app = app().await;
    let (st, v) = get(&app, "/v1/openapi.json", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(&v, paddock_server::openapi::document());
    assert!(
        v["paths"]["/v1/keys"]["post"].is_object(),
        "documents /v1/keys"
    );
}

#[tokio::test]
async fn the_detached_runtime_has_base_and_creates_nothing() {
    let app = app().await;
    let (st, v) = get(&app, "/v1/templates", Some(&app.admin)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v.to_string().contains("\"base\""), "{v}");
    assert!(app.state.runtime.list().is_empty());
}
