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
