//! E2B SDK conformance, JavaScript: the unmodified `e2b` npm package (pinned in
//! `e2b-js/package.json` and `e2b-js/package-lock.json`) drives a real `paddock serve`
//! through the `node --test` suite in `tests/e2b-js/`.
//!
//! The packages are installed with `npm ci` into `/var/tmp/paddock-e2b-js` (outside the
//! repository, shared by runs), again only when the lock file or the Node version changes:
//! a hash of both is kept there. Installing needs the npm registry; running needs `node`
//! (18 or later) on PATH.

mod server;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use server::*;

/// Where the suite's packages live.
const DIR: &str = "/var/tmp/paddock-e2b-js";
/// Inside `DIR`: the hash of the lock file and Node version the packages came from.
const HASH_FILE: &str = "paddock-lock.hash";
/// The suite file, copied next to its `node_modules` at every run.
const SUITE: &str = "conformance.test.mjs";
/// The `get_host` check on a machine without wildcard DNS (`localdns_get_host_resolves`).
const LOCALDNS: &str = "localdns.mjs";
/// The number of tests in the suite; every one must pass. Raise it when adding tests.
const TESTS_WRITTEN: usize = 27;
/// The domain the server is started with and the SDK is told about.
const DOMAIN: &str = "paddock.test";
/// An upper bound for the whole run (it takes well under a minute).
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2b-js")
}

/// FNV-1a, 64 bit: enough to notice that the lock file changed.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Installs the pinned packages into `DIR` unless they are there already; copies the suite.
fn prepare() -> PathBuf {
    let dir = Path::new(DIR);
    std::fs::create_dir_all(dir).expect("creating the suite directory");
    let node_version = Command::new("node")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("the E2B JavaScript suite needs node on PATH: {e}"));
    let lock = std::fs::read(suite_dir().join("package-lock.json")).expect("package-lock.json");
    let mut hashed = lock.clone();
    hashed.extend_from_slice(&node_version.stdout);
    let want = format!("{:016x}\n", fnv1a(&hashed));

    // Two test runs at once must not install into the same directory together.
    let lock_file = File::create(format!("{DIR}.lock")).expect("suite lock file");
    rustix::fs::flock(&lock_file, rustix::fs::FlockOperation::LockExclusive)
        .expect("locking the suite directory");

    if std::fs::read_to_string(dir.join(HASH_FILE)).ok() != Some(want.clone())
        || !dir.join("node_modules/e2b/package.json").exists()
    {
        eprintln!("e2b js conformance: npm ci in {DIR}");
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(suite_dir().join(f), dir.join(f)).expect("copying the package files");
        }
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("the E2B JavaScript suite needs npm on PATH: {e}"));
        assert!(
            out.status.success(),
            "npm ci failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(dir.join(HASH_FILE), &want).expect("writing the lock hash");
    }
    for f in [SUITE, LOCALDNS] {
        std::fs::copy(suite_dir().join(f), dir.join(f)).expect("copying the suite");
    }
    dir.to_path_buf()
}

/// The counts of node's TAP summary (`# pass 26`, `# fail 1`, ...).
#[derive(Debug, Default, PartialEq)]
struct Summary {
    tests: usize,
    pass: usize,
    fail: usize,
    skipped: usize,
}

impl Summary {
    /// Takes one output line; true when it was a summary line.
    fn take(&mut self, line: &str) -> bool {
        let Some(rest) = line.strip_prefix("# ") else {
            return false;
        };
        let Some((what, n)) = rest.split_once(' ') else {
            return false;
        };
        let Ok(n) = n.trim().parse::<usize>() else {
            return false;
        };
        match what {
            "tests" => self.tests = n,
            "pass" => self.pass = n,
            "fail" | "cancelled" => self.fail += n,
            "skipped" | "todo" => self.skipped += n,
            _ => return false,
        }
        true
    }
}

/// Runs the suite against `url`, echoing its TAP output.
fn run_suite(dir: &Path, url: &str, key: &str) -> (bool, Summary) {
    let mut cmd = Command::new("node");
    cmd.args(["--test", "--test-reporter=tap", SUITE])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    e2b_env(&mut cmd, url, key, Some(DOMAIN));
    let mut child = cmd.spawn().expect("starting node --test");
    let stdout = child.stdout.take().expect("node stdout");
    let reader = std::thread::spawn(move || {
        let mut summary = Summary::default();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            println!("{line}");
            summary.take(&line);
        }
        summary
    });
    let status = wait_or_kill(&mut child, SUITE_TIMEOUT);
    let summary = reader.join().expect("node output reader");
    let Some(status) = status else {
        panic!("the E2B JavaScript suite did not finish within {SUITE_TIMEOUT:?}");
    };
    (status.success(), summary)
}

