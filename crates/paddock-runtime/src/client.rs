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

impl ClientTransport for AgentTransport {
    type ResponseBody = hyper::body::Incoming;
    type Error = TransportError;

    fn send(
        &self,
        request: http::Request<ClientBody>,
    ) -> BoxFuture<'static, Result<http::Response<Self::ResponseBody>, Self::Error>> {
        let this = self.clone();
        Box::pin(async move {
            let mut sender = match this.take_ready() {
                Some(s) => s,
                None => this.connect().await?,
            };
            let fut = sender.send_request(request);
            // Back into the pool right away: it becomes ready again once this response's
            // body has been read, and `take_ready` skips it until then.
            {
                let mut idle = this.idle.lock().expect("pool poisoned");
                if idle.len() < POOL_MAX {
                    idle.push(sender);
                }
            }
            Ok(fut.await?)
        })
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
