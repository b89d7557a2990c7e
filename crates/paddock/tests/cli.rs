//! End-to-end tests of the `paddock` CLI client commands against a real `paddock serve`.

mod server;

use std::process::{Command, Output};

use server::*;

fn paddock(s: &Server, args: &[&str]) -> Output {
    paddock_with_key(s, &s.admin_key, args)
}

fn paddock_with_key(s: &Server, key: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(args)
        .env("PADDOCK_URL", &s.url)
        .env("PADDOCK_API_KEY", key)
        .env_remove("PADDOCK_DATA_DIR")
        .output()
        .expect("running paddock")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_drives_a_sandbox_from_create_to_kill() {
    let s = Server::start(&[]);
    let o = paddock(
        &s,
        &[
            "create",
            "--timeout",
            "10m",
            "--memory",
            "256M",
            "--env",
            "GREETING=hi",
            "--metadata",
            "job=cli",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_owned();
    assert_eq!(id.len(), 20, "create prints the id alone: {:?}", stdout(&o));

    // exec streams output and passes the exit code through.
    let o = paddock(
        &s,
        &[
            "exec",
            &id,
            "--",
            "/bin/sh",
            "-c",
            "echo $GREETING; echo oops >&2; exit 5",
        ],
    );
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hi\n");
    assert!(stderr(&o).contains("oops"));
    let o = paddock(&s, &["exec", &id, "--timeout", "1s", "--", "sleep", "30"]);
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));

    // Files and directories both ways.
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    std::fs::write(src.join("a.txt"), "alpha").expect("write");
    std::fs::write(src.join("sub/b.bin"), vec![7u8; 3 << 20]).expect("write");
    let o = paddock(
        &s,
        &[
            "upload",
            &id,
            src.to_str().expect("path"),
            "/home/user/proj",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = paddock(
        &s,
        &[
            "exec",
            &id,
            "--",
            "/bin/sh",
            "-c",
            "cat proj/a.txt; stat -c ' %s %U' proj/sub/b.bin",
        ],
    );
    assert_eq!(stdout(&o), "alpha 3145728 user\n", "{}", stderr(&o));
    let back = tmp.path().join("back");
    let o = paddock(
        &s,
        &[
            "download",
            &id,
            "/home/user/proj",
            back.to_str().expect("path"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(back.join("a.txt")).expect("a"),
        "alpha"
    );
    assert_eq!(
        std::fs::read(back.join("sub/b.bin")).expect("b").len(),
        3 << 20
    );
    let single = tmp.path().join("single.txt");
    let o = paddock(
        &s,
        &[
            "download",
            &id,
            "/home/user/proj/a.txt",
            single.to_str().expect("path"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&single).expect("single"), "alpha");

    // Structured tests.
    let o = paddock(
        &s,
        &[
            "exec",
            &id,
            "--",
            "/bin/sh",
            "-c",
            "mkdir -p t && printf 'def test_a():\\n    assert 1\\ndef test_b():\\n    assert 0\\n' > t/test_x.py",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = paddock(&s, &["test", &id, "--cwd", "/home/user/t"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("1 passed, 1 failed"), "{}", stdout(&o));
    assert!(stdout(&o).contains("test_b"), "{}", stdout(&o));
    // The audit trail names the framework plainly (it said `framework=None`).
    let o = paddock(&s, &["audit", "--sandbox", &id]);
    assert!(
        stdout(&o).contains("framework=auto") && !stdout(&o).contains("None"),
        "{}",
        stdout(&o)
    );

    // ls, url, status, logs, timeout.
    let o = paddock(&s, &["ls"]);
    assert!(
        stdout(&o).contains(&id) && stdout(&o).contains("job=cli"),
        "{}",
        stdout(&o)
    );
    let o = paddock(&s, &["url", &id, "5173", "--no-token"]);
    let port = s.url.rsplit(':').next().unwrap_or_default();
    assert_eq!(
        stdout(&o).trim(),
        format!("http://5173-{id}.localhost:{port}/")
    );
    let o = paddock(&s, &["status"]);
    assert!(
        o.status.success() && stdout(&o).contains("sandboxes"),
        "{}",
        stdout(&o)
    );
    let o = paddock(&s, &["timeout", &id, "20m"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = paddock(&s, &["logs", &id]);
    assert!(
        stdout(&o).contains("created") && stdout(&o).contains("exit"),
        "{}",
        stdout(&o)
    );
    // Uploads and test runs are there too.
    assert!(
        stdout(&o).contains("upload (archive)  path=/home/user/proj")
            && stdout(&o).contains("  test  cwd=/home/user/t"),
        "{}",
        stdout(&o)
    );
    // Every line starts with a time of one width, so the columns line up.
    let widths: std::collections::BTreeSet<usize> = stdout(&o)
        .lines()
        .map(|l| l.find("  ").unwrap_or(0))
        .collect();
    assert_eq!(widths.len(), 1, "{}", stdout(&o));

    let o = paddock(&s, &["kill", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(leftovers(&id).is_empty());

    // Errors: one clear line, non-zero exit.
    let o = paddock(&s, &["kill", &id]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("paddock: ") && err.contains("not_found"),
        "{err}"
    );
    let o = paddock_with_key(&s, "pdk_wrong", &["ls"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unauthorized"), "{}", stderr(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["ls"])
        .env_remove("PADDOCK_API_KEY")
        .env("PADDOCK_URL", &s.url)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no API key"), "{}", stderr(&o));

    // Keys.
    let o = paddock(&s, &["key", "create", "ci-bot", "--role", "user"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let key = stdout(&o).trim().to_owned();
    assert!(key.starts_with("pdk_"));
    let o = paddock_with_key(&s, &key, &["ls"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).contains(&id));
    let o = paddock_with_key(&s, &key, &["key", "ls"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("forbidden"), "{}", stderr(&o));
}

fn create_sandbox(s: &Server, args: &[&str]) -> String {
    let mut v = vec!["create"];
    v.extend_from_slice(args);
    let o = paddock(s, &v);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_has_no_limit_of_its_own_and_failed_starts_exit_like_a_shell() {
    // The REST default is 2 s here; the CLI's exec must not inherit it.
    let s = Server::start(&["--exec-timeout", "2s"]);
    let id = create_sandbox(&s, &["--timeout", "10m"]);
    let o = paddock(
        &s,
        &["exec", &id, "--", "/bin/sh", "-c", "sleep 3; echo done"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "done\n");
    // `--timeout` is still a limit.
    let o = paddock(&s, &["exec", &id, "--timeout", "1", "--", "sleep", "30"]);
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    // The help says so.
    let o = paddock(&s, &["exec", "--help"]);
    assert!(
        stdout(&o).contains("no time limit of its own"),
        "{}",
        stdout(&o)
    );

    // A command that cannot start: 127 not found, 126 not executable, with the reason.
    let o = paddock(&s, &["exec", &id, "--", "no-such-command", "x"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no-such-command\" not found"),
        "{}",
        stderr(&o)
    );
    let o = paddock(&s, &["exec", &id, "--", "/etc/hostname"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(stderr(&o).contains("not executable"), "{}", stderr(&o));
    // A bad working directory is an error of its own (exit 1, one line).
    let o = paddock(&s, &["exec", &id, "--cwd", "/nowhere", "--", "true"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("/nowhere"), "{}", stderr(&o));
    // The history shows them as failed, not running.
    let o = paddock(&s, &["logs", &id]);
    let logs = stdout(&o);
    assert!(!logs.contains("running"), "{logs}");
    assert!(
        logs.contains("failed: command \"no-such-command\" not found"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_hex_and_work_in_their_e2b_form() {
    let s = Server::start(&[]);
    // The first admin key is hex, so it has an E2B form.
    let tail = s.admin_key.strip_prefix("pdk_").expect("pdk_ key");
    assert!(
        tail.len() == 40 && tail.bytes().all(|b| b.is_ascii_hexdigit()),
        "{}",
        s.admin_key
    );
    let o = paddock(&s, &["key", "create", "sdk", "--role", "user"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let key = stdout(&o).trim().to_owned();
    let hex = key.strip_prefix("pdk_").expect("pdk_ key").to_owned();
    assert!(
        hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );
    let e2b = format!("e2b_{hex}");
    assert!(
        stderr(&o).contains(&format!("E2B_API_KEY={e2b}")),
        "key create gives the E2B form: {}",
        stderr(&o)
    );
    // Both forms are the same key: same tenant, same sandboxes.
    let id = {
        let o = paddock_with_key(&s, &e2b, &["create"]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).trim().to_owned()
    };
    let o = paddock_with_key(&s, &key, &["ls"]);
    assert!(stdout(&o).contains(&id), "{}", stdout(&o));
    // The E2B control plane takes it as X-API-KEY, as the SDKs send it.
    let (st, v) = call(
        s.http
            .get(format!("{}/v2/sandboxes", s.url))
            .header("X-API-KEY", &e2b),
    )
    .await;
    assert_eq!(st, reqwest::StatusCode::OK, "{v}");
    assert!(v.to_string().contains(&id), "{v}");
    // A malformed E2B form is refused like any bad key.
    let o = paddock_with_key(&s, &format!("e2b_{}", hex.to_uppercase()), &["ls"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unauthorized"), "{}", stderr(&o));
}

/// Accepts one HTTP request on `listener` within 30 s and returns it (head and body) as text.
fn receive_one(listener: std::net::TcpListener) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        listener.set_nonblocking(true).expect("nonblocking");
        let (mut c, _) = eventually_blocking(
            std::time::Duration::from_secs(30),
            "a webhook delivery",
            || listener.accept(),
        );
        c.set_nonblocking(false).expect("blocking");
        c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // The created event's body is small; read until the sandbox's JSON is complete.
        while let Ok(n) = c.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.ends_with(b"}") {
                break;
            }
        }
        let _ = c.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
        String::from_utf8_lossy(&buf).into_owned()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn network_ports_and_webhooks_from_the_cli() {
    let s = Server::start(&["--allow-private-webhooks"]);
    let hook = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hook_url = format!("http://{}/hook", hook.local_addr().expect("addr"));
    let got = receive_one(hook);
    let id = create_sandbox(
        &s,
        &[
            "--network",
            "allow",
            "--allow",
            "pypi.org",
            "--allow",
            "10.1.0.0/16",
            "--webhook",
            &hook_url,
        ],
    );
    let policy = |id: &str| {
        let r = s.req(reqwest::Method::GET, &format!("/v1/sandboxes/{id}/network"));
        async move { call(r).await.1["network"].clone() }
    };
    let p = policy(&id).await;
    assert_eq!(p["mode"], "allow", "{p}");
    let allow = p["allow"].to_string();
    assert!(
        allow.contains("pypi.org") && allow.contains("10.1.0.0/16"),
        "{p}"
    );
    let delivered = tokio::task::spawn_blocking(move || got.join().expect("hook thread"))
        .await
        .expect("join");
    assert!(
        delivered.starts_with("POST /hook") && delivered.contains(&id),
        "the sandbox's webhook got its events: {delivered}"
    );

    // `network ID` shows the policy; `network ID MODE` sets it.
    let o = paddock(&s, &["network", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("mode     allow\nallow    ")
            && stdout(&o).contains("pypi.org")
            && stdout(&o).contains("10.1.0.0/16")
            && stdout(&o).contains("address  10.200."),
        "{}",
        stdout(&o)
    );
    let o = paddock(&s, &["network", &id, "none"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "mode     none\n");
    assert_eq!(policy(&id).await["mode"], "none");
    let o = paddock(&s, &["network", &id, "--allow", "example.com"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let p = policy(&id).await;
    assert_eq!(
        (&p["mode"], &p["allow"]),
        (
            &serde_json::json!("allow"),
            &serde_json::json!(["example.com"])
        ),
        "{p}"
    );
    // Bad input: one clear line.
    let o = paddock(&s, &["network", &id, "allow", "--allow", "not a name!"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    let o = paddock(&s, &["create", "--network", "none", "--allow", "a.com"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--allow needs"), "{}", stderr(&o));

    // Ports.
    let port = |id: &str| {
        let r = s.req(
            reqwest::Method::GET,
            &format!("/v1/sandboxes/{id}/ports/8080"),
        );
        async move { call(r).await.1["public"].clone() }
    };
    let o = paddock(&s, &["port", &id, "8080", "--public"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("8080-{id}.")),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains("paddock_token"), "{}", stdout(&o));
    assert_eq!(port(&id).await, true);
    let o = paddock(&s, &["port", &id, "8080", "--private"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("paddock_token="), "{}", stdout(&o));
    assert_eq!(port(&id).await, false);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_that_does_not_resolve_without_network_gets_a_hint() {
    let s = Server::start(&[]);
    let id = create_sandbox(&s, &[]);
    let hint = format!("paddock network {id} all");
    // A real resolution failure in mode none.
    let o = paddock(
        &s,
        &["exec", &id, "--", "curl", "-sS", "http://example.com/"],
    );
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(stderr(&o).contains(&hint), "{}", stderr(&o));
    let o = paddock(
        &s,
        &[
            "exec",
            &id,
            "--",
            "python3",
            "-c",
            "import socket; socket.getaddrinfo('pypi.org', 443)",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(&hint), "{}", stderr(&o));
    // Other failures, and successes, get no hint.
    let o = paddock(
        &s,
        &["exec", &id, "--", "/bin/sh", "-c", "echo nope >&2; exit 3"],
    );
    assert_eq!(o.status.code(), Some(3));
    assert!(!stderr(&o).contains("hint"), "{}", stderr(&o));
    // In another mode the hint would be wrong: only the mode decides.
    let o = paddock(&s, &["network", &id, "allow", "--allow", "10.9.9.9/32"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = paddock(
        &s,
        &["exec", &id, "--", "curl", "-sS", "http://example.com/"],
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(!stderr(&o).contains("hint"), "{}", stderr(&o));
}

fn paddock_cmd(s: &Server) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_paddock"));
    c.env("PADDOCK_URL", &s.url)
        .env("PADDOCK_API_KEY", &s.admin_key)
        .env_remove("PADDOCK_DATA_DIR");
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_warns_about_unsent_stdin_and_sigterm_kills_the_remote_command() {
    let s = Server::start(&[]);
    let id = create_sandbox(&s, &[]);
    // A pipe with data, without --stdin: warned, not sent.
    let (r, w) = rustix::pipe::pipe().expect("pipe");
    rustix::io::write(&w, b"hello\n").expect("write");
    drop(w);
    let o = paddock_cmd(&s)
        .args(["exec", &id, "--", "cat"])
        .stdin(std::process::Stdio::from(r))
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert!(
        stderr(&o).contains("stdin is not sent to the command without --stdin"),
        "{}",
        stderr(&o)
    );
    // A file with data: the same; with --stdin it is sent and there is no warning.
    let tmp = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(tmp.path(), "from file\n").expect("write");
    let o = paddock_cmd(&s)
        .args(["exec", &id, "--", "cat"])
        .stdin(std::fs::File::open(tmp.path()).expect("open"))
        .output()
        .expect("run");
    assert!(stderr(&o).contains("--stdin"), "{}", stderr(&o));
    let o = paddock_cmd(&s)
        .args(["exec", &id, "--stdin", "--", "cat"])
        .stdin(std::fs::File::open(tmp.path()).expect("open"))
        .output()
        .expect("run");
    assert_eq!(
        (stdout(&o).as_str(), stderr(&o).as_str()),
        ("from file\n", "")
    );
    // Nothing to read (/dev/null, as in scripts and CI): no warning.
    let o = paddock_cmd(&s)
        .args(["exec", &id, "--", "true"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run");
    assert_eq!(stderr(&o), "");

    // SIGTERM to the CLI ends the remote command too.
    let mut child = paddock_cmd(&s)
        .args([
            "exec",
            &id,
            "--",
            "/bin/sh",
            "-c",
            "echo started; exec sleep 300",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("read");
    assert_eq!(line, "started\n");
    let running = |s: &Server, id: &str| {
        let r = s.req(
            reqwest::Method::GET,
            &format!("/v1/sandboxes/{id}/processes"),
        );
        async move {
            call(r).await.1["processes"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p.to_string().contains("echo started")))
        }
    };
    assert!(running(&s, &id).await, "the command runs");
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("kill");
    let st = child.wait().expect("wait");
    assert_eq!(st.code(), Some(143), "128 + SIGTERM");
    eventually(
        std::time::Duration::from_secs(10),
        "the remote command ends with the CLI",
        || async { done_when(!running(&s, &id).await, "still running") },
    )
    .await;
}

#[test]
fn help_lists_what_each_command_takes() {
    let help = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_paddock"))
            .args(args)
            .output()
            .expect("run");
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    // Client commands never open the data directory, so they do not offer --data-dir.
    for cmd in ["ls", "exec", "create", "network", "port", "key"] {
        assert!(!help(&[cmd, "--help"]).contains("--data-dir"), "{cmd}");
    }
    for cmd in ["serve", "run", "ps"] {
        assert!(help(&[cmd, "--help"]).contains("--data-dir"), "{cmd}");
    }
    let top = help(&["--help"]);
    for sub in ["import", "layers", "prune", "network", "port"] {
        assert!(top.contains(sub), "{sub}: {top}");
    }
    let serve = help(&["serve", "--help"]);
    assert!(
        serve.contains("--exec-timeout") && serve.contains("60s"),
        "{serve}"
    );
}
