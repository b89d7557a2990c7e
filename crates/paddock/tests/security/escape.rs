//! Row B of the battery: escape primitives (mounts, namespaces, kernel APIs, capabilities,
//! descriptors, devices, setuid, /proc), tried as root and as the user inside.

use super::*;

/// Each probe prints `name=errno` (0: the call succeeded). Arguments are chosen so that an
/// unfiltered call fails harmlessly with a different errno (in the comment) where the kernel
/// checks arguments before privileges.
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define BAD ((void *)1)

static void report(const char *name, long r) {
    printf("%s=%d\n", name, r < 0 ? errno : 0);
    fflush(stdout);
}

static long try_clone(unsigned long flags) {
    long r = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (r == 0) _exit(0);
    if (r > 0) waitpid(r, NULL, 0);
    return r;
}

int main(void) {
    report("control_getpid", syscall(SYS_getpid));            /* 0 */
    report("control_efault", syscall(SYS_uname, BAD));        /* EFAULT: bad pointers work */
    report("unshare_newuser", syscall(SYS_unshare, CLONE_NEWUSER)); /* 0 */
    report("unshare_newns", syscall(SYS_unshare, CLONE_NEWNS));
    report("unshare_newnet", syscall(SYS_unshare, CLONE_NEWNET));
    report("unshare_newcgroup", syscall(SYS_unshare, CLONE_NEWCGROUP));
    report("clone_newuser", try_clone(CLONE_NEWUSER));        /* 0 */
    report("clone_newns", try_clone(CLONE_NEWNS));
    report("clone_newpid", try_clone(CLONE_NEWPID));
    report("setns", syscall(SYS_setns, -1, 0));               /* EBADF */
    report("mount", syscall(SYS_mount, "x", "/tmp", "tmpfs", 0, NULL));
    report("umount2", syscall(SYS_umount2, "/proc/kcore", ~0)); /* EINVAL */
    report("pivot_root", syscall(SYS_pivot_root, BAD, BAD));
    report("open_tree", syscall(SYS_open_tree, -1, BAD, 0));  /* EFAULT */
    report("move_mount", syscall(SYS_move_mount, -1, BAD, -1, BAD, 0));
    report("fsopen", syscall(SYS_fsopen, BAD, 0));
    report("fspick", syscall(SYS_fspick, -1, BAD, 0));
    report("mount_setattr", syscall(SYS_mount_setattr, -1, BAD, 0, BAD, 0)); /* EINVAL */
    report("bpf", syscall(SYS_bpf, 5 /* BPF_PROG_LOAD */, BAD, 128)); /* EFAULT */
    report("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0)); /* EFAULT */
    report("keyctl", syscall(SYS_keyctl, 0x7fffffff, 0, 0, 0, 0)); /* EOPNOTSUPP */
    report("add_key", syscall(SYS_add_key, BAD, BAD, NULL, 0, 0)); /* EFAULT */
    report("request_key", syscall(SYS_request_key, BAD, BAD, NULL, 0)); /* EFAULT */
    report("userfaultfd", syscall(SYS_userfaultfd, 0));
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, NULL)); /* EFAULT */
    report("io_uring_enter", syscall(SYS_io_uring_enter, -1, 0, 0, 0, NULL, 0)); /* EBADF */
    report("io_uring_register", syscall(SYS_io_uring_register, -1, 0, NULL, 0)); /* EBADF */
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, -1, NULL, 0));
    report("name_to_handle_at", syscall(SYS_name_to_handle_at, -1, BAD, BAD, BAD, 0));
    report("init_module", syscall(SYS_init_module, NULL, 0, ""));
    report("finit_module", syscall(SYS_finit_module, -1, "", 0));
    report("delete_module", syscall(SYS_delete_module, BAD, 0));
    report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    report("kexec_file_load", syscall(SYS_kexec_file_load, -1, -1, 0, NULL, 0));
    report("clone3", syscall(SYS_clone3, NULL, 0));           /* EINVAL */
    report("tiocsti", syscall(SYS_ioctl, 0, TIOCSTI, BAD));   /* ENOTTY */
    report("tiocsti_high", syscall(SYS_ioctl, 0, 0x100000000UL | TIOCSTI, BAD));
    report("swapon", syscall(SYS_swapon, BAD, 0));
    report("syslog", syscall(SYS_syslog, 3, BAD, 16));
    return 0;
}
"#;

