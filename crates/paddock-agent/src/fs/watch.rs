//! Watches: inotify watches for `WatchDir` streams and `CreateWatcher` buffers, mapped to
//! events the way fsnotify (used by envd) does.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use buffa::MessageField;
use connectrpc::ConnectError;
use futures::StreamExt;
use inotify::{EventMask, EventStream, Inotify, WatchDescriptor, WatchMask, Watches};
use paddock_envd::filesystem::*;
use tokio::sync::mpsc;

use super::entry::{Names, entry_from_meta, entry_info, lossy};
use super::{Buffered, INOTIFY_BUFFER, MAX_BUFFERED_EVENTS, fs_err, run_as};
use crate::lock;
use crate::users::User;

/// Filesystem types envd refuses to watch unless `allow_network_mounts` is set: inotify
/// does not see changes made by other machines there.
const NETWORK_FS: [i64; 5] = [
    0x6969,      // NFS
    0xFF53_4D42, // CIFS
    0x517B,      // SMB
    0xFE53_4D42, // SMB2
    0x6573_5546, // FUSE
];

/// Events a watched directory reports. `EXCL_UNLINK` drops events for files already
/// unlinked but still open.
fn watch_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MODIFY
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
        | WatchMask::EXCL_UNLINK
        | WatchMask::ONLYDIR
}

/// Directories a recursive watch never descends into: kernel interfaces whose contents
/// are not files and would exhaust the watch limit.
fn skip_recursive(abs: &Path) -> bool {
    abs == Path::new("/proc") || abs == Path::new("/sys")
}

/// What the client asked to watch.
#[derive(Clone)]
pub(super) struct WatchSpec {
    pub(super) user: User,
    pub(super) root: PathBuf,
    pub(super) recursive: bool,
    pub(super) include_entry: bool,
}

/// A set-up watch: the inotify stream and which directory each watch descriptor is, as a
/// path relative to the watched root.
pub(super) struct Watch {
    spec: WatchSpec,
    stream: EventStream<Vec<u8>>,
    watches: Watches,
    dirs: HashMap<WatchDescriptor, PathBuf>,
}

/// Adds watches for `rel` (relative to `root`) and, if `recursive`, every directory below
/// it, without following symlinks. Entries found below `rel` are appended to `found` so
/// the caller can report them as created. Runs as the user, on a blocking thread.
fn add_tree(
    watches: &mut Watches,
    spec: &WatchSpec,
    rel: &Path,
    added: &mut Vec<(WatchDescriptor, PathBuf)>,
    mut found: Option<&mut Vec<(PathBuf, Option<EntryInfo>)>>,
    names: &mut Names,
) {
    let abs = spec.root.join(rel);
    let Ok(wd) = watches.add(&abs, watch_mask() | WatchMask::DONT_FOLLOW) else {
        return;
    };
    added.push((wd, rel.to_path_buf()));
    if !spec.recursive || skip_recursive(&abs) {
        return;
    }
    let Ok(rd) = std::fs::read_dir(&abs) else {
        return;
    };
    let mut children: Vec<OsString> = rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
    children.sort();
    for name in children {
        let child_rel = rel.join(&name);
        let child_abs = abs.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&child_abs) else {
            continue;
        };
        if let Some(found) = found.as_deref_mut() {
            let entry = spec
                .include_entry
                .then(|| entry_from_meta(&child_abs, &meta, names));
            found.push((child_rel.clone(), entry));
        }
        if meta.is_dir() {
            add_tree(
                watches,
                spec,
                &child_rel,
                added,
                found.as_deref_mut(),
                names,
            );
        }
    }
}

