//! Zero-copy response bodies on plain HTTP/1.1 connections.
//!
//! A response whose body only passes through the server (a file download from a sandbox's
//! agent, a port-proxy download) is moved socket → pipe → socket with `splice(2)`, so the
//! bytes never enter user memory. hyper still writes the response head and frames the body;
//! the trick is how the two meet:
//! - Every plain-TCP connection's socket is wrapped in [`SpliceIo`], which shares a
//!   [`SpliceSlot`] with the requests of that connection (a request extension, given only to
//!   HTTP/1.x requests: HTTP/2 frames its bodies, TLS encrypts them, so neither can splice
//!   and both get the copying body).
//! - A handler answers with [`SpliceBody`]: the bytes it already holds, then *placeholder*
//!   frames of the remaining length, slices of one zeroed, never-written buffer. On its first
//!   poll the body puts its source socket in the slot.
//! - hyper writes the head and the frames in order (as `IoSlice`s: it queues rather than
//!   copies body chunks when the transport is vectored, which `SpliceIo` is). `SpliceIo`
//!   recognises a placeholder by its address and, in its place, splices that many bytes
//!   from the source to the client socket. So the order of the bytes on the wire is exactly
//!   hyper's order, and hyper's `Content-Length` accounting holds.
//!
//! A placeholder that arrives when no source is in the slot, or a source that ends early,
//! fails the write, and hyper closes the connection: the client sees a truncated body,
//! never a run of zeros. A source that sends nothing for [`SpliceBody`]'s idle timeout
//! fails the same way.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// Size of one placeholder frame, and of the pipe where the kernel allows it.
const CHUNK: usize = 1 << 20;
/// Receive low-water mark asked for on a TCP source (a sandbox port): its socket reports
/// readable once this much is queued (or the rest of the body, if less, or the end), so a
/// bulk body wakes the server once per 256 KiB rather than once per write of the app
/// (`python3 -m http.server` writes 64 KiB at a time).
const LOWAT: usize = 256 << 10;
/// How long bytes under the low-water mark may wait in a TCP source before they are taken
/// anyway (a slow app's body still moves, at most this late).
const TRICKLE: Duration = Duration::from_millis(10);

/// The placeholder buffer: allocated zeroed once and never written, so its pages are never
/// touched (it costs address space, not memory).
fn placeholder() -> &'static [u8] {
    static BUF: OnceLock<&'static [u8]> = OnceLock::new();
    BUF.get_or_init(|| Box::leak(vec![0u8; CHUNK].into_boxed_slice()))
}

fn is_placeholder(b: &[u8]) -> bool {
    let p = placeholder();
    let start = p.as_ptr() as usize;
    let at = b.as_ptr() as usize;
    !b.is_empty() && at >= start && at + b.len() <= start + p.len()
}

/// Where spliced bytes come from.
#[derive(Debug)]
pub enum Source {
    /// A sandbox agent's connection (a raw file transfer).
    Unix(UnixStream),
    /// A connection to a port inside a sandbox (the port proxy), taken from the HTTP client
    /// that read the response head from it.
    Tcp(TcpStream),
}

impl Source {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Source::Unix(s) => s.poll_read_ready(cx),
            Source::Tcp(s) => s.poll_read_ready(cx),
        }
    }

    fn try_splice_into(&self, pipe: &OwnedFd, len: usize) -> io::Result<usize> {
        match self {
            Source::Unix(s) => s.try_io(Interest::READABLE, || splice_in(s, pipe, len)),
            Source::Tcp(s) => s.try_io(Interest::READABLE, || splice_in(s, pipe, len)),
        }
    }

    /// Splices whatever is queued, whether or not the socket reported readable (a TCP
    /// source's queue may hold bytes under its low-water mark).
    fn splice_queued(&self, pipe: &OwnedFd, len: usize) -> io::Result<usize> {
        match self {
            Source::Unix(s) => splice_in(s, pipe, len),
            Source::Tcp(s) => splice_in(s, pipe, len),
        }
    }
}

fn splice_in(src: impl AsFd, pipe: &OwnedFd, len: usize) -> io::Result<usize> {
    let flags = rustix::pipe::SpliceFlags::NONBLOCK | rustix::pipe::SpliceFlags::MOVE;
    rustix::pipe::splice(src, None, pipe, None, len, flags).map_err(io::Error::from)
}

