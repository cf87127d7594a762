//! The answer cache: upstream responses kept as ready-to-send bytes.
//!
//! An entry is the upstream's response with its OPT record removed, plus the
//! offsets of every TTL in it. A hit copies the bytes, writes the client's ID,
//! flags and question (so its case is echoed exactly), counts the TTLs down
//! and appends our own OPT: no decoding, no allocation beyond the copy.
//!
//! Keys are (lowercased name, type, class, DO, CD). The map is sharded by
//! key hash so workers rarely meet on a lock; each shard is bounded and
//! evicts the soonest-expiring of a few sampled entries when full.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustc_hash::FxBuildHasher;

use super::answers::{EDNS_PAYLOAD, truncate, udp_limit};
use super::wire::{
    FLAG_AD, HEADER_LEN, Query, RCODE_NOERROR, RCODE_NXDOMAIN, TYPE_OPT, TYPE_SOA, put_opt,
    read_record, read_u16, read_u32, response_flags,
};

/// Longest TTL we keep an answer for, whatever upstream says (Unbound's
/// `cache-max-ttl` default).
pub const MAX_TTL: u32 = 86_400;
const SHARDS: usize = 64;
const EVICTION_SAMPLE: usize = 8;

/// Stack-built cache key: flags byte, type, class, lowercase wire name.
pub struct Key {
    buf: [u8; 5 + 255],
    len: usize,
}

