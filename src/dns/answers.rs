//! Stage 6, response: every answer the server sends is written here, into
//! a caller-owned buffer, so a blocked or cached answer allocates nothing.
//!
//! - [`blocked`]: the policy's answer (SPEC's table).
//! - [`forwarded`]: an upstream's answer, fresh or from the cache, with the
//!   client's ID, flags and question and the TTLs counted down.
//! - [`error`]: FORMERR, NOTIMP, BADVERS, REFUSED, SERVFAIL.
//! - [`fit`]: what does not fit the transport goes out truncated.
//!
//! Our OPT record is appended in exactly one place, [`put_our_opt`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::parse::Query;
use super::request::Transport;
use super::wire::{
    CLASS_IN, Edns, FLAG_AD, FLAG_TC, HEADER_LEN, Labels, MAX_MESSAGE_LEN, OPTION_EDE, RCODE_MASK,
    RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_REFUSED, TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_SOA,
    bump_count, put_header, put_opt, response_flags,
};
use crate::policy::{Action, LocalRecord};

/// QTYPE ANY (RFC 8482 lets us answer it with what we have).
const TYPE_ANY: u16 = 255;

/// Our advertised EDNS payload size, and the cap on what we send over UDP
/// (the DNS Flag Day 2020 figure: fits any path MTU without fragmentation).
pub const EDNS_PAYLOAD: u16 = 1232;

/// RFC 8914 INFO-CODEs we use.
pub const EDE_STALE_ANSWER: u16 = 3;
pub const EDE_FORGED_ANSWER: u16 = 4;
pub const EDE_BLOCKED: u16 = 15;
pub const EDE_PROHIBITED: u16 = 18;
pub const EDE_NOT_AUTHORITATIVE: u16 = 20;
pub const EDE_NO_REACHABLE_AUTHORITY: u16 = 22;
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

/// What goes into our OPT besides the basics.
#[derive(Debug, Clone, Copy)]
pub enum Extra<'a> {
    None,
    /// One Extended DNS Error of ours, its text given in parts (joined
    /// without allocating, cut at [`MAX_EDE_TEXT`]).
    Ede {
        code: u16,
        text: &'a [&'a [u8]],
    },
    /// The upstream's own EDE options, as whole TLVs, passed on.
    Relayed(&'a [u8]),
}

/// Appends our OPT (when the query had EDNS) and counts it in ARCOUNT.
pub fn put_our_opt(out: &mut Vec<u8>, edns: Option<Edns>, ext_rcode: u8, extra: Extra<'_>) {
    let Some(edns) = edns else {
        return;
    };
    match extra {
        Extra::None => put_opt(out, EDNS_PAYLOAD, ext_rcode, edns.dnssec_ok, &[]),
        Extra::Relayed(options) => {
            put_opt(out, EDNS_PAYLOAD, ext_rcode, edns.dnssec_ok, &[options])
        }
        Extra::Ede { code, text } => {
            let full: usize = text.iter().map(|t| t.len()).sum();
            let text_len = full.min(MAX_EDE_TEXT);
            let option_len = (2 + text_len) as u16;
            let mut head = [0u8; 6];
            head[..2].copy_from_slice(&OPTION_EDE.to_be_bytes());
            head[2..4].copy_from_slice(&option_len.to_be_bytes());
            head[4..6].copy_from_slice(&code.to_be_bytes());
            put_opt(out, EDNS_PAYLOAD, ext_rcode, edns.dnssec_ok, &[&head]);
            // put_opt counted the head only; count the text, then add it.
            let rdlen_at = out.len() - head.len() - 2;
            out[rdlen_at..rdlen_at + 2].copy_from_slice(&(4 + option_len).to_be_bytes());
            let mut left = text_len;
            for t in text {
                let take = t.len().min(left);
                out.extend_from_slice(&t[..take]);
                left -= take;
            }
        }
    }
    bump_count(out, 10, 1);
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
        // The pipeline answers monitor, drop, tcp-only and local data
        // itself; should one ever arrive here, it is an empty answer.
        Action::Nodata
        | Action::Redirect
        | Action::Monitor
        | Action::Drop
        | Action::TcpOnly
        | Action::Local(_) => RCODE_NOERROR,
    };
    let soa = b.action != Action::Refused && !answer;
    let counts = [1, u16::from(answer), u16::from(soa), 0];
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
        put_soa(out, q, b.rule_depth, style);
    }
    let code = if b.action == Action::Redirect {
        EDE_FORGED_ANSWER
    } else {
        EDE_BLOCKED
    };
    let text: [&[u8]; 4] = [
        b"blocked: category ",
        b.category.as_bytes(),
        b", list ",
        b.list.as_bytes(),
    ];
    put_our_opt(out, q.edns, 0, Extra::Ede { code, text: &text });
}

