//! Volumes through the server: shared by sandboxes with different uid ranges (owners right
//! in each), read-only mounts, outliving the sandbox that wrote them, quotas, delete refused
//! while mounted, another tenant's volume, bad mount paths, nothing left after delete
//! (`docs/volumes.md`).

mod server;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::*;

async fn run(s: &Server, id: &str, cmd: &str) -> Value {
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({ "command": cmd })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{cmd}: {v}");
    v
}

async fn sh(s: &Server, id: &str, cmd: &str) -> String {
    let v = run(s, id, cmd).await;
    assert_eq!(v["exit_code"], 0, "{cmd}: {v}");
    v["stdout"].as_str().unwrap_or("").to_owned()
}

async fn kill(s: &Server, id: &str) {
    let (st, v) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert!(st.is_success(), "{v}");
}

async fn create_with(s: &Server, vols: Value) -> (StatusCode, Value) {
    call(
        s.req(Method::POST, "/v1/sandboxes")
            .json(&json!({ "volumes": vols })),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_are_shared_outlive_their_writer_and_hold_their_quota() {
    let s = Server::start(&[]);
    let vol = |body: Value| s.req(Method::POST, "/v1/volumes").json(&body);
    for bad in [
        json!({"name": ""}),
        json!({"name": "a/b"}),
        json!({"name": "x", "size": 0}),
        json!({"name": "x", "size": "1T"}),
    ] {
        let (st, v) = call(vol(bad.clone())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    let (st, v) = call(vol(json!({"name": "data", "size": "16M"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let vid = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["size_bytes"], 16 << 20);
    let (st, v) = call(vol(json!({"name": "data"}))).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let subvol = s.data.join("layers/volumes").join(&vid);
    assert!(subvol.is_dir());

    // Mount paths over system paths, relative, twice; unknown volume.
    for path in [
        "/",
        "/proc",
        "/sys/x",
        "/dev",
        "/etc",
        "/usr/local",
        "/bin",
        "/lib64",
        "/run/secrets",
        "/tmp",
        "data",
        "/a/../etc",
    ] {
        let (st, v) = create_with(&s, json!([{"name": "data", "path": path}])).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{path}: {v}");
    }
    let (st, v) = create_with(
        &s,
        json!([{"name": "data", "path": "/d"}, {"name": "data", "path": "/d"}]),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = create_with(&s, json!([{"name": "nope", "path": "/d"}])).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");

    // A writes; B (another uid range) reads it read-only with the right owner; C writes too.
    let (st, a) = create_with(&s, json!([{"name": "data", "path": "/data"}])).await;
    assert_eq!(st, StatusCode::CREATED, "{a}");
    let a = a["id"].as_str().unwrap().to_owned();
    sh(
        &s,
        &a,
        "echo from-a > /data/f && mkdir /data/d && echo x > /data/d/g",
    )
    .await;
    let (st, b) = create_with(
        &s,
        json!([{"name": vid, "path": "/mnt/shared", "read_only": true}]),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let b = b["id"].as_str().unwrap().to_owned();
    assert_eq!(
        sh(
            &s,
            &b,
            "cat /mnt/shared/f; stat -c %U:%G /mnt/shared/f /mnt/shared/d"
        )
        .await,
        "from-a\nuser:user\nuser:user\n"
    );
    let w = run(&s, &b, "echo no > /mnt/shared/f").await;
    assert_ne!(w["exit_code"], 0, "a read-only mount refuses writes: {w}");
    assert!(w["stderr"].as_str().unwrap().contains("Read-only"), "{w}");
    let (st, c) = create_with(&s, json!([{"name": "data", "path": "/home/user/vol"}])).await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    let c = c["id"].as_str().unwrap().to_owned();
    sh(
        &s,
        &c,
        "echo from-c >> /home/user/vol/f && rm /home/user/vol/d/g",
    )
    .await;
    assert_eq!(
        sh(&s, &a, "cat /data/f; ls /data/d").await,
        "from-a\nfrom-c\n"
    );

    // The quota holds for every writer.
    let q = run(
        &s,
        &a,
        "dd if=/dev/zero of=/data/big bs=1M count=32 2>&1; sync",
    )
    .await;
    assert!(
        q["stdout"]
            .as_str()
            .unwrap()
            .contains("Disk quota exceeded")
            || q["stdout"].as_str().unwrap().contains("No space"),
        "{q}"
    );
    let size: u64 = sh(&s, &a, "stat -c %s /data/big")
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(size <= 16 << 20, "{size}");
    sh(&s, &a, "rm /data/big").await;

    // In use: not destroyed.
    let (st, v) = call(s.req(Method::DELETE, "/v1/volumes/data")).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (st, v) = call(s.req(Method::GET, "/v1/volumes/data")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["mounted_by"].as_array().unwrap().len(), 3, "{v}");

    // Another tenant: as if it did not exist.
    let (_, other) = s.new_key(json!({"name": "other"})).await;
    for (m, p) in [
        (Method::GET, "/v1/volumes/data"),
        (Method::DELETE, "/v1/volumes/data"),
    ] {
        let (st, v) = call(s.req_as(&other, m, p)).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    }
    let (st, v) = call(
        s.req_as(&other, Method::POST, "/v1/sandboxes")
            .json(&json!({"volumes": [{"name": vid, "path": "/x"}]})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v) = call(s.req_as(&other, Method::GET, "/v1/volumes")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["volumes"].as_array().unwrap().len(), 0, "{v}");

    // The files outlive their writers.
    for id in [&a, &b, &c] {
        kill(&s, id).await;
    }
    let (st, d) = create_with(&s, json!([{"name": "data", "path": "/data"}])).await;
    assert_eq!(st, StatusCode::CREATED, "{d}");
    let d = d["id"].as_str().unwrap().to_owned();
    assert_eq!(sh(&s, &d, "cat /data/f").await, "from-a\nfrom-c\n");
    kill(&s, &d).await;

    // Deleted: nothing left (subvolume, its qgroup).
    let (st, v) = call(s.req(Method::DELETE, "/v1/volumes/data")).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    assert!(!subvol.exists());
    let (st, _) = call(s.req(Method::GET, "/v1/volumes/data")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let layers = s.data.join("layers");
    let out = std::process::Command::new("btrfs")
        .args(["subvolume", "sync"])
        .arg(&layers)
        .output()
        .expect("btrfs subvolume sync");
    assert!(out.status.success());
    let q = std::process::Command::new("btrfs")
        .args(["qgroup", "show", "--raw"])
        .arg(&layers)
        .output()
        .expect("btrfs qgroup show");
    let q = String::from_utf8_lossy(&q.stdout);
    assert!(!q.contains(&vid), "{q}");
    assert_no_sandboxes_left(&s, "the volume test").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_volume_create_ls_rm_and_create_with_a_volume() {
    let s = Server::start(&[]);
    let paddock = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
            .args(args)
            .env("PADDOCK_URL", &s.url)
            .env("PADDOCK_API_KEY", &s.admin_key)
            .output()
            .expect("running paddock")
    };
    let ok = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let id = ok(paddock(&["volume", "create", "cli-vol", "--size", "8M"]));
    assert!(id.starts_with("vol-"), "{id}");
    let ls = ok(paddock(&["volume", "ls"]));
    assert!(
        ls.contains("cli-vol") && ls.contains("8.0M") || ls.contains("cli-vol"),
        "{ls}"
    );
    let sbx = ok(paddock(&["create", "--volume", "cli-vol:/work"]));
    let sbx = sbx.split_whitespace().next().unwrap().to_owned();
    sh(&s, &sbx, "echo hi > /work/x").await;
    let ro = ok(paddock(&["create", "--volume", "cli-vol:/work:ro"]));
    let ro = ro.split_whitespace().next().unwrap().to_owned();
    assert_eq!(sh(&s, &ro, "cat /work/x").await, "hi\n");
    assert_ne!(run(&s, &ro, "touch /work/y").await["exit_code"], 0);
    let o = paddock(&["volume", "rm", "cli-vol"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(&sbx), "{o:?}");
    let o = paddock(&["create", "--volume", "cli-vol:/etc"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("system path"),
        "{o:?}"
    );
    kill(&s, &sbx).await;
    kill(&s, &ro).await;
    ok(paddock(&["volume", "rm", "cli-vol"]));
    assert!(!ok(paddock(&["volume", "ls"])).contains("cli-vol"));
}
