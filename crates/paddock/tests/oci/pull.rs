//! Pulls straight into the layer store: tags and digests, whiteouts, auth (basic and a bearer
//! token), image indexes and zstd, and the refusals (a tampered blob, a wrong diff id, no
//! registry) that leave nothing behind.

use super::*;

#[tokio::test]
async fn pull_by_tag_and_digest_with_whiteouts_and_overlay() {
    let reg = Registry::start(None);
    let (tars, config) = the_image();
    let reference = format!("{}/app:1", reg.host());
    push(&reference, &tars, config, None, &RegistryAuth::Anonymous).await;

    let (_d, store) = new_store();
    let seen = Mutex::new(Vec::new());
    let img = oci::pull(&store, &opts(reference.clone()), |p| {
        seen.lock().unwrap().push(p)
    })
    .await
    .unwrap();
    let ids: Vec<String> = tars.iter().map(|t| sha(t)).collect();
    assert_eq!(img.layers, ids);
    assert!(img.digest.starts_with("sha256:"));
    assert!(img.bytes_downloaded > 0);
    {
        let seen = seen.lock().unwrap();
        for id in &ids {
            let last = seen
                .iter()
                .rev()
                .find(|p| &p.layer == id)
                .expect("progress");
            assert_eq!(last.done, last.total);
        }
    }
    assert_eq!(
        img.config.env,
        vec!["PATH=/usr/local/bin:/usr/bin:/bin", "GREETING=hello"]
    );
    assert_eq!(img.config.working_dir.as_deref(), Some("/app"));
    assert_eq!(img.config.user.as_deref(), Some("1000:1000"));
    assert_eq!(img.config.entrypoint, vec!["/app/main.sh"]);
    assert_eq!(img.config.cmd, vec!["--serve"]);
    assert_eq!(img.config.exposed_ports, vec![8080, 9090]);

    // The layers in overlay lower format.
    let [l1, l2, l3] = [0, 1, 2].map(|i| store.path(&ids[i]));
    assert_eq!(
        std::fs::read(l1.join("file")).unwrap(),
        b"deleted in layer 2\n"
    );
    let wh = std::fs::symlink_metadata(l2.join("file")).unwrap();
    assert!(wh.file_type().is_char_device(), "whiteout is a char device");
    assert_eq!(wh.rdev(), 0, "whiteout is 0:0");
    assert!(!l2.join(".wh.file").exists());
    let mut v = [0u8; 4];
    let n = rustix::fs::getxattr(l2.join("opq"), "trusted.overlay.opaque", &mut v[..]).unwrap();
    assert_eq!(&v[..n], b"y");
    assert!(!l2.join("opq/.wh..wh..opq").exists());
    let main = std::fs::metadata(l3.join("app/main.sh")).unwrap();
    assert_eq!(main.permissions().mode() & 0o7777, 0o4755);
    assert_eq!((main.uid(), main.gid()), (1000, 1000));
    assert_eq!(
        std::fs::read_link(l3.join("app/hostname")).unwrap(),
        Path::new("/etc/hostname")
    );
    let mut expect_names: Vec<String> = ids
        .iter()
        .map(|i| i.strip_prefix("sha256:").unwrap().to_string())
        .collect();
    expect_names.sort();
    assert_eq!(names(&store), expect_names);
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 3);

    // Again by tag, then by digest: nothing downloaded.
    let again = oci::pull(&store, &opts(reference.clone()), |_| {})
        .await
        .unwrap();
    assert_eq!(again.bytes_downloaded, 0);
    assert_eq!(again.digest, img.digest);
    let by_digest = format!("{}/app@{}", reg.host(), img.digest);
    let again = oci::pull(&store, &opts(by_digest.clone()), |_| {})
        .await
        .unwrap();
    assert_eq!(again.bytes_downloaded, 0);
    assert_eq!(again.layers, ids);
    // By digest into an empty store: downloads everything.
    let (_d2, store2) = new_store();
    let fresh = oci::pull(&store2, &opts(by_digest), |_| {}).await.unwrap();
    assert_eq!(fresh.layers, ids);
    assert_eq!(fresh.bytes_downloaded, img.bytes_downloaded);

    // Unknown tag.
    let e = oci::pull(&store, &opts(format!("{}/app:nope", reg.host())), |_| {})
        .await
        .unwrap_err()
        .to_string();
    eprintln!("error: {e}");
    assert!(e.contains("not found"), "{e}");
    let e = oci::pull(&store, &opts(format!("{}/nothing:1", reg.host())), |_| {})
        .await
        .unwrap_err()
        .to_string();
    eprintln!("error: {e}");
    assert!(e.contains("not found"), "{e}");

    // End to end: the layers stacked by overlayfs.
    let mnt = tempfile::tempdir_in("/var/tmp").unwrap();
    let lower = format!("{}:{}:{}", l3.display(), l2.display(), l1.display());
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("ro,lowerdir={lower}"))
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(st.success(), "overlay mount");
    let check = || {
        let m = mnt.path();
        assert!(!m.join("file").exists(), "whited-out file is gone");
        assert_eq!(std::fs::read(m.join("keep")).unwrap(), b"kept\n");
        let mut opq: Vec<String> = std::fs::read_dir(m.join("opq"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        opq.sort();
        assert_eq!(opq, vec!["new"], "opaque dir shows only the upper contents");
        assert_eq!(std::fs::read(m.join("etc/hostname")).unwrap(), b"paddock\n");
        assert!(m.join("app/main.sh").exists());
    };
    let r = std::panic::catch_unwind(check);
    let st = Command::new("umount").arg(mnt.path()).status().unwrap();
    assert!(st.success(), "umount");
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

#[tokio::test]
async fn registry_with_auth() {
    let reg = Registry::start(Some(("paddock", "s3cret")));
    let reference = format!("{}/private/app:1", reg.host());
    let tars = vec![layer(&[E::File("secret", b"only with credentials", 0o600)])];
    let auth = RegistryAuth::Basic("paddock".into(), "s3cret".into());
    push(&reference, &tars, serde_json::json!({}), None, &auth).await;

    let (_d, store) = new_store();
    let e = oci::pull(&store, &opts(reference.clone()), |_| {})
        .await
        .unwrap_err()
        .to_string();
    eprintln!("error: {e}");
    assert!(e.contains("401"), "{e}");
    assert!(e.contains(&reg.host()), "{e}");

    let mut wrong = opts(reference.clone());
    wrong.username = Some("paddock".into());
    wrong.password = Some("wrong".into());
    let e = oci::pull(&store, &wrong, |_| {})
        .await
        .unwrap_err()
        .to_string();
    eprintln!("error: {e}");
    assert!(e.contains("401"), "{e}");
    assert!(names(&store).is_empty());

    let mut right = opts(reference);
    right.username = Some("paddock".into());
    right.password = Some("s3cret".into());
    let img = oci::pull(&store, &right, |_| {}).await.unwrap();
    assert_eq!(img.layers, vec![sha(&tars[0])]);
    assert_eq!(
        std::fs::read(store.path(&img.layers[0]).join("secret")).unwrap(),
        b"only with credentials"
    );
}

#[tokio::test]
async fn tampered_blob_and_wrong_diff_id_leave_nothing() {
    let reg = Registry::start(None);
    let (_d, store) = new_store();

    // A blob changed in the registry's storage after the push.
    let tar = layer(&[E::File("data", &[b'x'; 100_000], 0o644)]);
    let gz = gzip(&tar);
    let reference = format!("{}/tampered:1", reg.host());
    push(
        &reference,
        std::slice::from_ref(&tar),
        serde_json::json!({}),
        None,
        &RegistryAuth::Anonymous,
    )
    .await;
    let blob = reg.blob_path(&sha(&gz));
    let mut bytes = std::fs::read(&blob).unwrap();
    assert_eq!(bytes, gz);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let e = oci::pull(&store, &opts(reference), |_| {})
        .await
        .unwrap_err()
        .to_string();
    eprintln!("error: {e}");
    assert!(e.to_lowercase().contains("digest"), "{e}");
    assert!(!store.contains(&sha(&tar)));
    assert!(names(&store).is_empty(), "left behind: {:?}", names(&store));

    // A config whose diff_id does not match the layer.
    let tar = layer(&[E::File("other", b"other content", 0o644)]);
    let reference = format!("{}/wrongdiff:1", reg.host());
    let bogus = sha(b"not the layer");
    push(
        &reference,
        std::slice::from_ref(&tar),
        serde_json::json!({}),
        Some(vec![bogus.clone()]),
        &RegistryAuth::Anonymous,
    )
    .await;
    let e = oci::pull(&store, &opts(reference), |_| {})
        .await
        .unwrap_err()
        .to_string();
    eprintln!("error: {e}");
    assert!(e.contains("does not match its diff_id"), "{e}");
    assert!(!store.contains(&bogus));
    assert!(!store.contains(&sha(&tar)));
    assert!(names(&store).is_empty(), "left behind: {:?}", names(&store));
}

#[tokio::test]
async fn unreachable_registry() {
    let port = free_port();
    let (_d, store) = new_store();
    let e = oci::pull(&store, &opts(format!("127.0.0.1:{port}/app:1")), |_| {})
        .await
        .unwrap_err()
        .to_string();
    eprintln!("error: {e}");
    assert!(
        e.contains(&format!("cannot reach registry 127.0.0.1:{port}")),
        "{e}"
    );
    assert!(e.contains("connection refused"), "{e}");
    assert!(names(&store).is_empty());
}

/// Pushes `tars` as one platform image with the given layer media type and compressor,
/// under `reference`; returns the manifest's (digest, size).
async fn push_platform(
    reference: &str,
    tars: &[Vec<u8>],
    media_type: &str,
    compress: fn(&[u8]) -> Vec<u8>,
    arch: &str,
) -> (String, i64) {
    let diff_ids: Vec<String> = tars.iter().map(|t| sha(t)).collect();
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Env": [format!("ARCH={arch}")]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let layers: Vec<ImageLayer> = tars
        .iter()
        .map(|t| ImageLayer::new(compress(t), media_type.to_string(), None))
        .collect();
    let config = Config::new(
        serde_json::to_vec(&config).unwrap(),
        "application/vnd.oci.image.config.v1+json".into(),
        None,
    );
    let r: Reference = reference.parse().unwrap();
    let c = client();
    c.push(&r, &layers, config, &RegistryAuth::Anonymous, None)
        .await
        .expect("push");
    let (raw, digest) = c
        .pull_manifest_raw(
            &r,
            &RegistryAuth::Anonymous,
            &[oci_client::manifest::OCI_IMAGE_MEDIA_TYPE],
        )
        .await
        .unwrap();
    (digest, raw.len() as i64)
}

#[tokio::test]
async fn image_index_platform_selection_and_zstd() {
    use oci_client::manifest::{ImageIndexEntry, OCI_IMAGE_MEDIA_TYPE, OciImageIndex, Platform};
    let reg = Registry::start(None);
    let amd = vec![layer(&[E::File("arch", b"amd64", 0o644)])];
    let arm = vec![
        layer(&[E::File("arch", b"arm64", 0o644)]),
        layer(&[E::File("zstd", b"uncompressed tar", 0o644)]),
    ];
    let zstd_compress: fn(&[u8]) -> Vec<u8> = |d| zstd::encode_all(d, 3).unwrap();
    let gzip_compress: fn(&[u8]) -> Vec<u8> = gzip;
    let plain: fn(&[u8]) -> Vec<u8> = |d| d.to_vec();
    let amd_m = push_platform(
        &format!("{}/multi:amd64", reg.host()),
        &amd,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        gzip_compress,
        "amd64",
    )
    .await;
    let arm_m = push_platform(
        &format!("{}/multi:arm64", reg.host()),
        &arm,
        "application/vnd.oci.image.layer.v1.tar+zstd",
        zstd_compress,
        "arm64",
    )
    .await;
    let plain_ref = format!("{}/plain:1", reg.host());
    let plain_layers = vec![layer(&[E::File("plain", b"not compressed", 0o644)])];
    push_platform(
        &plain_ref,
        &plain_layers,
        "application/vnd.oci.image.layer.v1.tar",
        plain,
        "amd64",
    )
    .await;
    let entry = |(digest, size): (String, i64), arch: &str| ImageIndexEntry {
        media_type: OCI_IMAGE_MEDIA_TYPE.into(),
        digest,
        size,
        platform: Some(Platform {
            architecture: arch.into(),
            os: "linux".into(),
            os_version: None,
            os_features: None,
            variant: None,
            features: None,
        }),
        annotations: None,
    };
    let index = OciImageIndex {
        schema_version: 2,
        media_type: Some(oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE.into()),
        manifests: vec![entry(arm_m.clone(), "arm64"), entry(amd_m.clone(), "amd64")],
        artifact_type: None,
        annotations: None,
    };
    let index_ref = format!("{}/multi:latest", reg.host());
    client()
        .push_manifest_list(&index_ref.parse().unwrap(), &RegistryAuth::Anonymous, index)
        .await
        .unwrap();

    let (_d, store) = new_store();
    let img = oci::pull(&store, &opts(index_ref.clone()), |_| {})
        .await
        .unwrap();
    assert_eq!(img.digest, amd_m.0, "linux/amd64 by default");
    assert_eq!(img.layers, vec![sha(&amd[0])]);
    assert_eq!(img.config.env, vec!["ARCH=amd64"]);

    let mut o = opts(index_ref.clone());
    o.platform = ("linux".into(), "arm64".into());
    let img = oci::pull(&store, &o, |_| {}).await.unwrap();
    assert_eq!(img.digest, arm_m.0);
    assert_eq!(img.layers, arm.iter().map(|t| sha(t)).collect::<Vec<_>>());
    assert_eq!(
        std::fs::read(store.path(&img.layers[1]).join("zstd")).unwrap(),
        b"uncompressed tar"
    );

    let mut o = opts(index_ref);
    o.platform = ("linux".into(), "riscv64".into());
    let e = oci::pull(&store, &o, |_| {}).await.unwrap_err().to_string();
    eprintln!("error: {e}");
    assert!(e.contains("riscv64"), "{e}");

    let img = oci::pull(&store, &opts(plain_ref), |_| {}).await.unwrap();
    assert_eq!(
        std::fs::read(store.path(&img.layers[0]).join("plain")).unwrap(),
        b"not compressed"
    );
}

/// A minimal registry that wants a bearer token (like Docker Hub): `/v2/` answers 401 with
/// a `Bearer realm=…/token` challenge, `/token` hands out a token for the right basic
/// credentials, and the manifest and blobs are served only with that token.
#[tokio::test]
async fn bearer_token_flow() {
    use axum::http::{HeaderMap, StatusCode, Uri, header};
    use axum::response::{IntoResponse, Response};
    use std::collections::HashMap;
    use std::sync::Arc;

    const BASIC: &str = "Basic cGFkZG9jazp0MGtlbg=="; // paddock:t0ken
    const TOKEN: &str = "opaque-token-123";
    let tar = layer(&[E::File("bearer", b"served with a token", 0o644)]);
    let gz = gzip(&tar);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"WorkingDir": "/srv"},
        "rootfs": {"type": "layers", "diff_ids": [sha(&tar)]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha(&gz), "size": gz.len()}],
    }))
    .unwrap();
    let mut blobs = HashMap::new();
    blobs.insert(sha(&config), config);
    blobs.insert(sha(&gz), gz);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let token_requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let state = (
        Arc::new(blobs),
        Arc::new(manifest.clone()),
        token_requests.clone(),
    );
    let handler = move |uri: Uri, headers: HeaderMap| {
        let (blobs, manifest, token_requests) = state.clone();
        async move {
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let challenge = || -> Response {
                (
                    StatusCode::UNAUTHORIZED,
                    [(
                        header::WWW_AUTHENTICATE,
                        format!(
                            "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\",scope=\"repository:img:pull\""
                        ),
                    )],
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                )
                    .into_response()
            };
            let path = uri.path();
            if path == "/token" {
                token_requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if auth == BASIC {
                    return axum::Json(serde_json::json!({"token": TOKEN})).into_response();
                }
                return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
            }
            if auth != format!("Bearer {TOKEN}") {
                return challenge();
            }
            if path == "/v2/" {
                return StatusCode::OK.into_response();
            }
            if path == "/v2/img/manifests/1" {
                return (
                    [
                        (
                            header::CONTENT_TYPE,
                            "application/vnd.oci.image.manifest.v1+json".to_string(),
                        ),
                        (
                            header::HeaderName::from_static("docker-content-digest"),
                            sha(&manifest),
                        ),
                    ],
                    (*manifest).clone(),
                )
                    .into_response();
            }
            if let Some(d) = path.strip_prefix("/v2/img/blobs/")
                && let Some(b) = blobs.get(d)
            {
                return b.clone().into_response();
            }
            (
                StatusCode::NOT_FOUND,
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            )
                .into_response()
        }
    };
    let app = axum::Router::new().fallback(handler);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let (_d, store) = new_store();
    let reference = format!("127.0.0.1:{port}/img:1");
    let e = oci::pull(&store, &opts(reference.clone()), |_| {})
        .await
        .unwrap_err()
        .to_string();
    eprintln!("error: {e}");
    assert!(e.contains("401"), "{e}");
    let mut wrong = opts(reference.clone());
    wrong.username = Some("paddock".into());
    wrong.password = Some("nope".into());
    let e = oci::pull(&store, &wrong, |_| {})
        .await
        .unwrap_err()
        .to_string();
    eprintln!("error: {e}");
    assert!(e.contains("401"), "{e}");
    assert!(names(&store).is_empty());

    let mut right = opts(reference);
    right.username = Some("paddock".into());
    right.password = Some("t0ken".into());
    let img = oci::pull(&store, &right, |_| {}).await.unwrap();
    assert_eq!(img.digest, sha(&manifest));
    assert_eq!(img.layers, vec![sha(&tar)]);
    assert_eq!(img.config.working_dir.as_deref(), Some("/srv"));
    assert_eq!(
        std::fs::read(store.path(&img.layers[0]).join("bearer")).unwrap(),
        b"served with a token"
    );
    assert!(token_requests.load(std::sync::atomic::Ordering::SeqCst) > 0);
    server.abort();
}
