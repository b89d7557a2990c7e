//! Templates through the API from a runnable root filesystem: pulled from the registry,
//! imported from a tarball, and the layers they leave listed and pruned.

use super::*;

/// A minimal runnable root filesystem as one layer: the host's `/bin/sh` (dash) and `cat`
/// with the libraries they and the (dynamically linked) agent need, `/etc/passwd`, and the
/// usual top-level directories.
fn runnable_rootfs() -> Vec<u8> {
    let mut files: Vec<PathBuf> = vec!["/bin/dash".into(), "/bin/cat".into()];
    for bin in ["/bin/dash", "/bin/cat", env!("CARGO_BIN_EXE_paddock-agent")] {
        let out = Command::new("ldd").arg(bin).output().expect("ldd");
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(p) = l
                .split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
            {
                files.push(p);
            }
        }
    }
    files.sort();
    files.dedup();
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(true);
    for d in [
        "bin",
        "etc",
        "lib",
        "lib64",
        "usr",
        "tmp",
        "proc",
        "dev",
        "root",
        "app",
        "home/user",
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(if d == "tmp" { 0o1777 } else { 0o755 });
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        if d == "home/user" {
            h.set_uid(1000);
            h.set_gid(1000);
        }
        b.append_data(&mut h, d, &[][..]).unwrap();
    }
    for f in &files {
        let name = f
            .to_string_lossy()
            .trim_start_matches('/')
            .replace("bin/dash", "bin/sh");
        b.append_path_with_name(f, &name).unwrap();
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n";
    for (p, data) in [
        ("etc/passwd", &passwd[..]),
        ("etc/group", b"root:x:0:\nuser:x:1000:\n"),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, p, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Through the API: `POST /v1/templates/{name}/pull` streams progress, registers the image
/// with its config as defaults, and a sandbox from it runs with the image's env, working
/// directory and user; a second pull downloads nothing; bad references are clear errors.
#[tokio::test(flavor = "multi_thread")]
async fn api_pull_then_a_sandbox_runs_the_image() {
    let reg = Registry::start(None);
    let app = layer(&[
        E::Dir("app", 0o755),
        E::File("app/msg", b"hello from the image\n", 0o644),
    ]);
    let config = serde_json::json!({"config": {
        "Env": ["GREETING=from-config", "PATH=/bin"],
        "WorkingDir": "/app",
        "User": "user",
        "ExposedPorts": {"8080/tcp": {}}
    }});
    let reference = format!("127.0.0.1:{}/tiny:1", reg.port);
    push(
        &reference,
        &[runnable_rootfs(), app],
        config,
        None,
        &RegistryAuth::Anonymous,
    )
    .await;

    let s = server::Server::start(&[]);
    let pull = |name: &str, image: &str| {
        s.req(reqwest::Method::POST, &format!("/v1/templates/{name}/pull"))
            .json(&serde_json::json!({"image": image, "insecure": true}))
    };
    let text = pull("tiny", &reference)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(events.last().unwrap()["event"], "done", "{text}");
    assert!(
        events.iter().any(|e| e["event"] == "output"),
        "no progress: {text}"
    );
    let (_, t) = server::call(s.req(reqwest::Method::GET, "/v1/templates/tiny")).await;
    assert_eq!(t["config"]["workdir"], "/app", "{t}");
    assert_eq!(t["config"]["env"]["GREETING"], "from-config", "{t}");
    assert_eq!(t["config"]["ports"], serde_json::json!([8080]), "{t}");
    assert_eq!(t["layers"].as_array().unwrap().len(), 2, "{t}");

    let v = s.create(serde_json::json!({"template": "tiny"})).await;
    let id = v["id"].as_str().unwrap();
    let (st, r) = server::call(
        s.req(reqwest::Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&serde_json::json!({"cmd": ["/bin/sh", "-c", "echo $PWD $GREETING; cat msg; cat /etc/passwd | cat >/dev/null && echo ok"]})),
    )
    .await;
    assert_eq!(st, reqwest::StatusCode::OK, "{r}");
    assert_eq!(
        r["stdout"], "/app from-config\nhello from the image\nok\n",
        "{r}"
    );

    // Pulled again under another name: every layer is already in the store.
    let text = pull("tiny2", &reference)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("\"cached_steps\":1"), "{text}");
    // A missing tag and an unreachable registry are clear errors in the stream.
    let text = pull("nope", &format!("127.0.0.1:{}/tiny:nope", reg.port))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("\"event\":\"error\"") && text.contains("not found"),
        "{text}"
    );
    let (st, _) = server::call(s.req(reqwest::Method::GET, "/v1/templates/nope")).await;
    assert_eq!(st, reqwest::StatusCode::NOT_FOUND);
    let text = pull("gone", &format!("127.0.0.1:{}/x:1", free_port()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("cannot reach registry"), "{text}");
}

/// `POST /v1/templates/{name}/import`: a root filesystem tarball (plain or gzip) becomes a
/// template a sandbox runs from; hostile tarballs (`..`, a symlink written through, a device
/// node) are refused with 400 and leave nothing in the layer store.
#[tokio::test(flavor = "multi_thread")]
async fn api_import_of_a_root_filesystem_tarball() {
    let s = server::Server::start(&[]);
    let rootfs = runnable_rootfs();
    let import = |name: &str, ct: &str, body: Vec<u8>| {
        s.req(
            reqwest::Method::POST,
            &format!("/v1/templates/{name}/import"),
        )
        .header("content-type", ct.to_owned())
        .body(body)
    };
    let (st, t) = server::call(import("rootfs", "application/gzip", gzip(&rootfs))).await;
    assert_eq!(st, reqwest::StatusCode::CREATED, "{t}");
    assert_eq!(t["layers"].as_array().unwrap().len(), 1, "{t}");
    assert!(
        t["created_by"]
            .as_str()
            .is_some_and(|k| k.starts_with("key_")),
        "{t}"
    );
    let v = s.create(serde_json::json!({"template": "rootfs"})).await;
    let id = v["id"].as_str().unwrap();
    let (st, r) = server::call(
        s.req(reqwest::Method::POST, &format!("/v1/sandboxes/{id}/exec"))
            .json(&serde_json::json!({"cmd": ["/bin/sh", "-c", "cat /etc/passwd | cat | wc -l 2>/dev/null || echo $PWD"]})),
    )
    .await;
    assert_eq!(st, reqwest::StatusCode::OK, "{r}");
    assert_eq!(r["exit_code"], 0, "{r}");

    let layers = s.data.join("templates/layers");
    let before = std::fs::read_dir(&layers).unwrap().count();
    // `..`, a symlink pointing out then a file through it, a device node.
    let raw = |path: &str, kind: tar::EntryType, link: Option<&str>| {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_size(if kind == tar::EntryType::Regular {
            1
        } else {
            0
        });
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        // Bypass the tar crate's own path checks: write the name into the header.
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(
            &h,
            if kind == tar::EntryType::Regular {
                &b"x"[..]
            } else {
                &b""[..]
            },
        )
        .unwrap();
        b.into_inner().unwrap()
    };
    let mut escape = raw("out", tar::EntryType::Symlink, Some("/tmp"));
    escape.truncate(escape.len() - 1024);
    escape.extend(raw("out/evil", tar::EntryType::Regular, None));
    for (what, body) in [
        ("dotdot", raw("../evil", tar::EntryType::Regular, None)),
        ("symlink escape", escape),
        ("device", raw("dev/sda", tar::EntryType::Block, None)),
    ] {
        let (st, v) = server::call(import("bad", "application/x-tar", body)).await;
        assert_eq!(st, reqwest::StatusCode::BAD_REQUEST, "{what}: {v}");
    }
    assert!(!Path::new("/tmp/evil").exists());
    assert_eq!(
        std::fs::read_dir(&layers).unwrap().count(),
        before,
        "a bad import left something"
    );
    let (st, _) = server::call(s.req(reqwest::Method::GET, "/v1/templates/bad")).await;
    assert_eq!(st, reqwest::StatusCode::NOT_FOUND);
    let (st, _) = server::call(import("bad", "text/plain", b"x".to_vec())).await;
    assert_eq!(st, reqwest::StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

/// `GET /v1/layers` shows each layer with the templates using it; `POST /v1/layers/prune`
/// removes only the layers no template uses (here the one a re-import replaced), keeps a
/// running sandbox's, is refused while a template is being made, and needs an admin key.
#[tokio::test(flavor = "multi_thread")]
async fn api_layers_list_and_prune_only_unused() {
    use reqwest::{Method, StatusCode};
    let s = server::Server::start(&[]);
    let import = |name: &str, body: reqwest::Body| {
        s.req(Method::POST, &format!("/v1/templates/{name}/import"))
            .header("content-type", "application/x-tar")
            .body(body)
    };
    let v1 = runnable_rootfs();
    // The same tree plus one file: another layer.
    let mut v2 = v1.clone();
    v2.truncate(v2.len() - 1024);
    v2.extend(layer(&[E::File("etc/version", b"2", 0o644)]));
    let (st, t1) = server::call(import("app", v1.clone().into())).await;
    assert_eq!(st, StatusCode::CREATED, "{t1}");
    let (st, t2) = server::call(import("app", v2.into())).await;
    assert_eq!(st, StatusCode::CREATED, "{t2}");
    let (old, new) = (t1["layers"][0].clone(), t2["layers"][0].clone());
    assert_ne!(old, new);
    let sbx = s.create(serde_json::json!({"template": "app"})).await;
    let id = sbx["id"].as_str().unwrap().to_owned();

    let (st, l) = server::call(s.req(Method::GET, "/v1/layers")).await;
    assert_eq!(st, StatusCode::OK, "{l}");
    let users = |l: &serde_json::Value, layer: &serde_json::Value| {
        l["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == *layer)
            .map(|x| x["templates"].clone())
    };
    assert_eq!(users(&l, &old), Some(serde_json::json!([])), "{l}");
    assert_eq!(users(&l, &new), Some(serde_json::json!(["app"])), "{l}");
    assert!(l["total_bytes"].as_u64().unwrap() > 0, "{l}");

    // Tenants may neither look nor prune.
    let (_, tenant) = s.new_key(serde_json::json!({"name": "tenant"})).await;
    for (m, path) in [
        (Method::GET, "/v1/layers"),
        (Method::POST, "/v1/layers/prune"),
    ] {
        let (st, v) = server::call(s.req_as(&tenant, m, path)).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{path}: {v}");
    }

    // The CLI shows the same.
    let cli = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_paddock"))
            .args(args)
            .env("PADDOCK_URL", &s.url)
            .env("PADDOCK_API_KEY", &s.admin_key)
            .env_remove("PADDOCK_DATA_DIR")
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let table = cli(&["template", "layers"]);
    assert!(
        table.contains("(unused)") && table.contains(" app\n") && table.contains("total "),
        "{table}"
    );

    let (st, p) = server::call(s.req(Method::POST, "/v1/layers/prune")).await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!(p["removed"].as_array().unwrap().len(), 1, "{p}");
    assert_eq!(p["removed"][0]["id"], old, "{p}");
    assert!(p["freed_bytes"].as_u64().unwrap() > 0, "{p}");
    let dir = |l: &serde_json::Value| {
        s.data
            .join("templates/layers")
            .join(l.as_str().unwrap().strip_prefix("sha256:").unwrap())
    };
    assert!(!dir(&old).exists());
    assert!(dir(&new).is_dir());
    // The running sandbox and a new one still work on the kept layer.
    for sid in [
        id,
        s.create(serde_json::json!({"template": "app"})).await["id"]
            .as_str()
            .unwrap()
            .to_owned(),
    ] {
        let (st, r) = server::call(
            s.req(Method::POST, &format!("/v1/sandboxes/{sid}/exec"))
                .json(&serde_json::json!({"cmd": ["/bin/cat", "/etc/version"]})),
        )
        .await;
        assert_eq!(
            (st, r["stdout"].as_str()),
            (StatusCode::OK, Some("2")),
            "{r}"
        );
    }
    assert_eq!(
        cli(&["template", "prune"]),
        "removed 0 unused layers, freed 0 B\n"
    );
    let (st, p) = server::call(s.req(Method::POST, "/v1/layers/prune")).await;
    assert_eq!(
        (st, p["removed"].clone()),
        (StatusCode::OK, serde_json::json!([])),
        "{p}"
    );

    // While an import is under way its layer belongs to no template yet: prune waits its
    // turn (409) and the import completes.
    // The import is written by hand on a raw connection, so its body provably stops
    // half-way until the prune was refused.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/templates/slow/import HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        s.admin_key,
        v1.len()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(&v1[..512]).await.unwrap();
    let mut refused = None;
    let mut last = None;
    for _ in 0..100 {
        let (st, v) = server::call(s.req(Method::POST, "/v1/layers/prune")).await;
        if st == StatusCode::CONFLICT {
            refused = Some(v);
            break;
        }
        last = Some((st, v));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if refused.is_none() {
        let mut b = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(1), c.read(&mut b)).await;
        panic!(
            "prune was never refused during the import: {last:?}; import: {n:?} {}",
            String::from_utf8_lossy(&b[..256])
        );
    }
    let refused = refused.unwrap();
    assert!(
        refused.to_string().contains("template slow is being made"),
        "{refused}"
    );
    c.write_all(&v1[512..]).await.unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let (st, t) = server::call(s.req(Method::GET, "/v1/templates/slow")).await;
    assert_eq!(st, StatusCode::OK, "{t}");
    assert!(dir(&t["layers"][0]).is_dir());
}
