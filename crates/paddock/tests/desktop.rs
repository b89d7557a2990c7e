//! Desktop sandboxes (`templates/desktop.Paddockfile`, `docs/desktop.md`): the template built
//! once with `paddock template ready desktop` (debian first), then
//! - natively: the template's default limits, `paddock desktop ID` (starts the view, prints
//!   the URL with the access token of the private port 6080), the view refused without the
//!   token, and noVNC drawing the desktop in headless Chromium (Playwright) through the proxy;
//!   bad input (a sandbox without a desktop);
//! - E2B's desktop SDKs unchanged: the pytest suite in `tests/desktop/` (`e2b-desktop`, venv
//!   under `/var/tmp`, PyPI) and the node suite in `tests/desktop-js/` (`@e2b/desktop` and
//!   `playwright-core`, `npm ci` under `/var/tmp`).
//!
//! One test function, so the template is built once per run. Needs root, debootstrap, the
//! Debian mirror, PyPI, the npm registry, node and Debian's `chromium` on the host.

mod server;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::venv::{fnv1a, prepare_venv};
use server::*;

/// The domain the server is started with (every `*.paddock.test` name resolves to the
/// server inside the test browser).
const DOMAIN: &str = "paddock.test";
/// The venv of the Python suite.
const VENV: &str = "/var/tmp/paddock-desktop-venv";
/// Where the JavaScript packages are installed (`npm ci`), with the suite's files.
const JS_DIR: &str = "/var/tmp/paddock-desktop-js";
/// Tests in `tests/desktop/test_desktop.py`; every one must pass.
const PY_TESTS: usize = 8;
/// Tests in `tests/desktop-js/desktop.test.mjs`.
const JS_TESTS: usize = 1;
/// An upper bound for each suite.
const SUITE_TIMEOUT: Duration = Duration::from_secs(900);

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// Runs the `paddock` CLI against `s`; returns (exit code, stdout, stderr).
fn cli(s: &Server, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(args)
        .env("PADDOCK_URL", &s.url)
        .env("PADDOCK_API_KEY", &s.admin_key)
        .stdin(Stdio::null())
        .output()
        .expect("running paddock");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Installs the JavaScript packages into `JS_DIR` unless its lock file is unchanged; copies
/// the suite's files.
fn prepare_js() -> PathBuf {
    let src = tests_dir().join("desktop-js");
    let dir = Path::new(JS_DIR);
    std::fs::create_dir_all(dir).expect("creating the JS directory");
    let lock = std::fs::read(src.join("package-lock.json")).expect("package-lock.json");
    let want = format!("{:016x}\n", fnv1a(&lock));
    let lock_file = File::create(format!("{JS_DIR}.lock")).expect("lock file");
    rustix::fs::flock(&lock_file, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    let hash = dir.join("paddock-lock.hash");
    if std::fs::read_to_string(&hash).ok() != Some(want.clone())
        || !dir.join("node_modules/@e2b/desktop/package.json").exists()
    {
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(src.join(f), dir.join(f)).expect("copying the package files");
        }
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("the desktop JavaScript suite needs npm on PATH: {e}"));
        assert!(
            out.status.success(),
            "npm ci failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&hash, &want).expect("writing the lock hash");
    }
    for f in ["desktop.test.mjs", "view.mjs", "console-view.mjs"] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copying the suite");
    }
    dir.to_path_buf()
}

/// Runs `cmd` to its end within `SUITE_TIMEOUT`, echoing its stdout; returns (success,
/// stdout).
fn run_echoing(mut cmd: Command, what: &str) -> (bool, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut buf = [0u8; 4096];
        loop {
            match std::io::Read::read(&mut stdout, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    print!("{text}");
                    all.push_str(&text);
                }
            }
        }
        all
    });
    let status = wait_or_kill(&mut child, SUITE_TIMEOUT);
    let out = reader.join().expect("output reader");
    let Some(status) = status else {
        panic!("{what} did not finish within {SUITE_TIMEOUT:?}");
    };
    (status.success(), out)
}

/// The number before `word` on the last line that has it (`8 passed`, `# pass 1`).
fn count(out: &str, word: &str) -> usize {
    out.lines()
        .rev()
        .find_map(|l| {
            let words: Vec<&str> = l.split([' ', ',']).collect();
            words.windows(2).find_map(|w| {
                if w[1] == word {
                    w[0].parse().ok()
                } else if w[0] == word {
                    w[1].parse().ok()
                } else {
                    None
                }
            })
        })
        .unwrap_or(0)
}

