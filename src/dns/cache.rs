//! Stage 4, cache: a bounded store of upstream answers, as bytes.
//!
//! Its one job is keeping answers: [`Cache::lookup`] lends a live entry to
//! the caller (who renders it with `answers::forwarded`), [`Cache::insert`]
//! stores a validated one, and a full shard evicts to make room. What may
//! be cached and for how long is decided before the answer gets here (the
//! upstream stage's validation); how it is shown to a client, after
//! (`answers`).
//!
//! Keys are the lowercase name, type, class and the DO and CD bits: DO
//! changes the records (signatures), CD what an upstream may return. AD is
//! not in the key: the upstream's verdict is stored and each client gets
//! the AD bit only if it asked (RFC 6840 §5.7), whatever the order in
//! which clients asked.
//!
//! Layout, and why: each shard keeps its entries in one dense vector and a
//! map from the key's 64-bit hash to a position in it. Dense storage makes
//! eviction a true random sample (pick positions at random, evict the one
//! that expires first, as Redis does): sampling a hash map's iteration
//! order instead always lands on the same region of the table. An entry is
//! one allocation: key, message, TTL offsets and EDE options packed
//! together. The key's hash is keyed with a per-process random key (a folded
//! multiply, the wyhash/foldhash core: a fifth of SipHash's instructions on
//! a 30-byte key), so nobody can aim many names at one map slot; two keys
//! that share all 64 bits simply evict each other (the full key is
//! compared on lookup).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::answers::Upstreamed;
use crate::keyed::{Keyed, PassThroughState};

/// Longest TTL we keep an answer for, whatever upstream says (Unbound's
/// `cache-max-ttl` default); the upstream stage caps relayed TTLs to it too.
pub const MAX_TTL: u32 = 86_400;
const SHARDS: usize = 64;
/// Entries compared per eviction; 8 finds one among the soonest-expiring
/// eighth of a shard with probability 1 − (7/8)^8 ≈ 0.66, at 8 reads.
const EVICTION_SAMPLE: usize = 8;
const KEY_CAP: usize = 5 + 255;

/// Stack-built cache key: flags byte, type, class, lowercase wire name.
pub struct Key {
    buf: [u8; KEY_CAP],
    len: usize,
}

impl Key {
    pub fn new(qname: &[u8], qtype: u16, qclass: u16, dnssec_ok: bool, cd: bool) -> Self {
        let mut buf = [0u8; KEY_CAP];
        buf[0] = u8::from(dnssec_ok) | u8::from(cd) << 1;
        buf[1..3].copy_from_slice(&qtype.to_be_bytes());
        buf[3..5].copy_from_slice(&qclass.to_be_bytes());
        let name = &qname[..qname.len().min(KEY_CAP - 5)];
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

/// One stored answer: `data` is key, message, TTL offsets, EDE options.
struct Entry {
    hash: u64,
    data: Box<[u8]>,
    key_len: u16,
    msg_len: u16,
    offsets_len: u16,
    ad: bool,
    stored: Instant,
    expires: Instant,
}

impl Entry {
    fn key(&self) -> &[u8] {
        &self.data[..usize::from(self.key_len)]
    }

    fn answer(&self) -> Upstreamed<'_> {
        let k = usize::from(self.key_len);
        let m = k + usize::from(self.msg_len);
        let o = m + usize::from(self.offsets_len);
        Upstreamed {
            msg: &self.data[k..m],
            ttl_offsets: &self.data[m..o],
            ad: self.ad,
            ede: &self.data[o..],
        }
    }
}

struct Shard {
    index: HashMap<u64, u32, PassThroughState>,
    entries: Vec<Entry>,
    /// xorshift state for eviction samples.
    rng: u64,
}

impl Shard {
    fn position(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let i = *self.index.get(&hash)? as usize;
        (self.entries[i].key() == key).then_some(i)
    }

