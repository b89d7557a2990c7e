//! Row C of the battery: host file reads, and the ownership of what the sandbox writes.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_host_canary_is_invisible() {
    let tok = token();
    let dir = PathBuf::from(format!("/var/tmp/paddock-canary-{}", &tok[..12]));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, format!("canary {tok}\n")).unwrap();
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);

    // The scan reads the whole of host /usr (about 6 GB here), which takes 40 s on the host
    // itself when the machine is busy: the budget is generous so only a hang fails it.
    let r = run(
        &s,
        Some("root"),
        &format!(
            "cat {path} 2>&1; echo cat_rc=$?; echo var_tmp=$(ls -A /var/tmp 2>&1); \
             cat /etc/shadow /root/.ssh/* 2>/dev/null | grep -c -F {tok}; \
             cd /; timeout 240 grep -r -l -F -D skip --exclude-dir=proc {tok} \
               $(ls -A / | grep -v -x -e proc -e usr | sed 's|^|/|') /usr 2>/dev/null; echo grep_rc=$?",
            path = secret.display()
        ),
        Duration::from_secs(250),
    )
    .await;
    let text = out(&r);
    eprintln!("c1: grep took {:?}", r.duration);
    std::fs::remove_dir_all(&dir).unwrap();
    let k = kv(&text);
    assert!(!r.timed_out, "{r:?}");
    assert_ne!(k.get("cat_rc").map(String::as_str), Some("0"), "{text}");
    assert!(text.contains("No such file or directory"), "{text}");
    assert!(
        !text.contains(&tok),
        "canary token visible inside the sandbox: {text}"
    );
    assert!(
        !k.get("var_tmp")
            .is_some_and(|v| v.contains("paddock-canary")),
        "host /var/tmp visible: {text}"
    );
    // grep exits 1 when nothing matched (2 if some file was unreadable, 124 on timeout).
    let grep_rc = k.get("grep_rc").map(String::as_str).unwrap_or("<missing>");
    assert!(
        grep_rc == "1" || grep_rc == "2",
        "grep found the token or did not finish: rc {grep_rc}: {text}"
    );
    let found: Vec<&str> = text.lines().filter(|l| l.starts_with('/')).collect();
    assert!(found.is_empty(), "files containing the canary: {found:?}");
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_owned_by_the_sandboxes_own_host_uids() {
    if not_on_gvisor(
        "under gVisor ids are not shifted: the gofer writes the sandbox's own uids (docs/isolation.md)",
    ) {
        return;
    }
    let a = sandbox().await;
    let b = sandbox().await;
    let _g = Cleanup(vec![a.clone(), b.clone()]);
    assert_ne!(a.uid_base, b.uid_base);
    assert!(
        a.uid_base.abs_diff(b.uid_base) >= 65536,
        "uid ranges overlap: {} and {}",
        a.uid_base,
        b.uid_base
    );
    assert!(a.uid_base >= 65536 && b.uid_base >= 65536);

    let r = root(&a, "echo r > /owned-by-root && id -u").await;
    assert_eq!(out(&r), "0\n", "{r:?}");
    let r = sh(&a, "echo u > /home/user/owned-by-user && id -u").await;
    assert_eq!(out(&r), "1000\n", "{r:?}");
    let upper = a.dir.join("upper");
    let md = std::fs::metadata(upper.join("owned-by-root")).unwrap();
    assert_eq!((md.uid(), md.gid()), (a.uid_base, a.uid_base));
    let md = std::fs::metadata(upper.join("home/user/owned-by-user")).unwrap();
    assert_eq!((md.uid(), md.gid()), (a.uid_base + 1000, a.uid_base + 1000));

    let r = root(&b, "echo r > /owned-by-root").await;
    assert_eq!(r.exit_code, Some(0));
    let md = std::fs::metadata(b.dir.join("upper/owned-by-root")).unwrap();
    assert_eq!(md.uid(), b.uid_base);

    // The processes run as the same host uids.
    let users: BTreeSet<u32> = host_procs_in_range(a.uid_base)
        .into_iter()
        .filter(|(_, _, cg)| cg.contains(a.id.as_str()))
        .map(|(_, u, _)| u)
        .collect();
    assert!(users.contains(&a.uid_base), "agent uid: {users:?}");
    let agent_uid = std::fs::metadata(format!("/proc/{}", a.pid)).unwrap().uid();
    assert_eq!(agent_uid, a.uid_base);
    destroy(&a).await;
    destroy(&b).await;
}

/// `sudo` works for `user` (the E2B guest contract) without making anything setuid: root
/// reached through it is the same powerless sandbox root, a user outside group `sudo` is
/// refused, and the shim binary cannot be replaced.
#[tokio::test(flavor = "multi_thread")]
async fn sudo_shim_gives_sandbox_root_and_nothing_more() {
    if not_on_gvisor(
        "it checks root's limits through host mechanisms (mount errnos, seccomp status) that are the Sentry's under gVisor",
    ) {
        return;
    }
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    let r = sh(
        &s,
        "sudo id -u; sudo -u user id -un; echo x | sudo tee /root/f >/dev/null; sudo cat /root/f; \
         sudo sh -c 'exit 7'; echo rc=$?",
    )
    .await;
    assert_eq!(out(&r), "0\nuser\nx\nrc=7\n", "{r:?}");

    // Root through sudo is still the sandbox's root: no mounts, no namespaces, no raw net.
    let r = sh(
        &s,
        "mkdir -p /tmp/m; sudo mount -t tmpfs x /tmp/m; echo mount=$?; \
         sudo unshare -m true; echo unshare=$?; sudo grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status",
    )
    .await;
    let text = out(&r);
    assert!(
        text.contains("mount=1") || text.contains("mount=32"),
        "{r:?}"
    );
    assert!(!text.contains("unshare=0"), "{r:?}");
    assert!(
        text.contains("NoNewPrivs:\t1") && text.contains("Seccomp:\t2"),
        "{r:?}"
    );

    // Signals reach the command, and a killed client takes the command with it.
    let r = sh(
        &s,
        "timeout 1 sudo sleep 30; echo rc=$?; sleep 0.3; pgrep -x sleep || echo none",
    )
    .await;
    assert_eq!(out(&r), "rc=124\nnone\n", "{r:?}");

    // A user outside group sudo is refused; the shim cannot be written, even by root.
    let r = root(
        &s,
        "echo 'guest:x:1001:1001::/tmp:/bin/bash' >> /etc/passwd; echo 'guest:x:1001:' >> /etc/group",
    )
    .await;
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    let r = sh_as(&s, Some("guest"), "sudo id -u; echo rc=$?").await;
    assert_eq!(out(&r), "rc=1\n", "{r:?}");
    assert!(err(&r).contains("not in the sudoers"), "{r:?}");
    let r = root(
        &s,
        "echo evil > /opt/paddock/bin/sudo; echo w=$?; rm -f /opt/paddock/bin/sudo; echo rm=$?; \
         stat -c '%A' /opt/paddock/bin/sudo",
    )
    .await;
    let text = out(&r);
    assert!(!text.contains("w=0") && !text.contains("rm=0"), "{r:?}");
    assert!(text.ends_with("-rwxr-xr-x\n"), "{r:?}");
    destroy(&s).await;
}
