//! Set elements of this instance's nftables table over netlink (`NETLINK_NETFILTER`), so a
//! networked create or destroy runs no `nft` process.
//!
//! Only what the per-sandbox changes need is encoded here: one atomic nfnetlink batch of
//! `NFT_MSG_NEWSETELEM` / `NFT_MSG_DELSETELEM` messages, each naming the table, the set and
//! its elements. Keys are the raw bytes the rules compare: an `ifname` is 16 bytes
//! (`IFNAMSIZ`), zero-padded; an `ipv4_addr` is 4 bytes in network order; a concatenation
//! is its fields one after the other (both already 4-byte aligned). A range in a
//! concatenated interval set (`pipapo`) is its first key and its last key (`KEY_END`,
//! inclusive). The table, its chains and rules are still written by `nft` (once per
//! instance, `Net::rebuild` and the first attach), so they stay readable with `nft list`.
//!
//! The kernel applies a batch all or nothing and answers each message with `NLM_F_ACK`
//! synchronously while handling the send, so every answer is queued when `send` returns.

use std::net::Ipv4Addr;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use crate::error::{Result, RuntimeError};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 0x2;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_DATA_VALUE: u16 = 1;

/// `IFNAMSIZ`: the length of an `ifname` key.
const IFNAMSIZ: usize = 16;

/// One element: its key and, for a range, its last key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Elem {
    key: Vec<u8>,
    key_end: Option<Vec<u8>>,
}

impl Elem {
    /// An `ifname` element.
    pub(super) fn ifname(name: &str) -> Elem {
        Elem {
            key: ifname_key(name),
            key_end: None,
        }
    }

    /// An `ifname . ipv4_addr` element.
    pub(super) fn ifname_addr(name: &str, a: Ipv4Addr) -> Elem {
        let mut key = ifname_key(name);
        key.extend_from_slice(&a.octets());
        Elem { key, key_end: None }
    }

    /// An `ifname . ipv4_addr` range `first..=last` (a concatenated interval set).
    pub(super) fn ifname_range(name: &str, first: Ipv4Addr, last: Ipv4Addr) -> Elem {
        let mut key = ifname_key(name);
        let mut end = key.clone();
        key.extend_from_slice(&first.octets());
        end.extend_from_slice(&last.octets());
        Elem {
            key,
            key_end: Some(end),
        }
    }
}

fn ifname_key(name: &str) -> Vec<u8> {
    let mut k = vec![0u8; IFNAMSIZ];
    let b = name.as_bytes();
    // Interface names are at most 15 bytes (the kernel refuses longer ones); ours are
    // `pdk<slot>`.
    let n = b.len().min(IFNAMSIZ - 1);
    k[..n].copy_from_slice(&b[..n]);
    k
}

/// Add or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Add,
    Delete,
}

/// One change: `op` these elements of set `set`.
#[derive(Debug, Clone)]
pub(super) struct Change {
    pub(super) op: Op,
    pub(super) set: &'static str,
    pub(super) elems: Vec<Elem>,
}

/// A netlink socket to nf_tables, kept open by the runtime.
#[derive(Debug)]
pub(super) struct Nfnl {
    sock: Socket,
    seq: u32,
}

fn attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    pad(buf);
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// Starts a nested attribute; returns its offset for [`end_nest`].
fn begin_nest(buf: &mut Vec<u8>, ty: u16) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    at
}

fn end_nest(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at) as u16;
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Appends one netlink message (header, nfgenmsg, `body`) to `out`.
fn message(out: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16, body: &[u8]) {
    let len = 16 + 4 + body.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(0); // NFNETLINK_V0
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(body);
    pad(out);
}

/// The body of a set element message.
fn setelem_body(table: &str, set: &str, elems: &[Elem]) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + elems.len() * 64);
    attr(&mut b, NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
    attr(&mut b, NFTA_SET_ELEM_LIST_SET, &cstr(set));
    let list = begin_nest(&mut b, NFTA_SET_ELEM_LIST_ELEMENTS);
    for e in elems {
        let el = begin_nest(&mut b, NFTA_LIST_ELEM);
        let k = begin_nest(&mut b, NFTA_SET_ELEM_KEY);
        attr(&mut b, NFTA_DATA_VALUE, &e.key);
        end_nest(&mut b, k);
        if let Some(end) = &e.key_end {
            let k = begin_nest(&mut b, NFTA_SET_ELEM_KEY_END);
            attr(&mut b, NFTA_DATA_VALUE, end);
            end_nest(&mut b, k);
        }
        end_nest(&mut b, el);
    }
    end_nest(&mut b, list);
    b
}

