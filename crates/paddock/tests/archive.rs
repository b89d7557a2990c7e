//! `POST/GET /archive` end to end: real sandboxes, real agent, requests sent with
//! `Sandbox::agent_request`. Covers round trips in every format, the tar-slip and bomb rows
//! of `docs/security-tests.md` (E5, E6, E8, E9) and the disk limit.

mod common;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_in_every_format() {
    let s = sandbox().await;
    let big = noise(50 * MIB as usize, 7);
    let mut t = RawTar::default();
    t.dir(b"./", 0o755)
        .dir(b"a/", 0o755)
        .file(b"a/f.txt", 0o644, b"hello\n")
        .dir(b"a/b/", 0o750)
        .file(b"a/b/run.sh", 0o755, b"#!/bin/sh\necho ran\n")
        .dir(b"a/b/c/", 0o700)
        .dir(b"empty/", 0o755)
        .dir(b"ro/", 0o555)
        .file(b"ro/inside", 0o444, b"read only")
        .file(b"a/big.bin", 0o600, &big)
        .symlink(b"link", b"a/f.txt")
        .symlink(b"abs", b"/etc/passwd")
        .symlink(b"dangling", b"nope/x")
        .hardlink(b"a/hard", b"a/f.txt")
        .file(b"implicit/parent/file", 0o640, b"parents made on the way");
    let plain = t.finish();
    let expected_bytes = (6 + 19 + 9 + big.len() + 23) as u64;

