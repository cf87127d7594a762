//! RPZ local data that is a CNAME to another name (SPEC "RPZ"): the target
//! is resolved like any name (the policy, the cache, the upstreams) and its
//! answer is appended after our CNAME.
//!
//! The target's answer is first written as an answer of its own (for the
//! target's question, by the usual writers), then [`compose`] rewrites it
//! for the client: the client's ID, flags and question, our CNAME, and the
//! target's records with every name written out in full. Expanding the
//! names is what makes this safe: the target's message compressed its
//! names against its own layout, which moves when the question changes.
//! This is a rare path (an RPZ rewrite), so it may allocate; the common
//! paths never come here.

use super::answers::{Extra, put_our_opt};
use super::parse::Query;
use super::wire::{
    FLAG_AD, FLAG_TC, HEADER_LEN, MAX_NAME_LEN, RCODE_MASK, TYPE_CNAME, TYPE_MX, TYPE_NS, TYPE_PTR,
    TYPE_SOA, TYPE_SRV, put_header, read_u16, response_flags,
};
use crate::policy::LocalRecord;

/// The most questions a name can be [`MAX_NAME_LEN`] plus type and class.
pub const MAX_TARGET_QUESTION: usize = MAX_NAME_LEN + 4;

/// The target of a rule's CNAME local data, when it has one and the query
/// wants more than the CNAME itself.
pub fn target(records: &[LocalRecord], qtype: u16) -> Option<&[u8]> {
    const TYPE_ANY: u16 = 255;
    if qtype == TYPE_CNAME || qtype == TYPE_ANY {
        return None;
    }
    records
        .iter()
        .find(|r| r.rtype == TYPE_CNAME)
        .map(|r| &*r.rdata)
}

/// Writes the target's question (its wire name, the client's type and
/// class) into `buf`; returns its length, or `None` for a bad target.
pub fn target_question(target: &[u8], q: &Query<'_>, buf: &mut [u8]) -> Option<usize> {
    let len = target.len();
    if len == 0 || len > MAX_NAME_LEN || len + 4 > buf.len() {
        return None;
    }
    buf[..len].copy_from_slice(target);
    buf[len..len + 2].copy_from_slice(&q.qtype.to_be_bytes());
    buf[len + 2..len + 4].copy_from_slice(&q.qclass.to_be_bytes());
    Some(len + 4)
}

/// The client's answer: `target_answer` (an answer for the target's
/// question, without OPT) behind our CNAME from the client's name to
/// `target` with `ttl`, then our OPT with `extra`. AD is never set: part
/// of this answer is ours. Returns `false` if `target_answer` does not
/// read (the caller answers SERVFAIL).
pub fn compose(
    out: &mut Vec<u8>,
    client: &Query<'_>,
    target: &[u8],
    ttl: u32,
    target_answer: &[u8],
    extra: Extra<'_>,
) -> bool {
    out.clear();
    let Some(header) = target_answer.get(..HEADER_LEN) else {
        return false;
    };
    let rcode = (u16::from_be_bytes([header[2], header[3]]) & RCODE_MASK) as u8;
    let flags = response_flags(client.flags, rcode)
        | (u16::from_be_bytes([header[2], header[3]]) & FLAG_TC);
    let counts = [4, 6, 8, 10].map(|at| read_u16(header, at).unwrap_or(0));
    put_header(
        out,
        client.id,
        flags & !FLAG_AD,
        [1, counts[1].saturating_add(1), counts[2], counts[3]],
    );
    out.extend_from_slice(client.question);
    // Our CNAME: the client's name (by pointer) to the target.
    out.extend_from_slice(&[0xC0, HEADER_LEN as u8]);
    out.extend_from_slice(&TYPE_CNAME.to_be_bytes());
    out.extend_from_slice(&client.qclass.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(target.len() as u16).to_be_bytes());
    out.extend_from_slice(target);
    // The target's records, after its own question.
    let Some(mut pos) = skip_question(target_answer) else {
        return false;
    };
    let records: u32 = counts[1..].iter().map(|c| u32::from(*c)).sum();
    for _ in 0..records {
        match copy_record(target_answer, pos, out) {
            Some(next) => pos = next,
            None => return false,
        }
    }
    put_our_opt(out, client.edns, 0, extra);
    true
}

fn skip_question(msg: &[u8]) -> Option<usize> {
    if read_u16(msg, 4)? != 1 {
        return None;
    }
    let mut scratch = Vec::new();
    let end = expand_name(msg, HEADER_LEN, &mut scratch)?;
    Some(end + 4)
}

