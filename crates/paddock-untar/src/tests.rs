//! Extraction tests under both policies (run as root: owners, devices, trusted xattrs).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::header::{Pending, apply_pax};
use crate::{Error, MAX_PATH_LEN, Outcome, Policy, extract, relative_path};

const BOTH: [Policy; 2] = [Policy::Upload, Policy::Layer];

fn header(path: &[u8], kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    // Written raw, so `..` and absolute names reach the extractor as they are.
    let name = &mut h.as_old_mut().name;
    name.fill(0);
    name[..path.len()].copy_from_slice(path);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(1234);
    h.set_gid(5678);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    h
}

fn add(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, data: &[u8], mode: u32) {
    let h = header(path.as_bytes(), kind, data.len() as u64, mode);
    b.append(&h, data).unwrap();
}

fn link(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, target: &str) {
    let mut h = header(path.as_bytes(), kind, 0, 0o777);
    // Raw, like the name: `set_link_name` refuses `..`.
    let field = &mut h.as_old_mut().linkname;
    field.fill(0);
    field[..target.len()].copy_from_slice(target.as_bytes());
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
}

/// A scratch directory holding `target/` (extracted into) and `outside/` (must stay empty).
struct Scratch {
    _dir: tempfile::TempDir,
    target: PathBuf,
    outside: PathBuf,
}

fn scratch() -> Scratch {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let target = dir.path().join("target");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&target).unwrap();
    std::fs::create_dir(&outside).unwrap();
    Scratch {
        _dir: dir,
        target,
        outside,
    }
}

