//! Hostile archives and their rows of `docs/security-tests.md`: tar slips (E5), compression
//! bombs (E6), the disk limit, special files (E9).

use super::*;

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
