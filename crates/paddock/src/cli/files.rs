//! `paddock upload` and `paddock download`: files stream as raw bodies
//! (`/v1/sandboxes/{id}/files?path=`), directories as tar streams
//! (`/v1/sandboxes/{id}/archive?path=`).
//!
//! Nothing is held in memory whole: an uploaded directory is archived by the `tar` crate on a
//! blocking thread writing into a channel that is the request body; a downloaded one is
//! extracted from the response stream as it arrives, refusing entries with `..` or absolute
//! paths. A downloaded file goes to a temporary file beside its destination and is renamed
//! into place only when complete. A directory's *contents* go into the destination directory
//! (created if missing) both ways.

use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use futures::stream::BoxStream;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::Conn;
use super::api::Api;

/// Transfers larger than this get a progress bar (when stderr is a terminal).
pub(crate) const PROGRESS_THRESHOLD: u64 = 1024 * 1024;
/// Size of the chunks a directory's tar stream is sent in.
const CHUNK: usize = 64 * 1024;

/// `paddock upload`.
#[derive(Args, Debug)]
pub(crate) struct UploadArgs {
    /// The sandbox.
    pub(crate) id: String,
    /// Local file or directory.
    pub(crate) local: PathBuf,
    /// Destination path in the sandbox (a file ending in `/` keeps its name in that
    /// directory; a directory's contents go into this directory).
    pub(crate) remote: String,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// `paddock download`.
#[derive(Args, Debug)]
pub(crate) struct DownloadArgs {
    /// The sandbox.
    pub(crate) id: String,
    /// File or directory in the sandbox.
    pub(crate) remote: String,
    /// Local destination (an existing directory receives a file under its own name; a
    /// directory's contents go into this directory).
    pub(crate) local: PathBuf,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// Whether a transfer of `total` bytes (or `done` so far, when the total is unknown) gets a
/// progress bar.
pub(crate) fn shows_progress(tty: bool, total: Option<u64>, done: u64) -> bool {
    tty && total.unwrap_or(done) > PROGRESS_THRESHOLD
}

/// Bytes and rate of a transfer on stderr: drawn only when stderr is a terminal and the
/// transfer is larger than [`PROGRESS_THRESHOLD`] (for an unknown size, from the moment it
/// passes it). Clones share the bar.
#[derive(Clone)]
pub(crate) struct Progress {
    bar: ProgressBar,
    tty: bool,
    shown: Arc<AtomicBool>,
}

impl Progress {
    pub(crate) fn new(label: &str, total: Option<u64>) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let (bar, template) = match total {
            Some(n) => (
                ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::hidden()),
                "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
            ),
            None => (
                ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()),
                "{msg} {spinner} {binary_bytes} {binary_bytes_per_sec}",
            ),
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(label.to_owned());
        let p = Progress {
            bar,
            tty,
            shown: Arc::new(AtomicBool::new(false)),
        };
        p.inc(0);
        p
    }

