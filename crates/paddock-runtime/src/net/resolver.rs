//! The resolver of each networked sandbox: answers only names its policy allows, and in
//! `allow` mode pins the addresses it returns into the sandbox's allow set first, after
//! dropping those no sandbox may reach (blocked ranges and the host's networks) unless a
//! listed CIDR covers them.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use paddock_core::{NetworkMode, NetworkPolicy};

use super::Shared;

/// Longest a forwarded DNS query waits for the upstream resolver.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Most DNS queries of one sandbox in flight at once; more are dropped (the client retries).
const MAX_INFLIGHT: usize = 64;
/// Most open DNS-over-TCP connections of one sandbox; more wait in the listen backlog.
const MAX_TCP_CONNS: usize = 16;
/// A DNS-over-TCP connection with no complete query for this long is closed (RFC 7766
/// suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// What a sandbox's resolver answers by: its policy (changed in place by `update`), the
/// upstream resolver, and where allowed addresses are pinned.
#[derive(Clone)]
pub(super) struct Resolver {
    pub(super) policy: Arc<RwLock<NetworkPolicy>>,
    pub(super) upstream: SocketAddr,
    pub(super) shared: Arc<Shared>,
    pub(super) slot: u32,
    /// The generation of the slot's policy this resolver pins for.
    pub(super) generation: u64,
}

impl Resolver {
    async fn answer(&self, q: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let p = self
            .policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        answer(q, &p, self.upstream, transport, self).await
    }
}

/// Serves a sandbox's resolver on both sockets. One task for both: aborting it (detach)
/// stops both listeners and, through the TCP loop's JoinSet, every open TCP connection.
pub(super) async fn serve(udp: tokio::net::UdpSocket, tcp: tokio::net::TcpListener, ctx: Resolver) {
    tokio::join!(
        resolve_loop(Arc::new(udp), ctx.clone()),
        resolve_tcp_loop(tcp, ctx)
    );
}

/// How a query reached the resolver, and so how it is forwarded upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

async fn resolve_loop(sock: Arc<tokio::net::UdpSocket>, ctx: Resolver) {
    let inflight = Arc::new(tokio::sync::Semaphore::new(MAX_INFLIGHT));
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(permit) = inflight.clone().try_acquire_owned() else {
            continue;
        };
        let q = buf[..n].to_vec();
        let (sock, ctx) = (sock.clone(), ctx.clone());
        tokio::spawn(async move {
            if let Some(answer) = ctx.answer(&q, Transport::Udp).await {
                let _ = sock.send_to(&answer, from).await;
            }
            drop(permit);
        });
    }
}

/// DNS over TCP (RFC 7766): each message is preceded by its length as two big-endian
/// bytes; a connection may carry several queries, answered in order.
async fn resolve_tcp_loop(listener: tokio::net::TcpListener, ctx: Resolver) {
    let conns = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNS));
    // Owned here, so aborting this task aborts every connection with it.
    let mut open = tokio::task::JoinSet::new();
    loop {
        let Ok(permit) = conns.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            // Reap finished connections while waiting.
            Some(_) = open.join_next(), if !open.is_empty() => continue,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let ctx = ctx.clone();
        open.spawn(async move {
            let _ = serve_tcp(stream, &ctx).await;
            drop(permit);
        });
    }
}

async fn serve_tcp(mut stream: tokio::net::TcpStream, ctx: &Resolver) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    loop {
        let Ok(q) = tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await else {
            return Ok(());
        };
        let Some(q) = q? else { return Ok(()) };
        let Some(a) = ctx.answer(&q, Transport::Tcp).await else {
            return Ok(());
        };
        let Some(out) = framed(&a) else {
            return Ok(());
        };
        stream.write_all(&out).await?;
    }
}

/// `msg` with its two-byte length in front (`None` if it is too long for that).
fn framed(msg: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(msg.len()).ok()?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    Some(out)
}

/// One length-prefixed DNS message; `None` at a clean end of stream.
async fn read_framed<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; 2];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    r.read_exact(&mut msg).await?;
    Ok(Some(msg))
}

