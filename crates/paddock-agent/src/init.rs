//! The agent as PID 1: reaps every zombie in the sandbox and serves the envd protocol.

use std::collections::BTreeMap;
use std::sync::Arc;

use paddock_core::AGENT_LISTEN_FD;

use crate::procs::Procs;

/// Entry point of `paddock-agent init`. Never returns.
pub fn main() -> ! {
    // Started through the agent's private loader, the process would be named after it
    // (`ld.so`); `ps` in the sandbox should show what PID 1 is. Threads started later inherit
    // the name. A failure only costs the cosmetic name.
    let _ = rustix::thread::set_name(c"paddock-agent");
    let filter = std::env::var("PADDOCK_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    // One thread for the protocol; file operations and PTY spawns use tokio's blocking pool,
    // which starts threads only on demand. This keeps an idle sandbox's agent small.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
        .expect("building the agent runtime");
    let code = match rt.block_on(serve()) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("agent failed: {e:#}");
            1
        }
    };
    std::process::exit(code)
}

async fn serve() -> crate::error::Result<()> {
    let env: BTreeMap<String, String> = std::env::var("PADDOCK_SANDBOX_ENV")
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let std_listener = match std::env::var_os("PADDOCK_AGENT_SOCKET") {
        // Under gVisor no descriptor can be handed over: the agent binds the socket itself
        // in the host directory the setup stage bound for it (runsc `--host-uds=create`),
        // before it starts any process, and the runtime moves it out of that directory.
        Some(path) => {
            use std::os::unix::fs::PermissionsExt as _;
            let path = std::path::PathBuf::from(path);
            let _ = std::fs::remove_file(&path);
            if let Some(dir) = path.parent() {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
            // std's listener is close-on-exec.
            std::os::unix::net::UnixListener::bind(&path)?
        }
        None => {
            // The setup stage placed the listening socket at this fixed descriptor.
            let fd = crate::sys::take_inherited_fd(AGENT_LISTEN_FD)?;
            // The setup stage had to clear close-on-exec to hand the socket over; set it
            // again at once, or every process the agent starts would inherit the listener
            // and could accept (and read or forge) the host's requests.
            rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
            keep_statfs_listener()?;
            std::os::unix::net::UnixListener::from(fd)
        }
    };
    std_listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(std_listener)?;

    let procs = Procs::new(env);
    tokio::spawn(crate::procs::reap(procs.clone()));
    if let Err(e) = crate::sudo::serve(procs.clone()) {
        // Not fatal: everything but `sudo` still works.
        tracing::error!("sudo socket: {e}");
    }
    let fs = Arc::new(crate::fs::FsService::new());

    let connect = connectrpc::Router::new()
        .add_service(procs.clone())
        .add_service(fs);
    let app = axum::Router::new()
        .route(
            "/health",
            axum::routing::get(|| async { http::StatusCode::NO_CONTENT }),
        )
        .route("/paddock/env", axum::routing::post(set_env))
        .with_state(procs.clone())
        .merge(crate::files::router())
        .merge(crate::archive::router())
        .merge(crate::services::router(crate::services::Services::new(
            procs.clone(),
        )))
        .fallback_service(connect.into_axum_service());
    axum::serve(listener, app).await?;
    Ok(())
}

/// `POST /paddock/env`: replaces the sandbox's env vars (a JSON object of strings) for every
/// process started from now on. The host sends it when it hands out a pooled sandbox, before
/// anything of the new owner runs (`docs/pools.md`); over the E2B data plane it is what
/// envd's `/init` does with `envVars`, so it gives the caller nothing it could not do with an
/// exec.
async fn set_env(
    axum::extract::State(procs): axum::extract::State<Arc<Procs>>,
    body: axum::body::Bytes,
) -> (http::StatusCode, String) {
    let env: BTreeMap<String, String> = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => return (http::StatusCode::BAD_REQUEST, format!("bad env: {e}")),
    };
    if let Some(k) = env
        .iter()
        .find(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'))
        .map(|(k, _)| k)
    {
        return (
            http::StatusCode::BAD_REQUEST,
            format!("bad env var {k:?}: empty, or with = or NUL"),
        );
    }
    procs.set_sandbox_env(env);
    (http::StatusCode::NO_CONTENT, String::new())
}

/// Keeps the `statfs` seccomp listener the setup stage left at `PADDOCK_STATFS_FD` open for
/// the life of PID 1 (the host answers on its own copy, taken with `pidfd_getfd`, and takes a
/// new one after it restarts), close-on-exec so no process the agent starts inherits it.
fn keep_statfs_listener() -> crate::error::Result<()> {
    let Some(n) = std::env::var("PADDOCK_STATFS_FD")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return Ok(());
    };
    if n != paddock_core::STATFS_LISTENER_FD {
        crate::error::bail!("unexpected statfs listener descriptor {n}");
    }
    // The setup stage placed the listener at this fixed descriptor; it is leaked on purpose
    // below, so it is never closed.
    let fd = crate::sys::take_inherited_fd(n)?;
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
    std::mem::forget(fd);
    Ok(())
}