impl Nfnl {
    /// Opens a socket to nf_tables in the caller's network namespace.
    pub(super) fn open() -> Result<Nfnl> {
        let mut sock = Socket::new(NETLINK_NETFILTER)
            .map_err(RuntimeError::io("opening nf_tables netlink"))?;
        sock.bind_auto()
            .map_err(RuntimeError::io("binding nf_tables netlink"))?;
        Ok(Nfnl { sock, seq: 1 })
    }

    /// Applies `changes` to `table` (family `inet`) in one atomic batch.
    pub(super) fn apply(&mut self, table: &str, changes: &[Change]) -> Result<()> {
        let changes: Vec<&Change> = changes.iter().filter(|c| !c.elems.is_empty()).collect();
        if changes.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(256);
        let first = self.seq;
        message(
            &mut out,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            first,
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        let mut seq = first;
        for c in &changes {
            seq = seq.wrapping_add(1);
            let (ty, flags) = match c.op {
                Op::Add => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE),
                Op::Delete => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
            };
            message(
                &mut out,
                (NFNL_SUBSYS_NFTABLES << 8) | ty,
                flags,
                seq,
                NFPROTO_INET,
                0,
                &setelem_body(table, c.set, &c.elems),
            );
        }
        seq = seq.wrapping_add(1);
        message(
            &mut out,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            seq,
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        self.seq = seq.wrapping_add(1);
        self.sock
            .send(&out, 0)
            .map_err(RuntimeError::io("sending to nf_tables"))?;
        // One ack per message (all queued by now); the first error fails the batch, which
        // the kernel has then not applied.
        let mut acked = 0;
        let mut failure: Option<(String, i32)> = None;
        let mut buf = vec![0u8; 64 * 1024];
        while acked < changes.len() && failure.is_none() {
            let n = self
                .sock
                .recv(&mut &mut buf[..], 0)
                .map_err(RuntimeError::io("reading from nf_tables"))?;
            let mut at = 0;
            while at + 16 <= n {
                let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap_or([0; 4])) as usize;
                let ty = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                let mseq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().unwrap_or([0; 4]));
                if len < 16 || at + len > n {
                    break;
                }
                if ty == NLMSG_ERROR && len >= 20 {
                    let code =
                        i32::from_ne_bytes(buf[at + 16..at + 20].try_into().unwrap_or([0; 4]));
                    let idx = mseq.wrapping_sub(first).wrapping_sub(1) as usize;
                    if code != 0 && failure.is_none() {
                        let c = changes.get(idx);
                        failure = Some((
                            format!(
                                "{} elements of set {}",
                                if c.is_some_and(|c| c.op == Op::Delete) {
                                    "deleting"
                                } else {
                                    "adding"
                                },
                                c.map_or("?", |c| c.set)
                            ),
                            -code,
                        ));
                    } else if idx < changes.len() {
                        acked += 1;
                    }
                }
                at += (len + 3) & !3;
            }
        }
        // Drain what else the failed batch produced, so the next batch reads its own answers.
        if failure.is_some() {
            while self
                .sock
                .recv(&mut &mut buf[..], libc::MSG_DONTWAIT)
                .is_ok()
            {}
        }
        match failure {
            None => Ok(()),
            Some((what, errno)) => Err(RuntimeError::Io {
                what: format!("nf_tables: {what} of table inet {table}"),
                source: std::io::Error::from_raw_os_error(errno),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_names_then_addresses() {
        let e = Elem::ifname_addr("pdk7", Ipv4Addr::new(10, 200, 0, 29));
        assert_eq!(e.key.len(), 20);
        assert_eq!(&e.key[..4], b"pdk7");
        assert!(e.key[4..16].iter().all(|b| *b == 0));
        assert_eq!(&e.key[16..], &[10, 200, 0, 29]);
        let r = Elem::ifname_range(
            "pdk7",
            Ipv4Addr::new(1, 2, 3, 0),
            Ipv4Addr::new(1, 2, 3, 255),
        );
        assert_eq!(r.key_end.as_deref().map(|k| k[19]), Some(255));
    }

    #[test]
    fn messages_are_aligned_and_sized() {
        let mut out = Vec::new();
        let body = setelem_body("paddock_x", "ifs", &[Elem::ifname("pdk1")]);
        message(
            &mut out,
            NFT_MSG_NEWSETELEM,
            NLM_F_REQUEST,
            1,
            NFPROTO_INET,
            0,
            &body,
        );
        assert_eq!(out.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(out[..4].try_into().unwrap()) as usize,
            out.len()
        );
    }
}