/// The synthesised SOA of a negative answer: owned by the rule's name
/// (the query's last `rule_depth` labels), TTL and MINIMUM `block.ttl`.
fn put_soa(out: &mut Vec<u8>, q: &Query<'_>, rule_depth: usize, style: &BlockStyle) {
    let labels = Labels::new(q.qname);
    let first = labels.len().saturating_sub(rule_depth);
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

/// RPZ local data (SPEC "RPZ"): the records of the rule's name that the
/// query asks for, as the zone gave them, with `block.ttl` and EDE 4
/// (Forged Answer). A CNAME answers every type (the pipeline then resolves
/// its target); a name with no record of the type gets NODATA and the SOA.
pub fn local(
    out: &mut Vec<u8>,
    q: &Query<'_>,
    records: &[LocalRecord],
    b: &Blocked<'_>,
    style: &BlockStyle,
) {
    out.clear();
    let cname = records.iter().find(|r| r.rtype == TYPE_CNAME);
    let wanted = |r: &&LocalRecord| match cname {
        Some(c) => std::ptr::eq(*r, c),
        None => q.qclass == CLASS_IN && (r.rtype == q.qtype || q.qtype == TYPE_ANY),
    };
    let count = records
        .iter()
        .filter(wanted)
        .count()
        .min(usize::from(u16::MAX));
    let soa = count == 0;
    put_header(
        out,
        q.id,
        response_flags(q.flags, RCODE_NOERROR),
        [1, count as u16, u16::from(soa), 0],
    );
    out.extend_from_slice(q.question);
    for r in records.iter().filter(wanted) {
        out.extend_from_slice(&[0xC0, HEADER_LEN as u8]);
        out.extend_from_slice(&r.rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&style.ttl.to_be_bytes());
        out.extend_from_slice(&(r.rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&r.rdata);
    }
    if soa {
        put_soa(out, q, b.rule_depth, style);
    }
    let text: [&[u8]; 4] = [
        b"local data: category ",
        b.category.as_bytes(),
        b", list ",
        b.list.as_bytes(),
    ];
    put_our_opt(
        out,
        q.edns,
        0,
        Extra::Ede {
            code: EDE_FORGED_ANSWER,
            text: &text,
        },
    );
}

/// RPZ's `rpz-tcp-only.` over UDP: an empty answer with TC=1, so the
/// client asks again over TCP (where the name is resolved as usual).
pub fn tcp_only(out: &mut Vec<u8>, q: &Query<'_>) {
    out.clear();
    let flags = response_flags(q.flags, RCODE_NOERROR) | FLAG_TC;
    put_header(out, q.id, flags, [1, 0, 0, 0]);
    out.extend_from_slice(q.question);
    put_our_opt(out, q.edns, 0, Extra::None);
}

/// An upstream's answer, as validated (fresh) or stored (cached).
#[derive(Debug, Clone, Copy)]
pub struct Upstreamed<'a> {
    /// The message without its OPT record, TTLs sanitised.
    pub msg: &'a [u8],
    /// Where its TTL fields are: two bytes each, little-endian offsets.
    pub ttl_offsets: &'a [u8],
    /// The upstream judged the data authentic (its AD bit).
    pub ad: bool,
    /// The upstream's EDE options (whole TLVs), passed on to the client.
    pub ede: &'a [u8],
}

/// Writes an upstream's answer for `q`: the client's ID, flags and
/// question; the upstream's RCODE, sections, and AD when the client asked
/// for it (AD or DO set, RFC 6840 §5.7); TTLs less `elapsed` seconds.
/// A stale answer (RFC 8767): the stored answer with every TTL set to
/// [`STALE_TTL`] and EDE 3 (Stale Answer), for when no upstream answered.
pub fn stale(out: &mut Vec<u8>, q: &Query<'_>, a: &Upstreamed<'_>, transport: Transport) {
    let text: [&[u8]; 1] = [b"stale answer: no upstream answered"];
    let extra = Extra::Ede {
        code: EDE_STALE_ANSWER,
        text: &text,
    };
    stored(out, q, a, Ttls::All(STALE_TTL), extra, transport);
}

/// The TTL of a stale answer (RFC 8767 §4 suggests 30 s).
pub const STALE_TTL: u32 = 30;

enum Ttls {
    /// Each as stored, less the entry's age in seconds.
    Aged(u32),
    /// Every one this value.
    All(u32),
}

pub fn forwarded(
    out: &mut Vec<u8>,
    q: &Query<'_>,
    a: &Upstreamed<'_>,
    elapsed: u32,
    transport: Transport,
) {
    let extra = if a.ede.is_empty() {
        Extra::None
    } else {
        Extra::Relayed(a.ede)
    };
    stored(out, q, a, Ttls::Aged(elapsed), extra, transport);
}

/// A stored upstream answer for `q`, its TTLs rewritten as `ttls` says.
fn stored(
    out: &mut Vec<u8>,
    q: &Query<'_>,
    a: &Upstreamed<'_>,
    ttls: Ttls,
    extra: Extra<'_>,
    transport: Transport,
) {
    out.clear();
    out.extend_from_slice(a.msg);
    out[0..2].copy_from_slice(&q.id.to_be_bytes());
    let stored = u16::from_be_bytes([out[2], out[3]]);
    let mut flags = response_flags(q.flags, 0) | (stored & RCODE_MASK);
    if a.ad && (q.ad() || q.dnssec_ok()) {
        flags |= FLAG_AD;
    }
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    // The question as this client spelt it (the stored one may differ in case).
    let end = (HEADER_LEN + q.question.len()).min(out.len());
    out[HEADER_LEN..end].copy_from_slice(&q.question[..end - HEADER_LEN]);
    match ttls {
        Ttls::Aged(0) => {}
        Ttls::Aged(elapsed) => {
            for pair in a.ttl_offsets.chunks_exact(2) {
                let at = usize::from(u16::from_le_bytes([pair[0], pair[1]]));
                let ttl = u32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]);
                out[at..at + 4].copy_from_slice(&ttl.saturating_sub(elapsed).to_be_bytes());
            }
        }
        Ttls::All(ttl) => {
            for pair in a.ttl_offsets.chunks_exact(2) {
                let at = usize::from(u16::from_le_bytes([pair[0], pair[1]]));
                out[at..at + 4].copy_from_slice(&ttl.to_be_bytes());
            }
        }
    }
    put_our_opt(out, q.edns, 0, extra);
    fit(out, q.id, q.question, q.edns, transport);
}