/// One response body's splice: its source, the bytes still to come, and its pipe.
struct Job {
    src: Source,
    left: u64,
    pipe_r: OwnedFd,
    pipe_w: OwnedFd,
    in_pipe: usize,
    idle_for: Duration,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The receive low-water mark set on a TCP source (1: the kernel's default).
    lowat: usize,
    trickle: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Job {
    fn new(src: Source, left: u64, idle_for: Duration) -> io::Result<Job> {
        let (pipe_r, pipe_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        // Best effort: a default pipe (64 KiB) only means more calls.
        let _ = rustix::pipe::fcntl_setpipe_size(&pipe_w, CHUNK);
        Ok(Job {
            src,
            left,
            pipe_r,
            pipe_w,
            in_pipe: 0,
            idle_for,
            idle: None,
            lowat: 1,
            trickle: None,
        })
    }

    /// Sets a TCP source's receive low-water mark to [`LOWAT`], or to what is left of the
    /// body when that is less (so the last bytes wake the server too). Best effort: without
    /// it the socket only wakes the server more often.
    fn set_lowat(&mut self) {
        let Source::Tcp(s) = &self.src else {
            return;
        };
        let want = usize::try_from(self.left).unwrap_or(LOWAT).clamp(1, LOWAT);
        if want != self.lowat && paddock_runtime::set_recv_lowat(s, want).is_ok() {
            self.lowat = want;
        }
    }

    /// After the trickle delay, whatever a TCP source holds under its low-water mark: into
    /// the pipe (`Ready(Ok(true))`), nothing queued (`Ready(Ok(false))`, the delay is armed
    /// again), or `Pending` until the delay is over.
    fn poll_trickle(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.lowat <= 1 {
            return Poll::Pending;
        }
        let t = self
            .trickle
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(TRICKLE)));
        ready!(t.as_mut().poll(cx));
        self.trickle = None;
        match self.src.splice_queued(&self.pipe_w, len) {
            Ok(0) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the source closed before the whole body was sent",
            ))),
            Ok(k) => {
                self.in_pipe = k;
                self.idle = None;
                Poll::Ready(Ok(true))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Ready(Ok(false)),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Moves up to `want` bytes from the source to `dst`; `Ready(Ok(n))` with `n > 0` once
    /// some moved, `Pending` while none could.
    fn poll_splice(
        &mut self,
        cx: &mut Context<'_>,
        dst: &TcpStream,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        let mut done = 0;
        while done < want {
            if self.in_pipe > 0 {
                let n = self.in_pipe.min(want - done);
                let flags = rustix::pipe::SpliceFlags::NONBLOCK | rustix::pipe::SpliceFlags::MOVE;
                let r = dst.try_io(Interest::WRITABLE, || {
                    rustix::pipe::splice(&self.pipe_r, None, dst, None, n, flags)
                        .map_err(io::Error::from)
                });
                match r {
                    Ok(k) => {
                        self.in_pipe -= k;
                        done += k;
                        self.left -= k as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        match dst.poll_write_ready(cx) {
                            Poll::Ready(Ok(())) => {}
                            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                            Poll::Pending if done > 0 => return Poll::Ready(Ok(done)),
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
                continue;
            }
            let n = (want - done).min(CHUNK);
            match self.src.try_splice_into(&self.pipe_w, n) {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the source closed before the whole body was sent",
                    )));
                }
                Ok(k) => {
                    self.in_pipe = k;
                    self.idle = None;
                    self.trickle = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.set_lowat();
                    match self.src.poll_read_ready(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending if done > 0 => return Poll::Ready(Ok(done)),
                        Poll::Pending => {
                            match self.poll_trickle(cx, n) {
                                Poll::Ready(Ok(_)) => continue,
                                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                                Poll::Pending => {}
                            }
                            let idle_for = self.idle_for;
                            let idle = self
                                .idle
                                .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle_for)));
                            ready!(idle.as_mut().poll(cx));
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "the source sent nothing for too long",
                            )));
                        }
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(done))
    }
}

/// The splice source of the response being written on one connection, shared between the
/// connection's [`SpliceIo`] and its requests (as a request extension).
#[derive(Clone, Default)]
pub struct SpliceSlot(Arc<Mutex<Option<Job>>>);

