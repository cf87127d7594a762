//! DNS wire format: the constants, readers and writers every stage shares.
//!
//! Nothing here allocates except where it appends to a caller's buffer.
//! Two name readers live here on purpose: [`question_name_end`] for a
//! client's question (uncompressed by definition) and [`name_end`] for
//! messages from upstream, which checks every compression pointer so a
//! looping or forward-pointing name is caught before a client sees it.

pub const HEADER_LEN: usize = 12;
/// Longest name in wire form (RFC 1035 §2.3.4), root byte included.
pub const MAX_NAME_LEN: usize = 255;
/// Longest question section: the name plus type and class.
pub const MAX_QUESTION_LEN: usize = MAX_NAME_LEN + 4;
/// Largest DNS message there is (a TCP frame's length is a `u16`).
pub const MAX_MESSAGE_LEN: usize = u16::MAX as usize;

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_MX: u16 = 15;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_DNAME: u16 = 39;
pub const TYPE_OPT: u16 = 41;
pub const CLASS_IN: u16 = 1;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;
/// BADVERS is extended RCODE 16: 0 in the header, 1 in OPT's upper bits.
pub const EXT_RCODE_BADVERS: u8 = 1;

// Header flag bits (second and third byte as one big-endian u16).
pub const FLAG_QR: u16 = 0x8000;
pub const FLAG_AA: u16 = 0x0400;
pub const FLAG_TC: u16 = 0x0200;
pub const FLAG_RD: u16 = 0x0100;
pub const FLAG_RA: u16 = 0x0080;
pub const FLAG_AD: u16 = 0x0020;
pub const FLAG_CD: u16 = 0x0010;
pub const OPCODE_MASK: u16 = 0x7800;
pub const RCODE_MASK: u16 = 0x000F;

/// OPT TTL-field bit: DNSSEC OK.
pub const EDNS_DO: u16 = 0x8000;
/// The EDNS option carrying an Extended DNS Error (RFC 8914).
pub const OPTION_EDE: u16 = 15;

/// The EDNS facts of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

#[inline]
pub fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

#[inline]
pub fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// End of an uncompressed name starting at `pos` (a question name has
/// nothing before it to point at, so pointers are malformed here).
pub fn question_name_end(packet: &[u8], pos: usize) -> Option<usize> {
    let mut p = pos;
    loop {
        let len = *packet.get(p)? as usize;
        if len == 0 {
            let end = p + 1;
            return (end - pos <= MAX_NAME_LEN).then_some(end);
        }
        if len > 63 {
            return None;
        }
        p += 1 + len;
        if p - pos > MAX_NAME_LEN {
            return None;
        }
    }
}

/// Skips a possibly compressed name without following its pointer; returns
/// the offset just after it. Enough to walk a client's records, which we
/// never copy into an answer.
pub fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    let start = pos;
    loop {
        let len = *msg.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            1..=63 => {
                pos += 1 + usize::from(len);
                if pos - start > MAX_NAME_LEN {
                    return None;
                }
            }
            0xC0..=0xFF => {
                msg.get(pos + 1)?;
                return Some(pos + 2);
            }
            _ => return None,
        }
    }
}

/// What a compressed-name walk ([`walk_name`]) asks of its caller.
pub trait NameWalk {
    /// A label (or the root) at `at` in the name's own bytes, not reached
    /// through a pointer.
    fn own_label(&mut self, at: usize);
    /// May a pointer lead to `target`? It is already known to point
    /// backwards, below where the current stretch of labels began.
    fn may_point_to(&self, target: usize) -> bool;
}

/// [`name_end`]'s rules only: any backward pointer.
struct Backwards;

impl NameWalk for Backwards {
    #[inline]
    fn own_label(&mut self, _: usize) {}
    #[inline]
    fn may_point_to(&self, _: usize) -> bool {
        true
    }
}

/// Checks a possibly compressed name in full and returns the offset just
/// after it where it starts (not where its pointers lead).
///
/// Every pointer must point strictly before the pointer itself, at a label
/// that lies before it too, so a chain of pointers only ever moves back and
/// cannot loop; the expanded name must stay within 255 bytes. This is what
/// a client's decoder will do with the name, done first by us.
pub fn name_end(msg: &[u8], pos: usize) -> Option<usize> {
    walk_name(msg, pos, &mut Backwards)
}

