//! DNS wire format, the parts the server reads and writes itself.
//!
//! Queries are parsed in place (no allocation): the header, the one question
//! as a slice of the packet, and the OPT record. Responses from upstream are
//! walked record by record to find their TTLs, their OPT and their SOA, so
//! the cache can store and patch bytes instead of decoding them.

pub const HEADER_LEN: usize = 12;
pub const TYPE_A: u16 = 1;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_AAAA: u16 = 28;
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
const OPCODE_MASK: u16 = 0x7800;

/// OPT TTL-field bit: DNSSEC OK.
pub const EDNS_DO: u16 = 0x8000;

/// The EDNS facts of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

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
    pub fn opcode(&self) -> u8 {
        ((self.flags & OPCODE_MASK) >> 11) as u8
    }

    pub fn rd(&self) -> bool {
        self.flags & FLAG_RD != 0
    }

    pub fn cd(&self) -> bool {
        self.flags & FLAG_CD != 0
    }

    pub fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }

    /// The labels of the name, left to right.
    pub fn labels(&self) -> Labels<'a> {
        Labels::new(self.qname)
    }
}

/// Why a packet cannot be answered normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not worth a reply: shorter than a header, or itself a response.
    Drop,
    /// The header is readable but the rest is not (FORMERR).
    FormErr { id: u16, flags: u16 },
    /// An opcode we do not serve (NOTIMP).
    NotImp { id: u16, flags: u16 },
    /// A readable query whose EDNS version we do not speak (BADVERS).
    BadVers { id: u16, flags: u16 },
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

/// Parses a client query. Only standard queries with exactly one question
/// are answered; anything else is rejected with the right RCODE.
pub fn parse_query(packet: &[u8]) -> Result<Query<'_>, Reject> {
    if packet.len() < HEADER_LEN {
        return Err(Reject::Drop);
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    if flags & FLAG_QR != 0 {
        return Err(Reject::Drop);
    }
    if flags & OPCODE_MASK != 0 {
        return Err(Reject::NotImp { id, flags });
    }
    let formerr = Reject::FormErr { id, flags };
    let qd = u16::from_be_bytes([packet[4], packet[5]]);
    let an = u16::from_be_bytes([packet[6], packet[7]]);
    let ns = u16::from_be_bytes([packet[8], packet[9]]);
    let ar = u16::from_be_bytes([packet[10], packet[11]]);
    if qd != 1 || an != 0 || ns != 0 {
        return Err(formerr);
    }
    let name_end = question_name_end(packet, HEADER_LEN).ok_or(formerr)?;
    let qtype = read_u16(packet, name_end).ok_or(formerr)?;
    let qclass = read_u16(packet, name_end + 2).ok_or(formerr)?;
    let question_end = name_end + 4;
    let mut edns = None;
    let mut pos = question_end;
    for _ in 0..ar {
        let rr = read_record(packet, pos).ok_or(formerr)?;
        if rr.rtype == TYPE_OPT {
            // RFC 6891: more than one OPT, or an OPT not owned by the root,
            // is a malformed query.
            if edns.is_some() || packet[pos] != 0 {
                return Err(formerr);
            }
            let ttl = rr.ttl;
            edns = Some(Edns {
                payload: rr.class,
                version: (ttl >> 16) as u8,
                dnssec_ok: ttl as u16 & EDNS_DO != 0,
            });
        }
        pos = rr.end;
    }
    if edns.is_some_and(|e| e.version > 0) {
        return Err(Reject::BadVers { id, flags });
    }
    Ok(Query {
        id,
        flags,
        question: &packet[HEADER_LEN..question_end],
        qname: &packet[HEADER_LEN..name_end],
        qtype,
        qclass,
        edns,
    })
}

/// End of an uncompressed name starting at `pos` (a question name has
/// nothing before it to point at, so pointers are malformed here).
fn question_name_end(packet: &[u8], pos: usize) -> Option<usize> {
    let mut p = pos;
    loop {
        let len = *packet.get(p)? as usize;
        if len == 0 {
            let end = p + 1;
            return (end - pos <= 255).then_some(end);
        }
        if len > 63 {
            return None;
        }
        p += 1 + len;
        if p - pos > 255 {
            return None;
        }
    }
}