impl std::fmt::Debug for SpliceSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpliceSlot")
    }
}

impl SpliceSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Job>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A plain TCP connection that writes placeholder slices as spliced bytes.
pub struct SpliceIo {
    tcp: TcpStream,
    slot: SpliceSlot,
}

impl SpliceIo {
    pub fn new(tcp: TcpStream) -> (SpliceIo, SpliceSlot) {
        let slot = SpliceSlot::default();
        (
            SpliceIo {
                tcp,
                slot: slot.clone(),
            },
            slot,
        )
    }
}

impl AsyncRead for SpliceIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SpliceIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let bufs: Vec<&IoSlice<'_>> = bufs.iter().filter(|b| !b.is_empty()).collect();
        let Some(first) = bufs.first() else {
            return Poll::Ready(Ok(0));
        };
        if !is_placeholder(first) {
            let real: Vec<IoSlice<'_>> = bufs
                .iter()
                .take_while(|b| !is_placeholder(b))
                .map(|b| IoSlice::new(b))
                .collect();
            return Pin::new(&mut self.tcp).poll_write_vectored(cx, &real);
        }
        let want: usize = bufs
            .iter()
            .take_while(|b| is_placeholder(b))
            .map(|b| b.len())
            .sum();
        let this = &mut *self;
        let mut slot = this.slot.lock();
        let Some(job) = slot.as_mut() else {
            return Poll::Ready(Err(io::Error::other(
                "a splice placeholder without a source",
            )));
        };
        let want = usize::try_from(job.left).unwrap_or(usize::MAX).min(want);
        if want == 0 {
            return Poll::Ready(Err(io::Error::other(
                "a splice placeholder beyond its source's length",
            )));
        }
        let r = job.poll_splice(cx, &this.tcp, want);
        if job.left == 0 || matches!(r, Poll::Ready(Err(_))) {
            *slot = None;
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// A response body of `pre` followed by `len` bytes spliced from a source on the
/// connection's [`SpliceSlot`].
pub struct SpliceBody {
    slot: SpliceSlot,
    job: Option<Job>,
    pre: Bytes,
    left: u64,
}

impl SpliceBody {
    /// `pre` (bytes already read from `src`), then `len` more bytes from `src`; `idle` bounds
    /// a pause of the source.
    pub fn new(
        slot: SpliceSlot,
        src: Source,
        pre: Bytes,
        len: u64,
        idle: Duration,
    ) -> io::Result<SpliceBody> {
        Ok(SpliceBody {
            slot,
            job: Some(Job::new(src, len, idle)?),
            pre,
            left: len,
        })
    }
}

impl http_body::Body for SpliceBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        if let Some(job) = self.job.take() {
            *self.slot.lock() = Some(job);
        }
        if !self.pre.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(std::mem::take(&mut self.pre)))));
        }
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(self.left).unwrap_or(CHUNK).min(CHUNK);
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &placeholder()[..n],
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.pre.is_empty() && self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.pre.len() as u64 + self.left)
    }
}

/// The copying counterpart for connections that cannot splice: `pre`, then exactly `len`
/// bytes read from the agent socket in large chunks; a socket that ends early fails the body.
pub fn copy_body(
    src: UnixStream,
    pre: Bytes,
    len: u64,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + 'static {
    use tokio::io::AsyncReadExt as _;
    const READ: usize = 512 * 1024;
    let first = (!pre.is_empty()).then_some(pre);
    futures::stream::unfold((src, first, len), |(mut src, first, left)| async move {
        if let Some(pre) = first {
            return Some((Ok(pre), (src, None, left)));
        }
        if left == 0 {
            return None;
        }
        let want = usize::try_from(left).unwrap_or(READ).min(READ);
        let mut buf = BytesMut::with_capacity(want);
        match (&mut src).take(want as u64).read_buf(&mut buf).await {
            Ok(0) => Some((
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the sandbox's agent closed before the whole file was sent",
                )),
                (src, None, 0),
            )),
            Ok(n) => Some((Ok(buf.freeze()), (src, None, left - n as u64))),
            Err(e) => Some((Err(e), (src, None, 0))),
        }
    })
}