    fn remove(&mut self, i: usize) {
        let gone = self.entries.swap_remove(i);
        self.index.remove(&gone.hash);
        if let Some(moved) = self.entries.get(i) {
            self.index.insert(moved.hash, i as u32);
        }
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Evicts the soonest-expiring of a random sample (expired entries
    /// expire soonest of all).
    fn evict_one(&mut self) {
        let n = self.entries.len();
        if n == 0 {
            return;
        }
        let mut victim = (self.next_random() % n as u64) as usize;
        for _ in 1..EVICTION_SAMPLE.min(n) {
            let i = (self.next_random() % n as u64) as usize;
            if self.entries[i].expires < self.entries[victim].expires {
                victim = i;
            }
        }
        self.remove(victim);
    }
}

/// The bounded, sharded answer store.
pub struct Cache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: Keyed,
    /// How long past expiry an entry is kept for [`Cache::lookup_stale`]
    /// (RFC 8767). Kept entries still count against the capacity and are
    /// the first evicted (they expire soonest), so memory stays bounded.
    stale: Duration,
}

impl Cache {
    /// A cache of about `capacity` entries; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        let shards = SHARDS.min(capacity);
        let per_shard = if shards == 0 {
            0
        } else {
            capacity.div_ceil(shards)
        };
        Self {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        index: HashMap::default(),
                        entries: Vec::new(),
                        rng: rand::random::<u64>() | 1,
                    })
                })
                .collect(),
            per_shard,
            hasher: Keyed::random(),
            stale: Duration::ZERO,
        }
    }

    /// Keeps expired entries `window` longer, for [`Cache::lookup_stale`].
    pub fn serving_stale(mut self, window: Duration) -> Self {
        self.stale = window;
        self
    }

    pub fn is_enabled(&self) -> bool {
        !self.shards.is_empty()
    }

    fn shard(&self, key: &Key) -> Option<(u64, &Mutex<Shard>)> {
        if self.shards.is_empty() {
            return None;
        }
        let h = self.hasher.hash(key.bytes());
        Some((h, &self.shards[(h >> 40) as usize % self.shards.len()]))
    }

    /// Lends the live entry for `key` to `read`, with its age in whole
    /// seconds. An expired entry is removed and is a miss.
    pub fn lookup<R>(
        &self,
        key: &Key,
        now: Instant,
        read: impl FnOnce(&Upstreamed<'_>, u32) -> R,
    ) -> Option<R> {
        let (hash, shard) = self.shard(key)?;
        let mut shard = shard.lock().ok()?;
        let i = shard.position(hash, key.bytes())?;
        let entry = &shard.entries[i];
        if now >= entry.expires {
            // Past serve-stale's window too: gone. Within it: a miss that
            // stays for the day no upstream answers.
            if now >= entry.expires + self.stale {
                shard.remove(i);
            }
            return None;
        }
        let age = now.saturating_duration_since(entry.stored).as_secs() as u32;
        Some(read(&entry.answer(), age))
    }

    /// Lends an entry for `key` that expired less than the serve-stale
    /// window ago (or has not expired), for when no upstream answered.
    pub fn lookup_stale<R>(
        &self,
        key: &Key,
        now: Instant,
        read: impl FnOnce(&Upstreamed<'_>) -> R,
    ) -> Option<R> {
        if self.stale.is_zero() {
            return None;
        }
        let (hash, shard) = self.shard(key)?;
        let shard = shard.lock().ok()?;
        let i = shard.position(hash, key.bytes())?;
        let entry = &shard.entries[i];
        if now >= entry.expires + self.stale {
            return None;
        }
        Some(read(&entry.answer()))
    }

    /// Stores `answer` under `key` for `ttl` seconds from `now`.
    pub fn insert(&self, key: &Key, answer: &Upstreamed<'_>, ttl: u32, now: Instant) {
        let Some((hash, shard)) = self.shard(key) else {
            return;
        };
        let (Ok(key_len), Ok(msg_len), Ok(offsets_len)) = (
            u16::try_from(key.bytes().len()),
            u16::try_from(answer.msg.len()),
            u16::try_from(answer.ttl_offsets.len()),
        ) else {
            return;
        };
        let mut data = Vec::with_capacity(
            key.bytes().len() + answer.msg.len() + answer.ttl_offsets.len() + answer.ede.len(),
        );
        data.extend_from_slice(key.bytes());
        data.extend_from_slice(answer.msg);
        data.extend_from_slice(answer.ttl_offsets);
        data.extend_from_slice(answer.ede);
        let entry = Entry {
            hash,
            data: data.into_boxed_slice(),
            key_len,
            msg_len,
            offsets_len,
            ad: answer.ad,
            stored: now,
            expires: now + Duration::from_secs(u64::from(ttl.min(MAX_TTL))),
        };
        let Ok(mut shard) = shard.lock() else {
            return;
        };
        // Same hash: the same key (replace it), or the rare other key that
        // shares all 64 bits (which this one then evicts).
        if let Some(&i) = shard.index.get(&hash) {
            shard.entries[i as usize] = entry;
            return;
        }
        if shard.entries.len() >= self.per_shard {
            shard.evict_one();
        }
        let i = shard.entries.len() as u32;
        shard.entries.push(entry);
        shard.index.insert(hash, i);
    }

    /// Entries held now (for the gauge).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.entries.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        let mut wire = Vec::new();
        for l in name.split('.') {
            wire.push(l.len() as u8);
            wire.extend_from_slice(l.as_bytes());
        }
        wire.push(0);
        Key::new(&wire, 1, 1, false, false)
    }

    fn answer(tag: u8) -> ([u8; 16], [u8; 2]) {
        let mut msg = [0u8; 16];
        msg[12] = tag;
        (msg, 12u16.to_le_bytes())
    }

    fn put(cache: &Cache, name: &str, tag: u8, ttl: u32, now: Instant) {
        let (msg, offsets) = answer(tag);
        let a = Upstreamed {
            msg: &msg,
            ttl_offsets: &offsets,
            ad: tag.is_multiple_of(2),
            ede: &[],
        };
        cache.insert(&key(name), &a, ttl, now);
    }

    fn get(cache: &Cache, name: &str, now: Instant) -> Option<(u8, u32, bool)> {
        cache.lookup(&key(name), now, |a, age| (a.msg[12], age, a.ad))
    }

    #[test]
    fn stores_and_lends_with_age_until_expiry() {
        let cache = Cache::new(100);
        let t0 = Instant::now();
        put(&cache, "www.example", 4, 300, t0);
        assert_eq!(
            get(&cache, "www.example", t0 + Duration::from_secs(5)),
            Some((4, 5, true))
        );
        // The key ignores case.
        assert_eq!(get(&cache, "WWW.Example", t0).map(|(t, _, _)| t), Some(4));
        assert_eq!(
            get(&cache, "www.example", t0 + Duration::from_secs(300)),
            None
        );
        assert!(cache.is_empty(), "an expired entry is removed on lookup");
    }

    #[test]
    fn an_expired_entry_is_kept_for_serve_stale_and_no_longer() {
        let cache = Cache::new(100).serving_stale(Duration::from_secs(60));
        let t0 = Instant::now();
        put(&cache, "www.example", 4, 10, t0);
        let stale = |at: u64| {
            cache.lookup_stale(&key("www.example"), t0 + Duration::from_secs(at), |a| {
                a.msg[12]
            })
        };
        let later = t0 + Duration::from_secs(30);
        assert_eq!(get(&cache, "www.example", later), None, "expired: a miss");
        assert_eq!(cache.len(), 1, "but kept for serve-stale");
        assert_eq!(stale(30), Some(4));
        assert_eq!(stale(69), Some(4));
        assert_eq!(stale(70), None, "10 s TTL + 60 s window are over");
        assert_eq!(
            get(&cache, "www.example", t0 + Duration::from_secs(70)),
            None
        );
        assert!(cache.is_empty(), "past the window it is removed");
        let off = Cache::new(100);
        put(&off, "www.example", 4, 10, t0);
        assert_eq!(
            off.lookup_stale(&key("www.example"), t0 + Duration::from_secs(11), |a| a.msg
                [12]),
            None,
            "serve-stale off"
        );
    }

    #[test]
    fn key_separates_type_do_and_cd() {
        let name = b"\x01a\x00";
        let base = Key::new(name, 1, 1, false, false);
        for other in [
            Key::new(name, 28, 1, false, false),
            Key::new(name, 1, 1, true, false),
            Key::new(name, 1, 1, false, true),
        ] {
            assert_ne!(base.bytes(), other.bytes());
        }
    }

    #[test]
    fn is_bounded() {
        let cache = Cache::new(128);
        let now = Instant::now();
        for i in 0..2000u32 {
            put(&cache, &format!("n{i}.test"), 1, 60, now);
        }
        assert!(cache.len() <= 128 + SHARDS, "{}", cache.len());
    }

    #[test]
    fn eviction_prefers_what_expires_first_across_the_whole_table() {
        // A full cache of short-lived entries, then as many long-lived ones:
        // a random sample finds the short-lived wherever they sit, so nearly
        // all of them go and nearly all of the newcomers stay. Sampling the
        // first few entries in table order instead keeps evicting the same
        // region, newcomers included, and leaves most short-lived ones.
        let cache = Cache::new(4096);
        let now = Instant::now();
        for i in 0..4096u32 {
            put(&cache, &format!("short{i}.test"), 1, 10, now);
        }
        for i in 0..4096u32 {
            put(&cache, &format!("long{i}.test"), 1, 3600, now);
        }
        let short = (0..4096)
            .filter(|i| get(&cache, &format!("short{i}.test"), now).is_some())
            .count();
        let long = (0..4096)
            .filter(|i| get(&cache, &format!("long{i}.test"), now).is_some())
            .count();
        assert!(short < 4096 / 5, "{short} short-lived entries survived");
        assert!(long > 4096 * 4 / 5, "only {long} long-lived entries kept");
    }

    #[test]
    fn disabled_cache_never_hits() {
        let cache = Cache::new(0);
        assert!(!cache.is_enabled());
        put(&cache, "a", 1, 60, Instant::now());
        assert_eq!(get(&cache, "a", Instant::now()), None);
    }
}
