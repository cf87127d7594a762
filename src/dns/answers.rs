//! Answers the server writes itself: blocked names, errors, truncation.
//!
//! Everything here writes into a caller-owned buffer, so answering a blocked
//! name allocates nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::wire::{
    CLASS_IN, EXT_RCODE_BADVERS, FLAG_TC, HEADER_LEN, Labels, Query, RCODE_NOERROR, RCODE_NXDOMAIN,
    RCODE_REFUSED, TYPE_A, TYPE_AAAA, TYPE_SOA, put_header, put_opt, response_flags,
};
use crate::policy::Action;

/// Our advertised EDNS payload size, and the cap on what we send over UDP
/// (the DNS Flag Day 2020 figure: fits any path MTU without fragmentation).
pub const EDNS_PAYLOAD: u16 = 1232;

/// RFC 8914 INFO-CODEs we use.
pub const EDE_FORGED_ANSWER: u16 = 4;
pub const EDE_BLOCKED: u16 = 15;
pub const EDE_NO_REACHABLE_AUTHORITY: u16 = 22;
const EDE_OPTION: u16 = 15;
/// Longest EXTRA-TEXT we send, so a long category name cannot bloat answers.
const MAX_EDE_TEXT: usize = 200;

/// SOA RNAME of synthesised answers: nobody to mail, on purpose.
const SOA_RNAME: &[u8] = b"\x06nobody\x07invalid\x00";

/// How blocked names are answered, beyond the action.
#[derive(Debug, Clone, Copy)]
pub struct BlockStyle {
    pub ttl: u32,
    pub redirect_v4: Option<Ipv4Addr>,
    pub redirect_v6: Option<Ipv6Addr>,
}

/// What to say about one blocked query.
pub struct Blocked<'a> {
    pub action: Action,
    /// Labels in the matching rule's name (the SOA owner is that suffix).
    pub rule_depth: usize,
    pub category: &'a str,
    pub list: &'a str,
}

/// Writes the answer for a blocked name (SPEC "What a client receives").
pub fn blocked(out: &mut Vec<u8>, q: &Query<'_>, b: &Blocked<'_>, style: &BlockStyle) {
    out.clear();
    let redirect_to: Option<IpAddr> = match (b.action, q.qclass, q.qtype) {
        (Action::Redirect, CLASS_IN, TYPE_A) => style.redirect_v4.map(IpAddr::V4),
        (Action::Redirect, CLASS_IN, TYPE_AAAA) => style.redirect_v6.map(IpAddr::V6),
        _ => None,
    };
    let answer = redirect_to.is_some();
    let rcode = match b.action {
        Action::Nxdomain => RCODE_NXDOMAIN,
        Action::Refused => RCODE_REFUSED,
        Action::Nodata | Action::Redirect => RCODE_NOERROR,
    };
    let soa = b.action != Action::Refused && !answer;
    let counts = [
        1,
        u16::from(answer),
        u16::from(soa),
        u16::from(q.edns.is_some()),
    ];
    put_header(out, q.id, response_flags(q.flags, rcode), counts);
    out.extend_from_slice(q.question);

    if let Some(addr) = redirect_to {
        out.extend_from_slice(&[0xC0, HEADER_LEN as u8]);
        out.extend_from_slice(&q.qtype.to_be_bytes());
        out.extend_from_slice(&q.qclass.to_be_bytes());
        out.extend_from_slice(&style.ttl.to_be_bytes());
        match addr {
            IpAddr::V4(v4) => {
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.extend_from_slice(&16u16.to_be_bytes());
                out.extend_from_slice(&v6.octets());
            }
        }
    }
    if soa {
        let labels = Labels::new(q.qname);
        let first = labels.len().saturating_sub(b.rule_depth);
        let owner_at = if first < labels.len() {
            HEADER_LEN + labels.offset(first)
        } else {
            HEADER_LEN + q.qname.len() - 1 // the root, should a rule ever be empty
        };
        let owner = [0xC0 | (owner_at >> 8) as u8, owner_at as u8];
        out.extend_from_slice(&owner);
        out.extend_from_slice(&TYPE_SOA.to_be_bytes());
        out.extend_from_slice(&q.qclass.to_be_bytes());
        out.extend_from_slice(&style.ttl.to_be_bytes());
        let rdlen = 2 + SOA_RNAME.len() + 20;
        out.extend_from_slice(&(rdlen as u16).to_be_bytes());
        out.extend_from_slice(&owner); // MNAME: the zone itself
        out.extend_from_slice(SOA_RNAME);
        for field in [1u32, 3600, 600, 86400, style.ttl] {
            // serial, refresh, retry, expire, minimum
            out.extend_from_slice(&field.to_be_bytes());
        }
    }
    if let Some(edns) = q.edns {
        let code = if b.action == Action::Redirect {
            EDE_FORGED_ANSWER
        } else {
            EDE_BLOCKED
        };
        put_opt_with_ede(
            out,
            edns.dnssec_ok,
            code,
            &[
                b"blocked: category ",
                b.category.as_bytes(),
                b", list ",
                b.list.as_bytes(),
            ],
        );
    }
}

