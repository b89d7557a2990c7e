//! What the setup stage makes of an image: a template linking its setup paths to the host is
//! refused and touches nothing; an image without glibc (busybox) runs.

use super::*;

/// A root filesystem with no glibc at all (`support/rootfs.rs`).
fn busybox_rootfs() -> Vec<u8> {
    busybox_rootfs_with(&[])
}

/// [`busybox_rootfs`] with more entries: a directory (`None`) or a symlink to the target.
fn busybox_rootfs_with(extra: &[(&str, Option<&str>)]) -> Vec<u8> {
    server::rootfs::busybox(server::rootfs::Busybox {
        applets: &[
            "sh", "cat", "echo", "id", "ls", "test", "wc", "whoami", "env", "sleep",
        ],
        groups: "wheel:x:10:user\n",
        extra,
    })
}

/// The setup stage runs as host root before `pivot_root`, where a symlink in a template
/// (from an image, or a snapshot of a layer a sandbox's root changed) resolves on the host.
/// A template pointing the directories and files the setup stage makes (`/opt/paddock`,
/// the `sudo` mount point, `/tmp`) at host paths is refused: the create fails with 422
/// `template_unusable` naming the path in the sandbox (never the host's), E2B's create with
/// E2B's `{"code": 422, "message"}`, and nothing is made or truncated on the host.
#[tokio::test(flavor = "multi_thread")]
async fn templates_linking_setup_paths_to_the_host_are_refused_and_touch_nothing() {
    let s = server::Server::start(&[]);
    let host = std::path::PathBuf::from(format!(
        "/var/tmp/paddock-setup-victim-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&host);
    std::fs::create_dir_all(&host).unwrap();
    let victim = host.join("victim");
    std::fs::write(&victim, "keep").unwrap();
    let (h, v) = (host.to_str().unwrap(), victim.to_str().unwrap());
    type Entries<'a> = Vec<(&'a str, Option<&'a str>)>;
    // (template, its entries, the path the refusal names).
    let cases: [(&str, Entries, &str); 4] = [
        (
            "evil-opt",
            vec![("opt", None), ("opt/paddock", Some(h))],
            "/opt/paddock",
        ),
        (
            "evil-bin",
            vec![
                ("opt", None),
                ("opt/paddock", None),
                ("opt/paddock/bin", Some(h)),
            ],
            "/opt/paddock/bin",
        ),
        (
            "evil-sudo",
            vec![
                ("opt", None),
                ("opt/paddock", None),
                ("opt/paddock/bin", None),
                ("opt/paddock/bin/sudo", Some(v)),
            ],
            "/opt/paddock/bin/sudo",
        ),
        ("evil-run", vec![("run", Some(h))], ""),
    ];
    for (name, extra, refused) in &cases {
        let (st, t) = server::call(
            s.req(
                reqwest::Method::POST,
                &format!("/v1/templates/{name}/import"),
            )
            .header("content-type", "application/x-tar")
            .body(busybox_rootfs_with(extra)),
        )
        .await;
        assert_eq!(st, reqwest::StatusCode::CREATED, "{name}: {t}");
        let r = s
            .req(reqwest::Method::POST, "/v1/sandboxes")
            .json(&serde_json::json!({"template": name, "secrets": {}}))
            .send()
            .await
            .unwrap();
        let st = r.status();
        let body: serde_json::Value = r.json().await.unwrap();
        if *name == "evil-run" {
            // `/run` is only made for secret files: without them the sandbox starts, and
            // nothing was made through the link either.
            assert_eq!(st, reqwest::StatusCode::CREATED, "{name}: {body}");
        } else {
            assert_eq!(
                st,
                reqwest::StatusCode::UNPROCESSABLE_ENTITY,
                "{name}: {body}"
            );
            assert_eq!(body["code"], "template_unusable", "{name}: {body}");
            let msg = body["message"].as_str().unwrap_or_default();
            let want =
                format!("template {name} cannot be used: the template's {refused} is a symlink");
            assert!(msg.starts_with(&want), "{name}: {body}");
            assert!(!msg.contains(h), "{name}: the host path leaked: {msg}");
            // E2B's create: the same refusal in E2B's shape.
            let r = s
                .e2b_api(reqwest::Method::POST, "/v2/sandboxes")
                .json(&serde_json::json!({"templateID": name, "timeout": 60}))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                reqwest::StatusCode::UNPROCESSABLE_ENTITY,
                "{name}"
            );
            let e2b: serde_json::Value = r.json().await.unwrap();
            assert_eq!(e2b["code"], 422, "{name}: {e2b}");
            assert_eq!(e2b["message"], msg, "{name}: {e2b}");
        }
        let mut left: Vec<String> = std::fs::read_dir(&host)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["victim"],
            "{name}: the setup stage wrote on the host"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep", "{name}");
    }
    std::fs::remove_dir_all(&host).unwrap();
}

/// An image without glibc (busybox, as Alpine-style images are) runs: the agent brings its
/// own loader and C library (`/opt/paddock/lib`), a shell command line runs in `/bin/sh`
/// when there is no bash, files move in and out, and `sudo` works for the default user.
#[tokio::test(flavor = "multi_thread")]
async fn an_image_without_glibc_runs_commands_files_and_sudo() {
    let s = server::Server::start(&[]);
    // The bundle's copy of the shim runs on the bundle's loader, where the runtime puts it.
    let bundles: Vec<_> = std::fs::read_dir(s.data.join("agent-lib"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join(paddock_core::AGENT_SUDO))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(bundles.len(), 1, "{bundles:?}");
    assert_eq!(
        paddock_runtime::agentlib::elf_interpreter(&bundles[0]).unwrap(),
        Some(Path::new(paddock_core::AGENT_LIB_DIR).join(paddock_core::AGENT_LOADER))
    );
    let (st, t) = server::call(
        s.req(reqwest::Method::POST, "/v1/templates/busybox/import")
            .header("content-type", "application/x-tar")
            .body(busybox_rootfs()),
    )
    .await;
    assert_eq!(st, reqwest::StatusCode::CREATED, "{t}");
    let v = s.create(serde_json::json!({"template": "busybox"})).await;
    let id = v["id"].as_str().unwrap().to_owned();
    let exec = |body: serde_json::Value| {
        server::call(
            s.req(reqwest::Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                .json(&body),
        )
    };

    // The image itself has no glibc and no bash; PID 1 is the agent all the same.
    let (st, r) = exec(serde_json::json!({"command":
        "test -e /lib64/ld-linux-x86-64.so.2 || test -e /lib/x86_64-linux-gnu/libc.so.6 || echo no-glibc; \
         test -e /bin/bash || echo no-bash; cat /proc/1/comm; echo $((6*7)) $(whoami)"}))
    .await;
    assert_eq!(st, reqwest::StatusCode::OK, "{r}");
    assert_eq!(
        r["stdout"], "no-glibc\nno-bash\npaddock-agent\n42 user\n",
        "{r}"
    );
    assert_eq!(r["exit_code"], 0, "{r}");

    // The agent's libraries are read-only to the sandbox's root.
    let (_, r) = exec(serde_json::json!({"cmd": ["/bin/sh", "-c",
        "echo x > /opt/paddock/lib/libc.so.6 && echo wrote; ls /opt/paddock/lib | wc -l"],
        "user": "root"}))
    .await;
    assert!(
        !r["stdout"].as_str().unwrap().contains("wrote"),
        "the sandbox wrote into the agent's libraries: {r}"
    );

    // Files in and out through the agent.
    let url = format!("/v1/sandboxes/{id}/files?path=/home/user/in.txt");
    let st = s
        .req(reqwest::Method::PUT, &url)
        .body("from the host\n")
        .send()
        .await
        .unwrap()
        .status();
    assert!(st.is_success(), "upload: {st}");
    let (_, r) = exec(serde_json::json!({"command": "cat in.txt; echo back > out.txt"})).await;
    assert_eq!(r["stdout"], "from the host\n", "{r}");
    let back = s
        .req(
            reqwest::Method::GET,
            &format!("/v1/sandboxes/{id}/files?path=/home/user/out.txt"),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(back, "back\n");

    // sudo (the shim runs on the agent's C library too) for a member of group wheel.
    let (_, r) = exec(serde_json::json!({"command": "sudo id -u; sudo whoami"})).await;
    assert_eq!(r["stdout"], "0\nroot\n", "{r}");
    assert_eq!(r["exit_code"], 0, "{r}");
}
