//! `POST/GET /archive` end to end: real sandboxes, real agent, requests sent with
//! `Sandbox::agent_request`. Covers round trips in every format, the tar-slip and bomb rows
//! of `docs/security-tests.md` (E5, E6, E8, E9) and the disk limit.

#[path = "../common/mod.rs"]
mod common;

mod formats;
mod hostile;
mod throughput;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use paddock_core::Limits;
use paddock_runtime::{CreateSpec, Sandbox};

const MIB: u64 = 1 << 20;
const MTIME: u64 = 1_600_000_000;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn enc(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn archive_uri(path: &str, extra: &[(&str, &str)]) -> String {
    let mut q = format!("path={}", enc(path));
    for (k, v) in extra {
        q.push_str(&format!("&{k}={}", enc(v)));
    }
    format!("http://agent/archive?{q}")
}

struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    fn message(&self) -> String {
        self.json()["message"].as_str().unwrap_or("").to_owned()
    }
    fn count(&self, key: &str) -> u64 {
        self.json()[key].as_u64().unwrap_or(u64::MAX)
    }
}

async fn send<B>(s: &Sandbox, req: http::Request<B>) -> Reply
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let resp = s.agent_request(req).await.expect("agent request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

async fn upload_as(
    s: &Sandbox,
    dir: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
    user: Option<&str>,
) -> Reply {
    let extra: Vec<(&str, &str)> = user.map(|u| vec![("username", u)]).unwrap_or_default();
    let mut req = http::Request::post(archive_uri(dir, &extra));
    if let Some(ct) = content_type {
        req = req.header(http::header::CONTENT_TYPE, ct);
    }
    send(s, req.body(Full::new(Bytes::from(body))).unwrap()).await
}

async fn upload(s: &Sandbox, dir: &str, content_type: Option<&str>, body: Vec<u8>) -> Reply {
    upload_as(s, dir, content_type, body, None).await
}

async fn download(s: &Sandbox, path: &str, format: &str) -> Reply {
    let req = http::Request::get(archive_uri(path, &[("format", format)]))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(s, req).await
}

fn gzip(data: &[u8], level: flate2::Compression) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A hand-rolled tar writer, so tests can put anything in a header (the `tar` crate's
/// builder refuses `..` and absolute paths).
#[derive(Default)]
struct RawTar(Vec<u8>);

impl RawTar {
    fn header(name: &[u8], kind: u8, mode: u32, size: u64, link: &[u8]) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        assert!(name.len() <= 100 && link.len() <= 100);
        h.as_mut_bytes()[..name.len()].copy_from_slice(name);
        h.as_mut_bytes()[157..157 + link.len()].copy_from_slice(link);
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(MTIME);
        // Owned by root in the archive: must be ignored.
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn push(&mut self, mut h: tar::Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    fn file(&mut self, name: &[u8], mode: u32, data: &[u8]) -> &mut Self {
        self.push(Self::header(name, b'0', mode, data.len() as u64, b""), data)
    }

    fn dir(&mut self, name: &[u8], mode: u32) -> &mut Self {
        self.push(Self::header(name, b'5', mode, 0, b""), b"")
    }

    fn symlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        self.push(Self::header(name, b'2', 0o777, 0, target), b"")
    }

    fn hardlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        self.push(Self::header(name, b'1', 0o644, 0, target), b"")
    }

    fn special(&mut self, name: &[u8], kind: u8) -> &mut Self {
        let mut h = Self::header(name, kind, 0o666, 0, b"");
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        self.push(h, b"")
    }

    /// An entry whose name goes in a GNU long-name (`L`) header.
    fn long_file(&mut self, name: &[u8], data: &[u8]) -> &mut Self {
        let mut n = name.to_vec();
        n.push(0);
        self.push(
            Self::header(b"././@LongLink", b'L', 0o644, n.len() as u64, b""),
            &n,
        );
        self.file(b"placeholder", 0o644, data)
    }

    /// A pax header with one record, applying to the next entry.
    fn pax(&mut self, key: &str, value: &[u8]) -> &mut Self {
        let mut body = format!(" {key}=").into_bytes();
        body.extend_from_slice(value);
        body.push(b'\n');
        let mut len = body.len();
        while len.to_string().len() + body.len() != len {
            len = len.to_string().len() + body.len();
        }
        let mut rec = len.to_string().into_bytes();
        rec.extend_from_slice(&body);
        self.push(
            Self::header(b"PaxHeader", b'x', 0o644, rec.len() as u64, b""),
            &rec,
        )
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.0);
        v.extend(std::iter::repeat_n(0u8, 1024));
        v
    }
}

/// What an archive holds, in a comparable form: path → (kind, mode, content or link, mtime).
type Listing = BTreeMap<Vec<u8>, (char, u32, Vec<u8>, u64)>;

fn listing(tar_bytes: &[u8]) -> Listing {
    let mut out = BTreeMap::new();
    let mut a = tar::Archive::new(tar_bytes);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let mut name = e.path_bytes().into_owned();
        if name.ends_with(b"/") {
            name.pop();
        }
        let kind = h.entry_type().as_byte() as char;
        let content = match kind {
            '2' | '1' => e.link_name_bytes().unwrap().into_owned(),
            _ => {
                let mut v = Vec::new();
                e.read_to_end(&mut v).unwrap();
                v
            }
        };
        // Symlink permissions are meaningless on Linux.
        let mode = if kind == '2' {
            0
        } else {
            h.mode().unwrap() & 0o7777
        };
        out.insert(name, (kind, mode, content, h.mtime().unwrap()));
    }
    out
}

/// A host directory the sandbox must never touch: its listing with contents and modes.
struct Canary {
    dir: std::path::PathBuf,
}

impl Canary {
    fn new(name: &str) -> Canary {
        let dir = std::path::PathBuf::from(format!("/var/tmp/paddock-archive-canary-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), b"canary-token").unwrap();
        Canary { dir }
    }

    fn snapshot(&self) -> Vec<(String, u32, Vec<u8>)> {
        use std::os::unix::fs::MetadataExt;
        let mut v: Vec<_> = std::fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .map(|e| {
                let m = e.path().symlink_metadata().unwrap();
                let data = std::fs::read(e.path()).unwrap_or_default();
                (e.file_name().to_string_lossy().into_owned(), m.mode(), data)
            })
            .collect();
        v.sort();
        v
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// Round trip
// ---------------------------------------------------------------------------------------

/// The agent's peak resident memory (`VmHWM`), in bytes.
fn agent_peak_rss(s: &Sandbox) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", s.pid))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
