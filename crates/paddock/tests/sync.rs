//! End-to-end tests of `paddock sync` against a real `paddock serve` and real sandboxes.

mod server;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use server::*;

fn paddock(s: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(args)
        .env("PADDOCK_URL", &s.url)
        .env("PADDOCK_API_KEY", &s.admin_key)
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

fn create(s: &Server) -> String {
    let o = paddock(s, &["create", "--timeout", "10m"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim().to_owned()
}

/// Runs a shell line in the sandbox; returns its stdout (asserting success).
fn sh(s: &Server, id: &str, line: &str) -> String {
    let o = paddock(s, &["exec", id, "--", "/bin/sh", "-c", line]);
    assert!(o.status.success(), "{line}: {}", stderr(&o));
    stdout(&o)
}

/// `paddock sync` with the given arguments; asserts success and returns stdout.
fn sync_ok(s: &Server, args: &[&str]) -> String {
    let mut v = vec!["sync"];
    v.extend_from_slice(args);
    let o = paddock(s, &v);
    assert!(o.status.success(), "sync {args:?}: {}", stderr(&o));
    stdout(&o)
}

fn write(root: &Path, rel: &str, data: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, data).expect("write");
}

/// Sets a file's mtime `secs` seconds into the past (so a rewrite in the same second is
/// still seen as a change by mtime).
fn age(path: &Path, secs: u64) {
    let f = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(secs))
        .expect("set mtime");
}

#[test]
fn sync_up_sends_only_changes_honours_ignores_and_deletes() {
    let s = Server::start(&[]);
    let id = create(&s);
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("proj");
    write(&src, ".gitignore", "build/\n*.log\n");
    write(&src, "a.txt", "alpha");
    write(&src, "sub/b.txt", "bravo");
    write(&src, "build/out.bin", "compiled");
    write(&src, "debug.log", "noise");
    write(&src, "src/.paddockignore", "scratch.txt\n");
    write(&src, "src/main.py", "print(1)\n");
    write(&src, "src/scratch.txt", "private notes");
    std::fs::create_dir_all(src.join(".git/objects")).expect("mkdir");
    std::fs::write(src.join(".git/HEAD"), "ref: refs/heads/main\n").expect("write");
    let local = src.to_str().expect("path");
    let dest = format!("{id}:/home/user/proj");

    // First sync sends everything not ignored.
    let out = sync_ok(&s, &[local, &dest]);
    assert!(out.contains("sent 5 files"), "{out}");
    let listed = sh(&s, &id, "cd proj && find . -type f | sort");
    assert_eq!(
        listed, "./.gitignore\n./a.txt\n./src/.paddockignore\n./src/main.py\n./sub/b.txt\n",
        "ignored files and .git are not sent"
    );
    assert_eq!(sh(&s, &id, "cat proj/sub/b.txt"), "bravo");

    // Nothing changed.
    let out = sync_ok(&s, &[local, &dest]);
    assert!(out.starts_with("up to date"), "{out}");

    // One file modified (same size, other content, other mtime): only it is sent.
    std::fs::write(src.join("a.txt"), "ALPHA").expect("write");
    age(&src.join("a.txt"), 5);
    let out = sync_ok(&s, &[local, &dest]);
    assert!(out.starts_with("sent 1 file (5 B)"), "{out}");
    assert_eq!(sh(&s, &id, "cat proj/a.txt"), "ALPHA");
    // Touched only (same content, new mtime): the hash says unchanged.
    age(&src.join("sub/b.txt"), 100);
    let out = sync_ok(&s, &[local, &dest]);
    assert!(out.starts_with("up to date"), "{out}");

    // --dry-run changes nothing.
    write(&src, "c.txt", "charlie");
    sh(
        &s,
        &id,
        "echo extra > proj/extra.txt; mkdir -p proj/build; echo keep > proj/build/x; echo k > proj/keep.log",
    );
    let out = sync_ok(&s, &["--dry-run", "--delete", local, &dest]);
    assert!(out.contains("send c.txt\n"), "{out}");
    assert!(out.contains("delete extra.txt\n"), "{out}");
    assert!(out.contains("would send 1 file"), "{out}");
    assert_eq!(
        sh(&s, &id, "ls proj"),
        "a.txt\nbuild\nextra.txt\nkeep.log\nsrc\nsub\n",
        "a dry run changes nothing"
    );

    // --delete removes what the source lacks, but not what the source ignores.
    let out = sync_ok(&s, &["--delete", local, &dest]);
    assert!(
        out.contains("sent 1 file") && out.contains("deleted 1"),
        "{out}"
    );
    assert_eq!(
        sh(&s, &id, "ls proj; cat proj/build/x"),
        "a.txt\nbuild\nc.txt\nkeep.log\nsrc\nsub\nkeep\n"
    );
    // Without --delete nothing is removed.
    sh(&s, &id, "echo again > proj/extra.txt");
    let out = sync_ok(&s, &[local, &dest]);
    assert!(out.starts_with("up to date"), "{out}");
    assert_eq!(sh(&s, &id, "cat proj/extra.txt"), "again\n");
}

#[test]
fn sync_refuses_credentials_unless_excluded_or_allowed() {
    let s = Server::start(&[]);
    let id = create(&s);
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("proj");
    write(&src, "app.py", "print('hi')\n");
    // Assembled here so this file holds no real-looking token.
    write(
        &src,
        "settings.py",
        &format!("AWS_KEY = '{}{}'\n", "AKIA", "Z7Q3K5M2P9R4T6W8"),
    );
    write(
        &src,
        "deploy/key.pem",
        &format!("{} KEY-----\nMIIEow\n", "-----BEGIN RSA PRIVATE"),
    );
    write(&src, ".env", "DATABASE_PASSWORD=hunter2hunter2\nDEBUG=1\n");
    let local = src.to_str().expect("path");
    let dest = format!("{id}:proj");

    let o = paddock(&s, &["sync", local, &dest]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    for name in [
        "settings.py: contains an AWS access key id",
        "deploy/key.pem: contains a private key",
        ".env: sets DATABASE_PASSWORD",
    ] {
        assert!(err.contains(name), "{name} missing in: {err}");
    }
    assert!(!err.contains("app.py"), "{err}");
    assert_eq!(
        sh(&s, &id, "ls proj 2>/dev/null | wc -l"),
        "0\n",
        "nothing is sent"
    );

    // Excluded, allowed: sent; the excluded file is not.
    let o = paddock(
        &s,
        &[
            "sync",
            "--exclude",
            ".env",
            "--exclude",
            "settings.py",
            "--allow-secret",
            "deploy/key.pem",
            local,
            &dest,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("sent 2 files"), "{}", stdout(&o));
    assert_eq!(
        sh(&s, &id, "cd proj && find . -type f | sort"),
        "./app.py\n./deploy/key.pem\n"
    );
    // An allowed directory covers what is in it.
    let o = paddock(&s, &["sync", "--allow-secret", ".", local, &dest]);
    assert!(!o.status.success(), "'.' names no file: {}", stdout(&o));
    let o = paddock(
        &s,
        &[
            "sync",
            "--allow-secret",
            ".env",
            "--allow-secret",
            &src.join("settings.py").display().to_string(),
            local,
            &dest,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("sent 2 files"), "{}", stdout(&o));
}

#[test]
fn sync_down_brings_changes_back_and_watch_sends_changes() {
    let s = Server::start(&[]);
    let id = create(&s);
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("proj");
    write(&src, ".gitignore", "node_modules/\n");
    write(&src, "a.txt", "alpha");
    write(&src, "lib/b.txt", "bravo");
    let local = src.to_str().expect("path");
    let remote = format!("{id}:/home/user/proj");
    sync_ok(&s, &[local, &remote]);

    // Changed in the sandbox: one file modified, one new, one module dir (ignored).
    sh(
        &s,
        &id,
        "cd proj && echo changed > lib/b.txt && mkdir -p out node_modules/m && echo new > out/c.txt && echo dep > node_modules/m/i.js",
    );
    let back = tmp.path().join("back");
    // Into a new directory: everything not ignored.
    let out = sync_ok(&s, &[&remote, back.to_str().expect("path")]);
    assert!(out.starts_with("received 4 files"), "{out}");
    assert!(!back.join("node_modules").exists());
    // Into the original: only the two changes.
    let out = sync_ok(&s, &[&remote, local]);
    assert!(out.starts_with("received 2 files"), "{out}");
    assert_eq!(
        std::fs::read_to_string(src.join("lib/b.txt")).expect("b"),
        "changed\n"
    );
    assert_eq!(
        std::fs::read_to_string(src.join("out/c.txt")).expect("c"),
        "new\n"
    );
    assert!(!src.join("node_modules").exists());
    let out = sync_ok(&s, &[&remote, local]);
    assert!(out.starts_with("up to date"), "{out}");
    assert!(
        sh(&s, &id, "ls -a proj")
            .lines()
            .all(|l| !l.starts_with(".paddock-sync")),
        "the staging directory is removed"
    );
    // --delete on the way back removes local files the sandbox no longer has.
    sh(&s, &id, "rm proj/a.txt");
    let out = sync_ok(&s, &["--delete", &remote, local]);
    assert!(out.contains("deleted 1"), "{out}");
    assert!(!src.join("a.txt").exists());

    // --watch: a local change reaches the sandbox without another command.
    let mut child = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["sync", "--watch", local, &remote])
        .env("PADDOCK_URL", &s.url)
        .env("PADDOCK_API_KEY", &s.admin_key)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    err.read_line(&mut line).expect("read");
    assert!(line.contains("watching"), "{line}");
    write(&src, "lib/watched.txt", "seen");
    eventually_blocking(
        Duration::from_secs(30),
        "the watched change arrives",
        || {
            let o = paddock(&s, &["exec", &id, "--", "cat", "proj/lib/watched.txt"]);
            done_when(o.status.success() && stdout(&o) == "seen", stdout(&o))
        },
    );
    child.kill().expect("kill");
    let _ = child.wait();
}

#[test]
fn sync_replaces_changed_types_and_keeps_odd_names() {
    let s = Server::start(&[]);
    let id = create(&s);
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("proj");
    write(&src, "name with spaces & ünïcode.txt", "odd");
    write(&src, "thing", "a file first");
    write(&src, "dir/inner.txt", "inner");
    std::os::unix::fs::symlink("dir/inner.txt", src.join("link")).expect("symlink");
    let local = src.to_str().expect("path");
    let dest = format!("{id}:proj");
    let out = sync_ok(&s, &[local, &dest]);
    assert!(out.starts_with("sent 4 files"), "{out}");
    assert_eq!(
        sh(&s, &id, "readlink proj/link; cat proj/link"),
        "dir/inner.txt\ninner"
    );

    // A file becomes a directory, a directory a file, a symlink moves.
    std::fs::remove_file(src.join("thing")).expect("rm");
    write(&src, "thing/now-a-dir.txt", "d");
    std::fs::remove_dir_all(src.join("dir")).expect("rm");
    write(&src, "dir", "now a file");
    std::fs::remove_file(src.join("link")).expect("rm");
    std::os::unix::fs::symlink("thing", src.join("link")).expect("symlink");
    let out = sync_ok(&s, &[local, &dest]);
    assert!(out.starts_with("sent 3 files"), "{out}");
    assert_eq!(
        sh(
            &s,
            &id,
            "cd proj && cat thing/now-a-dir.txt dir && readlink link && ls | wc -l"
        ),
        "dnow a filething\n4\n"
    );
    let out = sync_ok(&s, &[local, &dest]);
    assert!(out.starts_with("up to date"), "{out}");

    // And back: the sandbox's types win locally.
    sh(&s, &id, "cd proj && rm -r thing && echo f > thing");
    let out = sync_ok(&s, &[&format!("{id}:proj"), local]);
    assert!(out.starts_with("received 1 file"), "{out}");
    assert_eq!(
        std::fs::read_to_string(src.join("thing")).expect("thing"),
        "f\n"
    );
    assert_eq!(
        std::fs::read_to_string(src.join("name with spaces & ünïcode.txt")).expect("odd"),
        "odd"
    );
}