    let uploads = [
        ("rt-tar", Some("application/x-tar"), plain.clone(), "tar"),
        (
            "rt-gz",
            Some("application/gzip"),
            gzip(&plain, flate2::Compression::fast()),
            "tar.gz",
        ),
        // No type: detected from the zstd magic.
        ("rt-zst", None, zstd(&plain), "tar.zst"),
    ];
    for (dir, ct, body, _) in &uploads {
        let r = upload(&s, dir, *ct, body.clone()).await;
        assert_eq!(r.status, 200, "{dir}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.count("entries"), 15, "{dir}");
        assert_eq!(r.count("bytes"), expected_bytes, "{dir}");
    }

    // Inside the sandbox: the user owns everything, modes are the archive's.
    let r = sh(
        &s,
        "cd ~/rt-tar && find . -printf '%u:%g %m %y %p\\n' | sort -k4 && ./a/b/run.sh && stat -c '%h %Y' a/f.txt",
    )
    .await;
    let o = out(&r);
    assert!(
        o.lines()
            .take_while(|l| *l != "ran")
            .all(|l| l.starts_with("user:user ")),
        "{o}"
    );
    for want in [
        "755 d ./a\n",
        "750 d ./a/b\n",
        "700 d ./a/b/c\n",
        "555 d ./ro\n",
        "444 f ./ro/inside\n",
        "755 f ./a/b/run.sh\n",
        "600 f ./a/big.bin\n",
        "777 l ./link\n",
        "755 d ./implicit/parent\n",
        "640 f ./implicit/parent/file\n",
        "ran\n2 1600000000\n",
    ] {
        assert!(o.contains(want), "missing {want:?} in {o}");
    }

    let mut expected: Listing = BTreeMap::new();
    let mut add = |p: &str, k: char, m: u32, c: &[u8]| {
        expected.insert(p.as_bytes().to_vec(), (k, m, c.to_vec(), MTIME));
    };
    add("a", '5', 0o755, b"");
    add("a/f.txt", '0', 0o644, b"hello\n");
    add("a/hard", '0', 0o644, b"hello\n");
    add("a/b", '5', 0o750, b"");
    add("a/b/run.sh", '0', 0o755, b"#!/bin/sh\necho ran\n");
    add("a/b/c", '5', 0o700, b"");
    add("a/big.bin", '0', 0o600, &big);
    add("empty", '5', 0o755, b"");
    add("ro", '5', 0o555, b"");
    add("ro/inside", '0', 0o444, b"read only");
    add("link", '2', 0, b"a/f.txt");
    add("abs", '2', 0, b"/etc/passwd");
    add("dangling", '2', 0, b"nope/x");
    add(
        "implicit/parent/file",
        '0',
        0o640,
        b"parents made on the way",
    );

    for (dir, _, _, format) in &uploads {
        let r = download(&s, dir, format).await;
        assert_eq!(r.status, 200, "{dir}");
        let tar_bytes = match *format {
            "tar" => r.body.clone(),
            "tar.gz" => gunzip(&r.body),
            _ => zstd::decode_all(&r.body[..]).unwrap(),
        };
        let (ct, ext) = match *format {
            "tar" => ("application/x-tar", "tar"),
            "tar.gz" => ("application/gzip", "tar.gz"),
            _ => ("application/zstd", "tar.zst"),
        };
        assert_eq!(r.headers[http::header::CONTENT_TYPE], ct);
        assert_eq!(
            r.headers[http::header::CONTENT_DISPOSITION],
            format!("attachment; filename=\"{dir}.{ext}\"").as_str()
        );
        let mut got = listing(&tar_bytes);
        // Implicitly created parents get the time of creation, not the archive's.
        for p in ["implicit", "implicit/parent"] {
            let e = got.remove(p.as_bytes()).expect("implicit parent listed");
            assert_eq!((e.0, e.1), ('5', 0o755));
        }
        assert_eq!(
            got.keys()
                .map(|k| String::from_utf8_lossy(k))
                .collect::<Vec<_>>(),
            expected
                .keys()
                .map(|k| String::from_utf8_lossy(k))
                .collect::<Vec<_>>()
        );
        for (k, v) in &expected {
            let g = &got[k];
            assert_eq!(
                (g.0, g.1, g.3),
                (v.0, v.1, v.3),
                "{}",
                String::from_utf8_lossy(k)
            );
            assert!(g.2 == v.2, "content of {}", String::from_utf8_lossy(k));
        }
        // Owners in the download are the sandbox user.
        let mut a = tar::Archive::new(&tar_bytes[..]);
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().uid().unwrap(), 1000);
        }
    }

    // Streaming: the 50 MiB file went through the agent three times each way without the
    // agent ever holding it.
    let peak = agent_peak_rss(&s);
    assert!(
        peak > 0 && peak < 40 * MIB,
        "agent peak RSS {} MiB",
        peak / MIB
    );

    // A single file downloads as one entry under its base name.
    let r = download(&s, "rt-tar/a/f.txt", "tar").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers[http::header::CONTENT_DISPOSITION],
        "attachment; filename=\"f.txt.tar\""
    );
    let l = listing(&r.body);
    assert_eq!(l.len(), 1);
    assert_eq!(l[&b"f.txt"[..]].2, b"hello\n");

    // Re-uploading over an existing tree replaces files (a directory entry keeps the dir).
    let mut t = RawTar::default();
    t.file(b"a/f.txt", 0o600, b"new")
        .symlink(b"a/b/run.sh", b"f");
    let r = upload(&s, "rt-tar", None, t.finish()).await;
    assert_eq!(r.status, 200, "{}", r.message());
    let o = out(&sh(
        &s,
        "cd ~/rt-tar && cat a/f.txt; echo; stat -c '%h' a/hard; readlink a/b/run.sh",
    )
    .await);
    assert_eq!(o, "new\n1\nf\n");

    // Errors: missing path, bad format, missing target.
    assert_eq!(upload(&s, "", None, plain.clone()).await.status, 400);
    assert_eq!(
        upload(&s, "x", Some("text/plain"), plain.clone())
            .await
            .status,
        415
    );
    assert_eq!(
        upload(&s, "x", None, b"BZh91AY&SY".to_vec()).await.status,
        415
    );
    assert_eq!(upload(&s, "x", None, Vec::new()).await.status, 400);
    let r = upload(
        &s,
        "x",
        Some("application/gzip"),
        b"not gzip at all".to_vec(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.message());
    assert!(r.message().contains("invalid archive"), "{}", r.message());
    assert_eq!(download(&s, "nope", "tar").await.status, 404);
    assert_eq!(download(&s, "rt-tar", "rar").await.status, 400);
    // Truncated archive: the half-written file is removed.
    let cut = &plain[..plain.len() - 20 * MIB as usize];
    let r = upload(&s, "cut", Some("application/x-tar"), cut.to_vec()).await;
    assert_eq!(r.status, 400, "{}", r.message());
    assert!(
        out(&sh(&s, "ls ~/cut/a").await)
            .lines()
            .all(|l| l != "big.bin"),
        "partial file left"
    );
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_comes_from_username_or_basic_auth() {
    let s = sandbox().await;
    let mut t = RawTar::default();
    t.file(b"f", 0o644, b"x");
    let tar_bytes = t.finish();
    // The default user cannot write to /root.
    let r = upload(&s, "/root/up", None, tar_bytes.clone()).await;
    assert_eq!(r.status, 403, "{}", r.message());
    // Basic auth names root.
    let req = http::Request::post(archive_uri("/root/up", &[]))
        .header(http::header::AUTHORIZATION, "Basic cm9vdDo=") // "root:"
        .body(Full::new(Bytes::from(tar_bytes.clone())))
        .unwrap();
    let r = send(&s, req).await;
    assert_eq!(r.status, 200, "{}", r.message());
    assert_eq!(
        out(&root(&s, "stat -c '%U %G' /root/up /root/up/f").await),
        "root root\nroot root\n"
    );
    // The username parameter wins over the header; unknown users are 401.
    let r = upload_as(&s, "/root/up2", None, tar_bytes.clone(), Some("root")).await;
    assert_eq!(r.status, 200);
    let r = upload_as(&s, "x", None, tar_bytes, Some("nobody-here")).await;
    assert_eq!(r.status, 401);
    // Downloads too: root's directory is unreadable to the user.
    assert_eq!(
        download(&s, "/root/up", "tar").await.status,
        403,
        "default user read /root"
    );
    let req = http::Request::get(archive_uri("/root/up", &[("username", "root")]))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(&s, req).await;
    assert_eq!(r.status, 200);
    assert_eq!(listing(&r.body)[&b"f"[..]].2, b"x");
    destroy(&s).await;
}

// ---------------------------------------------------------------------------------------
// E5: tar slip
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e5_tar_slip_is_rejected_or_confined() {
    let s = sandbox().await;
    let canary = Canary::new("e5");
    let before = canary.snapshot();
    let host = canary.dir.to_str().unwrap().as_bytes().to_vec();
    let passwd = out(&root(&s, "sha256sum /etc/passwd").await);

    struct Case {
        name: &'static str,
        tar: Vec<u8>,
        /// Expected status and a substring of the message.
        status: u16,
        says: &'static str,
        /// Entries written before the refusal.
        entries: u64,
    }
    let one = |f: &dyn Fn(&mut RawTar)| {
        let mut t = RawTar::default();
        f(&mut t);
        t.finish()
    };
    let mut host_pwn = host.clone();
    host_pwn.extend_from_slice(b"/pwn");
    let cases = vec![
        Case {
            name: "dotdot",
            tar: one(&|t| {
                t.file(b"ok", 0o644, b"fine")
                    .file(b"../x", 0o644, b"escaped");
            }),
            status: 400,
            says: "\"../x\": '..' components are not allowed",
            entries: 1,
        },
        Case {
            name: "dotdot-deep",
            tar: one(&|t| {
                t.file(b"a/../../../../../../x", 0o644, b"escaped");
            }),
            status: 400,
            says: "'..'",
            entries: 0,
        },
        Case {
            name: "abs",
            tar: one(&|t| {
                t.file(b"/abs", 0o644, b"escaped");
            }),
            status: 400,
            says: "\"/abs\": absolute paths are not allowed",
            entries: 0,
        },
        Case {
            name: "abs-host",
            tar: one(&|t| {
                t.file(&host_pwn, 0o644, b"escaped");
            }),
            status: 400,
            says: "absolute",
            entries: 0,
        },
        Case {
            name: "symlink-root",
            tar: one(&|t| {
                t.symlink(b"l", b"/").file(b"l/etc/x", 0o644, b"escaped");
            }),
            status: 400,
            says: "\"l/etc/x\": resolves outside the target directory",
            entries: 1,
        },
        Case {
            name: "symlink-host",
            tar: one(&|t| {
                t.symlink(b"h", &host).file(b"h/pwn", 0o644, b"escaped");
            }),
            status: 400,
            says: "resolves outside",
            entries: 1,
        },
        Case {
            name: "symlink-up",
            tar: one(&|t| {
                t.symlink(b"up", b"../../..")
                    .file(b"up/x", 0o644, b"escaped");
            }),
            status: 400,
            says: "resolves outside",
            entries: 1,
        },
        Case {
            name: "symlink-dir-then-hardlink",
            tar: one(&|t| {
                t.symlink(b"r", b"/").hardlink(b"pw", b"r/etc/passwd");
            }),
            status: 400,
            says: "resolves outside",
            entries: 1,
        },
        Case {
            name: "hardlink-abs",
            tar: one(&|t| {
                t.hardlink(b"pw", b"/etc/passwd");
            }),
            status: 400,
            says: "hard link target must be a relative path",
            entries: 0,
        },
        Case {
            name: "hardlink-up",
            tar: one(&|t| {
                t.hardlink(b"pw", b"../../../etc/passwd");
            }),
            status: 400,
            says: "hard link target must be a relative path",
            entries: 0,
        },
        Case {
            name: "hardlink-missing",
            tar: one(&|t| {
                t.hardlink(b"pw", b"not/there");
            }),
            status: 400,
            says: "does not exist",
            entries: 0,
        },
        Case {
            name: "fifo",
            tar: one(&|t| {
                t.special(b"fifo", b'6');
            }),
            status: 400,
            says: "FIFOs are not allowed",
            entries: 0,
        },
        Case {
            name: "chardev",
            tar: one(&|t| {
                t.special(b"null", b'3');
            }),
            status: 400,
            says: "device nodes are not allowed",
            entries: 0,
        },
        Case {
            name: "blockdev",
            tar: one(&|t| {
                t.special(b"sda", b'4');
            }),
            status: 400,
            says: "device nodes are not allowed",
            entries: 0,
        },
        Case {
            name: "pax-path-escape",
            tar: one(&|t| {
                t.pax("path", b"../pax-x")
                    .file(b"innocent", 0o644, b"escaped");
            }),
            status: 400,
            says: "\"../pax-x\"",
            entries: 0,
        },
        Case {
            name: "long-name-escape",
            tar: one(&|t| {
                t.long_file(b"../long-x", b"escaped");
            }),
            status: 400,
            says: "\"../long-x\"",
            entries: 0,
        },
    ];
    for c in &cases {
        let dir = format!("slip/{}", c.name);
        let r = upload(&s, &dir, Some("application/x-tar"), c.tar.clone()).await;
        assert_eq!(r.status, c.status, "{}: {}", c.name, r.message());
        assert!(
            r.message().contains(c.says),
            "{}: {:?} lacks {:?}",
            c.name,
            r.message(),
            c.says
        );
        assert_eq!(r.count("entries"), c.entries, "{}", c.name);
    }

    // The same link across two uploads: a symlink from the first, a write through it in
    // the second.
    let mut t = RawTar::default();
    t.symlink(b"l2", b"/");
    assert_eq!(upload(&s, "slip/two", None, t.finish()).await.status, 200);
    let mut t = RawTar::default();
    t.file(b"l2/tmp/x", 0o644, b"escaped");
    let r = upload(&s, "slip/two", None, t.finish()).await;
    assert_eq!(r.status, 400, "{}", r.message());
    // A symlink planted in the sandbox as the target's parent component is not followed
    // out either.
    sh(
        &s,
        "mkdir -p ~/slip/planted && ln -s /etc ~/slip/planted/etc",
    )
    .await;
    let mut t = RawTar::default();
    t.file(b"etc/x", 0o644, b"escaped");
    let r = upload(&s, "slip/planted", None, t.finish()).await;
    assert_eq!(r.status, 400, "{}", r.message());

    // Hard links inside the directory work; setuid/setgid/sticky are stripped.
    let mut t = RawTar::default();
    t.file(b"target", 0o644, b"t")
        .hardlink(b"sub/link", b"target")
        .file(b"suid", 0o6755, b"#!/bin/sh\n")
        .dir(b"sticky/", 0o1777);
    let r = upload(&s, "slip/good", None, t.finish()).await;
    assert_eq!(r.status, 200, "{}", r.message());
    let o = out(&sh(
        &s,
        "cd ~/slip/good && stat -c '%h %a %n' target && stat -c '%a %n' suid sticky && find ~/slip -perm /7000",
    )
    .await);
    assert_eq!(o, "2 644 target\n755 suid\n777 sticky\n");

    // Nothing escaped: inside the sandbox...
    let o = out(&root(
        &s,
        "ls -d /x /abs /etc/x /tmp/x /home/user/x /home/user/slip/x /home/x /pax-x /home/user/slip/pax-x /long-x /home/user/slip/long-x 2>/dev/null; \
         sha256sum /etc/passwd; find /home/user/slip \\( -type p -o -type c -o -type b \\)",
    )
    .await);
    assert_eq!(o, passwd, "escaped entries or device nodes: {o}");
    // ...and on the host.
    assert_eq!(canary.snapshot(), before, "host canary changed");
    for p in ["/x", "/abs", "/pwn"] {
        assert!(!Path::new(p).exists(), "{p} on the host");
    }
    destroy(&s).await;
}

// ---------------------------------------------------------------------------------------
// E6: bombs and limits
// ---------------------------------------------------------------------------------------

/// A tar holding one file of `size` zero bytes, compressed as it is built.
fn zero_tar<W: Write>(out: W, size: u64) -> W {
    let mut b = tar::Builder::new(out);
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "zeros", std::io::repeat(0).take(size))
        .unwrap();
    b.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e6_compression_bombs_are_aborted() {
    let s = sandbox().await;
    // gzip: 256 MiB of zeros deflate to about 250 KiB, just over 1000:1 (deflate's
    // ceiling is about 1032:1).
    let size = 256 * MIB;
    let gz = zero_tar(
        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best()),
        size,
    )
    .finish()
    .unwrap();
    let ratio = size / gz.len() as u64;
    assert!(ratio > 1000, "fixture is not a bomb: {ratio}:1");
    let started = Instant::now();
    let r = upload(&s, "bomb-gz", Some("application/gzip"), gz).await;
    assert_eq!(r.status, 413, "{}", r.message());
    assert!(r.message().contains("1000:1"), "{}", r.message());
    assert_eq!(r.count("entries"), 0);
    assert!(r.count("bytes") < 70 * MIB, "{}", r.count("bytes"));
    assert!(started.elapsed() < Duration::from_secs(60));
    // The partial file is gone.
    assert_eq!(out(&sh(&s, "ls -A ~/bomb-gz").await), "");

    // zstd reaches far higher ratios: 4 GiB in a few hundred KiB.
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc = zero_tar(enc, 4 << 30);
    let zst = enc.finish().unwrap();
    assert!(zst.len() < (4 << 30) / 1000);
    let r = upload(&s, "bomb-zst", None, zst).await;
    assert_eq!(r.status, 413, "{}", r.message());
    assert_eq!(out(&sh(&s, "ls -A ~/bomb-zst").await), "");

    // Compressible but honest data (text, about 5:1) is fine beyond the grace size.
    let text: Vec<u8> = (0..80 * MIB as usize / 16)
        .flat_map(|i| format!("line {i:010}\n").into_bytes())
        .collect();
    let mut t = RawTar::default();
    t.file(b"log.txt", 0o644, &text);
    let r = upload(
        &s,
        "honest",
        None,
        gzip(&t.finish(), flate2::Compression::fast()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.message());

    // Extension headers are capped: a long name over the path limit, a huge pax header.
    let mut t = RawTar::default();
    t.long_file(&vec![b'a'; 5000], b"x");
    let r = upload(&s, "limits", None, t.finish()).await;
    assert_eq!(r.status, 400, "{}", r.message());
    assert!(r.message().contains("long name"), "{}", r.message());
    let mut t = RawTar::default();
    t.pax("comment", &vec![b'c'; 2 << 20])
        .file(b"f", 0o644, b"");
    let r = upload(&s, "limits", None, t.finish()).await;
    assert_eq!(r.status, 400, "{}", r.message());
    // A NUL inside a pax path is refused.
    let mut t = RawTar::default();
    t.pax("path", b"a\0b").file(b"f", 0o644, b"");
    let r = upload(&s, "limits", None, t.finish()).await;
    assert_eq!(r.status, 400, "{}", r.message());
    assert!(r.message().contains("NUL"), "{}", r.message());
    // Deep directories up to the path limit are fine; past it they are refused.
    let deep: Vec<u8> = b"d/".repeat(1500).into_iter().chain(*b"f").collect();
    let mut t = RawTar::default();
    t.long_file(&deep, b"deep");
    let r = upload(&s, "deep", None, t.finish()).await;
    assert_eq!(r.status, 200, "{}", r.message());
    let deeper: Vec<u8> = b"d/".repeat(2100).into_iter().chain(*b"f").collect();
    let mut t = RawTar::default();
    t.long_file(&deeper, b"deep");
    let r = upload(&s, "deep2", None, t.finish()).await;
    assert_eq!(r.status, 400, "{}", r.message());
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_over_the_disk_limit_is_507() {
    let s = create(CreateSpec {
        limits: Limits {
            disk_bytes: 64 * MIB,
            ..Limits::default()
        },
        ..CreateSpec::default()
    })
    .await;
    let mut t = RawTar::default();
    t.file(b"small", 0o644, b"kept")
        .file(b"big", 0o644, &noise(100 * MIB as usize, 3));
    let r = upload(&s, "full", Some("application/x-tar"), t.finish()).await;
    assert_eq!(r.status, 507, "{}", r.message());
    assert_eq!(r.message(), "not enough disk space available");
    assert_eq!(r.count("entries"), 1);
    // The entry before stays, the partial one is removed, so the disk is usable again.
    assert_eq!(out(&sh(&s, "ls ~/full").await), "small\n");
    let r = sh(&s, "head -c 1M /dev/zero > ~/after && echo ok").await;
    assert_eq!(out(&r), "ok\n", "{}", err(&r));
    destroy(&s).await;
}

// ---------------------------------------------------------------------------------------
// E8, E9: odd names and special files
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_names_round_trip() {
    let s = sandbox().await;
    let names: Vec<&[u8]> = vec![
        b"new\nline",
        b"cr\r\nlf",
        b"ctl\x01\x1b[31m",
        b"bad-utf8-\xff\xfe",
        b"quote\"and\\back",
        b" space ",
        b"-dash",
        "ünïcödé".as_bytes(),
    ];
    let mut t = RawTar::default();
    for (i, n) in names.iter().enumerate() {
        t.file(n, 0o644, format!("{i}").as_bytes());
    }
    t.dir(b"dir\nwith newline/", 0o755);
    let r = upload(&s, "odd", None, t.finish()).await;
    assert_eq!(r.status, 200, "{}", r.message());
    // Inside, the names are exactly these bytes.
    let r = sh(&s, "cd ~/odd && find . -mindepth 1 -maxdepth 1 -print0").await;
    let mut found: Vec<Vec<u8>> = r
        .stdout
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| n[2..].to_vec())
        .collect();
    found.sort();
    let mut want: Vec<Vec<u8>> = names.iter().map(|n| n.to_vec()).collect();
    want.push(b"dir\nwith newline".to_vec());
    want.sort();
    assert_eq!(found, want);
    // And they come back the same.
    let r = download(&s, "odd", "tar").await;
    assert_eq!(r.status, 200);
    let got: Vec<Vec<u8>> = listing(&r.body).into_keys().collect();
    assert_eq!(got, want);
    for (i, n) in names.iter().enumerate() {
        assert_eq!(listing(&r.body)[*n].2, format!("{i}").into_bytes());
    }
    // An odd directory name still gives a single, quoted Content-Disposition line.
    let r = download(&s, "odd/dir\nwith newline", "tar.gz").await;
    assert_eq!(r.status, 200);
    let d = r.headers[http::header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap();
    assert!(
        d.starts_with("attachment; filename=\"dir_with newline.tar.gz\"; filename*=UTF-8''dir%0Awith%20newline.tar.gz"),
        "{d}"
    );
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e9_special_files_do_not_hang_downloads() {
    let s = sandbox().await;
    let r = sh(
        &s,
        "mkdir -p ~/sp/sub && cd ~/sp && mkfifo fifo sub/fifo2 && echo data > sub/file \
         && ln -s /dev/zero zero && ln -s / rootlink && python3 -c 'import socket; s=socket.socket(socket.AF_UNIX); s.bind(\"sock\")' 2>/dev/null; ls",
    )
    .await;
    assert!(out(&r).contains("fifo"), "{}", err(&r));
    for format in ["tar", "tar.gz", "tar.zst"] {
        let r = tokio::time::timeout(Duration::from_secs(20), download(&s, "sp", format))
            .await
            .expect("download of a directory with FIFOs hung");
        assert_eq!(r.status, 200);
        let body = match format {
            "tar" => r.body,
            "tar.gz" => gunzip(&r.body),
            _ => zstd::decode_all(&r.body[..]).unwrap(),
        };
        let l = listing(&body);
        let names: Vec<String> = l
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert_eq!(names, ["rootlink", "sub", "sub/file", "zero"], "{format}");
        assert_eq!(l[&b"zero"[..]].2, b"/dev/zero");
        assert_eq!(l[&b"rootlink"[..]].2, b"/");
    }
    // The FIFO itself, or /dev/zero through a symlink, is refused at once.
    for p in ["sp/fifo", "sp/zero", "/dev/null"] {
        let r = tokio::time::timeout(Duration::from_secs(10), download(&s, p, "tar"))
            .await
            .expect("hung");
        assert_eq!(r.status, 400, "{p}: {}", r.message());
    }
    destroy(&s).await;
}

// ---------------------------------------------------------------------------------------
// Throughput (not a test; run with `--ignored --nocapture`)
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

/// A body that streams a tar of one `size`-byte file, generated on the fly.
fn streamed_tar(size: u64) -> impl http_body::Body<Data = Bytes, Error = std::io::Error> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(8);
    std::thread::spawn(move || {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_path("big.bin").unwrap();
        h.set_cksum();
        let _ = tx.blocking_send(Ok(http_body::Frame::data(Bytes::copy_from_slice(
            h.as_bytes(),
        ))));
        let chunk = Bytes::from(noise(1 << 20, 11));
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if tx
                .blocking_send(Ok(http_body::Frame::data(chunk.slice(..n))))
                .is_err()
            {
                return;
            }
            left -= n as u64;
        }
        let _ = tx.blocking_send(Ok(http_body::Frame::data(Bytes::from(vec![0u8; 1024]))));
    });
    http_body_util::StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|f| (f, rx))
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement"]
async fn throughput_1gib() {
    let s = sandbox().await;
    let size: u64 = 1 << 30;
    let t = Instant::now();
    let req = http::Request::post(archive_uri("tp", &[]))
        .header(http::header::CONTENT_TYPE, "application/x-tar")
        .body(streamed_tar(size))
        .unwrap();
    let r = send(&s, req).await;
    let up = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.message());
    let t = Instant::now();
    let req = http::Request::get(archive_uri("tp", &[]))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = s.agent_request(req).await.unwrap();
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            n += d.len() as u64;
        }
    }
    let down = t.elapsed();
    assert!(n > size);
    let mib = |d: Duration| size as f64 / MIB as f64 / d.as_secs_f64();
    println!(
        "1 GiB tar: upload {:.2?} ({:.0} MiB/s), download {:.2?} ({:.0} MiB/s), agent peak RSS {} MiB",
        up,
        mib(up),
        down,
        mib(down),
        agent_peak_rss(&s) / MIB
    );
    destroy(&s).await;
}
