//! The fleet (`docs/fleet.md`): control planes and nodes, each a separate `paddock`
//! process with its own data directory, on one shared store.
//!
//! The store is a real PostgreSQL (a fresh database per test on the binary's server,
//! `support/pg.rs`); `postgres_restart_under_a_fleet` runs on a server of its own, which
//! it stops and starts underneath the fleet.

mod cluster;
mod server;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster::{Db, Fleet};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::{call, done_when, eventually, leftovers, processes_of};

fn node_of(v: &Value) -> String {
    v["node"]
        .as_str()
        .expect("sandbox JSON names its node")
        .to_owned()
}

/// A PTY session through a control plane: `exit 7` comes back as the exit frame.
async fn pty_through(f: &Fleet, control: usize, id: &str) {
    let url = format!(
        "{}/v1/sandboxes/{id}/pty?cols=80&rows=24",
        f.controls[control].url.replace("http://", "ws://")
    );
    let input =
        tokio_tungstenite::tungstenite::Message::binary(b"echo pty-$((6*7)); exit 7\n".to_vec());
    let (text, exit) = server::pty_session(&url, &f.admin_key, vec![input]).await;
    assert!(text.contains("pty-42"), "{text}");
    assert_eq!(exit.expect("exit frame")["exit_code"], 7);
}