impl Key {
    pub fn new(q: &Query<'_>) -> Self {
        let mut buf = [0u8; 5 + 255];
        buf[0] = u8::from(q.dnssec_ok()) | u8::from(q.cd()) << 1;
        buf[1..3].copy_from_slice(&q.qtype.to_be_bytes());
        buf[3..5].copy_from_slice(&q.qclass.to_be_bytes());
        let name = &q.qname[..q.qname.len().min(255)];
        for (d, s) in buf[5..].iter_mut().zip(name) {
            *d = s.to_ascii_lowercase();
        }
        Self {
            buf,
            len: 5 + name.len(),
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// A cacheable upstream response.
pub struct Entry {
    /// Response bytes without OPT (ARCOUNT adjusted).
    bytes: Box<[u8]>,
    ttl_offsets: Box<[u16]>,
    question_len: usize,
    stored: Instant,
    expires: Instant,
}

/// What a walk of an upstream response found.
pub struct Analysis {
    /// Response with the OPT record cut out, if it had one at the end.
    pub without_opt: Vec<u8>,
    pub ttl_offsets: Vec<u16>,
    /// How long the answer may be cached (RFC 2308 for negative answers);
    /// `None` when it must not be.
    pub cache_ttl: Option<u32>,
    pub rcode: u8,
}

/// Walks an upstream response: validates its structure, finds its TTLs and
/// OPT, and decides how long it may be cached. `None` means the bytes are not
/// a well-formed message (or carry OPT anywhere but last, which we then pass
/// on without caching).
pub fn analyse(resp: &[u8], question_len: usize) -> Option<Analysis> {
    let flags = read_u16(resp, 2)?;
    let rcode = (flags & 0xF) as u8;
    let an = read_u16(resp, 6)?;
    let ns = read_u16(resp, 8)?;
    let ar = read_u16(resp, 10)?;
    let mut pos = HEADER_LEN + question_len;
    if resp.len() < pos {
        return None;
    }
    let mut ttl_offsets = Vec::with_capacity(usize::from(an) + usize::from(ns) + usize::from(ar));
    let mut min_ttl = u32::MAX;
    let mut negative_ttl = None;
    let mut opt: Option<(usize, usize, u8)> = None;
    let total = usize::from(an) + usize::from(ns) + usize::from(ar);
    for i in 0..total {
        let rr = read_record(resp, pos)?;
        if rr.rtype == TYPE_OPT {
            if opt.is_some() || i < usize::from(an) + usize::from(ns) {
                return None;
            }
            opt = Some((pos, rr.end, (rr.ttl >> 24) as u8));
        } else {
            ttl_offsets.push(u16::try_from(rr.ttl_at).ok()?);
            min_ttl = min_ttl.min(rr.ttl);
            let in_authority = i >= usize::from(an) && i < usize::from(an) + usize::from(ns);
            if in_authority && rr.rtype == TYPE_SOA && rr.end >= rr.rdata_at + 20 {
                let minimum = read_u32(resp, rr.end - 4)?;
                negative_ttl = Some((rr.ttl.min(minimum), rr.ttl_at));
            }
        }
        pos = rr.end;
    }
    let mut without_opt = resp[..pos].to_vec();
    let mut ext_rcode = 0;
    if let Some((start, end, ext)) = opt {
        if end != pos {
            return None;
        }
        ext_rcode = ext;
        without_opt.truncate(start);
        without_opt[10..12].copy_from_slice(&(ar - 1).to_be_bytes());
    }
    let truncated = flags & super::wire::FLAG_TC != 0;
    let negative = rcode == RCODE_NXDOMAIN || (rcode == RCODE_NOERROR && an == 0);
    if negative && let Some((ttl, at)) = negative_ttl {
        // RFC 2308 §5: the SOA of a negative answer is served with the
        // negative TTL, or clients would keep the denial for the SOA's TTL.
        without_opt[at..at + 4].copy_from_slice(&ttl.to_be_bytes());
    }
    let negative_ttl = negative_ttl.map(|(ttl, _)| ttl);
    let cache_ttl =
        if truncated || ext_rcode != 0 || !(rcode == RCODE_NOERROR || rcode == RCODE_NXDOMAIN) {
            None
        } else if negative {
            negative_ttl
        } else {
            Some(min_ttl)
        };
    Some(Analysis {
        without_opt,
        ttl_offsets,
        cache_ttl: cache_ttl
            .filter(|t| *t > 0 && *t != u32::MAX)
            .map(|t| t.min(MAX_TTL)),
        rcode,
    })
}

/// Writes a response for `q` from stored bytes: the client's ID, flags and
/// question; TTLs reduced by `elapsed` seconds; our OPT; truncated for UDP.
pub fn render(
    out: &mut Vec<u8>,
    q: &Query<'_>,
    bytes: &[u8],
    ttl_offsets: &[u16],
    elapsed: u32,
    udp: bool,
) {
    out.clear();
    out.extend_from_slice(bytes);
    out[0..2].copy_from_slice(&q.id.to_be_bytes());
    let stored = u16::from_be_bytes([out[2], out[3]]);
    // RCODE and AD are the upstream's; the rest is ours or the client's.
    let flags = response_flags(q.flags, 0) | (stored & (0xF | FLAG_AD));
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    out[HEADER_LEN..HEADER_LEN + q.question.len()].copy_from_slice(q.question);
    if elapsed > 0 {
        for &at in ttl_offsets {
            let at = usize::from(at);
            let ttl = u32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]);
            out[at..at + 4].copy_from_slice(&ttl.saturating_sub(elapsed).to_be_bytes());
        }
    }
    if let Some(edns) = q.edns {
        let ar = u16::from_be_bytes([out[10], out[11]]).saturating_add(1);
        out[10..12].copy_from_slice(&ar.to_be_bytes());
        put_opt(out, EDNS_PAYLOAD, 0, edns.dnssec_ok, &[]);
    }
    if udp && out.len() > udp_limit(q) {
        truncate(out, q);
    }
}

struct Shard {
    map: HashMap<Box<[u8]>, Entry, FxBuildHasher>,
}

/// The bounded, sharded answer cache.
pub struct Cache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: FxBuildHasher,
}

/// Outcome of a lookup.
pub enum Lookup {
    /// `out` holds the answer.
    Hit,
    Miss,
}

