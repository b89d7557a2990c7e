//! The web console: its files at `/`, the session and CSRF rules of `/v1/session`, and a
//! browser (Debian's `chromium`, driven by Playwright from `console/e2e/console.mjs`) doing
//! every step a person would against the real `paddock serve`, and through a fleet's two
//! control planes (`console/e2e/fleet.mjs`: a session holds on both). Screenshots of every
//! page go to `target/console-screenshots/`.

mod cluster;
mod server;

use std::path::PathBuf;
use std::process::Command;

use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, ORIGIN, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::{Server, call};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Logs in with `key`; returns the `Set-Cookie` header and the session's JSON.
async fn login(s: &Server, key: &str) -> (String, Value) {
    let r = s
        .http
        .post(format!("{}/v1/session", s.url))
        .json(&json!({ "api_key": key }))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::CREATED);
    let cookie = r
        .headers()
        .get(SET_COOKIE)
        .expect("a Set-Cookie")
        .to_str()
        .unwrap()
        .to_owned();
    (cookie, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn session_cookie_needs_csrf_token_and_own_origin_and_ends_at_logout() {
    let s = Server::start(&[]);
    let (cookie, me) = login(&s, &s.admin_key).await;
    // The cookie's attributes; the key never appears in it.
    for attr in ["paddock_session=", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    assert!(
        !cookie.contains("Secure"),
        "no Secure without TLS: {cookie}"
    );
    let tail = s.admin_key.strip_prefix("pdk_").unwrap();
    assert!(!cookie.contains(tail), "the key leaked into the cookie");
    assert_eq!(me["admin"], true);
    assert_eq!(me["name"], "admin");
    let csrf = me["csrf_token"].as_str().expect("a CSRF token").to_owned();
    let session = cookie.split(';').next().unwrap().to_owned();
    let own = s.url.clone();

    // GET /v1/session says who we are, with the same token.
    let (st, v) = call(
        s.http
            .get(format!("{}/v1/session", s.url))
            .header(COOKIE, &session),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["csrf_token"], csrf.as_str());
    assert_eq!(v["tenant"], me["tenant"]);

    // Reads need no token.
    let (st, _) = call(
        s.http
            .get(format!("{}/v1/keys", s.url))
            .header(COOKIE, &session),
    )
    .await;
    assert_eq!(st, StatusCode::OK);

    let post_key = |name: &str| {
        s.http
            .post(format!("{}/v1/keys", s.url))
            .header(COOKIE, &session)
            .json(&json!({ "name": name, "role": "user" }))
    };
    // A cookie without the CSRF header: 403 csrf.
    let (st, v) = call(post_key("a")).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("csrf")),
        "{v}"
    );
    // A wrong token.
    let (st, v) = call(post_key("b").header("X-CSRF-Token", "0".repeat(64))).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("csrf")),
        "{v}"
    );
    // The right token from another origin.
    let (st, v) = call(
        post_key("c")
            .header("X-CSRF-Token", &csrf)
            .header(ORIGIN, "http://evil.test"),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("csrf")),
        "{v}"
    );
    // The right token from our own origin works.
    let (st, v) = call(
        post_key("d")
            .header("X-CSRF-Token", &csrf)
            .header(ORIGIN, &own),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let user_key = v["key"].as_str().unwrap().to_owned();

    // API-key requests are unaffected by Origin.
    let (st, _) = call(
        s.req(Method::POST, "/v1/keys")
            .header(ORIGIN, "http://evil.test")
            .json(&json!({ "name": "e", "role": "user" })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);

    // Login from another origin is refused (login CSRF); a bad key is 401.
    let (st, v) = call(
        s.http
            .post(format!("{}/v1/session", s.url))
            .header(ORIGIN, "http://evil.test")
            .json(&json!({ "api_key": s.admin_key })),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("csrf"))
    );
    let (st, _) = call(
        s.http
            .post(format!("{}/v1/session", s.url))
            .json(&json!({ "api_key": format!("pdk_{}", "0".repeat(40)) })),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // A user session sees no admin route.
    let (ucookie, ume) = login(&s, &user_key).await;
    assert_eq!(ume["admin"], false);
    let usession = ucookie.split(';').next().unwrap().to_owned();
    let (st, _) = call(
        s.http
            .get(format!("{}/v1/keys", s.url))
            .header(COOKIE, &usession),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // Logout needs the token too, then the session is gone and the cookie cleared.
    let (st, _) = call(
        s.http
            .delete(format!("{}/v1/session", s.url))
            .header(COOKIE, &session),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let r = s
        .http
        .delete(format!("{}/v1/session", s.url))
        .header(COOKIE, &session)
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let cleared = r.headers().get(SET_COOKIE).unwrap().to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    for path in ["/v1/session", "/v1/sandboxes", "/v1/keys"] {
        let (st, _) = call(
            s.http
                .get(format!("{}{path}", s.url))
                .header(COOKIE, &session),
        )
        .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{path} after logout");
    }

    // Revoking a key ends its sessions.
    let (st, _) = call(
        s.http
            .get(format!("{}/v1/sandboxes", s.url))
            .header(COOKIE, &usession),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let uid = ume["key_id"].as_str().unwrap();
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/keys/{uid}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = call(
        s.http
            .get(format!("{}/v1/sandboxes", s.url))
            .header(COOKIE, &usession),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_an_https_terminator_the_cookie_is_secure_and_the_public_origin_counts() {
    let s = Server::start(&["--public-url", "https://Sandboxes.example.com"]);
    let (cookie, me) = login(&s, &s.admin_key).await;
    assert!(cookie.contains("; Secure"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    let csrf = me["csrf_token"].as_str().unwrap();
    let post = |origin: &str| {
        s.http
            .post(format!("{}/v1/keys", s.url))
            .header(COOKIE, &session)
            .header("X-CSRF-Token", csrf)
            .header(ORIGIN, origin)
            .json(&json!({ "name": "k", "role": "user" }))
    };
    let (st, v) = call(post("https://sandboxes.example.com")).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    // Same host, other scheme: not our origin.
    let (st, v) = call(post("http://sandboxes.example.com")).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("csrf"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn console_files_are_served_and_api_misses_stay_json() {
    let s = Server::start(&[]);
    let r = s.http.get(format!("{}/", s.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(r.headers()[CACHE_CONTROL], "no-cache");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let html = r.text().await.unwrap();
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .expect("a script in index.html")
        .to_owned();
    assert!(script.starts_with("/assets/"), "{script}");
    // No external host in the page.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    let r = s
        .http
        .get(format!("{}{script}", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert!(
        r.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );

    // API misses and other paths are the API's JSON 404, never the console's page.
    for path in [
        "/v1/nope",
        "/v1/",
        "/v1",
        "/nope",
        "/assets/missing.js",
        "/index.html/x",
    ] {
        let (st, v) = call(s.http.get(format!("{}{path}", s.url))).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(v["code"], "not_found", "{path}");
    }
    // A POST to / is not the console.
    let (st, v) = call(s.http.post(format!("{}/", s.url))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["code"], "not_found");

    // A Host-routed request goes to the data plane (here: a sandbox that does not exist),
    // never to the console.
    let (_, status) = call(s.req(Method::GET, "/v1/status")).await;
    let domain = status["domain"].as_str().unwrap();
    let r = s
        .http
        .get(format!("{}/", s.url))
        .header("Host", format!("49983-aaaaaaaaaaaaaaaaaaaa.{domain}"))
        .send()
        .await
        .unwrap();
    let ct = r
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(!ct.starts_with("text/html"), "{ct}");
    assert_ne!(r.status(), StatusCode::OK);

    // A browser with a console session never gets a path-routed page: it would run on the
    // console's origin, where the sandbox's scripts could use the session.
    let proxied = format!("{}/proxy/aaaaaaaaaaaaaaaaaaaa/8000/", s.url);
    let (st, v) = call(s.http.get(&proxied).header(COOKIE, "paddock_session=x")).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("logged in to the Paddock console"),
        "{v}"
    );
    let (st, _) = call(s.http.get(&proxied)).await;
    assert_ne!(st, StatusCode::FORBIDDEN);
}

/// Debian's chromium (or `$CHROMIUM`) and `console/` with Playwright installed.
fn browser_setup() -> (String, PathBuf) {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (apt-get install chromium; .ci/run does)"
    );
    let console = workspace().join("console");
    if !console.join("node_modules/playwright-core").exists() {
        let st = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&console)
            .status()
            .expect("running npm ci in console/ (Node.js 20 and npm are needed)");
        assert!(st.success(), "npm ci in console/ failed");
    }
    (chromium, console)
}

/// `target/console-screenshots/`, without the screenshots of the fleet's run (`fleet-*`)
/// or, with `fleet`, without the others (the two runs may go at once).
fn clear_shots(fleet: bool) -> PathBuf {
    let dir = workspace().join("target/console-screenshots");
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with("fleet-") == fleet {
            let _ = std::fs::remove_file(e.path());
        }
    }
    dir
}

/// The browser run: log in, create, list, detail, a chart, the terminal, upload and
/// download, kill, a user key kept out of admin pages, a cross-origin POST refused.
#[tokio::test(flavor = "multi_thread")]
async fn browser_drives_the_console() {
    let (chromium, console) = browser_setup();
    let s = Server::start(&["--metrics-interval", "1s"]);
    let (_, user_key) = s
        .new_key(json!({ "name": "console-user", "role": "user" }))
        .await;
    let shots = clear_shots(false);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("e2e/console.mjs")
            .current_dir(&console)
            .env("PADDOCK_URL", &s.url)
            .env("PADDOCK_ADMIN_KEY", &s.admin_key)
            .env("PADDOCK_USER_KEY", &user_key)
            .env("SCREENSHOT_DIR", &shots)
            .env("CHROMIUM", &chromium)
            .output()
            .map(|o| (o, s))
    })
    .await
    .unwrap()
    .expect("running node e2e/console.mjs");
    let (o, _server) = out;
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && stdout.contains("all steps passed"),
        "the browser run failed ({}):\n{stdout}\n{stderr}",
        o.status
    );
}

/// The browser through a fleet (two control planes, two nodes on PostgreSQL): log in
/// through one control plane, create on the Sandboxes page, see both nodes on the Nodes
/// page; on the other control plane still logged in, kill and log out; then logged out on
/// the first too (`console/e2e/fleet.mjs`).
#[tokio::test(flavor = "multi_thread")]
async fn browser_logs_in_through_paddock_control() {
    let (chromium, console) = browser_setup();
    let f = cluster::Fleet::start(2, &[&[], &[]]);
    let ids: Vec<String> = f
        .nodes()
        .await
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect();
    let shots = clear_shots(true);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("e2e/fleet.mjs")
            .current_dir(&console)
            .env("PADDOCK_URL", &f.controls[0].url)
            .env("PADDOCK_URL2", &f.controls[1].url)
            .env("PADDOCK_ADMIN_KEY", &f.admin_key)
            .env("PADDOCK_NODE_IDS", ids.join(","))
            .env("SCREENSHOT_DIR", &shots)
            .env("CHROMIUM", &chromium)
            .output()
            .map(|o| (o, f))
    })
    .await
    .unwrap()
    .expect("running node e2e/fleet.mjs");
    let (o, _fleet) = out;
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && stdout.contains("all steps passed"),
        "the browser run through paddock control failed ({}):\n{stdout}\n{stderr}",
        o.status
    );
}
