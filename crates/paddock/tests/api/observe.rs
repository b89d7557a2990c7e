//! What the server reports: stats history, host status, metrics, and the E2B domain.

use super::*;

/// `GET .../stats?history=true` adds the samples taken every `--metrics-interval`: oldest
/// first, CPU time never going back; without the parameter there is no history, and a bad
/// value is a 400.
#[tokio::test(flavor = "multi_thread")]
async fn stats_history_is_sampled() {
    let s = Server::start(&["--metrics-interval", "1s"]);
    let v = s.create(json!({})).await;
    let id = v["id"].as_str().expect("id").to_owned();
    let url = format!("/v1/sandboxes/{id}/stats");
    let mut got = Value::Null;
    for _ in 0..100 {
        let (st, v) = call(s.req(Method::GET, &format!("{url}?history=true"))).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        got = v;
        if got["history"].as_array().is_some_and(|h| h.len() >= 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let h = got["history"].as_array().expect("history");
    assert!(h.len() >= 3, "{got}");
    let at = |x: &Value| {
        time::OffsetDateTime::parse(
            x["at"].as_str().expect("at"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("an RFC 3339 time")
    };
    for w in h.windows(2) {
        assert!(at(&w[0]) < at(&w[1]), "{got}");
        assert!(
            w[0]["cpu_usage_ns"].as_u64() <= w[1]["cpu_usage_ns"].as_u64(),
            "{got}"
        );
        assert!(
            w[1]["memory_bytes"].as_u64().is_some_and(|m| m > 0),
            "{got}"
        );
    }
    let (_, plain) = call(s.req(Method::GET, &url)).await;
    assert!(plain.get("history").is_none(), "{plain}");
    for bad in ["history=maybe", "histroy=true"] {
        let (st, v) = call(s.req(Method::GET, &format!("{url}?{bad}"))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
}

/// `GET /v1/status` reports the host's load and what the sandboxes use: a sandbox spinning
/// a CPU shows up in `sandbox_cpu_cores` and `sandbox_memory_bytes` after two samples.
#[tokio::test(flavor = "multi_thread")]
async fn status_reports_host_and_sandbox_load() {
    let s = Server::start(&["--metrics-interval", "1s"]);
    let (st, v) = call(s.req(Method::GET, "/v1/status")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let load = &v["load"];
    assert!(load["cpus"].as_u64().unwrap_or(0) >= 1, "{v}");
    assert_eq!(load["load_avg"].as_array().map(Vec::len), Some(3), "{v}");
    let total = load["memory_total_bytes"].as_u64().expect("memory total");
    let avail = load["memory_available_bytes"]
        .as_u64()
        .expect("memory available");
    assert!(avail > 0 && avail <= total, "{v}");
    let disk_total = load["disk_total_bytes"].as_u64().expect("disk total");
    assert!(disk_total > 0 && load["disk_free_bytes"].as_u64() <= Some(disk_total));
    assert_eq!(load["sandbox_memory_bytes"], 0, "no sandbox yet: {v}");

    let id = s.create(json!({})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (st, r) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"command": "while :; do :; done", "background": true})),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{r}");
    let load = eventually(
        Duration::from_secs(20),
        "the busy sandbox shows",
        || async {
            let (_, v) = call(s.req(Method::GET, "/v1/status")).await;
            if v["load"]["sandbox_cpu_cores"].as_f64().unwrap_or(0.0) > 0.3 {
                Ok(v["load"].clone())
            } else {
                Err(v)
            }
        },
    )
    .await;
    assert!(
        load["sandbox_memory_bytes"].as_u64().unwrap_or(0) > 0,
        "{load}"
    );
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

/// The domain told to E2B clients carries the port clients reach the server on (so
/// `get_host` names are usable URLs); behind a proxy (`--public-url https://...`) it is the
/// bare `--domain`, and REST port URLs follow the same rule.
#[tokio::test(flavor = "multi_thread")]
async fn e2b_domain_follows_the_public_url() {
    let s = Server::start(&["--domain", "sbx.test"]);
    let port = s.url.rsplit(':').next().expect("port").to_owned();
    let v = e2b_create(&s).await;
    assert_eq!(v["domain"], format!("sbx.test:{port}"), "{v}");
    let id = v["sandboxID"].as_str().expect("id");
    let (_, ports) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/ports/8000"))).await;
    assert_eq!(ports["url"], format!("http://8000-{id}.sbx.test:{port}/"));

    let s = Server::start(&[
        "--domain",
        "sbx.test",
        "--public-url",
        "https://sandboxes.example.com",
    ]);
    let v = e2b_create(&s).await;
    assert_eq!(v["domain"], "sbx.test", "{v}");
    let id = v["sandboxID"].as_str().expect("id");
    let (_, ports) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/ports/8000"))).await;
    assert_eq!(ports["url"], format!("https://8000-{id}.sbx.test/"));
    let r = s
        .e2b_api(Method::GET, "/v2/sandboxes")
        .send()
        .await
        .expect("e2b list");
    let listed: Value = r.json().await.expect("json");
    assert_eq!(listed[0]["domain"], "sbx.test", "{listed}");
}

/// Creates a sandbox through the E2B control plane with the admin key; its `Sandbox` JSON.
async fn e2b_create(s: &Server) -> Value {
    s.e2b_create(json!({"templateID": "base", "timeout": 60}))
        .await
}

/// `/metrics` labels the E2B data plane and the proxy by method instead of `unmatched`, and
/// has latency histograms per route, the create latency, sandboxes by state and the body
/// bytes moved per surface.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_have_histograms_surfaces_and_bytes() {
    let s = Server::start(&[]);
    let v = e2b_create(&s).await;
    let id = v["sandboxID"].as_str().expect("id").to_owned();
    let token = v["envdAccessToken"].as_str().expect("token").to_owned();

    // 200 KB in through REST, out through the data plane; one proxied request.
    let data = vec![b'x'; 200_000];
    let r = s
        .req(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/files?path=/home/user/big"),
        )
        .body(data.clone())
        .send()
        .await
        .expect("upload");
    assert!(r.status().is_success(), "{}", r.status());
    let r = s
        .http
        .get(format!("{}/files?path=/home/user/big&username=user", s.url))
        .header("E2b-Sandbox-Id", &id)
        .header("X-Access-Token", &token)
        .send()
        .await
        .expect("download");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("body").len(), data.len());
    let _ = s
        .req(Method::GET, &format!("/proxy/{id}/8000/"))
        .send()
        .await
        .expect("proxy");

    let text = s
        .req(Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
    };
    assert_eq!(value("paddock_sandbox_create_seconds_count "), 1.0);
    assert_eq!(value("paddock_sandboxes{state=\"running\"} "), 1.0);
    for route in ["/v2/sandboxes", "envd /files", "proxy"] {
        let n = value(&format!(
            "paddock_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} "
        ));
        assert!(n >= 1.0, "{route}: {n}");
        value(&format!(
            "paddock_http_request_duration_seconds_sum{{route=\"{route}\"}} "
        ));
    }
    assert!(!text.contains("route=\"unmatched\""), "{text}");
    assert!(value("paddock_http_request_bytes_total{surface=\"rest\"} ") >= 200_000.0);
    assert!(value("paddock_http_response_bytes_total{surface=\"envd\"} ") >= 200_000.0);
    assert!(value("paddock_http_request_bytes_total{surface=\"envd\"} ") < 200_000.0);
}