/// Checks the request and sets up the watches, so that any error is returned before the
/// stream starts and every change after `start` is seen.
pub(super) async fn start_watch(
    spec: WatchSpec,
    allow_network_mounts: bool,
) -> Result<Watch, ConnectError> {
    let inotify = Inotify::init().map_err(|e| fs_err(&e, &spec.root))?;
    let mut watches = inotify.watches();
    let s = spec.clone();
    let added = run_as(&spec.user, move || -> Result<_, ConnectError> {
        let meta = std::fs::metadata(&s.root).map_err(|e| fs_err(&e, &s.root))?;
        if !meta.is_dir() {
            return Err(ConnectError::invalid_argument(format!(
                "path is not a directory: {:?}",
                s.root.as_os_str()
            )));
        }
        if !allow_network_mounts {
            let st = rustix::fs::statfs(&s.root).map_err(|e| fs_err(&e.into(), &s.root))?;
            #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets.
            if NETWORK_FS.contains(&(st.f_type as i64)) {
                return Err(ConnectError::invalid_argument(format!(
                    "cannot watch a path on a network filesystem: {:?}",
                    s.root.as_os_str()
                )));
            }
        }
        // The root itself may be a symlink to the directory to watch.
        let wd = watches
            .add(&s.root, watch_mask())
            .map_err(|e| fs_err(&e, &s.root))?;
        let mut added = vec![(wd, PathBuf::new())];
        if s.recursive && !skip_recursive(&s.root) {
            let mut names = Names::default();
            let mut children: Vec<OsString> = std::fs::read_dir(&s.root)
                .map_err(|e| fs_err(&e, &s.root))?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            children.sort();
            for name in children {
                let rel = PathBuf::from(&name);
                if s.root
                    .join(&rel)
                    .symlink_metadata()
                    .is_ok_and(|m| m.is_dir())
                {
                    add_tree(&mut watches, &s, &rel, &mut added, None, &mut names);
                }
            }
        }
        Ok(added)
    })
    .await??;
    let stream = inotify
        .into_event_stream(vec![0u8; INOTIFY_BUFFER])
        .map_err(|e| fs_err(&e, &spec.root))?;
    let watches = stream.watches();
    Ok(Watch {
        spec,
        stream,
        watches,
        dirs: added.into_iter().collect(),
    })
}

fn fs_event(rel: &Path, kind: EventType, entry: Option<EntryInfo>) -> FilesystemEvent {
    FilesystemEvent {
        name: lossy(rel),
        r#type: kind.into(),
        entry: entry.map(MessageField::some).unwrap_or_default(),
        ..Default::default()
    }
}

fn event_kind(mask: EventMask) -> Option<EventType> {
    if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
        Some(EventType::EVENT_TYPE_CREATE)
    } else if mask.contains(EventMask::MODIFY) {
        Some(EventType::EVENT_TYPE_WRITE)
    } else if mask.contains(EventMask::DELETE) {
        Some(EventType::EVENT_TYPE_REMOVE)
    } else if mask.contains(EventMask::MOVED_FROM) {
        Some(EventType::EVENT_TYPE_RENAME)
    } else if mask.contains(EventMask::ATTRIB) {
        Some(EventType::EVENT_TYPE_CHMOD)
    } else {
        None
    }
}

