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
            .pool_idle_timeout(Duration::from_secs(60))
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
        let mut resp = match self.client.request(req).await {
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