/// Copies one record at `pos`, names expanded; returns where the next
/// record starts.
fn copy_record(msg: &[u8], pos: usize, out: &mut Vec<u8>) -> Option<usize> {
    let p = expand_name(msg, pos, out)?;
    let rtype = read_u16(msg, p)?;
    let fixed = msg.get(p..p + 8)?; // type, class, TTL
    let rdlen = usize::from(read_u16(msg, p + 8)?);
    let rdata_at = p + 10;
    let end = rdata_at + rdlen;
    let rdata = msg.get(rdata_at..end)?;
    out.extend_from_slice(fixed);
    let len_at = out.len();
    out.extend_from_slice(&[0, 0]);
    let start = out.len();
    // Types whose RDATA may hold compressed names (RFC 1035, RFC 2782):
    // the names are written out; every other type is copied as is (RFC
    // 3597 forbids compression in the RDATA of newer types).
    let (prefix, names, suffix) = match rtype {
        TYPE_CNAME | TYPE_NS | TYPE_PTR => (0, 1, 0),
        TYPE_MX => (2, 1, 0),
        TYPE_SRV => (6, 1, 0),
        TYPE_SOA => (0, 2, 20),
        _ => (rdlen, 0, 0),
    };
    out.extend_from_slice(rdata.get(..prefix)?);
    let mut at = rdata_at + prefix;
    for _ in 0..names {
        at = expand_name(msg, at, out)?;
    }
    let rest = msg.get(at..at + suffix)?;
    out.extend_from_slice(rest);
    if names > 0 && at + suffix != end {
        return None;
    }
    let written = u16::try_from(out.len() - start).ok()?;
    out[len_at..len_at + 2].copy_from_slice(&written.to_be_bytes());
    Some(end)
}

/// Appends the name at `pos` in full (pointers followed, strictly
/// backwards, at most 255 bytes); returns the offset just after it where
/// it starts.
fn expand_name(msg: &[u8], pos: usize, out: &mut Vec<u8>) -> Option<usize> {
    let mut p = pos;
    let mut end = None;
    let mut limit = pos;
    let mut written = 0usize;
    loop {
        let len = *msg.get(p)?;
        match len {
            0 => {
                out.push(0);
                return Some(end.unwrap_or(p + 1));
            }
            1..=63 => {
                let label = msg.get(p..p + 1 + usize::from(len))?;
                written += label.len();
                if written + 1 > MAX_NAME_LEN {
                    return None;
                }
                out.extend_from_slice(label);
                p += label.len();
            }
            0xC0..=0xFF => {
                let target = (usize::from(len & 0x3F) << 8) | usize::from(*msg.get(p + 1)?);
                end.get_or_insert(p + 2);
                if target >= limit {
                    return None;
                }
                limit = target;
                p = target;
            }
            _ => return None,
        }
    }
}

/// Reads the TTL of a record for tests.
#[cfg(test)]
fn first_answer_ttl(msg: &[u8]) -> Option<u32> {
    use super::wire::read_u32;
    let q = skip_question(msg)?;
    let mut scratch = Vec::new();
    let p = expand_name(msg, q, &mut scratch)?;
    read_u32(msg, p + 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::{TYPE_A, put_header};

    fn name(text: &str) -> Vec<u8> {
        let mut v = Vec::new();
        for l in text.split('.') {
            v.push(l.len() as u8);
            v.extend_from_slice(l.as_bytes());
        }
        v.push(0);
        v
    }

    #[test]
    fn the_targets_records_follow_our_cname_with_names_expanded() {
        // The target's answer: www.target.test CNAME edge.target.test (by
        // pointer into its own question), edge.target.test A 192.0.2.7.
        let mut t = Vec::new();
        put_header(&mut t, 1, 0x8180, [1, 2, 0, 0]);
        t.extend_from_slice(&name("www.target.test"));
        t.extend_from_slice(&[0, 1, 0, 1]);
        t.extend_from_slice(&[0xC0, 12, 0, 5, 0, 1, 0, 0, 1, 44, 0, 7]);
        t.extend_from_slice(&[4, b'e', b'd', b'g', b'e', 0xC0, 16]);
        let edge = t.len() - 7;
        t.extend_from_slice(&[
            0xC0, edge as u8, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7,
        ]);
        assert_eq!(first_answer_ttl(&t), Some(300));

        let mut question = name("Blocked.Example");
        let qname_len = question.len();
        question.extend_from_slice(&[0, 1, 0, 1]);
        let client = Query {
            id: 0xBEEF,
            flags: 0x0100,
            question: &question,
            qname: &question[..qname_len],
            qtype: TYPE_A,
            qclass: 1,
            edns: None,
        };
        let target = name("www.target.test");
        let mut out = Vec::new();
        assert!(compose(&mut out, &client, &target, 60, &t, Extra::None));
        let msg = hickory_proto::op::Message::from_vec(&out).unwrap();
        assert_eq!(msg.metadata.id, 0xBEEF);
        let answers: Vec<String> = msg.answers.iter().map(|r| r.to_string()).collect();
        assert_eq!(answers.len(), 3, "{answers:?}");
        assert!(
            answers[0].starts_with("Blocked.Example. 60 IN CNAME www.target.test."),
            "{answers:?}"
        );
        assert!(
            answers[1].contains("CNAME edge.target.test."),
            "{answers:?}"
        );
        assert!(
            answers[2].starts_with("edge.target.test. 60 IN A 192.0.2.7"),
            "{answers:?}"
        );
    }

    #[test]
    fn junk_does_not_compose() {
        let question = name("a.test");
        let client = Query {
            id: 1,
            flags: 0x0100,
            question: &question,
            qname: &question,
            qtype: TYPE_A,
            qclass: 1,
            edns: None,
        };
        let mut out = Vec::new();
        assert!(!compose(
            &mut out,
            &client,
            &name("b.test"),
            60,
            b"\x00\x01",
            Extra::None
        ));
        let mut loop_msg = Vec::new();
        put_header(&mut loop_msg, 1, 0x8180, [1, 1, 0, 0]);
        loop_msg.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert!(!compose(
            &mut out,
            &client,
            &name("b.test"),
            60,
            &loop_msg,
            Extra::None
        ));
    }
}
