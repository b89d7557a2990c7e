//! Pulling OCI images from a registry into the [`LayerStore`].
//!
//! [`pull`] resolves the reference (an image index is narrowed to the requested platform),
//! reads the manifest and the image config, and for each layer whose `diff_id` is not in the
//! store yet: downloads the blob to a temp file in the store's root while hashing it,
//! checks the blob digest, then decompresses it (gzip, zstd or none, by media type) and
//! unpacks it with [`LayerStore::unpack`], which checks the `diff_id`. Layers already in the
//! store are not downloaded at all. Registry auth (basic, and the bearer-token exchange a
//! registry asks for with `WWW-Authenticate`) is the `oci-client` crate's.

use std::io::{BufReader, Read, Write};
use std::time::Duration;

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Result, RuntimeError};
use crate::layerstore::LayerStore;

/// Largest image config accepted (the client reads it into memory).
pub const MAX_CONFIG_BYTES: usize = 4 << 20;
/// [`Progress`] is reported at the start of each layer download, then at least this many
/// bytes apart, and at its end.
pub const PROGRESS_STEP: u64 = 1 << 20;
/// Largest zstd window accepted (128 MiB), against memory exhaustion by a crafted frame.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// What to pull and how.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// `host[:port]/name[:tag][@digest]`; Docker Hub short names work (`python:3.12`).
    pub reference: String,
    /// Basic credentials (also used for a registry's bearer-token exchange).
    pub username: Option<String>,
    pub password: Option<String>,
    /// Plain HTTP instead of HTTPS (for loopback registries).
    pub insecure: bool,
    /// `(os, architecture)` picked from an image index.
    pub platform: (String, String),
}

impl PullOptions {
    /// Options for `reference`, anonymous, HTTPS, `linux/amd64`.
    pub fn new(reference: impl Into<String>) -> PullOptions {
        PullOptions {
            reference: reference.into(),
            username: None,
            password: None,
            insecure: false,
            platform: ("linux".into(), "amd64".into()),
        }
    }
}

/// The parts of an image config that become a template's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// TCP ports from `ExposedPorts` (`"8080/tcp"`); UDP ports are left out.
    pub exposed_ports: Vec<u16>,
}

/// A pulled image.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The manifest digest (of the platform manifest, when the reference named an index).
    pub digest: String,
    /// Layer ids (`diff_id`s), bottom to top.
    pub layers: Vec<String>,
    pub config: ImageConfig,
    /// Compressed bytes downloaded for layers (0 when every layer was in the store).
    pub bytes_downloaded: u64,
}

/// Download progress of one layer (`layer` is its `diff_id`; `done` and `total` are
/// compressed bytes, `total` the blob size from the manifest). See [`PROGRESS_STEP`].
#[derive(Debug, Clone)]
pub struct Progress {
    pub layer: String,
    pub done: u64,
    pub total: u64,
}

