//! The gVisor backend (`docs/isolation.md`): real sandboxes under `runsc` with the real agent,
//! through the real `paddock serve`. Each test skips (loudly) where `runsc` is not installed;
//! CI installs it. The rest of the API runs on gVisor too with `PADDOCK_ISOLATION_DEFAULT=gvisor`
//! (`.ci/run` does this for the security battery and `api_exec`).

mod server;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::*;

/// Whether runsc is here; prints why the test does nothing otherwise.
fn have_runsc() -> bool {
    let ok = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("runsc").is_file());
    if !ok {
        eprintln!("SKIP: runsc is not installed (apt-get install runsc)");
        assert!(std::env::var_os("CI").is_none(), "CI must have runsc");
    }
    ok
}

async fn exec(s: &Server, id: &str, cmd: &str) -> Value {
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"command": cmd, "timeout": 60})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

/// The kernel a sandbox sees: gVisor's `dmesg` is the Sentry's own boot log.
async fn on_gvisor(s: &Server, id: &str) -> bool {
    let v = exec(s, id, "dmesg 2>&1 | head -3").await;
    v["stdout"].as_str().unwrap_or_default().contains("gVisor")
}

/// runsc's state files of sandbox `id` under the server's data directory.
fn runsc_state_of(s: &Server, id: &str) -> Vec<String> {
    std::fs::read_dir(s.data.join("gvisor"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(id))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_create_runs_exec_files_archives_and_ports_on_gvisor() {
    if !have_runsc() {
        return;
    }
    let s = Server::start(&[]);
    let v = s
        .create(json!({"isolation": "gvisor", "timeout": 600}))
        .await;
    let id = v["id"].as_str().expect("id").to_owned();
    assert_eq!(v["isolation"], "gvisor", "{v}");
    assert!(on_gvisor(&s, &id).await, "not running on gVisor");
    // coreutils' `ls -l` and `stat` pass `AT_NO_AUTOMOUNT`, which this Sentry refuses with
    // EINVAL: the preloaded compat library drops it. The preload list is not the sandbox's
    // to change.
    let r = exec(
        &s,
        &id,
        "ls -ld / /etc/passwd >/dev/null && stat -c '%U %a' /etc/passwd; \
         sudo sh -c 'echo x > /etc/ld.so.preload' 2>/dev/null || echo refused",
    )
    .await;
    assert_eq!(r["exit_code"], 0, "{r}");
    assert_eq!(r["stdout"], "root 644\nrefused\n", "{r}");
    // Exec: exit codes, env, cwd, stdin; PID 1 is the agent; the default user.
    let (st, r) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"command": "cat; id -un; cat /proc/1/comm; exit 3", "stdin": "in\n"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["exit_code"], 3, "{r}");
    assert_eq!(r["stdout"], "in\nuser\npaddock-agent\n", "{r}");
    // A timeout kills the command.
    let (_, r) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&json!({"command": "sleep 30", "timeout": 1})),
    )
    .await;
    assert_eq!(r["timed_out"], true, "{r}");
    // Files both ways, streamed.
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let (st, v) = call(
        s.req(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/files?path=/home/user/blob.bin"),
        )
        .header("content-type", "application/octet-stream")
        .body(data.clone()),
    )
    .await;
    assert!(st.is_success(), "{st} {v}");
    let got = s
        .req(
            Method::GET,
            &format!("/v1/sandboxes/{id}/files?path=/home/user/blob.bin"),
        )
        .send()
        .await
        .expect("download");
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.expect("body").as_ref(), &data[..]);
    // `df` inside shows the layer filesystem (the Sentry answers statfs itself), but the
    // stats the server reports come from the host's qgroup: the written bytes, and the limit.
    let stats = eventually(
        Duration::from_secs(10),
        "the upload counted in the sandbox's disk usage",
        || async {
            let (st, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/stats"))).await;
            if st != StatusCode::OK || v["disk_bytes"].as_u64().unwrap_or(0) < 2_000_000 {
                return Err(v.to_string());
            }
            Ok(v)
        },
    )
    .await;
    assert!(
        stats["disk_limit_bytes"]
            .as_u64()
            .is_some_and(|l| l > 2_000_000),
        "{stats}"
    );
    // Written as the user (the Sentry has no setfsuid: the agent switches the thread's
    // effective ids), so it belongs to the user and a root-only directory stays closed.
    let r = exec(&s, &id, "find /home/user/blob.bin -printf '%u\\n'").await;
    assert_eq!(r["stdout"], "user\n", "{r}");
    let (st, v) = call(
        s.req(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/files?path=/root/nope"),
        )
        .header("content-type", "application/octet-stream")
        .body("x"),
    )
    .await;
    assert!(!st.is_success(), "the user wrote into /root: {st} {v}");
    // Archives: a tar up (extracted by paddock-untar without openat2), a tar down.
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    tar.append_data(&mut h, "d/sub/hello.txt", &b"hello"[..])
        .expect("tar");
    let tar = tar.into_inner().expect("tar");
    let (st, v) = call(
        s.req(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/archive?path=/home/user/up"),
        )
        .header("content-type", "application/x-tar")
        .body(tar),
    )
    .await;
    assert!(st.is_success(), "{st} {v}");
    let r = exec(&s, &id, "cat /home/user/up/d/sub/hello.txt").await;
    assert_eq!(r["stdout"], "hello", "{r}");
    let down = s
        .req(
            Method::GET,
            &format!("/v1/sandboxes/{id}/archive?path=/home/user/up"),
        )
        .send()
        .await
        .expect("archive download");
    assert_eq!(down.status(), StatusCode::OK);
    let bytes = down.bytes().await.expect("tar body");
    let mut names = Vec::new();
    for e in tar::Archive::new(&bytes[..]).entries().expect("entries") {
        names.push(
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string(),
        );
    }
    assert!(names.iter().any(|n| n.ends_with("hello.txt")), "{names:?}");
    // A port through the proxy.
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec")).json(&json!({
            "command": "cd /tmp && echo served > index.html && exec python3 -m http.server 8000",
            "background": true,
        })),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let body = eventually(
        Duration::from_secs(30),
        "the sandbox's port answering through the proxy",
        || async {
            let r = s
                .req(Method::GET, &format!("/proxy/{id}/8000/index.html"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status() != StatusCode::OK {
                return Err(r.status().to_string());
            }
            r.text().await.map_err(|e| e.to_string())
        },
    )
    .await;
    assert_eq!(body, "served\n");
    let (_, ports) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}/ports"))).await;
    assert!(ports.to_string().contains("8000"), "{ports}");

    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(leftovers(&id), Vec::<String>::new());
    assert_eq!(runsc_state_of(&s, &id), Vec::<String>::new());
    assert!(!s.data.join("layers").join("sandboxes").join(&id).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn choosing_the_backend_server_default_and_bad_values() {
    if !have_runsc() {
        return;
    }
    let s = Server::start(&["--isolation-default", "gvisor"]);
    // An unknown backend is a 400 naming the choices.
    let (st, v) = call(
        s.req(Method::POST, "/v1/sandboxes")
            .json(&json!({"isolation": "kvm"})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let msg = v.to_string();
    assert!(msg.contains("native") && msg.contains("gvisor"), "{msg}");
    // The server's default applies to a create naming none; a request overrides it.
    let g = s.create(json!({})).await;
    let gid = g["id"].as_str().expect("id").to_owned();
    assert_eq!(g["isolation"], "gvisor", "{g}");
    assert!(on_gvisor(&s, &gid).await);
    let n = s.create(json!({"isolation": "native"})).await;
    let nid = n["id"].as_str().expect("id").to_owned();
    assert!(!on_gvisor(&s, &nid).await);
    // E2B creates name it in metadata.
    let (st, v) = call(
        s.req(Method::POST, "/sandboxes")
            .header("x-api-key", &s.admin_key)
            .json(&json!({"templateID": "base", "metadata": {"paddock.isolation": "native"}})),
    )
    .await;
    assert!(st.is_success(), "{st} {v}");
    let eid = v["sandboxID"].as_str().expect("sandboxID").to_owned();
    assert!(!on_gvisor(&s, &eid).await);
    let (st, v) = call(
        s.req(Method::POST, "/sandboxes")
            .header("x-api-key", &s.admin_key)
            .json(&json!({"templateID": "base", "metadata": {"paddock.isolation": "vm"}})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_memory_limit_holds_for_the_whole_sandbox() {
    if !have_runsc() {
        return;
    }
    let s = Server::start(&[]);
    let v = s
        .create(json!({"isolation": "gvisor", "memory": "256M"}))
        .await;
    let id = v["id"].as_str().expect("id").to_owned();
    let cg = cgroups_of(&id)
        .into_iter()
        .find(|p| p.starts_with("/sys/fs/cgroup/memory"))
        .expect("memory cgroup");
    let limit: u64 = std::fs::read_to_string(cg.join("memory.limit_in_bytes"))
        .expect("limit")
        .trim()
        .parse()
        .expect("number");
    assert_eq!(limit, 256 << 20);
    // Within the limit: fine.
    let r = exec(
        &s,
        &id,
        "python3 -c 'b = bytearray(64 << 20); b[::4096] = b\"x\" * len(b[::4096]); print(\"ok\")'",
    )
    .await;
    assert_eq!(r["stdout"], "ok\n", "{r}");
    // Far over it: the allocation never succeeds (the Sentry, which holds the sandbox's
    // memory, is what the kernel's OOM killer meets: the sandbox stops, docs/isolation.md).
    let (_, r) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec")).json(&json!({
            "command": "python3 -c 'b = bytearray(600 << 20); b[::4096] = b\"x\" * len(b[::4096]); print(\"allocated\")'",
            "timeout": 60,
        })),
    )
    .await;
    assert!(!r.to_string().contains("allocated\\n"), "{r}");
    let max: u64 = std::fs::read_to_string(cg.join("memory.max_usage_in_bytes"))
        .map(|s| s.trim().parse().unwrap_or(0))
        .unwrap_or(0);
    assert!(max <= 256 << 20, "max usage {max}");
    let _ = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    eventually(Duration::from_secs(10), "nothing left", || async {
        let left = leftovers(&id);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_server_adopts_a_gvisor_sandbox_and_teardown_leaves_nothing() {
    if !have_runsc() {
        return;
    }
    let mut s = Server::start(&[]);
    let v = s
        .create(json!({"isolation": "gvisor", "timeout": 600, "network": {"mode": "all"}}))
        .await;
    let id = v["id"].as_str().expect("id").to_owned();
    let (st, v) = call(
        s.req(Method::POST, &format!("/v1/sandboxes/{id}/exec")).json(&json!({
            "command": "while :; do date +%s%N > /tmp/beat.new; mv /tmp/beat.new /tmp/beat; sleep 0.05; done",
            "background": true,
        })),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    // Its network: the link is in its namespace and resolv.conf names the resolver.
    let r = exec(&s, &id, "cat /etc/resolv.conf").await;
    assert!(
        r["stdout"]
            .as_str()
            .unwrap_or_default()
            .contains("nameserver"),
        "{r}"
    );
    s.kill9();
    assert!(
        !processes_of(&id).is_empty(),
        "the sandbox died with the server"
    );
    s.restart();
    let (st, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["state"], "running", "{v}");
    let r = exec(
        &s,
        &id,
        "a=$(cat /tmp/beat); sleep 0.3; b=$(cat /tmp/beat); [ $b -gt $a ] && echo alive",
    )
    .await;
    assert_eq!(r["stdout"], "alive\n", "{r}");
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(leftovers(&id), Vec::<String>::new());
    assert_eq!(runsc_state_of(&s, &id), Vec::<String>::new());
    // A server stopped with a gVisor sandbox running: the clean stop destroys it fully.
    let v = s.create(json!({"isolation": "gvisor"})).await;
    let id2 = v["id"].as_str().expect("id").to_owned();
    s.stop();
    assert_eq!(leftovers(&id2), Vec::<String>::new());
    assert_eq!(runsc_state_of(&s, &id2), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_and_resume_in_both_modes() {
    if !have_runsc() {
        return;
    }
    let s = Server::start(&[]);
    let v = s
        .create(json!({"isolation": "gvisor", "timeout": 600}))
        .await;
    let id = v["id"].as_str().expect("id").to_owned();
    exec(&s, &id, "echo kept > /home/user/f").await;
    for mode in ["full", "filesystem"] {
        let (st, v) = call(
            s.req(Method::POST, &format!("/v1/sandboxes/{id}/pause"))
                .json(&json!({ "mode": mode })),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{mode}: {v}");
        assert_eq!(v["paused_mode"], mode, "{v}");
        let (st, v) = call(
            s.req(Method::POST, &format!("/v1/sandboxes/{id}/resume"))
                .json(&json!({})),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{mode}: {v}");
        let r = exec(&s, &id, "cat /home/user/f").await;
        assert_eq!(r["stdout"], "kept\n", "{mode}: {r}");
        assert!(on_gvisor(&s, &id).await, "{mode}: resumed off gVisor");
    }
    let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(leftovers(&id), Vec::<String>::new());
    assert_eq!(runsc_state_of(&s, &id), Vec::<String>::new());
}

/// Runs the `paddock` CLI against `s` with its admin key.
fn cli(s: &Server, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(args)
        .env("PADDOCK_URL", &s.url)
        .env("PADDOCK_API_KEY", &s.admin_key)
        .env_remove("PADDOCK_DATA_DIR")
        .env_remove("PADDOCK_ISOLATION_DEFAULT")
        .output()
        .expect("running paddock")
}

/// The backend `GET /v1/sandboxes/{id}` reports.
async fn isolation_of(s: &Server, id: &str) -> String {
    let (st, v) = call(s.req(Method::GET, &format!("/v1/sandboxes/{id}"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["isolation"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn build_file_isolation_and_the_cli_flags_choose_the_backend() {
    if !have_runsc() {
        return;
    }
    // A native server: only the template and the flags choose gVisor here.
    let s = Server::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("Paddockfile");
    std::fs::write(&file, "FROM base\nISOLATION gvisor\n").expect("build file");
    let o = cli(&s, &["template", "build", "gv", &file.to_string_lossy()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let create = |args: &[&str]| {
        let mut v = vec!["create", "--timeout", "5m"];
        v.extend_from_slice(args);
        let o = cli(&s, &v);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    // The template's ISOLATION is its sandboxes' default, and they do run on the Sentry.
    let from_template = create(&["--template", "gv"]);
    assert_eq!(isolation_of(&s, &from_template).await, "gvisor");
    assert!(on_gvisor(&s, &from_template).await, "not running on gVisor");
    // The request overrides the template.
    let overridden = create(&["--template", "gv", "--isolation", "native"]);
    assert_eq!(isolation_of(&s, &overridden).await, "native");
    assert!(!on_gvisor(&s, &overridden).await);
    // `paddock create --isolation gvisor` on base.
    let flagged = create(&["--isolation", "gvisor"]);
    assert_eq!(isolation_of(&s, &flagged).await, "gvisor");
    assert!(on_gvisor(&s, &flagged).await);
    // `paddock create` with neither: the server's default.
    let plain = create(&[]);
    assert_eq!(isolation_of(&s, &plain).await, "native");

    // Bad values: the CLI refuses them naming the choices, before anything is sent.
    let o = cli(&s, &["create", "--isolation", "kvm"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("native") && err.contains("gvisor"), "{err}");
    // A build file naming an unknown backend fails at its line and leaves no template.
    std::fs::write(&file, "FROM base\nISOLATION vm\n").expect("build file");
    let o = cli(&s, &["template", "build", "bad", &file.to_string_lossy()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ISOLATION") && err.contains("gvisor"), "{err}");
    let (st, _) = call(s.req(Method::GET, "/v1/templates/bad")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // `serve --isolation-default` with an unknown backend does not start.
    let data = tempfile::tempdir().expect("tempdir");
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--isolation-default",
            "vm",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("paddock serve");
    let status = wait_or_kill(&mut serve, Duration::from_secs(30)).expect("serve exits");
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert!(
        err.contains("--isolation-default") && err.contains("gvisor"),
        "{err}"
    );

    for id in [&from_template, &overridden, &flagged, &plain] {
        let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
        assert_eq!(st, StatusCode::NO_CONTENT);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_is_shared_between_gvisor_and_native_sandboxes() {
    if !have_runsc() {
        return;
    }
    let s = Server::start(&[]);
    let (st, v) = call(
        s.req(Method::POST, "/v1/volumes")
            .json(&json!({"name": "shared", "size": "16M"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let create = |isolation: &str, read_only: bool| {
        s.req(Method::POST, "/v1/sandboxes").json(&json!({
            "isolation": isolation,
            "timeout": 600,
            "volumes": [{"name": "shared", "path": "/data", "read_only": read_only}],
        }))
    };
    let (st, g) = call(create("gvisor", false)).await;
    assert_eq!(st, StatusCode::CREATED, "{g}");
    let g = g["id"].as_str().expect("id").to_owned();
    assert!(on_gvisor(&s, &g).await);
    let (st, n) = call(create("native", false)).await;
    assert_eq!(st, StatusCode::CREATED, "{n}");
    let n = n["id"].as_str().expect("id").to_owned();
    let (st, r) = call(create("gvisor", true)).await;
    assert_eq!(st, StatusCode::CREATED, "{r}");
    let r = r["id"].as_str().expect("id").to_owned();

    // gVisor writes, native reads; native writes, both gVisor sandboxes see it at once (the
    // volume is a shared mount for the Sentry, not cached as the root is).
    let w = exec(&s, &g, "echo from-gvisor > /data/f && stat -c '%U' /data/f").await;
    assert_eq!(w["stdout"], "user\n", "{w}");
    let w = exec(&s, &n, "cat /data/f && echo from-native > /data/f").await;
    assert_eq!(w["stdout"], "from-gvisor\n", "{w}");
    for id in [&g, &r] {
        let w = exec(&s, id, "cat /data/f").await;
        assert_eq!(w["stdout"], "from-native\n", "{w}");
    }
    // Read-only is read-only under the Sentry too.
    let w = exec(&s, &r, "echo x > /data/f").await;
    assert_ne!(w["exit_code"], 0, "{w}");
    for id in [&g, &n, &r] {
        let (st, _) = call(s.req(Method::DELETE, &format!("/v1/sandboxes/{id}"))).await;
        assert_eq!(st, StatusCode::NO_CONTENT);
    }
}
