//! End-to-end tests of the native runtime and the agent: real sandboxes, real agent binary.
//!
//! Isolation and resource-limit attacks live in `security.rs`; this file covers the library
//! API's behaviour, bad input and cleanup.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use paddock_core::Limits;
use paddock_runtime::{CreateSpec, ExecRequest, RuntimeError};

/// Directories named `id` under any `paddock` cgroup parent on this host.
fn cgroup_dirs_named(id: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut roots = vec!["/sys/fs/cgroup/paddock".to_owned()];
    for c in ["memory", "pids", "cpu", "cpuacct", "freezer"] {
        roots.push(format!("/sys/fs/cgroup/{c}/paddock"));
    }
    for r in roots {
        for inst in std::fs::read_dir(&r).into_iter().flatten().flatten() {
            let p = inst.path().join(id);
            if p.exists() {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

/// Everything of sandbox `id` that could be left on the host.
fn leftovers(id: &str, uid_base: u32, dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    // Every cgroup directory named after the sandbox, wherever it is in the hierarchies.
    for p in cgroup_dirs_named(id) {
        left.push(p);
    }
    if dir.exists() {
        left.push(dir.display().to_string());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    left.extend(mounts.lines().filter(|l| l.contains(id)).map(str::to_owned));
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok());
        // Zombies hold no resources, and a process in another runtime's sandbox may share
        // the uid range (ranges are per runtime): neither is a leftover of this sandbox.
        let zombie = status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'));
        let cg = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
        let elsewhere = cg.contains("/paddock/") && !cg.contains(id);
        if let Some(uid) = uid
            .filter(|u| (uid_base..uid_base + 65536).contains(u))
            .filter(|_| !zombie && !elsewhere)
        {
            left.push(format!(
                "process {} (uid {uid})",
                e.file_name().to_string_lossy()
            ));
        }
    }
    left
}

/// [`leftovers`] of a sandbox destroyed long ago, polled for up to 5 s: the slot's uid range
/// has since been reused by other tests' sandboxes, and one of their processes that is
/// exiting right now (out of its cgroup, not yet a zombie) is gone a moment later, while a
/// real leftover stays and is reported.
async fn settled_leftovers(id: &str, uid_base: u32, dir: &Path) -> Vec<String> {
    let mut left = leftovers(id, uid_base, dir);
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = leftovers(id, uid_base, dir);
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_reports_output_exit_code_env_cwd_and_stdin() {
    let mut env = BTreeMap::new();
    env.insert("SANDBOX_VAR".to_owned(), "from-spec".to_owned());
    let s = create(CreateSpec {
        env,
        ..CreateSpec::default()
    })
    .await;

    let r = sh(&s, "echo out; echo err >&2; exit 7").await;
    assert_eq!(out(&r), "out\n");
    assert_eq!(err(&r), "err\n");
    assert_eq!(r.exit_code, Some(7));
    assert_eq!(r.status, "exit status 7");

    let r = s
        .exec(ExecRequest {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo $SANDBOX_VAR $REQ_VAR; pwd; id -un".into(),
            ],
            env: BTreeMap::from([("REQ_VAR".to_owned(), "from-request".to_owned())]),
            cwd: Some("/tmp".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(out(&r), "from-spec from-request\n/tmp\nuser\n");

    let r = s
        .exec(ExecRequest {
            argv: vec!["/usr/bin/wc".into(), "-c".into()],
            stdin: Some(vec![b'x'; 100_000]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(out(&r).trim(), "100000");

    // Default user is `user` in its home; root is available on request.
    assert_eq!(
        out(&sh(&s, "id -u; pwd; echo $HOME").await),
        "1000\n/home/user\n/home/user\n"
    );
    assert_eq!(out(&root(&s, "id -u").await), "0\n");

    let r = s
        .exec(ExecRequest {
            argv: vec!["/bin/sh".into(), "-c".into(), "kill -9 $$".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.exit_code, None);
    assert_eq!(r.status, "signal: killed");
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_tools_work_inside_base() {
    let s = sandbox().await;
    let r = sh(&s, "python3 -c 'import sys; print(sys.version_info[0])' && node -e 'console.log(6*7)' && bash --version | head -1").await;
    assert_eq!(r.exit_code, Some(0), "{}", err(&r));
    let o = out(&r);
    assert!(o.starts_with("3\n42\nGNU bash"), "{o}");
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_capped_and_flagged() {
    let s = sandbox().await;
    let r = s
        .exec(ExecRequest {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "head -c 5000000 /dev/zero".into(),
            ],
            max_output: Some(1 << 20),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.stdout.len(), 1 << 20);
    assert!(r.stdout_truncated);
    assert!(!r.stderr_truncated);
    assert_eq!(r.exit_code, Some(0));
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_typed_error_and_leaves_nothing() {
    let rt = runtime();
    type Check = fn(&RuntimeError) -> bool;
    let cases: Vec<(CreateSpec, Check)> = vec![
        (
            CreateSpec {
                template: "nope".into(),
                ..Default::default()
            },
            |e| matches!(e, RuntimeError::UnknownTemplate { .. }),
        ),
        (
            CreateSpec {
                limits: Limits {
                    memory_bytes: 0,
                    ..Default::default()
                },
                ..Default::default()
            },
            |e| matches!(e, RuntimeError::InvalidLimits(_)),
        ),
        (
            CreateSpec {
                limits: Limits {
                    memory_bytes: u64::MAX,
                    ..Default::default()
                },
                ..Default::default()
            },
            |e| matches!(e, RuntimeError::InvalidLimits(_)),
        ),
        (
            CreateSpec {
                limits: Limits {
                    pids: 0,
                    ..Default::default()
                },
                ..Default::default()
            },
            |e| matches!(e, RuntimeError::InvalidLimits(_)),
        ),
        (
            CreateSpec {
                user: Some("mallory".into()),
                ..Default::default()
            },
            |e| matches!(e, RuntimeError::UnknownUser { .. }),
        ),
        (
            CreateSpec {
                env: BTreeMap::from([("A=B".to_owned(), "x".to_owned())]),
                ..Default::default()
            },
            |e| matches!(e, RuntimeError::InvalidArgument { .. }),
        ),
    ];
    for (spec, ok) in cases {
        let e = rt.create(spec.clone()).await.expect_err("create must fail");
        assert!(ok(&e), "{spec:?} gave {e:?}");
        assert!(
            !e.to_string().contains("/var/tmp"),
            "error leaks a host path: {e}"
        );
    }
    // Nothing on the host that the runtime does not hold (other tests create concurrently,
    // so give their in-flight creates a moment to register).
    let mut orphans = Vec::new();
    for _ in 0..50 {
        let held: Vec<String> = rt.list().iter().map(|s| s.id.to_string()).collect();
        orphans = rt
            .list_host()
            .into_iter()
            .map(|h| h.id)
            .filter(|id| !held.contains(id))
            .collect();
        if orphans.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        orphans,
        Vec::<String>::new(),
        "failed creates left these behind"
    );

    let s = sandbox().await;
    let e = s
        .exec(ExecRequest {
            argv: vec!["/bin/true".into()],
            user: Some("mallory".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("mallory"), "{e}");
    for cwd in ["../../../..", "/../../etc/../../.."] {
        let e = s
            .exec(ExecRequest {
                argv: vec!["/bin/true".into()],
                cwd: Some(cwd.into()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("escapes"), "{cwd}: {e}");
    }
    let e = s
        .exec(ExecRequest {
            argv: vec!["/no/such/binary".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not found"), "{e}");
    let e = s.exec(ExecRequest::default()).await.unwrap_err();
    assert!(matches!(e, RuntimeError::InvalidArgument { .. }), "{e:?}");
    destroy(&s).await;
    let e = runtime().destroy(s.id.as_str()).await.unwrap_err();
    assert!(matches!(e, RuntimeError::NotFound { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_leaves_nothing_behind() {
    let s = sandbox().await;
    // Leave behind what a careless user would: a daemon, files in every writable place.
    let r = root(&s, "nohup sleep 10000 >/dev/null 2>&1 & setsid sleep 10000 >/dev/null 2>&1 & echo x > /tmp/f; echo y > /root/g; echo ok").await;
    assert_eq!(out(&r), "ok\n");
    let (id, base, dir) = (s.id.to_string(), s.uid_base, s.dir.clone());
    assert!(
        !leftovers(&id, base, &dir).is_empty(),
        "the probe must see a live sandbox"
    );
    destroy(&s).await;
    assert_eq!(leftovers(&id, base, &dir), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_create_destroy_cycles_leave_nothing() {
    let rt = runtime();
    let mut seen = Vec::new();
    for _ in 0..100 {
        let s = sandbox().await;
        let r = sh(&s, "echo $((6*7))").await;
        assert_eq!(out(&r), "42\n");
        seen.push((s.id.to_string(), s.uid_base, s.dir.clone()));
        destroy(&s).await;
    }
    for (id, base, dir) in seen {
        assert_eq!(
            settled_leftovers(&id, base, &dir).await,
            Vec::<String>::new(),
            "{id}"
        );
        assert!(rt.get(&id).is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_usage() {
    let s = sandbox().await;
    sh(&s, "head -c 3000000 /dev/urandom > /home/user/blob").await;
    let st = s.stats(&runtime());
    assert!(st.memory_bytes > 0, "{st:?}");
    assert!(st.pids >= 1, "{st:?}");
    assert!(st.cpu_usage_ns > 0, "{st:?}");
    let disk = st.disk_bytes.expect("disk usage");
    assert!(disk >= 3_000_000, "{st:?}");
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_replays_output_from_a_sequence_number() {
    use paddock_envd::process::__buffa::oneof::process_event::Event;
    use paddock_envd::process::__buffa::oneof::process_event::data_event::Output;
    use paddock_envd::process::__buffa::oneof::process_selector::Selector;
    use paddock_envd::process::{ConnectRequest, ProcessConfig, ProcessSelector, StartRequest};

    let s = sandbox().await;
    let start = StartRequest {
        process: ProcessConfig {
            cmd: "/bin/bash".into(),
            args: vec![
                "-c".into(),
                "for i in 1 2 3; do echo line$i; sleep 0.2; done; sleep 2".into(),
            ],
            ..Default::default()
        }
        .into(),
        stdin: Some(false),
        tag: Some("job".into()),
        ..Default::default()
    };
    let mut stream = s
        .agent
        .process
        .start_with_options(start, s.call_options(None))
        .await
        .unwrap();
    let first = stream.message().await.unwrap().unwrap().to_owned_message();
    let Some(Event::Start(st)) = first.event.as_option().and_then(|e| e.event.clone()) else {
        panic!("first event must be start: {first:?}")
    };
    drop(stream); // The client goes away; the process keeps running.
    // Reconnect while it still runs (its last two seconds are a sleep, slack for a slow
    // machine).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let req = ConnectRequest {
        process: ProcessSelector {
            selector: Some(Selector::Tag("job".into())),
            ..Default::default()
        }
        .into(),
        ..Default::default()
    };
    let opts = s.call_options(None).with_header("paddock-replay-from", "1");
    let mut stream = s
        .agent
        .process
        .connect_with_options(req, opts)
        .await
        .unwrap();
    assert_eq!(stream.headers().get("paddock-first-seq").unwrap(), "1");
    let mut text = String::new();
    let mut ended = false;
    while let Some(m) = stream.message().await.unwrap() {
        match m
            .to_owned_message()
            .event
            .as_option()
            .and_then(|e| e.event.clone())
        {
            Some(Event::Start(x)) => assert_eq!(x.pid, st.pid),
            Some(Event::Data(d)) => {
                if let Some(Output::Stdout(b)) = d.output {
                    text.push_str(&String::from_utf8_lossy(&b));
                }
            }
            Some(Event::End(e)) => {
                assert_eq!(e.exit_code, 0);
                ended = true;
            }
            _ => {}
        }
    }
    assert!(ended);
    assert_eq!(
        text, "line2\nline3\n",
        "replay from sequence 1 skips only the first chunk"
    );
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_runs_interactive_shell_with_resize() {
    use paddock_envd::process::__buffa::oneof::process_event::Event;
    use paddock_envd::process::__buffa::oneof::process_event::data_event::Output;
    use paddock_envd::process::__buffa::oneof::process_input::Input;
    use paddock_envd::process::__buffa::oneof::process_selector::Selector;
    use paddock_envd::process::*;

    let s = sandbox().await;
    let start = StartRequest {
        process: ProcessConfig {
            cmd: "/bin/bash".into(),
            args: vec!["-i".into(), "-l".into()],
            ..Default::default()
        }
        .into(),
        pty: PTY {
            size: pty::Size {
                cols: 80,
                rows: 24,
                ..Default::default()
            }
            .into(),
            ..Default::default()
        }
        .into(),
        ..Default::default()
    };
    let mut stream = s
        .agent
        .process
        .start_with_options(start, s.call_options(None))
        .await
        .unwrap();
    let first = stream.message().await.unwrap().unwrap().to_owned_message();
    let Some(Event::Start(st)) = first.event.as_option().and_then(|e| e.event.clone()) else {
        panic!()
    };
    let sel = || ProcessSelector {
        selector: Some(Selector::Pid(st.pid)),
        ..Default::default()
    };
    let upd = UpdateRequest {
        process: sel().into(),
        pty: PTY {
            size: pty::Size {
                cols: 100,
                rows: 30,
                ..Default::default()
            }
            .into(),
            ..Default::default()
        }
        .into(),
        ..Default::default()
    };
    s.agent
        .process
        .update_with_options(upd, s.call_options(None))
        .await
        .unwrap();
    let input = SendInputRequest {
        process: sel().into(),
        input: ProcessInput {
            input: Some(Input::Pty(b"stty size; tty; exit 3\n".to_vec())),
            ..Default::default()
        }
        .into(),
        ..Default::default()
    };
    s.agent
        .process
        .send_input_with_options(input, s.call_options(None))
        .await
        .unwrap();
    let mut text = String::new();
    let mut code = None;
    while let Some(m) = stream.message().await.unwrap() {
        match m
            .to_owned_message()
            .event
            .as_option()
            .and_then(|e| e.event.clone())
        {
            Some(Event::Data(d)) => {
                if let Some(Output::Pty(b)) = d.output {
                    text.push_str(&String::from_utf8_lossy(&b));
                }
            }
            Some(Event::End(e)) => code = Some(e.exit_code),
            _ => {}
        }
    }
    assert!(text.contains("30 100"), "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert_eq!(code, Some(3));
    destroy(&s).await;
}

/// The agent's accepted connections (inodes of connected sockets bound to its path, from
/// `/proc/net/unix`: the listener was made in the host's namespace).
fn agent_connections(s: &paddock_runtime::Sandbox) -> std::collections::BTreeSet<u64> {
    let path = s.socket().display().to_string();
    std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode Path; St 03 is connected.
            (f.len() == 8 && f[5] == "03" && f[7] == path).then(|| f[6].parse().ok())?
        })
        .collect()
}

/// Execs, file reads and writes and plain agent requests share one pool of kept-alive
/// connections: sequential requests reuse a few connections instead of making one each.
/// Each plain request's connection is looked at while its response is still open, so a
/// connection per request would show as a new socket every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_requests_reuse_pooled_connections() {
    use http_body_util::BodyExt as _;
    let s = sandbox().await;
    s.write_file("/tmp/pool.txt", b"pooled".to_vec(), None)
        .await
        .unwrap();
    let before = s.agent.transport.connections_made();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20 {
        sh(&s, "true").await;
        let req = http::Request::get("http://agent/files?path=/tmp/pool.txt&username=user")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let resp = s.agent_request(req).await.unwrap();
        seen.extend(agent_connections(&s));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"pooled", "request {i}");
        s.write_file("/tmp/pool.txt", b"pooled".to_vec(), None)
            .await
            .unwrap();
    }
    // Two can be in use at once: a response's last bytes may still be in flight when the
    // next request starts.
    assert!(
        seen.len() <= 3,
        "60 requests used {} connections",
        seen.len()
    );
    assert!(s.agent.transport.connections_made() - before <= 2);
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_transfer_round_trips_as_the_user() {
    let s = sandbox().await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    s.write_file("/home/user/sub/dir/blob.bin", data.clone(), None)
        .await
        .unwrap();
    assert_eq!(
        s.read_file("/home/user/sub/dir/blob.bin", None)
            .await
            .unwrap(),
        data
    );
    assert_eq!(
        s.read_file("sub/dir/blob.bin", None).await.unwrap(),
        data,
        "relative to home"
    );
    let r = sh(&s, "stat -c '%U %a' /home/user/sub/dir/blob.bin").await;
    assert_eq!(out(&r), "user 644\n");
    // The user cannot write where it has no permission; root can.
    assert!(s.write_file("/root/x", b"no".to_vec(), None).await.is_err());
    s.write_file("/root/x", b"yes".to_vec(), Some("root"))
        .await
        .unwrap();
    assert!(
        s.read_file("/root/x", None).await.is_err(),
        "user must not read root's home"
    );
    assert!(
        s.read_file("/nope", None)
            .await
            .unwrap_err()
            .to_string()
            .contains("not")
    );
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_symlinks_never_reach_host_files() {
    let token = format!("canary-{}", rand::random::<u64>());
    let host_dir = std::env::temp_dir().join(format!("paddock-canary-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("secret"), &token).unwrap();
    let hd = host_dir.display().to_string();

    let s = sandbox().await;
    let plant = format!(
        "ln -s / /home/user/r; ln -s {hd} /home/user/d; ln -s {hd}/secret /home/user/s; ln -s /etc/shadow /home/user/shadow; echo ok"
    );
    assert_eq!(out(&root(&s, &plant).await), "ok\n");

    for path in [
        "/home/user/s".to_owned(),
        format!("/home/user/r{hd}/secret"),
        "/home/user/d/secret".to_owned(),
    ] {
        for user in [None, Some("root")] {
            match s.read_file(&path, user).await {
                Ok(body) => assert!(
                    !String::from_utf8_lossy(&body).contains(&token),
                    "{path} leaked the canary"
                ),
                Err(e) => assert!(!e.to_string().contains(&token), "{e}"),
            }
        }
    }
    // Through the link to `/`, the sandbox's own files are what is seen.
    let passwd = s.read_file("/home/user/r/etc/passwd", None).await.unwrap();
    let template_passwd = s.dir.join("../../../templates/base/rootfs/etc/passwd");
    assert_eq!(
        passwd,
        std::fs::read(&template_passwd).expect("template passwd")
    );
    assert!(String::from_utf8_lossy(&passwd).contains("user:x:1000:1000"));
    // The sandbox's shadow is not readable by `user` through a link either.
    assert!(s.read_file("/home/user/shadow", None).await.is_err());
    // Writes through links land inside the sandbox, never in the host directory.
    let _ = s
        .write_file("/home/user/d/pwn", b"x".to_vec(), Some("root"))
        .await;
    let _ = s
        .write_file(
            &format!("/home/user/r{hd}/pwn2"),
            b"x".to_vec(),
            Some("root"),
        )
        .await;
    let names: Vec<String> = std::fs::read_dir(&host_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["secret".to_owned()],
        "host canary dir was modified"
    );
    assert_eq!(
        std::fs::read_to_string(host_dir.join("secret")).unwrap(),
        token
    );
    destroy(&s).await;
    std::fs::remove_dir_all(&host_dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_signal_processes() {
    use paddock_envd::process::__buffa::oneof::process_event::Event;
    use paddock_envd::process::__buffa::oneof::process_selector::Selector;
    use paddock_envd::process::*;

    let s = sandbox().await;
    let start = |tag: &str| StartRequest {
        process: ProcessConfig {
            cmd: "/bin/bash".into(),
            // The shell's child sleeps in the same process group.
            args: vec!["-c".into(), "sleep 1000 & wait".into()],
            ..Default::default()
        }
        .into(),
        stdin: Some(false),
        tag: Some(tag.into()),
        ..Default::default()
    };
    let mut pids = Vec::new();
    for tag in ["a", "b"] {
        let mut st = s
            .agent
            .process
            .start_with_options(start(tag), s.call_options(None))
            .await
            .unwrap();
        let m = st.message().await.unwrap().unwrap().to_owned_message();
        let Some(Event::Start(e)) = m.event.as_option().and_then(|e| e.event.clone()) else {
            panic!()
        };
        pids.push(e.pid);
    }
    let list = s
        .agent
        .process
        .list_with_options(ListRequest::default(), s.call_options(None))
        .await
        .unwrap();
    let list = list.into_owned();
    let tags: Vec<_> = list
        .processes
        .iter()
        .map(|p| (p.pid, p.tag.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        tags,
        vec![(pids[0], "a".to_owned()), (pids[1], "b".to_owned())]
    );

    let sel = |pid| ProcessSelector {
        selector: Some(Selector::Pid(pid)),
        ..Default::default()
    };
    let sig = SendSignalRequest {
        process: sel(pids[0]).into(),
        signal: Signal::SIGNAL_SIGTERM.into(),
        ..Default::default()
    };
    s.agent
        .process
        .send_signal_with_options(sig, s.call_options(None))
        .await
        .unwrap();
    let mut c = s
        .agent
        .process
        .connect_with_options(
            ConnectRequest {
                process: sel(pids[0]).into(),
                ..Default::default()
            },
            s.call_options(None),
        )
        .await
        .unwrap();
    let mut status = None;
    while let Some(m) = c.message().await.unwrap() {
        if let Some(Event::End(e)) = m
            .to_owned_message()
            .event
            .as_option()
            .and_then(|e| e.event.clone())
        {
            status = Some(e.status);
        }
    }
    assert_eq!(status.as_deref(), Some("signal: terminated"));
    // The signal reached the whole group: only b's bash and sleep are left besides the agent.
    let r = sh(&s, "ps -eo comm= | grep -c sleep").await;
    assert_eq!(out(&r), "1\n");

    let bogus = SendSignalRequest {
        process: sel(99_999).into(),
        signal: Signal::SIGNAL_SIGKILL.into(),
        ..Default::default()
    };
    let e = s
        .agent
        .process
        .send_signal_with_options(bogus, s.call_options(None))
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("NotFound"), "{e:?}");
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_written_to_the_cgroups() {
    let limits = Limits {
        memory_bytes: 300 << 20,
        cpu_millis: 500,
        pids: 77,
        ..Limits::default()
    };
    let s = create(CreateSpec {
        limits,
        ..CreateSpec::default()
    })
    .await;
    let read = |ctl: &str, file: &str| {
        let dir = s
            .cgroup_dirs()
            .into_iter()
            .find(|d| d.to_string_lossy().contains(ctl))
            .unwrap_or_else(|| s.cgroup_dirs()[0].clone());
        std::fs::read_to_string(dir.join(file))
            .unwrap()
            .trim()
            .to_owned()
    };
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        assert_eq!(read("", "memory.max"), (300u64 << 20).to_string());
        assert_eq!(read("", "cpu.max"), "50000 100000");
        assert_eq!(read("", "pids.max"), "77");
    } else {
        assert_eq!(
            read("/memory/", "memory.limit_in_bytes"),
            (300u64 << 20).to_string()
        );
        assert_eq!(read("/cpu/", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("/cpu/", "cpu.cfs_period_us"), "100000");
        assert_eq!(read("/pids/", "pids.max"), "77");
    }
    // The sandbox sees its own cgroup as the root of its cgroup namespace.
    assert_eq!(
        out(&sh(&s, "cat /proc/self/cgroup | grep -c paddock || true").await),
        "0\n"
    );
    destroy(&s).await;
}

/// `connect_port` reaches listeners on the sandbox's own loopback, IPv4 or IPv6-only, in
/// network mode `none`, and says clearly when nothing listens.
#[tokio::test(flavor = "multi_thread")]
async fn connect_port_reaches_v4_and_v6_loopback_listeners() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = sandbox().await;
    let r = sh(
        &s,
        r#"for spec in "127.0.0.1 7001" "::1 7002"; do set -- $spec
python3 -c '
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
l = socket.socket(fam); l.bind((sys.argv[1], int(sys.argv[2]))); l.listen(1)
c, _ = l.accept(); c.sendall(b"hello from " + sys.argv[2].encode()); c.close()
' $1 $2 >/dev/null 2>&1 &
done; sleep 0.5; echo started"#,
    )
    .await;
    assert_eq!(out(&r), "started\n", "{r:?}");
    let ports: Vec<(u16, String)> = s
        .listening_ports()
        .unwrap()
        .iter()
        .map(|p| (p.port, p.address.to_string()))
        .collect();
    assert!(ports.contains(&(7001, "127.0.0.1".into())), "{ports:?}");
    assert!(ports.contains(&(7002, "::1".into())), "{ports:?}");
    for port in [7001u16, 7002] {
        let mut c = s
            .connect_port(port, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("port {port}: {e}"));
        let mut got = String::new();
        c.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, format!("hello from {port}"));
        let _ = c.shutdown().await;
    }
    match s.connect_port(7003, Duration::from_secs(5)).await {
        Err(RuntimeError::PortClosed {
            port: 7003,
            reason: why,
        }) => {
            assert!(why.contains("refused"), "{why}")
        }
        other => panic!("expected PortClosed, got {other:?}"),
    }
    destroy(&s).await;
}

/// `statfs` of the sandbox's root reports its disk limit and what it uses (`df`,
/// `os.statvfs`), whatever the layer filesystem's own size; other filesystems, missing
/// paths, paths the caller may not reach and symlinks to host paths get the kernel's own
/// answer, as if the sandbox's filesystem were all there is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statfs_reports_the_disk_limit() {
    let limits = Limits {
        disk_bytes: 1 << 30,
        ..Limits::default()
    };
    let s = create(CreateSpec {
        limits,
        ..CreateSpec::default()
    })
    .await;
    // Blocks of 4096 bytes: 1 GiB is 262144 of them, at `/`, in the user's home (also on
    // the root layer), and by a relative path.
    let r = sh(
        &s,
        "stat -f -c '%b %S' /; stat -f -c %b /home/user; cd /home/user && stat -f -c %b .",
    )
    .await;
    assert_eq!(out(&r), "262144 4096\n262144\n262144\n", "{}", err(&r));
    let r = sh(&s, "df -B1M / | tail -1").await;
    assert!(
        out(&r).split_whitespace().nth(1) == Some("1024"),
        "{}",
        out(&r)
    );
    // Other filesystems keep their own size: /tmp is its own tmpfs.
    let r = sh(&s, "stat -f -c %b /tmp").await;
    assert_ne!(out(&r), "262144\n");
    // What the sandbox writes shows as used (the figure is at most a second old).
    sh(&s, "head -c 67108864 /dev/zero > /home/user/blob && sync").await;
    eventually(Duration::from_secs(20), "64 MiB written show as used", || async {
        let r = sh(
            &s,
            "python3 -c 'import os; v=os.statvfs(\"/\"); print((v.f_blocks-v.f_bfree)*v.f_frsize >> 20)'",
        )
        .await;
        let used: u64 = out(&r).trim().parse().unwrap_or(0);
        done_when(used >= 64, format!("used {used} MiB: {}", err(&r)))
    })
    .await;
    // The kernel's errors: missing, not reachable by the user, a symlink to a path that
    // exists only on the host (resolved inside the sandbox, so missing there too).
    let host_only = format!("/var/tmp/paddock-statfs-host-only-{}", std::process::id());
    std::fs::create_dir_all(&host_only).unwrap();
    let r = sh(
        &s,
        &format!(
            "stat -f /nonexistent; sudo mkdir -m 700 /root/private; stat -f /root/private; \
             ln -s {host_only} /home/user/host; stat -f /home/user/host; true"
        ),
    )
    .await;
    let e = err(&r);
    assert!(e.contains("'/nonexistent': No such file"), "{e}");
    assert!(e.contains("'/root/private': Permission denied"), "{e}");
    assert!(e.contains("'/home/user/host': No such file"), "{e}");
    // Root inside reaches it, and gets the limit.
    let r = root(&s, "stat -f -c %b /root/private").await;
    assert_eq!(out(&r), "262144\n", "{}", err(&r));
    std::fs::remove_dir(&host_only).unwrap();
    destroy(&s).await;
}

/// The first `PT_LOAD` segment's address of the ELF executable `bin`, page-aligned, and its
/// type (`ET_EXEC` 2 for a fixed-address executable, `ET_DYN` 3 for a PIE).
fn elf_load_base(bin: &Path) -> (u16, u64) {
    let b = std::fs::read(bin).unwrap();
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    assert_eq!(&b[..5], b"\x7fELF\x02", "a 64-bit ELF");
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    let load = (0..usize::from(phnum))
        .map(|i| phoff + i * usize::from(phentsize))
        .find(|&ph| u32::from_le_bytes(b[ph..ph + 4].try_into().unwrap()) == 1)
        .map(|ph| u64_at(ph + 0x10) & !0xfff)
        .expect("a PT_LOAD segment");
    (u16_at(0x10), load)
}

/// The agent is linked at a fixed address (`crates/paddock/build.rs`), so its pointer
/// tables are file pages shared by every sandbox rather than a relocated copy each: PID 1
/// maps the executable at the address the file names.
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_runs_at_its_link_address() {
    let (kind, base) = elf_load_base(Path::new(env!("CARGO_BIN_EXE_paddock-agent")));
    assert_eq!(
        kind, 2,
        "paddock-agent is not a fixed-address (ET_EXEC) executable"
    );
    let s = sandbox().await;
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", s.pid)).unwrap();
    let first = maps
        .lines()
        .find(|l| l.ends_with("/paddock-agent"))
        .unwrap_or_else(|| panic!("no paddock-agent mapping in PID 1's maps:\n{maps}"));
    let start = u64::from_str_radix(first.split('-').next().unwrap(), 16).unwrap();
    assert_eq!(start, base, "PID 1 maps the agent elsewhere: {first}");
    destroy(&s).await;
}