/// [`name_end`] with the caller told of each of the name's own labels and
/// asked about each pointer's target (the upstream stage accepts only
/// targets where an earlier name's label starts).
pub fn walk_name(msg: &[u8], pos: usize, walk: &mut impl NameWalk) -> Option<usize> {
    let mut p = pos;
    let mut end = None;
    let mut expanded = 0usize;
    // Every jump lands strictly lower than the last, so this loop ends
    // within `msg.len()` jumps.
    let mut limit = p;
    loop {
        let len = *msg.get(p)?;
        match len {
            0 => {
                expanded += 1;
                if expanded > MAX_NAME_LEN {
                    return None;
                }
                if end.is_none() {
                    walk.own_label(p);
                }
                return Some(end.unwrap_or(p + 1));
            }
            1..=63 => {
                expanded += 1 + usize::from(len);
                if expanded > MAX_NAME_LEN {
                    return None;
                }
                if end.is_none() {
                    walk.own_label(p);
                }
                p += 1 + usize::from(len);
                if p > msg.len() {
                    return None;
                }
            }
            0xC0..=0xFF => {
                let low = *msg.get(p + 1)?;
                let target = (usize::from(len & 0x3F) << 8) | usize::from(low);
                if end.is_none() {
                    end = Some(p + 2);
                }
                // Strictly backwards, and before where this name began its
                // latest stretch: a pointer into its own labels would loop.
                if target >= limit || !walk.may_point_to(target) {
                    return None;
                }
                limit = target;
                p = target;
            }
            _ => return None,
        }
    }
}

/// One resource record's fixed fields and where its parts are.
#[derive(Debug, Clone, Copy)]
pub struct RecordPos {
    pub owner_at: usize,
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    /// Offset of the TTL field.
    pub ttl_at: usize,
    pub rdata_at: usize,
    pub end: usize,
}

/// Reads a record's fixed fields; `name` decides how its owner is read
/// ([`skip_name`] for client queries, [`name_end`] for upstream replies).
pub fn read_record_with(
    msg: &[u8],
    pos: usize,
    name: fn(&[u8], usize) -> Option<usize>,
) -> Option<RecordPos> {
    let p = name(msg, pos)?;
    record_after_owner(msg, pos, p)
}

/// A record's fixed fields, its owner at `pos` read up to `p`.
pub fn record_after_owner(msg: &[u8], pos: usize, p: usize) -> Option<RecordPos> {
    let rtype = read_u16(msg, p)?;
    let class = read_u16(msg, p + 2)?;
    let ttl = read_u32(msg, p + 4)?;
    let rdlen = usize::from(read_u16(msg, p + 8)?);
    let rdata_at = p + 10;
    let end = rdata_at + rdlen;
    if end > msg.len() {
        return None;
    }
    Some(RecordPos {
        owner_at: pos,
        rtype,
        class,
        ttl,
        ttl_at: p + 4,
        rdata_at,
        end,
    })
}

/// A record of a client's message (owner pointers not followed).
pub fn read_record(msg: &[u8], pos: usize) -> Option<RecordPos> {
    read_record_with(msg, pos, skip_name)
}

/// Labels of a wire-form name, left to right. Iterating from the right is
/// what the matcher wants, so the offsets are collected once on the stack.
pub struct Labels<'a> {
    name: &'a [u8],
    starts: [u8; 128],
    count: usize,
}

impl<'a> Labels<'a> {
    /// `name` must be an uncompressed wire name (as in a question).
    pub fn new(name: &'a [u8]) -> Self {
        let mut starts = [0u8; 128];
        let mut count = 0;
        let mut p = 0usize;
        while let Some(&len) = name.get(p) {
            // Offsets are kept as u8: a wire name is at most 255 bytes.
            if len == 0 || count == starts.len() || p > 255 || p + 1 + usize::from(len) > name.len()
            {
                break;
            }
            starts[count] = p as u8;
            count += 1;
            p += 1 + usize::from(len);
        }
        Self {
            name,
            starts,
            count,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Label `i`, counting from the left.
    pub fn get(&self, i: usize) -> &'a [u8] {
        let s = usize::from(self.starts[i]);
        let len = usize::from(self.name[s]);
        &self.name[s + 1..s + 1 + len]
    }

    /// Offset within the name where label `i` starts.
    pub fn offset(&self, i: usize) -> usize {
        usize::from(self.starts[i])
    }

    /// Labels from the top level down: what the matcher walks.
    pub fn from_top(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        (0..self.count).rev().map(move |i| self.get(i))
    }
}

/// Writes a message header.
pub fn put_header(out: &mut Vec<u8>, id: u16, flags: u16, counts: [u16; 4]) {
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        out.extend_from_slice(&c.to_be_bytes());
    }
}

/// Response flags for a query: QR and RA set; opcode, RD and CD echoed.
pub fn response_flags(query_flags: u16, rcode: u8) -> u16 {
    FLAG_QR
        | FLAG_RA
        | (query_flags & (OPCODE_MASK | FLAG_RD | FLAG_CD))
        | (u16::from(rcode) & RCODE_MASK)
}