/// Opens `url` in headless Chromium (`view.mjs`); returns what noVNC's canvas showed.
fn browser_view(js: &Path, url: &str) -> Value {
    let out = Command::new("node")
        .arg("view.mjs")
        .arg(url)
        .current_dir(js)
        .env("PADDOCK_DOMAIN", DOMAIN)
        .output()
        .expect("running node view.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "view.mjs failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// [`browser_view`] of sandbox `id`'s view at `url`, once more if the first showed nothing.
/// A view that does not connect prints what the page saw (failed requests, WebSocket
/// events, console errors) and the view's logs in the sandbox, so a failure in CI can be
/// told apart (a module not loaded, the WebSocket refused, a desktop that drew nothing);
/// one fresh browser is tried again, since noVNC itself never reconnects.
async fn view_connected(s: &Server, id: &str, js: &Path, url: &str) -> Value {
    let mut seen = Value::Null;
    for attempt in 1..=2 {
        let (js2, url2) = (js.to_path_buf(), url.to_owned());
        seen = tokio::task::spawn_blocking(move || browser_view(&js2, &url2))
            .await
            .unwrap();
        if seen["connected"] == true {
            break;
        }
        let (_, logs) = call(
            s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                .json(&json!({"cmd": ["sh", "-c",
                    "pgrep -a -x 'Xvfb|x11vnc|xfdesktop|xfce4-panel|python3' ; netstat -tln; \
                     tail -n 20 /tmp/novnc.log /tmp/x11vnc_stderr.log /tmp/xfce4.log"]})),
        )
        .await;
        eprintln!(
            "desktop view attempt {attempt} of {url} showed nothing: {seen:#}\nin the sandbox:\n{}\n{}",
            logs["stdout"].as_str().unwrap_or_default(),
            logs["stderr"].as_str().unwrap_or_default()
        );
    }
    seen
}

/// GETs a host-routed proxy URL from the test server: its Host, sent to the server's address.
async fn get_host_routed(s: &Server, url: &str) -> StatusCode {
    let u = reqwest::Url::parse(url).expect("a URL");
    let host = format!("{}:{}", u.host_str().unwrap(), u.port().unwrap());
    let target = format!(
        "{}{}{}",
        s.url,
        u.path(),
        u.query().map(|q| format!("?{q}")).unwrap_or_default()
    );
    reqwest::Client::new()
        .get(target)
        .header("host", host)
        .send()
        .await
        .expect("proxy request")
        .status()
}

#[tokio::test(flavor = "multi_thread")]
async fn desktop_template_native_view_and_both_sdks() {
    let s = Server::start(&["--domain", DOMAIN]);
    let setup = std::thread::spawn(|| {
        (
            prepare_venv(VENV, &tests_dir().join("desktop")),
            prepare_js(),
        )
    });

    let t0 = Instant::now();
    let (code, _, err) = cli(&s, &["template", "ready", "desktop"]);
    eprintln!(
        "ready desktop (debian first): {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(code, 0, "{err}");
    let (python, js) = setup.join().expect("preparing the SDK suites");

    let (st, t) = call(s.req(Method::GET, "/v1/templates/desktop")).await;
    assert_eq!(st, StatusCode::OK, "{t}");
    assert_eq!(
        t["config"]["limits"],
        json!({"memory_bytes": 2u64 << 30, "pids": 1024, "disk_bytes": 4u64 << 30}),
        "{t}"
    );

    let t1 = Instant::now();
    native(&s, &js).await;
    eprintln!("native checks: {:.1} s", t1.elapsed().as_secs_f64());

    let t1 = Instant::now();
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "pytest", "-q", "-rfE"])
        .arg(tests_dir().join("desktop"))
        .current_dir(tests_dir().join("desktop"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
    e2b_env(&mut cmd, &s.url, &s.admin_key, Some(DOMAIN));
    let (ok, out) = run_echoing(cmd, "the desktop pytest suite");
    eprintln!("python SDK suite: {:.1} s", t1.elapsed().as_secs_f64());
    assert!(ok, "the desktop pytest suite failed");
    assert_eq!(count(&out, "passed"), PY_TESTS, "every Python test passes");

    let t1 = Instant::now();
    let mut cmd = Command::new("node");
    cmd.args(["--test", "--test-reporter=tap", "desktop.test.mjs"])
        .current_dir(&js)
        .env("PADDOCK_DOMAIN", DOMAIN);
    e2b_env(&mut cmd, &s.url, &s.admin_key, Some(DOMAIN));
    let (ok, out) = run_echoing(cmd, "the desktop node suite");
    eprintln!("js SDK suite: {:.1} s", t1.elapsed().as_secs_f64());
    assert!(ok, "the desktop node suite failed");
    assert_eq!(
        count(&out, "pass"),
        JS_TESTS,
        "every JavaScript test passes"
    );

    assert_no_sandboxes_left(&s, "the desktop suites").await;
    eprintln!("desktop: {:.1} s in all", t0.elapsed().as_secs_f64());
}

/// The native path: limits, `paddock desktop`, the private port's token, the browser view.
async fn native(s: &Server, js: &Path) {
    // The template's limits, unless the create names its own.
    let v = s.create(json!({"template": "desktop"})).await;
    let id = v["id"].as_str().unwrap().to_owned();
    let (_, got) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(got["limits"]["memory_bytes"], 2u64 << 30, "{got}");
    let other = s
        .create(json!({"template": "desktop", "memory": "1G", "pids": 256}))
        .await;
    let other_id = other["id"].as_str().unwrap();
    let (_, o) = call(s.req(Method::GET, &format!("/v1/sandboxes/{other_id}"))).await;
    assert_eq!(o["limits"]["memory_bytes"], 1u64 << 30, "{o}");
    assert_eq!(o["limits"]["pids"], 256, "{o}");
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{other_id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);

    // `paddock desktop` starts the view and prints the URL of the private port, with the token.
    let t0 = Instant::now();
    let (code, url, err) = cli(s, &["desktop", &id, "--size", "640x480"]);
    eprintln!(
        "paddock desktop (start): {:.0} ms",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(code, 0, "{err}");
    let url = url.trim().to_owned();
    let prefix = format!("http://6080-{id}.{DOMAIN}:");
    assert!(url.starts_with(&prefix), "{url}");
    assert!(
        url.contains("/vnc.html?autoconnect=true&resize=scale&paddock_token="),
        "{url}"
    );
    // Again: nothing is started twice, the same URL.
    let (code, again, err) = cli(s, &["desktop", &id]);
    assert_eq!((code, again.trim()), (0, url.as_str()), "{err}");
    let (code, printed, err) = cli(s, &["desktop", &id, "--no-start"]);
    assert_eq!((code, printed.trim()), (0, url.as_str()), "{err}");
    let (_, ps) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"cmd": ["sh", "-c", "pgrep -c -x Xvfb; pgrep -c -x x11vnc"]})),
    )
    .await;
    assert_eq!(ps["stdout"], "1\n1\n", "{ps}");

    // The private port: refused without the token, served with it.
    let (no_token, _) = url.split_once("&paddock_token=").unwrap();
    assert_eq!(get_host_routed(s, no_token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get_host_routed(s, &format!("{no_token}&paddock_token=wrong")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(get_host_routed(s, &url).await, StatusCode::OK);

    // noVNC in a browser, through the proxy (WebSocket included), draws the desktop.
    let seen = view_connected(s, &id, js, &url).await;
    assert_eq!(seen["connected"], true, "{seen}");
    assert_eq!(
        (seen["width"].as_u64(), seen["height"].as_u64()),
        (Some(640), Some(480)),
        "{seen}"
    );
    // The path-routed form works in the browser too (noVNC is told the WebSocket's path).
    let (code, path_url, err) = cli(s, &["desktop", &id, "--path", "--no-start"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        path_url.contains(&format!("/proxy/{id}/6080/vnc.html?"))
            && path_url.contains(&format!("path=proxy/{id}/6080/websockify")),
        "{path_url}"
    );
    let seen = view_connected(s, &id, js, path_url.trim()).await;
    assert_eq!(seen["connected"], true, "{seen}");

    // The console's sandbox page embeds the view (console served on the sandbox domain, so
    // the frame is same-site and gets its token cookie).
    let console_url = s.url.replace("127.0.0.1", DOMAIN);
    let (js2, key, id2) = (js.to_path_buf(), s.admin_key.clone(), id.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(["console-view.mjs", &console_url, &key, &id2])
            .current_dir(&js2)
            .env("PADDOCK_DOMAIN", DOMAIN)
            .output()
            .expect("running node console-view.mjs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "console-view.mjs: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let embedded: Value = serde_json::from_str(stdout.trim()).expect("console-view JSON");
    assert_eq!(embedded["connected"], true, "{embedded}");
    let src = embedded["src"].as_str().unwrap();
    assert!(
        src.starts_with(&format!("http://6080-{id}.{DOMAIN}:")) && src.contains("paddock_token="),
        "{src}"
    );

    // A sandbox without a desktop: a clear error, nothing printed.
    let b = s.create(json!({"template": "base"})).await;
    let bid = b["id"].as_str().unwrap();
    let (code, out, err) = cli(s, &["desktop", bid]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(
        err.contains("did not start") && err.contains("desktop template"),
        "{err}"
    );
    let (code, _, err) = cli(s, &["desktop", &id, "--size", "10x10"]);
    assert_eq!(code, 2, "{err}");
    for sid in [bid, id.as_str()] {
        let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{sid}"))).await;
        assert_eq!(st, StatusCode::NO_CONTENT);
    }
}

#[test]
fn counts_parse() {
    assert_eq!(count("==== 8 passed in 40.1s ====", "passed"), 8);
    assert_eq!(count("1 failed, 7 passed, 2 warnings in 3s", "passed"), 7);
    assert_eq!(count("# tests 1\n# pass 1\n# fail 0\n", "pass"), 1);
    assert_eq!(count("nothing", "pass"), 0);
}
