//! `GET /archive`: a directory or a file as a tar stream, generated as the user without
//! following symlinks (see the module doc of [`super`]).

use std::ffi::{OsStr, OsString};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use paddock_untar::open_beneath;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use tokio::sync::mpsc;

use super::{
    ArchiveQuery, COPY_BUFFER, DOWNLOAD_CHANNEL_CHUNKS, DOWNLOAD_CHUNK, Format, parse_query,
    user_of,
};
use crate::files::ApiError;
use crate::fs as agent_fs;
use crate::users;

/// What `GET /archive` packs.
enum Source {
    /// A directory, opened for reading.
    Dir(OwnedFd),
    /// A single regular file with its stat, stored under `name`.
    File {
        file: std::fs::File,
        stat: rustix::fs::Stat,
        name: OsString,
    },
}

/// Opens the download's source as the user (following symlinks in `path`, like `/files`).
fn open_source(path: &Path) -> Result<Source, ApiError> {
    let st = rustix::fs::stat(path).map_err(|e| match e {
        rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("path does not exist: {:?}", path.as_os_str()),
        ),
        e => ApiError::io(&e.into(), path),
    })?;
    let io_err = |e: rustix::io::Errno| ApiError::io(&e.into(), path);
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {
            let fd = rustix::fs::open(
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io_err)?;
            Ok(Source::Dir(fd))
        }
        FileType::RegularFile => {
            let fd = rustix::fs::open(
                path,
                OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io_err)?;
            let stat = rustix::fs::fstat(&fd).map_err(io_err)?;
            if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
                return Err(ApiError::bad_request(format!(
                    "path is not a regular file or directory: {:?}",
                    path.as_os_str()
                )));
            }
            let name = path
                .file_name()
                .map(OsStr::to_os_string)
                .unwrap_or_else(|| "file".into());
            Ok(Source::File {
                file: std::fs::File::from(fd),
                stat,
                name,
            })
        }
        _ => Err(ApiError::bad_request(format!(
            "path is not a regular file or directory: {:?}",
            path.as_os_str()
        ))),
    }
}

/// `attachment; filename="…"` with a quoted ASCII fallback and, when the name is not plain
/// ASCII, an RFC 5987 `filename*`.
fn content_disposition(name: &OsStr, ext: &str) -> String {
    let full = format!("{}{ext}", String::from_utf8_lossy(name.as_bytes()));
    let ascii: String = full
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() || c == ' ') && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if ascii == full {
        format!("attachment; filename=\"{ascii}\"")
    } else {
        // RFC 5987 attr-char keeps these unescaped.
        const ATTR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'.')
            .remove(b'-')
            .remove(b'_')
            .remove(b'~');
        let encoded = percent_encoding::utf8_percent_encode(&full, ATTR);
        format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
    }
}

pub(super) async fn download(
    query: Result<Query<ArchiveQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = parse_query(query)?;
    let user = user_of(&q, &headers)?;
    let format = match q.format.as_deref().unwrap_or("tar") {
        "" | "tar" => Format::Tar,
        "tar.gz" | "tgz" => Format::Gzip,
        "tar.zst" | "tzst" => Format::Zstd,
        other => {
            return Err(ApiError::bad_request(format!(
                "unsupported format {other:?}; supported: tar, tar.gz, tar.zst"
            )));
        }
    };
    let path = users::resolve_path(&user, q.path.as_deref().unwrap_or(""));
    let p = path.clone();
    let source = agent_fs::run_as(&user, move || open_source(&p)).await??;
    let name = match &source {
        Source::File { name, .. } => name.clone(),
        Source::Dir(_) => path
            .file_name()
            .map(OsStr::to_os_string)
            .unwrap_or_else(|| "archive".into()),
    };

    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(DOWNLOAD_CHANNEL_CHUNKS);
    tokio::task::spawn_blocking(move || {
        users::as_user(&user, || {
            let out = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(DOWNLOAD_CHUNK),
            };
            if let Err(e) = write_archive(source, format, out) {
                // Ends the body with an error: the client sees a broken transfer.
                let _ = tx.blocking_send(Err(e));
            }
        })
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let disposition = HeaderValue::from_str(&content_disposition(&name, format.extension()))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, format.content_type())
        .header(header::CONTENT_DISPOSITION, disposition)
        .body(Body::from_stream(stream))
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "building the response"))
}

