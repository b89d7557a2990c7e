//! Forwarding a request to a node: the head as it came (Host included, so the E2B data
//! plane and the port proxy route by Host on the node too) plus the fleet token, the body
//! streamed both ways, and an upgrade (PTY WebSocket, proxied WebSocket) spliced once the
//! node switches protocols. One pooled HTTP/1.1 client serves every node.

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Request, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::error::ApiError;

/// Time to connect to a node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle connections kept per node.
pub const POOL_PER_NODE: usize = 64;
/// How long an idle pooled connection is kept. Below a node's default header timeout
/// (10 s), after which the node closes an idle keep-alive connection: a connection the
/// node is closing must not be picked for a request.
pub const POOL_IDLE: Duration = Duration::from_secs(4);
/// The header telling the node the client's address (trusted only with the token).
pub const PEER_HEADER: &str = "x-paddock-peer";

/// The client control planes reach nodes with.
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, Body>,
    token: HeaderValue,
}

impl Forwarder {
    pub fn new(token: &super::FleetToken) -> Forwarder {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(POOL_PER_NODE)
            .pool_idle_timeout(POOL_IDLE)
            .build(conn);
        Forwarder {
            client,
            token: token.header_value(),
        }
    }

    /// Sends `req` to the node at `base` (`http://host:port`) and answers with its response.
    pub async fn forward(&self, node: &str, base: &str, mut req: Request<Body>) -> Response {
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let uri: Uri = match format!("{}{pq}", base.trim_end_matches('/')).parse() {
            Ok(u) => u,
            Err(e) => {
                return ApiError::Internal(format!("node {node} address {base:?}: {e}"))
                    .into_response();
            }
        };
        let upgrade = req.headers().contains_key(header::UPGRADE);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0);
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        h.insert(super::TOKEN_HEADER, self.token.clone());
        h.remove(PEER_HEADER);
        // Node-to-node routes are for peers only, never for a forwarded client.
        h.remove(super::layers::INTERNAL_HEADER);
        if let Some(p) = peer
            && let Ok(v) = HeaderValue::from_str(&p.to_string())
        {
            h.insert(PEER_HEADER, v);
        }
        // A request with no body and a method safe to repeat is sent again once on a
        // fresh connection when the first attempt fails: a pooled connection can be
        // closed by the node just as it is picked (hyper then reports `SendRequest`).
        let replay = replayable(&req).then(|| {
            let mut again = Request::new(Body::empty());
            *again.method_mut() = req.method().clone();
            *again.uri_mut() = req.uri().clone();
            *again.version_mut() = req.version();
            *again.headers_mut() = req.headers().clone();
            again
        });
        let first = self.client.request(req).await;
        let sent = match (first, replay) {
            (Err(e), Some(again)) => {
                tracing::debug!(node, "forwarding failed, sending once more: {e}");
                self.client.request(again).await
            }
            (r, _) => r,
        };
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(node, "forwarding: {e}");
                return ApiError::Unavailable(format!("node {node} is unreachable; retry"))
                    .into_response();
            }
        };
        if let Some(cu) = client_upgrade
            && resp.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            let nu = hyper::upgrade::on(&mut resp);
            let node = node.to_owned();
            tokio::spawn(async move {
                match (cu.await, nu.await) {
                    (Ok(c), Ok(n)) => {
                        let _ = tokio::io::copy_bidirectional(
                            &mut TokioIo::new(c),
                            &mut TokioIo::new(n),
                        )
                        .await;
                    }
                    (c, n) => tracing::debug!(
                        node,
                        "upgrade failed: client {:?}, node {:?}",
                        c.err(),
                        n.err()
                    ),
                }
            });
        }
        resp.map(Body::new)
    }
}

/// Whether a request can be sent twice without effect: a safe or idempotent method, no
/// body, no upgrade. "No body" is read from the head, as HTTP/1.1 frames it (no
/// `Transfer-Encoding`, no or a zero `Content-Length`): the body itself is wrapped by the
/// server's idle timeout, which hides its size. An HTTP/2 request may carry a body without
/// saying so in its head, so it is never replayed.
fn replayable(req: &Request<Body>) -> bool {
    use http::Method;
    let h = req.headers();
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE | Method::PUT
    ) && req.version() <= http::Version::HTTP_11
        && !h.contains_key(header::TRANSFER_ENCODING)
        && h.get(header::CONTENT_LENGTH).is_none_or(|v| v == "0")
        && !h.contains_key(header::UPGRADE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads one request head (these requests have no body).
    async fn read_head(s: &mut tokio::net::TcpStream) -> bool {
        let mut buf = Vec::new();
        let mut b = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        }
        true
    }

    /// A node that answers the first request on each connection and closes the connection
    /// when a second one arrives on it, unanswered: what a node does to an idle
    /// connection the moment a pooled client reuses it.
    async fn closing_node() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    if read_head(&mut s).await {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                    }
                    read_head(&mut s).await;
                });
            }
        });
        format!("http://{addr}")
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn a_request_without_a_body_is_sent_again_when_its_pooled_connection_closes() {
        let f = Forwarder::new(&crate::fleet::FleetToken::new(&"t".repeat(40)).unwrap());
        let base = closing_node().await;
        for i in 0..4 {
            let r = f.forward("n", &base, get("/files?path=/x")).await;
            assert_eq!(r.status(), StatusCode::OK, "request {i}");
        }
        // A body cannot be replayed: the closed connection is answered as unreachable.
        let mut statuses = Vec::new();
        for _ in 0..4 {
            let post = Request::post("/x").body(Body::from("data")).unwrap();
            statuses.push(f.forward("n", &base, post).await.status());
        }
        assert!(
            statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
            "{statuses:?}"
        );
    }
}
