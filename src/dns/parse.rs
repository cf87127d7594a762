//! Stage 1, parse: a client's packet becomes a [`Query`] borrowing it, or a
//! [`Rejection`] saying which error answer it gets (or none).
//!
//! Only standard queries with exactly one question are answered. Whatever
//! else arrives is answered with the RCODE SPEC gives (FORMERR, NOTIMP,
//! BADVERS), echoing the question when it parses and an OPT when the query
//! had one, so a client can match the error to what it asked.

use super::wire::{
    EDNS_DO, Edns, FLAG_AD, FLAG_CD, FLAG_QR, FLAG_RD, FLAG_TC, HEADER_LEN, Labels, OPCODE_MASK,
    TYPE_OPT, question_name_end, read_record, read_u16,
};

/// A parsed query, borrowing the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    pub id: u16,
    /// The raw flags word (QR, opcode, AA, TC, RD, RA, Z, AD, CD, RCODE).
    pub flags: u16,
    /// The question section as sent: name, type and class.
    pub question: &'a [u8],
    /// The name in wire form (length-prefixed labels, root byte included).
    pub qname: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
}

impl<'a> Query<'a> {
    pub fn rd(&self) -> bool {
        self.flags & FLAG_RD != 0
    }

    pub fn cd(&self) -> bool {
        self.flags & FLAG_CD != 0
    }

    /// AD in a query asks for AD in the answer (RFC 6840 §5.7).
    pub fn ad(&self) -> bool {
        self.flags & FLAG_AD != 0
    }

    pub fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }

    /// The labels of the name, left to right.
    pub fn labels(&self) -> Labels<'a> {
        Labels::new(self.qname)
    }
}

/// What answer a packet that is not a query we serve gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// Not worth a reply: shorter than a header, or itself a response.
    Drop,
    /// The header is readable but the message is not a valid query.
    FormErr,
    /// An opcode we do not serve.
    NotImp,
    /// A valid query whose EDNS version we do not speak.
    BadVers,
}

/// A packet we answer with an error, and what of it could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection<'a> {
    pub kind: RejectKind,
    pub id: u16,
    pub flags: u16,
    /// The one question, when the packet had exactly one and it parses.
    pub question: Option<Question<'a>>,
    /// The query's OPT, when it had a readable one.
    pub edns: Option<Edns>,
}

/// A question section that parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Question<'a> {
    pub bytes: &'a [u8],
    pub qname: &'a [u8],
    pub qtype: u16,
}