/// Sends what is written in [`DOWNLOAD_CHUNK`] pieces through a bounded channel; a full
/// channel blocks the writer, a closed one (the client went away) fails it.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(DOWNLOAD_CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }

    fn finish(mut self) -> io::Result<()> {
        self.send()
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(DOWNLOAD_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= DOWNLOAD_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_archive(source: Source, format: Format, out: ChannelWriter) -> io::Result<()> {
    match format {
        Format::Tar => build(source, out)?.finish(),
        Format::Gzip => {
            let enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            build(source, enc)?.finish()?.finish()
        }
        Format::Zstd => {
            let enc = zstd::stream::write::Encoder::new(out, 3)?;
            build(source, enc)?.finish()?.finish()
        }
    }
}

fn header_for(st: &rustix::fs::Stat, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
    h.set_size(size);
    h
}

/// Exactly `size` bytes of `file`: zero-filled if it shrank, cut if it grew.
fn exact(file: std::fs::File, size: u64) -> impl Read {
    BufReader::with_capacity(COPY_BUFFER, file.take(size).chain(io::repeat(0)).take(size))
}

fn build<W: Write>(source: Source, out: W) -> io::Result<W> {
    let mut b = tar::Builder::new(out);
    match source {
        Source::File { file, stat, name } => {
            let size = u64::try_from(stat.st_size).unwrap_or(0);
            let mut h = header_for(&stat, tar::EntryType::Regular, size);
            b.append_data(&mut h, Path::new(&name), exact(file, size))?;
        }
        Source::Dir(root) => walk(&mut b, &root)?,
    }
    b.into_inner()
}

/// Appends a symlink with its target stored byte for byte (the `tar` crate's link-name
/// setter normalises paths, turning `/` into `//`), in a GNU long-link entry if it does not
/// fit the header.
fn append_symlink<W: Write>(
    b: &mut tar::Builder<W>,
    h: &mut tar::Header,
    rel: &Path,
    target: &[u8],
) -> io::Result<()> {
    let field = &mut h.as_old_mut().linkname;
    if target.len() <= field.len() {
        field.fill(0);
        field[..target.len()].copy_from_slice(target);
    } else {
        let mut long = tar::Header::new_gnu();
        long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        long.set_entry_type(tar::EntryType::GNULongLink);
        long.set_mode(0o644);
        long.set_size(target.len() as u64 + 1);
        long.set_cksum();
        b.append(&long, target.chain(&[0u8][..]))?;
    }
    b.append_data(h, rel, io::empty())
}

fn walk_resolve() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// The names in directory `rel` (beneath `root`), sorted bytewise.
fn list(root: &OwnedFd, rel: &Path) -> io::Result<Vec<PathBuf>> {
    let fd = open_beneath(
        root,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        Mode::empty(),
        walk_resolve(),
    )?;
    let mut dir = rustix::fs::Dir::read_from(&fd)?;
    let mut names = Vec::new();
    while let Some(ent) = dir.read() {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsString::from_vec(n.to_vec()));
        }
    }
    names.sort();
    Ok(names.into_iter().map(|n| rel.join(n)).collect())
}

/// Appends the tree under `root` depth first in name order, without following symlinks.
fn walk<W: Write>(b: &mut tar::Builder<W>, root: &OwnedFd) -> io::Result<()> {
    let mut stack: Vec<PathBuf> = list(root, Path::new(""))?;
    stack.reverse();
    while let Some(rel) = stack.pop() {
        let opath = match open_beneath(
            root,
            &rel,
            OFlags::PATH | OFlags::NOFOLLOW,
            Mode::empty(),
            walk_resolve(),
        ) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue, // Gone meanwhile.
            Err(e) => return Err(e),
        };
        let st = rustix::fs::fstat(&opath)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let mut h = header_for(&st, tar::EntryType::Directory, 0);
                b.append_data(&mut h, &rel, io::empty())?;
                let mut children = match list(root, &rel) {
                    Ok(c) => c,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(e),
                };
                children.reverse();
                stack.append(&mut children);
            }
            FileType::RegularFile => {
                let fd = match open_beneath(
                    root,
                    &rel,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY,
                    Mode::empty(),
                    walk_resolve(),
                ) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(e),
                };
                let st = rustix::fs::fstat(&fd)?;
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                    continue; // Swapped for something else meanwhile.
                }
                let size = u64::try_from(st.st_size).unwrap_or(0);
                let mut h = header_for(&st, tar::EntryType::Regular, size);
                b.append_data(&mut h, &rel, exact(std::fs::File::from(fd), size))?;
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(&opath, "", Vec::new())?;
                let mut h = header_for(&st, tar::EntryType::Symlink, 0);
                append_symlink(b, &mut h, &rel, target.as_bytes())?;
            }
            // Sockets, FIFOs and devices are not archived (and never opened).
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_is_quoted() {
        assert_eq!(
            content_disposition(OsStr::new("data"), ".tar"),
            "attachment; filename=\"data.tar\""
        );
        let d = content_disposition(OsStr::from_bytes(b"a\"b\n\xffc"), ".tar.gz");
        assert!(d.starts_with("attachment; filename=\"a_b__c.tar.gz\"; filename*=UTF-8''"));
        assert!(HeaderValue::from_str(&d).is_ok());
    }
}
