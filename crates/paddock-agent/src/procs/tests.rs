//! Unit tests of the process table that need no sandbox.

use super::*;

/// Panics while holding `m`, as a bug in a request handler would.
#[allow(clippy::disallowed_methods)] // Poisoning needs the raw lock.
fn poison<T>(m: &Mutex<T>) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _g = m.lock();
        panic!("poisoning the lock on purpose");
    }));
    assert!(r.is_err() && m.is_poisoned());
}

/// With the table's, the log's and the pidfd's locks poisoned, lookups, listing,
/// signals and the reaper's bookkeeping all still work; after the reap the pidfd is
/// closed and a signal answers "has exited" instead of reaching a reused number.
#[test]
fn a_poisoned_lock_does_not_break_the_process_table() {
    let procs = Procs::new(BTreeMap::new());
    let mut child = Command::new("sleep")
        .arg("1000")
        .spawn()
        .expect("spawn sleep");
    let pid = child.id();
    let (pidfd, start) = hold(pid).expect("pidfd");
    let p = Arc::new(Proc {
        pid,
        start,
        pidfd: Mutex::new(Some(pidfd)),
        config: ProcessConfig::default(),
        tag: Some("poisoned".into()),
        stdin: tokio::sync::Mutex::new(None),
        pty: None,
        log: Mutex::new(OutLog::default()),
        changed: Notify::new(),
        exited: Notify::new(),
    });
    lock(&procs.table).live.insert(pid, p.clone());
    poison(&procs.table);
    poison(&p.log);
    poison(&p.pidfd);

    let sel = ProcessSelector {
        selector: Some(Selector::Tag("poisoned".into())),
        ..Default::default()
    };
    assert_eq!(procs.find_live(&sel).expect("find_live").pid, pid);
    push(&p, Stream::Stdout, b"still logging");
    assert_eq!(lock(&p.log).next_seq, 1);
    procs
        .signal(&p, libc::SIGKILL, Scope::Process)
        .expect("signal through the pidfd");
    let status = child.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let exit = Exit {
        code: -1,
        exited: false,
        status: "signal: killed".into(),
    };
    Procs::exited(&mut lock(&procs.table), pid, exit);
    assert!(lock(&p.pidfd).is_none(), "the pidfd outlived the reap");
    let e = procs
        .find_live(&sel)
        .err()
        .expect("exited process is not live");
    assert!(e.to_string().contains("has exited"), "{e}");
    assert_eq!(procs.find(&sel).expect("kept for late readers").pid, pid);
    let e = procs
        .signal(&p, libc::SIGKILL, Scope::Group)
        .expect_err("no signal after the reap");
    assert!(e.to_string().contains("has exited"), "{e}");
}

/// `sys::vfork`: a command started without copying the agent runs as the user given, in
/// the directory given, with exactly the environment given and the three streams; one that
/// cannot start reports it (the caller then falls back to std's fork).
#[test]
fn vfork_starts_a_command_as_the_user_with_its_env_cwd_and_streams() {
    use std::io::Read as _;
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: switching to another user needs root");
        return;
    }
    let env = [
        ("GREETING", "hello"),
        ("PATH", "/nonexistent:/usr/bin:/bin"),
    ];
    let args: Vec<String> = [
        "-c",
        "echo \"$GREETING\"; pwd; id -u; id -G; env | wc -l; cat",
    ]
    .map(String::from)
    .to_vec();
    let plan = crate::sys::vfork::Plan::new(
        "sh",
        &args,
        env,
        "/nonexistent:/usr/bin:/bin",
        65534,
        65534,
        &[65534],
        c"/tmp",
    )
    .expect("plan");
    let pipes = crate::sys::vfork::Pipes::new(true).expect("pipes");
    let pid = crate::sys::vfork::spawn(&plan, pipes.child_ends())
        .expect("clone")
        .expect("started");
    let crate::sys::vfork::Pipes {
        mut out_r,
        err_r,
        in_w,
        child,
    } = pipes;
    drop(child);
    drop(err_r);
    let mut stdin = std::fs::File::from(in_w.expect("stdin pipe"));
    stdin.write_all(b"from stdin").expect("stdin");
    drop(stdin);
    let mut out = String::new();
    std::fs::File::from(std::mem::replace(
        &mut out_r,
        OwnedFd::from(std::fs::File::open("/dev/null").expect("null")),
    ))
    .read_to_string(&mut out)
    .expect("stdout");
    let status = rustix::process::waitpid(
        Some(rustix::process::Pid::from_raw(pid as i32).expect("pid")),
        rustix::process::WaitOptions::empty(),
    )
    .expect("wait")
    .expect("status");
    assert_eq!(status.1.exit_status(), Some(0), "{out}");
    // `env` lists the two variables given and the one the shell adds (PWD).
    assert_eq!(out, "hello\n/tmp\n65534\n65534\n3\nfrom stdin", "{out}");

    let missing = crate::sys::vfork::Plan::new(
        "no-such-command-here",
        &[],
        env,
        "/nonexistent",
        65534,
        65534,
        &[],
        c"/tmp",
    )
    .expect("plan");
    let pipes = crate::sys::vfork::Pipes::new(false).expect("pipes");
    assert_eq!(
        crate::sys::vfork::spawn(&missing, pipes.child_ends()).expect("clone"),
        None,
        "a command that cannot start is reported, not run"
    );
}