/// An OPT record: payload size, extended RCODE bits, DO, and options given
/// as whole TLVs (code, length, data), appended without copying them first.
pub fn put_opt(out: &mut Vec<u8>, payload: u16, ext_rcode: u8, dnssec_ok: bool, options: &[&[u8]]) {
    out.push(0); // root owner
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&payload.to_be_bytes());
    out.push(ext_rcode);
    out.push(0); // version
    let flags: u16 = if dnssec_ok { EDNS_DO } else { 0 };
    out.extend_from_slice(&flags.to_be_bytes());
    let rdlen: usize = options.iter().map(|o| o.len()).sum();
    out.extend_from_slice(&(rdlen.min(usize::from(u16::MAX)) as u16).to_be_bytes());
    for o in options {
        out.extend_from_slice(o);
    }
}

/// Adds `n` to a message's count field at `at` (4, 6, 8 or 10).
pub fn bump_count(msg: &mut [u8], at: usize, n: i32) {
    let c = i32::from(u16::from_be_bytes([msg[at], msg[at + 1]])) + n;
    let c = c.clamp(0, i32::from(u16::MAX)) as u16;
    msg[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// A message in a TCP frame: the two-byte length, then the message.
/// `None` when it is too long for one (the caller must make it fit first).
pub fn tcp_frame(msg: &[u8], framed: &mut Vec<u8>) -> Option<()> {
    let len = u16::try_from(msg.len()).ok()?;
    framed.clear();
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    Some(())
}

/// Deterministic pseudo-random packets of every length below `max_len`
/// (xorshift), for never-panics tests of the wire readers.
#[cfg(test)]
pub(crate) fn garbage_packets(max_len: usize, per_len: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut x: u32 = 0x9e37_79b9;
    (0..max_len)
        .flat_map(move |len| std::iter::repeat_n(len, per_len))
        .map(move |len| {
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_from_the_top() {
        let name = b"\x07US04web\x04zoom\x02us\x00";
        let l = Labels::new(name);
        assert_eq!(l.len(), 3);
        let top: Vec<&[u8]> = l.from_top().collect();
        assert_eq!(top, vec![&b"us"[..], b"zoom", b"US04web"]);
    }

    #[test]
    fn name_end_follows_backward_pointers_only() {
        // 12 bytes of header, then "a.example." at 12, then a pointer to it.
        let mut m = vec![0u8; 12];
        m.extend_from_slice(b"\x01a\x07example\x00");
        let ptr_at = m.len();
        m.extend_from_slice(&[0xC0, 12]);
        assert_eq!(name_end(&m, 12), Some(ptr_at));
        assert_eq!(name_end(&m, ptr_at), Some(ptr_at + 2));
        // A pointer to itself, and a pointer forward, are loops or worse.
        let mut looped = m.clone();
        looped.extend_from_slice(&[0xC0, ptr_at as u8 + 2]);
        assert_eq!(name_end(&looped, ptr_at + 2), None);
        let mut fwd = vec![0u8; 12];
        fwd.extend_from_slice(&[0xC0, 14, 0]);
        assert_eq!(name_end(&fwd, 12), None);
        // Two pointers pointing at each other.
        let mut pair = vec![0u8; 12];
        pair.extend_from_slice(&[0xC0, 14, 0xC0, 12]);
        assert_eq!(name_end(&pair, 14), None);
        // A label that points back into itself: "\x01x" then pointer to 12.
        let mut own = vec![0u8; 12];
        own.extend_from_slice(&[1, b'x', 0xC0, 12]);
        assert_eq!(name_end(&own, 12), None);
    }

    #[test]
    fn name_end_limits_the_expanded_length() {
        // 5 labels of 63 bytes spelled through pointers: 320 bytes expanded.
        let mut m = vec![0u8; 12];
        let mut prev: Option<usize> = None;
        for _ in 0..5 {
            let at = m.len();
            m.push(63);
            m.extend_from_slice(&[b'a'; 63]);
            match prev {
                Some(p) => m.extend_from_slice(&[0xC0 | (p >> 8) as u8, p as u8]),
                None => m.push(0),
            }
            prev = Some(at);
        }
        assert_eq!(name_end(&m, prev.unwrap()), None);
    }

    #[test]
    fn never_panics_on_garbage() {
        for p in garbage_packets(300, 50) {
            let _ = read_record(&p, 0);
            let _ = name_end(&p, 0);
            let _ = name_end(&p, p.len() / 2);
            let _ = Labels::new(&p).from_top().count();
        }
    }

    #[test]
    fn tcp_frame_refuses_what_does_not_fit() {
        let mut framed = Vec::new();
        assert!(tcp_frame(&[0u8; MAX_MESSAGE_LEN], &mut framed).is_some());
        assert_eq!(&framed[..2], &[0xFF, 0xFF]);
        assert!(tcp_frame(&vec![0u8; MAX_MESSAGE_LEN + 1], &mut framed).is_none());
    }
}
