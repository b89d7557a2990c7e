//! Snapshots and forks through the server: a snapshot as a template (files and their owners
//! as the sandbox left them, writable by the child's user), fork isolation, bad input,
//! delete refused while in use, another tenant's snapshot, nothing left after delete
//! (`docs/persistence.md`).

mod server;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::*;

async fn sh(s: &Server, id: &str, cmd: &str) -> String {
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({ "command": cmd })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{cmd}: {v}");
    assert_eq!(v["exit_code"], 0, "{cmd}: {v}");
    v["stdout"].as_str().unwrap_or("").to_owned()
}

async fn sh_as_root(s: &Server, id: &str, cmd: &str) -> String {
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({ "command": cmd, "user": "root" })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{cmd}: {v}");
    assert_eq!(v["exit_code"], 0, "{cmd}: {v}");
    v["stdout"].as_str().unwrap_or("").to_owned()
}

async fn kill(s: &Server, id: &str) {
    let (st, v) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert!(st.is_success(), "{v}");
}

fn snapshot_dir(s: &Server, name: &str) -> std::path::PathBuf {
    s.data.join("layers/snapshots").join(name)
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_is_a_template_with_owners_mapped_and_delete_refused_while_used() {
    let s = Server::start(&[]);
    let v = s.create(json!({"env": {"FROM_PARENT": "yes"}})).await;
    let id = v["id"].as_str().unwrap().to_owned();
    sh(
        &s,
        &id,
        "echo mine > /home/user/f && mkdir /home/user/d && echo x > /home/user/d/g",
    )
    .await;
    sh_as_root(&s, &id, "echo rooted > /root/r && rm /etc/hostname.not-there 2>/dev/null; echo conf >> /etc/motd && rm -f /etc/issue").await;

    // Bad input first.
    let snap = |body: Value| {
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/snapshots"))
            .json(&body)
    };
    let (st, v) = call(snap(json!({"mode": "full"}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("CRIU"), "{v}");
    let (st, v) = call(snap(json!({"name": "Bad Name"}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = call(
        s.req(Method::POST, "/v1/sandboxes/aaaaaaaaaaaaaaaaaaaa/snapshots")
            .json(&json!({})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v) = call(s.req(Method::GET, "/v1/snapshots/no-such-snap")).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v) = call(s.req(Method::DELETE, "/v1/snapshots/no-such-snap")).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");

    let (st, v) = call(snap(json!({"name": "snap-one"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["snapshot_id"], "snap-one");
    assert_eq!(v["sandbox_id"], id.as_str());
    let (st, v) = call(snap(json!({"name": "snap-one"}))).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(snapshot_dir(&s, "snap-one").is_dir());

    // What the parent writes afterwards is not in the snapshot.
    sh(&s, &id, "echo later > /home/user/later").await;

    let c = s.create(json!({"template": "snap-one"})).await;
    let cid = c["id"].as_str().unwrap().to_owned();
    assert_eq!(
        sh(&s, &cid, "cat /home/user/f /home/user/d/g").await,
        "mine\nx\n"
    );
    assert_eq!(
        sh(
            &s,
            &cid,
            "stat -c '%U:%G' /home/user/f /home/user/d /home/user/d/g"
        )
        .await,
        "user:user\nuser:user\nuser:user\n",
        "the parent's files belong to the child's user"
    );
    assert_eq!(
        sh_as_root(&s, &cid, "cat /root/r; stat -c %U /root/r").await,
        "rooted\nroot\n"
    );
    assert!(sh(&s, &cid, "cat /etc/motd").await.ends_with("conf\n"));
    assert_eq!(
        sh(&s, &cid, "test -e /etc/issue && echo there || echo gone").await,
        "gone\n"
    );
    assert_eq!(
        sh(
            &s,
            &cid,
            "test -e /home/user/later && echo there || echo gone"
        )
        .await,
        "gone\n"
    );
    // The child's user can change and remove what the parent's wrote.
    sh(
        &s,
        &cid,
        "echo more >> /home/user/f && rm /home/user/d/g && touch /home/user/d/new",
    )
    .await;
    assert_eq!(
        sh(&s, &id, "cat /home/user/f; ls /home/user/d").await,
        "mine\ng\n"
    );

    // Listed; delete refused while the child uses it; deleted once it is gone.
    let (st, v) = call(s.req(Method::GET, &format!("/v1/snapshots?sandbox_id={id}"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["snapshots"][0]["running_sandboxes"], 1, "{v}");
    let (st, v) = call(s.req(Method::DELETE, "/v1/snapshots/snap-one")).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(v["message"].as_str().unwrap().contains(&cid), "{v}");

    // Another tenant's snapshot does not exist for it.
    let (_, other) = s.new_key(json!({"name": "other"})).await;
    let (st, v) = call(s.req_as(&other, Method::GET, "/v1/snapshots/snap-one")).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v) = call(s.req_as(&other, Method::DELETE, "/v1/snapshots/snap-one")).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v) = call(s.req_as(&other, Method::GET, "/v1/snapshots")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 0, "{v}");

    kill(&s, &cid).await;
    let (st, v) = call(s.req(Method::DELETE, "/v1/snapshots/snap-one")).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    assert!(
        !snapshot_dir(&s, "snap-one").exists(),
        "the snapshot's subvolume is gone"
    );
    assert!(leftovers(&cid).is_empty(), "{:?}", leftovers(&cid));
    let (st, v) = call(s.req(Method::GET, "/v1/snapshots")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 0, "{v}");
    kill(&s, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fork_children_are_independent_and_inherit_env_and_limits() {
    let s = Server::start(&[]);
    let v = s
        .create(json!({"env": {"FROM_PARENT": "yes"}, "memory": "300M", "metadata": {"k": "v"}}))
        .await;
    let id = v["id"].as_str().unwrap().to_owned();
    sh(&s, &id, "echo base > /home/user/shared").await;
    let fork = |body: Value| {
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/fork"))
            .json(&body)
    };
    for bad in [
        json!({"count": 0}),
        json!({"count": 21}),
        json!({"count": -1}),
        json!({"mode": "full"}),
    ] {
        let (st, v) = call(fork(bad.clone())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    let (st, v) = call(
        s.req(Method::POST, "/v1/sandboxes/aaaaaaaaaaaaaaaaaaaa/fork")
            .json(&json!({"count": 1})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");

    let (st, v) = call(fork(json!({"count": 3}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let kids: Vec<String> = v["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap_or_else(|| panic!("{k}")).to_owned())
        .collect();
    assert_eq!(kids.len(), 3);
    let snap = v["snapshot_id"].as_str().unwrap().to_owned();
    // The parent keeps running.
    assert_eq!(sh(&s, &id, "cat /home/user/shared").await, "base\n");
    for (i, k) in kids.iter().enumerate() {
        assert_eq!(
            sh(&s, k, "cat /home/user/shared; echo $FROM_PARENT").await,
            "base\nyes\n"
        );
        sh(
            &s,
            k,
            &format!("echo child{i} > /home/user/shared; echo {i} > /home/user/own"),
        )
        .await;
        let (_, info) = call(s.req(Method::GET, &format!("/v1/sandboxes/{k}"))).await;
        assert_eq!(info["metadata"]["k"], "v", "{info}");
        assert_eq!(info["template"], snap.as_str(), "{info}");
        assert_eq!(info["limits"]["memory_bytes"], 300u64 << 20, "{info}");
    }
    sh(&s, &id, "echo parent > /home/user/p").await;
    // Each sees only its own writes.
    assert_eq!(
        sh(&s, &id, "cat /home/user/shared; ls /home/user").await,
        "base\np\nshared\n"
    );
    for (i, k) in kids.iter().enumerate() {
        assert_eq!(
            sh(
                &s,
                k,
                "cat /home/user/shared /home/user/own; test -e /home/user/p || echo nop"
            )
            .await,
            format!("child{i}\n{i}\nnop\n")
        );
    }
    for k in &kids {
        kill(&s, k).await;
    }
    let (st, v) = call(s.req(Method::DELETE, &format!("/v1/snapshots/{snap}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    kill(&s, &id).await;
    assert_no_sandboxes_left(&s, "the fork test").await;
}

fn paddock(s: &Server, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(args)
        .env("PADDOCK_URL", &s.url)
        .env("PADDOCK_API_KEY", &s.admin_key)
        .output()
        .expect("running paddock")
}

fn stdout_ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_snapshot_create_ls_rm_fork_and_create_from_a_snapshot() {
    let s = Server::start(&[]);
    let v = s.create(json!({})).await;
    let id = v["id"].as_str().unwrap().to_owned();
    sh(&s, &id, "echo cli > /home/user/c").await;
    let snap = stdout_ok(&paddock(
        &s,
        &["snapshot", "create", &id, "--name", "cli-snap"],
    ));
    assert_eq!(snap, "cli-snap\n");
    let ls = stdout_ok(&paddock(&s, &["snapshot", "ls"]));
    assert!(ls.contains("cli-snap") && ls.contains(&id), "{ls}");
    let created = stdout_ok(&paddock(&s, &["create", "--template", "cli-snap"]));
    let child = created.split_whitespace().next().unwrap().to_owned();
    assert_eq!(sh(&s, &child, "cat /home/user/c").await, "cli\n");
    let o = paddock(&s, &["snapshot", "rm", "cli-snap"]);
    assert!(!o.status.success(), "in use: refused");
    assert!(String::from_utf8_lossy(&o.stderr).contains(&child), "{o:?}");
    kill(&s, &child).await;
    stdout_ok(&paddock(&s, &["snapshot", "rm", "cli-snap"]));
    assert!(!snapshot_dir(&s, "cli-snap").exists());

    let o = paddock(&s, &["fork", &id, "-n", "21"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("count must be 1 to 20"),
        "{o:?}"
    );
    let kids = stdout_ok(&paddock(&s, &["fork", &id, "-n", "3"]));
    let kids: Vec<&str> = kids.lines().collect();
    assert_eq!(kids.len(), 3, "{kids:?}");
    for k in &kids {
        assert_eq!(sh(&s, k, "cat /home/user/c").await, "cli\n");
        kill(&s, k).await;
    }
    kill(&s, &id).await;
}
