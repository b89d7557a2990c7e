//! Root filesystems built in memory as tar streams, for templates imported by tests
//! (`POST /v1/templates/{name}/import`).

use std::path::Path;
use std::process::Command;

/// What goes into [`busybox`] beyond the fixed skeleton.
#[derive(Debug, Clone, Copy, Default)]
pub struct Busybox<'a> {
    /// Applets linked to `/bin/busybox` as `/bin/<applet>`.
    pub applets: &'a [&'a str],
    /// Extra `/etc/group` lines after `root` (each ending in a newline); `user` comes last.
    pub groups: &'a str,
    /// More entries: a directory (`None`) or a symlink to the target.
    pub extra: &'a [(&'a str, Option<&'a str>)],
}

/// A root filesystem with no glibc at all, the way Alpine-style images are built: a
/// statically linked busybox (Debian's `busybox-static`) as `/bin/busybox` with applet
/// links, `/bin`, `/etc`, `/tmp` (1777), `/proc`, `/dev`, `/root`, `/home/user` (uid 1000),
/// and `root` and `user` in `/etc/passwd` and `/etc/group`. Panics, saying how to install
/// it, when the host has no static busybox.
pub fn busybox(spec: Busybox<'_>) -> Vec<u8> {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "this test needs a static busybox at /bin/busybox (apt-get install busybox-static)"
    );
    if let Ok(o) = Command::new("file").arg(busybox).output() {
        let f = String::from_utf8_lossy(&o.stdout);
        assert!(
            f.contains("statically linked"),
            "/bin/busybox is not static: {f}"
        );
    }
    let mut b = tar::Builder::new(Vec::new());
    let entry = |kind: tar::EntryType, mode: u32, uid: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(0);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mtime(1_700_000_000);
        h
    };
    for d in [
        "bin",
        "etc",
        "tmp",
        "proc",
        "dev",
        "root",
        "home",
        "home/user",
    ] {
        let mode = if d == "tmp" { 0o1777 } else { 0o755 };
        let uid = if d == "home/user" { 1000 } else { 0 };
        let mut h = entry(tar::EntryType::Directory, mode, uid);
        b.append_data(&mut h, d, &[][..]).expect("tar directory");
    }
    b.append_path_with_name(busybox, "bin/busybox")
        .expect("tar /bin/busybox");
    for applet in spec.applets {
        let mut h = entry(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .expect("tar applet link");
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n";
    let group = format!("root:x:0:\n{}user:x:1000:\n", spec.groups);
    for (p, data) in [("etc/passwd", &passwd[..]), ("etc/group", group.as_bytes())] {
        let mut h = entry(tar::EntryType::Regular, 0o644, 0);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, p, data).expect("tar file");
    }
    for (p, link) in spec.extra {
        match link {
            None => {
                let mut h = entry(tar::EntryType::Directory, 0o755, 0);
                b.append_data(&mut h, p, &[][..]).expect("tar directory");
            }
            Some(to) => {
                let mut h = entry(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, p, to).expect("tar symlink");
            }
        }
    }
    b.into_inner().expect("tar stream")
}
