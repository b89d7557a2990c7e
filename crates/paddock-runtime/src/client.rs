//! The host side of the agent connection: HTTP/1.1 over the sandbox's unix socket, with a
//! small pool of kept-alive connections, as a `connectrpc` client transport. Everything
//! that talks to an agent goes through it: the envd clients (exec, filesystem) and
//! [`crate::Sandbox::agent_request`] (`/files`, `/archive`, the E2B data plane).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use connectrpc::client::{BoxFuture, ClientBody, ClientConfig, ClientTransport};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use paddock_envd::filesystem::FilesystemClient;
use paddock_envd::process::ProcessClient;

/// Idle connections kept per sandbox.
const POOL_MAX: usize = 8;

/// Connects to one sandbox's agent socket.
#[derive(Clone, Debug)]
pub struct AgentTransport {
    sock: Arc<PathBuf>,
    idle: Arc<Mutex<Vec<SendRequest<ClientBody>>>>,
    /// Connections made so far (each a connect and a handshake).
    made: Arc<std::sync::atomic::AtomicU64>,
}

impl AgentTransport {
    pub fn new(sock: PathBuf) -> Self {
        AgentTransport {
            sock: Arc::new(sock),
            idle: Arc::default(),
            made: Arc::default(),
        }
    }

    /// How many connections to the agent this transport has made: with the pool, one per
    /// request running at the same time, not one per request.
    pub fn connections_made(&self) -> u64 {
        self.made.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The agent's socket, for a connection of one's own (a raw transfer).
    pub fn socket_path(&self) -> &std::path::Path {
        &self.sock
    }

    fn take_ready(&self) -> Option<SendRequest<ClientBody>> {
        let mut idle = self.idle.lock().expect("pool poisoned");
        idle.retain(|s| !s.is_closed());
        let i = idle.iter().position(|s| s.is_ready())?;
        Some(idle.swap_remove(i))
    }

    async fn connect(&self) -> Result<SendRequest<ClientBody>, TransportError> {
        let stream = tokio::net::UnixStream::connect(self.sock.as_ref()).await?;
        self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }
}

/// Why a request to the agent failed before a response arrived.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The agent socket could not be reached (the sandbox is gone or not started).
    #[error("agent socket: {0}")]
    Connect(#[from] std::io::Error),
    /// The HTTP exchange failed.
    #[error("agent http: {0}")]
    Http(#[from] hyper::Error),
}

impl AgentTransport {
    /// Sends `request` on an idle pooled connection, or a new one (`pooled` false: always a
    /// new one). Returns whether the connection was reused, with the result.
    async fn send_on(
        &self,
        request: http::Request<ClientBody>,
        pooled: bool,
    ) -> (
        bool,
        Result<http::Response<hyper::body::Incoming>, TransportError>,
    ) {
        let (reused, mut sender) = match self.take_ready().filter(|_| pooled) {
            Some(s) => (true, s),
            None => match self.connect().await {
                Ok(s) => (false, s),
                Err(e) => return (false, Err(e)),
            },
        };
        let fut = sender.send_request(request);
        // Back into the pool right away: it becomes ready again once this response's
        // body has been read, and `take_ready` skips it until then.
        {
            let mut idle = self.idle.lock().expect("pool poisoned");
            if idle.len() < POOL_MAX {
                idle.push(sender);
            }
        }
        (reused, fut.await.map_err(TransportError::from))
    }

    /// Sends a request whose body is in memory on a pooled connection, and once more on a
    /// new connection when the pooled one fails before a response. An idle kept-alive
    /// connection can be closed by the agent after `take_ready` saw it open; hyper does
    /// not retry a request it has started to send, and it cannot know the body can be
    /// sent again. We can, since we hold it.
    pub async fn send_buffered(
        &self,
        head: &http::request::Parts,
        body: bytes::Bytes,
    ) -> Result<http::Response<hyper::body::Incoming>, TransportError> {
        use http_body_util::BodyExt as _;
        let build = || {
            let mut r = http::Request::new(
                http_body_util::Full::new(body.clone())
                    .map_err(|never| match never {})
                    .boxed(),
            );
            *r.method_mut() = head.method.clone();
            *r.uri_mut() = head.uri.clone();
            *r.version_mut() = head.version;
            *r.headers_mut() = head.headers.clone();
            r
        };
        match self.send_on(build(), true).await {
            (true, Err(TransportError::Http(_))) => self.send_on(build(), false).await.1,
            (_, res) => res,
        }
    }

    /// Sends a request with a streamed body (which cannot be sent twice) on a new
    /// connection, so a pooled connection closed under it cannot fail it half-way.
    pub async fn send_streamed(
        &self,
        request: http::Request<ClientBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, TransportError> {
        self.send_on(request, false).await.1
    }
}

impl ClientTransport for AgentTransport {
    type ResponseBody = hyper::body::Incoming;
    type Error = TransportError;

    fn send(
        &self,
        request: http::Request<ClientBody>,
    ) -> BoxFuture<'static, Result<http::Response<Self::ResponseBody>, Self::Error>> {
        let this = self.clone();
        Box::pin(async move { this.send_on(request, true).await.1 })
    }
}

/// Typed clients for the agent's two envd services.
#[derive(Clone)]
pub struct AgentClient {
    pub process: ProcessClient<AgentTransport>,
    pub filesystem: FilesystemClient<AgentTransport>,
    pub transport: AgentTransport,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("sock", &self.transport.sock)
            .finish()
    }
}

impl AgentClient {
    pub fn new(sock: PathBuf) -> Self {
        let t = AgentTransport::new(sock);
        let cfg = ClientConfig::new(http::Uri::from_static("http://agent")).json();
        AgentClient {
            process: ProcessClient::new(t.clone(), cfg.clone()),
            filesystem: FilesystemClient::new(t.clone(), cfg),
            transport: t,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pooled connection's one retry, against a real unix-socket HTTP server whose
    //! connections follow a script.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{UnixListener, UnixStream};

    use super::*;

    /// What the server does on one connection.
    #[derive(Clone, Copy, Debug)]
    enum Conn {
        /// Answers every request, keeping the connection alive.
        Serve,
        /// Answers the first request keep-alive, then closes the connection when the
        /// second arrives, before answering it: the agent closing an idle connection just
        /// as the client reuses it.
        ServeOnceThenDrop,
        /// Closes the connection when the first request's head has arrived.
        Drop,
    }

    /// Reads one request's head; its length and the body's (`content-length`), or `None`
    /// at the end of the stream.
    async fn read_head(s: &mut UnixStream, buf: &mut Vec<u8>) -> Option<(usize, usize)> {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        Some((head_end, len))
    }

    /// Reads the rest of a body of `len` bytes after a head of `head_len` bytes in `buf`,
    /// and drops both from `buf`; false if the stream ended first.
    async fn read_body(s: &mut UnixStream, buf: &mut Vec<u8>, head_len: usize, len: usize) -> bool {
        while buf.len() < head_len + len {
            let mut chunk = [0u8; 65536];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_len + len);
        true
    }

    /// Serves connections by `script` (in accept order; past its end, `Serve`); counts the
    /// connections accepted and the bodies received whole.
    fn serve(
        dir: &tempfile::TempDir,
        script: Vec<Conn>,
    ) -> (PathBuf, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let sock = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&sock).expect("bind");
        let (accepted, bodies) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, b) = (accepted.clone(), bodies.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let n = a.fetch_add(1, Ordering::SeqCst);
                let how = script.get(n).copied().unwrap_or(Conn::Serve);
                let bodies = b.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut served = 0;
                    while let Some((head_len, len)) = read_head(&mut s, &mut buf).await {
                        match (how, served) {
                            (Conn::Drop, _) | (Conn::ServeOnceThenDrop, 1..) => return,
                            _ => {}
                        }
                        if !read_body(&mut s, &mut buf, head_len, len).await {
                            return;
                        }
                        bodies.fetch_add(1, Ordering::SeqCst);
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(ok).await.is_err() {
                            return;
                        }
                        served += 1;
                    }
                });
            }
        });
        (sock, accepted, bodies)
    }

    fn upload_head() -> http::request::Parts {
        http::Request::post("http://agent/files?path=/tmp/x")
            .header("content-type", "application/octet-stream")
            .body(())
            .expect("request")
            .into_parts()
            .0
    }

    /// Reads a response to its end, so its connection can serve the next request.
    async fn ok_body(res: Result<http::Response<hyper::body::Incoming>, TransportError>) {
        let res = res.expect("a response");
        assert_eq!(res.status(), http::StatusCode::OK);
        let body = res.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok");
    }

    /// Waits (bounded) until the pool holds a connection ready for the next request.
    async fn pooled_ready(t: &AgentTransport) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            {
                let idle = t.idle.lock().expect("pool");
                if idle.iter().any(|s| s.is_ready() && !s.is_closed()) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no pooled connection became ready"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_buffered_body_is_sent_again_when_its_pooled_connection_closes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sock, accepted, bodies) = serve(&dir, vec![Conn::ServeOnceThenDrop]);
        let t = AgentTransport::new(sock);
        let body = bytes::Bytes::from(vec![7u8; 256 * 1024]);
        ok_body(t.send_buffered(&upload_head(), body.clone()).await).await;
        pooled_ready(&t).await;
        // Reused, closed by the server before an answer, sent again on a new connection.
        ok_body(t.send_buffered(&upload_head(), body).await).await;
        assert_eq!(t.connections_made(), 2);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(
            bodies.load(Ordering::SeqCst),
            2,
            "each body arrived whole once"
        );
    }

    #[tokio::test]
    async fn a_streamed_body_gets_its_own_connection_and_is_never_sent_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sock, accepted, bodies) = serve(&dir, vec![Conn::Serve, Conn::Drop]);
        let t = AgentTransport::new(sock);
        ok_body(
            t.send_buffered(&upload_head(), bytes::Bytes::from_static(b"x"))
                .await,
        )
        .await;
        pooled_ready(&t).await;
        let chunks = (0..4).map(|_| {
            Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from(vec![1u8; 65536])))
        });
        let body = http_body_util::StreamBody::new(futures::stream::iter(chunks))
            .map_err(|e| connectrpc::ConnectError::internal(e.to_string()))
            .boxed();
        let mut req = http::Request::new(body);
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = http::Uri::from_static("http://agent/files?path=/tmp/y");
        let res = t.send_streamed(req).await;
        assert!(res.is_err(), "the server closed the connection: {res:?}");
        // Not the idle pooled connection (which would have answered), and no second try.
        assert_eq!(t.connections_made(), 2);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(bodies.load(Ordering::SeqCst), 1);
    }
}
