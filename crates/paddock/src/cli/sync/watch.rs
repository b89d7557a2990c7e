//! `paddock sync --watch`: after the first sync, watch the local directory (inotify through
//! the `notify` crate) and sync again once changes have been quiet for [`DEBOUNCE`].
//!
//! Every re-sync is a full sync (listing, comparison, credential check), so a burst of
//! events costs one sync, and a change to an ignored file costs a sync that finds nothing
//! (and prints nothing). A failed or refused re-sync is reported and watching goes on.
//! SIGINT, SIGTERM or SIGHUP end it with exit code 0.

use std::path::Component;
use std::time::Duration;

use anyhow::{Context, Result};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::Job;

/// Quiet time after the last change before syncing.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(300);

/// Whether an event is only about `.git` internals or is a mere access.
fn irrelevant(ev: &notify::Event) -> bool {
    matches!(ev.kind, EventKind::Access(_))
        || (!ev.paths.is_empty()
            && ev.paths.iter().all(|p| {
                p.components()
                    .any(|c| c == Component::Normal(std::ffi::OsStr::new(".git")))
            }))
}

/// Resolves on SIGINT, SIGTERM or SIGHUP.
async fn stopped() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
}

/// Watches and re-syncs until a stop signal.
pub(crate) async fn watch(job: &Job) -> Result<i32> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        match res {
            Ok(ev) if irrelevant(&ev) => {}
            // An error (such as an overflowed event queue) may hide changes: sync.
            _ => {
                let _ = tx.send(());
            }
        }
    })
    .context("starting the file watcher")?;
    watcher
        .watch(&job.local, RecursiveMode::Recursive)
        .with_context(|| format!("watching {}", job.local.display()))?;
    eprintln!(
        "paddock: watching {} for changes (Ctrl-C to stop)",
        job.local.display()
    );
    let stop = stopped();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            got = rx.recv() => if got.is_none() { break },
            () = &mut stop => break,
        }
        // Debounce: wait until no event came for DEBOUNCE.
        loop {
            tokio::select! {
                r = tokio::time::timeout(DEBOUNCE, rx.recv()) => match r {
                    Ok(Some(())) => continue,
                    _ => break,
                },
                () = &mut stop => return Ok(0),
            }
        }
        match job.sync().await {
            Ok(report) => {
                super::print_report(job, report, true)?;
            }
            Err(e) => eprintln!("paddock: sync failed: {e:#}"),
        }
    }
    Ok(0)
}