#[derive(Deserialize, Default)]
struct RawImage {
    #[serde(default)]
    config: Option<RawConfig>,
    rootfs: RawRootfs,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    exposed_ports: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

#[derive(Deserialize, Default)]
struct RawRootfs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn compression_of(media_type: &str) -> Result<Compression> {
    let m = media_type;
    if m.ends_with("+gzip") || m.ends_with(".tar.gzip") {
        Ok(Compression::Gzip)
    } else if m.ends_with("+zstd") || m.ends_with(".tar.zstd") {
        Ok(Compression::Zstd)
    } else if m.ends_with(".tar") || m.ends_with(".rootfs.diff.tar") {
        Ok(Compression::None)
    } else {
        Err(RuntimeError::BadImage {
            reason: format!("unsupported layer media type {m:?}"),
        })
    }
}

/// Pulls `opts.reference` into `store` (see the module doc). `progress` is called as layer
/// bytes arrive.
pub async fn pull(
    store: &LayerStore,
    opts: &PullOptions,
    progress: impl Fn(Progress) + Send + Sync,
) -> Result<PulledImage> {
    let reference: Reference =
        opts.reference
            .parse()
            .map_err(|e| RuntimeError::InvalidArgument {
                what: "image reference",
                reason: format!("invalid image reference {:?}: {e}", opts.reference),
            })?;
    let registry = reference.resolve_registry().to_string();
    let (os, arch) = opts.platform.clone();
    let config = ClientConfig {
        protocol: if opts.insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        platform_resolver: Some(Box::new(move |entries| {
            entries
                .iter()
                .find(|e| {
                    e.platform
                        .as_ref()
                        .is_some_and(|p| p.os == os && p.architecture == arch)
                })
                .map(|e| e.digest.clone())
        })),
        connect_timeout: Some(Duration::from_secs(15)),
        read_timeout: Some(Duration::from_secs(120)),
        ..Default::default()
    };
    let client = Client::new(config);
    let auth = match (&opts.username, &opts.password) {
        (Some(u), Some(p)) => RegistryAuth::Basic(u.clone(), p.clone()),
        (Some(u), None) => RegistryAuth::Basic(u.clone(), String::new()),
        _ => RegistryAuth::Anonymous,
    };
    let fail = |e: OciDistributionError| registry_error(&registry, &opts.reference, e);
    client
        .auth(&reference, &auth, RegistryOperation::Pull)
        .await
        .map_err(fail)?;
    let (manifest, digest) = client
        .pull_image_manifest(&reference, &auth)
        .await
        .map_err(|e| match e {
            OciDistributionError::ImageManifestNotFoundError(_) => RuntimeError::Registry {
                reference: opts.reference.clone(),
                reason: format!(
                    "image {} has no {}/{} platform",
                    opts.reference, opts.platform.0, opts.platform.1
                ),
            },
            e => fail(e),
        })?;
    if manifest.config.size < 0 || manifest.config.size as usize > MAX_CONFIG_BYTES {
        return Err(RuntimeError::BadImage {
            reason: format!(
                "image config of {} bytes exceeds {MAX_CONFIG_BYTES} bytes",
                manifest.config.size
            ),
        });
    }
    let mut raw_config = Vec::new();
    client
        .pull_blob(&reference, &manifest.config, &mut raw_config)
        .await
        .map_err(fail)?;
    let image: RawImage =
        serde_json::from_slice(&raw_config).map_err(|e| RuntimeError::BadImage {
            reason: format!("invalid image config: {e}"),
        })?;
    if image.rootfs.kind != "layers" {
        return Err(RuntimeError::BadImage {
            reason: format!("unsupported rootfs type {:?}", image.rootfs.kind),
        });
    }
    if image.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(RuntimeError::BadImage {
            reason: format!(
                "the manifest has {} layers but the config {} diff_ids",
                manifest.layers.len(),
                image.rootfs.diff_ids.len()
            ),
        });
    }
    let mut bytes_downloaded = 0;
    for (layer, diff_id) in manifest.layers.iter().zip(&image.rootfs.diff_ids) {
        if !valid_id(diff_id) {
            return Err(RuntimeError::BadImage {
                reason: format!("invalid diff_id {diff_id:?}"),
            });
        }
        if store.contains(diff_id) {
            continue;
        }
        let compression = compression_of(&layer.media_type)?;
        bytes_downloaded += fetch_layer(
            &client,
            store,
            &reference,
            layer,
            diff_id,
            compression,
            &progress,
            &fail,
        )
        .await?;
    }
    Ok(PulledImage {
        digest,
        layers: image.rootfs.diff_ids,
        config: image_config(image.config.unwrap_or_default()),
        bytes_downloaded,
    })
}

