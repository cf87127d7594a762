//! Reading sinkhole's answers without sinkhole's wire code: raw header
//! bytes, and hickory-proto for the whole message.

use hickory_proto::op::{Message, MessageType};

pub const HEADER_LEN: usize = 12;
pub const FLAG_QR: u16 = 0x8000;
pub const FLAG_AA: u16 = 0x0400;
pub const FLAG_TC: u16 = 0x0200;
pub const FLAG_RD: u16 = 0x0100;
pub const FLAG_RA: u16 = 0x0080;
pub const FLAG_AD: u16 = 0x0020;
pub const FLAG_CD: u16 = 0x0010;
pub const OPCODE_MASK: u16 = 0x7800;

/// Our own EDNS payload cap (README: at most 1232 over UDP).
pub const MAX_UDP: usize = 1232;

pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Length of the uncompressed question at offset 12 (name, type, class),
/// when there is one that reads: labels of 1..=63 bytes, a root byte, at
/// most 255 bytes of name. A compressed question name has nothing before
/// it to point at, so it is no question for this purpose.
pub fn question_len(packet: &[u8]) -> Option<usize> {
    let mut p = HEADER_LEN;
    loop {
        let len = usize::from(*packet.get(p)?);
        if len == 0 {
            p += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        p += 1 + len;
        if p - HEADER_LEN > 255 {
            return None;
        }
    }
    if p - HEADER_LEN > 255 || p + 4 > packet.len() {
        return None;
    }
    Some(p + 4 - HEADER_LEN)
}

/// The message, when hickory can read it.
pub fn hickory(bytes: &[u8]) -> Option<Message> {
    Message::from_vec(bytes).ok()
}

/// Whether hickory can read `question` at all (a query holding only it):
/// when it cannot, an answer echoing it cannot be read by hickory either,
/// and that is no fault of the answer.
pub fn hickory_reads_question(question: &[u8]) -> bool {
    let mut m = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(question);
    Message::from_vec(&m).is_ok_and(|m| m.queries.len() == 1)
}

/// Every record's TTL, answer, authority and additional (no OPT: hickory
/// keeps that apart).
pub fn ttls(msg: &Message) -> impl Iterator<Item = u32> + '_ {
    msg.answers
        .iter()
        .chain(&msg.authorities)
        .chain(&msg.additionals)
        .map(|r| r.ttl)
}

pub fn record_count(msg: &Message) -> usize {
    msg.answers.len() + msg.authorities.len() + msg.additionals.len()
}

/// What an answer to one client query must show.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The query's ID and flags word, as sent.
    pub id: u16,
    pub flags: u16,
    /// The question the answer must echo byte for byte, when the query
    /// had one that reads (README: "the question is echoed byte for
    /// byte"; error answers "echo the question when it parses").
    pub question: Option<&'a [u8]>,
    /// UDP: the most the answer may carry. `None` over TCP (a frame's
    /// 65,535 bytes).
    pub udp_limit: Option<usize>,
    /// Whether the query asked for AD (AD or DO set), when known.
    pub ad_asked: Option<bool>,
    /// Whether the query had an OPT record, when known.
    pub had_opt: Option<bool>,
    /// Whether hickory must read the answer: not when it carries records
    /// an upstream sent that hickory cannot read (sinkhole checks their
    /// names and lengths, not every type's RDATA).
    pub must_parse: bool,
}

impl Expect<'_> {
    /// The UDP limit a query reads to hickory (README: "capped at the
    /// client's EDNS size (at most 1232; 512 without EDNS)").
    pub fn udp_limit_for(query: Option<&Message>) -> usize {
        match query {
            Some(m) => match &m.edns {
                Some(e) => usize::from(e.max_payload()).clamp(512, MAX_UDP),
                None => 512,
            },
            // Unknown: whatever it had, never more than our cap.
            None => MAX_UDP,
        }
    }
}