/// Parses a client's packet.
#[inline]
pub fn parse(packet: &[u8]) -> Result<Query<'_>, Rejection<'_>> {
    let drop = Rejection {
        kind: RejectKind::Drop,
        id: 0,
        flags: 0,
        question: None,
        edns: None,
    };
    if packet.len() < HEADER_LEN {
        return Err(drop);
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    if flags & FLAG_QR != 0 {
        return Err(drop);
    }
    let qd = u16::from_be_bytes([packet[4], packet[5]]);
    let an = u16::from_be_bytes([packet[6], packet[7]]);
    let ns = u16::from_be_bytes([packet[8], packet[9]]);
    let ar = u16::from_be_bytes([packet[10], packet[11]]);

    // The questions: the first is kept when it is the only one; all are
    // walked, so the records (and the OPT) can be found even in a packet
    // we will not answer normally.
    let mut question = None;
    let mut pos = HEADER_LEN;
    let mut readable = true;
    for i in 0..qd {
        let Some(name_end) = question_name_end(packet, pos) else {
            readable = false;
            break;
        };
        let (Some(qtype), Some(_)) = (read_u16(packet, name_end), read_u16(packet, name_end + 2))
        else {
            readable = false;
            break;
        };
        if i == 0 && qd == 1 {
            question = Some(Question {
                bytes: &packet[pos..name_end + 4],
                qname: &packet[pos..name_end],
                qtype,
            });
        }
        pos = name_end + 4;
    }

    // The records, walked for the OPT. A record that does not read ends
    // the walk: an OPT found before it still counts for the echo.
    let mut edns = None;
    let mut opt_ok = true;
    if readable {
        let total = usize::from(an) + usize::from(ns) + usize::from(ar);
        for i in 0..total {
            let Some(rr) = read_record(packet, pos) else {
                readable = false;
                break;
            };
            if rr.rtype == TYPE_OPT {
                let in_additional = i >= usize::from(an) + usize::from(ns);
                let root = packet[pos] == 0;
                // RFC 6891: one OPT, owned by the root, in the additional
                // section; anything else makes the query malformed.
                if edns.is_some() || !root || !in_additional {
                    opt_ok = false;
                }
                if edns.is_none() && root && in_additional {
                    edns = Some(Edns {
                        payload: rr.class,
                        version: (rr.ttl >> 16) as u8,
                        dnssec_ok: rr.ttl as u16 & EDNS_DO != 0,
                    });
                }
            }
            pos = rr.end;
        }
    }

    let reject = |kind| {
        Err(Rejection {
            kind,
            id,
            flags,
            question,
            edns,
        })
    };
    if flags & OPCODE_MASK != 0 {
        return reject(RejectKind::NotImp);
    }
    if qd != 1 || an != 0 || ns != 0 || !readable || !opt_ok || flags & FLAG_TC != 0 {
        return reject(RejectKind::FormErr);
    }
    if edns.is_some_and(|e| e.version > 0) {
        return reject(RejectKind::BadVers);
    }
    let Some(q) = question else {
        return reject(RejectKind::FormErr);
    };
    Ok(Query {
        id,
        flags,
        question: q.bytes,
        qname: q.qname,
        qtype: q.qtype,
        qclass: u16::from_be_bytes([q.bytes[q.bytes.len() - 2], q.bytes[q.bytes.len() - 1]]),
        edns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::{CLASS_IN, TYPE_A, TYPE_AAAA, garbage_packets, put_header};

    fn query(name: &[u8], qtype: u16, opt: Option<(u16, u8, bool)>) -> Vec<u8> {
        let mut q = Vec::new();
        put_header(&mut q, 0x1234, FLAG_RD, [1, 0, 0, u16::from(opt.is_some())]);
        q.extend_from_slice(name);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        if let Some((payload, version, dnssec)) = opt {
            q.push(0);
            q.extend_from_slice(&TYPE_OPT.to_be_bytes());
            q.extend_from_slice(&payload.to_be_bytes());
            q.push(0);
            q.push(version);
            q.extend_from_slice(&(if dnssec { EDNS_DO } else { 0 }).to_be_bytes());
            q.extend_from_slice(&0u16.to_be_bytes());
        }
        q
    }

    const ZOOM: &[u8] = b"\x07US04web\x04zoom\x02us\x00";

    #[test]
    fn parses_a_plain_query() {
        let q = query(ZOOM, TYPE_A, None);
        let p = parse(&q).unwrap();
        assert_eq!(p.id, 0x1234);
        assert_eq!(p.qname, ZOOM);
        assert_eq!(p.qtype, TYPE_A);
        assert_eq!(p.qclass, CLASS_IN);
        assert!(p.edns.is_none());
        assert!(p.rd());
        assert_eq!(p.labels().len(), 3);
    }

    #[test]
    fn parses_edns() {
        let q = query(ZOOM, TYPE_AAAA, Some((4096, 0, true)));
        let e = parse(&q).unwrap().edns.unwrap();
        assert_eq!(
            e,
            Edns {
                payload: 4096,
                version: 0,
                dnssec_ok: true
            }
        );
    }

    fn kind(packet: &[u8]) -> RejectKind {
        parse(packet).unwrap_err().kind
    }

    #[test]
    fn rejects_what_it_should() {
        assert_eq!(kind(&[0; 11]), RejectKind::Drop);
        let mut q = query(ZOOM, TYPE_A, None);
        q[2] |= 0x80;
        assert_eq!(kind(&q), RejectKind::Drop);
        let mut q = query(ZOOM, TYPE_A, None);
        q[2] |= 3 << 3; // opcode 3
        assert_eq!(kind(&q), RejectKind::NotImp);
        let q = query(ZOOM, TYPE_A, Some((1232, 1, false)));
        assert_eq!(kind(&q), RejectKind::BadVers);
        let q = query(ZOOM, TYPE_A, None);
        assert_eq!(kind(&q[..q.len() - 3]), RejectKind::FormErr);
        let q = query(b"\xC0\x0C", TYPE_A, None);
        assert_eq!(kind(&q), RejectKind::FormErr);
        let q = query(b"\x05ab\x00", TYPE_A, None);
        assert_eq!(kind(&q), RejectKind::FormErr);
        let mut q = query(ZOOM, TYPE_A, None);
        q[2] |= (FLAG_TC >> 8) as u8;
        assert_eq!(kind(&q), RejectKind::FormErr);
    }

    #[test]
    fn error_answers_keep_what_parsed() {
        // NOTIMP with EDNS: the question and the OPT are both known.
        let mut q = query(ZOOM, TYPE_A, Some((1232, 0, true)));
        q[2] |= 4 << 3;
        let r = parse(&q).unwrap_err();
        assert_eq!(r.kind, RejectKind::NotImp);
        assert_eq!(r.question.unwrap().qname, ZOOM);
        assert!(r.edns.unwrap().dnssec_ok);
        // BADVERS: the same.
        let q = query(ZOOM, TYPE_A, Some((1232, 1, false)));
        let r = parse(&q).unwrap_err();
        assert_eq!(r.question.unwrap().bytes.len(), ZOOM.len() + 4);
        assert_eq!(r.edns.unwrap().version, 1);
        // TC=1: FORMERR, still with its question.
        let mut q = query(ZOOM, TYPE_A, None);
        q[2] |= (FLAG_TC >> 8) as u8;
        assert!(parse(&q).unwrap_err().question.is_some());
        // Two questions: none to echo, but the OPT behind them is found.
        let mut q = query(ZOOM, TYPE_A, None);
        q[5] = 2;
        q[11] = 1;
        q.extend_from_slice(&query(ZOOM, TYPE_A, Some((1232, 0, false)))[12..]);
        let r = parse(&q).unwrap_err();
        assert_eq!(r.kind, RejectKind::FormErr);
        assert!(r.question.is_none());
        assert!(r.edns.is_some());
    }

    #[test]
    fn never_panics_on_garbage() {
        for p in garbage_packets(300, 50) {
            let _ = parse(&p);
        }
    }
}
