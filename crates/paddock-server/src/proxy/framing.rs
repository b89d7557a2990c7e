//! A read-side observer of HTTP/1 framing on an accepted connection, so that a request with
//! both `Content-Length` and `Transfer-Encoding` is refused with 400 rather than served.
//!
//! hyper frames such a request by `Transfer-Encoding` alone, drops the `Content-Length` before
//! the service sees the request, and closes the connection after the response (RFC 9112
//! section 6.1), which already defeats smuggling; but the conflict is a sign of an attack and
//! is refused outright here. [`Watched`] passes every byte through unchanged and follows the
//! framing (request heads, `Content-Length` bodies, chunked bodies with their trailers) well
//! enough to find each request head; when a head carries both headers it raises the
//! connection's [`Flag`], which [`super::route`] turns into a 400 with the connection
//! closed. Anything it does not understand (HTTP/2 prior knowledge, an upgrade, `CONNECT`, a
//! malformed head, a head over 64 KiB) makes it stop watching: hyper handles those itself.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Raised once a request head on the connection carried both `Content-Length` and
/// `Transfer-Encoding`; put into each request's extensions.
#[derive(Debug, Clone, Default)]
pub struct Flag(Arc<AtomicBool>);

impl Flag {
    pub fn raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

const MAX_HEAD: usize = 64 << 10;

#[derive(Debug)]
enum St {
    /// Collecting a request head.
    Head(Vec<u8>),
    /// Skipping a body of this many more bytes.
    Fixed(u64),
    /// Collecting a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Skipping chunk data, then the line end after it.
    ChunkData(u64),
    ChunkEnd,
    /// Collecting trailer lines until an empty one.
    Trailers(Vec<u8>),
    /// Not watching any more.
    Off,
}

/// A stream whose reads are watched for conflicting request framing.
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    st: St,
    flag: Flag,
}

impl<S> Watched<S> {
    pub fn new(inner: S) -> (Watched<S>, Flag) {
        let flag = Flag::default();
        (
            Watched {
                inner,
                st: St::Head(Vec::new()),
                flag: flag.clone(),
            },
            flag,
        )
    }

    /// Follows the framing over `buf`, the bytes just read.
    fn observe(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            match &mut self.st {
                St::Off => return,
                St::Head(h) => {
                    // Empty lines before a request line are allowed (RFC 9112 section 2.2).
                    if h.is_empty() {
                        let skip = buf
                            .iter()
                            .take_while(|b| matches!(b, b'\r' | b'\n'))
                            .count();
                        buf = &buf[skip..];
                        if buf.is_empty() {
                            return;
                        }
                    }
                    let start = h.len().saturating_sub(3);
                    let take = buf.len().min(MAX_HEAD + 1 - h.len().min(MAX_HEAD));
                    h.extend_from_slice(&buf[..take]);
                    match find_head_end(&h[start..]).map(|e| start + e) {
                        Some(end) => {
                            let consumed = take - (h.len() - end);
                            let head = std::mem::take(h);
                            self.st = self.after_head(&head[..end]);
                            buf = &buf[consumed..];
                        }
                        None if h.len() > MAX_HEAD => self.st = St::Off,
                        None => return,
                    }
                }
                St::Fixed(n) => {
                    let k = (*n).min(buf.len() as u64);
                    *n -= k;
                    buf = &buf[k as usize..];
                    if *n == 0 {
                        self.st = St::Head(Vec::new());
                    }
                }
                St::ChunkSize(line) => match buf.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        line.extend_from_slice(&buf[..i]);
                        buf = &buf[i + 1..];
                        let text = String::from_utf8_lossy(line);
                        let hex = text.split(';').next().unwrap_or("").trim();
                        self.st = match u64::from_str_radix(hex, 16) {
                            Ok(0) => St::Trailers(Vec::new()),
                            Ok(n) => St::ChunkData(n),
                            Err(_) => St::Off,
                        };
                    }
                    None if line.len() + buf.len() > 1024 => self.st = St::Off,
                    None => {
                        line.extend_from_slice(buf);
                        return;
                    }
                },
                St::ChunkData(n) => {
                    let k = (*n).min(buf.len() as u64);
                    *n -= k;
                    buf = &buf[k as usize..];
                    if *n == 0 {
                        self.st = St::ChunkEnd;
                    }
                }
                St::ChunkEnd => match buf.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        buf = &buf[i + 1..];
                        self.st = St::ChunkSize(Vec::new());
                    }
                    None => return,
                },
                St::Trailers(t) => match buf.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        t.extend_from_slice(&buf[..i]);
                        buf = &buf[i + 1..];
                        let empty = t.iter().all(|b| *b == b'\r');
                        t.clear();
                        if empty {
                            self.st = St::Head(Vec::new());
                        }
                    }
                    None if t.len() + buf.len() > MAX_HEAD => self.st = St::Off,
                    None => {
                        t.extend_from_slice(buf);
                        return;
                    }
                },
            }
        }
    }

    /// What follows a complete head.
    fn after_head(&self, head: &[u8]) -> St {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
        let request_line = lines.next().unwrap_or("");
        let method = request_line.split(' ').next().unwrap_or("");
        if request_line.starts_with("PRI * HTTP/2") || method.eq_ignore_ascii_case("CONNECT") {
            return St::Off;
        }
        let mut cl = None;
        let mut te = None;
        let mut upgrade = false;
        for l in lines {
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => cl = Some(value.to_owned()),
                "transfer-encoding" => te = Some(value.to_ascii_lowercase()),
                "upgrade" => upgrade = true,
                _ => {}
            }
        }
        if cl.is_some() && te.is_some() {
            self.flag.0.store(true, Ordering::Relaxed);
        }
        if upgrade {
            return St::Off;
        }
        match (te, cl) {
            (Some(te), _) if te.rsplit(',').next().map(str::trim) == Some("chunked") => {
                St::ChunkSize(Vec::new())
            }
            (Some(_), _) => St::Off,
            (None, Some(cl)) => match cl.parse::<u64>() {
                Ok(0) => St::Head(Vec::new()),
                Ok(n) => St::Fixed(n),
                Err(_) => St::Off,
            },
            (None, None) => St::Head(Vec::new()),
        }
    }
}