/// Checks an answer against what its query promised; returns hickory's
/// reading of it, when hickory can read it.
pub fn check_answer(out: &[u8], e: &Expect<'_>) -> Option<Message> {
    assert!(
        out.len() >= HEADER_LEN,
        "answer shorter than a header: {out:02x?}"
    );
    let id = u16_at(out, 0).unwrap_or_default();
    let flags = u16_at(out, 2).unwrap_or_default();
    let qd = u16_at(out, 4).unwrap_or_default();
    assert_eq!(id, e.id, "answer ID is not the query's");
    assert!(flags & FLAG_QR != 0, "QR not set in an answer");
    assert!(flags & FLAG_RA != 0, "RA not set in an answer");
    assert_eq!(flags & FLAG_AA, 0, "AA set in an answer");
    assert_eq!(
        flags & (OPCODE_MASK | FLAG_RD | FLAG_CD),
        e.flags & (OPCODE_MASK | FLAG_RD | FLAG_CD),
        "opcode, RD and CD not echoed (query flags {:04x}, answer {:04x})",
        e.flags,
        flags
    );
    if flags & FLAG_AD != 0 {
        assert_ne!(
            e.ad_asked,
            Some(false),
            "AD set for a client that asked for none"
        );
    }
    match e.udp_limit {
        Some(limit) => assert!(
            out.len() <= limit,
            "UDP answer of {} bytes over the client's limit {limit}",
            out.len()
        ),
        None => assert!(
            out.len() <= usize::from(u16::MAX),
            "TCP answer over a frame"
        ),
    }
    if let Some(q) = e.question {
        assert_eq!(qd, 1, "the question is not echoed");
        assert_eq!(
            out.get(HEADER_LEN..HEADER_LEN + q.len()),
            Some(q),
            "the echoed question differs from the query's"
        );
    } else {
        // With no question to echo, none may appear.
        assert_eq!(qd, 0, "a question echoed that the query did not have");
    }
    let msg = match Message::from_vec(out) {
        Ok(m) => m,
        Err(err) => {
            let excused = !e.must_parse || e.question.is_some_and(|q| !hickory_reads_question(q));
            assert!(excused, "answer does not parse ({err}): {out:02x?}");
            return None;
        }
    };
    assert_eq!(msg.metadata.id, e.id);
    assert_eq!(msg.metadata.message_type, MessageType::Response);
    assert_eq!(msg.queries.len(), usize::from(qd));
    if let Some(q) = e.question {
        let mut probe = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        probe.extend_from_slice(q);
        if let Some(asked) = hickory(&probe) {
            let (a, b) = (&asked.queries[0], &msg.queries[0]);
            assert_eq!(a.name(), b.name(), "echoed name differs");
            assert_eq!(a.query_type(), b.query_type(), "echoed type differs");
            assert_eq!(a.query_class(), b.query_class(), "echoed class differs");
        }
    }
    if e.had_opt == Some(false) {
        assert!(
            msg.edns.is_none(),
            "OPT in the answer to a query without one"
        );
    }
    Some(msg)
}

/// What [`names_read_rewritten`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewritten {
    No,
    /// A name sinkhole checks (an owner, or in the RDATA of a type whose
    /// names it follows) reaches rewritten bytes: the known issue in
    /// `fuzz/regressions/README.md`.
    Checked,
    /// A name in the RDATA of a type sinkhole passes on as is (SVCB, HTTPS,
    /// NAPTR, TSIG, ANAME: their RFCs forbid compression there, hickory
    /// follows it anyway) reaches them: nothing sinkhole promises.
    Unchecked,
}