impl Watch {
    /// Turns one inotify event into protocol events, keeping the watch set in step with
    /// the tree (new directories gain watches, directories moved away lose theirs).
    async fn process(&mut self, ev: inotify::EventOwned) -> Vec<FilesystemEvent> {
        if ev.mask.contains(EventMask::IGNORED) {
            self.dirs.remove(&ev.wd);
            return Vec::new();
        }
        if ev.mask.contains(EventMask::Q_OVERFLOW) {
            tracing::warn!("inotify queue overflowed; some filesystem events were lost");
            return Vec::new();
        }
        let (Some(dir), Some(name)) = (self.dirs.get(&ev.wd), ev.name.as_ref()) else {
            return Vec::new();
        };
        let rel = dir.join(name);
        let Some(kind) = event_kind(ev.mask) else {
            return Vec::new();
        };
        let is_dir = ev.mask.contains(EventMask::ISDIR);
        if self.spec.recursive && is_dir && kind == EventType::EVENT_TYPE_RENAME {
            // The directory left this place: its watches would report under a stale name.
            let gone: Vec<WatchDescriptor> = self
                .dirs
                .iter()
                .filter(|(_, p)| p.starts_with(&rel))
                .map(|(wd, _)| wd.clone())
                .collect();
            for wd in gone {
                self.dirs.remove(&wd);
                let _ = self.watches.remove(wd);
            }
        }
        let descend = self.spec.recursive && is_dir && kind == EventType::EVENT_TYPE_CREATE;
        let want_entry = self.spec.include_entry
            && !matches!(
                kind,
                EventType::EVENT_TYPE_REMOVE | EventType::EVENT_TYPE_RENAME
            );
        if !descend && !want_entry {
            return vec![fs_event(&rel, kind, None)];
        }
        let spec = self.spec.clone();
        let mut watches = self.watches.clone();
        let rel2 = rel.clone();
        let work = run_as(&self.spec.user, move || {
            let mut names = Names::default();
            let entry = if want_entry {
                entry_info(&spec.root.join(&rel2), &mut names).ok()
            } else {
                None
            };
            let mut added = Vec::new();
            let mut found = Vec::new();
            if descend {
                add_tree(
                    &mut watches,
                    &spec,
                    &rel2,
                    &mut added,
                    Some(&mut found),
                    &mut names,
                );
            }
            (entry, added, found)
        })
        .await;
        let (entry, added, found) = work.unwrap_or_default();
        self.dirs.extend(added);
        let mut out = vec![fs_event(&rel, kind, entry)];
        out.extend(
            found
                .into_iter()
                .map(|(r, e)| fs_event(&r, EventType::EVENT_TYPE_CREATE, e)),
        );
        out
    }
}

fn watch_response(
    e: impl Into<Option<paddock_envd::filesystem::__buffa::oneof::watch_dir_response::Event>>,
) -> WatchDirResponse {
    WatchDirResponse {
        event: e.into(),
        ..Default::default()
    }
}

/// Feeds a `WatchDir` stream: `start`, then events, a keepalive after each `keepalive` of
/// silence, and a `deadline_exceeded` error when the client's timeout is reached. Ends
/// when the client goes away.
pub(super) async fn stream_watch(
    mut w: Watch,
    tx: mpsc::Sender<Result<WatchDirResponse, ConnectError>>,
    keepalive: Option<Duration>,
    deadline: Option<tokio::time::Instant>,
) {
    if tx
        .send(Ok(
            watch_response(watch_dir_response::StartEvent::default()),
        ))
        .await
        .is_err()
    {
        return;
    }
    let ka = keepalive.unwrap_or(Duration::from_secs(3600));
    let mut idle_until = tokio::time::Instant::now() + ka;
    loop {
        tokio::select! {
            ev = w.stream.next() => {
                let ev = match ev {
                    Some(Ok(ev)) => ev,
                    Some(Err(e)) => {
                        let _ = tx.send(Err(ConnectError::internal(format!("watch failed: {e}")))).await;
                        return;
                    }
                    None => return,
                };
                for e in w.process(ev).await {
                    if tx.send(Ok(watch_response(e))).await.is_err() {
                        return;
                    }
                    idle_until = tokio::time::Instant::now() + ka;
                }
            }
            _ = tokio::time::sleep_until(idle_until), if keepalive.is_some() => {
                if tx.send(Ok(watch_response(watch_dir_response::KeepAlive::default()))).await.is_err() {
                    return;
                }
                idle_until = tokio::time::Instant::now() + ka;
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(idle_until)), if deadline.is_some() => {
                let _ = tx.send(Err(ConnectError::deadline_exceeded("watch deadline exceeded"))).await;
                return;
            }
            _ = tx.closed() => return,
        }
    }
}

/// Feeds a `CreateWatcher` buffer until the watcher is removed (the task is aborted).
pub(super) async fn buffer_watch(mut w: Watch, buffer: Arc<Mutex<Buffered>>) {
    loop {
        let ev = match w.stream.next().await {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                lock(&buffer).error = Some(ConnectError::internal(format!("watch failed: {e}")));
                return;
            }
            None => return,
        };
        let events = w.process(ev).await;
        let mut b = lock(&buffer);
        b.events.extend(events);
        while b.events.len() > MAX_BUFFERED_EVENTS {
            b.events.pop_front();
        }
    }
}
