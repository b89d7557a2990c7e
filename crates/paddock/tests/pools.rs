//! Warm pools through the real server (`docs/pools.md`): a pooled create is
//! indistinguishable from a cold one inside (hostname, env, files, processes, limits,
//! network behaviour), no pooled sandbox is handed out twice, hits, misses and memory in
//! `/metrics`, refill after a drain, a template rebuild or delete empties its pool, a restart
//! adopts no pooled sandbox, bad sizes are refused naming the limit.

mod server;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::*;

async fn pool(s: &Server, template: &str) -> Value {
    let (st, v) = call(s.req(Method::GET, &format!("/v1/pools/{template}"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

async fn set_pool(s: &Server, template: &str, body: Value) -> (StatusCode, Value) {
    call(
        s.req(Method::PUT, &format!("/v1/pools/{template}"))
            .json(&body),
    )
    .await
}

/// Waits until `template`'s pool holds `n` ready sandboxes.
async fn ready(s: &Server, template: &str, n: u64) {
    eventually(
        Duration::from_secs(120),
        &format!("pool {template} holding {n}"),
        || async {
            let v = pool(s, template).await;
            done_when(v["ready"].as_u64() == Some(n), v)
        },
    )
    .await;
}

async fn sh(s: &Server, id: &str, cmd: &str) -> String {
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({ "cmd": ["bash", "-c", cmd], "timeout": 60 })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{cmd}: {v}");
    format!(
        "{}{}exit={}",
        v["stdout"].as_str().unwrap_or(""),
        v["stderr"].as_str().unwrap_or(""),
        v["exit_code"]
    )
}

async fn kill(s: &Server, id: &str) {
    let (st, v) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert!(st.is_success(), "{v}");
}

/// Sandbox directories on the host (pooled ones included).
fn host_sandboxes(s: &Server) -> BTreeSet<String> {
    std::fs::read_dir(s.data.join("layers/sandboxes"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect()
}

/// What a sandbox shows of itself, with its own id replaced by `ID`.
const PROBE: &str = r#"
echo "hostname=$(hostname) kernel=$(cat /proc/sys/kernel/hostname) etc=$(cat /etc/hostname 2>&1)"
env | grep -v '^_=' | sort
echo "tmp: $(ls -A /tmp | tr '\n' ' ')"
# Processes started before this probe (pids grow in the sandbox's own pid namespace).
echo "procs:"; for p in /proc/[0-9]*; do [ "${p#/proc/}" -lt $$ ] && { tr '\0' ' ' < $p/cmdline; echo; }; done
echo "cgroup: $(cat /proc/self/cgroup | tr '\n' ' ')"
for f in memory.max memory/memory.limit_in_bytes pids.max pids/pids.max cpu.max cpu/cpu.cfs_quota_us; do
  [ -e /sys/fs/cgroup/$f ] && echo "$f=$(cat /sys/fs/cgroup/$f)"
done
echo "links: $(awk 'NR>2{print $1}' /proc/net/dev | tr '\n' ' ')"
sed 's/10\.200\.[0-9.]*/GW/' /etc/resolv.conf
id
df -B1 / | tail -1 | awk '{print "disk", $2}'
grep -c . /etc/hosts
if timeout 3 bash -c 'echo hi > /dev/tcp/10.77.0.2/8080' 2>/dev/null; then echo reached; else echo unreached; fi
"#;

async fn probe(s: &Server, id: &str) -> String {
    sh(s, id, PROBE).await.replace(id, "ID")
}

/// A network namespace with a TCP listener at 10.77.0.2:8080, reachable from the host
/// (and so from a sandbox whose policy allows it); removed on drop.
struct Peer(std::process::Child);

impl Peer {
    fn start() -> Peer {
        let run = |args: &[&str]| {
            let _ = Command::new("ip").args(args).status();
        };
        run(&["netns", "del", "pdkpooltest"]);
        run(&["link", "del", "pdkpt0"]);
        for args in [
            &["netns", "add", "pdkpooltest"][..],
            &[
                "link", "add", "pdkpt0", "type", "veth", "peer", "name", "pdkpt1",
            ],
            &["link", "set", "pdkpt1", "netns", "pdkpooltest"],
            &["addr", "add", "10.77.0.1/30", "dev", "pdkpt0"],
            &["link", "set", "pdkpt0", "up"],
            &[
                "-n",
                "pdkpooltest",
                "addr",
                "add",
                "10.77.0.2/30",
                "dev",
                "pdkpt1",
            ],
            &["-n", "pdkpooltest", "link", "set", "pdkpt1", "up"],
            &["-n", "pdkpooltest", "link", "set", "lo", "up"],
            &[
                "-n",
                "pdkpooltest",
                "route",
                "add",
                "default",
                "via",
                "10.77.0.1",
            ],
        ] {
            let st = Command::new("ip").args(args).status().expect("ip");
            assert!(st.success(), "ip {args:?}");
        }
        let child = Command::new("ip")
            .args(["netns", "exec", "pdkpooltest", "python3", "-c"])
            .arg(
                "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 s.bind(('10.77.0.2', 8080))\ns.listen(16)\nwhile True:\n  c, _ = s.accept()\n  c.close()\n",
            )
            .spawn()
            .expect("listener");
        Peer(child)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = Command::new("ip").args(["link", "del", "pdkpt0"]).status();
        let _ = Command::new("ip")
            .args(["netns", "del", "pdkpooltest"])
            .status();
    }
}

/// Creates a sandbox with `body` from a pool of one (checking it was a hit), then one cold
/// (pool size 0: a miss), and returns both probes.
async fn pooled_and_cold(s: &Server, body: Value) -> (String, String) {
    let (st, v) = set_pool(s, "base", json!({"size": 1})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    ready(s, "base", 1).await;
    let before = pool(s, "base").await;
    let a = s.create(body.clone()).await;
    let a = a["id"].as_str().expect("id").to_owned();
    let after = pool(s, "base").await;
    assert_eq!(
        after["hits"].as_u64(),
        before["hits"].as_u64().map(|h| h + 1),
        "{after}"
    );
    let (st, v) = set_pool(s, "base", json!({"size": 0})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let b = s.create(body).await;
    let b = b["id"].as_str().expect("id").to_owned();
    let after2 = pool(s, "base").await;
    assert_eq!(
        after2["misses"].as_u64(),
        after["misses"].as_u64().map(|m| m + 1),
        "{after2}"
    );
    let (pa, pb) = (probe(s, &a).await, probe(s, &b).await);
    kill(s, &a).await;
    kill(s, &b).await;
    (pa, pb)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pooled_create_is_indistinguishable_from_a_cold_one() {
    let s = Server::start(&["--pool", "base=1"]);
    let _peer = Peer::start();
    let cases = [
        json!({
            "env": {"FOO": "bar", "PADDOCK_X": "y"},
            "metadata": {"team": "a"},
            // Memory above the default (a smaller one would shrink /tmp, which a pooled
            // sandbox cannot change: a miss, docs/pools.md).
            "memory": "1G",
            "cpus": 0.5,
            "pids": 100,
            "network": {"mode": "none"},
            "timeout": 120,
        }),
        json!({"network": {"mode": "allow", "allow": ["10.77.0.2/32"]}}),
        json!({"network": {"mode": "allow", "allow": ["10.78.0.0/16"]}}),
    ];
    for body in cases {
        let (pooled, cold) = pooled_and_cold(&s, body.clone()).await;
        assert_eq!(pooled, cold, "pooled and cold differ for {body}");
        assert!(pooled.contains("hostname=ID kernel=ID"), "{pooled}");
        let mode = &body["network"]["mode"];
        let allowed = body["network"]["allow"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("10.77.0.2/32")));
        assert!(
            pooled.contains(if allowed { "\nreached" } else { "\nunreached" }),
            "{mode} {body}: {pooled}"
        );
        if mode == "none" {
            assert!(pooled.contains("links: lo: \n"), "{pooled}");
            assert!(pooled.contains("FOO=bar"), "{pooled}");
        }
    }
    assert_no_sandboxes_left(&s, "the comparison").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pooled_sandboxes_are_handed_out_once_refilled_and_counted() {
    let mut s = Server::start(&["--pool", "base=3"]);
    ready(&s, "base", 3).await;
    let pooled_now = host_sandboxes(&s);
    assert_eq!(pooled_now.len(), 3, "{pooled_now:?}");
    // Pooled sandboxes are nobody's: not listed, not reachable by id.
    let (_, list) = call(s.req(Method::GET, "/v1/sandboxes")).await;
    assert_eq!(list["sandboxes"], json!([]), "{list}");
    let some = pooled_now.iter().next().unwrap();
    let (st, _) = call(s.req(Method::GET, &format!("/v1/sandboxes/{some}"))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let creates = (0..6).map(|_| s.create(json!({})));
    let made: Vec<Value> = futures::future::join_all(creates).await;
    let ids: BTreeSet<String> = made
        .iter()
        .map(|v| v["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 6, "two creates got one sandbox: {made:?}");
    let p = pool(&s, "base").await;
    assert_eq!(
        p["hits"].as_u64().unwrap() + p["misses"].as_u64().unwrap(),
        6,
        "{p}"
    );
    assert!(p["hits"].as_u64().unwrap() >= 1, "{p}");
    // Every one of the three pooled before went to one create.
    assert!(
        pooled_now.iter().all(|id| ids.contains(id)),
        "{pooled_now:?} {ids:?}"
    );
    // Refilled after the drain, with fresh sandboxes.
    ready(&s, "base", 3).await;
    let refilled: BTreeSet<String> = host_sandboxes(&s).difference(&ids).cloned().collect();
    assert_eq!(refilled.len(), 3, "{refilled:?}");
    assert!(refilled.is_disjoint(&pooled_now));

    let (st, m) = {
        let r = s.req(Method::GET, "/metrics").send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    };
    assert_eq!(st, StatusCode::OK);
    let metric = |name: &str| -> Option<u64> {
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{template=\"base\"}} ")))
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(metric("paddock_pool_hits_total"), p["hits"].as_u64(), "{m}");
    assert_eq!(
        metric("paddock_pool_misses_total"),
        p["misses"].as_u64(),
        "{m}"
    );
    assert_eq!(metric("paddock_pool_ready"), Some(3), "{m}");
    assert!(
        metric("paddock_pool_sandbox_memory_bytes").is_some_and(|b| b > 0),
        "{m}"
    );
    // Pooled sandboxes are not listed as sandboxes in /metrics either.
    for id in &refilled {
        assert!(!m.contains(id.as_str()), "{id} in /metrics");
    }
    for id in &ids {
        kill(&s, id).await;
    }

    // Bad input, naming the limit.
    for (body, says) in [
        (json!({"size": -1}), "negative"),
        (json!({"size": 100000}), "maximum of 64"),
        (json!({"min": 5, "max": 2}), "above its max"),
        (json!({"size": "3"}), "whole number"),
        (json!({}), "size"),
        (json!({"size": 1, "extra": 1}), "extra"),
    ] {
        let (st, v) = set_pool(&s, "base", body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(v.to_string().contains(says), "{body}: {v}");
    }
    let (st, v) = set_pool(&s, "nosuch", json!({"size": 1})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v.to_string().contains("unknown template"), "{v}");
    let (st, _) = call(s.req(Method::DELETE, "/v1/pools/nosuch")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // kill -9 and restart: no pooled sandbox is adopted, none is left.
    let before = host_sandboxes(&s);
    assert_eq!(before.len(), 3);
    s.kill9();
    s.restart();
    let (_, list) = call(s.req(Method::GET, "/v1/sandboxes")).await;
    assert_eq!(list["sandboxes"], json!([]), "{list}");
    ready(&s, "base", 3).await;
    let after = host_sandboxes(&s);
    assert!(after.is_disjoint(&before), "{before:?} {after:?}");
    for id in &before {
        assert!(leftovers(id).is_empty(), "{id}: {:?}", leftovers(id));
    }

    // Removing the pool destroys its sandboxes.
    let (st, _) = call(s.req(Method::DELETE, "/v1/pools/base")).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert!(host_sandboxes(&s).is_empty(), "{:?}", host_sandboxes(&s));
    for id in &after {
        assert!(leftovers(id).is_empty(), "{id}: {:?}", leftovers(id));
    }
}

async fn build(s: &Server, name: &str, file: &str) {
    let r = s
        .req(Method::POST, &format!("/v1/templates/{name}/build"))
        .header("content-type", "text/plain")
        .body(file.to_owned())
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("\"done\""), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_rebuild_or_delete_empties_its_pool() {
    let s = Server::start(&[]);
    build(&s, "pooltpl", "FROM base\nENV MARK=one\nSTART sleep 1000\n").await;
    let (st, v) = set_pool(&s, "pooltpl", json!({"size": 1})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    ready(&s, "pooltpl", 1).await;
    let old = host_sandboxes(&s);
    assert_eq!(old.len(), 1);
    // The start command runs in the pooled sandbox already.
    let old_id = old.iter().next().unwrap().clone();
    assert!(
        processes_of(&old_id).len() >= 2,
        "{:?}",
        processes_of(&old_id)
    );

    build(&s, "pooltpl", "FROM base\nENV MARK=two\nSTART sleep 1000\n").await;
    // The stale one goes (never handed out), a fresh one comes.
    eventually(
        Duration::from_secs(60),
        "the stale pooled sandbox destroyed",
        || async { done_when(!host_sandboxes(&s).contains(&old_id), old_id.clone()) },
    )
    .await;
    ready(&s, "pooltpl", 1).await;
    let v = s.create(json!({"template": "pooltpl"})).await;
    let id = v["id"].as_str().unwrap().to_owned();
    assert_ne!(id, old_id);
    let out = sh(
        &s,
        &id,
        "echo $MARK; pgrep -x sleep >/dev/null && echo start-running",
    )
    .await;
    assert!(out.contains("two\nstart-running"), "{out}");
    assert_eq!(pool(&s, "pooltpl").await["hits"], 1);
    kill(&s, &id).await;

    // A delete takes the pool's sandboxes with it and leaves nothing.
    ready(&s, "pooltpl", 1).await;
    let pooled = host_sandboxes(&s);
    let (st, v) = call(s.req(Method::DELETE, "/v1/templates/pooltpl")).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    assert!(host_sandboxes(&s).is_empty(), "{:?}", host_sandboxes(&s));
    for id in &pooled {
        assert!(leftovers(id).is_empty(), "{id}: {:?}", leftovers(id));
    }
}

/// Sandboxes on the host (pooled ones included) whose runtime record says network `none`:
/// made without a link.
fn offline_on_host(s: &Server) -> BTreeSet<String> {
    host_sandboxes(s)
        .into_iter()
        .filter(|id| {
            let p = s.data.join(format!("layers/sandboxes/{id}/record.json"));
            std::fs::read(p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|r| r["network"]["mode"] == "none")
        })
        .collect()
}

/// Waits until `template`'s pool holds at least `n` offline slots.
async fn ready_offline(s: &Server, template: &str, n: u64) -> Value {
    eventually(
        Duration::from_secs(120),
        &format!("pool {template} holding {n} offline"),
        || async {
            let v = pool(s, template).await;
            if v["ready_offline"].as_u64() >= Some(n) {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_creates_are_served_by_offline_slots_made_without_a_link() {
    let s = Server::start(&["--pool", "base=2"]);
    ready(&s, "base", 2).await;
    // No demand yet: every slot is networked (E2B's default and the common create).
    let p = pool(&s, "base").await;
    assert_eq!(
        (p["ready_offline"].as_u64(), p["target_offline"].as_u64()),
        (Some(0), Some(0)),
        "{p}"
    );
    // An offline create with only networked slots still hits (its link goes at the
    // hand-out), and makes the demand offline: the refill now makes offline slots.
    let a = s.create(json!({"network": {"mode": "none"}})).await;
    let a = a["id"].as_str().expect("id").to_owned();
    let p = pool(&s, "base").await;
    assert_eq!(p["hits"].as_u64(), Some(1), "{p}");
    assert_eq!(p["target_offline"].as_u64(), Some(2), "{p}");
    ready_offline(&s, "base", 1).await;
    let mut slots = offline_on_host(&s);
    slots.remove(&a);
    assert!(!slots.is_empty(), "no offline slot on the host");
    // The next offline create takes an offline slot (the oldest of its kind): a hit.
    let b = s.create(json!({"network": {"mode": "none"}})).await;
    let b = b["id"].as_str().expect("id").to_owned();
    let after = pool(&s, "base").await;
    assert_eq!(after["hits"].as_u64(), Some(2), "{after}");
    assert!(
        slots.contains(&b),
        "{b} was not one of the offline slots {slots:?}"
    );
    let (_, ev) = call(s.req(Method::GET, &format!("/v1/events?sandbox_id={b}"))).await;
    assert!(ev.to_string().contains("\"pooled\":true"), "{ev}");
    // Inside: loopback only, the offline resolver setup, as a cold `none` sandbox.
    let out = probe(&s, &b).await;
    assert!(out.contains("links: lo: \n"), "{out}");
    assert!(out.contains("hostname=ID kernel=ID"), "{out}");
    let (st, v) = set_pool(&s, "base", json!({"size": 0})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let c = s.create(json!({"network": {"mode": "none"}})).await;
    let c = c["id"].as_str().expect("id").to_owned();
    assert_eq!(
        out,
        probe(&s, &c).await,
        "an offline pooled sandbox differs from a cold one"
    );
    // A networked create with only offline slots ready takes one and gets its link made.
    let (st, v) = set_pool(&s, "base", json!({"size": 1})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    ready_offline(&s, "base", 1).await;
    let hits = pool(&s, "base").await["hits"].as_u64().unwrap();
    let d = s.create(json!({"network": {"mode": "all"}})).await;
    let d = d["id"].as_str().expect("id").to_owned();
    assert_eq!(pool(&s, "base").await["hits"].as_u64(), Some(hits + 1));
    let out = sh(&s, &d, "awk 'NR>2{print $1}' /proc/net/dev | tr '\\n' ' '").await;
    assert!(out.contains("eth0"), "{out}");
    for id in [a, b, c, d] {
        kill(&s, &id).await;
    }
    let (st, _) = call(s.req(Method::DELETE, "/v1/pools/base")).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_no_sandboxes_left(&s, "the offline pool").await;
}