impl Cache {
    /// A cache of about `capacity` entries; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        let shards = if capacity == 0 {
            0
        } else {
            SHARDS.min(capacity)
        };
        let per_shard = if shards == 0 {
            0
        } else {
            capacity.div_ceil(shards)
        };
        Self {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::with_hasher(FxBuildHasher),
                    })
                })
                .collect(),
            per_shard,
            hasher: FxBuildHasher,
        }
    }

    fn shard(&self, key: &[u8]) -> Option<&Mutex<Shard>> {
        if self.shards.is_empty() {
            return None;
        }
        let h = self.hasher.hash_one(key);
        Some(&self.shards[(h >> 40) as usize % self.shards.len()])
    }

    /// Renders a cached answer for `q` into `out` if there is a live one.
    pub fn lookup(&self, q: &Query<'_>, out: &mut Vec<u8>, udp: bool, now: Instant) -> Lookup {
        let key = Key::new(q);
        let Some(shard) = self.shard(key.bytes()) else {
            return Lookup::Miss;
        };
        let Ok(mut shard) = shard.lock() else {
            return Lookup::Miss;
        };
        let Some(entry) = shard.map.get(key.bytes()) else {
            return Lookup::Miss;
        };
        if now >= entry.expires || entry.question_len != q.question.len() {
            shard.map.remove(key.bytes());
            return Lookup::Miss;
        }
        let elapsed = now.saturating_duration_since(entry.stored).as_secs() as u32;
        render(out, q, &entry.bytes, &entry.ttl_offsets, elapsed, udp);
        Lookup::Hit
    }

    /// Stores an analysed response for `q`, if it may be cached.
    pub fn insert(&self, q: &Query<'_>, analysis: &Analysis, now: Instant) {
        let Some(ttl) = analysis.cache_ttl else {
            return;
        };
        let key = Key::new(q);
        let Some(shard) = self.shard(key.bytes()) else {
            return;
        };
        let Ok(mut shard) = shard.lock() else {
            return;
        };
        if shard.map.len() >= self.per_shard && !shard.map.contains_key(key.bytes()) {
            let victim = shard
                .map
                .iter()
                .take(EVICTION_SAMPLE)
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| k.clone());
            if let Some(victim) = victim {
                shard.map.remove(&victim);
            }
        }
        shard.map.insert(
            key.bytes().into(),
            Entry {
                bytes: analysis.without_opt.as_slice().into(),
                ttl_offsets: analysis.ttl_offsets.as_slice().into(),
                question_len: q.question.len(),
                stored: now,
                expires: now + Duration::from_secs(u64::from(ttl)),
            },
        );
    }

    /// Entries held now (for the gauge).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.map.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::{CLASS_IN, FLAG_QR, FLAG_RA, FLAG_RD, TYPE_A, parse_query, put_header};

    fn query(name: &[u8], edns: bool) -> Vec<u8> {
        let mut q = Vec::new();
        put_header(&mut q, 7, FLAG_RD, [1, 0, 0, u16::from(edns)]);
        q.extend_from_slice(name);
        q.extend_from_slice(&TYPE_A.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        if edns {
            put_opt(&mut q, 1232, 0, false, &[]);
        }
        q
    }

    /// An upstream answer: one A record with `ttl`, then an OPT.
    fn answer(name: &[u8], ttl: u32) -> Vec<u8> {
        let mut r = Vec::new();
        put_header(
            &mut r,
            99,
            FLAG_QR | FLAG_RD | FLAG_RA | FLAG_AD,
            [1, 1, 0, 1],
        );
        r.extend_from_slice(name);
        r.extend_from_slice(&TYPE_A.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&[0xC0, 12]);
        r.extend_from_slice(&TYPE_A.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&[192, 0, 2, 1]);
        put_opt(&mut r, 4096, 0, false, &[]);
        r
    }

    #[test]
    fn analyse_strips_opt_and_finds_ttls() {
        let name = b"\x03www\x07example\x00";
        let a = analyse(&answer(name, 300), name.len() + 4).unwrap();
        assert_eq!(a.cache_ttl, Some(300));
        assert_eq!(a.ttl_offsets.len(), 1);
        assert_eq!(read_u16(&a.without_opt, 10), Some(0));
    }

    #[test]
    fn negative_answer_soa_ttl_is_capped_by_minimum() {
        let name = b"\x02nx\x04test\x00";
        let mut r = Vec::new();
        put_header(
            &mut r,
            1,
            FLAG_QR | FLAG_RA | u16::from(RCODE_NXDOMAIN),
            [1, 0, 1, 0],
        );
        r.extend_from_slice(name);
        r.extend_from_slice(&TYPE_A.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&[0xC0, 15]); // owner: "test."
        r.extend_from_slice(&TYPE_SOA.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&300u32.to_be_bytes());
        r.extend_from_slice(&24u16.to_be_bytes());
        r.extend_from_slice(&[0xC0, 15, 0xC0, 15]); // mname, rname
        for v in [1u32, 2, 3, 4, 5] {
            r.extend_from_slice(&v.to_be_bytes());
        }
        let a = analyse(&r, name.len() + 4).unwrap();
        assert_eq!(a.cache_ttl, Some(5));
        assert_eq!(
            read_u32(&a.without_opt, usize::from(a.ttl_offsets[0])),
            Some(5)
        );
    }

    #[test]
    fn hit_echoes_question_case_and_counts_ttl_down() {
        let cache = Cache::new(100);
        let stored_q = query(b"\x03www\x07example\x00", true);
        let q = parse_query(&stored_q).unwrap();
        let a = analyse(&answer(b"\x03www\x07example\x00", 300), q.question.len()).unwrap();
        let t0 = Instant::now();
        cache.insert(&q, &a, t0);

        let asked = query(b"\x03WwW\x07EXAMPLE\x00", true);
        let q2 = parse_query(&asked).unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            cache.lookup(&q2, &mut out, true, t0 + Duration::from_secs(5)),
            Lookup::Hit
        ));
        assert_eq!(&out[0..2], &7u16.to_be_bytes());
        assert_eq!(&out[12..12 + q2.question.len()], q2.question);
        let ttl_at = a.ttl_offsets[0] as usize;
        assert_eq!(read_u32(&out, ttl_at), Some(295));
        assert_eq!(read_u16(&out, 10), Some(1), "our OPT is appended");
        assert_ne!(
            u16::from_be_bytes([out[2], out[3]]) & FLAG_AD,
            0,
            "AD passes through"
        );

        // Expired entries are gone.
        assert!(matches!(
            cache.lookup(&q2, &mut out, true, t0 + Duration::from_secs(301)),
            Lookup::Miss
        ));
    }

    #[test]
    fn is_bounded() {
        let cache = Cache::new(128);
        let now = Instant::now();
        for i in 0..2000u32 {
            let name = format!("\x05n{:04}\x04test\x00", i % 10000);
            let raw = query(name.as_bytes(), false);
            let q = parse_query(&raw).unwrap();
            let a = analyse(&answer(name.as_bytes(), 60), q.question.len()).unwrap();
            cache.insert(&q, &a, now);
        }
        assert!(cache.len() <= 128 + SHARDS, "{}", cache.len());
    }

    #[test]
    fn analyse_never_panics_on_garbage() {
        for p in crate::dns::wire::garbage_packets(200, 50) {
            for qlen in [0, 5, 17, 300] {
                let _ = analyse(&p, qlen);
            }
        }
    }

    #[test]
    fn disabled_cache_never_hits() {
        let cache = Cache::new(0);
        let raw = query(b"\x01a\x00", false);
        let q = parse_query(&raw).unwrap();
        let a = analyse(&answer(b"\x01a\x00", 60), q.question.len()).unwrap();
        cache.insert(&q, &a, Instant::now());
        let mut out = Vec::new();
        assert!(matches!(
            cache.lookup(&q, &mut out, true, Instant::now()),
            Lookup::Miss
        ));
    }
}