/// Appends our OPT carrying one Extended DNS Error, its text given in parts
/// (joined without allocating, cut at [`MAX_EDE_TEXT`]).
pub fn put_opt_with_ede(out: &mut Vec<u8>, dnssec_ok: bool, code: u16, text: &[&[u8]]) {
    let full: usize = text.iter().map(|t| t.len()).sum();
    let text_len = full.min(MAX_EDE_TEXT);
    let option_len = 2 + text_len;
    let mut header = [0u8; 6];
    header[..2].copy_from_slice(&EDE_OPTION.to_be_bytes());
    header[2..4].copy_from_slice(&(option_len as u16).to_be_bytes());
    header[4..6].copy_from_slice(&code.to_be_bytes());
    put_opt(out, EDNS_PAYLOAD, 0, dnssec_ok, &[&header]);
    // put_opt wrote rdlen = 6; fix it to include the text, then append it.
    let rdlen_at = out.len() - header.len() - 2;
    out[rdlen_at..rdlen_at + 2].copy_from_slice(&((4 + option_len) as u16).to_be_bytes());
    let mut left = text_len;
    for t in text {
        let take = t.len().min(left);
        out.extend_from_slice(&t[..take]);
        left -= take;
    }
}

/// An error answer to a readable query: the question is echoed, and an OPT
/// added when the query had one. `ede` adds an Extended DNS Error code.
pub fn error(out: &mut Vec<u8>, q: &Query<'_>, rcode: u8, ede: Option<(u16, &str)>) {
    out.clear();
    let counts = [1, 0, 0, u16::from(q.edns.is_some())];
    put_header(out, q.id, response_flags(q.flags, rcode), counts);
    out.extend_from_slice(q.question);
    if let Some(edns) = q.edns {
        match ede {
            Some((code, text)) => put_opt_with_ede(out, edns.dnssec_ok, code, &[text.as_bytes()]),
            None => put_opt(out, EDNS_PAYLOAD, 0, edns.dnssec_ok, &[]),
        }
    }
}

/// An error answer to a packet whose question could not be read: the header
/// alone (FORMERR, NOTIMP), or with our OPT for BADVERS.
pub fn header_only(out: &mut Vec<u8>, id: u16, query_flags: u16, rcode: u8, badvers: bool) {
    out.clear();
    put_header(
        out,
        id,
        response_flags(query_flags, rcode),
        [0, 0, 0, u16::from(badvers)],
    );
    if badvers {
        put_opt(out, EDNS_PAYLOAD, EXT_RCODE_BADVERS, false, &[]);
    }
}

/// The most a UDP answer to this query may carry.
pub fn udp_limit(q: &Query<'_>) -> usize {
    match q.edns {
        Some(e) => usize::from(e.payload.clamp(512, EDNS_PAYLOAD)),
        None => 512,
    }
}

/// Replaces an answer that does not fit with header + question (+ OPT) and
/// TC=1, so the client retries over TCP.
pub fn truncate(out: &mut Vec<u8>, q: &Query<'_>) {
    let flags = u16::from_be_bytes([out[2], out[3]]) | FLAG_TC;
    out.clear();
    put_header(out, q.id, flags, [1, 0, 0, u16::from(q.edns.is_some())]);
    out.extend_from_slice(q.question);
    if let Some(edns) = q.edns {
        put_opt(out, EDNS_PAYLOAD, 0, edns.dnssec_ok, &[]);
    }
}
