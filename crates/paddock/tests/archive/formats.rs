//! Round trips: every format, the user from the query or basic auth, odd names.

use super::*;

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
