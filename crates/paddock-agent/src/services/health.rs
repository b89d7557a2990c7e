//! A service's health check: every interval while its process runs, a shell command that
//! must exit 0 (as the service's user, in its directory, with its environment; killed after
//! [`CHECK_TIMEOUT`] or the interval, whichever is shorter) or a port on `127.0.0.1` that
//! must accept a connection.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::{HealthState, Service, State};
use crate::procs::Procs;
use crate::users;

/// Longest a health check may take.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the service's health check until the service is removed.
pub(super) async fn watch(procs: Arc<Procs>, svc: Arc<Service>) {
    let Some(h) = svc.spec.health.clone() else {
        return;
    };
    let interval = Duration::from_millis(h.interval_ms);
    loop {
        tokio::select! {
            _ = svc.gone.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let pid = svc.status().pid;
        if svc.status().state != State::Running {
            continue;
        }
        let limit = interval.min(CHECK_TIMEOUT);
        let outcome = match (&h.cmd, h.port) {
            (_, Some(port)) => check_port(port, limit).await,
            (Some(cmd), None) => check_cmd(&procs, &svc, cmd, limit).await,
            (None, None) => Ok(()),
        };
        // A check that raced with a restart says nothing about the new process.
        if svc.status().pid != pid {
            continue;
        }
        svc.set(|s| match outcome {
            Ok(()) => {
                s.health = HealthState::Healthy;
                s.health_detail = None;
            }
            Err(why) => {
                s.health = HealthState::Unhealthy;
                s.health_detail = Some(why);
            }
        });
    }
}

async fn check_port(port: u16, limit: Duration) -> Result<(), String> {
    match tokio::time::timeout(limit, tokio::net::TcpStream::connect(("127.0.0.1", port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("port {port}: {e}")),
        Err(_) => Err(format!("port {port}: no answer within {limit:?}")),
    }
}

async fn check_cmd(procs: &Procs, svc: &Service, cmd: &str, limit: Duration) -> Result<(), String> {
    let user = users::by_name_or_default(svc.spec.user.as_deref()).map_err(|e| e.to_string())?;
    let cwd = match svc.spec.cwd.as_deref() {
        Some(c) => users::resolve_path(&user, c),
        None => users::default_cwd(&user),
    };
    let mut c = Command::new("/bin/sh");
    c.args(["-c", cmd])
        .env_clear()
        .env("PATH", paddock_core::SANDBOX_PATH)
        .env("HOME", &user.home)
        .env("USER", &user.name)
        .env("LOGNAME", &user.name)
        .envs(procs.sandbox_env().iter())
        .envs(svc.spec.env.iter())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let (pid, pidfd, rx) = procs
        .spawn_detached(c, &user, &cwd)
        .map_err(|e| format!("starting the check: {e}"))?;
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(exit)) if exit.exited && exit.code == 0 => Ok(()),
        Ok(Ok(exit)) => Err(format!("the check ended with {}", exit.status)),
        Ok(Err(_)) => Err("the check's exit was lost".into()),
        Err(_) => {
            let _ = procs.signal_detached(&pidfd, pid, libc::SIGKILL);
            Err(format!("the check took longer than {limit:?}"))
        }
    }
}
