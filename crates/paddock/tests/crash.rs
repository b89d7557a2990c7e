//! The crash tests (security battery H1/H3): `kill -9` the server while five sandboxes run
//! long commands and an upload is in flight, restart it, and check that the reconciliation
//! policy held (live sandboxes adopted, with their deadlines) and that nothing leaked; and
//! the chaos test, twenty `kill -9` runs at random points with networked sandboxes and every
//! kind of request in flight, checking the host against the store after each restart.

mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use server::*;

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_exec_and_upload_then_restart_adopts_and_leaks_nothing() {
    let mut s = Server::start(&[]);
    let mut ids = Vec::new();
    for i in 0..5 {
        let v = s
            .create(json!({"timeout": 600, "metadata": {"n": i.to_string()}}))
            .await;
        let id = v["id"].as_str().expect("id").to_owned();
        // A long command in the background, writing a heartbeat file.
        let (st, v) = call(
            s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                .json(&json!({
                    "command": "while :; do date +%s%N > /tmp/beat.new; mv /tmp/beat.new /tmp/beat; sleep 0.05; done",
                    "background": true,
                })),
        )
        .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        ids.push(id);
    }
    // One sandbox created and killed before the crash: must stay stopped.
    let gone = s.create(json!({})).await;
    let gone_id = gone["id"].as_str().expect("id").to_owned();
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{gone_id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);

    // An upload in flight: a body that trickles in and never finishes.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let upload = s
        .req(
            Method::PUT,
            &format!("/v1/sandboxes/{}/files?path=/tmp/partial.bin", ids[0]),
        )
        .header("content-type", "application/octet-stream")
        .body(body)
        .send();
    let upload = tokio::spawn(upload);
    for _ in 0..8 {
        tx.send(Ok(vec![7u8; 1 << 20])).await.expect("feed upload");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let server_pid = s.pid().expect("pid");
    s.kill9();
    drop(tx);
    let _ = upload.await;
    assert!(!std::path::Path::new(&format!("/proc/{server_pid}")).exists());

    // The sandboxes kept running while the server was down.
    for id in &ids {
        assert!(
            !processes_of(id).is_empty(),
            "sandbox {id} died with the server"
        );
    }

    s.restart();
    for id in &ids {
        let (st, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}"))).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["state"], "running", "{v}");
        assert_eq!(v["timeout"], 600);
        // Still alive and usable: the heartbeat moves and a new exec works.
        let (st, r) = call(
            s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                // Polled inside for up to 10 s: a btrfs commit under load (the chaos test
                // runs beside this one) can hold the loop's `mv` for hundreds of ms.
                .json(&json!({"command": "a=$(cat /tmp/beat); for i in $(seq 100); do sleep 0.1; b=$(cat /tmp/beat); [ $b -gt $a ] && echo alive && exit 0; done; echo \"stuck at $a\""})),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{r}");
        assert_eq!(r["stdout"], "alive\n", "{r}");
        let (_, logs) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/logs"))).await;
        assert!(
            logs["events"]
                .as_array()
                .expect("events")
                .iter()
                .any(|e| e["kind"] == "adopted"),
            "{logs}"
        );
    }
    let (_, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{gone_id}"))).await;
    assert_eq!(v["state"], "stopped");
    assert!(leftovers(&gone_id).is_empty());

    // The API matches reality: exactly the five are running.
    let (_, list) = call(s.req(Method::GET, "/v1/sandboxes")).await;
    let mut listed: Vec<String> = list["sandboxes"]
        .as_array()
        .expect("list")
        .iter()
        .map(|x| x["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    listed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(listed, want);

    // A clean stop (policy destroy in tests) leaves nothing of any of them.
    s.stop();
    for id in &ids {
        // The killed processes leave the process table asynchronously.
        eventually_blocking(
            Duration::from_secs(10),
            &format!("sandbox {id} gone"),
            || {
                let left = leftovers(id);
                done_when(left.is_empty(), format!("{left:?}"))
            },
        );
    }
}

/// The host answers the sandboxes' `statfs` (their disk limit as the size of `/`). A
/// `statfs` made while the server is down waits, and is answered by the restarted server,
/// which takes the adopted sandbox's listener over.
#[tokio::test(flavor = "multi_thread")]
async fn statfs_made_while_the_server_is_down_is_answered_after_restart() {
    let mut s = Server::start(&[]);
    let v = s.create(json!({"disk": "1G", "timeout": 120})).await;
    let id = v["id"].as_str().expect("id").to_owned();
    // One `stat -f` every 50 ms, each result appended to a file.
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({
                "command": "while :; do stat -f -c %b / >> /tmp/blocks; sleep 0.05; done",
                "background": true,
            })),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let lines = |s: &Server, id: String| {
        let req = s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"));
        async move {
            let (_, r) = call(req.json(&json!({"command": "cat /tmp/blocks"}))).await;
            r["stdout"].as_str().unwrap_or_default().to_owned()
        }
    };
    wait_until(Duration::from_secs(10), "first statfs answers", || {
        let f = lines(&s, id.clone());
        async move { !f.await.is_empty() }
    })
    .await;
    s.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.restart();
    let before = lines(&s, id.clone()).await.lines().count();
    // Each answer reads the sandbox's qgroup usage, which commits a btrfs transaction: under
    // the other crash tests' writes that can take seconds (CI once saw 10 s pass).
    wait_until(
        Duration::from_secs(30),
        "statfs answers after restart",
        || {
            let f = lines(&s, id.clone());
            async move { f.await.lines().count() > before + 3 }
        },
    )
    .await;
    let all = lines(&s, id.clone()).await;
    assert!(all.lines().all(|l| l == "262144"), "{all}");
    s.stop();
    assert_eq!(leftovers(&id), Vec::<String>::new());
}

/// Polls `f` until it holds, failing with `what` after `limit` (the shared [`eventually`]).
async fn wait_until<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(limit, what, || {
        let fut = f();
        async move { done_when(fut.await, "not yet") }
    })
    .await;
}

/// A `Stream` over an mpsc receiver (without pulling in tokio-stream).
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_that_vanished_while_the_server_was_down_is_marked_lost() {
    let mut s = Server::start(&[]);
    let v = s.create(json!({})).await;
    let id = v["id"].as_str().expect("id").to_owned();
    s.kill9();
    // Kill the sandbox behind the server's back: every process in its cgroup.
    for pid in processes_of(&id) {
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
    // Tearing down a pid namespace can take seconds on a loaded 2-core machine; the
    // restart must come after the sandbox is really gone, or it is (rightly) adopted.
    for _ in 0..400 {
        if processes_of(&id).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        processes_of(&id),
        Vec::<u32>::new(),
        "sandbox {id} did not die"
    );
    s.restart();
    let (_, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(
        (v["state"].as_str(), v["stop_reason"].as_str()),
        (Some("stopped"), Some("lost")),
        "{v}"
    );
    // Reconciliation records it both ways: a `lost` event and a system audit entry.
    let (_, logs) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/logs"))).await;
    let kinds: Vec<&str> = logs["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"lost"), "{logs}");
    let (_, audit) = call(s.req(Method::GET, &format!("/v1/audit?sandbox_id={id}"))).await;
    let lost = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|a| a["action"] == "sandbox.lost")
        .unwrap_or_else(|| panic!("no sandbox.lost audit entry: {audit}"));
    assert_eq!(
        (&lost["actor"], &lost["outcome"]),
        (&json!("system"), &json!("ok"))
    );
    assert_eq!(leftovers(&id), Vec::<String>::new());
}

/// How many `kill -9` runs the chaos test makes (`PADDOCK_CHAOS_RUNS` to change).
const CHAOS_RUNS: usize = 20;
/// Most sandboxes alive at once in the chaos test; above it the runs delete more.
const CHAOS_POPULATION: usize = 5;

/// What the host holds for this server's instance, and what the store says runs.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    /// Sandboxes the store has `running` (none may be `starting` after a restart).
    running: BTreeSet<String>,
    /// Sandboxes with cgroup directories of this instance (every controller).
    cgroups: BTreeSet<String>,
    /// Writable layers (subvolumes) under the data directory.
    subvolumes: BTreeSet<String>,
    /// uid slots claimed for this instance, by sandbox.
    claims: BTreeMap<String, u32>,
    /// Host sandbox links of this instance's slots.
    links: BTreeSet<u32>,
    /// Interfaces named in the instance's nftables set `ifs`, and in any of its elements.
    ifs: BTreeSet<u32>,
    chains: BTreeSet<u32>,
    /// Resolver sockets (UDP and TCP port 53) on this instance's slots' host addresses.
    resolvers: BTreeSet<u32>,
    /// Host mounts naming a sandbox of this data directory.
    mounts: BTreeSet<String>,
}

fn dir_names(p: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect()
}

fn host(cmd: &str) -> String {
    let o = std::process::Command::new("bash")
        .args(["-c", cmd])
        .output()
        .expect("bash");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Slots named `pdk<slot>` in `text`.
fn pdk_slots(text: &str) -> BTreeSet<u32> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter_map(|w| w.strip_prefix("pdk")?.parse().ok())
        .collect()
}

async fn snapshot(s: &Server) -> Snapshot {
    let instance = std::fs::read_to_string(s.data.join("instance"))
        .expect("instance")
        .trim()
        .to_owned();
    let (st, list) = call(s.req(Method::GET, "/v1/sandboxes?state=all&limit=1000")).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    let mut running = BTreeSet::new();
    for v in list["sandboxes"].as_array().expect("list") {
        let id = v["id"].as_str().unwrap_or_default().to_owned();
        match v["state"].as_str() {
            Some("running") => {
                running.insert(id);
            }
            Some("stopped") => {}
            other => panic!("sandbox {id} is {other:?} after a restart: {v}"),
        }
    }
    let mut cgroups = BTreeSet::new();
    for root in ["", "memory/", "pids/", "cpu/", "cpuacct/", "freezer/"] {
        cgroups.extend(dir_names(std::path::Path::new(&format!(
            "/sys/fs/cgroup/{root}paddock/{instance}"
        ))));
    }
    let subvolumes = dir_names(&s.data.join("layers/sandboxes"));
    let mut claims = BTreeMap::new();
    for e in std::fs::read_dir("/run/paddock/uid-slots")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(slot) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
        let owner = std::path::Path::new(owner.trim());
        if owner
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == instance.as_str())
        {
            let id = owner.file_name().unwrap().to_string_lossy().into_owned();
            claims.insert(id, slot);
        }
    }
    let ours: BTreeSet<u32> = claims.values().copied().collect();
    let links: BTreeSet<u32> = pdk_slots(&host("ls /sys/class/net"))
        .intersection(&ours)
        .copied()
        .collect();
    let table = format!("inet paddock_{instance}");
    let ifs = pdk_slots(&host(&format!("nft list set {table} ifs 2>/dev/null")));
    // Every slot any element of the table names (`ifs`, `dns_ok`, `all_ifs`, `allow`).
    let chains = pdk_slots(&host(&format!("nft list table {table} 2>/dev/null")));
    let sockets = host("ss -Hlntu 2>/dev/null");
    let resolvers = ours
        .iter()
        .copied()
        .filter(|slot| sockets.contains(&format!("{}:53 ", paddock_runtime::net::host_addr(*slot))))
        .collect();
    let data = s.data.display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("{data}/layers/sandboxes/")))
        .map(str::to_owned)
        .collect();
    Snapshot {
        running,
        cgroups,
        subvolumes,
        claims,
        links,
        ifs,
        chains,
        resolvers,
        mounts,
    }
}