/// Whether a name in an upstream `reply` reaches, through a compression
/// pointer, bytes that sinkhole changes between validating the reply and
/// sending it on: the header (ID, flags, ARCOUNT), a record's TTL, or the
/// OPT record it cuts out (everything after it moves up). Such a name
/// reads one way to sinkhole's check and another to the client.
pub fn names_read_rewritten(reply: &[u8], qlen: usize) -> Rewritten {
    let counts: usize = [6, 8, 10]
        .iter()
        .map(|&at| usize::from(u16_at(reply, at).unwrap_or(0)))
        .sum();
    // Pass 1: where the records and their TTLs are, and where OPT starts.
    let mut records = Vec::new();
    let mut ttls = Vec::new();
    let mut opt_at = usize::MAX;
    let mut pos = HEADER_LEN + qlen;
    for _ in 0..counts {
        let Some(after) = skip_name(reply, pos) else {
            break;
        };
        let (Some(rtype), Some(rdlen)) = (u16_at(reply, after), u16_at(reply, after + 8)) else {
            break;
        };
        let rdata_at = after + 10;
        let end = rdata_at + usize::from(rdlen);
        if end > reply.len() {
            break;
        }
        if rtype == 41 {
            opt_at = opt_at.min(pos);
        } else {
            ttls.push(after + 4);
        }
        records.push((pos, rtype, rdata_at, end));
        pos = end;
    }
    let rewritten = |at: usize| {
        at < HEADER_LEN || at >= opt_at || ttls.iter().any(|&t| (t..t + 4).contains(&at))
    };
    // Pass 2: every name a client reads, the bytes its pointers reach.
    let mut found = Rewritten::No;
    for &(start, rtype, rdata_at, end) in &records {
        let mut checked = vec![start];
        let mut unchecked = vec![];
        match rtype {
            2 | 3 | 4 | 5 | 7 | 8 | 9 | 12 | 39 => checked.push(rdata_at),
            15 if end >= rdata_at + 2 => checked.push(rdata_at + 2),
            33 if end >= rdata_at + 6 => checked.push(rdata_at + 6),
            6 | 14 => {
                checked.push(rdata_at);
                if let Some(second) = skip_name(reply, rdata_at) {
                    checked.push(second);
                }
            }
            64 | 65 => unchecked.push(rdata_at + 2),
            250 | 65305 => unchecked.push(rdata_at),
            35 => {
                // Order, preference, three strings, then the name.
                let mut p = rdata_at + 4;
                for _ in 0..3 {
                    p += 1 + usize::from(reply.get(p).copied().unwrap_or(0));
                }
                unchecked.push(p);
            }
            _ => {}
        }
        if checked.into_iter().any(|at| reaches(reply, at, &rewritten)) {
            return Rewritten::Checked;
        }
        if unchecked
            .into_iter()
            .any(|at| at < end && reaches_any(reply, at, &rewritten))
        {
            found = Rewritten::Unchecked;
        }
    }
    found
}

/// As [`reaches`], for a name nobody checked: its own bytes count too
/// (they may run into the next record).
fn reaches_any(msg: &[u8], pos: usize, bad: &dyn Fn(usize) -> bool) -> bool {
    let mut p = pos;
    for _ in 0..128 {
        let Some(&len) = msg.get(p) else {
            return false;
        };
        match len {
            0 => return false,
            1..=63 => p += 1 + usize::from(len),
            _ => return reaches(msg, pos, bad) || bad(p) || bad(p + 1),
        }
    }
    false
}

/// Skips a name without following its pointer.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            1..=63 => pos += 1 + usize::from(len),
            0xC0..=0xFF => return Some(pos + 2),
            _ => return None,
        }
    }
}

/// Whether the name at `pos`, once it follows a pointer, reads a byte for
/// which `bad` holds.
fn reaches(msg: &[u8], mut pos: usize, bad: &dyn Fn(usize) -> bool) -> bool {
    let mut jumped = false;
    for _ in 0..256 {
        let Some(&len) = msg.get(pos) else {
            return false;
        };
        if jumped && bad(pos) {
            return true;
        }
        match len {
            0 => return false,
            1..=63 => {
                let label = pos + 1..pos + 1 + usize::from(len);
                if jumped && label.clone().any(bad) {
                    return true;
                }
                pos = label.end;
            }
            0xC0..=0xFF => {
                if jumped && bad(pos + 1) {
                    return true;
                }
                let Some(&low) = msg.get(pos + 1) else {
                    return false;
                };
                pos = (usize::from(len & 0x3F) << 8) | usize::from(low);
                jumped = true;
            }
            _ => return false,
        }
    }
    false
}
