//! The proxy's connection to a sandbox port, which the proxy can take over once the response
//! head is read, to splice the body into the client's connection (`crate::splice`).
//!
//! hyper's HTTP client reads from [`UpstreamIo`]. When the connection is *armed* (a GET
//! without a body, from a client connection that can splice), the reader hands hyper the
//! response head and nothing more (1xx heads other than 101 pass through; the final head is
//! where it stops), keeping any body bytes that arrived with it. The proxy then either
//! [`Takeover::take`]s the socket and those bytes, or [`Takeover::release`]s the reader,
//! which hands hyper everything as an ordinary connection would. Unarmed, it is an ordinary
//! connection from the start.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Longest response head read ahead of hyper; a longer one is left to hyper, which refuses it.
const MAX_HEAD: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Handing out the response head only.
    Head,
    /// The final head was handed out; nothing more until taken or released.
    Parked,
    /// An ordinary connection.
    Pass,
}

struct Shared {
    tcp: Option<TcpStream>,
    mode: Mode,
    /// Bytes read from the socket and not handed to hyper yet.
    buf: BytesMut,
    /// Bytes of the head being handed out still to go, and its status.
    head_left: usize,
    status: u16,
    waker: Option<Waker>,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The upstream side of one proxied request, as hyper's client transport.
pub struct UpstreamIo(Arc<Mutex<Shared>>);

/// The proxy's handle on an [`UpstreamIo`].
#[derive(Clone)]
pub struct Takeover(Arc<Mutex<Shared>>);

impl UpstreamIo {
    pub fn new(tcp: TcpStream, armed: bool) -> (UpstreamIo, Takeover) {
        let sh = Arc::new(Mutex::new(Shared {
            tcp: Some(tcp),
            mode: if armed { Mode::Head } else { Mode::Pass },
            buf: BytesMut::new(),
            head_left: 0,
            status: 0,
            waker: None,
        }));
        (UpstreamIo(sh.clone()), Takeover(sh))
    }
}

impl Takeover {
    /// The socket and the body bytes already read, once the final head went to hyper; hyper
    /// reads nothing more from it.
    pub fn take(&self) -> Option<(TcpStream, Bytes)> {
        let mut sh = lock(&self.0);
        if sh.mode != Mode::Parked {
            return None;
        }
        let tcp = sh.tcp.take()?;
        Some((tcp, sh.buf.split().freeze()))
    }

    /// Lets hyper read on as from an ordinary connection.
    pub fn release(&self) {
        let mut sh = lock(&self.0);
        if sh.mode != Mode::Pass {
            sh.mode = Mode::Pass;
            if let Some(w) = sh.waker.take() {
                w.wake();
            }
        }
    }
}

fn head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn status_of(head: &[u8]) -> u16 {
    head.get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
        .unwrap_or(0)
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut guard = lock(&self.0);
        let sh = &mut *guard;
        loop {
            match sh.mode {
                Mode::Pass => {
                    if !sh.buf.is_empty() {
                        let n = out.remaining().min(sh.buf.len());
                        out.put_slice(&sh.buf[..n]);
                        sh.buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    return match sh.tcp.as_mut() {
                        Some(tcp) => Pin::new(tcp).poll_read(cx, out),
                        None => Poll::Ready(Ok(())),
                    };
                }
                Mode::Parked => {
                    sh.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Mode::Head if sh.head_left > 0 => {
                    let n = out.remaining().min(sh.head_left);
                    out.put_slice(&sh.buf[..n]);
                    sh.buf.advance(n);
                    sh.head_left -= n;
                    let interim = (100..200).contains(&sh.status) && sh.status != 101;
                    if sh.head_left == 0 && !interim {
                        sh.mode = Mode::Parked;
                    }
                    return Poll::Ready(Ok(()));
                }
                Mode::Head => {
                    if let Some(end) = head_end(&sh.buf) {
                        sh.head_left = end;
                        sh.status = status_of(&sh.buf[..end]);
                        continue;
                    }
                    if sh.buf.len() > MAX_HEAD {
                        sh.mode = Mode::Pass;
                        continue;
                    }
                    let Some(tcp) = sh.tcp.as_mut() else {
                        sh.mode = Mode::Pass;
                        continue;
                    };
                    match tcp.poll_read_ready(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                    sh.buf.reserve(16 << 10);
                    match tcp.try_read_buf(&mut sh.buf) {
                        // The end: hyper gets what there is, then EOF.
                        Ok(0) => sh.mode = Mode::Pass,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
            }
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match lock(&self.0).tcp.as_mut() {
            Some(tcp) => Pin::new(tcp).poll_write(cx, buf),
            None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match lock(&self.0).tcp.as_mut() {
            Some(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match lock(&self.0).tcp.as_mut() {
            Some(tcp) => Pin::new(tcp).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Only an ordinary connection is shut down: a parked or taken one still carries a body
    /// the proxy is splicing.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sh = lock(&self.0);
        if sh.mode != Mode::Pass {
            return Poll::Ready(Ok(()));
        }
        match sh.tcp.as_mut() {
            Some(tcp) => Pin::new(tcp).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_statuses() {
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n\r\nbody"), Some(19));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(status_of(b"HTTP/1.1 204 No Content\r\n\r\n"), 204);
        assert_eq!(status_of(b"HTTP/1.0 100 Continue\r\n\r\n"), 100);
        assert_eq!(status_of(b"junk"), 0);
    }
}
