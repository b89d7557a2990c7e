//! Alerts (`docs/alerts.md`) through a real server and a loopback webhook receiver: an
//! OOM kill fires once (JSON and Slack bodies, a retry after a 500, no second firing while
//! it persists, resolved after its quiet time), failing creates above a rate fire and
//! resolve (and each failed sandbox fires `sandbox_failed`), a sandbox count above a
//! capacity threshold fires and resolves, a budget crossing fires with its event, survives
//! a restart without a second warning and resolves when the budget is raised; bad rules
//! are 400 and store nothing.

mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::{Server, call, eventually, require_root};

/// What the receiver got: path, body, when.
type Got = Arc<Mutex<Vec<(String, Value, Instant)>>>;
/// Requests seen per path.
type Seen = Arc<Mutex<HashMap<String, u32>>>;

/// A webhook receiver on loopback: every POST is recorded; paths starting with
/// `/fail-first` answer 500 to their first request.
async fn receiver() -> (SocketAddr, Got) {
    use axum::extract::{Path, State};
    let got: Got = Arc::default();
    let seen: Seen = Arc::default();
    let app =
        axum::Router::new()
            .route(
                "/{*path}",
                axum::routing::post(
                    |State((got, seen)): State<(Got, Seen)>,
                     Path(path): Path<String>,
                     body: String| async move {
                        let n = {
                            let mut s = seen.lock().unwrap();
                            let n = s.entry(path.clone()).or_default();
                            *n += 1;
                            *n
                        };
                        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                        got.lock().unwrap().push((path.clone(), v, Instant::now()));
                        if path.starts_with("fail-first") && n == 1 {
                            StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            StatusCode::NO_CONTENT
                        }
                    },
                ),
            )
            .with_state((got.clone(), seen));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    (addr, got)
}

/// The bodies received on `path`.
fn at(got: &Got, path: &str) -> Vec<Value> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|(p, _, _)| p == path)
        .map(|(_, v, _)| v.clone())
        .collect()
}

async fn add_rule(s: &Server, key: &str, body: Value) -> String {
    let (st, v) = call(s.req_as(key, Method::POST, "/v1/alerts/rules").json(&body)).await;
    assert_eq!(st, StatusCode::CREATED, "{body}: {v}");
    v["id"].as_str().expect("id").to_owned()
}

/// The current firings (admin view) of rule `id`.
async fn firings_of(s: &Server, id: &str) -> Vec<Value> {
    let (st, v) = call(s.req(Method::GET, "/v1/alerts?state=all&since=0")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["rule_id"] == id)
        .cloned()
        .collect()
}