/// The offset just past the blank line ending a head (`\r\n\r\n`, or bare `\n\n`).
fn find_head_end(b: &[u8]) -> Option<usize> {
    (0..b.len()).find_map(|i| {
        if b[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if b[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else if b[i..].starts_with(b"\n\r\n") {
            Some(i + 3)
        } else {
            None
        }
    })
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r
            && !matches!(this.st, St::Off)
        {
            this.observe(&buf.filled()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns whether the flag went up and whether
    /// the watcher still follows the stream.
    fn run(input: &[u8], step: usize) -> (bool, bool) {
        let (mut w, flag) = Watched::new(());
        for c in input.chunks(step) {
            w.observe(c);
        }
        (flag.raised(), !matches!(w.st, St::Off))
    }

    fn all_steps(input: &[u8]) -> (bool, bool) {
        let first = run(input, input.len().max(1));
        for step in [1, 2, 3, 7, 64] {
            assert_eq!(run(input, step), first, "step {step}");
        }
        first
    }

    #[test]
    fn plain_requests_and_bodies_do_not_raise_it() {
        let body = b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\nxx";
        let chunk = b"Content-Length: 1\r\nTE: x\r\n\r\n";
        let mut s = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        s.extend_from_slice(
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        s.extend_from_slice(body);
        s.extend_from_slice(b"POST /y HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        s.extend_from_slice(format!("{:x};ext=1\r\n", chunk.len()).as_bytes());
        s.extend_from_slice(chunk);
        s.extend_from_slice(b"\r\n0\r\nX-Trailer: 1\r\n\r\n\r\nGET /z HTTP/1.1\r\n\r\n");
        let s = &s[..];
        assert_eq!(all_steps(s), (false, true));
    }

    #[test]
    fn a_head_with_both_raises_it_in_any_order_and_position() {
        for head in [
            &b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                [..],
            &b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n"
                [..],
            &b"POST / HTTP/1.1\nContent-Length: 4\nTransfer-Encoding: chunked\n\n0\r\n\r\n"[..],
        ] {
            assert!(all_steps(head).0, "{}", String::from_utf8_lossy(head));
            let mut after = b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".to_vec();
            after.extend_from_slice(head);
            assert!(all_steps(&after).0);
        }
    }

    #[test]
    fn it_stops_watching_what_it_does_not_follow() {
        assert_eq!(
            all_steps(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n"),
            (false, false)
        );
        assert_eq!(
            all_steps(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n"),
            (false, false)
        );
        let big = vec![b'a'; MAX_HEAD + 10];
        assert_eq!(all_steps(&big), (false, false));
    }
}
