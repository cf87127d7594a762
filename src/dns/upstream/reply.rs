//! Validation of an upstream's reply, all of it, before anyone sees it.
//!
//! A reply is taken only when it answers the query we sent (ID, QR, opcode,
//! the one question) and every record in it reads: owner names and the
//! names inside RDATA that may be compressed (RFC 3597 §4's list, plus SRV
//! and DNAME, which some servers compress anyway) are followed through
//! their pointers by [`Labels`], which refuses loops and forward pointers,
//! and takes a pointer only when it lands where an earlier name's label
//! starts. The copy we keep differs from the reply (TTLs rewritten, OPT
//! cut out, a client's own header): a pointer into the header, a TTL or
//! past a cut OPT would read other bytes in the copy than were checked
//! here (the upstream_answer fuzz target found each). Anything else is
//! malformed, and the query moves on to the next upstream.
//!
//! What is kept is a copy fit for clients and the cache: the OPT record cut
//! out (wherever it sits in the additional section), its EDE options kept
//! aside to pass on; every TTL made sane (RFC 2181 §8: a TTL with the top
//! bit set means zero; none above [`MAX_TTL`]); a negative answer's SOA
//! served with its negative TTL (RFC 2308 §5); and how long it may be
//! cached.

use crate::dns::cache::MAX_TTL;
use crate::dns::wire::{
    FLAG_AD, FLAG_QR, FLAG_TC, HEADER_LEN, NameWalk, OPCODE_MASK, OPTION_EDE, RCODE_MASK,
    RCODE_NOERROR, RCODE_NXDOMAIN, RecordPos, TYPE_CNAME, TYPE_DNAME, TYPE_MX, TYPE_NS, TYPE_OPT,
    TYPE_PTR, TYPE_SOA, TYPE_SRV, bump_count, read_u16, read_u32, record_after_owner, walk_name,
};

/// Why a reply was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Not an answer to what we asked: another ID or question (a stray or
    /// spoofed datagram). Ignored; the query keeps waiting.
    #[error("reply does not match the query")]
    Mismatch,
    /// Answers our query but cannot be read (or lies about its length).
    #[error("malformed reply")]
    Malformed,
    /// Our ID, but no question and an error RCODE (FORMERR, SERVFAIL,
    /// NOTIMP, REFUSED): a server may leave the question out of an error
    /// answer. The server is alive; the query moves on.
    #[error("error reply without a question")]
    BareError,
}

/// A reply that passed, in a buffer reused from query to query.
#[derive(Debug, Default)]
pub struct Validated {
    /// The message without OPT, TTLs sanitised.
    pub msg: Vec<u8>,
    /// Offsets of the TTL fields in `msg`, two little-endian bytes each.
    pub ttl_offsets: Vec<u8>,
    /// The upstream's EDE options, whole TLVs.
    pub ede: Vec<u8>,
    /// RCODE with its extended bits (from OPT).
    pub rcode: u16,
    pub ad: bool,
    /// How long it may be cached; `None` when it may not.
    pub cache_ttl: Option<u32>,
    /// Scratch: where labels start in the reply being checked.
    labels: Vec<u64>,
}

/// The label starts of the names read so far in one reply, one bit per
/// byte, and where an OPT record was cut out (a pointer may not reach it or
/// past it: the copy has those bytes elsewhere).
struct Labels<'a> {
    bits: &'a mut Vec<u64>,
    cut: Option<usize>,
}

impl<'a> Labels<'a> {
    fn new(bits: &'a mut Vec<u64>, len: usize) -> Self {
        bits.clear();
        bits.resize(len.div_ceil(64), 0);
        Self { bits, cut: None }
    }

    fn mark(&mut self, at: usize) {
        if let Some(w) = self.bits.get_mut(at / 64) {
            *w |= 1 << (at % 64);
        }
    }

    fn is_start(&self, at: usize) -> bool {
        self.bits
            .get(at / 64)
            .is_some_and(|w| w & (1 << (at % 64)) != 0)
    }

