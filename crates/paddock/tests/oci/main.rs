//! OCI pull into the layer store, against Debian's `docker-registry` on loopback.
//!
//! Each test starts its own registry (`/usr/bin/docker-registry`, storage in a temp dir,
//! `127.0.0.1:<free port>`, optionally htpasswd auth made with `htpasswd -B`), pushes images
//! built here (layers are tar streams made with the `tar` crate, gzip-compressed) with
//! `oci-client`, and pulls them with `paddock_runtime::oci::pull`. Needs root (layer owners,
//! whiteout device nodes, the `trusted.overlay.opaque` xattr, the overlay mount).

#[path = "../server/mod.rs"]
mod server;

mod api;
mod pull;
mod setup;

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
