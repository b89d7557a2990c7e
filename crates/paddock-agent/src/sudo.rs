//! `sudo` inside the sandbox, without setuid.
//!
//! Every process in a sandbox runs under `no_new_privs` and on `nosuid` mounts, so a setuid
//! `sudo` can never raise privileges (that is the point). Yet E2B's guest contract, and most
//! install scripts, expect `sudo` to work for the default user. So the `paddock-sudo` binary
//! (a client, [`client_main`]) is bind-mounted read-only at `/opt/paddock/bin/sudo` (first on
//! `PATH`) and over a template's own `sudo`. It runs on the agent's private glibc
//! ([`paddock_core::AGENT_LIB_DIR`]), so it works in any image. It connects to the agent's socket
//! ([`paddock_core::SUDO_SOCKET`]), passes its stdin, stdout and stderr as descriptors
//! (`SCM_RIGHTS`) with the command, and exits with the command's status. The agent
//! ([`serve`]) checks the caller's uid with `SO_PEERCRED` (root, or a member of group `sudo`
//! or `wheel` in the sandbox's `/etc/group`, which only the sandbox's root can change) and
//! starts the command as the target user, default root, in a new session.
//!
//! This grants nothing outside the sandbox: the sandbox's root is an unprivileged host uid
//! in its own user namespace, under the same cgroups and seccomp filter.
//!
//! Wire format (hand-written: it is three messages on a local socket): the client sends a
//! 4-byte little-endian length with the three descriptors attached, then that many bytes
//! of JSON ([`Request`]); then, any time, single bytes naming a signal to forward. The agent
//! answers one JSON line ([`Reply`]). If the client goes away, the command's session is
//! killed.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::procs::Procs;
use crate::users;

/// Largest request a client may send (argv and environment).
const MAX_REQUEST: usize = 1 << 20;

/// What the client asks for.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    /// Target user (`-u`), default `root`.
    user: Option<String>,
    /// `-i`: run the target's login shell (with the command, if any).
    login: bool,
    /// `-s`: run the target's shell (with the command, if any).
    shell: bool,
    /// `-E`: keep the caller's environment.
    preserve_env: bool,
    /// `--preserve-env=A,B`: keep these of the caller's variables.
    keep: Vec<String>,
    /// `NAME=value` arguments before the command.
    set: Vec<(String, String)>,
    argv: Vec<String>,
    /// The caller's working directory and environment.
    cwd: String,
    env: Vec<(String, String)>,
}

/// The agent's answer: the command's exit code (128 + signal when killed), or an error.
#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    code: Option<i32>,
    error: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

const USAGE: &str = "usage: sudo [-EHinsS] [-u user] [--preserve-env=LIST] [VAR=value] [command [arg ...]]\n       sudo -l | -v | -k | -V";

/// Entry point of the `paddock-sudo` binary. Never returns.
pub fn client_main() -> ! {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match client(args) {
        Ok(code) => std::process::exit(code),
        Err(msg) => {
            eprintln!("sudo: {msg}");
            std::process::exit(1)
        }
    }
}

/// Parses sudo's options (the subset that makes sense without passwords).
fn parse(args: Vec<String>) -> Result<Result<Request, i32>, String> {
    let mut r = Request {
        user: None,
        login: false,
        shell: false,
        preserve_env: false,
        keep: Vec::new(),
        set: Vec::new(),
        argv: Vec::new(),
        cwd: String::new(),
        env: Vec::new(),
    };
    let mut it = args.into_iter().peekable();
    while let Some(a) = it.peek().cloned() {
        if a == "--" {
            it.next();
            break;
        }
        if !a.starts_with('-') || a == "-" {
            break;
        }
        it.next();
        if let Some(long) = a.strip_prefix("--") {
            let (name, val) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            match name {
                "user" => r.user = Some(val.or_else(|| it.next()).ok_or("--user needs a user")?),
                "preserve-env" => match val {
                    Some(v) => r.keep.extend(v.split(',').map(str::to_owned)),
                    None => r.preserve_env = true,
                },
                "login" => r.login = true,
                "shell" => r.shell = true,
                "set-home" | "non-interactive" | "stdin" | "reset-timestamp" => {}
                "help" => {
                    println!("{USAGE}");
                    return Ok(Err(0));
                }
                "version" => {
                    println!("Paddock sudo shim {}", env!("CARGO_PKG_VERSION"));
                    return Ok(Err(0));
                }
                "list" => return Ok(Err(list())),
                "validate" | "remove-timestamp" => return Ok(Err(0)),
                other => return Err(format!("unsupported option --{other}\n{USAGE}")),
            }
            continue;
        }
        let flags: Vec<char> = a[1..].chars().collect();
        let mut i = 0;
        while i < flags.len() {
            match flags[i] {
                'u' => {
                    let rest: String = flags[i + 1..].iter().collect();
                    r.user = Some(if rest.is_empty() {
                        it.next().ok_or("option -u needs a user")?
                    } else {
                        rest
                    });
                    break;
                }
                'E' => r.preserve_env = true,
                'i' => r.login = true,
                's' => r.shell = true,
                'H' | 'n' | 'S' | 'b' => {}
                'k' | 'K' | 'v' if it.peek().is_none() => return Ok(Err(0)),
                'k' => {}
                'l' => return Ok(Err(list())),
                'h' => {
                    println!("{USAGE}");
                    return Ok(Err(0));
                }
                'V' => {
                    println!("Paddock sudo shim {}", env!("CARGO_PKG_VERSION"));
                    return Ok(Err(0));
                }
                c => return Err(format!("unsupported option -{c}\n{USAGE}")),
            }
            i += 1;
        }
    }
    while let Some(a) = it.peek() {
        match a.split_once('=') {
            Some((k, v))
                if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                r.set.push((k.to_owned(), v.to_owned()));
                it.next();
            }
            _ => break,
        }
    }
    r.argv = it.collect();
    if r.argv.is_empty() && !r.login && !r.shell {
        return Err(USAGE.to_owned());
    }
    Ok(Ok(r))
}