    /// Reads the name at `pos` (marking its labels); returns where it ends
    /// in place. `None` for a name that does not read, is too long, or
    /// points anywhere but backwards at an earlier label start (before any
    /// cut OPT).
    fn walk(&mut self, msg: &[u8], pos: usize) -> Option<usize> {
        walk_name(msg, pos, self)
    }
}

impl NameWalk for Labels<'_> {
    #[inline]
    fn own_label(&mut self, at: usize) {
        self.mark(at);
    }

    #[inline]
    fn may_point_to(&self, target: usize) -> bool {
        self.is_start(target) && self.cut.is_none_or(|c| target < c)
    }
}

impl Validated {
    /// Is this an answer to stop at (NOERROR or NXDOMAIN)? Anything else
    /// (SERVFAIL, REFUSED, NOTIMP, FORMERR, ...) moves on to the next server.
    pub fn is_final(&self) -> bool {
        self.rcode == u16::from(RCODE_NOERROR) || self.rcode == u16::from(RCODE_NXDOMAIN)
    }
}

/// Checks that `reply` answers our query `id` for `question` (compared
/// without regard to case) and says nothing else about it. Returns whether
/// the reply is truncated (TC).
pub fn matches(reply: &[u8], id: u16, question: &[u8]) -> Result<bool, Rejected> {
    if reply.len() < HEADER_LEN {
        return Err(Rejected::Mismatch);
    }
    let flags = u16::from_be_bytes([reply[2], reply[3]]);
    if read_u16(reply, 0) == Some(id)
        && flags & FLAG_QR != 0
        && flags & OPCODE_MASK == 0
        && read_u16(reply, 4) == Some(0)
        && matches!(flags & RCODE_MASK, 1 | 2 | 4 | 5)
    {
        return Err(Rejected::BareError);
    }
    if reply.len() < HEADER_LEN + question.len()
        || read_u16(reply, 0) != Some(id)
        || flags & FLAG_QR == 0
        || flags & OPCODE_MASK != 0
        || read_u16(reply, 4) != Some(1)
        || !same_question(&reply[HEADER_LEN..HEADER_LEN + question.len()], question)
    {
        return Err(Rejected::Mismatch);
    }
    Ok(flags & FLAG_TC != 0)
}

/// The same question: the name without regard to case, type and class
/// byte for byte (0x0041 and 0x0061 are different types, not one in two
/// cases).
fn same_question(theirs: &[u8], ours: &[u8]) -> bool {
    let name = ours.len().saturating_sub(4);
    theirs.len() == ours.len()
        && theirs[..name].eq_ignore_ascii_case(&ours[..name])
        && theirs[name..] == ours[name..]
}

