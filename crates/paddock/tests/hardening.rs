//! Server hardening against the real `paddock serve` (issue 11, items 7, 8, 9, 12): the data
//! plane's and the port proxy's rate limits, file modes of the data directory and the uid
//! claims, NUL bytes in every input, and nothing of an instance left on the host after a
//! clean stop.

mod server;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::*;

const SLOTS_DIR: &str = "/run/paddock/uid-slots";

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The claim file of sandbox `id` (its content names the sandbox's cgroup).
fn claim_of(id: &str) -> Option<PathBuf> {
    std::fs::read_dir(SLOTS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .find(|e| {
            std::fs::read_to_string(e.path()).is_ok_and(|c| c.trim().ends_with(&format!("/{id}")))
        })
        .map(|e| e.path())
}

/// The sandbox's envd access token.
async fn token_of(s: &Server, id: &str) -> String {
    let (st, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/ports"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["access_token"].as_str().expect("access_token").to_owned()
}

/// Sends `make()` until it answers 429 (at most `max` times) and returns that answer.
async fn until_429(
    max: usize,
    make: impl Fn() -> reqwest::RequestBuilder,
) -> (usize, reqwest::header::HeaderMap, Value) {
    for i in 1..=max {
        let r = make().send().await.expect("request");
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            let h = r.headers().clone();
            let v = r.json::<Value>().await.unwrap_or(Value::Null);
            return (i, h, v);
        }
    }
    panic!("no 429 in {max} requests");
}

#[tokio::test(flavor = "multi_thread")]
async fn data_plane_files_are_rate_limited_per_key_in_e2b_shape() {
    let s = Server::start(&["--data-rate", "1", "--data-rate-burst", "5"]);
    let v = s.create(json!({})).await;
    let id = v["id"].as_str().expect("id").to_owned();
    let token = token_of(&s, &id).await;
    let files = || {
        s.http
            .get(format!("{}/files?path=/etc/hostname", s.url))
            .header("e2b-sandbox-id", &id)
            .header("x-access-token", &token)
    };
    let (n, h, body) = until_429(200, files).await;
    eprintln!("data plane: 429 after {n} requests (rate 1/s, burst 5)");
    assert!(n <= 20, "429 only after {n} requests with a burst of 5");
    assert_eq!(body["code"], 429, "E2B shape: {body}");
    assert!(body["message"].as_str().is_some(), "{body}");
    assert!(h.get("retry-after").is_some(), "Retry-After missing");
    // Requests without the token are refused before they are charged: they never 429 and
    // do not spend the owner's rate.
    let (st, _) = call(
        s.http
            .get(format!("{}/files?path=/etc/hostname", s.url))
            .header("e2b-sandbox-id", &id),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // REST has a bucket of its own.
    let (st, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // The bucket refills: at 1/s a request passes again within a few seconds.
    eventually(
        Duration::from_secs(10),
        "the data-plane bucket refills",
        || async {
            let st = files().send().await.expect("request").status();
            if st != StatusCode::OK {
                assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
            }
            done_when(st == StatusCode::OK, st)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn port_proxy_is_rate_limited_per_key_and_public_ports_per_sandbox() {
    let s = Server::start(&["--data-rate", "1", "--data-rate-burst", "5"]);
    let v = s.create(json!({})).await;
    let id = v["id"].as_str().expect("id").to_owned();
    let token = token_of(&s, &id).await;
    // Nothing listens on 8000: granted requests answer 502 port_closed until the key's
    // bucket is empty.
    let proxied = || {
        s.http
            .get(format!("{}/proxy/{id}/8000/", s.url))
            .header("x-access-token", &token)
    };
    let (n, h, body) = until_429(200, proxied).await;
    eprintln!("proxy: 429 after {n} requests (rate 1/s, burst 5)");
    assert!(n <= 20, "429 only after {n} requests with a burst of 5");
    assert_eq!(body["code"], "rate_limited", "Paddock shape: {body}");
    assert!(h.get("retry-after").is_some(), "Retry-After missing");
    // Path routing with an API key is charged to that key's data-plane bucket (not REST).
    let (n, _, body) = until_429(200, || s.req(Method::GET, &format!("/proxy/{id}/8000/"))).await;
    assert!(n <= 20, "429 only after {n} requests");
    assert_eq!(body["code"], "rate_limited", "{body}");
    let (st, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::OK, "REST has its own bucket: {v}");
    // A public port reached without credentials is charged to the sandbox, so strangers
    // are limited too, and (a separate bucket) they still pass while the key's is empty.
    let (st, v) = call(s.req(
        Method::POST,
        &format!("/v1/sandboxes/{id}/ports/8000/public"),
    ))
    .await;
    assert!(st.is_success(), "{st} {v}");
    let (st, v) = call(s.http.get(format!("{}/proxy/{id}/8000/", s.url))).await;
    assert_eq!(st, StatusCode::BAD_GATEWAY, "{v}");
    let (n, _, body) = until_429(200, || s.http.get(format!("{}/proxy/{id}/8000/", s.url))).await;
    assert!(n <= 20, "429 only after {n} requests");
    assert_eq!(body["code"], "rate_limited", "{body}");
}

/// Files of the instance left on the host: mounts of the data dir, loop devices of its
/// image, its cgroup directories, uid claims naming its cgroups.
fn instance_leftovers(data: &Path) -> Vec<String> {
    let instance = std::fs::read_to_string(data.join("instance"))
        .expect("instance name")
        .trim()
        .to_owned();
    let mut out: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(data.to_str().expect("utf-8 path")))
        .map(|l| format!("mount: {l}"))
        .collect();
    let lo = Command::new("losetup")
        .arg("-j")
        .arg(data.join("layers.img"))
        .output()
        .expect("losetup");
    out.extend(
        String::from_utf8_lossy(&lo.stdout)
            .lines()
            .map(|l| format!("loop device: {l}")),
    );
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup/paddock")];
    for c in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        roots.push(c.path().join("paddock"));
    }
    for r in roots {
        let d = r.join(&instance);
        if d.exists() {
            out.push(format!("cgroup: {}", d.display()));
        }
    }
    for e in std::fs::read_dir(SLOTS_DIR).into_iter().flatten().flatten() {
        if std::fs::read_to_string(e.path())
            .is_ok_and(|c| c.contains(&format!("/paddock/{instance}/")))
        {
            out.push(format!("uid claim: {}", e.path().display()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_stop_with_no_sandbox_left_leaves_nothing_of_the_instance() {
    let mut s = Server::start(&[]);
    let v = s.create(json!({})).await;
    let id = v["id"].as_str().expect("id").to_owned();
    assert!(claim_of(&id).is_some(), "a running sandbox holds a claim");
    assert!(
        !instance_leftovers(&s.data).is_empty(),
        "a running instance has a mount, cgroups and a claim"
    );
    let (st, v) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert!(st.is_success(), "{st} {v}");
    let status = s.stop().expect("server exit status");
    assert!(status.success(), "{status}");
    assert_eq!(instance_leftovers(&s.data), Vec::<String>::new());
    // The data dir is still usable: the next start mounts it again and creates.
    s.restart();
    s.create(json!({})).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn paddock_run_and_ps_leave_nothing_of_the_instance() {
    let data = PathBuf::from(format!(
        "/var/tmp/paddock-hardening-run-{}",
        &paddock_core::SandboxId::random().as_str()[..10]
    ));
    let paddock = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_paddock"))
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .env("PADDOCK_AGENT_BIN", env!("CARGO_BIN_EXE_paddock-agent"))
            .output()
            .expect("running paddock")
    };
    let out = paddock(&["run", "--", "echo", "hello"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    let after_run = instance_leftovers(&data);
    let out = paddock(&["ps"]);
    assert!(out.status.success(), "{out:?}");
    let after_ps = instance_leftovers(&data);
    let _ = Command::new("umount")
        .arg("-l")
        .arg(data.join("layers"))
        .status();
    let _ = std::fs::remove_dir_all(&data);
    assert_eq!(after_run, Vec::<String>::new(), "after paddock run");
    assert_eq!(after_ps, Vec::<String>::new(), "after paddock ps");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_sandboxs_uid_claim_is_removed_at_reconcile() {
    let mut s = Server::start(&[]);
    let v = s.create(json!({})).await;
    let id = v["id"].as_str().expect("id").to_owned();
    let claim = claim_of(&id).expect("claim of the sandbox");
    s.kill9();
    // What a kill -9 between a destroy's last steps leaves: the sandbox's processes,
    // cgroups and layer are gone, its uid claim is not.
    for pid in processes_of(&id) {
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
    eventually(Duration::from_secs(20), "the sandbox dies", || async {
        let left = processes_of(&id);
        done_when(left.is_empty(), format!("{left:?}"))
    })
    .await;
    for d in cgroups_of(&id) {
        eventually(
            Duration::from_secs(5),
            &format!("removing {}", d.display()),
            || async { std::fs::remove_dir(&d) },
        )
        .await;
    }
    let sub = s.data.join("layers/sandboxes").join(&id);
    let out = Command::new("btrfs")
        .args(["subvolume", "delete"])
        .arg(&sub)
        .output()
        .expect("btrfs");
    assert!(out.status.success(), "{out:?}");
    assert!(claim.exists(), "the claim is what is left");
    s.restart();
    let (_, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(v["stop_reason"], "lost", "{v}");
    assert!(
        claim_of(&id).is_none(),
        "the lost sandbox's claim {} is still there",
        claim.display()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_data_dir_the_store_and_the_uid_claims_are_private() {
    let mut s = Server::start(&[]);
    let v = s.create(json!({})).await;
    let id = v["id"].as_str().expect("id").to_owned();
    assert_eq!(mode(&s.data), 0o700, "data dir");
    for f in [
        "paddock.db",
        "paddock.db-wal",
        "paddock.db-shm",
        "secret.key",
    ] {
        assert_eq!(mode(&s.data.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(Path::new("/run/paddock")), 0o700);
    assert_eq!(mode(Path::new(SLOTS_DIR)), 0o700);
    let claim = claim_of(&id).expect("claim of the sandbox");
    assert_eq!(mode(&claim), 0o600, "{}", claim.display());
    // A data dir and store made by an older version (0755, 0644) are tightened at start,
    // and an adopted sandbox's claim too.
    s.kill9();
    std::fs::set_permissions(&s.data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for f in ["paddock.db", "paddock.db-wal", "paddock.db-shm"] {
        let p = s.data.join(f);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
    }
    std::fs::set_permissions(&claim, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    s.restart();
    assert_eq!(mode(&s.data), 0o700, "data dir after restart");
    for f in ["paddock.db", "paddock.db-wal", "paddock.db-shm"] {
        assert_eq!(mode(&s.data.join(f)), 0o600, "{f} after restart");
    }
    assert_eq!(mode(&claim), 0o600, "adopted claim after restart");
    // Sandboxes still work under a private data dir.
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"command": "id -u"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let v2 = s.create(json!({})).await;
    let id2 = v2["id"].as_str().expect("id");
    assert_eq!(mode(&claim_of(id2).expect("claim")), 0o600);
}

/// Asserts a 400 whose message names `field` and says NUL.
fn assert_nul_refused(what: &str, st: StatusCode, v: &Value, field: &str) {
    assert_eq!(st, StatusCode::BAD_REQUEST, "{what}: {v}");
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(field) && msg.contains("NUL"),
        "{what}: the message should name {field:?}: {v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nul_bytes_are_refused_with_400_naming_the_field_on_every_input_path() {
    let s = Server::start(&[]);
    let v = s.create(json!({})).await;
    let id = v["id"].as_str().expect("id").to_owned();
    let sb = |p: &str| format!("/v1/sandboxes/{id}{p}");

    // JSON bodies: exec, create, fs, tests.
    let bodies: Vec<(Method, String, Value, &str)> = vec![
        (
            Method::POST,
            sb("/exec"),
            json!({"cmd": ["true"], "env": {"A": "x\u{0}y"}}),
            "env.A",
        ),
        (
            Method::POST,
            sb("/exec"),
            json!({"cmd": ["true"], "env": {"A\u{0}": "x"}}),
            "a key of env",
        ),
        (
            Method::POST,
            sb("/exec"),
            json!({"cmd": ["echo", "a\u{0}b"]}),
            "cmd[1]",
        ),
        (
            Method::POST,
            sb("/exec"),
            json!({"command": "echo a\u{0}b"}),
            "command",
        ),
        (
            Method::POST,
            sb("/exec"),
            json!({"cmd": ["pwd"], "cwd": "/tmp\u{0}/x"}),
            "cwd",
        ),
        (
            Method::POST,
            sb("/exec"),
            json!({"cmd": ["id"], "user": "root\u{0}"}),
            "user",
        ),
        (
            Method::POST,
            sb("/exec"),
            json!({"cmd": ["id"], "tag": "t\u{0}"}),
            "tag",
        ),
        (
            Method::POST,
            sb("/exec"),
            json!({"cmd": ["id"], "background": true, "env": {"A": "\u{0}"}}),
            "env.A",
        ),
        (
            Method::POST,
            "/v1/sandboxes".into(),
            json!({"env": {"A": "x\u{0}"}}),
            "env.A",
        ),
        (
            Method::POST,
            "/v1/sandboxes".into(),
            json!({"metadata": {"k": "v\u{0}"}}),
            "metadata.k",
        ),
        (
            Method::POST,
            "/v1/sandboxes".into(),
            json!({"metadata": {"k\u{0}": "v"}}),
            "a key of metadata",
        ),
        (
            Method::POST,
            "/v1/sandboxes".into(),
            json!({"template": "base\u{0}"}),
            "template",
        ),
        (
            Method::POST,
            "/v1/sandboxes".into(),
            json!({"user": "user\u{0}"}),
            "user",
        ),
        (
            Method::POST,
            sb("/fs/mkdir"),
            json!({"path": "/tmp/a\u{0}b"}),
            "path",
        ),
        (
            Method::POST,
            sb("/fs/move"),
            json!({"from": "/tmp/a", "to": "/tmp/b\u{0}"}),
            "to",
        ),
        (
            Method::POST,
            sb("/tests"),
            json!({"cmd": "true", "cwd": "/tmp\u{0}"}),
            "cwd",
        ),
        (
            Method::POST,
            "/v1/keys".into(),
            json!({"name": "k\u{0}"}),
            "name",
        ),
    ];
    for (m, path, body, field) in bodies {
        let (st, v) = call(s.req(m.clone(), &path).json(&body)).await;
        assert_nul_refused(&format!("{m} {path} {body}"), st, &v, field);
    }

    // Query parameters and paths: files, fs, archive, list filters, template names.
    let targets: Vec<(Method, String, &str)> = vec![
        (Method::GET, sb("/files?path=/etc/a%00b"), "\"path\""),
        (Method::PUT, sb("/files?path=/tmp/a%00b"), "\"path\""),
        (
            Method::GET,
            sb("/files?path=/etc/hostname&user=ro%00ot"),
            "\"user\"",
        ),
        (Method::DELETE, sb("/files?path=/tmp/a%00"), "\"path\""),
        (Method::GET, sb("/fs/list?path=/tmp%00"), "\"path\""),
        (Method::GET, sb("/fs/stat?path=/tmp%00"), "\"path\""),
        (Method::GET, sb("/archive?path=/tmp%00"), "\"path\""),
        (Method::PUT, sb("/archive?path=/tmp%00"), "\"path\""),
        (
            Method::GET,
            "/v1/sandboxes?metadata.k%00=v".into(),
            "query parameter name",
        ),
        (
            Method::GET,
            "/v1/sandboxes?metadata.k=v%00".into(),
            "\"metadata.k\"",
        ),
        (
            Method::DELETE,
            "/v1/templates/base%00x".into(),
            "the request path",
        ),
        (Method::GET, sb("/pty?cwd=/tmp%00"), "\"cwd\""),
    ];
    for (m, path, field) in targets {
        let (st, v) = call(s.req(m.clone(), &path).body("")).await;
        assert_nul_refused(&format!("{m} {path}"), st, &v, field);
    }

    // A build file with NUL is refused at parse, naming its line.
    let (st, v) = call(
        s.req(Method::POST, "/v1/templates/nul-test/build")
            .header("content-type", "text/plain")
            .body("FROM base\nRUN echo a\0b\n"),
    )
    .await;
    assert_nul_refused("build file", st, &v, "line 2");

    // NUL in an exec's stdin is data, not a C string: it reaches the process.
    let (st, v) = call(
        s.req(Method::POST, &sb("/exec"))
            .json(&json!({"cmd": ["wc", "-c"], "stdin": "a\u{0}b"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["stdout"].as_str().map(str::trim), Some("3"), "{v}");

    // E2B control routes answer in E2B's shape.
    let e2b = |m: Method, p: &str| {
        s.http
            .request(m, format!("{}{p}", s.url))
            .header("x-api-key", &s.admin_key)
    };
    let (st, v) = call(
        e2b(Method::POST, "/sandboxes")
            .json(&json!({"templateID": "base", "envVars": {"A": "x\u{0}"}})),
    )
    .await;
    assert_nul_refused("E2B create envVars", st, &v, "envVars.A");
    assert_eq!(v["code"], 400, "E2B shape: {v}");
    let (st, v) =
        call(e2b(Method::POST, "/sandboxes").json(&json!({"templateID": "base\u{0}"}))).await;
    assert_nul_refused("E2B create templateID", st, &v, "templateID");
    let (st, v) = call(e2b(Method::GET, "/v2/sandboxes?metadata=a%3Db%00")).await;
    assert_nul_refused("E2B list metadata", st, &v, "\"metadata\"");
    assert_eq!(v["code"], 400, "E2B shape: {v}");

    // The E2B data plane: the agent refuses NUL in a process's fields and in paths as
    // invalid arguments, never as an internal error.
    let token = token_of(&s, &id).await;
    let dp = |m: Method, p: &str| {
        s.http
            .request(m, format!("{}{p}", s.url))
            .header("e2b-sandbox-id", &id)
            .header("x-access-token", &token)
    };
    let (st, v) = call(dp(Method::GET, "/files?path=/etc/a%00b&username=user")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "data plane /files: {v}");
    for body in [
        json!({"process": {"cmd": "/bin/echo", "args": ["a\u{0}b"]}}),
        json!({"process": {"cmd": "/bin/true", "envs": {"A": "x\u{0}"}}}),
        json!({"process": {"cmd": "/bin/true", "cwd": "/tmp\u{0}"}}),
    ] {
        let r = dp(Method::POST, "/process.Process/Start")
            .header("content-type", "application/connect+json")
            .header("connect-protocol-version", "1")
            .body(connect_frame(&body))
            .send()
            .await
            .expect("start");
        let st = r.status();
        let bytes = r.bytes().await.expect("body");
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("invalid_argument") && text.contains("NUL"),
            "data plane Start {body}: {st} {text}"
        );
    }
    let (st, v) = call(
        dp(Method::POST, "/filesystem.Filesystem/Stat")
            .header("content-type", "application/json")
            .json(&json!({"path": "/tmp\u{0}"})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "data plane Stat: {v}");
    assert_eq!(v["code"], "invalid_argument", "{v}");

    // The sandbox is fine afterwards.
    let (st, v) = call(
        s.req(Method::POST, &sb("/exec"))
            .json(&json!({"cmd": ["true"]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

/// A Connect streaming envelope of the JSON message `v`.
fn connect_frame(v: &Value) -> Vec<u8> {
    server::e2b::connect_envelope(&serde_json::to_vec(v).expect("json"))
}