/// Skips a possibly compressed name; returns the offset just after it.
pub fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    let start = pos;
    loop {
        let len = *msg.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            1..=63 => {
                pos += 1 + usize::from(len);
                if pos - start > 255 {
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

/// One resource record's fixed fields and where its parts are.
#[derive(Debug, Clone, Copy)]
pub struct RecordPos {
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    /// Offset of the TTL field.
    pub ttl_at: usize,
    pub rdata_at: usize,
    pub end: usize,
}

pub fn read_record(msg: &[u8], pos: usize) -> Option<RecordPos> {
    let p = skip_name(msg, pos)?;
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
        rtype,
        class,
        ttl,
        ttl_at: p + 4,
        rdata_at,
        end,
    })
}

/// Labels of a wire-form name, left to right. Iterating from the right is
/// what the matcher wants, so the offsets are collected once on the stack.
pub struct Labels<'a> {
    name: &'a [u8],
    starts: [u8; 128],
    count: usize,
}

impl<'a> Labels<'a> {
    /// `name` must be an uncompressed wire name (as returned in [`Query`]).
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

/// Writes a response header.
pub fn put_header(out: &mut Vec<u8>, id: u16, flags: u16, counts: [u16; 4]) {
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        out.extend_from_slice(&c.to_be_bytes());
    }
}

/// Response flags for a query: QR and RA set; opcode, RD and CD echoed.
pub fn response_flags(query_flags: u16, rcode: u8) -> u16 {
    FLAG_QR | FLAG_RA | (query_flags & (OPCODE_MASK | FLAG_RD | FLAG_CD)) | u16::from(rcode & 0xF)
}

/// Our OPT record: payload size, extended RCODE bits, DO, and options.
pub fn put_opt(out: &mut Vec<u8>, payload: u16, ext_rcode: u8, dnssec_ok: bool, options: &[&[u8]]) {
    out.push(0); // root owner
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&payload.to_be_bytes());
    out.push(ext_rcode);
    out.push(0); // version
    let flags: u16 = if dnssec_ok { EDNS_DO } else { 0 };
    out.extend_from_slice(&flags.to_be_bytes());
    let rdlen: usize = options.iter().map(|o| o.len()).sum();
    out.extend_from_slice(&(rdlen as u16).to_be_bytes());
    for o in options {
        out.extend_from_slice(o);
    }
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
        let p = parse_query(&q).unwrap();
        assert_eq!(p.id, 0x1234);
        assert_eq!(p.qname, ZOOM);
        assert_eq!(p.qtype, TYPE_A);
        assert!(p.edns.is_none());
        assert!(p.rd());
        let l = p.labels();
        assert_eq!(l.len(), 3);
        let top: Vec<&[u8]> = l.from_top().collect();
        assert_eq!(top, vec![&b"us"[..], b"zoom", b"US04web"]);
    }

    #[test]
    fn parses_edns() {
        let q = query(ZOOM, TYPE_AAAA, Some((4096, 0, true)));
        let e = parse_query(&q).unwrap().edns.unwrap();
        assert_eq!(
            e,
            Edns {
                payload: 4096,
                version: 0,
                dnssec_ok: true
            }
        );
    }

    #[test]
    fn rejects_what_it_should() {
        assert_eq!(parse_query(&[0; 11]), Err(Reject::Drop));
        let mut q = query(ZOOM, TYPE_A, None);
        q[2] |= 0x80;
        assert_eq!(parse_query(&q), Err(Reject::Drop));
        let mut q = query(ZOOM, TYPE_A, None);
        q[2] |= 3 << 3; // opcode 3
        assert!(matches!(parse_query(&q), Err(Reject::NotImp { .. })));
        let q = query(ZOOM, TYPE_A, Some((1232, 1, false)));
        assert!(matches!(parse_query(&q), Err(Reject::BadVers { .. })));
        let q = query(ZOOM, TYPE_A, None);
        assert!(matches!(
            parse_query(&q[..q.len() - 3]),
            Err(Reject::FormErr { .. })
        ));
        let q = query(b"\xC0\x0C", TYPE_A, None);
        assert!(matches!(parse_query(&q), Err(Reject::FormErr { .. })));
        let q = query(b"\x05ab\x00", TYPE_A, None);
        assert!(matches!(parse_query(&q), Err(Reject::FormErr { .. })));
    }

    #[test]
    fn never_panics_on_garbage() {
        for p in garbage_packets(300, 50) {
            let _ = parse_query(&p);
            let _ = read_record(&p, 0);
            let _ = Labels::new(&p).from_top().count();
        }
    }
}