#[tokio::test(flavor = "multi_thread")]
async fn e2b_js_sdk_conformance() {
    let dir = tokio::task::spawn_blocking(prepare)
        .await
        .expect("prepare task");
    let s = Server::start(&["--domain", DOMAIN, "--metrics-interval", "1s"]);
    let (_, key) = s.new_key(json!({"name": "e2b-js-sdk"})).await;

    let url = s.url.clone();
    let (ok, summary) = tokio::task::spawn_blocking(move || run_suite(&dir, &url, &key))
        .await
        .expect("suite task");
    println!(
        "e2b js conformance: {} passed, {} failed",
        summary.pass, summary.fail
    );
    assert!(ok, "the E2B JavaScript suite failed: {summary:?}");
    assert_eq!((summary.fail, summary.skipped), (0, 0), "{summary:?}");
    assert!(
        summary.pass >= TESTS_WRITTEN,
        "only {} tests passed, the suite has {TESTS_WRITTEN}",
        summary.pass
    );

    // Every sandbox the suite made was killed.
    assert_no_sandboxes_left(&s, "the E2B JavaScript suite").await;
}

/// `get_host(port)` works on a laptop-like host: the server on its default domain
/// `localhost` with its DNS responder on a loopback address; the SDK program runs in a
/// mount namespace whose `/etc/resolv.conf` names only that responder (this host has no
/// wildcard DNS for `*.localhost`), and Node's `fetch` and Python's `urllib` reach a web
/// server in the sandbox by the name `getHost` returns, with no header or token.
#[tokio::test(flavor = "multi_thread")]
async fn localdns_get_host_resolves() {
    let dir = tokio::task::spawn_blocking(prepare)
        .await
        .expect("prepare task");
    // A loopback address of its own per run, so concurrent runs never share port 53.
    let dns_ip = format!("127.0.53.{}", 1 + std::process::id() % 250);
    let dns = format!("{dns_ip}:53");
    let s = Server::start(&["--dns-listen", &dns]);
    let (_, key) = s.new_key(json!({"name": "localdns"})).await;
    let resolv = dir.join(format!("resolv-{}.conf", std::process::id()));
    std::fs::write(
        &resolv,
        format!("nameserver {dns_ip}\noptions timeout:2 attempts:2\n"),
    )
    .expect("writing the test resolv.conf");

    // Without the responder the name does not resolve here (what a user sees today).
    let unresolved = Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg(format!(
            "echo 'nameserver 127.0.0.1' > {r}.none && mount --bind {r}.none /etc/resolv.conf \
             && getent hosts 8000-abcdefghij0123456789.localhost",
            r = resolv.display()
        ))
        .output()
        .expect("unshare");
    assert!(
        !unresolved.status.success(),
        "*.localhost resolves on this host without help"
    );
    let resolved = Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg(format!(
            "mount --bind {} /etc/resolv.conf && getent hosts 8000-abcdefghij0123456789.localhost",
            resolv.display()
        ))
        .output()
        .expect("unshare");
    assert!(
        String::from_utf8_lossy(&resolved.stdout).starts_with("127.0.0.1 "),
        "the responder did not answer: {resolved:?}"
    );

    let url = s.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "sh", "-c"])
            .arg(format!(
                "mount --bind {} /etc/resolv.conf && exec node {LOCALDNS}",
                resolv.display()
            ))
            .current_dir(&dir);
        // No E2B_DOMAIN: the SDK takes the domain the server answers.
        e2b_env(&mut cmd, &url, &key, None);
        cmd.output().expect("running node")
    })
    .await
    .expect("node task");
    assert!(
        out.status.success(),
        "get_host through the DNS responder failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("localdns ok"));
}

#[test]
fn tap_summary_lines_parse() {
    let mut s = Summary::default();
    for line in [
        "TAP version 13",
        "# tests 27",
        "# suites 0",
        "# pass 26",
        "# fail 1",
        "# cancelled 0",
        "# skipped 0",
        "# todo 0",
        "# duration_ms 1234.5",
        "# Subtest: run returns stdout",
    ] {
        s.take(line);
    }
    assert_eq!(
        s,
        Summary {
            tests: 27,
            pass: 26,
            fail: 1,
            skipped: 0
        }
    );
}