async fn event_count(s: &Server, kind: &str) -> usize {
    let (_, v) = call(s.req(Method::GET, "/v1/events?limit=1000")).await;
    v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == kind)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oom_kill_fires_once_retried_in_json_and_slack_then_resolves() {
    require_root("the alerts test");
    let (addr, got) = receiver().await;
    let s = Server::start(&["--metrics-interval", "1s", "--allow-private-webhooks"]);
    let hook = |p: &str| format!("http://{addr}/{p}");

    // Bad rules: 400 naming the problem, nothing stored.
    let (_, op) = s.new_key(json!({"name": "op", "role": "operator"})).await;
    let (_, viewer) = s.new_key(json!({"name": "v", "role": "viewer"})).await;
    for (bad, says) in [
        (
            json!({"kind": "disk_on_fire", "url": hook("x")}),
            "unknown kind",
        ),
        (
            json!({"kind": "sandbox_oom", "url": "ftp://example.com/x"}),
            "http or https",
        ),
        (
            json!({"kind": "sandbox_oom", "url": "not a url"}),
            "webhook URL",
        ),
        (
            json!({"kind": "capacity", "url": hook("x"), "params": {"resource": "memory", "threshold": 140}}),
            "threshold",
        ),
        (
            json!({"kind": "create_failures", "url": hook("x"), "params": {"count": -1}}),
            "count",
        ),
        (
            json!({"kind": "sandbox_oom", "url": hook("x"), "format": "xml"}),
            "format",
        ),
        (
            json!({"kind": "sandbox_oom", "url": hook("x"), "params": {"quiet": 1}}),
            "params.quiet",
        ),
        (
            json!({"kind": "sandbox_oom", "url": hook("x"), "colour": "red"}),
            "colour",
        ),
    ] {
        let (st, v) = call(s.req(Method::POST, "/v1/alerts/rules").json(&bad)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{bad}: {msg}");
    }
    let (st, v) = call(
        s.req_as(&op, Method::POST, "/v1/alerts/rules")
            .json(&json!({"kind": "capacity", "url": hook("x"), "params": {"resource": "disk", "threshold": 50}})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "capacity is admins' only: {v}");
    let (st, _) = call(
        s.req_as(&viewer, Method::POST, "/v1/alerts/rules")
            .json(&json!({"kind": "sandbox_oom", "url": hook("x")})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (_, v) = call(s.req(Method::GET, "/v1/alerts/rules")).await;
    assert_eq!(v["rules"], json!([]), "nothing stored: {v}");

    // Two rules on the admin's tenant: JSON (persists 10 min) and Slack (its receiver
    // fails the first delivery; resolves after 2 s without another kill).
    let json_rule = add_rule(
        &s,
        &s.admin_key,
        json!({"kind": "sandbox_oom", "url": hook("oom"), "params": {"quiet_secs": 600}}),
    )
    .await;
    let slack_rule = add_rule(
        &s,
        &s.admin_key,
        json!({"kind": "sandbox_oom", "url": hook("fail-first-slack"), "format": "slack", "params": {"quiet_secs": 2}}),
    )
    .await;
    // A viewer reads rules, without the URL's path.
    let (_, v) = call(s.req_as(&viewer, Method::GET, "/v1/alerts/rules")).await;
    assert!(
        v["rules"].as_array().is_some_and(|r| r.is_empty()),
        "another tenant's: {v}"
    );

    let sbx = s.create(json!({"memory": "64M"})).await;
    let id = sbx["id"].as_str().expect("id").to_owned();
    let bomb =
        "b = bytearray(200 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('survived')";
    let asked_at = Instant::now();
    let (st, r) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"cmd": ["python3", "-c", bomb], "timeout": 60})),
    )
    .await;
    let answered_at = Instant::now();
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["oom_killed"], true, "{r}");

    let first = eventually(Duration::from_secs(20), "the OOM alert (JSON)", || async {
        let v = at(&got, "oom");
        if v.is_empty() {
            Err("nothing yet".to_owned())
        } else {
            Ok(v[0].clone())
        }
    })
    .await;
    let delivered_at = got
        .lock()
        .unwrap()
        .iter()
        .find(|(p, _, _)| p == "oom")
        .map(|(_, _, t)| *t)
        .expect("received");
    // The kill is recorded (and the alert on its way) before the exec answers: the latency
    // from the kill is at most the exec's whole time.
    eprintln!(
        "alerts: OOM exec asked to delivery {:?}; exec answered {:?} after asking",
        delivered_at.duration_since(asked_at),
        answered_at.duration_since(asked_at)
    );
    assert_eq!(first["status"], "firing", "{first}");
    assert_eq!(first["kind"], "sandbox_oom");
    assert_eq!(first["sandbox_id"], id.as_str(), "{first}");
    assert!(
        first["summary"].as_str().unwrap_or("").contains(&id),
        "{first}"
    );
    assert_eq!(first["dedup_key"], format!("{json_rule}/sandbox:{id}"));

    // Slack: the first attempt got a 500, the retry the same `{"text"}` body.
    let slack = eventually(
        Duration::from_secs(20),
        "the OOM alert (Slack, retried)",
        || async {
            let v = at(&got, "fail-first-slack");
            if v.len() >= 2 {
                Ok(v)
            } else {
                Err(format!("{v:?}"))
            }
        },
    )
    .await;
    assert_eq!(slack[0], slack[1], "the retry is the same message");
    let text = slack[1]["text"].as_str().expect("slack text");
    assert!(text.starts_with("[FIRING]") && text.contains(&id), "{text}");
    assert_eq!(
        slack[1].as_object().map(|o| o.len()),
        Some(1),
        "{}",
        slack[1]
    );

    // The Slack rule resolves 2 s after the kill.
    eventually(
        Duration::from_secs(30),
        "the Slack rule resolved",
        || async {
            let v = at(&got, "fail-first-slack");
            match v.last().and_then(|m| m["text"].as_str()) {
                Some(t) if t.starts_with("[RESOLVED]") => Ok(()),
                _ => Err(format!("{v:?}")),
            }
        },
    )
    .await;

    // A second kill, by a background process the server does not wait for (found by the
    // cgroup watch): no second JSON firing, but the firing is seen again.
    let seen0 = firings_of(&s, &json_rule).await[0]["last_seen_at"].clone();
    let second_at = Instant::now();
    let (st, r) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({
                "cmd": ["sh", "-c", "(sleep 1; exec python3 -c \"$0\") >/dev/null 2>&1 &", bomb],
            })),
    )
    .await;
    assert_eq!(
        (st, r["exit_code"].as_i64()),
        (StatusCode::OK, Some(0)),
        "{r}"
    );
    eventually(Duration::from_secs(30), "the second kill seen", || async {
        let f = firings_of(&s, &json_rule).await;
        if f.len() == 1 && f[0]["last_seen_at"] != seen0 && f[0]["state"] == "firing" {
            Ok(())
        } else {
            Err(format!("{f:?}"))
        }
    })
    .await;
    eprintln!(
        "alerts: detached kill asked to seen by the cgroup watch: {:?}",
        second_at.elapsed()
    );
    let (_, ev) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/logs"))).await;
    assert!(
        ev["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["kind"] == "oom" && e["data"]["oom_kills"].as_u64() >= Some(2)),
        "the watch's oom event: {ev}"
    );
    assert_eq!(
        at(&got, "oom").len(),
        1,
        "deduplicated: {:?}",
        at(&got, "oom")
    );
    // The Slack rule had resolved: the second kill is a new episode with the same key.
    eventually(
        Duration::from_secs(30),
        "a second Slack episode",
        || async {
            let f = firings_of(&s, &slack_rule).await;
            if f.len() == 2 && f.iter().any(|a| a["state"] == "resolved") {
                Ok(())
            } else {
                Err(format!("{f:?}"))
            }
        },
    )
    .await;
    let texts: Vec<String> = at(&got, "fail-first-slack")
        .iter()
        .filter_map(|m| m["text"].as_str().map(str::to_owned))
        .collect();
    assert!(
        texts.iter().filter(|t| t.starts_with("[FIRING]")).count() >= 2,
        "{texts:?}"
    );

    // What is firing, through the API and the CLI.
    let (_, v) = call(s.req(Method::GET, "/v1/alerts")).await;
    let firing = v["alerts"].as_array().expect("alerts");
    assert!(
        firing
            .iter()
            .any(|a| a["rule_id"] == json_rule.as_str() && a["subject"] == format!("sandbox:{id}")),
        "{v}"
    );
    let bin = env!("CARGO_BIN_EXE_paddock");
    let cli = |args: &[&str]| {
        std::process::Command::new(bin)
            .args(args)
            .env("PADDOCK_URL", &s.url)
            .env("PADDOCK_API_KEY", &s.admin_key)
            .output()
            .expect("paddock alerts")
    };
    let out = cli(&["alerts", "ls"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&id) && text.contains("firing"),
        "{text}"
    );
    let out = cli(&["alerts", "rules"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&json_rule));
    let out = cli(&["alerts", "test", &json_rule]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(at(&got, "oom").iter().any(|m| m["status"] == "test"));
    let out = cli(&[
        "alerts",
        "add",
        "sandbox_failed",
        &hook("cli"),
        "--param",
        "quiet_secs=60",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli_rule = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = cli(&["alerts", "rm", &cli_rule]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (st, _) = call(s.req(Method::GET, &format!("/v1/alerts/rules/{cli_rule}"))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_creates_above_a_rate_fire_then_resolve() {
    require_root("the alerts test");
    let (addr, got) = receiver().await;
    let s = Server::start(&["--metrics-interval", "1s", "--allow-private-webhooks"]);
    let r = s
        .req(Method::POST, "/v1/templates/boom/build")
        .header("content-type", "text/plain")
        .body("FROM base\nSTART exit 1\nREADY --port 8000\n")
        .send()
        .await
        .expect("build");
    assert_eq!(r.status(), StatusCode::OK);
    let _ = r.text().await;
    let rule = add_rule(
        &s,
        &s.admin_key,
        json!({"kind": "create_failures", "url": format!("http://{addr}/creates"),
               "params": {"count": 3, "window_secs": 10}}),
    )
    .await;
    let failed_rule = add_rule(
        &s,
        &s.admin_key,
        json!({"kind": "sandbox_failed", "url": format!("http://{addr}/failed")}),
    )
    .await;
    let mut third_failed = None;
    for i in 0..4 {
        let (st, v) = call(
            s.req(Method::POST, "/v1/sandboxes")
                .json(&json!({"template": "boom"})),
        )
        .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        if i == 2 {
            third_failed = Some(Instant::now());
        }
        if i == 1 {
            // Two failures are under the rate.
            assert!(firings_of(&s, &rule).await.is_empty());
        }
    }
    let fired = eventually(
        Duration::from_secs(20),
        "the create-failure alert",
        || async {
            let v = at(&got, "creates");
            if v.is_empty() {
                Err("nothing".to_owned())
            } else {
                Ok(v[0].clone())
            }
        },
    )
    .await;
    let t = got
        .lock()
        .unwrap()
        .iter()
        .find(|(p, _, _)| p == "creates")
        .map(|(_, _, t)| *t);
    if let (Some(t), Some(third)) = (t, third_failed) {
        eprintln!(
            "alerts: third failed create answered to delivery: {:?} (0: before the answer)",
            t.saturating_duration_since(third)
        );
    }
    assert_eq!(fired["status"], "firing", "{fired}");
    assert!(
        fired["data"]["failures"].as_u64().unwrap_or(0) >= 3,
        "{fired}"
    );
    // Resolved once the window holds fewer than three; one firing for the four failures.
    let msgs = eventually(
        Duration::from_secs(40),
        "the create-failure alert resolved",
        || async {
            let v = at(&got, "creates");
            if v.last().is_some_and(|m| m["status"] == "resolved") {
                Ok(v)
            } else {
                Err(format!("{v:?}"))
            }
        },
    )
    .await;
    assert_eq!(msgs.len(), 2, "one firing, one resolution: {msgs:?}");
    // Each failed sandbox fired the sandbox_failed rule once, naming it and its error.
    let failed = at(&got, "failed");
    assert_eq!(failed.len(), 4, "{failed:?}");
    for m in &failed {
        assert_eq!(m["rule_id"], failed_rule.as_str());
        assert!(m["sandbox_id"].is_string(), "{m}");
        assert!(m["summary"].as_str().unwrap_or("").contains("start"), "{m}");
    }
    assert_eq!(msgs[0]["dedup_key"], msgs[1]["dedup_key"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_crossing_fires_once_across_a_restart_and_resolves_when_raised() {
    require_root("the alerts test");
    let (addr, got) = receiver().await;
    let mut s = Server::start(&["--metrics-interval", "1s", "--allow-private-webhooks"]);
    let (dev_id, dev) = s.new_key(json!({"name": "dev"})).await;
    let (_, keys) = call(s.req(Method::GET, "/v1/keys")).await;
    let tenant = keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["id"] == dev_id.as_str())
        .and_then(|k| k["tenant"].as_str())
        .expect("tenant")
        .to_owned();
    let budget = format!("/v1/usage/budgets/{tenant}");
    let (st, _) = call(
        s.req(Method::PUT, "/v1/usage/prices")
            .json(&json!({"cpu_second": 100})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = call(
        s.req(Method::PUT, &budget)
            .json(&json!({"amount": 1000, "warn_at": 0.01})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let rule = add_rule(
        &s,
        &s.admin_key,
        json!({"kind": "budget", "tenant": tenant, "url": format!("http://{addr}/budget")}),
    )
    .await;
    let sbx = s.create_as(&dev, json!({})).await;
    let id = sbx["id"].as_str().expect("id").to_owned();
    let burn = |secs: u32| {
        s.req_as(&dev, Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"command": format!("timeout {secs} sh -c 'while :; do :; done'; true")}))
    };
    let (st, v) = call(burn(2)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let fired = eventually(Duration::from_secs(30), "the budget alert", || async {
        let v = at(&got, "budget");
        if v.is_empty() {
            Err("nothing".to_owned())
        } else {
            Ok(v[0].clone())
        }
    })
    .await;
    assert_eq!(fired["status"], "firing", "{fired}");
    assert_eq!(fired["subject"], format!("tenant:{tenant}"), "{fired}");
    assert_eq!(event_count(&s, "budget_warning").await, 1);

    // A restart (the sandbox goes, its usage stays): the crossing is remembered, so neither
    // the event nor the alert comes again while more is spent.
    s.stop();
    s.restart();
    let sbx = s.create_as(&dev, json!({})).await;
    let id2 = sbx["id"].as_str().expect("id").to_owned();
    let (_, before) = call(s.req(Method::GET, "/v1/usage/budgets")).await;
    let spent0 = before["budgets"][&tenant]["spent"].as_f64().unwrap_or(0.0);
    let (st, v) = call(
        s.req_as(&dev, Method::POST, &format!("/v1/sandboxes/{id2}/exec"))
            .json(&json!({"command": "timeout 3 sh -c 'while :; do :; done'; true"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    eventually(
        Duration::from_secs(30),
        "more spent after the restart",
        || async {
            let (_, v) = call(s.req(Method::GET, "/v1/usage/budgets")).await;
            let spent = v["budgets"][&tenant]["spent"].as_f64().unwrap_or(0.0);
            if spent > spent0 + 1.0 {
                Ok(())
            } else {
                Err(format!("{spent} after {spent0}"))
            }
        },
    )
    .await;
    // The periodic check has run at least once since the spend was metered.
    let firings = firings_of(&s, &rule).await;
    assert_eq!(firings.len(), 1, "{firings:?}");
    assert_eq!(
        event_count(&s, "budget_warning").await,
        1,
        "once per period"
    );
    assert_eq!(at(&got, "budget").len(), 1, "{:?}", at(&got, "budget"));

    // Raising the budget clears it.
    let raised_at = Instant::now();
    let (st, _) = call(s.req(Method::PUT, &budget).json(&json!({"amount": 1e9}))).await;
    assert_eq!(st, StatusCode::OK);
    let resolved = eventually(
        Duration::from_secs(30),
        "the budget alert resolved",
        || async {
            let v = at(&got, "budget");
            match v.last() {
                Some(m) if m["status"] == "resolved" => Ok(m.clone()),
                _ => Err(format!("{v:?}")),
            }
        },
    )
    .await;
    eprintln!(
        "alerts: budget raised to resolved delivered: {:?}",
        raised_at.elapsed()
    );
    assert_eq!(resolved["dedup_key"], fired["dedup_key"]);
    assert!(resolved["resolved_at"].is_string(), "{resolved}");
}

#[tokio::test(flavor = "multi_thread")]
async fn capacity_above_a_count_fires_and_resolves() {
    require_root("the alerts test");
    let (addr, got) = receiver().await;
    let s = Server::start(&["--metrics-interval", "1s", "--allow-private-webhooks"]);
    add_rule(
        &s,
        &s.admin_key,
        json!({"kind": "capacity", "url": format!("http://{addr}/cap"),
               "params": {"resource": "sandboxes", "threshold": 1}}),
    )
    .await;
    let a = s.create(json!({})).await;
    let _b = s.create(json!({})).await;
    let fired = eventually(Duration::from_secs(20), "the capacity alert", || async {
        let v = at(&got, "cap");
        if v.is_empty() {
            Err("nothing".to_owned())
        } else {
            Ok(v[0].clone())
        }
    })
    .await;
    assert_eq!(fired["status"], "firing", "{fired}");
    assert_eq!(fired["subject"], "host:host:sandboxes", "{fired}");
    assert_eq!(fired["data"]["value"], 2.0, "{fired}");
    let id = a["id"].as_str().expect("id");
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert!(st.is_success());
    eventually(
        Duration::from_secs(20),
        "the capacity alert resolved",
        || async {
            let v = at(&got, "cap");
            if v.len() == 2 && v[1]["status"] == "resolved" {
                Ok(())
            } else {
                Err(format!("{v:?}"))
            }
        },
    )
    .await;
}