/// Validates a whole (untruncated) reply that [`matches`] accepted, into
/// `out`.
pub fn validate(reply: &[u8], question_len: usize, out: &mut Validated) -> Result<(), Rejected> {
    let malformed = Rejected::Malformed;
    let flags = read_u16(reply, 2).ok_or(malformed)?;
    let an = usize::from(read_u16(reply, 6).ok_or(malformed)?);
    let ns = usize::from(read_u16(reply, 8).ok_or(malformed)?);
    let ar = usize::from(read_u16(reply, 10).ok_or(malformed)?);
    let mut pos = HEADER_LEN + question_len;
    if reply.len() < pos {
        return Err(malformed);
    }
    out.msg.clear();
    out.ttl_offsets.clear();
    out.ede.clear();
    out.msg.extend_from_slice(&reply[..pos]);
    let mut labels = Labels::new(&mut out.labels, reply.len());
    // The question's name: what answers most often point at.
    if labels.walk(reply, HEADER_LEN) != Some(pos - 4) {
        return Err(malformed);
    }

    let mut min_ttl = u32::MAX;
    let mut soa: Option<(u32, u32, usize)> = None; // (ttl, minimum, ttl offset in msg)
    let mut ext_rcode = 0u8;
    let mut seen_opt = false;
    for i in 0..an + ns + ar {
        let owner_end = labels.walk(reply, pos).ok_or(malformed)?;
        let rr = record_after_owner(reply, pos, owner_end).ok_or(malformed)?;
        let section = if i < an {
            Section::Answer
        } else if i < an + ns {
            Section::Authority
        } else {
            Section::Additional
        };
        if rr.rtype == TYPE_OPT {
            // RFC 6891: one OPT, owned by the root, in the additional
            // section (anywhere in it).
            if seen_opt || section != Section::Additional || reply[pos] != 0 {
                return Err(malformed);
            }
            seen_opt = true;
            labels.cut = Some(pos);
            ext_rcode = (rr.ttl >> 24) as u8;
            keep_ede(&reply[rr.rdata_at..rr.end], &mut out.ede).ok_or(malformed)?;
            pos = rr.end;
            continue;
        }
        check_rdata(reply, &rr, &mut labels).ok_or(malformed)?;
        // The record, copied as is but for its TTL.
        let at = out.msg.len();
        out.msg.extend_from_slice(&reply[pos..rr.end]);
        let ttl_at = at + (rr.ttl_at - pos);
        let ttl = sane_ttl(rr.ttl);
        out.msg[ttl_at..ttl_at + 4].copy_from_slice(&ttl.to_be_bytes());
        let ttl_at16 = u16::try_from(ttl_at).map_err(|_| malformed)?;
        out.ttl_offsets.extend_from_slice(&ttl_at16.to_le_bytes());
        min_ttl = min_ttl.min(ttl);
        if section == Section::Authority && rr.rtype == TYPE_SOA && soa.is_none() {
            let minimum = read_u32(reply, rr.end - 4).ok_or(malformed)?;
            soa = Some((ttl, sane_ttl(minimum), ttl_at));
        }
        pos = rr.end;
    }
    if seen_opt {
        bump_count(&mut out.msg, 10, -1);
    }

    let rcode = (flags & RCODE_MASK) as u8;
    out.rcode = u16::from(ext_rcode) << 4 | u16::from(rcode);
    out.ad = flags & FLAG_AD != 0;
    let negative = out.rcode == u16::from(RCODE_NXDOMAIN)
        || (out.rcode == u16::from(RCODE_NOERROR) && an == 0);
    let mut negative_ttl = None;
    if negative && let Some((ttl, minimum, at)) = soa {
        // RFC 2308 §5: the SOA of a negative answer is served with the
        // negative TTL, or clients would keep the denial for the SOA's TTL.
        let t = ttl.min(minimum);
        out.msg[at..at + 4].copy_from_slice(&t.to_be_bytes());
        negative_ttl = Some(t);
    }
    let cacheable = flags & FLAG_TC == 0 && out.is_final();
    out.cache_ttl = if !cacheable {
        None
    } else if negative {
        negative_ttl
    } else {
        Some(min_ttl)
    }
    .filter(|t| *t > 0 && *t != u32::MAX);
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Answer,
    Authority,
    Additional,
}

/// RFC 2181 §8: a TTL with the top bit set is zero; and none above the
/// cache's ceiling.
fn sane_ttl(ttl: u32) -> u32 {
    if ttl & 0x8000_0000 != 0 {
        0
    } else {
        ttl.min(MAX_TTL)
    }
}

/// The names inside RDATA that a client will decompress must read, and the
/// RDATA must hold exactly what its type says.
fn check_rdata(msg: &[u8], rr: &RecordPos, labels: &mut Labels<'_>) -> Option<()> {
    let (start, end) = (rr.rdata_at, rr.end);
    // A name at `at`, then exactly `fixed` bytes to the RDATA's end.
    let mut name_then = |at: usize, fixed: usize| -> Option<usize> {
        let after = labels.walk(msg, at)?;
        (fixed == usize::MAX || after + fixed == end).then_some(after)
    };
    match rr.rtype {
        TYPE_NS | TYPE_CNAME | TYPE_PTR | TYPE_DNAME | 3 | 4 | 7 | 8 | 9 => {
            name_then(start, 0).map(drop)
        }
        TYPE_MX => (end >= start + 2)
            .then_some(())
            .and_then(|_| name_then(start + 2, 0).map(drop)),
        TYPE_SRV => (end >= start + 6)
            .then_some(())
            .and_then(|_| name_then(start + 6, 0).map(drop)),
        // SOA: MNAME, RNAME and 20 bytes; MINFO: two names.
        TYPE_SOA | 14 => {
            let fixed = if rr.rtype == TYPE_SOA { 20 } else { 0 };
            let second = name_then(start, usize::MAX)?;
            name_then(second, fixed).map(drop)
        }
        _ => Some(()),
    }
}