fn untar(target: &Path, data: &[u8], policy: Policy) -> Outcome {
    let root = rustix::fs::open(
        target,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    extract(root, data, policy)
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut v = [0u8; 64];
    let n = rustix::fs::lgetxattr(p, name, &mut v[..]).ok()?;
    Some(v[..n].to_vec())
}

#[test]
fn relative_paths() {
    for policy in BOTH {
        let ok = |s: &[u8]| relative_path(s, policy).map_err(|e| e.to_string());
        assert_eq!(ok(b"a/b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(ok(b"./a//b/./").unwrap(), PathBuf::from("a/b"));
        assert_eq!(ok(b"./").unwrap(), PathBuf::new());
        assert!(ok(b"../x").unwrap_err().contains("'..'"));
        assert!(ok(b"a/../../x").is_err());
        assert!(ok(b"/a/../x").is_err());
        assert!(ok(b"a\0b").is_err());
        assert!(ok(&vec![b'a'; MAX_PATH_LEN + 1]).is_err());
        assert!(ok(b"a\nb/\xff").is_ok());
    }
    let abs = relative_path(b"/etc/passwd", Policy::Upload).unwrap_err();
    assert!(abs.to_string().contains("absolute"), "{abs}");
    assert_eq!(
        relative_path(b"/etc/passwd", Policy::Layer).unwrap(),
        PathBuf::from("etc/passwd")
    );
}

#[test]
fn pax_records() {
    let rec = |k: &str, v: &str| {
        let body = format!(" {k}={v}\n");
        let mut len = body.len();
        while len.to_string().len() + body.len() != len {
            len = len.to_string().len() + body.len();
        }
        format!("{len}{body}")
    };
    let data = format!(
        "{}{}{}{}{}",
        rec("path", "x/y"),
        rec("mtime", "1700000000.5"),
        rec("size", "12"),
        rec("uid", "4242"),
        rec("SCHILY.xattr.user.a", "b"),
    );
    for policy in BOTH {
        let mut p = Pending::default();
        apply_pax(data.as_bytes(), &mut p, policy).expect("pax");
        assert_eq!(p.pax_path.as_deref(), Some(&b"x/y"[..]));
        assert_eq!(p.pax_mtime, Some(1_700_000_000));
        assert_eq!(p.pax_size, Some(12));
        let layer = policy == Policy::Layer;
        assert_eq!(p.pax_uid, layer.then_some(4242));
        assert_eq!(p.xattrs.len(), usize::from(layer));
    }
    // An upload never reads owners, so a bad one is not its concern; a layer refuses it.
    let bad_uid = rec("uid", "-1");
    let mut p = Pending::default();
    assert!(apply_pax(bad_uid.as_bytes(), &mut p, Policy::Upload).is_ok());
    let e = apply_pax(bad_uid.as_bytes(), &mut p, Policy::Layer).unwrap_err();
    assert!(e.to_string().contains("invalid uid"), "{e}");
}

#[test]
fn layer_keeps_whiteouts_owners_modes_links() {
    let s = scratch();
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "etc/", tar::EntryType::Directory, b"", 0o751);
    add(
        &mut b,
        "etc/passwd",
        tar::EntryType::Regular,
        b"root:x:0:0\n",
        0o644,
    );
    add(&mut b, "bin/su", tar::EntryType::Regular, b"#!", 0o4755);
    link(&mut b, "etc/hard", tar::EntryType::Link, "etc/passwd");
    link(&mut b, "etc/sym", tar::EntryType::Symlink, "/etc/passwd");
    add(&mut b, "var/.wh.gone", tar::EntryType::Regular, b"", 0o644);
    add(
        &mut b,
        "opt/.wh..wh..opq",
        tar::EntryType::Regular,
        b"",
        0o644,
    );
    add(
        &mut b,
        "opt/.wh..wh.plnk",
        tar::EntryType::Regular,
        b"",
        0o644,
    );
    add(&mut b, "/abs/file", tar::EntryType::Regular, b"abs", 0o600);
    let data = b.into_inner().unwrap();
    let o = untar(&s.target, &data, Policy::Layer);
    o.result.unwrap();
    assert_eq!(o.entries, 9);
    let l = &s.target;
    let md = std::fs::metadata(l.join("etc")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o751);
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    let su = std::fs::metadata(l.join("bin/su")).unwrap();
    assert_eq!(su.permissions().mode() & 0o7777, 0o4755);
    assert_eq!((su.uid(), su.gid()), (1234, 5678));
    assert_eq!(su.mtime(), 1_600_000_000);
    assert_eq!(
        std::fs::metadata(l.join("etc/hard")).unwrap().ino(),
        std::fs::metadata(l.join("etc/passwd")).unwrap().ino()
    );
    assert_eq!(
        std::fs::read_link(l.join("etc/sym")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        std::fs::symlink_metadata(l.join("etc/sym")).unwrap().uid(),
        1234
    );
    let wh = std::fs::symlink_metadata(l.join("var/gone")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(!l.join("var/.wh.gone").exists());
    assert_eq!(
        xattr(&l.join("opt"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!l.join("opt/.wh..wh..opq").exists());
    assert!(!l.join("opt/.wh..wh.plnk").exists());
    assert_eq!(std::fs::read(l.join("abs/file")).unwrap(), b"abs");
}

#[test]
fn layer_pax_xattrs_kept_and_overlay_ones_dropped() {
    let s = scratch();
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([
        ("SCHILY.xattr.user.note", &b"hello"[..]),
        ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
        ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
    ])
    .unwrap();
    add(&mut b, "d/", tar::EntryType::Directory, b"", 0o755);
    b.append_pax_extensions([("SCHILY.xattr.user.f", &b"1"[..])])
        .unwrap();
    add(&mut b, "d/f", tar::EntryType::Regular, b"x", 0o644);
    let data = b.into_inner().unwrap();
    untar(&s.target, &data, Policy::Layer).result.unwrap();
    let d = s.target.join("d");
    assert_eq!(xattr(&d, "user.note").as_deref(), Some(&b"hello"[..]));
    assert_eq!(xattr(&d, "trusted.overlay.opaque"), None);
    assert_eq!(xattr(&d, "trusted.overlay.redirect"), None);
    assert_eq!(xattr(&d.join("f"), "user.f").as_deref(), Some(&b"1"[..]));
}

/// Pax records are framed by their length, not by newlines: a value holding newline bytes
/// (a binary xattr, a file name) is read whole. The `tar` crate's own pax parser refused
/// these archives.
#[test]
fn pax_values_with_newlines() {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([
        ("SCHILY.xattr.user.bin", &b"a\nb\n\x00c"[..]),
        ("path", &b"dir/new\nline"[..]),
    ])
    .unwrap();
    add(&mut b, "placeholder", tar::EntryType::Regular, b"x", 0o644);
    let data = b.into_inner().unwrap();
    for policy in BOTH {
        let s = scratch();
        untar(&s.target, &data, policy).result.unwrap();
        let f = s.target.join("dir/new\nline");
        assert_eq!(std::fs::read(&f).unwrap(), b"x");
        let want = (policy == Policy::Layer).then_some(&b"a\nb\n\x00c"[..]);
        assert_eq!(xattr(&f, "user.bin").as_deref(), want, "{policy:?}");
    }
}

#[test]
fn truncated_stream_is_refused() {
    let mut b = tar::Builder::new(Vec::new());
    add(
        &mut b,
        "big",
        tar::EntryType::Regular,
        &[7u8; 10_000],
        0o644,
    );
    let data = b.into_inner().unwrap();
    for policy in BOTH {
        let s = scratch();
        let o = untar(&s.target, &data[..5000], policy);
        assert!(o.result.is_err(), "{policy:?}");
        // The half-written file is removed.
        assert!(!s.target.join("big").exists(), "{policy:?}");
        assert_eq!(o.entries, 0);
    }
}

/// What one hostile archive must do under each policy.
struct Hostile {
    name: &'static str,
    tar: Vec<u8>,
    /// `None`: extracted; `Some(s)`: refused with a message containing `s`.
    upload: Option<&'static str>,
    layer: Option<&'static str>,
}

fn hostile(outside: &Path) -> Vec<Hostile> {
    let out = outside.to_str().unwrap();
    let one = |f: &dyn Fn(&mut tar::Builder<Vec<u8>>)| {
        let mut b = tar::Builder::new(Vec::new());
        f(&mut b);
        b.into_inner().unwrap()
    };
    use tar::EntryType as T;
    vec![
        Hostile {
            name: "dotdot",
            tar: one(&|b| add(b, "../x", T::Regular, b"x", 0o644)),
            upload: Some("'..' components are not allowed"),
            layer: Some("'..' components are not allowed"),
        },
        Hostile {
            name: "absolute into the outside",
            tar: one(&|b| add(b, &format!("{out}/abs"), T::Regular, b"x", 0o644)),
            upload: Some("absolute paths are not allowed"),
            layer: None, // Taken relative: `target/<outside>/abs`.
        },
        Hostile {
            name: "absolute symlink, then through it",
            tar: one(&|b| {
                link(b, "l", T::Symlink, out);
                add(b, "l/pwned", T::Regular, b"x", 0o644);
            }),
            upload: Some("\"l/pwned\": resolves outside the target directory"),
            layer: Some("\"l/pwned\": resolves outside the layer"),
        },
        Hostile {
            name: "relative symlink up, then through it",
            tar: one(&|b| {
                link(b, "up", T::Symlink, "../outside");
                add(b, "up/pwned", T::Regular, b"x", 0o644);
            }),
            upload: Some("resolves outside"),
            layer: Some("resolves outside"),
        },
        Hostile {
            name: "symlink, then a directory below it",
            tar: one(&|b| {
                link(b, "d", T::Symlink, out);
                add(b, "d/sub/", T::Directory, b"", 0o755);
            }),
            upload: Some("resolves outside"),
            layer: Some("resolves outside"),
        },
        Hostile {
            name: "symlink, then a hard link through it",
            tar: one(&|b| {
                link(b, "r", T::Symlink, "/");
                link(b, "pw", T::Link, "r/etc/passwd");
            }),
            upload: Some("resolves outside"),
            layer: Some("resolves outside"),
        },
        Hostile {
            name: "symlink, then a file replacing it",
            tar: one(&|b| {
                link(b, "f", T::Symlink, &format!("{out}/replaced"));
                add(b, "f", T::Regular, b"mine", 0o644);
            }),
            upload: None, // The symlink is replaced, never written through.
            layer: None,
        },
        Hostile {
            name: "hard link up",
            tar: one(&|b| link(b, "h", T::Link, "../../etc/passwd")),
            upload: Some("hard link target must be a relative path"),
            layer: Some("hard link target must be a relative path"),
        },
        Hostile {
            name: "hard link to a missing file",
            tar: one(&|b| link(b, "h", T::Link, "not/there")),
            upload: Some("hard link target does not exist"),
            layer: Some("hard link target does not exist"),
        },
        Hostile {
            name: "char device",
            tar: one(&|b| add(b, "null", T::Char, b"", 0o666)),
            upload: Some("device nodes are not allowed"),
            layer: Some("device nodes are not allowed"),
        },
        Hostile {
            name: "block device",
            tar: one(&|b| add(b, "sda", T::Block, b"", 0o666)),
            upload: Some("device nodes are not allowed"),
            layer: Some("device nodes are not allowed"),
        },
        Hostile {
            name: "fifo",
            tar: one(&|b| add(b, "fifo", T::Fifo, b"", 0o666)),
            upload: Some("FIFOs are not allowed"),
            layer: Some("FIFOs are not allowed"),
        },
        Hostile {
            name: "pax path escape",
            tar: one(&|b| {
                b.append_pax_extensions([("path", &b"../pax-x"[..])])
                    .unwrap();
                add(b, "innocent", T::Regular, b"x", 0o644);
            }),
            upload: Some("\"../pax-x\""),
            layer: Some("\"../pax-x\""),
        },
        Hostile {
            name: "dangling extension header",
            tar: one(&|b| {
                b.append_pax_extensions([("path", &b"x"[..])]).unwrap();
            }),
            upload: Some("extension header without an entry after it"),
            layer: Some("extension header without an entry after it"),
        },
        Hostile {
            name: "oversized pax header",
            tar: one(&|b| {
                let big = vec![b'a'; crate::MAX_PAX_BYTES as usize];
                b.append_pax_extensions([("comment", &big[..])]).unwrap();
                add(b, "x", T::Regular, b"x", 0o644);
            }),
            upload: Some("exceeds the limit"),
            layer: Some("exceeds the limit"),
        },
    ]
}

/// The same hostile archives through both policies: every confinement property holds under
/// each (nothing appears outside the target), and each refusal or difference is the one the
/// policy documents.
#[test]
fn same_hostile_archives_through_both_policies() {
    let cases = hostile(Path::new("/nowhere")).len();
    for policy in BOTH {
        for i in 0..cases {
            let s = scratch();
            let h = hostile(&s.outside).swap_remove(i);
            let o = untar(&s.target, &h.tar, policy);
            let want = match policy {
                Policy::Upload => h.upload,
                Policy::Layer => h.layer,
            };
            match (want, &o.result) {
                (None, Ok(())) => {}
                (Some(says), Err(e)) => {
                    assert!(e.to_string().contains(says), "{policy:?} {}: {e}", h.name);
                }
                (want, got) => panic!("{policy:?} {}: want {want:?}, got {got:?}", h.name),
            }
            let left: Vec<_> = std::fs::read_dir(&s.outside).unwrap().collect();
            assert!(left.is_empty(), "{policy:?} {}: wrote outside", h.name);
        }
    }
}

/// One benign but policy-sensitive archive through both policies: the differences between
/// an upload and a layer, side by side.
#[test]
fn policies_differ_only_as_documented() {
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "./", tar::EntryType::Directory, b"", 0o711);
    add(&mut b, "suid", tar::EntryType::Regular, b"#!", 0o6755);
    add(&mut b, "sticky/", tar::EntryType::Directory, b"", 0o1777);
    add(&mut b, "ro/", tar::EntryType::Directory, b"", 0o555);
    add(&mut b, "ro/inside", tar::EntryType::Regular, b"i", 0o444);
    add(&mut b, "w/.wh.gone", tar::EntryType::Regular, b"", 0o644);
    add(
        &mut b,
        "o/.wh..wh..opq",
        tar::EntryType::Regular,
        b"",
        0o644,
    );
    add(&mut b, "full/a", tar::EntryType::Regular, b"a", 0o644);
    // A later entry replacing a non-empty directory.
    add(&mut b, "full", tar::EntryType::Regular, b"file now", 0o644);
    b.append_pax_extensions([("SCHILY.xattr.user.x", &b"1"[..])])
        .unwrap();
    add(&mut b, "x", tar::EntryType::Regular, b"x", 0o644);
    let data = b.into_inner().unwrap();

    let s = scratch();
    let before = std::fs::metadata(&s.target).unwrap().permissions().mode();
    let up = untar(&s.target, &data, Policy::Upload);
    let e = up.result.unwrap_err();
    // Only an empty directory may be replaced by an upload.
    assert!(
        matches!(&e, Error::Fs { path, .. } if path == Path::new("full")),
        "{e}"
    );
    assert_eq!(up.entries, 8);
    let t = &s.target;
    let mode = |p: &str| std::fs::symlink_metadata(t.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(std::fs::metadata(t).unwrap().permissions().mode(), before);
    assert_eq!(mode("suid"), 0o755);
    assert_eq!(mode("sticky"), 0o777);
    assert_eq!(mode("ro"), 0o555);
    assert_eq!(std::fs::read(t.join("w/.wh.gone")).unwrap(), b"");
    assert!(t.join("o/.wh..wh..opq").is_file());
    assert_eq!(std::fs::metadata(t.join("suid")).unwrap().uid(), 0);

    let s = scratch();
    let layer = untar(&s.target, &data, Policy::Layer);
    layer.result.unwrap();
    assert_eq!(layer.entries, 10);
    let t = &s.target;
    let mode = |p: &str| std::fs::symlink_metadata(t.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(std::fs::metadata(t).unwrap().mode() & 0o7777, 0o711);
    assert_eq!(mode("suid"), 0o6755);
    assert_eq!(mode("sticky"), 0o1777);
    assert_eq!(mode("ro"), 0o555);
    assert!(
        std::fs::symlink_metadata(t.join("w/gone"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert_eq!(
        xattr(&t.join("o"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(std::fs::read(t.join("full")).unwrap(), b"file now");
    assert_eq!(xattr(&t.join("x"), "user.x").as_deref(), Some(&b"1"[..]));
    assert_eq!(std::fs::metadata(t.join("suid")).unwrap().uid(), 1234);
}

#[test]
fn limits_are_errors() {
    // File data beyond the total is a limit, the same check for both (only the cap differs).
    assert!(Policy::Upload.max_total_bytes() < Policy::Layer.max_total_bytes());
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "a", tar::EntryType::Regular, b"a", 0o644);
    let mut data = b.into_inner().unwrap();
    data.extend(std::iter::repeat_n(
        0u8,
        (crate::MAX_TRAILING_BYTES + 1024) as usize,
    ));
    for policy in BOTH {
        let s = scratch();
        let o = untar(&s.target, &data, policy);
        let e = o.result.unwrap_err();
        assert!(
            e.to_string().contains("after the end of the archive"),
            "{e}"
        );
    }
}
