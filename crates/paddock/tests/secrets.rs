//! Tenant secrets end to end against the real `paddock serve` (docs/secrets.md): REST and
//! E2B routes, bad input, env vars and files in real sandboxes, key rotation, and the leak
//! test: no value, raw or encoded, in the database files, the debug log, audit, events,
//! metrics, any response or the server's environment.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

mod server;
use server::{Server, call};

/// Every response body the test saw, except the execs that read a secret inside a sandbox.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    async fn call(&mut self, rb: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = rb.send().await.expect("request");
        let st = r.status();
        let headers = format!("{:?}", r.headers());
        let text = r.text().await.unwrap_or_default();
        self.0.push(headers);
        self.0.push(text.clone());
        (st, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn key_file(dir: &Path, name: &str, byte: u8) -> PathBuf {
    let p = dir.with_extension(name);
    std::fs::write(&p, hex_lower(&[byte; 32])).expect("key file");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn url_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The forms a value could leak in.
fn forms(v: &str) -> Vec<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut f = vec![
        v.as_bytes().to_vec(),
        hex_lower(v.as_bytes()).into_bytes(),
        hex_lower(v.as_bytes()).to_uppercase().into_bytes(),
        url_encoded(v).into_bytes(),
        url_encoded(v).to_lowercase().into_bytes(),
        v.replace(' ', "+").into_bytes(),
    ];
    for e in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        f.push(e.encode(v).into_bytes());
    }
    // JSON escaping of non-ASCII (`\u00fc`).
    f.push(serde_json::to_string(v).unwrap().into_bytes());
    f.push(
        v.chars()
            .map(|c| {
                if c.is_ascii() {
                    c.to_string()
                } else {
                    format!("\\u{:04x}", c as u32)
                }
            })
            .collect::<String>()
            .into_bytes(),
    );
    f
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

async fn exec(s: &Server, id: &str, cmd: &str) -> Value {
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({ "command": cmd })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "exec {cmd}: {v}");
    v
}

/// An E2B control-plane request with the admin key.
fn e2b(s: &Server, m: Method, p: &str) -> reqwest::RequestBuilder {
    s.http
        .request(m, format!("{}{p}", s.url))
        .header("X-API-KEY", &s.admin_key)
}