    pub(crate) fn inc(&self, n: u64) {
        self.bar.inc(n);
        if !self.shown.load(Ordering::Relaxed)
            && shows_progress(self.tty, self.bar.length(), self.bar.position())
        {
            self.shown.store(true, Ordering::Relaxed);
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// What `GET /v1/sandboxes/{id}/fs/stat` says about a path.
#[derive(Debug, Deserialize)]
struct Stat {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    size: Option<u64>,
}

/// The last component of a `/`-separated path (`None` for `/` or empty).
pub(crate) fn remote_basename(p: &str) -> Option<&str> {
    p.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty() && *s != "." && *s != "..")
}

/// The remote path of an uploaded file: `remote`, or `remote` + the local name when
/// `remote` ends with `/`.
pub(crate) fn upload_target(local: &Path, remote: &str) -> Result<String> {
    if !remote.ends_with('/') {
        return Ok(remote.to_owned());
    }
    let name = local
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{} has no usable file name", local.display()))?;
    Ok(format!("{remote}{name}"))
}

/// Copies a local file or directory into the sandbox.
pub(crate) async fn upload(a: UploadArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    if a.remote.is_empty() {
        bail!("the remote path is empty");
    }
    let meta = tokio::fs::metadata(&a.local)
        .await
        .with_context(|| format!("{}", a.local.display()))?;
    if meta.is_dir() {
        upload_dir(&api, &a.id, &a.local, &a.remote).await?;
    } else if meta.is_file() {
        let mut remote = upload_target(&a.local, &a.remote)?;
        // Like cp: into an existing remote directory, under the local name.
        if !a.remote.ends_with('/') && remote_is_dir(&api, &a.id, &remote).await {
            remote = upload_target(&a.local, &format!("{remote}/"))?;
        }
        upload_file(&api, &a.id, &a.local, &remote, meta.len()).await?;
    } else {
        bail!("{} is not a regular file or a directory", a.local.display());
    }
    Ok(0)
}

async fn upload_file(api: &Api, id: &str, local: &Path, remote: &str, len: u64) -> Result<()> {
    let file = tokio::fs::File::open(local)
        .await
        .with_context(|| format!("{}", local.display()))?;
    let progress = Progress::new(&display_name(local), Some(len));
    let p = progress.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, CHUNK).map(move |r| {
        if let Ok(b) = &r {
            p.inc(b.len() as u64);
        }
        r
    });
    let res = api
        .send(
            api.request(
                reqwest::Method::PUT,
                api.url(&["v1", "sandboxes", id, "files"]),
            )
            .query(&[("path", remote)])
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(stream)),
        )
        .await;
    progress.finish();
    res?;
    Ok(())
}

/// A `Write` that sends what is written, in chunks, into the request body's channel.
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Archives the contents of `src` (entries relative to it, symlinks kept as symlinks) into
/// `w`.
pub(crate) fn write_tar<W: Write>(src: &Path, w: W) -> io::Result<W> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    b.append_dir_all("", src)?;
    b.into_inner()
}

/// About how many bytes the tar stream of `dir` has (headers plus padded file contents),
/// for the progress bar.
fn tar_size_estimate(dir: &Path) -> u64 {
    let mut total = 1024u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            total = total.saturating_add(512);
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                total = total.saturating_add(m.len().div_ceil(512) * 512);
            }
        }
    }
    total
}

async fn upload_dir(api: &Api, id: &str, local: &Path, remote: &str) -> Result<()> {
    let src = local.to_path_buf();
    let estimate = tokio::task::spawn_blocking(move || tar_size_estimate(&src))
        .await
        .unwrap_or(0);
    let src = local.to_path_buf();
    let what = local.display().to_string();
    put_tar(
        api,
        id,
        remote,
        &display_name(local),
        &what,
        estimate,
        move |w| write_tar(&src, w),
    )
    .await
}

/// Streams the tar that `build` writes into `PUT .../archive?path=remote` (extracted into
/// that directory, created if missing), with a progress bar labelled `label` for about
/// `estimate` bytes. `build` runs on a blocking thread; its error (reported as "archiving
/// {what}") fails the request body too, so the server does not take a partial tree.
pub(crate) async fn put_tar<F>(
    api: &Api,
    id: &str,
    remote: &str,
    label: &str,
    what: &str,
    estimate: u64,
    build: F,
) -> Result<()>
where
    F: FnOnce(ChannelWriter) -> io::Result<ChannelWriter> + Send + 'static,
{
    let progress = Progress::new(label, Some(estimate));
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    let builder = tokio::task::spawn_blocking(move || {
        let w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let res = build(w).and_then(|mut w| w.flush());
        if let Err(e) = &res {
            let _ = tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
        }
        res
    });
    let p = progress.clone();
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .map(move |r| {
        if let Ok(b) = &r {
            p.inc(b.len() as u64);
        }
        r
    });
    let req = api
        .request(
            reqwest::Method::PUT,
            api.url(&["v1", "sandboxes", id, "archive"]),
        )
        .query(&[("path", remote)])
        .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
        .body(reqwest::Body::wrap_stream(body));
    let (sent, built) = tokio::join!(api.send(req), builder);
    progress.finish();
    match built {
        Ok(Err(e)) if e.kind() != io::ErrorKind::BrokenPipe => {
            return Err(e).with_context(|| format!("archiving {what}"));
        }
        Err(e) => return Err(anyhow!("archiving {what}: {e}")),
        _ => {}
    }
    sent?;
    Ok(())
}

