//! `paddock-agent code-server` on the host, with stand-in kernels (no Jupyter needed): on
//! SIGTERM it kills the kernels it started and exits, so a restarted start command or a
//! stopped server leaves no kernel behind.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Polls `f` every 50 ms until it is true; panics naming `what` after `limit`.
fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let state = s.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// `GET path` on `127.0.0.1:port`; the whole response, or None if none came within `limit`.
fn get(port: u16, path: &str, limit: Duration) -> Option<String> {
    use std::io::{Read, Write};
    let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(limit)).ok()?;
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The code server's stand-in Python kernel never answers: `/ready` waits for it, SIGTERM
/// kills it with the server.
#[test]
fn sigterm_kills_the_kernels() {
    let dir = tempfile::tempdir().unwrap();
    // The Python kernel the server starts at once: a `python3` that records its pid and
    // sleeps (it never answers, so the server is still waiting for it).
    let pidfile = dir.path().join("kernel.pid");
    let fake = dir.path().join("python3");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 300\n",
            pidfile.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_paddock-agent"))
        .args(["code-server", "--port", &port.to_string(), "--cwd"])
        .arg(dir.path())
        .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
        .env("TMPDIR", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting paddock-agent code-server");
    wait_for(Duration::from_secs(20), "the server listens", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    wait_for(Duration::from_secs(20), "the kernel starts", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.trim().parse::<u32>().is_ok())
    });
    let kernel: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(running(kernel));
    // `/ready` (the template's ready check) waits for the default kernel, `/health` does not.
    assert!(get(port, "/health", Duration::from_secs(20)).is_some_and(|r| r.ends_with("OK")));
    assert_eq!(get(port, "/ready", Duration::from_secs(1)), None);

    let pid = rustix::process::Pid::from_raw(server.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let mut status = None;
    wait_for(Duration::from_secs(20), "the server exits", || {
        status = server.try_wait().unwrap();
        status.is_some()
    });
    let mut err = String::new();
    if let Some(e) = server.stderr.take() {
        for line in BufReader::new(e).lines().map_while(Result::ok) {
            err.push_str(&line);
            err.push('\n');
        }
    }
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{err}");
    // Killed, not left running: at most a zombie until its new parent reaps it.
    let gone = Instant::now() + Duration::from_secs(10);
    while running(kernel) && Instant::now() < gone {
        std::thread::sleep(Duration::from_millis(50));
    }
    if running(kernel) {
        // Do not leave it behind for the next run either.
        let _ = Command::new("kill")
            .args(["-9", &kernel.to_string()])
            .status();
        panic!("the kernel (pid {kernel}) outlived the server");
    }
}
