//! Templates usable on every node of a fleet (`docs/fleet.md`, "Templates"): a template
//! built on node 1 is used on node 3, which fetches its layers from node 1 once, checked
//! by digest; a corrupted layer fails with a clear error and leaves nothing on node 3; the
//! template list through a control plane is the fleet's; a delete through it deletes the
//! template on every node. The fetch rate is printed (`BENCHMARKS.md`). And volumes, which
//! stay on their node: creates mounting one are placed there (`docs/fleet.md`, "Volumes").

mod cluster;
mod server;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cluster::{Fleet, TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::{call, eventually};

/// A request straight to node `n` (index), with the fleet token, as a control plane sends.
fn to_node(f: &Fleet, n: usize, method: Method, path: &str) -> reqwest::RequestBuilder {
    f.http
        .request(method, format!("{}{path}", f.nodes[n].url))
        .bearer_auth(&f.admin_key)
        .header("x-paddock-node-token", TOKEN)
}

/// Builds template `name` on node `n`; the last NDJSON event must be `done`.
async fn build_on(f: &Fleet, n: usize, name: &str, file: &str) {
    let r = to_node(f, n, Method::POST, &format!("/v1/templates/{name}/build"))
        .header("content-type", "text/plain")
        .body(file.to_owned())
        .send()
        .await
        .expect("build request");
    let st = r.status();
    let text = r.text().await.unwrap_or_default();
    assert_eq!(st, StatusCode::OK, "build {name}: {text}");
    let last: Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("an event");
    assert_eq!(last["event"], "done", "build {name}: {last}");
}

/// A root filesystem of a static busybox (`/bin/busybox`, Debian's `busybox-static`) with
/// applet links and users, imported on node `n` as template `name`.
async fn import_busybox_on(f: &Fleet, n: usize, name: &str) {
    let rootfs = server::rootfs::busybox(server::rootfs::Busybox {
        applets: &["sh", "cat", "echo", "head", "stat", "ls", "sleep"],
        ..Default::default()
    });
    let (st, v) = call(
        to_node(f, n, Method::POST, &format!("/v1/templates/{name}/import"))
            .header("content-type", "application/x-tar")
            .body(rootfs),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "import {name}: {v}");
}

/// Waits until node `node` (name) lists template `name` in its heartbeat.
async fn listed(f: &Fleet, node: &str, name: &str) {
    eventually(
        Duration::from_secs(10),
        "the template in a heartbeat",
        || async {
            let nodes = f.nodes().await;
            let held = nodes.iter().any(|n| {
                n["name"] == node
                    && n["templates"]
                        .as_array()
                        .is_some_and(|t| t.iter().any(|t| t == name))
            });
            server::done_when(held, format!("{nodes:?}"))
        },
    )
    .await;
}

/// The layer store of node `n` (1-based name), and what is in it besides layers.
fn layer_dir(f: &Fleet, n: usize) -> PathBuf {
    f.dir.join(format!("node{n}/templates/layers"))
}

fn temps(dir: &PathBuf) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

async fn fetched_events(f: &Fleet, template: &str) -> Vec<Value> {
    let (st, v) = call(f.req(0, Method::GET, "/v1/events?limit=1000")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "template.fetched" && e["data"]["template"] == template)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn template_built_on_node1_runs_on_node3() {
    let f = Fleet::start(1, &[&["n=1"], &["n=2"], &["n=3"]]);
    // An imported root filesystem and a build on it: two layers. 64 MB of random data, so
    // the fetch rate means something.
    import_busybox_on(&f, 0, "fl-root").await;
    build_on(
        &f,
        0,
        "fl-app",
        "FROM fl-root\nRUN head -c 64000000 /dev/urandom > /big && echo hello-fleet > /hello\n",
    )
    .await;
    listed(&f, "node1", "fl-app").await;
    let node3 = f.node_id("node3").await;

    // Three creates at once on node 3 (by label): one fetch, three sandboxes.
    let started = Instant::now();
    let body = json!({"template": "fl-app", "node_selector": {"n": "3"}, "timeout": 300});
    let (a, b, c) = tokio::join!(
        call(f.req(0, Method::POST, "/v1/sandboxes").json(&body)),
        call(f.req(0, Method::POST, "/v1/sandboxes").json(&body)),
        call(f.req(0, Method::POST, "/v1/sandboxes").json(&body)),
    );
    let first_creates = started.elapsed();
    for (st, v) in [&a, &b, &c] {
        assert_eq!(*st, StatusCode::CREATED, "{v}");
        assert_eq!(v["node"], node3.as_str(), "{v}");
    }
    let id = a.1["id"].as_str().expect("id");
    let v = f.exec(0, id, "cat /hello; stat -c %s /big").await;
    assert_eq!(v["stdout"], "hello-fleet\n64000000\n", "{v}");
    let ev = fetched_events(&f, "fl-app").await;
    assert_eq!(ev.len(), 1, "one fetch for three creates: {ev:?}");
    let d = &ev[0]["data"];
    assert_eq!(d["from"], "node1", "{d}");
    assert_eq!(d["layers"], 2, "{d}");
    let (bytes, ms) = (d["bytes"].as_u64().unwrap(), d["ms"].as_u64().unwrap());
    assert!(bytes > 64_000_000, "{d}");
    eprintln!(
        "fetch of fl-app: {} layer(s), {bytes} bytes in {ms} ms = {:.1} MB/s; three creates took {first_creates:?}",
        d["layers"],
        bytes as f64 / 1e3 / ms.max(1) as f64
    );

    // A second template on the same root: node 3 fetches only the layer it lacks.
    build_on(&f, 0, "fl-app2", "FROM fl-root\nRUN echo two > /two\n").await;
    listed(&f, "node1", "fl-app2").await;
    let (st, v) = call(
        f.req(0, Method::POST, "/v1/sandboxes")
            .json(&json!({"template": "fl-app2", "node_selector": {"n": "3"}, "timeout": 300})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let v = f.exec(0, v["id"].as_str().expect("id"), "cat /two").await;
    assert_eq!(v["stdout"], "two\n", "{v}");
    let ev = fetched_events(&f, "fl-app2").await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(
        ev[0]["data"]["layers"], 1,
        "only the layer node 3 lacked: {ev:?}"
    );

    // The fleet's template list: fl-app once, held by nodes 1 and 3.
    listed(&f, "node3", "fl-app").await;
    let (st, v) = call(f.req(0, Method::GET, "/v1/templates")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let items: Vec<&Value> = v["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .filter(|t| t["name"] == "fl-app")
        .collect();
    assert_eq!(items.len(), 1, "{v}");
    assert_eq!(items[0]["nodes"], json!(["node1", "node3"]), "{v}");
    assert_eq!(items[0]["running_sandboxes"], 3, "{v}");
    let bases = v["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .filter(|t| t["name"] == "base")
        .count();
    assert_eq!(bases, 1, "{v}");

    // The internal routes are not reachable through a control plane, even with the header.
    let r = f
        .req(0, Method::GET, "/internal/fleet/templates/fl-app")
        .header("x-paddock-fleet-internal", "1")
        .send()
        .await
        .expect("request");
    assert_ne!(r.status(), StatusCode::OK);

    // A delete through the control plane deletes it on every node.
    for (_, v) in [&a, &b, &c] {
        let id = v["id"].as_str().expect("id");
        let (st, v) = call(f.req(0, Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
        assert!(st.is_success(), "{v}");
    }
    let (st, v) = call(f.req(0, Method::DELETE, "/v1/templates/fl-app")).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    for n in [0, 2] {
        let (st, _) = call(to_node(&f, n, Method::GET, "/v1/templates/fl-app")).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "node{} still has fl-app", n + 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupted_layer_fails_clearly_and_leaves_nothing() {
    let f = Fleet::start(1, &[&["n=1"], &["n=3"]]);
    import_busybox_on(&f, 0, "fl-root").await;
    build_on(
        &f,
        0,
        "fl-bad",
        "FROM fl-root\nRUN echo original > /hello\n",
    )
    .await;
    listed(&f, "node1", "fl-bad").await;
    let (st, t) = call(to_node(&f, 0, Method::GET, "/v1/templates/fl-bad")).await;
    assert_eq!(st, StatusCode::OK, "{t}");
    let layer = t["layers"]
        .as_array()
        .expect("layers")
        .last()
        .expect("a layer");
    let hex = layer
        .as_str()
        .expect("id")
        .strip_prefix("sha256:")
        .expect("sha256");
    // Corrupt the layer on node 1's disk, after its digest was recorded.
    let file = layer_dir(&f, 1).join(hex).join("hello");
    std::fs::write(&file, "tampered\n").expect("corrupt the layer");

    let (st, v) = call(
        f.req(0, Method::POST, "/v1/sandboxes")
            .json(&json!({"template": "fl-bad", "node_selector": {"n": "3"}})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(v["code"], "template_fetch_failed", "{v}");
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("fl-bad")
            && msg.contains("node1")
            && msg.contains("does not match its digest"),
        "{msg}"
    );
    // Nothing half-imported on node 2 (label n=3): no layer, no temp, no template.
    let dir = layer_dir(&f, 2);
    assert!(!dir.join(hex).exists(), "the corrupted layer was kept");
    assert!(temps(&dir).is_empty(), "{:?}", temps(&dir));
    let (st, _) = call(to_node(&f, 1, Method::GET, "/v1/templates/fl-bad")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // And no sandbox record was left behind for it.
    let (st, v) = call(f.req(0, Method::GET, "/v1/sandboxes")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(
        v["sandboxes"].as_array().is_none_or(|s| s.is_empty()),
        "{v}"
    );
}

/// The node (name) whose heartbeat lists volume `id`.
async fn volume_node(f: &Fleet, id: &str) -> String {
    eventually(
        Duration::from_secs(10),
        "the volume in a heartbeat",
        || async {
            let nodes = f.nodes().await;
            nodes
                .iter()
                .find(|n| {
                    n["usage"]["volumes"]
                        .as_array()
                        .is_some_and(|v| v.iter().any(|x| x == id))
                })
                .map(|n| n["name"].as_str().unwrap_or_default().to_owned())
                .ok_or_else(|| format!("{nodes:?}"))
        },
    )
    .await
}

/// Volumes are per node (`docs/fleet.md`, "Volumes"): creates mounting one go to its node
/// and share its files; requests naming it reach that node; a draining node, volumes on two
/// nodes and a create sent to the wrong node fail with errors naming why.
#[tokio::test(flavor = "multi_thread")]
async fn creates_mounting_a_volume_go_to_its_node() {
    let mut f = Fleet::start(1, &[&[], &[]]);
    let (st, v) = call(
        f.req(0, Method::POST, "/v1/volumes")
            .json(&json!({"name": "data"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let vol = v["id"].as_str().expect("id").to_owned();
    let holder = volume_node(&f, &vol).await;
    let holder_id = f.node_id(&holder).await;
    let (hi, other) = if holder == "node1" { (0, 1) } else { (1, 0) };

    // Four creates mounting it: all on its node (placement would otherwise spread them),
    // and what one writes another reads.
    let body = json!({"volumes": [{"name": "data", "path": "/data"}], "timeout": 300});
    let mut ids = Vec::new();
    for _ in 0..4 {
        let v = f.create(0, body.clone()).await;
        assert_eq!(v["node"], holder_id.as_str(), "{v}");
        ids.push(v["id"].as_str().expect("id").to_owned());
    }
    f.exec(0, &ids[0], "echo shared > /data/f").await;
    let v = f.exec(0, &ids[3], "cat /data/f").await;
    assert_eq!(v["stdout"], "shared\n", "{v}");
    // A request naming the volume reaches its node (which knows its usage and users).
    let (st, v) = call(f.req(0, Method::GET, "/v1/volumes/data")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["mounted_by"].as_array().map(Vec::len), Some(4), "{v}");

    // A create sent straight to the other node is refused clearly.
    let (st, v) = call(to_node(&f, other, Method::POST, "/v1/sandboxes").json(&body)).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("on another node")),
        "{v}"
    );

    // Volumes on two nodes cannot be mounted together.
    let (st, v) =
        call(to_node(&f, other, Method::POST, "/v1/volumes").json(&json!({"name": "elsewhere"})))
            .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    volume_node(&f, v["id"].as_str().expect("id")).await;
    let (st, v) = call(f.req(0, Method::POST, "/v1/sandboxes").json(&json!({
        "volumes": [{"name": "data", "path": "/data"}, {"name": "elsewhere", "path": "/e"}]
    })))
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("volumes of one node only")),
        "{v}"
    );

    // Its node draining: 503 naming the volume, the node and why.
    let (st, v) = call(f.req(0, Method::POST, &format!("/v1/nodes/{holder_id}/drain"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = call(f.req(0, Method::POST, "/v1/sandboxes").json(&body)).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["code"], "no_capacity", "{v}");
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!(
            "volume \"data\" is on node {holder}, which is draining"
        )),
        "{msg}"
    );
    // A create without volumes still goes to the other node.
    let v = f.create(0, json!({})).await;
    assert_ne!(v["node"], holder_id.as_str(), "{v}");

    // Its node dead: 503 naming that.
    f.nodes[hi].kill9();
    eventually(Duration::from_secs(20), "the node dead", || async {
        let (_, v) = call(f.req(0, Method::POST, "/v1/sandboxes").json(&body)).await;
        let msg = v["message"].as_str().unwrap_or_default().to_owned();
        server::done_when(
            msg.contains(&format!(
                "volume \"data\" is on node {holder}, which is dead"
            )) || msg.contains("about to be declared dead"),
            msg,
        )
    })
    .await;
}
