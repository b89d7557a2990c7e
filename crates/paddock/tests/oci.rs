//! OCI pull into the layer store, against Debian's `docker-registry` on loopback.
//!
//! Each test starts its own registry (`/usr/bin/docker-registry`, storage in a temp dir,
//! `127.0.0.1:<free port>`, optionally htpasswd auth made with `htpasswd -B`), pushes images
//! built here (layers are tar streams made with the `tar` crate, gzip-compressed) with
//! `oci-client`, and pulls them with `paddock_runtime::oci::pull`. Needs root (layer owners,
//! whiteout device nodes, the `trusted.overlay.opaque` xattr, the overlay mount).

mod server;

use std::net::TcpListener;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use paddock_runtime::layerstore::LayerStore;
use paddock_runtime::oci::{self, PullOptions};
use sha2::{Digest, Sha256};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Only the registry this test started, by its own handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    fn start(auth: Option<(&str, &str)>) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: apt-get install docker-registry"
        );
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, pass)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("htpasswd (apache2-utils)");
            assert!(out.status.success());
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, &out.stdout).unwrap();
            config += &format!(
                "auth:\n  htpasswd:\n    realm: paddock-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .env("REGISTRY_HTTP_SECRET", "paddock-test")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut reg = Registry { child, port, dir };
        server::eventually_blocking(Duration::from_secs(20), "the registry starts", || {
            if let Ok(Some(status)) = reg.child.try_wait() {
                panic!(
                    "registry exited ({status}): {}",
                    std::fs::read_to_string(reg.dir.path().join("registry.log"))
                        .unwrap_or_default()
                );
            }
            std::net::TcpStream::connect(("127.0.0.1", port))
        });
        reg.port = port;
        reg
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file holding blob `digest` in the registry's storage.
    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
}

/// An uncompressed layer tar.
fn layer(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match e {
            E::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                if p.starts_with("app/") {
                    h.set_uid(1000);
                    h.set_gid(1000);
                }
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    g.write_all(data).unwrap();
    g.finish().unwrap()
}

fn client() -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    })
}

/// Pushes an image of `tars` (gzip-compressed) with `config` (its `rootfs.diff_ids` are
/// filled in unless `diff_ids` overrides them).
async fn push(
    reference: &str,
    tars: &[Vec<u8>],
    mut config: serde_json::Value,
    diff_ids: Option<Vec<String>>,
    auth: &RegistryAuth,
) {
    let diff_ids = diff_ids.unwrap_or_else(|| tars.iter().map(|t| sha(t)).collect());
    config["rootfs"] = serde_json::json!({"type": "layers", "diff_ids": diff_ids});
    config["architecture"] = "amd64".into();
    config["os"] = "linux".into();
    let layers: Vec<ImageLayer> = tars
        .iter()
        .map(|t| ImageLayer::oci_v1_gzip(gzip(t), None))
        .collect();
    let config = Config::new(
        serde_json::to_vec(&config).unwrap(),
        "application/vnd.oci.image.config.v1+json".into(),
        None,
    );
    let r: Reference = reference.parse().unwrap();
    client()
        .push(&r, &layers, config, auth, None)
        .await
        .expect("push");
}

fn opts(reference: String) -> PullOptions {
    let mut o = PullOptions::new(reference);
    o.insecure = true;
    o
}

fn new_store() -> (tempfile::TempDir, LayerStore) {
    let d = tempfile::tempdir_in("/var/tmp").unwrap();
    let s = LayerStore::open(d.path().join("templates/layers")).unwrap();
    (d, s)
}

/// Names in the store's root.
/// The layers in the store's directory (`.digests`, the layers' transfer digests, is not
/// one).
fn names(s: &LayerStore) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(s.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

fn the_image() -> (Vec<Vec<u8>>, serde_json::Value) {
    let l1 = layer(&[
        E::Dir("etc", 0o755),
        E::File("etc/hostname", b"paddock\n", 0o644),
        E::File("file", b"deleted in layer 2\n", 0o644),
        E::File("keep", b"kept\n", 0o644),
        E::Dir("opq", 0o755),
        E::File("opq/old1", b"1", 0o644),
        E::File("opq/old2", b"2", 0o644),
    ]);
    let l2 = layer(&[
        E::File(".wh.file", b"", 0o644),
        E::Dir("opq", 0o755),
        E::File("opq/.wh..wh..opq", b"", 0o644),
        E::File("opq/new", b"new", 0o644),
    ]);
    let l3 = layer(&[
        E::Dir("app", 0o755),
        E::File("app/main.sh", b"#!/bin/sh\necho hi\n", 0o4755),
        E::Symlink("app/hostname", "/etc/hostname"),
    ]);
    let config = serde_json::json!({
        "config": {
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "GREETING=hello"],
            "WorkingDir": "/app",
            "User": "1000:1000",
            "Entrypoint": ["/app/main.sh"],
            "Cmd": ["--serve"],
            "ExposedPorts": {"8080/tcp": {}, "9090/tcp": {}, "5353/udp": {}}
        }
    });
    (vec![l1, l2, l3], config)
}

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
/// the `sudo` mount point, `/tmp`) at host paths is refused: the create fails and nothing
/// is made or truncated on the host.
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
    let cases: [(&str, Entries); 4] = [
        ("evil-opt", vec![("opt", None), ("opt/paddock", Some(h))]),
        (
            "evil-bin",
            vec![
                ("opt", None),
                ("opt/paddock", None),
                ("opt/paddock/bin", Some(h)),
            ],
        ),
        (
            "evil-sudo",
            vec![
                ("opt", None),
                ("opt/paddock", None),
                ("opt/paddock/bin", None),
                ("opt/paddock/bin/sudo", Some(v)),
            ],
        ),
        ("evil-run", vec![("run", Some(h))]),
    ];
    for (name, extra) in &cases {
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
        let body = r.text().await.unwrap();
        if *name == "evil-run" {
            // `/run` is only made for secret files: without them the sandbox starts, and
            // nothing was made through the link either.
            assert_eq!(st, reqwest::StatusCode::CREATED, "{name}: {body}");
        } else {
            assert!(
                !st.is_success(),
                "{name}: a create must fail, got {st}: {body}"
            );
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