/// `GET .../fs/stat?path=P`.
async fn stat(api: &Api, id: &str, path: &str) -> Result<Stat> {
    api.json(
        api.request(
            reqwest::Method::GET,
            api.url(&["v1", "sandboxes", id, "fs", "stat"]),
        )
        .query(&[("path", path)]),
    )
    .await
}

/// Whether `path` is an existing directory in the sandbox (false when it cannot be told).
async fn remote_is_dir(api: &Api, id: &str, path: &str) -> bool {
    stat(api, id, path).await.is_ok_and(|s| s.kind == "dir")
}

/// Copies a file or directory out of the sandbox.
pub(crate) async fn download(a: DownloadArgs) -> Result<i32> {
    let api = Api::new(&a.conn)?;
    let stat = stat(&api, &a.id, &a.remote).await?;
    if stat.kind == "dir" {
        download_dir(&api, &a.id, &a.remote, &a.local).await?;
    } else {
        let dest = file_destination(&a.local, &a.remote)?;
        download_file(&api, &a.id, &a.remote, &dest, stat.size).await?;
    }
    Ok(0)
}

/// Where a downloaded file goes: `local`, or `local/<remote name>` when `local` is an
/// existing directory or ends with `/`.
pub(crate) fn file_destination(local: &Path, remote: &str) -> Result<PathBuf> {
    let as_dir = local.is_dir() || local.as_os_str().to_string_lossy().ends_with('/');
    if !as_dir {
        return Ok(local.to_path_buf());
    }
    let name =
        remote_basename(remote).ok_or_else(|| anyhow!("{remote:?} has no file name to use"))?;
    Ok(local.join(name))
}

/// The HTTP body as a stream of `io::Result<Bytes>`, counted into `progress`.
fn counted_body(
    api: &Api,
    resp: reqwest::Response,
    progress: &Progress,
) -> BoxStream<'static, io::Result<Bytes>> {
    let p = progress.clone();
    let api = api.clone();
    resp.bytes_stream()
        .map(move |r| match r {
            Ok(b) => {
                p.inc(b.len() as u64);
                Ok(b)
            }
            Err(e) => Err(io::Error::other(api.transport_error(e).to_string())),
        })
        .boxed()
}

async fn download_file(
    api: &Api,
    id: &str,
    remote: &str,
    dest: &Path,
    size: Option<u64>,
) -> Result<()> {
    let resp = api
        .send(
            api.request(
                reqwest::Method::GET,
                api.url(&["v1", "sandboxes", id, "files"]),
            )
            .query(&[("path", remote)]),
        )
        .await?;
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".paddock-download-")
        .tempfile_in(&dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let (file, tmp_path) = tmp.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let progress = Progress::new(&display_name(dest), resp.content_length().or(size));
    let mut body = counted_body(api, resp, &progress);
    let res: Result<()> = async {
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk?).await?;
        }
        file.flush().await?;
        Ok(())
    }
    .await;
    progress.finish();
    res.with_context(|| format!("downloading to {}", dest.display()))?;
    let mode = std::fs::metadata(dest).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    drop(file);
    std::fs::set_permissions(&tmp_path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("{}", dest.display()))?;
    tmp_path
        .persist(dest)
        .map_err(|e| anyhow!("{}: {}", dest.display(), e.error))?;
    Ok(())
}

pub(crate) async fn download_dir(api: &Api, id: &str, remote: &str, dest: &Path) -> Result<()> {
    if dest.exists() && !dest.is_dir() {
        bail!(
            "{} exists and is not a directory, but {remote} is one",
            dest.display()
        );
    }
    tokio::fs::create_dir_all(dest)
        .await
        .with_context(|| format!("creating {}", dest.display()))?;
    let resp = api
        .send(
            api.request(
                reqwest::Method::GET,
                api.url(&["v1", "sandboxes", id, "archive"]),
            )
            .query(&[("path", remote)])
            .header(reqwest::header::ACCEPT, "application/x-tar"),
        )
        .await?;
    let progress = Progress::new(&display_name(dest), resp.content_length());
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(
        counted_body(api, resp, &progress),
    ));
    let d = dest.to_path_buf();
    let res = tokio::task::spawn_blocking(move || extract_safely(reader, &d)).await;
    progress.finish();
    res.map_err(|e| anyhow!("extracting: {e}"))?
        .with_context(|| format!("extracting into {}", dest.display()))?;
    Ok(())
}

