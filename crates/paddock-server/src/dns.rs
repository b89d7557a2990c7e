//! A small DNS responder for the sandbox URL names (`paddock serve --dns-listen ADDR`), so
//! `{port}-{id}.{domain}` (what the E2B SDKs' `get_host` builds) resolves on a laptop or a
//! server without wildcard DNS: point a resolver at it for the domain (`docs/e2b.md`).
//!
//! It is authoritative for `{domain}` and every name under it, answering `A` with
//! `--dns-answer` (and `AAAA` with no records, so clients fall back to IPv4 at once).
//! Any other name gets REFUSED, never NXDOMAIN: glibc then asks the next `nameserver` of
//! `/etc/resolv.conf`, so the responder can be listed first without breaking other
//! lookups. It never forwards or recurses. UDP only: its answers are far below 512 bytes.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

/// The TTL of the answers: short, since the answer address is a server flag.
const TTL_SECS: u32 = 60;

/// Serves the responder on `sock` until the task is dropped.
pub async fn serve(sock: tokio::net::UdpSocket, domain: String, answer: Ipv4Addr) {
    let sock = Arc::new(sock);
    let domain = domain.trim_matches('.').to_ascii_lowercase();
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer): (usize, SocketAddr) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("dns responder: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Some(reply) = respond(&buf[..n], &domain, answer) {
            // A lost reply is retried by the client.
            let _ = sock.send_to(&reply, peer).await;
        }
    }
}

/// The reply to one query datagram; `None` for what is not a query (never answer those).
pub fn respond(query: &[u8], domain: &str, answer: Ipv4Addr) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    if msg.message_type() != MessageType::Query {
        return None;
    }
    let ours = |name: &str| {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name == domain || name.ends_with(&format!(".{domain}"))
    };
    let queries = msg.queries();
    if queries.len() != 1 || !ours(&queries[0].name().to_ascii()) {
        let mut r = Message::error_msg(msg.id(), msg.op_code(), ResponseCode::Refused);
        r.add_queries(queries.to_vec());
        r.set_recursion_desired(msg.recursion_desired());
        return r.to_vec().ok();
    }
    let q = &queries[0];
    let mut r = Message::new();
    r.set_id(msg.id())
        .set_message_type(MessageType::Response)
        .set_op_code(msg.op_code())
        .set_authoritative(true)
        .set_recursion_desired(msg.recursion_desired())
        .set_response_code(ResponseCode::NoError);
    r.add_query(q.clone());
    if matches!(q.query_type(), RecordType::A | RecordType::ANY) {
        r.add_answer(Record::from_rdata(
            q.name().clone(),
            TTL_SECS,
            RData::A(A(answer)),
        ));
    }
    r.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use std::str::FromStr;

    fn ask(name: &str, t: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(7).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_str(name).unwrap(), t));
        let reply = respond(&m.to_vec().unwrap(), "localhost", Ipv4Addr::LOCALHOST).unwrap();
        Message::from_vec(&reply).unwrap()
    }

    #[test]
    fn names_under_the_domain_resolve_to_the_answer() {
        for name in [
            "8000-abcdefghij0123456789.localhost.",
            "x.y.LOCALHOST",
            "localhost",
        ] {
            let r = ask(name, RecordType::A);
            assert_eq!(r.id(), 7);
            assert_eq!(r.response_code(), ResponseCode::NoError, "{name}");
            assert!(r.authoritative());
            let a: Vec<_> = r.answers().iter().map(|a| a.data().clone()).collect();
            assert_eq!(a, vec![RData::A(A(Ipv4Addr::LOCALHOST))], "{name}");
        }
        // AAAA: the name exists with no IPv6 address (clients use the A record at once).
        let r = ask("3000-x.localhost", RecordType::AAAA);
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(r.answers().is_empty());
    }

    #[test]
    fn other_names_are_refused_so_the_next_resolver_is_asked() {
        for name in ["example.com", "notlocalhost", "localhost.example.com"] {
            let r = ask(name, RecordType::A);
            assert_eq!(r.response_code(), ResponseCode::Refused, "{name}");
            assert!(r.answers().is_empty());
        }
        // Replies and garbage are never answered.
        assert!(respond(b"\x00\x01garbage", "localhost", Ipv4Addr::LOCALHOST).is_none());
        let mut m = Message::new();
        m.set_message_type(MessageType::Response);
        assert!(respond(&m.to_vec().unwrap(), "localhost", Ipv4Addr::LOCALHOST).is_none());
    }
}