/// An error answer: the header, the question when there is one to echo,
/// and our OPT when the query had EDNS. `rcode` may be extended (BADVERS
/// is 16: 0 in the header, 1 in the OPT).
pub fn error(
    out: &mut Vec<u8>,
    id: u16,
    query_flags: u16,
    question: Option<&[u8]>,
    edns: Option<Edns>,
    rcode: u16,
    extra: Extra<'_>,
) {
    out.clear();
    let counts = [u16::from(question.is_some()), 0, 0, 0];
    put_header(
        out,
        id,
        response_flags(query_flags, (rcode & 0xF) as u8),
        counts,
    );
    if let Some(q) = question {
        out.extend_from_slice(q);
    }
    put_our_opt(out, edns, (rcode >> 4) as u8, extra);
}

/// An error answer to a query that parsed: its question and OPT echoed.
pub fn query_error(out: &mut Vec<u8>, q: &Query<'_>, rcode: u8, extra: Extra<'_>) {
    error(
        out,
        q.id,
        q.flags,
        Some(q.question),
        q.edns,
        u16::from(rcode),
        extra,
    );
}

/// The most a UDP answer to this query may carry.
pub fn udp_limit(edns: Option<Edns>) -> usize {
    match edns {
        Some(e) => usize::from(e.payload.clamp(512, EDNS_PAYLOAD)),
        None => 512,
    }
}

/// Makes an answer fit its transport: over UDP the client's limit, over
/// TCP a frame's 65,535 bytes. What does not fit is replaced by the header,
/// question and OPT with TC=1, so the client retries over TCP (or, over
/// TCP, learns the answer was cut).
pub fn fit(out: &mut Vec<u8>, id: u16, question: &[u8], edns: Option<Edns>, transport: Transport) {
    let limit = match transport {
        Transport::Udp => udp_limit(edns),
        Transport::Tcp => MAX_MESSAGE_LEN,
    };
    if out.len() <= limit {
        return;
    }
    let flags = u16::from_be_bytes([out[2], out[3]]) | FLAG_TC;
    out.clear();
    put_header(out, id, flags, [1, 0, 0, 0]);
    out.extend_from_slice(question);
    put_our_opt(out, edns, 0, Extra::None);
}
