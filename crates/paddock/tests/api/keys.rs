//! API keys: roles, tenants, per-key quotas and rate limits.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn keys_roles_and_tenants() {
    let s = Server::start(&[]);
    let (a_id, a_key) = s.new_key(json!({"name": "tenant-a"})).await;
    let (_, b_key) = s.new_key(json!({"name": "tenant-b"})).await;

    // F1: no key, malformed keys, a revoked key, an expired key: 401 with one body.
    let (_, expired) = s.new_key(json!({"name": "short", "expires_in": 1})).await;
    let sbx = s.create_as(&a_key, json!({})).await;
    let id = sbx["id"].as_str().expect("id").to_owned();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (revoked_id, revoked) = s.new_key(json!({"name": "gone"})).await;
    // Used just before its revoke, so the server has it cached (`hotpath::KeyCache`): the
    // revoke still refuses it at once.
    let (st, v) = call(s.req_as(&revoked, Method::GET, "/v1/sandboxes")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/keys/{revoked_id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = call(s.req_as(&revoked, Method::GET, "/v1/sandboxes")).await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "a revoked key answered from the cache: {v}"
    );
    let bad_keys = [
        "",
        "pdk_",
        "pdk_short",
        "Bearer",
        &"x".repeat(5000),
        &expired,
        &revoked,
    ];
    let mut bodies = BTreeSet::new();
    for k in bad_keys {
        for path in [
            "/v1/sandboxes",
            "/v1/status",
            "/v1/keys",
            "/metrics",
            &format!("/v1/sandboxes/{id}"),
        ] {
            let (st, v) = call(s.req_as(k, Method::GET, path)).await;
            assert_eq!(st, StatusCode::UNAUTHORIZED, "{path} with key {k:.10}: {v}");
            bodies.insert(v.to_string());
        }
    }
    let (st, _) = call(s.http.get(format!("{}/v1/sandboxes", s.url))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(bodies.len(), 1, "401 bodies differ: {bodies:?}");

    // F2: a user key on admin routes is 403.
    for (m, path) in [
        (Method::GET, "/v1/keys"),
        (Method::POST, "/v1/keys"),
        (Method::GET, "/v1/audit"),
        (Method::GET, "/metrics"),
        (Method::DELETE, &format!("/v1/keys/{a_id}")),
    ] {
        let (st, v) = call(s.req_as(&a_key, m, path).json(&json!({"name": "x"}))).await;
        assert_error(st, &v, StatusCode::FORBIDDEN, "forbidden");
    }
    // F2: tenant B sees tenant A's sandbox exactly like a missing one.
    let random = "abcdefghij0123456789";
    for (m, suffix) in [
        (Method::GET, ""),
        (Method::DELETE, ""),
        (Method::GET, "/stats"),
        (Method::GET, "/logs"),
    ] {
        let (st_b, v_b) =
            call(s.req_as(&b_key, m.clone(), &format!("/v1/sandboxes/{id}{suffix}"))).await;
        let (st_r, v_r) = call(s.req_as(
            &b_key,
            m.clone(),
            &format!("/v1/sandboxes/{random}{suffix}"),
        ))
        .await;
        assert_eq!(st_b, StatusCode::NOT_FOUND, "{m} {suffix}: {v_b}");
        assert_eq!(st_b, st_r);
        assert_eq!(
            v_b["message"].as_str().map(|m| m.replace(&id, "ID")),
            v_r["message"].as_str().map(|m| m.replace(random, "ID"))
        );
    }
    let (st, _) = call(
        s.req_as(&b_key, Method::POST, &format!("/v1/sandboxes/{id}/timeout"))
            .json(&json!({"timeout": 5})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, list) = call(s.req_as(&b_key, Method::GET, "/v1/sandboxes?state=all")).await;
    assert_eq!(list["sandboxes"], json!([]));
    let (_, ev) = call(s.req_as(&b_key, Method::GET, "/v1/events")).await;
    assert_eq!(ev["events"], json!([]));
    // A's sandbox is still there for A (B's delete did nothing); admin sees it too.
    let (st, _) = call(s.req_as(&a_key, Method::GET, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::OK);
    let (_, list) = call(s.req(Method::GET, "/v1/sandboxes")).await;
    assert_eq!(list["sandboxes"].as_array().map(Vec::len), Some(1));

    // Keys list never shows secrets or hashes.
    let (_, keys) = call(s.req(Method::GET, "/v1/keys")).await;
    let text = keys.to_string();
    assert!(!text.contains(&a_key) && !text.contains("hash"), "{text}");
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn per_key_quota_and_rate_limit() {
    let s = Server::start(&["--rate", "20", "--rate-burst", "40"]);
    let (_, k) = s
        .new_key(json!({"name": "small", "max_sandboxes": 1}))
        .await;
    let first = s.create_as(&k, json!({})).await;
    let (st, v) = call(s.req_as(&k, Method::POST, "/v1/sandboxes").json(&json!({}))).await;
    assert_error(st, &v, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    let fid = first["id"].as_str().expect("id");
    let (st, _) = call(s.req_as(&k, Method::DELETE, &format!("/v1/sandboxes/{fid}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let second = s.create_as(&k, json!({})).await;
    assert_eq!(second["state"], "running");

    // F3: enumerating random ids finds nothing and is cut off with 429 and Retry-After.
    let (_, e) = s.new_key(json!({"name": "enumerator"})).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..200 {
        let id = paddock_core::SandboxId::random();
        let r = s
            .req_as(&e, Method::GET, &format!("/v1/sandboxes/{id}"))
            .send()
            .await
            .expect("request");
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = r.headers().get("retry-after").cloned();
        }
        statuses.push(r.status());
    }
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::NOT_FOUND || *s == StatusCode::TOO_MANY_REQUESTS)
    );
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        limited > 100,
        "only {limited} of 200 requests were rate limited"
    );
    assert!(retry_after.is_some(), "429 without Retry-After");
    // Another key is not affected by the enumerator's limit.
    let (st, _) = call(s.req(Method::GET, "/v1/status")).await;
    assert_eq!(st, StatusCode::OK);
}