/// What the Sentry answers to [`PROBE_C`] (measured on Debian's runsc 0.0~20221219, the same
/// as root and as the user). Under gVisor our seccomp filter is not installed: the Sentry is
/// the kernel the sandbox sees, and none of these reaches the host's. Namespaces are the
/// Sentry's own, so `unshare` and `clone` with `CLONE_NEW*` succeed inside it (a new user
/// namespace by `clone` does not); mounting, `setns`, the new mount API, BPF, keyrings,
/// modules, kexec, handles, swap and `TIOCSTI` all fail.
const GVISOR_PROBE: &[(&str, i32)] = &[
    ("control_getpid", 0),
    ("control_efault", libc::EFAULT),
    ("unshare_newuser", 0),
    ("unshare_newns", 0),
    ("unshare_newnet", 0),
    ("unshare_newcgroup", 0),
    ("clone_newuser", libc::EPERM),
    ("clone_newns", 0),
    ("clone_newpid", 0),
    ("setns", libc::ENOTSUP),
    ("mount", libc::EPERM),
    ("umount2", libc::EPERM),
    ("pivot_root", libc::EFAULT),
    ("open_tree", libc::ENOSYS),
    ("move_mount", libc::ENOSYS),
    ("fsopen", libc::ENOSYS),
    ("fspick", libc::ENOSYS),
    ("mount_setattr", libc::ENOSYS),
    ("bpf", libc::ENOSYS),
    ("perf_event_open", libc::ENODEV),
    ("keyctl", libc::EACCES),
    ("add_key", libc::EACCES),
    ("request_key", libc::EACCES),
    ("userfaultfd", libc::ENOSYS),
    ("io_uring_setup", libc::EFAULT),
    ("io_uring_enter", libc::EPERM),
    ("io_uring_register", libc::ENOSYS),
    ("open_by_handle_at", libc::ENOTSUP),
    ("name_to_handle_at", libc::ENOTSUP),
    ("init_module", libc::ENOSYS),
    ("finit_module", libc::ENOSYS),
    ("delete_module", libc::ENOSYS),
    ("kexec_load", libc::ENOSYS),
    ("kexec_file_load", libc::ENOSYS),
    ("clone3", libc::ENOSYS),
    ("tiocsti", libc::ENOTTY),
    ("tiocsti_high", libc::ENOTTY),
    ("swapon", libc::ENOSYS),
    ("syslog", libc::EFAULT),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b1_b2_b7_b9_mounts_namespaces_and_kernel_apis_are_denied() {
    // On gVisor these are the Sentry's, with its own answers ([`GVISOR_PROBE`]).
    let gvisor = common::isolation() == paddock_core::Isolation::Gvisor;
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    let mountinfo = || std::fs::read_to_string(format!("/proc/{}/mountinfo", s.pid)).unwrap();
    let mounts_before = mountinfo();

    // B1/B2 with the usual tools.
    let r = root(
        &s,
        r#"mkdir -p /tmp/m
probe() { name=$1; shift; o=$("$@" 2>&1); rc=$?; echo "$name rc=$rc $(echo $o)"; }
probe mount_tmpfs mount -t tmpfs x /tmp/m
probe mount_bind mount --bind /usr /tmp/m
probe remount_rw mount -o remount,rw /usr
probe umount_masked umount /proc/kcore
probe unshare_Urm unshare -Urm true
probe unshare_n unshare -n true
probe unshare_m unshare -m true
probe unshare_p unshare -fp true
"#,
    )
    .await;
    let text = out(&r);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{r:?}");
    for l in &lines {
        // `unshare` makes the Sentry's own namespaces (see GVISOR_PROBE); mounts still fail.
        if gvisor && l.starts_with("unshare") {
            continue;
        }
        assert!(!l.contains(" rc=0 "), "succeeded: {l}");
        let lower = l.to_lowercase();
        // umount(8) words EPERM as "must be superuser to unmount".
        assert!(
            lower.contains("permission denied")
                || lower.contains("not permitted")
                || lower.contains("must be superuser"),
            "not an EPERM/EACCES failure: {l}"
        );
    }
    assert_eq!(
        mountinfo(),
        mounts_before,
        "the sandbox's mount table changed"
    );

    // B2/B7/B9 at the syscall level.
    let script = format!(
        "cat > /tmp/probe.c <<'EOF'\n{PROBE_C}\nEOF\n\
         gcc -O0 -o /tmp/probe /tmp/probe.c >&2 || exit 99\n/tmp/probe"
    );
    let expected: BTreeMap<&str, i32> = if gvisor {
        GVISOR_PROBE.iter().copied().collect()
    } else {
        [
            ("control_getpid", 0),
            ("control_efault", libc::EFAULT),
            ("clone3", libc::ENOSYS),
        ]
        .into_iter()
        .chain(
            PROBE_C
                .lines()
                .filter_map(|l| l.trim().strip_prefix("report(\""))
                .filter_map(|l| l.split('"').next())
                .filter(|n| !n.starts_with("control_") && *n != "clone3")
                .map(|n| (n, libc::EPERM)),
        )
        .collect()
    };
    assert!(expected.len() > 30);
    for who in ["root", "user"] {
        let r = root(&s, "rm -f /tmp/probe /tmp/probe.c").await;
        assert_eq!(r.exit_code, Some(0));
        let r = sh_as(&s, Some(who), &script).await;
        assert_eq!(r.exit_code, Some(0), "{who}: probe failed: {r:?}");
        let got = kv(&out(&r));
        // Every probe is expected something (a probe added to PROBE_C needs its answer here).
        assert_eq!(
            got.keys().map(String::as_str).collect::<BTreeSet<_>>(),
            expected.keys().copied().collect::<BTreeSet<_>>(),
            "{who}"
        );
        let mut wrong = Vec::new();
        for (name, want) in &expected {
            let g: Option<i32> = got.get(*name).and_then(|v| v.parse().ok());
            if g != Some(*want) {
                wrong.push(format!(
                    "{name}: got {}, want {}",
                    g.map_or("nothing".into(), |e| format!(
                        "{e} ({})",
                        std::io::Error::from_raw_os_error(e)
                    )),
                    std::io::Error::from_raw_os_error(*want)
                ));
            }
        }
        assert!(wrong.is_empty(), "as {who}: {wrong:#?}");
    }
    assert_eq!(mountinfo(), mounts_before);
    destroy(&s).await;
}

/// One task's `/proc/<pid>/task/<tid>/status`, as read inside the sandbox.
#[derive(Debug)]
struct TaskStatus {
    path: String,
    fields: BTreeMap<String, String>,
}

fn parse_statuses(text: &str) -> Vec<TaskStatus> {
    let mut v = Vec::new();
    for block in text.split("== ").skip(1) {
        let mut lines = block.lines();
        let path = lines.next().unwrap_or_default().to_owned();
        let fields: BTreeMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect();
        // A task that exited between the glob and the read has no fields.
        if fields.contains_key("Name") {
            v.push(TaskStatus { path, fields });
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b10_every_task_has_no_new_privs_seccomp_and_no_dangerous_caps() {
    if not_on_gvisor(
        "the Sentry's /proc/<pid>/status has no NoNewPrivs or Seccomp lines, and the agent's seccomp filter is not installed (the Sentry is the syscall boundary)",
    ) {
        return;
    }
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    // A long-lived process of each user, besides the agent and the reader itself.
    let r = sh(&s, "nohup sleep 1000 >/dev/null 2>&1 &").await;
    assert_eq!(r.exit_code, Some(0));
    let r = root(&s, "nohup sleep 1001 >/dev/null 2>&1 &").await;
    assert_eq!(r.exit_code, Some(0));

    let forbidden = [CAP_SYS_ADMIN, CAP_NET_RAW, CAP_SYS_PTRACE, CAP_SYS_MODULE];
    for who in ["root", "user"] {
        let r = sh_as(
            &s,
            Some(who),
            "for f in /proc/[0-9]*/task/[0-9]*/status; do echo \"== $f\"; cat \"$f\" 2>/dev/null; done",
        )
        .await;
        let tasks = parse_statuses(&out(&r));
        // PID 1, the two sleeps and the reading shell (the agent may have no thread
        // besides its main one: a command starts on it).
        assert!(tasks.len() >= 4, "{who}: too few tasks: {r:?}");
        let mut uids = BTreeSet::new();
        assert!(
            tasks.iter().any(|t| t.path.starts_with("/proc/1/")),
            "{who}: PID 1 not listed"
        );
        for t in &tasks {
            let f = |k: &str| t.fields.get(k).map(String::as_str).unwrap_or("<missing>");
            let cap = |k: &str| u64::from_str_radix(f(k), 16).unwrap_or(u64::MAX);
            let uid: u32 = f("Uid")
                .split_whitespace()
                .nth(1)
                .and_then(|u| u.parse().ok())
                .unwrap_or(u32::MAX);
            uids.insert(uid);
            let ctx = format!("{who} reading {} ({}, uid {uid})", t.path, f("Name"));
            assert_eq!(f("NoNewPrivs"), "1", "{ctx}");
            assert_eq!(f("Seccomp"), "2", "{ctx}");
            assert_eq!(cap("CapAmb"), 0, "{ctx}");
            for set in ["CapEff", "CapPrm", "CapBnd"] {
                let v = cap(set);
                for bit in forbidden {
                    assert_eq!(v & (1 << bit), 0, "{ctx}: {set} {v:016x} has cap {bit}");
                }
                assert_eq!(
                    v & !KEPT_CAPS,
                    0,
                    "{ctx}: {set} {v:016x} beyond the kept set"
                );
            }
            if uid != 0 {
                assert_eq!(cap("CapEff"), 0, "{ctx}: non-root task has capabilities");
                assert_eq!(cap("CapPrm"), 0, "{ctx}: non-root task has capabilities");
            }
        }
        assert!(
            uids.contains(&0) && uids.contains(&1000),
            "{who}: tasks of both root and user expected, uids {uids:?}"
        );
    }
    destroy(&s).await;
}

/// Descriptors from `ls -l /proc/<pid>/fd` (`... <fd> -> <target>` lines). `ls` is a child
/// of the listed shell, so its own directory descriptor does not show up.
fn fd_lines(text: &str) -> BTreeMap<u32, String> {
    text.lines()
        .filter_map(|l| l.split_once(" -> "))
        .filter_map(|(l, t)| Some((l.split_whitespace().last()?.parse().ok()?, t.to_owned())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b11_no_leaked_file_descriptors() {
    if not_on_gvisor(
        "the agent's descriptors are the Sentry's (no listener fd 3, no statfs listener); its socket is bound inside",
    ) {
        return;
    }
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    let allowed = |target: &str| {
        target == "/dev/null"
            || target.starts_with("socket:[")
            || target.starts_with("pipe:[")
            || target.starts_with("anon_inode:")
    };
    // Every check runs; the failures are reported together.
    let mut problems = Vec::new();

    // The agent, PID 1, seen from inside by the sandbox's root.
    let r = root(&s, "ls -l /proc/1/fd").await;
    let fds = fd_lines(&out(&r));
    let listener = fds.get(&3).cloned().unwrap_or_default();
    if !(0..=3).all(|n| fds.contains_key(&n)) {
        problems.push(format!("agent lacks fds 0-3: {fds:?} ({r:?})"));
    }
    // 4 is the statfs seccomp listener (the host answers `statfs` with the disk limit).
    if fds.get(&4).map(String::as_str) != Some("anon_inode:seccomp notify") {
        problems.push(format!("agent's fd 4 is not the statfs listener: {fds:?}"));
    }
    let bad: Vec<_> = fds.iter().filter(|(_, t)| !allowed(t)).collect();
    if !bad.is_empty() {
        problems.push(format!(
            "agent (PID 1) holds descriptors to paths, seen from inside (only /dev/null, \
             sockets, pipes and anon inodes expected): {bad:?}; all: {fds:?}"
        ));
    }

    // The same descriptors from the host: none may be a host file or directory. The
    // sandbox's own /dev/null (on its private /dev tmpfs) is recognised by its device.
    let null_rdev = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.rdev() == libc::makedev(1, 3))
            .unwrap_or(false)
    };
    let mut host_bad = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{}/fd", s.pid))
        .unwrap()
        .flatten()
    {
        let t = std::fs::read_link(e.path())
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !allowed(&t) && !null_rdev(&e.path()) {
            host_bad.push(format!("{} -> {t}", e.file_name().to_string_lossy()));
        }
    }
    if !host_bad.is_empty() {
        problems.push(format!(
            "agent (host pid {}) holds descriptors to host files: {host_bad:?}",
            s.pid
        ));
    }

    // A directory descriptor would allow `cd /proc/1/fd/N/..` out of the root.
    let r = root(
        &s,
        "for n in $(seq 0 64); do (cd /proc/1/fd/$n 2>/dev/null && echo \"dir fd $n: $(pwd -P)\"); done; true",
    )
    .await;
    if !out(&r).is_empty() {
        problems.push(format!("agent has directory descriptors: {}", out(&r)));
    }

    // An exec'd process starts with exactly 0 (/dev/null), 1 and 2 (pipes).
    for who in ["root", "user"] {
        let r = sh_as(
            &s,
            Some(who),
            "ls -l /proc/$$/fd; \
             for n in $(seq 3 64); do (cd /proc/$$/fd/$n 2>/dev/null && echo \"dir fd $n\"); done; true",
        )
        .await;
        let fds = fd_lines(&out(&r));
        if fds.keys().copied().collect::<Vec<_>>() != vec![0, 1, 2]
            || fds[&0] != "/dev/null"
            || !fds.values().all(|t| allowed(t))
            || out(&r).contains("dir fd")
        {
            let note = if fds.values().any(|t| *t == listener) {
                " (includes the agent's listening socket, fd 3 of PID 1: the process can \
                 accept() the host's requests to the agent)"
            } else {
                ""
            };
            problems.push(format!(
                "{who}: exec'd process has descriptors {fds:?}{note}: {}",
                out(&r)
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    destroy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b12_no_device_nodes_and_setuid_is_powerless() {
    if not_on_gvisor("/dev is the Sentry's own device filesystem") {
        return;
    }
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    let r = root(
        &s,
        "mknod /tmp/blk b 8 0 2>&1; echo mknod_b=$?; \
         mknod /tmp/chr c 1 1 2>&1; echo mknod_c=$?; \
         mknod /root/blk b 8 0 2>&1; echo mknod_root=$?; \
         for d in mem kmem port kmsg sda vda nvme0 loop0 dm-0 fuse; do \
           test -e /dev/$d && echo present=$d; done; \
         echo dev=$(ls -A /dev | tr '\\n' ' ')",
    )
    .await;
    let text = out(&r);
    let k = kv(&text);
    for key in ["mknod_b", "mknod_c", "mknod_root"] {
        assert_ne!(k.get(key).map(String::as_str), Some("0"), "{key}: {text}");
    }
    assert!(text.contains("Operation not permitted"), "{text}");
    assert!(!text.contains("present="), "host devices visible: {text}");
    let allowed: BTreeSet<&str> = [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd", "stdin",
        "stdout", "stderr",
    ]
    .into();
    let extra: Vec<&str> = k
        .get("dev")
        .map(String::as_str)
        .unwrap_or_default()
        .split_whitespace()
        .filter(|d| !allowed.contains(d))
        .collect();
    assert!(extra.is_empty(), "unexpected /dev entries: {extra:?}");

    // A setuid-root binary gives `user` nothing (nosuid mounts and no_new_privs).
    let r = root(
        &s,
        r#"cat > /tmp/suid.c <<'EOF'
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("%d %d\n", (int)getuid(), (int)geteuid()); return 0; }
EOF
mkdir -p /opt && gcc -o /opt/suid /tmp/suid.c && chown root:root /opt/suid && chmod 4755 /opt/suid &&
cp /opt/suid /tmp/suid && chmod 4755 /tmp/suid && stat -c '%A %U' /opt/suid /tmp/suid"#,
    )
    .await;
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert_eq!(out(&r), "-rwsr-xr-x root\n-rwsr-xr-x root\n");
    for bin in ["/opt/suid", "/tmp/suid"] {
        let r = sh(&s, bin).await;
        assert_eq!(out(&r), "1000 1000\n", "{bin} as user: {r:?}");
    }
    destroy(&s).await;
}

fn host_kernel_log_sysrq_lines() -> usize {
    std::process::Command::new("dmesg")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.to_lowercase().contains("sysrq"))
                .count()
        })
        .unwrap_or(0)
}

/// `/proc` files that leak host data; each must read empty inside if the host has it.
const MASKED_PROC: &[&str] = &[
    "kcore",
    "keys",
    "timer_list",
    "kallsyms",
    "sched_debug",
    "kmsg",
    "latency_stats",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b5_c2_proc_is_masked_and_pid_uts_namespaces_hide_the_host() {
    if not_on_gvisor(
        "/proc is the Sentry's synthetic one: it shows nothing of the host, so there is nothing to mask",
    ) {
        return;
    }
    let s = sandbox().await;
    let _g = Cleanup(vec![s.clone()]);
    let sysctls = ["kernel/core_pattern", "kernel/modprobe", "vm/drop_caches"];
    let host_sysctls: Vec<Vec<u8>> = sysctls
        .iter()
        .map(|f| std::fs::read(format!("/proc/sys/{f}")).unwrap_or_default())
        .collect();
    let sysrq_before = host_kernel_log_sysrq_lines();

    let r = root(
        &s,
        &format!(
            r#"echo h > /proc/sysrq-trigger; echo sysrq_rc=$?
echo sysrq_dev=$(stat -c '%t:%T' /proc/sysrq-trigger 2>/dev/null)
echo '|/tmp/pwn %p' > /proc/sys/kernel/core_pattern; echo core_pattern_rc=$?
cat /proc/sys/kernel/modprobe > /proc/sys/kernel/modprobe; echo modprobe_rc=$?
echo 1 > /proc/sys/vm/drop_caches; echo drop_caches_rc=$?
for f in {masked}; do
  if [ -e /proc/$f ]; then echo "$f=$(head -c 4096 /proc/$f 2>/dev/null | wc -c)"; else echo "$f=absent"; fi
done
echo firmware=$(ls -A /proc/firmware 2>/dev/null | wc -l)
echo cmdline=$(tr '\0' ' ' < /proc/1/cmdline)
echo hostname=$(cat /proc/sys/kernel/hostname)
hostname evil 2>/dev/null; echo sethostname_rc=$?
echo hostname_after=$(cat /proc/sys/kernel/hostname)
for p in /proc/[0-9]*; do echo "proc ${{p#/proc/}} $(cat $p/comm 2>/dev/null)"; done
ps -eo pid=,comm= | sed 's/^ */ps /'
"#,
            masked = MASKED_PROC.join(" ")
        ),
    )
    .await;
    let text = out(&r);
    let k = kv(&text);
    let get = |key: &str| k.get(key).map(String::as_str).unwrap_or("<missing>");

    // B5: host kernel knobs stay untouched.
    for (f, before) in sysctls.iter().zip(&host_sysctls) {
        let now = std::fs::read(format!("/proc/sys/{f}")).unwrap_or_default();
        if &now != before {
            // Put the host back before failing.
            let _ = std::fs::write(format!("/proc/sys/{f}"), before);
        }
        assert_eq!(
            &now, before,
            "host /proc/sys/{f} changed from inside: {text}"
        );
    }
    for key in ["core_pattern_rc", "modprobe_rc", "drop_caches_rc"] {
        assert_ne!(get(key), "0", "{key}: sysctl write succeeded: {text}");
    }
    // No sysrq reaches the host kernel: the trigger is refused, or it is the masked
    // /dev/null (1:3) that swallows the write.
    if Path::new("/proc/sysrq-trigger").exists() {
        assert!(
            get("sysrq_rc") != "0" || get("sysrq_dev") == "1:3",
            "sysrq-trigger writable and not masked: {text}"
        );
    } else {
        assert_ne!(get("sysrq_rc"), "0", "{text}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        host_kernel_log_sysrq_lines(),
        sysrq_before,
        "a sysrq request reached the host kernel"
    );

    // C2: host-data files read empty (or do not exist at all on this kernel).
    for f in MASKED_PROC {
        let v = get(f);
        if Path::new(&format!("/proc/{f}")).exists() {
            assert_eq!(v, "0", "/proc/{f} is readable inside: {text}");
        } else {
            assert!(v == "absent" || v == "0", "/proc/{f}: {text}");
        }
    }
    assert_eq!(get("firmware"), "0", "{text}");
    // PID 1 is the agent; the hostname is the sandbox's and cannot be changed.
    // (Started through the agent's private loader, so the loader's options come first.)
    let cmdline = get("cmdline");
    assert!(
        cmdline == "paddock-agent init"
            || (cmdline.starts_with("paddock-agent ")
                && cmdline.ends_with(" /opt/paddock/lib/paddock-agent init")),
        "{text}"
    );
    assert_eq!(get("hostname"), s.id.as_str());
    assert_ne!(get("sethostname_rc"), "0", "{text}");
    assert_eq!(get("hostname_after"), s.id.as_str());

    // Only the sandbox's processes are visible, through /proc and through ps.
    let parse = |prefix: &str| -> Vec<(u32, String)> {
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter_map(|l| {
                let (p, c) = l.trim().split_once(' ').unwrap_or((l.trim(), ""));
                Some((p.parse().ok()?, c.trim().to_owned()))
            })
            .collect()
    };
    let procs = parse("proc ");
    let ps = parse("ps ");
    assert!(procs.iter().any(|(p, _)| *p == 1), "{text}");
    assert!(ps.iter().any(|(p, _)| *p == 1), "ps output: {text}");
    let tools: BTreeSet<&str> = ["bash", "cat", "ps", "sed"].into();
    for (pid, comm) in procs.iter().chain(&ps) {
        assert!(
            (*pid == 1 && comm == "paddock-agent") || tools.contains(comm.as_str()),
            "process {pid} ({comm}) visible inside is not the sandbox's: {text}"
        );
    }
    assert!(procs.len() <= 3, "too many processes visible: {procs:?}");
    destroy(&s).await;
}