fn list() -> i32 {
    let name = users::lookup(&rustix::process::getuid().as_raw().to_string())
        .map(|u| u.name)
        .unwrap_or_else(|_| "this user".into());
    if may_sudo(rustix::process::getuid().as_raw()) {
        println!(
            "User {name} may run the following commands in this sandbox:\n    (ALL : ALL) NOPASSWD: ALL"
        );
        0
    } else {
        println!("User {name} may not run sudo in this sandbox.");
        1
    }
}

fn client(args: Vec<String>) -> Result<i32, String> {
    let mut req = match parse(args)? {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    req.cwd = std::env::current_dir()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "/".into());
    req.env = std::env::vars_os()
        .map(|(k, v): (OsString, OsString)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let mut sock = UnixStream::connect(paddock_core::SUDO_SOCKET)
        .map_err(|e| format!("cannot reach the Paddock agent: {e}"))?;
    let body = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
    if body.len() > MAX_REQUEST {
        return Err("argument list and environment too long".into());
    }
    send_with_fds(&sock, &(body.len() as u32).to_le_bytes())
        .map_err(|e| format!("talking to the Paddock agent: {e}"))?;
    sock.write_all(&body)
        .map_err(|e| format!("talking to the Paddock agent: {e}"))?;

    crate::sys::forward_signals(
        sock.as_raw_fd(),
        &[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT],
    );
    let mut line = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                line.extend_from_slice(&buf[..n]);
                if line.contains(&b'\n') {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("talking to the Paddock agent: {e}")),
        }
    }
    let reply: Reply = serde_json::from_slice(line.split(|b| *b == b'\n').next().unwrap_or(&[]))
        .map_err(|_| "the Paddock agent closed the connection".to_owned())?;
    match (reply.code, reply.error) {
        (_, Some(e)) => Err(e),
        (Some(c), None) => Ok(c),
        (None, None) => Err("no exit status from the Paddock agent".into()),
    }
}