/// Copies the EDE options out of OPT's RDATA; `None` when the options do
/// not add up to the RDATA's length.
fn keep_ede(rdata: &[u8], ede: &mut Vec<u8>) -> Option<()> {
    let mut p = 0;
    while p < rdata.len() {
        let code = read_u16(rdata, p)?;
        let len = usize::from(read_u16(rdata, p + 2)?);
        let end = p + 4 + len;
        if end > rdata.len() {
            return None;
        }
        if code == OPTION_EDE && len >= 2 {
            ede.extend_from_slice(&rdata[p..end]);
        }
        p = end;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::{
        CLASS_IN, FLAG_RA, FLAG_RD, TYPE_A, garbage_packets, put_header, put_opt,
    };

    const NAME: &[u8] = b"\x03www\x07example\x00";

    fn question() -> Vec<u8> {
        let mut q = NAME.to_vec();
        q.extend_from_slice(&TYPE_A.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    fn a_record(r: &mut Vec<u8>, ttl: u32) {
        r.extend_from_slice(&[0xC0, 12]);
        r.extend_from_slice(&TYPE_A.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&[192, 0, 2, 1]);
    }

    /// An answer with one A record of `ttl`, and an OPT first or last.
    fn reply(ttl: u32, opt_first: bool) -> Vec<u8> {
        let mut r = Vec::new();
        put_header(
            &mut r,
            99,
            FLAG_QR | FLAG_RD | FLAG_RA | FLAG_AD,
            [1, 1, 0, 2],
        );
        r.extend_from_slice(&question());
        a_record(&mut r, ttl);
        if opt_first {
            put_opt(&mut r, 4096, 0, false, &[]);
        }
        a_record(&mut r, ttl); // an additional record
        if !opt_first {
            put_opt(&mut r, 4096, 0, false, &[&[0, 15, 0, 3, 0, 6, b'x']]);
        }
        r
    }

    fn check(r: &[u8]) -> Result<Validated, Rejected> {
        let mut v = Validated::default();
        matches(r, 99, &question())?;
        validate(r, question().len(), &mut v).map(|()| v)
    }

    /// One answer: a CNAME whose target is a pointer to `target`.
    fn cname_to(target: u16) -> Vec<u8> {
        let mut r = Vec::new();
        put_header(&mut r, 99, FLAG_QR | FLAG_RD | FLAG_RA, [1, 1, 0, 0]);
        r.extend_from_slice(&question());
        r.extend_from_slice(&[0xC0, 12]);
        r.extend_from_slice(&TYPE_CNAME.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&300u32.to_be_bytes());
        r.extend_from_slice(&2u16.to_be_bytes());
        r.extend_from_slice(&[0xC0 | (target >> 8) as u8, target as u8]);
        r
    }

    #[test]
    fn a_pointer_may_land_only_on_an_earlier_label() {
        // Onto the question's name and its labels: fine.
        assert!(check(&cname_to(12)).is_ok());
        assert!(check(&cname_to(16)).is_ok(), "example. inside www.example.");
        // Into the header (flags, counts), a type, the TTL we rewrite, or
        // the middle of a label: each would read other bytes in our copy.
        let q_end = 12 + question().len();
        let ttl_at = q_end + 2 + 4;
        for target in [2u16, 6, 10, (q_end - 3) as u16, ttl_at as u16, 13] {
            assert_eq!(
                check(&cname_to(target)).unwrap_err(),
                Rejected::Malformed,
                "pointer to {target}"
            );
        }
    }

    #[test]
    fn a_pointer_past_a_cut_opt_is_refused() {
        // Additional: OPT, then an A record owned by "mail.example." and a
        // second whose owner points at the first's (after the OPT, whose
        // bytes our copy drops).
        let mut r = Vec::new();
        put_header(&mut r, 99, FLAG_QR | FLAG_RD | FLAG_RA, [1, 0, 0, 3]);
        r.extend_from_slice(&question());
        put_opt(&mut r, 1232, 0, false, &[]);
        let owner = r.len() as u16;
        r.extend_from_slice(b"\x04mail\xC0\x10"); // mail + pointer to example.
        for ptr in [None, Some(owner)] {
            if let Some(p) = ptr {
                r.extend_from_slice(&[0xC0 | (p >> 8) as u8, p as u8]);
            }
            r.extend_from_slice(&TYPE_A.to_be_bytes());
            r.extend_from_slice(&CLASS_IN.to_be_bytes());
            r.extend_from_slice(&300u32.to_be_bytes());
            r.extend_from_slice(&4u16.to_be_bytes());
            r.extend_from_slice(&[192, 0, 2, 25]);
        }
        assert_eq!(check(&r).unwrap_err(), Rejected::Malformed);
        // The same without the second record's pointer past OPT reads.
        let cut = r.len() - 16;
        r.truncate(cut);
        r[11] = 2;
        assert!(check(&r).is_ok());
    }

    #[test]
    fn strips_opt_keeps_ede_and_finds_ttls() {
        let v = check(&reply(300, false)).unwrap();
        assert_eq!(v.cache_ttl, Some(300));
        assert_eq!(v.ttl_offsets.len(), 4);
        assert_eq!(read_u16(&v.msg, 10), Some(1), "OPT gone from ARCOUNT");
        assert_eq!(v.ede, [0, 15, 0, 3, 0, 6, b'x']);
        assert!(v.ad && v.is_final());
    }

    #[test]
    fn opt_anywhere_in_the_additional_section_is_fine() {
        let v = check(&reply(300, true)).unwrap();
        assert_eq!(read_u16(&v.msg, 10), Some(1));
        assert_eq!(v.cache_ttl, Some(300));
        // The additional A record survived whole.
        assert_eq!(v.msg.len(), HEADER_LEN + question().len() + 2 * 16);
    }

    #[test]
    fn ttls_are_made_sane() {
        let v = check(&reply(u32::MAX, false)).unwrap();
        let at = usize::from(u16::from_le_bytes([v.ttl_offsets[0], v.ttl_offsets[1]]));
        assert_eq!(read_u32(&v.msg, at), Some(0), "top bit set means zero");
        assert_eq!(v.cache_ttl, None, "nothing to cache for 0 s");
        let v = check(&reply(1 << 30, false)).unwrap();
        assert_eq!(read_u32(&v.msg, at), Some(MAX_TTL));
        assert_eq!(v.cache_ttl, Some(MAX_TTL));
    }

    #[test]
    fn a_compression_loop_is_malformed() {
        let mut r = Vec::new();
        put_header(&mut r, 99, FLAG_QR | FLAG_RA, [1, 1, 0, 0]);
        r.extend_from_slice(&question());
        let at = r.len();
        // A CNAME whose owner is fine and whose target points at itself.
        r.extend_from_slice(&[0xC0, 12]);
        r.extend_from_slice(&TYPE_CNAME.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&60u32.to_be_bytes());
        r.extend_from_slice(&2u16.to_be_bytes());
        let target = at + 12;
        r.extend_from_slice(&[0xC0 | (target >> 8) as u8, target as u8]);
        assert_eq!(check(&r).unwrap_err(), Rejected::Malformed);
        // And an owner that loops.
        let mut r2 = Vec::new();
        put_header(&mut r2, 99, FLAG_QR | FLAG_RA, [1, 1, 0, 0]);
        r2.extend_from_slice(&question());
        let own = r2.len();
        r2.extend_from_slice(&[0xC0 | (own >> 8) as u8, own as u8]);
        r2.extend_from_slice(&[0; 10]);
        assert_eq!(check(&r2).unwrap_err(), Rejected::Malformed);
    }

    #[test]
    fn another_question_or_id_is_a_mismatch() {
        let r = reply(60, false);
        assert_eq!(matches(&r, 98, &question()), Err(Rejected::Mismatch));
        let mut other = question();
        other[1] = b'x';
        assert_eq!(matches(&r, 99, &other), Err(Rejected::Mismatch));
        // Case does not matter in the name, but does in the type's bytes.
        let mut upper = question();
        upper[1] = b'W';
        assert_eq!(matches(&r, 99, &upper), Ok(false));
        let mut ours = NAME.to_vec();
        ours.extend_from_slice(&[0x00, 0x41, 0x00, 0x01]);
        let mut theirs = Vec::new();
        put_header(&mut theirs, 99, FLAG_QR, [1, 0, 0, 0]);
        theirs.extend_from_slice(NAME);
        theirs.extend_from_slice(&[0x00, 0x61, 0x00, 0x01]);
        assert_eq!(matches(&theirs, 99, &ours), Err(Rejected::Mismatch));
    }

    #[test]
    fn an_error_without_the_question_is_told_apart() {
        for rcode in [1u16, 2, 4, 5] {
            let mut r = Vec::new();
            put_header(&mut r, 99, FLAG_QR | rcode, [0, 0, 0, 0]);
            assert_eq!(matches(&r, 99, &question()), Err(Rejected::BareError));
            assert_eq!(matches(&r, 98, &question()), Err(Rejected::Mismatch));
        }
        // NOERROR or NXDOMAIN without the question answers nothing.
        for rcode in [0u16, 3] {
            let mut r = Vec::new();
            put_header(&mut r, 99, FLAG_QR | rcode, [0, 0, 0, 0]);
            assert_eq!(matches(&r, 99, &question()), Err(Rejected::Mismatch));
        }
    }

    #[test]
    fn negative_answer_soa_ttl_is_capped_by_minimum() {
        let mut r = Vec::new();
        put_header(
            &mut r,
            99,
            FLAG_QR | FLAG_RA | u16::from(RCODE_NXDOMAIN),
            [1, 0, 1, 0],
        );
        r.extend_from_slice(&question());
        r.extend_from_slice(&[0xC0, 16]); // owner: "example."
        r.extend_from_slice(&TYPE_SOA.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&300u32.to_be_bytes());
        r.extend_from_slice(&24u16.to_be_bytes());
        r.extend_from_slice(&[0xC0, 16, 0xC0, 16]); // mname, rname
        for v in [1u32, 2, 3, 4, 5] {
            r.extend_from_slice(&v.to_be_bytes());
        }
        let v = check(&r).unwrap();
        assert_eq!(v.cache_ttl, Some(5));
        let at = usize::from(u16::from_le_bytes([v.ttl_offsets[0], v.ttl_offsets[1]]));
        assert_eq!(read_u32(&v.msg, at), Some(5));
    }

    #[test]
    fn error_rcodes_are_not_final_nor_cached() {
        let mut r = Vec::new();
        put_header(&mut r, 99, FLAG_QR | FLAG_RA | 5, [1, 0, 0, 0]);
        r.extend_from_slice(&question());
        let v = check(&r).unwrap();
        assert!(!v.is_final());
        assert_eq!(v.cache_ttl, None);
    }

    #[test]
    fn never_panics_on_garbage() {
        let q = question();
        let mut v = Validated::default();
        for mut p in garbage_packets(200, 50) {
            if p.len() >= HEADER_LEN + q.len() {
                p[HEADER_LEN..HEADER_LEN + q.len()].copy_from_slice(&q);
            }
            let _ = validate(&p, q.len(), &mut v);
        }
    }
}
