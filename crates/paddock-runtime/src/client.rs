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