/// Sends `bytes` with this process's descriptors 0, 1 and 2 attached (`/dev/null` in place
/// of a closed one).
fn send_with_fds(sock: &UnixStream, bytes: &[u8]) -> std::io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    let mut spare: Vec<OwnedFd> = Vec::new();
    let mut fds: Vec<BorrowedFd<'_>> = Vec::new();
    let stdio = [
        rustix::stdio::stdin(),
        rustix::stdio::stdout(),
        rustix::stdio::stderr(),
    ];
    for fd in stdio {
        // A closed number fails with EBADF and is replaced by /dev/null below.
        if rustix::io::fcntl_getfd(fd).is_err() {
            spare.push(OwnedFd::from(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")?,
            ));
        }
    }
    let mut spare_it = spare.iter();
    for fd in stdio {
        if rustix::io::fcntl_getfd(fd).is_ok() {
            fds.push(fd);
        } else if let Some(s) = spare_it.next() {
            fds.push(s.as_fd());
        }
    }
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !anc.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("ancillary buffer too small"));
    }
    let n = sendmsg(
        sock,
        &[std::io::IoSlice::new(bytes)],
        &mut anc,
        SendFlags::empty(),
    )?;
    if n != bytes.len() {
        (&*sock).write_all(&bytes[n..])?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Agent side
// ---------------------------------------------------------------------------------------

/// Whether `uid` may use sudo: root, or a member of group `sudo` or `wheel`.
fn may_sudo(uid: u32) -> bool {
    if uid == 0 {
        return true;
    }
    let Ok(u) = users::lookup(&uid.to_string()) else {
        return false;
    };
    u.uid == uid
        && u.groups
            .iter()
            .any(|g| matches!(users::name_of(*g, true).as_str(), "sudo" | "wheel"))
}

/// Listens on [`paddock_core::SUDO_SOCKET`] and serves each client on its own task.
pub fn serve(procs: Arc<Procs>) -> std::io::Result<()> {
    let path = std::path::Path::new(paddock_core::SUDO_SOCKET);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    // Anyone may connect; who may run what is decided per connection from SO_PEERCRED.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(handle(procs.clone(), s));
                }
                Err(e) => {
                    tracing::warn!("sudo socket: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(())
}

async fn handle(procs: Arc<Procs>, s: tokio::net::UnixStream) {
    let uid = match s.peer_cred() {
        Ok(c) => c.uid(),
        Err(_) => return,
    };
    let Ok(std_s) = s.into_std() else { return };
    let _ = std_s.set_nonblocking(false);
    let res = tokio::task::spawn_blocking(move || read_request(std_s)).await;
    let Ok(Ok((req, fds, std_s))) = res else {
        return;
    };
    let Ok(s) = std_s
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(std_s))
    else {
        return;
    };
    run(procs, uid, req, fds, s).await;
}

/// Reads the length (with the descriptors) and the JSON request.
fn read_request(mut s: UnixStream) -> std::io::Result<(Request, Vec<OwnedFd>, UnixStream)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
    let mut len = [0u8; 4];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(
        &s,
        &mut [std::io::IoSliceMut::new(&mut len)],
        &mut anc,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(r) = m {
            fds.extend(r);
        }
    }
    if got.bytes < 4 {
        s.read_exact(&mut len[got.bytes..])?;
    }
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_REQUEST || fds.len() != 3 {
        return Err(std::io::Error::other("bad sudo request"));
    }
    let mut body = vec![0u8; n];
    s.read_exact(&mut body)?;
    let req = serde_json::from_slice(&body).map_err(std::io::Error::other)?;
    Ok((req, fds, s))
}

async fn reply(s: &mut tokio::net::UnixStream, r: Reply) {
    use tokio::io::AsyncWriteExt as _;
    let mut line = serde_json::to_vec(&r).unwrap_or_default();
    line.push(b'\n');
    let _ = s.write_all(&line).await;
}

