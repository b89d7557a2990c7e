//! One accepted connection: TLS (handshake under the request-head time limit) or plain
//! TCP that can splice pass-through bodies ([`crate::splice`]), the framing watcher
//! ([`crate::proxy::framing`]), and each request made ready for the router ([`prepare`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tower::ServiceExt as _;

use crate::{ServeError, e2b, fleet, proxy, splice};
use paddock_service::state::AppState;

/// A connection the server speaks HTTP on: plain TCP or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// What every connection of one server shares.
pub(crate) struct Connections {
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    http: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    header_timeout: Duration,
    body_idle: Duration,
    /// On a fleet node: the token every request must carry.
    node_token: Option<fleet::FleetToken>,
    domain: String,
    state: Arc<AppState>,
}

impl Connections {
    pub(crate) fn new(
        state: &Arc<AppState>,
        app: Router,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Arc<Connections> {
        // HTTP/1.1, and HTTP/2 with prior knowledge (h2c).
        let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // Without a timer hyper's header-read timeout is silently off (slowloris).
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(state.cfg.header_timeout)
            .keep_alive(true);
        http.http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(20));
        Arc::new(Connections {
            app,
            tls,
            http,
            header_timeout: state.cfg.header_timeout,
            body_idle: state.cfg.body_idle_timeout,
            node_token: state.cfg.node.as_ref().map(|n| n.token.clone()),
            domain: state.cfg.domain.clone(),
            state: state.clone(),
        })
    }

    /// Serves the connection `tcp` from `peer` on a task of its own, watched by `graceful`.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        graceful: Watcher,
    ) {
        let _ = tcp.set_nodelay(true);
        let this = self.clone();
        tokio::spawn(async move { this.serve(tcp, peer, graceful).await });
    }

    async fn serve(
        self: Arc<Self>,
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        graceful: Watcher,
    ) {
        // The TLS handshake happens here, off the accept loop, under the same time limit as
        // a request head. A plain connection can splice pass-through response bodies.
        let mut splice_slot = None;
        let io: Box<dyn Io> = match &self.tls {
            None => {
                let (io, slot) = splice::SpliceIo::new(tcp);
                splice_slot = Some(slot);
                Box::new(io)
            }
            Some(acc) => match tokio::time::timeout(self.header_timeout, acc.accept(tcp)).await {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake: {e}");
                    return;
                }
                Err(_) => return,
            },
        };
        // Watches request framing for Content-Length with Transfer-Encoding (refused).
        let (tcp, framing) = proxy::framing::Watched::new(io);
        let http = self.http.clone();
        let svc = hyper::service::service_fn(move |req| {
            prepare(&self, req, peer, &framing, splice_slot.as_ref())
        });
        let conn = http.serve_connection_with_upgrades(TokioIo::new(tcp), svc);
        let _ = graceful.watch(conn.into_owned()).await;
    }
}

type Answer = Result<axum::response::Response, std::convert::Infallible>;
/// A peer node's internal route, answered outside the router.
type Internal = std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>>;
/// What [`prepare`] gives hyper: an answer made here, a peer's internal route, or the router's.
type Prepared = futures::future::Either<
    futures::future::Either<std::future::Ready<Answer>, Internal>,
    tower::util::Oneshot<Router, axum::extract::Request>,
>;

/// One request of a connection, made ready for the router (or answered here): a node
/// answers control planes only (the fleet token, else 401) and serves its peers' internal
/// routes; HTTP/2's `:authority` becomes the Host header; the body gets its idle timeout;
/// the extensions the handlers read (the peer, the framing watcher, the splice slot) are set.
fn prepare(
    c: &Arc<Connections>,
    mut req: hyper::Request<hyper::body::Incoming>,
    mut peer: SocketAddr,
    framing: &proxy::framing::Flag,
    splice_slot: Option<&splice::SpliceSlot>,
) -> Prepared {
    use futures::future::Either;
    if let Some(t) = &c.node_token {
        if !t.matches(req.headers().get(fleet::TOKEN_HEADER)) {
            return Either::Left(Either::Left(std::future::ready(Ok(
                fleet::unauthorized_node(),
            ))));
        }
        req.headers_mut().remove(fleet::TOKEN_HEADER);
        // A peer node's request (template fetch, `fleet::layers`).
        if req.headers().contains_key(fleet::layers::INTERNAL_HEADER)
            && req.uri().path().starts_with(fleet::layers::INTERNAL_PREFIX)
        {
            let st = c.state.clone();
            return Either::Left(Either::Right(Box::pin(async move {
                Ok(fleet::layers::serve_internal(st, req.map(axum::body::Body::new)).await)
            })));
        }
        if let Some(p) = req
            .headers_mut()
            .remove(fleet::forward::PEER_HEADER)
            .and_then(|v| v.to_str().ok()?.parse().ok())
        {
            peer = p;
        }
    }
    // HTTP/2 names the host in `:authority`, not in a Host header: the handlers get the Host
    // header HTTP/1.1 would have had (RFC 9113 section 8.3.1), so URLs and the SDKs' domain
    // come out the same on both.
    if !req.headers().contains_key(hyper::header::HOST)
        && let Some(a) = req
            .uri()
            .authority()
            .and_then(|a| hyper::header::HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(hyper::header::HOST, a);
    }
    // envd's stdin streams may pause for long; the proxy's ports do not.
    let idle = if e2b::target::target(req.headers(), req.uri(), &c.domain)
        .is_some_and(|t| t.port == e2b::ENVD_PORT)
    {
        e2b::envd::BODY_IDLE_TIMEOUT
    } else {
        c.body_idle
    };
    let mut req =
        req.map(|b| axum::body::Body::new(tower_http::timeout::TimeoutBody::new(idle, b)));
    // For the proxy's X-Forwarded-For.
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    req.extensions_mut().insert(framing.clone());
    if let Some(slot) = splice_slot
        && req.version() <= hyper::Version::HTTP_11
    {
        req.extensions_mut().insert(slot.clone());
    }
    Either::Right(c.app.clone().oneshot(req))
}

/// A TLS acceptor for the PEM certificate chain and key, offering HTTP/2 and HTTP/1.1.
pub(crate) fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, ServeError> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            ServeError::Tls(format!("reading certificates from {}: {e}", cert.display()))
        })?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "no certificate in {}",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        ServeError::Tls(format!(
            "reading the private key from {}: {e}",
            key.display()
        ))
    })?;
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(format!("certificate and key do not fit: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg)))
}