fn valid_id(id: &str) -> bool {
    id.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn image_config(c: RawConfig) -> ImageConfig {
    let mut exposed_ports: Vec<u16> = c
        .exposed_ports
        .unwrap_or_default()
        .keys()
        .filter_map(|k| {
            let (port, proto) = k.split_once('/').unwrap_or((k.as_str(), "tcp"));
            (proto == "tcp").then(|| port.parse().ok()).flatten()
        })
        .collect();
    exposed_ports.sort_unstable();
    exposed_ports.dedup();
    ImageConfig {
        env: c.env.unwrap_or_default(),
        working_dir: c.working_dir.filter(|w| !w.is_empty()),
        user: c.user.filter(|u| !u.is_empty()),
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        exposed_ports,
    }
}

/// Downloads one layer blob, verifies it and unpacks it; returns the bytes downloaded.
#[allow(clippy::too_many_arguments)]
async fn fetch_layer(
    client: &Client,
    store: &LayerStore,
    reference: &Reference,
    layer: &OciDescriptor,
    diff_id: &str,
    compression: Compression,
    progress: &(impl Fn(Progress) + Send + Sync),
    fail: &impl Fn(OciDistributionError) -> RuntimeError,
) -> Result<u64> {
    let Some(expected_hex) = layer.digest.strip_prefix("sha256:") else {
        return Err(RuntimeError::BadImage {
            reason: format!("unsupported layer digest {:?}", layer.digest),
        });
    };
    let expected_hex = expected_hex.to_string();
    let total = u64::try_from(layer.size).unwrap_or(0);
    let (tmp, mut file) = store.temp_file()?;
    let result = async {
        let mut stream = client
            .pull_blob_stream(reference, layer)
            .await
            .map_err(fail)?;
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        let mut reported = 0u64;
        progress(Progress {
            layer: diff_id.to_string(),
            done,
            total,
        });
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                // The client checks the digest itself as the stream ends.
                let cause = root_cause(&e).replace('\n', " ");
                if cause.contains("digest") {
                    RuntimeError::BadImage {
                        reason: format!("layer blob digest mismatch: {cause}"),
                    }
                } else {
                    RuntimeError::Registry {
                        reference: reference.to_string(),
                        reason: format!(
                            "registry {}: layer {} download failed: {cause}",
                            reference.resolve_registry(),
                            layer.digest
                        ),
                    }
                }
            })?;
            done += chunk.len() as u64;
            if total > 0 && done > total {
                return Err(RuntimeError::BadImage {
                    reason: format!(
                        "layer {} is larger than its declared {total} bytes",
                        layer.digest
                    ),
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .map_err(RuntimeError::io("write a layer download file"))?;
            if done - reported >= PROGRESS_STEP {
                reported = done;
                progress(Progress {
                    layer: diff_id.to_string(),
                    done,
                    total,
                });
            }
        }
        if reported != done {
            progress(Progress {
                layer: diff_id.to_string(),
                done,
                total,
            });
        }
        let got = format!("{:x}", hasher.finalize());
        if got != expected_hex {
            return Err(RuntimeError::BadImage {
                reason: format!(
                    "layer blob digest mismatch: expected sha256:{expected_hex}, got sha256:{got}"
                ),
            });
        }
        let store = store.clone();
        let diff_id = diff_id.to_string();
        tokio::task::spawn_blocking(move || {
            use std::io::Seek;
            file.seek(std::io::SeekFrom::Start(0))
                .map_err(RuntimeError::io("read a layer download file"))?;
            let raw = BufReader::with_capacity(256 * 1024, file);
            let tar: Box<dyn Read> = match compression {
                Compression::None => Box::new(raw),
                Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
                Compression::Zstd => {
                    let mut d = zstd::stream::read::Decoder::with_buffer(raw).map_err(|e| {
                        RuntimeError::BadImage {
                            reason: format!("zstd: {e}"),
                        }
                    })?;
                    d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                        .map_err(|e| RuntimeError::BadImage {
                            reason: format!("zstd: {e}"),
                        })?;
                    Box::new(d)
                }
            };
            store.unpack(tar, Some(&diff_id))
        })
        .await
        .map_err(RuntimeError::task("layer unpack"))??;
        Ok(done)
    }
    .await;
    let _ = std::fs::remove_file(&tmp);
    result
}

/// One clear line for a registry failure.
fn registry_error(registry: &str, reference: &str, e: OciDistributionError) -> RuntimeError {
    match e {
        OciDistributionError::RequestError(re) => {
            if re.is_connect() || re.is_timeout() {
                RuntimeError::Registry {
                    reference: reference.to_owned(),
                    reason: format!("cannot reach registry {registry}: {}", root_cause(&re)),
                }
            } else {
                RuntimeError::Registry {
                    reference: reference.to_owned(),
                    reason: format!("registry {registry}: {}", root_cause(&re)),
                }
            }
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => RuntimeError::Registry {
            reference: reference.to_owned(),
            reason: format!(
                "registry {registry} refused access to {reference} (401 unauthorized): missing or wrong credentials"
            ),
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let unknown = envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            });
            let denied = envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied));
            let msg: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| e.message.to_lowercase())
                .collect();
            if unknown {
                RuntimeError::Registry {
                    reference: reference.to_owned(),
                    reason: format!(
                        "image {reference} not found in registry {registry}: {}",
                        msg.join("; ")
                    ),
                }
            } else if denied {
                RuntimeError::Registry {
                    reference: reference.to_owned(),
                    reason: format!(
                        "registry {registry} refused access to {reference}: {}",
                        msg.join("; ")
                    ),
                }
            } else {
                RuntimeError::Registry {
                    reference: reference.to_owned(),
                    reason: format!("registry {registry}: {}", msg.join("; ")),
                }
            }
        }
        OciDistributionError::ServerError { code: 404, .. }
        | OciDistributionError::ImageManifestNotFoundError(_) => RuntimeError::Registry {
            reference: reference.to_owned(),
            reason: format!("image {reference} not found in registry {registry}"),
        },
        OciDistributionError::ServerError { code, .. } => RuntimeError::Registry {
            reference: reference.to_owned(),
            reason: format!("registry {registry} answered http {code}"),
        },
        OciDistributionError::DigestError(d) => RuntimeError::BadImage {
            reason: format!("digest mismatch: {d}").to_lowercase(),
        },
        other => RuntimeError::Registry {
            reference: reference.to_owned(),
            reason: format!(
                "registry {registry}: {}",
                other.to_string().replace('\n', " ")
            )
            .to_lowercase(),
        },
    }
}