async fn run(
    procs: Arc<Procs>,
    uid: u32,
    req: Request,
    fds: Vec<OwnedFd>,
    mut s: tokio::net::UnixStream,
) {
    use tokio::io::AsyncReadExt as _;
    let fail = |e: String| Reply {
        code: None,
        error: Some(e),
    };
    if !may_sudo(uid) {
        let name = users::name_of(uid, false);
        return reply(
            &mut s,
            fail(format!(
                "{name} is not in the sudoers file (group sudo or wheel) of this sandbox"
            )),
        )
        .await;
    }
    let target = req.user.as_deref().unwrap_or("root");
    let target = target.strip_prefix('#').unwrap_or(target);
    let user = match users::lookup(target) {
        Ok(u) => u,
        Err(e) => return reply(&mut s, fail(e.to_string())).await,
    };
    let caller = users::lookup(&uid.to_string()).ok();
    let argv = command_line(&req, &user);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).env_clear();
    if req.preserve_env {
        cmd.envs(req.env.iter().map(|(k, v)| (k, v)));
    } else {
        cmd.envs(procs.sandbox_env().iter());
        for (k, v) in &req.env {
            if req.keep.contains(k)
                || matches!(
                    k.as_str(),
                    "TERM" | "COLORTERM" | "LANG" | "LC_ALL" | "DISPLAY"
                )
                || k.starts_with("LC_")
            {
                cmd.env(k, v);
            }
        }
    }
    cmd.env("PATH", paddock_core::SANDBOX_PATH)
        .env("HOME", &user.home)
        .env("USER", &user.name)
        .env("LOGNAME", &user.name)
        .env("SHELL", &user.shell)
        .env("SUDO_COMMAND", req.argv.join(" "))
        .env("SUDO_UID", uid.to_string());
    if let Some(c) = &caller {
        cmd.env("SUDO_USER", &c.name)
            .env("SUDO_GID", c.gid.to_string());
    }
    cmd.envs(req.set.iter().map(|(k, v)| (k, v)));
    let mut fds = fds.into_iter();
    let (Some(i), Some(o), Some(e)) = (fds.next(), fds.next(), fds.next()) else {
        return;
    };
    cmd.stdin(i).stdout(o).stderr(e);
    let cwd = if req.login {
        std::path::PathBuf::from(&user.home)
    } else {
        let c = std::path::PathBuf::from(&req.cwd);
        if c.is_dir() { c } else { "/".into() }
    };
    let spawned = procs.spawn_detached(cmd, &user, &cwd);
    let (pid, pidfd, exit) = match spawned {
        Ok(x) => x,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return reply(&mut s, fail(format!("{}: command not found", argv[0]))).await;
        }
        Err(e) => return reply(&mut s, fail(format!("{}: {e}", argv[0]))).await,
    };
    // The command's process group (it leads a session made by setsid), through its pidfd:
    // the reaper may collect it at any moment, so its number alone could name another.
    let kill = |sig: i32| {
        let _ = procs.signal_detached(&pidfd, pid, sig);
    };
    tokio::pin!(exit);
    let mut b = [0u8; 16];
    let code = loop {
        tokio::select! {
            done = &mut exit => {
                let Ok(x) = done else { return };
                break if x.exited { x.code } else { 128 + signal_of(&x.status) };
            }
            r = s.read(&mut b) => match r {
                Ok(0) | Err(_) => {
                    // The client is gone (killed, or its terminal closed): so is the command.
                    kill(libc::SIGKILL);
                    let _ = (&mut exit).await;
                    return;
                }
                Ok(n) => {
                    for sig in &b[..n] {
                        if matches!(i32::from(*sig), libc::SIGINT | libc::SIGTERM | libc::SIGHUP | libc::SIGQUIT) {
                            kill(i32::from(*sig));
                        }
                    }
                }
            }
        }
    };
    reply(
        &mut s,
        Reply {
            code: Some(code),
            error: None,
        },
    )
    .await;
}

/// The signal number in a Go-style status (`signal: killed`), for the 128+n exit code.
fn signal_of(status: &str) -> i32 {
    let name = status.strip_prefix("signal: ").unwrap_or(status);
    match name {
        "killed" => libc::SIGKILL,
        "terminated" => libc::SIGTERM,
        "interrupt" => libc::SIGINT,
        "hangup" => libc::SIGHUP,
        "quit" => libc::SIGQUIT,
        "segmentation fault" => libc::SIGSEGV,
        "aborted" => libc::SIGABRT,
        "broken pipe" => libc::SIGPIPE,
        other => other
            .strip_prefix("signal ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(libc::SIGKILL),
    }
}

/// The argv to run: the command, or the target's shell for `-i`/`-s`.
fn command_line(req: &Request, user: &users::User) -> Vec<String> {
    let shell = if user.shell.is_empty() {
        "/bin/sh".to_owned()
    } else {
        user.shell.clone()
    };
    if req.login || req.shell {
        let mut v = vec![shell];
        if req.login {
            v.push("-l".into());
        }
        if !req.argv.is_empty() {
            v.push("-c".into());
            v.push(req.argv.join(" "));
        }
        v
    } else {
        req.argv.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> Request {
        parse(a.iter().map(|s| s.to_string()).collect())
            .expect("parses")
            .expect("a request")
    }

    #[test]
    fn options_and_assignments() {
        let r = p(&["-E", "-u", "user", "A=1", "B=x=y", "env", "C=2"]);
        assert!(r.preserve_env);
        assert_eq!(r.user.as_deref(), Some("user"));
        assert_eq!(
            r.set,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert_eq!(r.argv, vec!["env", "C=2"]);
        let r = p(&["-nHuroot", "--", "-weird"]);
        assert_eq!(r.user.as_deref(), Some("root"));
        assert_eq!(r.argv, vec!["-weird"]);
        let r = p(&["--preserve-env=PATH,FOO", "-i"]);
        assert_eq!(r.keep, vec!["PATH", "FOO"]);
        assert!(r.login && r.argv.is_empty());
    }

    #[test]
    fn bad_usage_is_an_error() {
        assert!(parse(vec![]).is_err());
        assert!(parse(vec!["-g".into(), "x".into(), "id".into()]).is_err());
        assert!(matches!(parse(vec!["-v".into()]), Ok(Err(0))));
    }

    #[test]
    fn signal_codes() {
        assert_eq!(signal_of("signal: killed"), 9);
        assert_eq!(signal_of("signal: interrupt"), 2);
        assert_eq!(signal_of("signal 12"), 12);
    }
}