/// Serves a file on port 8000 of `id` and reads it through the proxy of a control plane.
async fn proxy_through(f: &Fleet, control: usize, id: &str) {
    let (st, v) = call(
        f.req(
            control,
            Method::PUT,
            &format!("/v1/sandboxes/{id}/files?path=/home/user/www/hi.txt"),
        )
        .header("content-type", "application/octet-stream")
        .body("through the fleet\n"),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = call(
        f.req(control, Method::POST, &format!("/v1/sandboxes/{id}/exec")).json(&json!({
            "command": "python3 -m http.server 8000 --bind 127.0.0.1 --directory /home/user/www",
            "background": true
        })),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let other = 1 - control;
    eventually(Duration::from_secs(20), "the proxied file", || async {
        let r = f
            .req(other, Method::GET, &format!("/proxy/{id}/8000/hi.txt"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let st = r.status();
        let body = r.text().await.unwrap_or_default();
        server::done_when(
            st == StatusCode::OK && body == "through the fleet\n",
            format!("{st} {body}"),
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spread_reach_dead_node_and_restart() {
    let mut f = Fleet::start(2, &[&[], &[], &[]]);
    // Nine creates alternating between the two control planes spread over all three nodes.
    let mut sbx = Vec::new();
    for i in 0..9 {
        let v = f.create(i % 2, json!({"timeout": 600})).await;
        sbx.push((v["id"].as_str().expect("id").to_owned(), node_of(&v)));
    }
    let mut per: std::collections::BTreeMap<&str, usize> = Default::default();
    for (_, n) in &sbx {
        *per.entry(n.as_str()).or_default() += 1;
    }
    // Each control plane counts its own placements between heartbeats, so the spread is
    // even only roughly.
    assert_eq!(per.len(), 3, "nine sandboxes on all three nodes: {per:?}");
    assert!(per.values().all(|c| (2..=4).contains(c)), "{per:?}");
    // Exec and files through either control plane.
    for (i, (id, _)) in sbx.iter().enumerate() {
        let v = f.exec(i % 2, id, "echo $((40+2))").await;
        assert_eq!(v["stdout"], "42\n", "{v}");
        let path = format!("/v1/sandboxes/{id}/files?path=/home/user/f.txt");
        let (st, _) = call(
            f.req((i + 1) % 2, Method::PUT, &path)
                .header("content-type", "application/octet-stream")
                .body(format!("file of {id}")),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED);
        let r = f
            .req(i % 2, Method::GET, &path)
            .send()
            .await
            .expect("get file");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.text().await.expect("body"), format!("file of {id}"));
    }
    // GET through either control plane says which node holds it.
    let (st, v) = call(f.req(1, Method::GET, &format!("/v1/sandboxes/{}", sbx[0].0))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(node_of(&v), sbx[0].1);
    pty_through(&f, 1, &sbx[1].0).await;
    proxy_through(&f, 0, &sbx[2].0).await;

    // kill -9 node1: dead within 15 s, its sandboxes lost, creates avoid it.
    let dead_id = f.node_id("node1").await;
    let killed = Instant::now();
    f.nodes[0].kill9();
    eventually(Duration::from_secs(15), "node1 seen dead", || async {
        let n = f.nodes().await;
        let st = n
            .iter()
            .find(|n| n["id"] == dead_id.as_str())
            .expect("listed")["state"]
            .clone();
        server::done_when(st == "dead", st)
    })
    .await;
    eprintln!("node1 seen dead {:?} after kill -9", killed.elapsed());
    let lost: Vec<&String> = sbx
        .iter()
        .filter(|(_, n)| *n == dead_id)
        .map(|(id, _)| id)
        .collect();
    for id in &lost {
        let (st, v) = call(f.req(0, Method::GET, &format!("/v1/sandboxes/{id}"))).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(
            (v["state"].as_str(), v["stop_reason"].as_str()),
            (Some("stopped"), Some("lost")),
            "{v}"
        );
    }
    let (st, v) = call(f.req(0, Method::GET, "/v1/events?limit=1000")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"node.dead") && kinds.contains(&"node.ready") && kinds.contains(&"lost"),
        "{kinds:?}"
    );
    for i in 0..3 {
        let v = f.create(i % 2, json!({})).await;
        assert_ne!(node_of(&v), dead_id, "a create went to the dead node");
    }
    // The sandboxes of the killed node still run on the host until it comes back...
    assert!(
        lost.iter().all(|id| !processes_of(id).is_empty()),
        "kill -9 of a node leaves its sandboxes running"
    );
    // ...and its restart destroys them (the store marks them lost): nothing leaks.
    f.nodes[0].restart();
    for id in &lost {
        assert!(
            leftovers(id).is_empty(),
            "left of lost sandbox {id}: {:?}",
            leftovers(id)
        );
    }
    let n = f.nodes().await;
    assert_eq!(
        n.iter()
            .find(|n| n["id"] == dead_id.as_str())
            .expect("listed")["state"],
        "ready"
    );
    let survivors: Vec<&String> = sbx
        .iter()
        .filter(|(_, n)| *n != dead_id)
        .map(|(id, _)| id)
        .collect();
    for id in survivors.iter().take(2) {
        assert_eq!(f.exec(1, id, "echo ok").await["stdout"], "ok\n");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_and_bad_input() {
    let f = Fleet::start(1, &[&["zone=a"], &["zone=b"]]);
    let a = f.node_id("node1").await;
    let b = f.node_id("node2").await;
    let (_, user) = {
        let (st, v) = call(
            f.req(0, Method::POST, "/v1/keys")
                .json(&json!({"name": "u", "role": "user"})),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        (v["id"].clone(), v["key"].as_str().expect("key").to_owned())
    };
    // Admin only; unknown ids are 404.
    let (st, v) = call(f.req_as(&user, 0, Method::POST, &format!("/v1/nodes/{a}/drain"))).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{v}"
    );
    let (st, _) = call(f.req_as(&user, 0, Method::GET, "/v1/nodes")).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = call(f.http.get(format!("{}/v1/nodes", f.controls[0].url))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // An operator may list and drain nodes (roles: docs/roles.md).
    let (st, v) = call(
        f.req(0, Method::POST, "/v1/keys")
            .json(&json!({"name": "ops", "role": "operator"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let operator = v["key"].as_str().expect("key").to_owned();
    let (st, _) = call(f.req_as(&operator, 0, Method::GET, "/v1/nodes")).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = call(f.req_as(&operator, 0, Method::POST, "/v1/nodes/node_nope/drain")).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "allowed, and no such node");
    for path in [
        "/v1/nodes/node_nope/drain",
        "/v1/nodes/node_nope/undrain",
        "/v1/nodes/node_nope",
    ] {
        let m = if path.ends_with("nope") {
            Method::GET
        } else {
            Method::POST
        };
        let (st, v) = call(f.req(0, m, path)).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{path}: {v}"
        );
    }
    // The event stream through a control plane carries events of every node.
    let mut sse = f
        .req(0, Method::GET, "/v1/events")
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("sse");
    assert_eq!(sse.status(), StatusCode::OK);
    let mut ids = Vec::new();
    for zone in ["a", "b"] {
        let v = f.create(0, json!({"node_selector": {"zone": zone}})).await;
        ids.push(v["id"].as_str().expect("id").to_owned());
    }
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ids
        .iter()
        .all(|id| seen.contains(&format!("\"sandbox_id\":\"{id}\"")))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sse.chunk()).await {
            Ok(Ok(Some(c))) => seen.push_str(&String::from_utf8_lossy(&c)),
            other => panic!("events of both nodes did not arrive: {other:?}; seen {seen}"),
        }
    }
    drop(sse);
    // Drain: new sandboxes go to the other node only; the drained one's keep running.
    let on_a = f.create(0, json!({"node_selector": {"zone": "a"}})).await;
    assert_eq!(node_of(&on_a), a);
    let (st, v) = call(f.req(0, Method::POST, &format!("/v1/nodes/{a}/drain"))).await;
    assert_eq!(
        (st, v["state"].as_str()),
        (StatusCode::OK, Some("draining")),
        "{v}"
    );
    for _ in 0..4 {
        assert_eq!(node_of(&f.create(0, json!({})).await), b);
    }
    assert_eq!(
        f.exec(0, on_a["id"].as_str().expect("id"), "echo still")
            .await["stdout"],
        "still\n"
    );
    let (st, v) = call(
        f.req(0, Method::POST, "/v1/sandboxes")
            .json(&json!({"node_selector": {"zone": "a"}})),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("no_capacity")),
        "{v}"
    );
    let (st, v) = call(f.req(0, Method::POST, &format!("/v1/nodes/{a}/undrain"))).await;
    assert_eq!(
        (st, v["state"].as_str()),
        (StatusCode::OK, Some("ready")),
        "{v}"
    );
    assert_eq!(
        node_of(&f.create(0, json!({"node_selector": {"zone": "a"}})).await),
        a
    );
    // A selector nothing matches: 503 no_capacity naming it.
    let (st, v) = call(
        f.req(0, Method::POST, "/v1/sandboxes")
            .json(&json!({"node_selector": {"zone": "mars"}})),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("no_capacity")),
        "{v}"
    );
    assert!(
        v["message"]
            .as_str()
            .expect("message")
            .contains("zone=mars"),
        "{v}"
    );
    let (st, v) = call(
        f.req(0, Method::POST, "/v1/sandboxes")
            .json(&json!({"node_selector": {"zone": "a b"}})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    // A node's port without the fleet token, or with a wrong one: 401, even with an admin key.
    let node_url = &f.nodes[0].url;
    let (st, v) = call(
        f.http
            .get(format!("{node_url}/v1/sandboxes"))
            .bearer_auth(&f.admin_key),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized")),
        "{v}"
    );
    let (st, _) = call(
        f.http
            .get(format!("{node_url}/v1/sandboxes"))
            .bearer_auth(&f.admin_key)
            .header(
                "x-paddock-node-token",
                "fleet-test-token-0123456789abcdef01234567XX",
            ),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // A node with another token is refused at start.
    let (args, data) = f.node_args(9, &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(&args)
        .env("PADDOCK_AGENT_BIN", env!("CARGO_BIN_EXE_paddock-agent"))
        .env(
            "PADDOCK_FLEET_TOKEN",
            "another-token-0123456789abcdef0123456789",
        )
        .output()
        .expect("running a node");
    let _ = Command::new("umount")
        .arg("-l")
        .arg(data.join("layers"))
        .stderr(Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(&data);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("fleet token refused"),
        "{err}"
    );
    assert_eq!(
        f.nodes().await.len(),
        2,
        "the refused node did not register"
    );
    // A short token is refused before anything.
    let out = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["control", "--database-url", &f.db])
        .env("PADDOCK_FLEET_TOKEN", "short")
        .output()
        .expect("running a control plane");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("32 to 256"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_control_plane_during_creates() {
    let mut f = Fleet::start(2, &[&[], &[]]);
    // Twenty creates in flight through control plane 0, which is killed under them (a
    // create takes tens of milliseconds, so some are cut mid-forward).
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let rb = f
            .req(0, Method::POST, "/v1/sandboxes")
            .json(&json!({"timeout": 600}));
        tasks.push(tokio::spawn(
            async move { rb.send().await.map(|r| r.status()) },
        ));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    f.controls[0].kill9();
    let mut answered = 0;
    for t in tasks {
        if let Ok(Ok(st)) = t.await {
            assert!(st == StatusCode::CREATED, "{st}");
            answered += 1;
        }
    }
    eprintln!("{answered} of 20 creates answered before the control plane died");
    // The other keeps serving.
    let v = f.create(1, json!({})).await;
    assert_eq!(
        f.exec(1, v["id"].as_str().expect("id"), "echo alive").await["stdout"],
        "alive\n"
    );
    // Every record settles; a running one has its sandbox, a stopped one left nothing.
    let all = eventually(
        Duration::from_secs(60),
        "no sandbox still starting",
        || async {
            let (st, v) = call(f.req(
                1,
                Method::GET,
                "/v1/sandboxes?state=starting,running,stopped&limit=1000",
            ))
            .await;
            assert_eq!(st, StatusCode::OK, "{v}");
            let list = v["sandboxes"].as_array().expect("list").clone();
            let starting = list.iter().filter(|s| s["state"] == "starting").count();
            server::done_when(starting == 0, format!("{starting} starting")).map(|()| list)
        },
    )
    .await;
    eprintln!("{} records after reconciliation", all.len());
    assert!(all.len() > answered, "{all:?}");
    for s in &all {
        let id = s["id"].as_str().expect("id");
        match s["state"].as_str() {
            Some("running") => assert!(!processes_of(id).is_empty(), "running {id} has no process"),
            _ => assert!(
                leftovers(id).is_empty(),
                "stopped {id} left {:?}",
                leftovers(id)
            ),
        }
    }
    // Sandboxes on the nodes' hosts all have a running record.
    for n in &f.nodes {
        let sandboxes = n.data.as_ref().expect("node data").join("layers/sandboxes");
        for e in std::fs::read_dir(&sandboxes)
            .into_iter()
            .flatten()
            .flatten()
        {
            let id = e.file_name().to_string_lossy().into_owned();
            assert!(
                all.iter()
                    .any(|s| s["id"] == id.as_str() && s["state"] == "running"),
                "sandbox {id} on the host has no running record"
            );
        }
    }
}

/// PostgreSQL stopped underneath a running fleet (`pg_ctl stop -m fast`): every request
/// that needs the store gets 503 `store_unavailable` in bounded time (never a 500, never a
/// hang); started again, requests succeed without restarting anything, and the outage did
/// not declare the node dead.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_restart_under_a_fleet() {
    let f = Fleet::start_on(Db::OwnPostgres, 1, &[&[]], &[], &[]);
    let sb = f.create(0, json!({"template": "base"})).await;
    let id = sb["id"].as_str().expect("id").to_owned();
    f.exec(0, &id, "true").await;
    let pg = f.pg_server.as_ref().expect("own PostgreSQL");
    pg.stop_fast();
    let down = Instant::now();
    let probes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/v1/sandboxes".into(), None),
        (Method::GET, format!("/v1/sandboxes/{id}"), None),
        (
            Method::POST,
            format!("/v1/sandboxes/{id}/exec"),
            Some(json!({"command": "true"})),
        ),
        (
            Method::POST,
            "/v1/sandboxes".into(),
            Some(json!({"template": "base"})),
        ),
        (Method::GET, "/v1/nodes".into(), None),
    ];
    for (method, path, body) in &probes {
        let started = Instant::now();
        let mut req = f.req(0, method.clone(), path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let (st, v) = call(req).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{method} {path}: {v}");
        assert_eq!(v["code"], "store_unavailable", "{method} {path}: {v}");
        // Bounded by the store's connect and pool timeouts (docs/database.md).
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(12),
            "{method} {path} took {took:?}"
        );
        eprintln!(
            "{method} {path} during the outage: 503 in {} ms",
            took.as_millis()
        );
    }
    // Longer than a node may miss heartbeats (10 s): the fleet must not count the outage
    // against its nodes. Requests keep failing cleanly all along.
    while down.elapsed() < Duration::from_secs(13) {
        let started = Instant::now();
        let (st, v) = call(f.req(0, Method::GET, "/v1/sandboxes")).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("store_unavailable")),
            "{v}"
        );
        assert!(started.elapsed() < Duration::from_secs(12));
        tokio::time::sleep(server::POLL_EVERY * 5).await;
    }
    let outage = down.elapsed();
    pg.start_again();
    let up = Instant::now();
    for (method, path) in [
        (Method::GET, "/v1/sandboxes".to_owned()),
        (Method::GET, "/v1/nodes".to_owned()),
    ] {
        eventually(Duration::from_secs(30), "the fleet answers again", || {
            let req = f.req(0, method.clone(), &path);
            let what = format!("{method} {path}");
            async move {
                let (st, v) = call(req).await;
                done_when(st == StatusCode::OK, format!("{what}: {st} {v}"))
            }
        })
        .await;
    }
    eprintln!(
        "recovered {} ms after PostgreSQL was back (outage {} ms)",
        up.elapsed().as_millis(),
        outage.as_millis()
    );
    f.exec(0, &id, "true").await;
    // Placement takes a node whose heartbeat is recent: the node's next one (every 2 s).
    let sb2 = eventually(Duration::from_secs(10), "a create placed again", || {
        let req = f
            .req(0, Method::POST, "/v1/sandboxes")
            .json(&json!({"template": "base"}));
        async move {
            let (st, v) = call(req).await;
            if st == StatusCode::CREATED {
                Ok(v)
            } else {
                Err(format!("{st} {v}"))
            }
        }
    })
    .await;
    f.exec(0, sb2["id"].as_str().expect("id"), "true").await;
    // The node heartbeats again and was not declared dead; its sandbox still runs.
    let nodes = f.nodes().await;
    assert_eq!(nodes[0]["state"], "ready", "{nodes:?}");
    let (st, v) = call(f.req(0, Method::GET, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(
        (st, v["state"].as_str()),
        (StatusCode::OK, Some("running")),
        "{v}"
    );
}

/// The lease of the fleet-wide duty (watching heartbeats, marking dead nodes and their
/// sandboxes `lost`): one control plane holds it; `kill -9` it (and a node at the same
/// moment), and the other takes the duty over within 15 s and does it.
#[tokio::test(flavor = "multi_thread")]
async fn lease_taken_over_when_its_holder_dies() {
    let mut f = Fleet::start(2, &[&[], &[]]);
    let holds = async |f: &Fleet, c: usize| -> bool {
        let r = f
            .http
            .get(format!("{}/v1/health", f.controls[c].url))
            .send()
            .await;
        match r {
            Ok(r) => r.json::<Value>().await.is_ok_and(|v| {
                v["leases"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|n| n == "dead-nodes"))
            }),
            Err(_) => false,
        }
    };
    let holder = eventually(
        Duration::from_secs(15),
        "one control plane holds the lease",
        || {
            let f = &f;
            async move {
                match (holds(f, 0).await, holds(f, 1).await) {
                    (true, false) => Ok(0),
                    (false, true) => Ok(1),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    let other = 1 - holder;
    let sb = f.create(other, json!({"template": "base"})).await;
    let victim = node_of(&sb);
    let victim_idx = f
        .nodes()
        .await
        .iter()
        .position(|n| n["id"] == victim.as_str())
        .expect("victim listed");
    let names: Vec<String> = f
        .nodes()
        .await
        .iter()
        .map(|n| n["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    let victim_name = names[victim_idx].clone();
    let proc_idx: usize = victim_name
        .trim_start_matches("node")
        .parse::<usize>()
        .expect("node number")
        - 1;
    f.controls[holder].kill9();
    f.nodes[proc_idx].kill9();
    let killed = Instant::now();
    eventually(
        Duration::from_secs(15),
        "the other control plane takes the lease",
        || {
            let f = &f;
            async move { done_when(holds(f, other).await, "not yet") }
        },
    )
    .await;
    let takeover = killed.elapsed();
    eventually(
        Duration::from_secs(20),
        "the node is dead and its sandbox lost",
        || {
            let req = f.req(
                other,
                Method::GET,
                &format!("/v1/sandboxes/{}", sb["id"].as_str().unwrap_or_default()),
            );
            async move {
                let (st, v) = call(req).await;
                done_when(
                    st == StatusCode::OK && v["stop_reason"] == "lost",
                    format!("{st} {v}"),
                )
            }
        },
    )
    .await;
    eprintln!(
        "lease taken over {} ms after kill -9 of its holder; node dead and sandbox lost after {} ms",
        takeover.as_millis(),
        killed.elapsed().as_millis()
    );
    assert!(takeover <= Duration::from_secs(15), "{takeover:?}");
}

/// A console session made through one control plane holds on every request through
/// either control plane, whichever node answers (sessions live in the shared store): lists,
/// the nodes the control plane answers itself, a create and a kill with the CSRF token;
/// without the token a mutating request is refused; logout through the other control plane
/// ends it everywhere. The console's page is served by both control planes.
#[tokio::test(flavor = "multi_thread")]
async fn a_console_session_holds_across_control_planes_and_nodes() {
    use reqwest::header::{CONTENT_TYPE, COOKIE, ORIGIN, SET_COOKIE};
    let f = Fleet::start(2, &[&[], &[]]);
    let url = |c: usize| f.controls[c].url.clone();
    // Login through control plane 0.
    let r = f
        .http
        .post(format!("{}/v1/session", url(0)))
        .header(ORIGIN, url(0))
        .json(&json!({ "api_key": f.admin_key }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let cookie = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let session = cookie.split(';').next().unwrap().to_owned();
    let me: Value = r.json().await.unwrap();
    let csrf = me["csrf_token"].as_str().expect("a CSRF token").to_owned();
    let get = |c: usize, path: &str| {
        f.http
            .get(format!("{}{path}", url(c)))
            .header(COOKIE, &session)
    };
    let send = |c: usize, m: Method, path: &str| {
        f.http
            .request(m, format!("{}{path}", url(c)))
            .header(COOKIE, &session)
            .header(ORIGIN, url(c))
            .header("x-csrf-token", &csrf)
    };
    // Several reads through both control planes (forwarded round robin over both nodes,
    // or answered by the control plane itself).
    for c in [0, 1, 0, 1, 0, 1] {
        for path in ["/v1/session", "/v1/sandboxes", "/v1/nodes", "/v1/templates"] {
            let (st, v) = call(get(c, path)).await;
            assert_eq!(st, StatusCode::OK, "GET {path} through control {c}: {v}");
            if path == "/v1/session" {
                assert_eq!(v["csrf_token"], csrf.as_str(), "one token everywhere");
            }
        }
        let r = get(c, "/").send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "the console through control {c}"
        );
        assert!(
            r.headers()[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
    // A create through control plane 1 needs the token; then the sandbox is reached and
    // killed through control plane 0.
    let (st, v) = call(
        f.http
            .post(format!("{}/v1/sandboxes", url(1)))
            .header(COOKIE, &session)
            .json(&json!({})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "a create without the token: {v}");
    assert_eq!(v["code"], "csrf", "{v}");
    let (st, sb) = call(send(1, Method::POST, "/v1/sandboxes").json(&json!({}))).await;
    assert_eq!(st, StatusCode::CREATED, "create with the token: {sb}");
    let id = sb["id"].as_str().unwrap().to_owned();
    let (st, v) = call(get(0, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // Drain and undrain, answered by the control plane itself, need the token too.
    let node = node_of(&sb);
    let (st, v) = call(
        f.http
            .post(format!("{}/v1/nodes/{node}/drain", url(0)))
            .header(COOKIE, &session),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "a drain without the token: {v}");
    let (st, v) = call(send(0, Method::POST, &format!("/v1/nodes/{node}/undrain"))).await;
    assert_eq!(st, StatusCode::OK, "undrain with the token: {v}");
    let (st, v) = call(send(0, Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "kill with the token: {v}");
    // Logout through control plane 1 ends the session on every control plane and node.
    let (st, _) = call(send(1, Method::DELETE, "/v1/session")).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    for c in [0, 1, 0, 1] {
        for path in ["/v1/session", "/v1/sandboxes", "/v1/nodes"] {
            let (st, v) = call(get(c, path)).await;
            assert_eq!(
                st,
                StatusCode::UNAUTHORIZED,
                "GET {path} through control {c} after logout: {v}"
            );
        }
    }
}