/// The innermost error's message, lowercase ("connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    if let Some(io) = cur.downcast_ref::<std::io::Error>() {
        match io.kind() {
            std::io::ErrorKind::ConnectionRefused => return "connection refused".into(),
            std::io::ErrorKind::TimedOut => return "timed out".into(),
            _ => {}
        }
    }
    let s = cur.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s);
    s.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert!(matches!(
            compression_of("application/vnd.oci.image.layer.v1.tar+gzip"),
            Ok(Compression::Gzip)
        ));
        assert!(matches!(
            compression_of("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Ok(Compression::Gzip)
        ));
        assert!(matches!(
            compression_of("application/vnd.oci.image.layer.v1.tar+zstd"),
            Ok(Compression::Zstd)
        ));
        assert!(matches!(
            compression_of("application/vnd.oci.image.layer.v1.tar"),
            Ok(Compression::None)
        ));
        assert!(compression_of("application/octet-stream").is_err());
    }

    #[test]
    fn config_defaults() {
        let raw: RawImage = serde_json::from_str(
            r#"{"config":{"Env":["A=1"],"WorkingDir":"/app","User":"1000:1000",
                "Entrypoint":["/bin/sh"],"Cmd":["-c","x"],
                "ExposedPorts":{"8080/tcp":{},"53/udp":{},"80":{}}},
               "rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        let c = image_config(raw.config.unwrap());
        assert_eq!(c.env, vec!["A=1"]);
        assert_eq!(c.working_dir.as_deref(), Some("/app"));
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.exposed_ports, vec![80, 8080]);
    }
}
