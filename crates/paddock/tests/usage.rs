//! Cost (`docs/cost.md`): a sandbox burning CPU is metered into `/v1/usage`, priced by the
//! price table; disk GiB-hours and egress bytes are metered and priced; an invalid table
//! is a 400 naming the entry and changes nothing; bad report queries are 400; `paddock
//! usage` prints the report.

mod server;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::{Server, call, eventually, require_root};

#[tokio::test(flavor = "multi_thread")]
async fn cpu_is_metered_priced_and_reported_and_bad_input_changes_nothing() {
    require_root("the usage test");
    let s = Server::start(&["--metrics-interval", "1s"]);
    let (_, dev) = s.new_key(json!({"name": "dev"})).await;
    let sbx = s
        .create_as(&dev, json!({"metadata": {"app": "cost"}}))
        .await;
    let id = sbx["id"].as_str().expect("id").to_owned();
    let (st, v) = call(
        s.req_as(&dev, Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"command": "timeout 3 sh -c 'while :; do :; done'; true"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");

    // Prices: an invalid table names its entry and leaves the old one.
    let (st, v) = call(
        s.req(Method::PUT, "/v1/usage/prices")
            .json(&json!({"cpu_second": 2.0, "memory_gib_hour": 1.0})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    for (bad, entry) in [
        (json!({"cpu_second": -1}), "cpu_second"),
        (json!({"gpu_hour": 1}), "gpu_hour"),
        (json!({"egress_gib": "free"}), "egress_gib"),
    ] {
        let (st, v) = call(s.req(Method::PUT, "/v1/usage/prices").json(&bad)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(msg.contains(entry), "{bad}: {msg}");
    }
    let (st, v) = call(
        s.req_as(&dev, Method::PUT, "/v1/usage/prices")
            .json(&json!({"cpu_second": 0})),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (_, p) = call(s.req_as(&dev, Method::GET, "/v1/usage/prices")).await;
    assert_eq!(p["cpu_second"], 2.0, "unchanged: {p}");

    // The burn (3 s of a busy loop, under the sandbox's CPU limit on a shared host) shows
    // up, priced, for the developer who owns it.
    let report: Value = eventually(Duration::from_secs(30), "CPU metered", || async {
        let (st, v) = call(s.req_as(&dev, Method::GET, "/v1/usage?by=sandbox")).await;
        if st != StatusCode::OK {
            return Err(format!("{st} {v}"));
        }
        let cpu = v["groups"][0]["cpu_seconds"].as_f64().unwrap_or(0.0);
        if cpu >= 0.3 {
            Ok(v)
        } else {
            Err(format!("{v}"))
        }
    })
    .await;
    let g = &report["groups"][0];
    assert_eq!(g["sandbox"], id.as_str());
    let cpu = g["cpu_seconds"].as_f64().expect("cpu");
    let mem = g["memory_gib_hours"].as_f64().expect("mem");
    assert!(cpu < 10.0, "{cpu}");
    assert!(mem > 0.0, "{g}");
    let cost = g["cost"].as_f64().expect("cost");
    assert!((cost - (cpu * 2.0 + mem)).abs() < 1e-3, "{g}");
    for by in ["key", "tenant", "template"] {
        let (st, v) = call(s.req(Method::GET, &format!("/v1/usage?by={by}"))).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert!(
            v["groups"].as_array().is_some_and(|g| !g.is_empty()),
            "{by}: {v}"
        );
    }
    // Another tenant's developer sees none of it.
    let (_, other) = s.new_key(json!({"name": "other"})).await;
    let (_, v) = call(s.req_as(&other, Method::GET, "/v1/usage")).await;
    assert_eq!(v["groups"].as_array().map(Vec::len), Some(0), "{v}");

    // Bad queries.
    for q in [
        "by=colour",
        "from=yesterday",
        "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        "from=0",
        "sandbox=x",
    ] {
        let (st, v) = call(s.req(Method::GET, &format!("/v1/usage?{q}"))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {v}");
    }

    // The CLI's table and JSON.
    let bin = env!("CARGO_BIN_EXE_paddock");
    let out = std::process::Command::new(bin)
        .args(["usage", "--by", "sandbox"])
        .env("PADDOCK_URL", &s.url)
        .env("PADDOCK_API_KEY", &dev)
        .output()
        .expect("paddock usage");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&id) && text.contains("TOTAL") && text.contains("CPU-S"),
        "{text}"
    );
    let out = std::process::Command::new(bin)
        .args(["usage", "--json", "--by", "template"])
        .env("PADDOCK_URL", &s.url)
        .env("PADDOCK_API_KEY", &dev)
        .output()
        .expect("paddock usage --json");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["by"], "template");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spent_budget_warns_then_refuses_creates_and_bad_budgets_change_nothing() {
    require_root("the usage test");
    let s = Server::start(&["--metrics-interval", "1s"]);
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
    for (bad, says) in [
        (json!({"amount": -5}), "amount"),
        (json!({"amount": 1, "warn_at": 1.5}), "warn_at"),
        (json!({"amount": 1, "period": "week"}), "period"),
    ] {
        let (st, v) = call(s.req(Method::PUT, &budget).json(&bad)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(
            v["message"].as_str().unwrap_or_default().contains(says),
            "{v}"
        );
    }
    let (st, _) = call(
        s.req(Method::PUT, "/v1/usage/budgets/tnt_nosuch")
            .json(&json!({"amount": 1})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = call(
        s.req_as(&dev, Method::PUT, &budget)
            .json(&json!({"amount": 1})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (_, v) = call(s.req(Method::GET, "/v1/usage/budgets")).await;
    assert_eq!(v["budgets"], json!({}), "nothing was set: {v}");

    // A CPU-second costs 100, the budget is 10: a fraction of a second warns, a second
    // exceeds it.
    let (st, _) = call(
        s.req(Method::PUT, "/v1/usage/prices")
            .json(&json!({"cpu_second": 100})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = call(
        s.req(Method::PUT, &budget)
            .json(&json!({"amount": 10, "warn_at": 0.5})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let sbx = s.create_as(&dev, json!({})).await;
    let id = sbx["id"].as_str().expect("id").to_owned();
    let (st, v) = call(
        s.req_as(&dev, Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"command": "timeout 3 sh -c 'while :; do :; done'; true"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    eventually(Duration::from_secs(30), "both budget events", || async {
        let (_, v) = call(s.req_as(&dev, Method::GET, "/v1/events")).await;
        let kinds: Vec<String> = v["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["type"].as_str().or(e["kind"].as_str()).map(str::to_owned))
            .collect();
        if kinds.iter().any(|k| k == "budget_warning")
            && kinds.iter().any(|k| k == "budget_exceeded")
        {
            Ok(())
        } else {
            Err(format!("{kinds:?}"))
        }
    })
    .await;
    let (st, v) = call(
        s.req_as(&dev, Method::POST, "/v1/sandboxes")
            .json(&json!({})),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("quota_exceeded")),
        "{v}"
    );
    let (_, v) = call(s.req_as(&dev, Method::GET, "/v1/usage/budgets")).await;
    assert!(
        v["budgets"][&tenant]["spent"].as_f64().unwrap_or(0.0) >= 10.0,
        "{v}"
    );
    // Raising the budget lets creates through again.
    let (st, _) = call(s.req(Method::PUT, &budget).json(&json!({"amount": 1e9}))).await;
    assert_eq!(st, StatusCode::OK);
    let again = s.create_as(&dev, json!({})).await;
    assert!(again["id"].is_string());
}

/// Disk GiB-hours (the layer's referenced bytes, from its qgroup) and egress bytes (what
/// the sandbox sends out of its link, counted on the host end of its veth) are metered and
/// priced. The egress is 2 MiB of UDP to 198.18.0.1, a blocked range: the host drops it
/// after it crossed the link, so nothing leaves the machine, and the count is still what
/// the sandbox sent.
#[tokio::test(flavor = "multi_thread")]
async fn disk_and_egress_are_metered_and_priced() {
    require_root("the usage test");
    let s = Server::start(&["--metrics-interval", "1s"]);
    let (st, v) = call(
        s.req(Method::PUT, "/v1/usage/prices")
            .json(&json!({"disk_gib_hour": 1000, "egress_gib": 1000})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let sbx = s
        .create(json!({"network": {"mode": "allow", "allow": ["example.com"]}}))
        .await;
    let id = sbx["id"].as_str().expect("id").to_owned();
    // One packet first, so the sandbox has resolved its gateway's address before the
    // burst (packets waiting for that are queued only up to a small limit, then dropped),
    // then 2 MiB paced so no queue overflows on a busy host.
    let send = "import socket, time\n\
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                s.sendto(b'x', ('198.18.0.1', 9))\n\
                time.sleep(1)\n\
                for i in range(2048):\n    s.sendto(b'x' * 1024, ('198.18.0.1', 9))\n    \
                if i % 64 == 0: time.sleep(0.01)\n";
    let script = format!(
        "dd if=/dev/zero of=$HOME/blob bs=1M count=50 2>/dev/null && sync && python3 -c \"{send}\""
    );
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"cmd": ["sh", "-c", script], "timeout": 60})),
    )
    .await;
    assert_eq!(
        (st, v["exit_code"].as_i64()),
        (StatusCode::OK, Some(0)),
        "{v}"
    );

    // 40 MiB held for 3 s is 3.3e-5 GiB-hours: far more than the template's own files
    // would add up to in the test's time.
    let min_disk = 40.0 / 1024.0 * 3.0 / 3600.0;
    let g = eventually(
        Duration::from_secs(60),
        "disk and egress metered",
        || async {
            let (st, v) = call(s.req(Method::GET, "/v1/usage?by=sandbox")).await;
            if st != StatusCode::OK {
                return Err(format!("{st} {v}"));
            }
            let g = v["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|g| g["sandbox"] == id.as_str())
                .cloned()
                .unwrap_or(Value::Null);
            let disk = g["disk_gib_hours"].as_f64().unwrap_or(0.0);
            let egress = g["egress_bytes"].as_i64().unwrap_or(0);
            if disk >= min_disk && egress >= 2 << 20 {
                Ok(g)
            } else {
                Err(format!("{g}"))
            }
        },
    )
    .await;
    let disk = g["disk_gib_hours"].as_f64().expect("disk");
    let egress = g["egress_bytes"].as_i64().expect("egress");
    eprintln!("usage: {disk} disk GiB-hours, {egress} egress bytes");
    // The UDP payloads plus their headers, and little else (DNS, nothing more).
    assert!(egress < 4 << 20, "{g}");
    let cost = g["cost"].as_f64().expect("cost");
    let want = disk * 1000.0 + egress as f64 / (1u64 << 30) as f64 * 1000.0;
    assert!((cost - want).abs() < 1e-3, "{cost} against {want}: {g}");
    let (_, v) = call(s.req(Method::GET, "/v1/usage")).await;
    assert_eq!(
        v["metered"],
        json!([
            "cpu_seconds",
            "memory_gib_hours",
            "disk_gib_hours",
            "egress_bytes"
        ])
    );
}