/// Whether an archive path stays inside the destination: relative, without `..`.
pub(crate) fn safe_entry_path(p: &Path) -> bool {
    p.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Extracts a tar stream into `dest`. Refuses (and stops at) an entry whose path, or whose
/// hard link target, is absolute or has `..`; the `tar` crate's `unpack_in` also refuses to
/// write through symlinks that lead out of `dest`. Returns the number of entries.
pub(crate) fn extract_safely<R: Read>(r: R, dest: &Path) -> Result<u64> {
    let mut ar = tar::Archive::new(r);
    ar.set_overwrite(true);
    ar.set_preserve_permissions(false);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(false);
    let mut n = 0;
    for entry in ar.entries().context("reading the archive")? {
        let mut e = entry.context("reading the archive")?;
        let path = e.path().context("an archive entry's path")?.into_owned();
        if !safe_entry_path(&path) {
            bail!(
                "refusing archive entry {:?}: absolute or with ..",
                path.display()
            );
        }
        if e.header().entry_type().is_hard_link() {
            let target = e
                .link_name()
                .context("an archive entry's link")?
                .map(|l| l.into_owned());
            if let Some(t) = target
                && !safe_entry_path(&t)
            {
                bail!(
                    "refusing archive entry {:?}: a hard link to {:?}",
                    path.display(),
                    t.display()
                );
            }
        }
        let inside = e
            .unpack_in(dest)
            .with_context(|| format!("extracting {}", path.display()))?;
        if !inside {
            bail!(
                "refusing archive entry {:?}: outside the destination",
                path.display()
            );
        }
        n += 1;
    }
    Ok(n)
}

/// A short label for the progress bar.
pub(crate) fn display_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_threshold() {
        assert!(!shows_progress(false, Some(10 << 20), 0));
        assert!(!shows_progress(true, Some(1 << 20), 0));
        assert!(shows_progress(true, Some((1 << 20) + 1), 0));
        assert!(!shows_progress(true, None, 1 << 20));
        assert!(shows_progress(true, None, 2 << 20));
    }

    #[test]
    fn names_and_targets() {
        assert_eq!(remote_basename("/a/b.txt"), Some("b.txt"));
        assert_eq!(remote_basename("/a/dir/"), Some("dir"));
        assert_eq!(remote_basename("b"), Some("b"));
        assert_eq!(remote_basename("/"), None);
        assert_eq!(remote_basename("/a/.."), None);
        assert_eq!(
            upload_target(Path::new("x/f.txt"), "/home/user/").unwrap(),
            "/home/user/f.txt"
        );
        assert_eq!(
            upload_target(Path::new("x/f.txt"), "/home/user/g").unwrap(),
            "/home/user/g"
        );
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            file_destination(d.path(), "/etc/hosts").unwrap(),
            d.path().join("hosts")
        );
        assert_eq!(
            file_destination(&d.path().join("new.txt"), "/etc/hosts").unwrap(),
            d.path().join("new.txt")
        );
        assert_eq!(
            file_destination(Path::new("sub/"), "/etc/hosts").unwrap(),
            Path::new("sub/hosts")
        );
        assert!(file_destination(d.path(), "/").is_err());
    }

    #[test]
    fn entry_paths() {
        assert!(safe_entry_path(Path::new("a/b")));
        assert!(safe_entry_path(Path::new("./a")));
        assert!(!safe_entry_path(Path::new("/etc/passwd")));
        assert!(!safe_entry_path(Path::new("a/../../b")));
        assert!(!safe_entry_path(Path::new("..")));
    }

    #[test]
    fn tar_round_trip() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("sub/deep")).unwrap();
        std::fs::write(src.path().join("a.txt"), b"hello").unwrap();
        std::fs::write(src.path().join("sub/deep/b.bin"), vec![7u8; 100_000]).unwrap();
        std::os::unix::fs::symlink("a.txt", src.path().join("link")).unwrap();
        std::fs::set_permissions(
            src.path().join("a.txt"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let tar = write_tar(src.path(), Vec::new()).unwrap();
        let est = tar_size_estimate(src.path());
        assert!(
            est.abs_diff(tar.len() as u64) < 16 * 1024,
            "{est} vs {}",
            tar.len()
        );
        // Entries are relative, without a leading `./` or the directory's own name.
        let names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(names.contains(&"a.txt".to_owned()), "{names:?}");
        assert!(names.contains(&"sub/deep/b.bin".to_owned()), "{names:?}");

        let dst = tempfile::tempdir().unwrap();
        let n = extract_safely(&tar[..], dst.path()).unwrap();
        assert_eq!(n as usize, names.len());
        assert_eq!(std::fs::read(dst.path().join("a.txt")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read(dst.path().join("sub/deep/b.bin")).unwrap(),
            vec![7u8; 100_000]
        );
        assert_eq!(
            std::fs::read_link(dst.path().join("link")).unwrap(),
            Path::new("a.txt")
        );
        let mode = std::fs::metadata(dst.path().join("a.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "executable bits are kept");
    }

    /// A tar with one entry whose name is written raw into the header (the `tar` crate's
    /// builder refuses `..` and absolute names, as a hostile server would not).
    fn raw_tar(name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    #[test]
    fn hostile_archives_are_refused() {
        let outer = tempfile::tempdir().unwrap();
        let dst = outer.path().join("dst");
        std::fs::create_dir(&dst).unwrap();
        for (name, kind, link) in [
            ("../escape.txt", tar::EntryType::Regular, None),
            ("a/../../escape.txt", tar::EntryType::Regular, None),
            ("/tmp/paddock-abs-escape.txt", tar::EntryType::Regular, None),
            ("hl", tar::EntryType::Link, Some("/etc/passwd")),
            ("hl2", tar::EntryType::Link, Some("../escape.txt")),
        ] {
            let t = raw_tar(name, kind, link, b"x");
            let e = extract_safely(&t[..], &dst).unwrap_err();
            assert!(e.to_string().contains("refusing"), "{name}: {e:#}");
        }
        assert!(!outer.path().join("escape.txt").exists());
        assert!(!Path::new("/tmp/paddock-abs-escape.txt").exists());
        // A symlink out, then a file through it: the tar crate refuses the second.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "out", outer.path()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, "out/escape.txt", &b"x"[..]).unwrap();
        let t = b.into_inner().unwrap();
        assert!(extract_safely(&t[..], &dst).is_err());
        assert!(!outer.path().join("escape.txt").exists());
    }

    #[tokio::test]
    async fn channel_writer_streams_a_tar() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("big"), vec![1u8; 300_000]).unwrap();
        let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(2);
        let path = src.path().to_path_buf();
        let task = tokio::task::spawn_blocking(move || {
            let w = ChannelWriter {
                tx,
                buf: Vec::new(),
            };
            write_tar(&path, w).and_then(|mut w| w.flush())
        });
        let mut got = Vec::new();
        let mut chunks = 0;
        while let Some(c) = rx.recv().await {
            let c = c.unwrap();
            assert!(c.len() <= 2 * CHUNK);
            got.extend_from_slice(&c);
            chunks += 1;
        }
        task.await.unwrap().unwrap();
        assert!(chunks > 3);
        let dst = tempfile::tempdir().unwrap();
        extract_safely(&got[..], dst.path()).unwrap();
        assert_eq!(
            std::fs::read(dst.path().join("big")).unwrap().len(),
            300_000
        );
    }

    #[tokio::test]
    async fn channel_writer_stops_when_the_upload_stops() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("big"), vec![1u8; 1_000_000]).unwrap();
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(1);
        drop(rx);
        let path = src.path().to_path_buf();
        let res = tokio::task::spawn_blocking(move || {
            write_tar(
                &path,
                ChannelWriter {
                    tx,
                    buf: Vec::new(),
                },
            )
            .and_then(|mut w| w.flush())
        })
        .await
        .unwrap();
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }
}