/// The reply to one query: NXDOMAIN for a name the policy does not allow, else the
/// upstream's answer without AAAA records; in `allow` mode without A records of blocked
/// addresses or host networks (unless listed), the rest pinned into the sandbox's allow set
/// before the answer is returned.
async fn answer(
    q: &[u8],
    p: &NetworkPolicy,
    upstream: SocketAddr,
    transport: Transport,
    ctx: &Resolver,
) -> Option<Vec<u8>> {
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::{RData, RecordType};
    let msg = Message::from_vec(q).ok()?;
    let allowed = !msg.queries().is_empty()
        && msg
            .queries()
            .iter()
            .all(|qq| p.allows_name(&qq.name().to_ascii()));
    if !allowed {
        let mut r = Message::error_msg(msg.id(), msg.op_code(), ResponseCode::NXDomain);
        r.add_queries(msg.queries().to_vec());
        r.set_recursion_desired(msg.recursion_desired());
        r.set_recursion_available(true);
        return r.to_vec().ok();
    }
    let servfail = || {
        Message::error_msg(msg.id(), msg.op_code(), ResponseCode::ServFail)
            .to_vec()
            .ok()
    };
    let reply = match transport {
        Transport::Udp => forward(q, upstream).await,
        Transport::Tcp => forward_tcp(q, upstream).await,
    };
    let Some(reply) = reply else {
        // Upstream unreachable or silent: say so at once instead of letting the client
        // wait out its own timeout.
        return servfail();
    };
    let Ok(mut resp) = Message::from_vec(&reply) else {
        return servfail();
    };
    if resp.id() != msg.id() {
        return None;
    }
    let listed = |ip: Ipv4Addr| p.cidrs.iter().any(|c| c.contains(ip));
    // In `allow` mode an answer opens what it names, so it may name nothing no sandbox may
    // reach: such A records go, unless a listed CIDR covers them (then they are open
    // anyway). Other sections lose their address records too (no client needs them).
    let hostnets = ctx.shared.hostnets();
    let keep = |r: &hickory_proto::rr::Record| match r.data() {
        RData::AAAA(_) => false,
        RData::A(a) if p.mode == NetworkMode::Allow => {
            listed(a.0) || !super::hostnets::is_blocked(a.0, &hostnets)
        }
        _ => true,
    };
    let keep_other = |r: &hickory_proto::rr::Record| {
        keep(r) && (p.mode != NetworkMode::Allow || r.record_type() != RecordType::A)
    };
    let answers: Vec<_> = resp.take_answers().into_iter().filter(keep).collect();
    let additionals: Vec<_> = resp
        .take_additionals()
        .into_iter()
        .filter(keep_other)
        .collect();
    let authority: Vec<_> = resp
        .take_name_servers()
        .into_iter()
        .filter(keep_other)
        .collect();
    resp.insert_additionals(additionals);
    resp.insert_name_servers(authority);
    if p.mode == NetworkMode::Allow {
        // Addresses a listed CIDR covers are in the set already (and an interval set
        // refuses an element overlapping another).
        let ips: Vec<std::net::Ipv4Addr> = answers
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) if !listed(a.0) => Some(a.0),
                _ => None,
            })
            .collect();
        if !ips.is_empty() {
            let (shared, slot, generation) = (ctx.shared.clone(), ctx.slot, ctx.generation);
            let pinned =
                tokio::task::spawn_blocking(move || shared.pin(slot, generation, &ips)).await;
            if !matches!(pinned, Ok(Ok(()))) {
                tracing::warn!(slot, "pinning resolved addresses failed: {pinned:?}");
                let r = Message::error_msg(msg.id(), msg.op_code(), ResponseCode::ServFail);
                return r.to_vec().ok();
            }
        }
    }
    resp.insert_answers(answers);
    resp.to_vec().ok()
}

/// Sends `q` to `upstream` and waits for its reply (same id, from that address).
async fn forward(q: &[u8], upstream: SocketAddr) -> Option<Vec<u8>> {
    let up = tokio::net::UdpSocket::bind(("0.0.0.0", 0)).await.ok()?;
    up.connect(upstream).await.ok()?;
    up.send(q).await.ok()?;
    // A whole datagram whatever the EDNS size the client offered (a cut one would not
    // parse and would turn into SERVFAIL).
    let mut buf = vec![0u8; 65535];
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, up.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n >= 2 && buf[..2] == q[..2] {
            buf.truncate(n);
            return Some(buf);
        }
    }
}

/// Sends `q` to `upstream` over TCP and reads its reply, all within the upstream timeout.
async fn forward_tcp(q: &[u8], upstream: SocketAddr) -> Option<Vec<u8>> {
    use tokio::io::AsyncWriteExt;
    let out = framed(q)?;
    let exchange = async {
        let mut up = tokio::net::TcpStream::connect(upstream).await.ok()?;
        up.write_all(&out).await.ok()?;
        let reply = read_framed(&mut up).await.ok()??;
        (reply.len() >= 2 && reply[..2] == q[..2]).then_some(reply)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .ok()?
}

/// The first `nameserver` of the host's `/etc/resolv.conf`, port 53 (fallback 127.0.0.1).
pub fn host_resolver() -> SocketAddr {
    std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .and_then(|t| {
            t.lines()
                .filter_map(|l| l.trim().strip_prefix("nameserver"))
                .find_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        })
        .map_or_else(
            || SocketAddr::from(([127, 0, 0, 1], 53)),
            |ip| SocketAddr::new(ip, 53),
        )
}