/// The network mode the store has for each running sandbox.
async fn modes(s: &Server, ids: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for id in ids {
        let (_, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}"))).await;
        out.insert(
            id.clone(),
            v["network"]["mode"].as_str().unwrap_or("?").to_owned(),
        );
    }
    out
}

/// Every host resource matches the store: each running sandbox has its cgroups, layer,
/// claim, and (networked) link, table entries and resolver; nothing else has any.
fn check_consistent(run: usize, snap: &Snapshot, modes: &BTreeMap<String, String>) {
    let ctx = format!("run {run}: {snap:#?}");
    assert_eq!(snap.cgroups, snap.running, "cgroups: {ctx}");
    assert_eq!(snap.subvolumes, snap.running, "subvolumes: {ctx}");
    let claimed: BTreeSet<String> = snap.claims.keys().cloned().collect();
    assert_eq!(claimed, snap.running, "uid slots: {ctx}");
    let networked: BTreeSet<u32> = snap
        .claims
        .iter()
        .filter(|(id, _)| modes.get(*id).is_some_and(|m| m != "none"))
        .map(|(_, slot)| *slot)
        .collect();
    assert_eq!(snap.links, networked, "links: {ctx}");
    assert_eq!(snap.ifs, networked, "nft set ifs: {ctx}");
    assert_eq!(snap.chains, networked, "nft chains: {ctx}");
    assert_eq!(snap.resolvers, networked, "resolvers: {ctx}");
    assert!(snap.mounts.is_empty(), "mounts: {ctx}");
}

