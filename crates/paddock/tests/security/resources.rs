//! Row A of the battery: resource limits hold against bombs, fills, runaway processes and orphans.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_fork_bomb_stops_at_pids_limit() {
    if not_on_gvisor(
        "the pids cgroup holds the Sentry's host tasks (the limit is scaled to pids x 8 + 256, docs/isolation.md), so pids.max is not the sandbox's own number",
    ) {
        return;
    }
    let s = create(limits(|l| l.pids = 64)).await;
    let peer = sandbox().await;
    let _g = Cleanup(vec![s.clone(), peer.clone()]);
    let pdir = pids_dir(&s);
    assert_eq!(read_trim(&pdir.join("pids.max")), "64");
    let hits_before = keyed(&pdir.join("pids.events"), "max");

    let bomb = {
        let s = s.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            // The parent stays (without forking) so the exec lasts until its timeout.
            let r = run(
                &s,
                None,
                ":(){ :|:& };:; exec sleep 1000",
                Duration::from_secs(5),
            )
            .await;
            (r, t0.elapsed())
        })
    };

    let t0 = Instant::now();
    let mut peak = 0;
    let mut peer_latency = None;
    while !bomb.is_finished() && t0.elapsed() < Duration::from_secs(8) {
        peak = peak.max(read_u64(&pdir.join("pids.current")));
        if peer_latency.is_none() && t0.elapsed() > Duration::from_millis(1500) {
            let p0 = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(5), sh(&peer, "echo ok"))
                .await
                .expect("peer sandbox's exec did not complete within 5 s during the bomb");
            assert_eq!(out(&r), "ok\n", "peer exec: {r:?}");
            peer_latency = Some(p0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (r, elapsed) = bomb.await.expect("bomb task");
    let hits = keyed(&pdir.join("pids.events"), "max") - hits_before;
    let peer_latency = peer_latency.expect("peer exec ran during the bomb");
    eprintln!(
        "a1: peak pids.current {peak}, pids.events max +{hits}, peer latency {peer_latency:?}, bomb exec {elapsed:?}"
    );

    assert!(peak <= 64, "pids.current reached {peak} > pids.max 64");
    assert!(
        hits > 0,
        "the bomb never hit pids.max (peak {peak}): the test did not exercise the limit"
    );
    assert!(
        peer_latency < Duration::from_secs(5),
        "peer exec took {peer_latency:?}"
    );
    assert!(r.timed_out, "bomb exec did not report a timeout: {r:?}");
    assert!(
        elapsed < Duration::from_secs(7),
        "bomb exec returned after {elapsed:?}"
    );

    // After the timeout kill nothing of the bomb may survive: only the agent is left.
    let left = wait_only_agent(&s, Instant::now() + Duration::from_secs(5)).await;
    assert_eq!(
        left,
        BTreeSet::from([s.pid]),
        "fork bomb survived its timeout: {} processes left in the cgroup, e.g. {:?}",
        left.len(),
        describe(&left.iter().take(5).copied().collect())
    );
    let r = sh(&s, "echo ok").await;
    assert_eq!(out(&r), "ok\n", "sandbox unusable after the bomb: {r:?}");

    destroy(&peer).await;
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2_memory_bomb_is_oom_killed_inside_the_sandbox() {
    if not_on_gvisor(
        "the sandbox's memory is the Sentry's: an overrun OOM-kills the whole sandbox, not one process (tests/gvisor.rs checks the limit holds)",
    ) {
        return;
    }
    let s = create(limits(|l| {
        l.memory_bytes = 64 * MIB;
        l.tmp_bytes = 16 * MIB;
    }))
    .await;
    let _g = Cleanup(vec![s.clone()]);
    let agent_start = std::fs::read_to_string(format!("/proc/{}/stat", s.pid)).unwrap();

    let code = "b = bytearray(200 << 20)\n\
                for i in range(0, len(b), 4096):\n    b[i] = 1\n\
                print('survived', len(b))\n";
    let r = s
        .exec(ExecRequest {
            argv: vec!["/usr/bin/python3".into(), "-c".into(), code.into()],
            timeout: Some(Duration::from_secs(40)),
            ..Default::default()
        })
        .await
        .expect("exec");
    assert!(!r.timed_out, "memory bomb ran into the timeout: {r:?}");
    assert_ne!(r.exit_code, Some(0), "memory bomb succeeded: {r:?}");
    assert!(!out(&r).contains("survived"), "{}", out(&r));
    assert!(r.oom_killed, "exec does not report the OOM kill: {r:?}");
    assert!(r.status.contains("killed"), "status {:?}", r.status);
    assert!(s.stats(&runtime()).oom_kills >= 1);

    // The agent survived (same process, same start time) and still serves requests.
    let now = std::fs::read_to_string(format!("/proc/{}/stat", s.pid)).unwrap_or_default();
    assert_eq!(
        now.split(' ').nth(21),
        agent_start.split(' ').nth(21),
        "agent restarted or died"
    );
    let r = sh(&s, "echo ok").await;
    assert_eq!(out(&r), "ok\n", "agent unusable after the OOM kill: {r:?}");
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a3_workspace_fill_stops_at_disk_limit() {
    let s = create(limits(|l| l.disk_bytes = 64 * MIB)).await;
    let _g = Cleanup(vec![s.clone()]);
    let r = sh(
        &s,
        "dd if=/dev/zero of=/home/user/big bs=1M count=200; echo dd=$?; sync; \
         fallocate -l 1T /home/user/huge; echo fallocate=$?; sync",
    )
    .await;
    let text = format!("{}{}", out(&r), err(&r));
    let k = kv(&out(&r));
    assert_ne!(k.get("dd").map(String::as_str), Some("0"), "dd: {text}");
    assert_ne!(
        k.get("fallocate").map(String::as_str),
        Some("0"),
        "fallocate: {text}"
    );
    assert!(
        text.contains("Disk quota exceeded") || text.contains("No space left on device"),
        "no ENOSPC/EDQUOT: {text}"
    );
    let upper = s.dir.join("upper");
    let used = disk_usage(&upper);
    assert!(
        used <= 70 * MIB,
        "upper layer takes {} MiB on the host with a 64 MiB limit",
        used / MIB
    );
    if let Some(b) = s.stats(&runtime()).disk_bytes {
        assert!(b <= 70 * MIB, "qgroup reports {} MiB", b / MIB);
    }
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_tmpfs_fill_stops_at_tmp_size() {
    let s = create(limits(|l| l.tmp_bytes = 16 * MIB)).await;
    let _g = Cleanup(vec![s.clone()]);
    // Under gVisor /dev/shm is the Sentry's own tmpfs, charged to the memory limit only.
    let dirs: &[&str] = if common::isolation() == paddock_core::Isolation::Gvisor {
        &["/tmp"]
    } else {
        &["/tmp", "/dev/shm"]
    };
    for dir in dirs {
        // `wc -c`, not `stat`: coreutils' statx with AT_NO_AUTOMOUNT fails under this gVisor.
        let r = sh(
            &s,
            &format!(
                "dd if=/dev/zero of={dir}/fill bs=1M count=64; echo dd=$?; \
                 echo size=$(wc -c < {dir}/fill)"
            ),
        )
        .await;
        let k = kv(&out(&r));
        assert_ne!(k.get("dd").map(String::as_str), Some("0"), "{dir}: {r:?}");
        assert!(
            err(&r).contains("No space left on device"),
            "{dir}: {}",
            err(&r)
        );
        let size: u64 = k.get("size").and_then(|v| v.parse().ok()).unwrap_or(0);
        assert!(
            size > 0 && size <= 16 * MIB,
            "{dir}: wrote {size} bytes with a 16 MiB size"
        );
    }
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a8_timeouts_kill_busy_loops_daemons_and_stopped_processes() {
    if not_on_gvisor(
        "it counts host processes in the cgroup, where a gVisor sandbox always has its Sentry, gofer and ptrace stubs (tests/gvisor.rs checks timeouts)",
    ) {
        return;
    }
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    let variants = [
        ("busy loop", "while :; do :; done"),
        ("ignores SIGTERM", "trap '' TERM; while :; do :; done"),
        (
            "setsid daemon",
            "setsid bash -c 'while :; do :; done' & disown; while :; do :; done",
        ),
        (
            "double fork",
            "( setsid bash -c 'trap \"\" TERM HUP; while :; do :; done' </dev/null & ); \
             while :; do :; done",
        ),
        (
            "python double fork",
            "python3 -c 'import os, time\n\
             if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        \
             while True: pass\n    os._exit(0)\nos.wait()' ; while :; do :; done",
        ),
        (
            "self-stopped child",
            "bash -c 'kill -STOP $$; while :; do :; done' & while :; do :; done",
        ),
    ];
    for (name, script) in variants {
        let t0 = Instant::now();
        let r = run(&s, None, script, Duration::from_secs(2)).await;
        let elapsed = t0.elapsed();
        assert!(r.timed_out, "{name}: no timeout reported: {r:?}");
        assert!(
            elapsed < Duration::from_secs(3),
            "{name}: exec returned after {elapsed:?}"
        );
        let left = wait_only_agent(&s, t0 + Duration::from_secs(3)).await;
        assert_eq!(
            left,
            BTreeSet::from([s.pid]),
            "{name}: processes still running 3 s after start with a 2 s timeout: {:?}",
            describe(&left)
        );
    }
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a9_orphans_do_not_outlive_destroy() {
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    let r = sh(
        &s,
        "nohup sleep 10000 >/dev/null 2>&1 & \
         ( setsid sleep 10001 </dev/null >/dev/null 2>&1 & ); \
         echo started",
    )
    .await;
    assert_eq!(out(&r), "started\n", "{r:?}");
    // Precondition: the orphans run (so the check after destroy is not vacuous).
    let mut procs = cgroup_procs(&s);
    for _ in 0..100 {
        if procs.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        procs = cgroup_procs(&s);
    }
    let orphans: BTreeSet<i32> = procs.iter().copied().filter(|p| *p != s.pid).collect();
    assert!(
        orphans.len() >= 2,
        "background sleeps not running: {:?}",
        describe(&procs)
    );
    let in_range = host_procs_in_range(s.uid_base);
    assert!(
        orphans
            .iter()
            .all(|o| in_range.iter().any(|(p, _, _)| p == o)),
        "orphans not in the sandbox's uid range: {in_range:?}"
    );

    let (id, base, dirs) = (s.id.as_str().to_owned(), s.uid_base, s.cgroup_dirs());
    destroy(&s).await;

    for o in &orphans {
        let status = std::fs::read_to_string(format!("/proc/{o}/status")).unwrap_or_default();
        // A zombie has exited: only its entry waits for its parent to reap it.
        if status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains("Z (zombie)"))
        {
            continue;
        }
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok());
        assert!(
            !uid.is_some_and(|u| (base..base + 65536).contains(&u)),
            "orphan {o} survived destroy: {status}"
        );
    }
    // Anything in the range that is not in another live sandbox's cgroup is a leftover (the
    // slot, hence the range, may already be reused by a test running in parallel). A gVisor
    // sandbox has no range of its own (base 0: host root's), so there only its cgroup counts.
    let gvisor = common::isolation() == paddock_core::Isolation::Gvisor;
    let leftovers: Vec<_> = host_procs_in_range(base)
        .into_iter()
        .filter(|(_, _, cg)| cg.contains(&id) || (!gvisor && !cg.contains("/paddock/")))
        .collect();
    assert!(
        leftovers.is_empty(),
        "processes in uid range {base}.. after destroy: {leftovers:?}"
    );
    for d in dirs {
        assert!(!d.exists(), "cgroup {} still exists", d.display());
    }
}
