//! Just enough DNS message writing for the harnesses' fixed messages (the
//! cache's set-up answers, a reply to a held query), kept apart from
//! sinkhole's own writers so the harnesses do not check sinkhole with
//! itself.

use crate::check::{FLAG_QR, FLAG_RA, FLAG_RD};

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_MX: u16 = 15;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_HTTPS: u16 = 65;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;

/// `text` (dots between labels, no escapes) in wire form.
pub fn name(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 2);
    for label in text.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

pub fn question(qname: &[u8], qtype: u16, qclass: u16) -> Vec<u8> {
    let mut q = qname.to_vec();
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&qclass.to_be_bytes());
    q
}

/// One record; its owner is the question's name (a pointer to offset 12)
/// unless given.
#[derive(Debug, Clone)]
pub struct Rr {
    pub owner: Option<Vec<u8>>,
    pub rtype: u16,
    pub ttl: u32,
    pub rdata: Vec<u8>,
}

impl Rr {
    pub fn new(rtype: u16, ttl: u32, rdata: Vec<u8>) -> Self {
        Self {
            owner: None,
            rtype,
            ttl,
            rdata,
        }
    }

    pub fn owned(owner: &str, rtype: u16, ttl: u32, rdata: Vec<u8>) -> Self {
        Self {
            owner: Some(name(owner)),
            rtype,
            ttl,
            rdata,
        }
    }

    /// `zone SOA ns.zone hostmaster.zone 1 3600 600 86400 minimum`.
    pub fn soa(zone: &str, ttl: u32, minimum: u32) -> Self {
        let mut rdata = name(&format!("ns.{zone}"));
        rdata.extend_from_slice(&name(&format!("hostmaster.{zone}")));
        for v in [1u32, 3600, 600, 86400, minimum] {
            rdata.extend_from_slice(&v.to_be_bytes());
        }
        Self::owned(zone, TYPE_SOA, ttl, rdata)
    }

    fn put(&self, out: &mut Vec<u8>) {
        match &self.owner {
            Some(o) => out.extend_from_slice(o),
            None => out.extend_from_slice(&[0xC0, 12]),
        }
        out.extend_from_slice(&self.rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&self.ttl.to_be_bytes());
        out.extend_from_slice(&(self.rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.rdata);
    }
}

/// A reply with ID 0 to `qname`/`qtype` (class IN): QR, RA, RD, `flags`
/// and `rcode`, then the answer and authority records.
pub fn reply(qname: &str, qtype: u16, flags: u16, rcode: u8, an: &[Rr], ns: &[Rr]) -> Vec<u8> {
    reply_to(
        0,
        &question(&name(qname), qtype, CLASS_IN),
        flags,
        rcode,
        an,
        ns,
    )
}

/// A reply with `id` to the question section `question`.
pub fn reply_to(id: u16, question: &[u8], flags: u16, rcode: u8, an: &[Rr], ns: &[Rr]) -> Vec<u8> {
    let mut r = Vec::with_capacity(512);
    r.extend_from_slice(&id.to_be_bytes());
    let flags = FLAG_QR | FLAG_RA | FLAG_RD | flags | u16::from(rcode & 0xF);
    r.extend_from_slice(&flags.to_be_bytes());
    for c in [1, an.len(), ns.len(), 0] {
        r.extend_from_slice(&(c as u16).to_be_bytes());
    }
    r.extend_from_slice(question);
    for rr in an.iter().chain(ns) {
        rr.put(&mut r);
    }
    r
}

/// A client query: `id`, `flags`, one question, and an OPT with
/// `payload` and DO when `edns` is given.
pub fn query(id: u16, flags: u16, question: &[u8], edns: Option<(u16, bool)>) -> Vec<u8> {
    let mut q = Vec::with_capacity(12 + question.len() + 11);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&flags.to_be_bytes());
    for c in [1u16, 0, 0, u16::from(edns.is_some())] {
        q.extend_from_slice(&c.to_be_bytes());
    }
    q.extend_from_slice(question);
    if let Some((payload, dnssec_ok)) = edns {
        q.push(0);
        q.extend_from_slice(&TYPE_OPT.to_be_bytes());
        q.extend_from_slice(&payload.to_be_bytes());
        q.extend_from_slice(&[0, 0]);
        q.extend_from_slice(&(if dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
        q.extend_from_slice(&[0, 0]);
    }
    q
}

/// An OPT record (root owner, version 0, DO clear) holding `options`.
pub fn opt(payload: u16, options: &[u8]) -> Vec<u8> {
    let mut o = vec![0];
    o.extend_from_slice(&TYPE_OPT.to_be_bytes());
    o.extend_from_slice(&payload.to_be_bytes());
    o.extend_from_slice(&[0, 0, 0, 0]);
    o.extend_from_slice(&(options.len() as u16).to_be_bytes());
    o.extend_from_slice(options);
    o
}

/// An Extended DNS Error option (RFC 8914): code 15, INFO-CODE, text.
pub fn ede(code: u16, text: &[u8]) -> Vec<u8> {
    let mut e = 15u16.to_be_bytes().to_vec();
    e.extend_from_slice(&((2 + text.len()) as u16).to_be_bytes());
    e.extend_from_slice(&code.to_be_bytes());
    e.extend_from_slice(text);
    e
}