fn stdout(v: &Value) -> String {
    v["stdout"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_without_a_master_key_answer_503_and_say_how() {
    let s = Server::start(&[]);
    for (method, path, body) in [
        (Method::GET, "/v1/secrets", None),
        (
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": "a", "value": "b"})),
        ),
        (Method::GET, "/v1/secrets/a", None),
        (
            Method::POST,
            "/v1/sandboxes",
            Some(json!({"secrets": {"A": "a"}})),
        ),
    ] {
        let mut rb = s.req(method, path);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let (st, v) = call(rb).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{path}: {v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("--secrets-key-file"),
            "{v}"
        );
    }
    let (st, v) = call(
        s.http
            .get(format!("{}/secrets", s.url))
            .header("X-API-KEY", &s.admin_key),
    )
    .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["code"], 503);
    let (st, v) = call(s.req(Method::GET, "/v1/sandboxes")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        v["sandboxes"].as_array().unwrap().is_empty(),
        "nothing created: {v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_sandboxes_rotate_and_never_leak() {
    let scratch = PathBuf::from(format!(
        "/var/tmp/paddock-secrets-{}",
        &paddock_core::SandboxId::random().as_str()[..8]
    ));
    let key_a = key_file(&scratch, "key-a", 0x11);
    let key_b = key_file(&scratch, "key-b", 0x22);
    let live = key_file(&scratch, "key-live", 0x11);
    let mut s = Server::start_with_env(
        &["--secrets-key-file", live.to_str().unwrap()],
        true,
        &[("PADDOCK_LOG", "debug")],
    );
    let mut seen = Seen::default();
    let tag = paddock_core::SandboxId::random().as_str()[..12].to_owned();
    let v1 = format!("pw one {tag}/+=ü");
    let v2 = format!("pw two {tag}&?#é");
    let v3 = format!("-----BEGIN KEY-----\n{tag} three\n-----END KEY-----\n");
    let v4 = format!("pw four {tag} %41");
    let values = [&v1, &v2, &v3, &v4];

    // REST: create, bad input, update, info, list.
    let (st, v) = seen
        .call(
            s.req(Method::POST, "/v1/secrets")
                .json(&json!({"name": "db", "value": v1, "metadata": {"owner": "ops"}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["version"], 1);
    assert_eq!(v["metadata"]["owner"], "ops");
    assert!(v.get("value").is_none());
    let db_id = v["id"].as_str().unwrap().to_owned();
    for (body, status, what) in [
        (json!({"name": "db", "value": "x"}), 409, "already exists"),
        (
            json!({"name": "../etc", "value": "x"}),
            400,
            "invalid secret name",
        ),
        (
            json!({"name": "", "value": "x"}),
            400,
            "invalid secret name",
        ),
        (
            json!({"name": "big", "value": "x".repeat(64 * 1024 + 1)}),
            400,
            "at most 65536 bytes",
        ),
        (
            json!({"name": "n", "value": "x", "colour": 1}),
            400,
            "unknown field",
        ),
        (json!({"name": "n"}), 400, "missing field"),
        (
            json!({"name": "n", "value": "x", "metadata": {"k": "v".repeat(1025)}}),
            400,
            "metadata",
        ),
    ] {
        let (st, v) = seen
            .call(s.req(Method::POST, "/v1/secrets").json(&body))
            .await;
        assert_eq!(st.as_u16(), status, "{body}: {v}");
        assert!(v["message"].as_str().unwrap().contains(what), "{v}");
    }
    let (st, v) = seen
        .call(
            s.req(Method::PUT, "/v1/secrets/db")
                .json(&json!({"value": v2})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 2);
    assert_eq!(v["metadata"]["owner"], "ops", "kept without new metadata");
    let (st, v) = seen
        .call(s.req(Method::GET, &format!("/v1/secrets/{db_id}")))
        .await;
    assert_eq!((st, &v["name"]), (StatusCode::OK, &json!("db")));
    let (st, v) = seen
        .call(
            s.req(Method::PUT, "/v1/secrets/nope")
                .json(&json!({"value": "x"})),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["message"], "unknown secret \"nope\"");

    // Another tenant sees none of it.
    let (_, other) = s.new_key(json!({"name": "other"})).await;
    let (st, _) = seen
        .call(s.req_as(&other, Method::GET, "/v1/secrets/db"))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = seen
        .call(s.req_as(&other, Method::GET, "/v1/secrets"))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["secrets"], json!([]));
    let (st, _) = seen
        .call(
            s.req_as(&other, Method::POST, "/v1/secret-key/rotate")
                .json(&json!({"key_file": key_b})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // E2B, as SDK 2.63 calls it.
    let (st, v) = seen
        .call(e2b(&s, Method::POST, "/secrets").json(&json!({"name": "cert", "value": v3})))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["currentVersion"], 1);
    assert!(v["secretID"].as_str().unwrap().starts_with("sec_"));
    assert_eq!(v["metadata"], json!({}));
    let (st, v) = seen
        .call(
            e2b(&s, Method::POST, "/secrets/cert")
                .json(&json!({"value": v3, "metadata": {"a": "b"}})),
        )
        .await;
    assert_eq!(
        (st, &v["currentVersion"]),
        (StatusCode::OK, &json!(2)),
        "{v}"
    );
    let (st, v) = seen.call(e2b(&s, Method::GET, "/secrets?limit=1")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().len(), 1);
    let (st, v) = seen
        .call(e2b(&s, Method::POST, "/secrets").json(&json!({"name": "e2b-only", "value": v4})))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = seen.call(e2b(&s, Method::GET, "/secrets/ghost")).await;
    assert_eq!((st, &v["code"]), (StatusCode::NOT_FOUND, &json!(404)));
    let (st, _) = seen.call(e2b(&s, Method::DELETE, "/secrets/ghost")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Unknown secret at create: a 400 naming it, and no sandbox.
    let (st, v) = seen
        .call(
            s.req(Method::POST, "/v1/sandboxes")
                .json(&json!({"secrets": {"A": "db", "B": "missing"}})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["message"], "unknown secret \"missing\"");
    for (secrets, what) in [
        (
            json!({"../x": {"secret": "db", "file": true}}),
            "secret file name",
        ),
        (json!({"A": 5}), "must be a secret name"),
        (json!({"A": {"secret": "db", "mode": 1}}), "unknown field"),
    ] {
        let (st, v) = seen
            .call(
                s.req(Method::POST, "/v1/sandboxes")
                    .json(&json!({"secrets": secrets})),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{secrets}: {v}");
        assert!(v["message"].as_str().unwrap().contains(what), "{v}");
    }
    let (_, v) = seen.call(s.req(Method::GET, "/v1/sandboxes")).await;
    assert!(v["sandboxes"].as_array().unwrap().is_empty(), "{v}");

    // A sandbox gets the current versions: env and a 0400 file on a read-only tmpfs.
    let (st, v) = seen
        .call(s.req(Method::POST, "/v1/sandboxes").json(&json!({
            "secrets": {"DB_PASSWORD": "db", "tls.pem": {"secret": "cert", "file": true}}
        })))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(
        stdout(&exec(&s, &id, "printenv DB_PASSWORD").await),
        format!("{v2}\n")
    );
    assert_eq!(stdout(&exec(&s, &id, "cat /run/secrets/tls.pem").await), v3);
    assert_eq!(
        stdout(
            &exec(
                &s,
                &id,
                "stat -c '%a %U' /run/secrets/tls.pem; stat -f -c %T /run/secrets"
            )
            .await
        ),
        "400 user\ntmpfs\n"
    );
    let w = exec(
        &s,
        &id,
        "echo x > /run/secrets/new 2>&1; echo x >> /run/secrets/tls.pem",
    )
    .await;
    assert_ne!(w["exit_code"], 0, "secrets mount is writable: {w}");
    let w = exec(&s, &id, "grep ' /run/secrets ' /proc/mounts").await;
    assert!(stdout(&w).contains(" ro,"), "{w}");
    let (st, v) = seen
        .call(s.req(Method::GET, &format!("/v1/sandboxes/{id}")))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");

    // E2B create with `Secret.fill` placeholders.
    let (st, v) = seen
        .call(e2b(&s, Method::POST, "/sandboxes").json(&json!({
            "templateID": "base",
            "envVars": {"API": "${e2b.secrets.e2b-only}", "PLAIN": "x"}
        })))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let e2b_id = v["sandboxID"].as_str().unwrap().to_owned();
    assert_eq!(
        stdout(&exec(&s, &e2b_id, "printenv API PLAIN").await),
        format!("{v4}\nx\n")
    );
    let (st, v) = seen
        .call(e2b(&s, Method::POST, "/sandboxes").json(&json!({
            "templateID": "base", "envVars": {"API": "pre-${e2b.secrets.e2b-only}"}
        })))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");

    // Rotation: bad key files change nothing; a good one re-encrypts every version.
    let loose = key_file(&scratch, "key-loose", 0x33);
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let garbage = scratch.with_extension("key-garbage");
    std::fs::write(&garbage, "not a key").unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
    for (f, what) in [
        (&loose, "readable by others"),
        (&garbage, "64 hex digits"),
        (&key_a, "the key in use"),
    ] {
        let (st, v) = seen
            .call(
                s.req(Method::POST, "/v1/secret-key/rotate")
                    .json(&json!({"key_file": f})),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["message"].as_str().unwrap().contains(what), "{v}");
    }
    let (st, v) = seen
        .call(
            s.req(Method::POST, "/v1/secret-key/rotate")
                .json(&json!({"key_file": key_b})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["reencrypted"], 5,
        "db v1 v2, cert v1 v2, e2b-only v1: {v}"
    );
    let (st, v) = seen
        .call(
            s.req(Method::POST, "/v1/sandboxes")
                .json(&json!({"secrets": {"X": "db"}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id2 = v["id"].as_str().unwrap().to_owned();
    assert_eq!(
        stdout(&exec(&s, &id2, "printenv X").await),
        format!("{v2}\n")
    );

    // Restarted with the new key, values open; with the old one, a clear 503.
    std::fs::copy(&key_b, &live).unwrap();
    s.stop();
    s.restart();
    let (st, v) = seen
        .call(
            s.req(Method::POST, "/v1/sandboxes")
                .json(&json!({"secrets": {"X": "cert"}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id3 = v["id"].as_str().unwrap().to_owned();
    assert_eq!(
        stdout(&exec(&s, &id3, "printenv X").await),
        format!("{v3}\n")
    );
    std::fs::copy(&key_a, &live).unwrap();
    s.stop();
    s.restart();
    let (st, v) = seen
        .call(
            s.req(Method::POST, "/v1/sandboxes")
                .json(&json!({"secrets": {"X": "db"}})),
        )
        .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("sealed under master key"),
        "{v}"
    );

    // Delete: gone for good.
    let (st, _) = seen.call(s.req(Method::DELETE, "/v1/secrets/db")).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = seen.call(s.req(Method::GET, "/v1/secrets/db")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = seen.call(e2b(&s, Method::DELETE, "/secrets/cert")).await;
    assert_eq!(st, StatusCode::NO_CONTENT);

    // The leak test.
    for p in [
        "/v1/events?limit=1000",
        "/v1/audit?limit=1000",
        "/metrics",
        "/v1/sandboxes",
    ] {
        let (st, _) = seen.call(s.req(Method::GET, p)).await;
        assert_eq!(st, StatusCode::OK, "{p}");
    }
    let (_, audit) = call(s.req(Method::GET, "/v1/audit?limit=1000")).await;
    let audited = audit.to_string();
    assert!(audited.contains("secret.create") && audited.contains("secret.rotate_key"));
    let pid = s.pid().expect("server pid");
    let mut haystacks: Vec<(String, Vec<u8>)> = seen
        .0
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("response {i}"), t.clone().into_bytes()))
        .collect();
    haystacks.push((
        "server environment".into(),
        std::fs::read(format!("/proc/{pid}/environ")).unwrap(),
    ));
    s.stop();
    let log = std::fs::read(s.stderr_file.as_ref().unwrap()).unwrap();
    assert!(
        String::from_utf8_lossy(&log).contains("DEBUG"),
        "the server logged at debug level"
    );
    haystacks.push(("server log (debug)".into(), log));
    for f in std::fs::read_dir(&s.data).unwrap() {
        let p = f.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("paddock.db") {
            haystacks.push((name, std::fs::read(&p).unwrap()));
        }
    }
    assert!(haystacks.iter().any(|(n, _)| n == "paddock.db"));
    for v in values {
        for form in forms(v) {
            for (where_, hay) in &haystacks {
                assert!(
                    !contains(hay, &form),
                    "a secret value leaked into {where_} as {:?}",
                    String::from_utf8_lossy(&form)
                );
            }
        }
    }
    for f in [key_a, key_b, live, loose, garbage] {
        let _ = std::fs::remove_file(f);
    }
}