/// Randomized crash test: `kill -9` of `paddock serve` at random moments while networked
/// and plain sandboxes are being created, exec'd into, uploaded to, re-networked and
/// deleted. After every restart the host must match the store exactly (links, nft sets
/// and chains, resolvers, cgroups, mounts, uid slots, subvolumes), every sandbox the store
/// has running must answer an exec, and a second restart must change nothing. Prints the
/// seed (set `PADDOCK_CHAOS_SEED` to replay) and the numbers.
#[tokio::test(flavor = "multi_thread")]
async fn chaos_kill_9_at_random_points() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("PADDOCK_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let runs: usize = std::env::var("PADDOCK_CHAOS_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CHAOS_RUNS);
    println!("chaos: seed {seed}, {runs} runs");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = std::time::Instant::now();
    let mut s = Server::start(&["--dns-upstream", "127.0.0.1:9"]);
    let (mut adopted, mut lost, mut failed, mut repairs) = (0, 0, 0, 0);
    let mut ever: BTreeSet<String> = BTreeSet::new();
    let mut running: Vec<String> = Vec::new();
    for run in 0..runs {
        // Operations in flight, each a task of its own that the kill interrupts.
        let mut tasks = tokio::task::JoinSet::new();
        let creates = if running.len() < CHAOS_POPULATION {
            rng.random_range(1..=2)
        } else {
            0
        };
        for _ in 0..creates {
            let network = match rng.random_range(0..3) {
                0 => json!({"mode": "none"}),
                1 => json!({"mode": "all"}),
                _ => json!({"mode": "allow", "allow": ["allowed.test", "198.51.100.0/24"]}),
            };
            let rb = s
                .req(Method::POST, "/v1/sandboxes")
                .json(&json!({"timeout": 600, "network": network}));
            tasks.spawn(async move { rb.send().await.map(|_| ()).ok() });
        }
        for id in &running {
            let base = format!("/v1/sandboxes/{id}");
            match rng.random_range(0..6) {
                0 | 1 => {
                    let rb = s
                        .req(Method::POST, &format!("{base}/exec"))
                        .json(&json!({"command": "sleep 0.$RANDOM; echo ok"}));
                    tasks.spawn(async move { rb.send().await.map(|_| ()).ok() });
                }
                2 => {
                    let chunks = rng.random_range(1..6usize);
                    let body = reqwest::Body::wrap_stream(futures::stream::unfold(
                        0usize,
                        move |i| async move {
                            if i == chunks {
                                return None;
                            }
                            tokio::time::sleep(Duration::from_millis(40)).await;
                            Some((Ok::<_, std::io::Error>(vec![7u8; 256 << 10]), i + 1))
                        },
                    ));
                    let rb = s
                        .req(Method::PUT, &format!("{base}/files?path=/tmp/up.bin"))
                        .header("content-type", "application/octet-stream")
                        .body(body);
                    tasks.spawn(async move { rb.send().await.map(|_| ()).ok() });
                }
                3 => {
                    let mode = ["none", "all", "allow"][rng.random_range(0..3)];
                    let body = if mode == "allow" {
                        json!({"mode": "allow", "allow": ["allowed.test"]})
                    } else {
                        json!({ "mode": mode })
                    };
                    let rb = s.req(Method::PUT, &format!("{base}/network")).json(&body);
                    tasks.spawn(async move { rb.send().await.map(|_| ()).ok() });
                }
                4 if running.len() > 2 || rng.random_bool(0.3) => {
                    let rb = s.req(Method::DELETE, &base);
                    tasks.spawn(async move { rb.send().await.map(|_| ()).ok() });
                }
                _ => {}
            }
        }
        // The random point: anywhere from before the first request lands to after most
        // of them finished (a networked create takes about a second here).
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
        s.kill9();
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}

        // Networked sandboxes whose link the crash left broken (from their records).
        for e in std::fs::read_dir(s.data.join("layers/sandboxes"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(r) = std::fs::read(e.path().join("record.json")) else {
                continue;
            };
            let Ok(r) = serde_json::from_slice::<serde_json::Value>(&r) else {
                continue;
            };
            let id = e.file_name().to_string_lossy().into_owned();
            if r["network"]["mode"].as_str().is_some_and(|m| m != "none")
                && !processes_of(&id).is_empty()
                && let Some(slot) = r["slot"].as_u64()
                && !std::path::Path::new(&format!("/sys/class/net/pdk{slot}")).exists()
            {
                repairs += 1;
            }
        }

        s.restart();
        let first = snapshot(&s).await;
        let first_modes = modes(&s, &first.running).await;
        check_consistent(run, &first, &first_modes);
        // Every sandbox the store has running works; its network is whole if it has one.
        for id in &first.running {
            let (st, r) = call(
                s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                    .json(&json!({"cmd": ["cat", "/etc/resolv.conf"]})),
            )
            .await;
            assert_eq!(st, StatusCode::OK, "run {run}: exec in {id}: {r}");
            let slot = first.claims[id];
            let named = r["stdout"].as_str().unwrap_or_default().contains(&format!(
                "nameserver {}",
                paddock_runtime::net::host_addr(slot)
            ));
            assert_eq!(
                named,
                first_modes[id] != "none",
                "run {run}: resolv.conf of {id} ({}): {r}",
                first_modes[id]
            );
        }
        // Numbers: adopted (running before and after), lost and failed ones.
        for id in &running {
            if first.running.contains(id) {
                adopted += 1;
            }
        }
        let (_, all) = call(s.req(Method::GET, "/v1/sandboxes?state=all&limit=1000")).await;
        for v in all["sandboxes"].as_array().expect("list") {
            let id = v["id"].as_str().unwrap_or_default().to_owned();
            if v["state"] == "stopped" && ever.insert(id.clone()) {
                match v["stop_reason"].as_str() {
                    Some("lost") => lost += 1,
                    Some("failed") => failed += 1,
                    _ => {}
                }
                assert_eq!(leftovers(&id), Vec::<String>::new(), "run {run}: {id}");
            }
        }
        // A second restart with nothing in flight changes nothing.
        s.kill9();
        s.restart();
        let second = snapshot(&s).await;
        assert_eq!(
            first, second,
            "run {run}: the second restart changed something"
        );
        running = first.running.iter().cloned().collect();
    }
    // `repairs`: broken links found before a restart, whole after it (checked above).
    let elapsed = started.elapsed();
    println!(
        "chaos: {runs} kill -9 runs in {:.0} s (seed {seed}): {adopted} adoptions, {lost} lost, {failed} failed, {repairs} networks repaired, {} running at the end",
        elapsed.as_secs_f64(),
        running.len()
    );
    s.stop();
    for id in &running {
        assert_eq!(leftovers(id), Vec::<String>::new(), "sandbox {id}");
    }
}
