//! Raw transfers with the agent: a `/files` request that asks for `Upgrade: paddock-raw`
//! (the agent's `files::raw` module has the protocol). When the agent agrees, the caller gets
//! the agent connection's socket itself, so it can move the bytes with `splice` instead of
//! through HTTP bodies; otherwise it gets the agent's ordinary answer.

use bytes::Bytes;
use hyper_util::rt::TokioIo;

use super::Sandbox;
use crate::error::{Result, RuntimeError};

/// The `Upgrade` protocol of a raw transfer (the agent's `files::RAW_UPGRADE`).
pub const RAW_UPGRADE: &str = "paddock-raw";
/// The header carrying a raw transfer's size (the agent's `files::RAW_LENGTH_HEADER`).
pub const RAW_LENGTH_HEADER: &str = "x-paddock-length";
/// Send buffer asked for on the host's end of a raw connection (the kernel caps it at
/// `net.core.wmem_max`): an upload's writes then block, and wake the agent, once per few
/// MiB rather than once per 208 KiB (the default), which halves the context switches of a
/// bulk upload on a busy machine.
const RAW_SOCKET_BUFFER: usize = 4 << 20;

/// How the agent answered a request for a raw transfer.
#[derive(Debug)]
pub enum RawExchange {
    /// It switched: the socket now carries the bytes unframed.
    Upgraded {
        /// The agent connection, no longer speaking HTTP.
        stream: tokio::net::UnixStream,
        /// Bytes of the stream that arrived with the 101 and were already read.
        read_ahead: Bytes,
        /// The size the agent announced (downloads).
        length: Option<u64>,
    },
    /// It answered as HTTP: an error, or a transfer it does not do raw (gzip, size unknown).
    Answered(http::Response<hyper::body::Incoming>),
}

impl Sandbox {
    /// Sends `req` (a `/files` request with an empty body) on a connection of its own,
    /// asking for a raw transfer (`Connection: upgrade`, `Upgrade: paddock-raw` are added).
    /// Only a failure to reach the agent or a broken exchange is an `Err`.
    pub async fn agent_raw(
        &self,
        req: http::Request<http_body_util::Empty<Bytes>>,
    ) -> Result<RawExchange> {
        let failed = |what: &str, e: std::io::Error| RuntimeError::Io {
            what: what.into(),
            source: e,
        };
        let stream = tokio::net::UnixStream::connect(self.agent.transport.socket_path())
            .await
            .map_err(|e| failed("agent socket", e))?;
        // Best effort: the default buffer only means more wake-ups.
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(&stream, RAW_SOCKET_BUFFER);
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed("agent handshake", std::io::Error::other(e)))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let mut req = req;
        let h = req.headers_mut();
        h.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        h.insert(
            http::header::UPGRADE,
            http::HeaderValue::from_static(RAW_UPGRADE),
        );
        let mut resp = send
            .send_request(req)
            .await
            .map_err(|e| failed("agent request", std::io::Error::other(e)))?;
        if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            return Ok(RawExchange::Answered(resp));
        }
        let length = resp
            .headers()
            .get(RAW_LENGTH_HEADER)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let up = hyper::upgrade::on(&mut resp)
            .await
            .map_err(|e| failed("agent upgrade", std::io::Error::other(e)))?;
        let parts = up
            .downcast::<TokioIo<tokio::net::UnixStream>>()
            .map_err(|_| failed("agent upgrade", std::io::Error::other("unexpected stream")))?;
        Ok(RawExchange::Upgraded {
            stream: parts.io.into_inner(),
            read_ahead: parts.read_buf,
            length,
        })
    }
}
