//! Pause and resume through the server: REST, E2B control and data plane, bad input, paused
//! time, `kill -9` of the server while paused (`docs/persistence.md`).

mod server;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::*;

async fn exec(s: &Server, id: &str, cmd: &str) -> (StatusCode, Value) {
    call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({ "command": cmd })),
    )
    .await
}

async fn state_of(s: &Server, id: &str) -> Value {
    let (st, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

fn secs_until(v: &Value) -> f64 {
    let t = time::OffsetDateTime::parse(
        v["expires_at"].as_str().expect("expires_at"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("rfc3339");
    (t - time::OffsetDateTime::now_utc()).as_seconds_f64()
}

async fn counter(s: &Server, id: &str) -> u64 {
    let (st, v) = exec(s, id, "cat /home/user/count").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["stdout"]
        .as_str()
        .unwrap_or("")
        .trim()
        .parse()
        .unwrap_or(0)
}

async fn counter_passes(s: &Server, id: &str, above: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = counter(s, id).await;
        if c > above {
            return c;
        }
        assert!(Instant::now() < deadline, "the counter stayed at {c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_pause_resume_bad_input_and_paused_time() {
    let s = Server::start(&[]);
    let v = s.create(json!({"timeout": 4})).await;
    let id = v["id"].as_str().unwrap().to_owned();
    let (st, _) = exec(&s, &id, "echo kept > /home/user/f").await;
    assert_eq!(st, StatusCode::OK);
    let pause = |mode: &str| {
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/pause"))
            .json(&json!({ "mode": mode }))
    };
    let (st, v) = call(pause("sideways")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = call(pause("filesystem")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "paused");
    assert_eq!(v["paused_mode"], "filesystem");
    // Retention, not the timeout, while paused: 30 days by default.
    assert!(secs_until(&v) > 29.0 * 86400.0, "{v}");
    let (st, v) = call(pause("full")).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("already paused"),
        "{v}"
    );
    let (st, v) = exec(&s, &id, "true").await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"].as_str().unwrap_or("").contains("paused"),
        "{v}"
    );
    let (st, v) = call(s.req(Method::GET, "/v1/sandboxes")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        v["sandboxes"].as_array().or(v.as_array()).is_some_and(|a| a
            .iter()
            .any(|x| x["id"] == id.as_str() && x["state"] == "paused")),
        "{v}"
    );
    // Longer than the whole timeout: paused time does not count.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(state_of(&s, &id).await["state"], "paused");
    let resume = || {
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/resume"))
            .json(&json!({}))
    };
    let (st, v) = call(resume()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "running");
    let left = secs_until(&v);
    assert!(
        left > 2.0 && left <= 4.5,
        "{left} s left of a 4 s timeout: {v}"
    );
    let (st, v) = exec(&s, &id, "cat /home/user/f").await;
    assert_eq!(
        (st, v["stdout"].as_str()),
        (StatusCode::OK, Some("kept\n")),
        "{v}"
    );
    // Resuming a running sandbox is a no-op.
    let (st, v) = call(resume()).await;
    assert_eq!(
        (st, v["state"].as_str()),
        (StatusCode::OK, Some("running")),
        "{v}"
    );
    // And it expires on its remaining time.
    let deadline = Instant::now() + Duration::from_secs(15);
    while state_of(&s, &id).await["state"] != "stopped" {
        assert!(Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn full_pause_keeps_counting_across_kill_9_of_the_server() {
    let mut s = Server::start(&[]);
    let v = s.create(json!({"timeout": 600})).await;
    let id = v["id"].as_str().unwrap().to_owned();
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec")).json(&json!({
            "command": "i=0; while :; do i=$((i+1)); echo $i > /home/user/c.tmp; mv /home/user/c.tmp /home/user/count; sleep 0.02; done",
            "background": true,
        })),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let before = counter_passes(&s, &id, 3).await;
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/pause"))
            .json(&json!({})),
    )
    .await;
    assert_eq!(
        (st, v["paused_mode"].as_str()),
        (StatusCode::OK, Some("full")),
        "{v}"
    );
    s.kill9();
    s.restart();
    assert_eq!(state_of(&s, &id).await["state"], "paused");
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/resume"))
            .json(&json!({})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let at_resume = counter(&s, &id).await;
    assert!(
        at_resume >= before,
        "{at_resume} < {before}: the count went back"
    );
    counter_passes(&s, &id, at_resume + 3).await;
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(leftovers(&id), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn filesystem_pause_survives_kill_9_and_keeps_the_network_policy() {
    let mut s = Server::start(&[]);
    let v = s
        .create(json!({"timeout": 600, "network": {"mode": "all"}}))
        .await;
    let id = v["id"].as_str().unwrap().to_owned();
    let (st, _) = exec(&s, &id, "echo kept > /home/user/f").await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/pause"))
            .json(&json!({"mode": "filesystem"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(
        processes_of(&id).is_empty(),
        "no process of a filesystem-paused sandbox"
    );
    s.kill9();
    s.restart();
    assert_eq!(state_of(&s, &id).await["state"], "paused");
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/resume"))
            .json(&json!({})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["network"]["mode"], "all", "{v}");
    let (st, v) = exec(
        &s,
        &id,
        "cat /home/user/f; grep -c nameserver /etc/resolv.conf",
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["stdout"], "kept\n1\n", "{v}");
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(leftovers(&id), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn e2b_auto_pause_at_timeout_and_auto_resume_on_the_data_plane() {
    let s = Server::start(&[]);
    let (st, v) = call(s.req(Method::POST, "/sandboxes").json(&json!({
        "templateID": "base", "timeout": 2, "autoPause": true, "autoResume": {"enabled": true},
        "allow_internet_access": false, "metadata": {}, "envVars": {},
    })))
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["sandboxID"].as_str().unwrap().to_owned();
    let token = v["envdAccessToken"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(15);
    while state_of(&s, &id).await["state"] != "paused" {
        assert!(Instant::now() < deadline, "never auto-paused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (st, v) = call(s.req(Method::GET, &format!("/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "paused");
    assert_eq!(v["lifecycle"]["onTimeout"], "pause");
    // The data plane wakes it.
    let r = s
        .e2b_data(
            Method::GET,
            "/files?path=/etc/hostname&username=user",
            &id,
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(state_of(&s, &id).await["state"], "running");
    // E2B pause: 204, then 409 when already paused; connect resumes (201).
    let pause = || {
        s.req(Method::POST, &format!("/sandboxes/{id}/pause"))
            .json(&json!({}))
    };
    let (st, _) = call(pause()).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = call(pause()).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (st, v) = call(
        s.req(Method::POST, &format!("/v2/sandboxes/{id}/connect"))
            .json(&json!({"timeout": 60})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(state_of(&s, &id).await["state"], "running");

    // Without auto-resume, the data plane answers a clear 502 and the sandbox stays paused.
    let (st, v) = call(s.req(Method::POST, "/sandboxes").json(&json!({
        "templateID": "base", "timeout": 60, "metadata": {}, "envVars": {},
    })))
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id2 = v["sandboxID"].as_str().unwrap().to_owned();
    let token2 = v["envdAccessToken"].as_str().unwrap().to_owned();
    let (st, _) = call(
        s.req(Method::POST, &format!("/sandboxes/{id2}/pause"))
            .json(&json!({"memory": false})),
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let r = s
        .e2b_data(
            Method::GET,
            "/files?path=/etc/hostname&username=user",
            &id2,
            &token2,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap_or("").contains("paused"),
        "{body}"
    );
    let (st, v) = call(s.req(Method::GET, "/v2/sandboxes?state=paused")).await;
    assert_eq!(st, StatusCode::OK);
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["sandboxID"].as_str())
        .collect();
    assert_eq!(ids, vec![id2.as_str()], "{v}");
    // autoResume without autoPause is refused.
    let (st, v) = call(s.req(Method::POST, "/sandboxes").json(&json!({
        "templateID": "base", "autoResume": {"enabled": true},
    })))
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filesystem_resume_runs_the_template_start_command_again() {
    let s = Server::start(&[]);
    let r = s
        .req(Method::POST, "/v1/templates/startonce/build")
        .header("content-type", "text/plain")
        .body("FROM base\nSTART echo up >> /home/user/starts; exec sleep 1000\nREADY test -s /home/user/starts\n")
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("\"done\""), "{text}");
    let v = s
        .create(json!({"template": "startonce", "timeout": 600}))
        .await;
    let id = v["id"].as_str().unwrap().to_owned();
    let starts = || async {
        let (st, v) = exec(&s, &id, "cat /home/user/starts").await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v["stdout"].as_str().unwrap_or("").to_owned()
    };
    assert_eq!(starts().await, "up\n");
    for (mode, want) in [("full", "up\n"), ("filesystem", "up\nup\n")] {
        let (st, v) = call(
            s.req(Method::POST, &format!("/v1/sandboxes/{id}/pause"))
                .json(&json!({ "mode": mode })),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let (st, v) = call(
            s.req(Method::POST, &format!("/v1/sandboxes/{id}/resume"))
                .json(&json!({})),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(starts().await, want, "after a {mode} pause");
    }
}
