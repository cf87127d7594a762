//! The matcher: a hashed trie over reversed labels.
//!
//! Every rule's name is one slot in a single open-addressing table, addressed
//! by a keyed hash of its labels read from the top level down: `us`, then
//! `zoom` folded in, then `us04web`. Because the hash is built label by
//! label, hashing a query once from the top yields the hash of every one of
//! its suffixes along the way (`us`, `zoom.us`, `us04web.zoom.us`), and the
//! lookup probes them from the deepest up: the first suffix that carries an
//! applicable rule is the most specific match.
//!
//! Why this shape:
//! - The probes' addresses depend only on the query's bytes, never on what an
//!   earlier probe read, so all of a name's cache misses are issued together
//!   (prefetched) instead of one after another as in a linked trie.
//! - No label bytes are stored: a slot is a 64-bit keyed hash and a 32-bit
//!   rule reference, five slots to a 64-byte line, so a probe reads one
//!   cache line and the table is ~14 bytes per name.
//! - The table is allocated on 2 MiB pages where the kernel allows it: at a
//!   million names it spans ~14 MB, far beyond what 4 KiB TLB entries cover,
//!   and a page walk per probe would otherwise cost more than the probe.
//!
//! The hash key is random per build, so nobody can craft colliding names; a
//! false match needs two distinct names to agree on all 64 bits.
//!
//! Each slot carries up to two rules: `apex` applies when the query *is* the
//! node's name, `below` when it is strictly under it. A plain rule fills
//! both, `*.name` only `below`, an RPZ exact name only `apex`.

use super::rule::{Scope, Verdict};

/// Index of a rule in the policy's rule table, with its verdict folded into
/// the top bit so the trie can settle allow-versus-block ties on its own,
/// and a bit saying the rule has an action of its own (an RPZ record's),
/// so rules without one never look anything up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleRef(u32);

const ALLOW_BIT: u32 = 1 << 31;
/// In a slot's `rule` field: the value indexes `pairs`, not a rule.
const PAIR_BIT: u32 = 1 << 30;
/// The rule's action is its own, not its category's.
const OWN_ACTION_BIT: u32 = 1 << 29;
/// The rule covers only names below its own (`*.name`): with the match's
/// depth this spells the rule for logs without reading the rule table.
const BELOW_BIT: u32 = 1 << 28;
/// An absent side of a pair.
const NO_RULE: u32 = u32::MAX;
/// Suffixes hashed and prefetched on the fast path; deeper names are rare.
const WINDOW: usize = 8;
/// Most labels a name can have (255 bytes of wire name).
const MAX_LABELS: usize = 128;

impl RuleRef {
    /// Largest rule index representable (28 bits: four flag bits above).
    pub const MAX_INDEX: u32 = BELOW_BIT - 1;

    pub fn new(index: u32, verdict: Verdict) -> Self {
        debug_assert!(index <= Self::MAX_INDEX);
        match verdict {
            Verdict::Block => Self(index),
            Verdict::Allow => Self(index | ALLOW_BIT),
        }
    }

    /// The same rule, marked as carrying an action of its own.
    pub fn with_own_action(self) -> Self {
        Self(self.0 | OWN_ACTION_BIT)
    }

    pub fn has_own_action(self) -> bool {
        self.0 & OWN_ACTION_BIT != 0
    }

    /// The same rule, marked as covering only the names below its own.
    pub fn with_below_only(self) -> Self {
        Self(self.0 | BELOW_BIT)
    }

    pub fn is_below_only(self) -> bool {
        self.0 & BELOW_BIT != 0
    }

    pub fn index(self) -> usize {
        (self.0 & Self::MAX_INDEX) as usize
    }

    pub fn verdict(self) -> Verdict {
        if self.0 & ALLOW_BIT != 0 {
            Verdict::Allow
        } else {
            Verdict::Block
        }
    }

    /// Which of two rules on the same node and side wins: allow beats block,
    /// otherwise the first one loaded stays.
    fn beats(self, incumbent: RuleRef) -> bool {
        self.verdict() == Verdict::Allow && incumbent.verdict() == Verdict::Block
    }
}

/// The winning rule for a name, and how many labels its own name has (so the
/// caller can name the rule: the last `depth` labels of the query).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub rule: RuleRef,
    pub depth: usize,
}

const SLOTS: usize = 5;

/// Five nodes: one cache line. `key == 0` marks an empty slot, so zeroed
/// memory is an empty table.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    key: [u64; SLOTS],
    /// A rule for both sides (`RuleRef` bits), or `PAIR_BIT | i`.
    rule: [u32; SLOTS],
    /// Non-zero when some key was placed past this bucket because it was
    /// full. A probe for an absent name stops at the first bucket without
    /// it; "stop at a bucket with room" would walk ~2.5 extra buckets per
    /// miss at this load, since most buckets are full.
    overflow: u32,
}

#[derive(Debug, Clone, Copy)]
struct Keys {
    seed: u64,
    k: u64,
}

impl Keys {
    fn random() -> Self {
        Self {
            seed: rand::random(),
            // Odd, so no bit of the multiplier is wasted.
            k: rand::random::<u64>() | 1,
        }
    }

    /// Folds one label (any case) into a parent's path hash.
    ///
    /// A label of up to seven bytes fits one word with its length in the
    /// spare top byte: one multiply. Longer labels fold a tagged length word
    /// first, then each 8 bytes. Either way the words fed in determine the
    /// label, so distinct labels never collide before the keyed mixing.
    #[inline(always)]
    fn child(&self, parent: u64, label: &[u8]) -> u64 {
        let len = label.len() as u64;
        if label.len() < 8 {
            let w = if label.is_empty() {
                0
            } else {
                lower_word(load_tail(label))
            } | (len << 56);
            return mix(parent ^ w, self.k);
        }
        self.child_long(parent, label)
    }

    #[inline(always)]
    fn child_long(&self, parent: u64, label: &[u8]) -> u64 {
        // Bit 63 set: a short label's word never has it (its top byte is its
        // length, at most 7).
        let tag = ((label.len() as u64) << 56) | (1 << 63);
        let n = label.len();
        if n <= 16 {
            // Two overlapping words and the length determine the label.
            let first = lower_word(load8(&label[..8]));
            let last = lower_word(load8(&label[n - 8..]));
            return mix(mix(parent ^ tag, self.k) ^ first, self.k ^ last);
        }
        self.child_longer(parent, label, tag)
    }

    #[cold]
    #[inline(never)]
    fn child_longer(&self, parent: u64, label: &[u8], tag: u64) -> u64 {
        let mut h = mix(parent ^ tag, self.k);
        let mut chunks = label.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            h = mix(h ^ lower_word(u64::from_le_bytes(word)), self.k);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            h = mix(h ^ lower_word(load_tail(rest)), self.k);
        }
        h
    }
}

/// Reads 8 bytes as a little-endian word.
#[inline(always)]
fn load8(b: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&b[..8]);
    u64::from_le_bytes(word)
}

/// Reads 1–7 bytes as a little-endian word without a variable-length copy
/// (which would be a `memcpy` call per label): overlapping fixed-size reads
/// cover every byte.
#[inline(always)]
fn load_tail(b: &[u8]) -> u64 {
    let n = b.len();
    if n >= 4 {
        let lo = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let hi = u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]);
        u64::from(lo) | (u64::from(hi) << (8 * (n - 4)))
    } else {
        u64::from(b[0])
            | (u64::from(b[n / 2]) << (8 * (n / 2)))
            | (u64::from(b[n - 1]) << (8 * (n - 1)))
    }
}

/// One round of a folded 64×64→128 multiply (the wyhash/foldhash core).
#[inline(always)]
fn mix(x: u64, k: u64) -> u64 {
    let m = u128::from(x) * u128::from(k);
    (m as u64) ^ ((m >> 64) as u64)
}

/// The slot key for a path hash: never 0, which marks an empty slot.
#[inline(always)]
fn slot_key(h: u64) -> u64 {
    h | 1
}

/// Asks for the cache line at `p` ahead of its use; a hint, never a fault
/// (it may point anywhere).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch(p.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Bucket in `0..cap` from the hash's high bits (Lemire's multiply-shift,
/// so the table need not be a power of two).
#[inline(always)]
fn home(h: u64, cap: usize) -> usize {
    (((h >> 32) * cap as u64) >> 32) as usize
}

/// The immutable matcher.
pub struct Trie {
    /// A Bloom filter over the slot keys, small enough to stay in the L2
    /// cache: most suffixes of most queries are no rule's name, and this
    /// answers that without touching the table.
    filter: Filter,
    table: Table,
    /// (apex, below) for nodes whose two sides differ.
    pairs: Box<[[u32; 2]]>,
    keys: Keys,
}

impl Trie {
    /// The most specific rule for a name given as labels from the top level
    /// down (`["us", "zoom", "www"]` for `www.zoom.us`). Labels may be in any
    /// case.
    ///
    /// Every suffix's hash is computed first, prefetching its bucket so the
    /// cache misses of all probes are in flight together. Then the walk goes
    /// bottom-up: the deepest suffix with an applicable rule is the answer,
    /// so a listed name costs one probe and a subdomain of one two.
    #[inline]
    pub fn lookup<'a, I>(&self, labels_from_top: I) -> Option<Match>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        if self.table.len() == 0 {
            return None;
        }
        let mut labels = labels_from_top.into_iter();
        let mut paths = [0u64; WINDOW];
        let mut h = self.keys.seed;
        let mut n = 0;
        while n < WINDOW {
            let Some(label) = labels.next() else {
                if n > 0 {
                    // The whole name is probed first; start its line
                    // loading while the filter is consulted.
                    self.table.prefetch(home(paths[n - 1], self.table.len()));
                }
                return self.deepest(&paths[..n]);
            };
            h = self.keys.child(h, label);
            paths[n] = h;
            n += 1;
        }
        self.deep_name(&paths, h, labels)
    }

    /// Names deeper than the window are rare: hash the rest, then the same
    /// bottom-up walk.
    #[cold]
    #[inline(never)]
    fn deep_name<'a>(
        &self,
        window: &[u64; WINDOW],
        mut h: u64,
        rest: impl Iterator<Item = &'a [u8]>,
    ) -> Option<Match> {
        let mut paths = [0u64; MAX_LABELS];
        paths[..WINDOW].copy_from_slice(window);
        let mut n = WINDOW;
        for label in rest {
            if n == MAX_LABELS {
                // Not a valid DNS name; nothing can be listed this deep.
                return None;
            }
            h = self.keys.child(h, label);
            paths[n] = h;
            n += 1;
        }
        self.deepest(&paths[..n])
    }

    /// Bottom-up over a whole name's suffix hashes (`paths[i]` has `i + 1`
    /// labels; the last is the name itself).
    #[inline(always)]
    fn deepest(&self, paths: &[u64]) -> Option<Match> {
        let n = paths.len();
        for depth in (1..=n).rev() {
            let h = paths[depth - 1];
            if !self.filter.may_contain(slot_key(h)) {
                continue;
            }
            let Some(node_rule) = self.find(h) else {
                continue;
            };
            let (apex, below) = self.sides(node_rule);
            let rule = if depth == n { apex } else { below };
            if rule != NO_RULE {
                return Some(Match {
                    rule: RuleRef(rule),
                    depth,
                });
            }
        }
        None
    }

    /// Number of nodes (distinct rule names).
    pub fn node_count(&self) -> usize {
        self.table
            .buckets()
            .iter()
            .map(|b| b.key.iter().filter(|k| **k != 0).count())
            .sum()
    }

    /// Heap bytes held by the trie.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(self.table.buckets())
            + std::mem::size_of_val(&*self.pairs)
            + self.filter.heap_bytes()
    }

    /// The node's rule field, if `h` is a node.
    #[inline(always)]
    fn find(&self, h: u64) -> Option<u32> {
        let buckets = self.table.buckets();
        let cap = buckets.len();
        let key = slot_key(h);
        let mut i = home(h, cap);
        loop {
            let b = &buckets[i];
            // All five compares, then one branch: which slot holds the key
            // varies from name to name, so an early exit would mispredict.
            let mut hits = 0u32;
            for s in 0..SLOTS {
                hits |= u32::from(b.key[s] == key) << s;
            }
            if hits != 0 {
                return Some(b.rule[hits.trailing_zeros() as usize]);
            }
            if b.overflow == 0 {
                return None;
            }
            i += 1;
            if i == cap {
                i = 0;
            }
        }
    }

    #[inline(always)]
    fn sides(&self, rule: u32) -> (u32, u32) {
        // A stored field is a rule or a pair, never `NO_RULE` (whose
        // bits would read as a pair).
        if rule & PAIR_BIT != 0 {
            let [apex, below] = self.pairs[(rule & !PAIR_BIT) as usize];
            (apex, below)
        } else {
            (rule, rule)
        }
    }
}

/// A register-blocked Bloom filter: each key sets three bits of one 64-bit
/// word, so a test is one load. At 12 bits a key about 1.5 % of absent keys
/// pass (and then cost one table probe).
struct Filter {
    words: Box<[u64]>,
}

const FILTER_BITS_PER_KEY: usize = 12;

impl Filter {
    fn new(keys: usize, all: impl Iterator<Item = u64>) -> Self {
        let len = (keys * FILTER_BITS_PER_KEY).div_ceil(64).max(1);
        let mut words = vec![0u64; len].into_boxed_slice();
        for key in all {
            let (w, mask) = Self::locate(key, len);
            words[w] |= mask;
        }
        Self { words }
    }

    /// The word (from the low 32 bits) and three bit positions (from the
    /// high ones) of a key.
    #[inline(always)]
    fn locate(key: u64, len: usize) -> (usize, u64) {
        let w = ((key & 0xffff_ffff) * len as u64) >> 32;
        let mask = (1u64 << ((key >> 32) & 63))
            | (1u64 << ((key >> 38) & 63))
            | (1u64 << ((key >> 44) & 63));
        (w as usize, mask)
    }

    #[inline(always)]
    fn may_contain(&self, key: u64) -> bool {
        let (w, mask) = Self::locate(key, self.words.len());
        self.words[w] & mask == mask
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.words)
    }
}

/// Collects rules straight into the final table, then shrinks it to fit.
pub struct TrieBuilder {
    keys: Keys,
    table: Table,
    nodes: usize,
    pairs: Vec<[u32; 2]>,
    /// Rules hashed and their buckets prefetched, not yet placed: a ring
    /// of [`AHEAD`], placed first in first out (so rules for one name merge
    /// in the order given).
    pending: [(u64, Scope, RuleRef); AHEAD],
    queued: usize,
    next: usize,
}

/// How many rules are hashed ahead of being placed. Placing a rule is a
/// cache miss into a table of tens of megabytes; with the bucket fetched
/// while the next few names are hashed, a million-rule build spent about
/// 35% less time inserting (measured, 1M names: insert 170 -> 110 ms).
const AHEAD: usize = 8;

impl Default for TrieBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Largest share of slots used: buckets of five rarely overflow below it.
const LOAD_NUM: usize = 17;
const LOAD_DEN: usize = 20;

/// Buckets for `nodes` at the target load.
fn buckets_for(nodes: usize) -> usize {
    if nodes == 0 {
        0
    } else {
        (nodes * LOAD_DEN / LOAD_NUM).div_ceil(SLOTS) + 1
    }
}

impl TrieBuilder {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// `rules` sizes the table up front (a rule adds at most one node), so a
    /// big load never rehashes; [`TrieBuilder::build`] shrinks it when many
    /// rules shared a name.
    pub fn with_capacity(rules: usize) -> Self {
        Self {
            keys: Keys::random(),
            table: Table::zeroed(buckets_for(rules.max(16))),
            nodes: 0,
            pairs: Vec::new(),
            pending: [(0, Scope::Exact, RuleRef::new(0, Verdict::Block)); AHEAD],
            queued: 0,
            next: 0,
        }
    }

    /// Adds a rule for `name` (lowercase, validated, dot-separated).
    pub fn insert(&mut self, name: &str, scope: Scope, rule: RuleRef) {
        let h = self.name_hash(name.as_bytes());
        prefetch(
            self.table
                .buckets()
                .as_ptr()
                .wrapping_add(home(h, self.table.len())),
        );
        if self.queued == AHEAD {
            let (h, scope, rule) = self.pending[self.next];
            self.place(h, scope, rule);
        } else {
            self.queued += 1;
        }
        self.pending[self.next] = (h, scope, rule);
        self.next = (self.next + 1) % AHEAD;
    }

    /// Places every rule still in the ring.
    fn flush(&mut self) {
        let first = (self.next + AHEAD - self.queued) % AHEAD;
        for i in 0..self.queued {
            let (h, scope, rule) = self.pending[(first + i) % AHEAD];
            self.place(h, scope, rule);
        }
        self.queued = 0;
        self.next = 0;
    }

    /// The node key of `name`, hashed label by label from the top as a
    /// lookup walks it.
    fn name_hash(&self, name: &[u8]) -> u64 {
        let mut h = self.keys.seed;
        let mut end = name.len();
        loop {
            // Labels are short: a plain scan beats memrchr's set-up.
            let start = name[..end]
                .iter()
                .rposition(|b| *b == b'.')
                .map_or(0, |i| i + 1);
            h = self.keys.child(h, &name[start..end]);
            if start == 0 {
                return h;
            }
            end = start - 1;
        }
    }

    fn place(&mut self, h: u64, scope: Scope, rule: RuleRef) {
        let (apex, below) = match scope {
            Scope::Subtree => (true, true),
            Scope::Below => (false, true),
            Scope::Exact => (true, false),
        };
        if (self.nodes + 1) * LOAD_DEN > self.table.len() * SLOTS * LOAD_NUM {
            self.resize(buckets_for((self.nodes + 1) * 2));
        }
        let cap = self.table.len();
        let key = slot_key(h);
        let buckets = self.table.buckets_mut();
        let mut i = home(h, cap);
        loop {
            let b = &mut buckets[i];
            for s in 0..SLOTS {
                if b.key[s] == key {
                    b.rule[s] = merge(b.rule[s], &mut self.pairs, rule, apex, below);
                    return;
                }
                if b.key[s] == 0 {
                    b.key[s] = key;
                    b.rule[s] = merge(NO_RULE, &mut self.pairs, rule, apex, below);
                    self.nodes += 1;
                    return;
                }
            }
            b.overflow = 1;
            i += 1;
            if i == cap {
                i = 0;
            }
        }
    }

    /// Re-places every slot into a table of `cap` buckets. The stored keys
    /// are the hashes themselves, so no name is hashed again.
    fn resize(&mut self, cap: usize) {
        let mut table = Table::zeroed(cap);
        let buckets = table.buckets_mut();
        for b in self.table.buckets() {
            for s in 0..SLOTS {
                if b.key[s] == 0 {
                    continue;
                }
                let mut i = home(b.key[s], cap);
                while buckets[i].key[SLOTS - 1] != 0 {
                    buckets[i].overflow = 1;
                    i += 1;
                    if i == cap {
                        i = 0;
                    }
                }
                let slot = buckets[i].key.iter().position(|k| *k == 0).unwrap_or(0);
                buckets[i].key[slot] = b.key[s];
                buckets[i].rule[slot] = b.rule[s];
            }
        }
        self.table = table;
    }

    pub fn build(mut self) -> Trie {
        self.flush();
        // Lists repeat names (the public ones overlap by ~40 %): give the
        // memory sized for every rule back when the names were far fewer.
        let fit = buckets_for(self.nodes);
        if fit * 4 < self.table.len() * 3 {
            self.resize(fit);
        }
        let filter = Filter::new(
            self.nodes,
            self.table
                .buckets()
                .iter()
                .flat_map(|b| b.key)
                .filter(|k| *k != 0),
        );
        Trie {
            filter,
            table: self.table,
            pairs: self.pairs.into_boxed_slice(),
            keys: self.keys,
        }
    }
}

/// A node's rule field after adding `rule` to the sides it applies to.
fn merge(field: u32, pairs: &mut Vec<[u32; 2]>, rule: RuleRef, apex: bool, below: bool) -> u32 {
    let (mut a, mut b, pair) = if field != NO_RULE && field & PAIR_BIT != 0 {
        let i = (field & !PAIR_BIT) as usize;
        let [a, b] = pairs[i];
        (a, b, Some(i))
    } else {
        (field, field, None)
    };
    if apex {
        place(&mut a, rule);
    }
    if below {
        place(&mut b, rule);
    }
    match pair {
        // A pair that became uniform stays a pair: harmless, and rare.
        Some(i) => {
            pairs[i] = [a, b];
            field
        }
        None if a == b => a,
        None => {
            pairs.push([a, b]);
            PAIR_BIT | (pairs.len() - 1) as u32
        }
    }
}

fn place(side: &mut u32, rule: RuleRef) {
    if *side == NO_RULE || rule.beats(RuleRef(*side)) {
        *side = rule.0;
    }
}

/// The slot table: zeroed buckets, on huge pages when it is big enough for
/// them to matter and the kernel grants them.
///
/// Memory comes straight from `mmap` on Linux rather than the allocator: it
/// arrives zeroed (an empty table) without being touched, so the
/// huge-page advice lands before the first fault, and it is 2 MiB aligned.
/// Elsewhere it is an ordinary zeroed allocation.
struct Table {
    ptr: std::ptr::NonNull<Bucket>,
    len: usize,
}

// SAFETY: `Table` owns its memory exclusively, like a `Box<[Bucket]>`.
unsafe impl Send for Table {}
// SAFETY: shared access only reads.
unsafe impl Sync for Table {}

impl Table {
    fn zeroed(len: usize) -> Self {
        if len == 0 {
            return Self {
                ptr: std::ptr::NonNull::dangling(),
                len: 0,
            };
        }
        let ptr = alloc_buckets(len);
        Self { ptr, len }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Asks the CPU to start loading bucket `i` (in bounds).
    #[inline(always)]
    fn prefetch(&self, i: usize) {
        #[cfg(target_arch = "x86_64")]
        if i < self.len {
            // SAFETY: prefetching is a hint with no architectural effect,
            // and the address is inside our table. SSE is baseline on x86_64.
            unsafe {
                use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
                _mm_prefetch::<_MM_HINT_T0>(self.ptr.as_ptr().add(i).cast());
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }

    #[inline(always)]
    fn buckets(&self) -> &[Bucket] {
        // SAFETY: `ptr` points to `len` initialised buckets we own (or is
        // dangling with `len == 0`, which is a valid empty slice).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn buckets_mut(&mut self) -> &mut [Bucket] {
        // SAFETY: as in `buckets`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: allocated by `alloc_buckets(self.len)`.
            unsafe { free_buckets(self.ptr, self.len) }
        }
    }
}

/// The layout of `len` buckets. The rule limit keeps `len` far below an
/// overflow; were it reached, it fails as an out-of-memory would.
fn table_layout(len: usize) -> std::alloc::Layout {
    std::alloc::Layout::array::<Bucket>(len)
        .unwrap_or_else(|_| std::alloc::handle_alloc_error(std::alloc::Layout::new::<Bucket>()))
}

#[cfg(target_os = "linux")]
const HUGE_PAGE: usize = 2 << 20;

#[cfg(target_os = "linux")]
fn mapping_bytes(len: usize) -> usize {
    (len * std::mem::size_of::<Bucket>()).next_multiple_of(HUGE_PAGE)
}

/// `len` zeroed buckets (`len > 0`).
#[cfg(target_os = "linux")]
fn alloc_buckets(len: usize) -> std::ptr::NonNull<Bucket> {
    let bytes = mapping_bytes(len);
    // Map one huge page more than needed, then unmap the unaligned ends, so
    // the table starts on a 2 MiB boundary.
    let span = bytes + HUGE_PAGE;
    // SAFETY: a fresh private anonymous mapping; no existing memory is
    // affected. Failure is checked below.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        std::alloc::handle_alloc_error(table_layout(len));
    }
    let start = raw as usize;
    let aligned = start.next_multiple_of(HUGE_PAGE);
    // SAFETY: both ranges lie inside the mapping just made and are page
    // aligned (mmap returns page-aligned memory; HUGE_PAGE is a multiple).
    // Advice is only advice: without transparent huge pages the table
    // stays on small pages and works the same.
    unsafe {
        if aligned > start {
            libc::munmap(raw, aligned - start);
        }
        let end = aligned + bytes;
        if start + span > end {
            libc::munmap(end as *mut libc::c_void, start + span - end);
        }
        libc::madvise(aligned as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE);
    }
    // `aligned` is non-null: it is at least `start`, which mmap made non-null.
    std::ptr::NonNull::new(aligned as *mut Bucket).unwrap_or(std::ptr::NonNull::dangling())
}

/// # Safety
/// `ptr` must come from `alloc_buckets(len)` and not be used afterwards.
#[cfg(target_os = "linux")]
unsafe fn free_buckets(ptr: std::ptr::NonNull<Bucket>, len: usize) {
    // SAFETY: the caller's contract: exactly the range `alloc_buckets` kept.
    unsafe {
        libc::munmap(ptr.as_ptr().cast(), mapping_bytes(len));
    }
}

#[cfg(not(target_os = "linux"))]
fn alloc_buckets(len: usize) -> std::ptr::NonNull<Bucket> {
    let layout = table_layout(len);
    // SAFETY: non-zero size (len > 0); all-zero bytes are an empty bucket.
    let raw = unsafe { std::alloc::alloc_zeroed(layout) };
    std::ptr::NonNull::new(raw.cast()).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
}

/// # Safety
/// `ptr` must come from `alloc_buckets(len)` and not be used afterwards.
#[cfg(not(target_os = "linux"))]
unsafe fn free_buckets(ptr: std::ptr::NonNull<Bucket>, len: usize) {
    let layout = table_layout(len);
    // SAFETY: allocated with this layout by `alloc_buckets`.
    unsafe { std::alloc::dealloc(ptr.as_ptr().cast(), layout) }
}

/// ASCII-lowercases eight bytes at once: sets bit 0x20 in every byte that is
/// in `A..=Z`, leaves all others (including non-ASCII) alone.
#[inline(always)]
fn lower_word(w: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low = w & LOW7;
    let ge_a = low + 0x3f3f_3f3f_3f3f_3f3f; // high bit set where byte >= 'A'
    let gt_z = low + 0x2525_2525_2525_2525; // high bit set where byte > 'Z'
    let upper = ge_a & !gt_z & !w & HIGH;
    w | (upper >> 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(name: &str) -> Vec<&[u8]> {
        name.rsplit('.').map(str::as_bytes).collect()
    }

    fn build(rules: &[(&str, Scope, Verdict)]) -> Trie {
        let mut b = TrieBuilder::new();
        for (i, (name, scope, verdict)) in rules.iter().enumerate() {
            b.insert(name, *scope, RuleRef::new(i as u32, *verdict));
        }
        b.build()
    }

    fn hit(t: &Trie, name: &str) -> Option<(usize, Verdict, usize)> {
        t.lookup(labels(name))
            .map(|m| (m.rule.index(), m.rule.verdict(), m.depth))
    }

    #[test]
    fn load_tail_reads_every_byte() {
        for n in 1..8 {
            let b: Vec<u8> = (1..=n as u8).collect();
            let mut word = [0u8; 8];
            word[..n].copy_from_slice(&b);
            assert_eq!(load_tail(&b), u64::from_le_bytes(word), "{n} bytes");
        }
    }

    #[test]
    fn names_deeper_than_the_prefetch_window() {
        let deep: Vec<String> = (0..40).map(|i| format!("l{i}")).collect();
        let name = deep.join(".");
        let parent = deep[1..].join(".");
        let t = build(&[(parent.as_str(), Scope::Below, Verdict::Block)]);
        assert_eq!(hit(&t, &name), Some((0, Verdict::Block, 39)));
        assert_eq!(hit(&t, &parent), None);
    }

    #[test]
    fn lower_word_lowercases_only_ascii_capitals() {
        for b in 0u8..=255 {
            let w = u64::from_le_bytes([b; 8]);
            let expect = u64::from_le_bytes([b.to_ascii_lowercase(); 8]);
            assert_eq!(lower_word(w), expect, "byte {b:#x}");
        }
    }

    #[test]
    fn subtree_rule_covers_name_and_children_only() {
        let t = build(&[("zoom.us", Scope::Subtree, Verdict::Block)]);
        assert_eq!(hit(&t, "zoom.us"), Some((0, Verdict::Block, 2)));
        assert_eq!(hit(&t, "US04WEB.Zoom.US"), Some((0, Verdict::Block, 2)));
        assert_eq!(hit(&t, "notzoom.us"), None);
        assert_eq!(hit(&t, "zoom.us.evil.test"), None);
        assert_eq!(hit(&t, "us"), None);
    }

    #[test]
    fn wildcard_rule_covers_children_only() {
        let t = build(&[("zoom.us", Scope::Below, Verdict::Block)]);
        assert_eq!(hit(&t, "zoom.us"), None);
        assert_eq!(hit(&t, "a.zoom.us"), Some((0, Verdict::Block, 2)));
    }

    #[test]
    fn exact_rule_covers_name_only() {
        let t = build(&[("zoom.us", Scope::Exact, Verdict::Block)]);
        assert_eq!(hit(&t, "zoom.us"), Some((0, Verdict::Block, 2)));
        assert_eq!(hit(&t, "a.zoom.us"), None);
    }

    #[test]
    fn different_rules_on_the_two_sides_of_a_node() {
        let t = build(&[
            ("zoom.us", Scope::Below, Verdict::Block),
            ("zoom.us", Scope::Exact, Verdict::Allow),
        ]);
        assert_eq!(hit(&t, "zoom.us"), Some((1, Verdict::Allow, 2)));
        assert_eq!(hit(&t, "a.zoom.us"), Some((0, Verdict::Block, 2)));
    }

    #[test]
    fn most_specific_wins_both_ways_and_allow_wins_ties() {
        let t = build(&[
            ("zoom.us", Scope::Subtree, Verdict::Block),
            ("support.zoom.us", Scope::Subtree, Verdict::Allow),
            ("example.com", Scope::Subtree, Verdict::Allow),
            ("ads.example.com", Scope::Subtree, Verdict::Block),
            ("tie.test", Scope::Subtree, Verdict::Block),
            ("tie.test", Scope::Subtree, Verdict::Allow),
        ]);
        assert_eq!(
            hit(&t, "x.support.zoom.us").map(|h| h.1),
            Some(Verdict::Allow)
        );
        assert_eq!(hit(&t, "web.zoom.us").map(|h| h.1), Some(Verdict::Block));
        assert_eq!(
            hit(&t, "x.ads.example.com").map(|h| h.1),
            Some(Verdict::Block)
        );
        assert_eq!(
            hit(&t, "www.example.com").map(|h| h.1),
            Some(Verdict::Allow)
        );
        assert_eq!(hit(&t, "tie.test"), Some((5, Verdict::Allow, 2)));
    }

    #[test]
    fn many_rules() {
        let names: Vec<String> = (0..5000).map(|i| format!("n{i}.example.org")).collect();
        let mut b = TrieBuilder::new();
        for (i, n) in names.iter().enumerate() {
            b.insert(n, Scope::Subtree, RuleRef::new(i as u32, Verdict::Block));
        }
        let t = b.build();
        for (i, n) in names.iter().enumerate() {
            assert_eq!(hit(&t, n), Some((i, Verdict::Block, 3)));
        }
        assert_eq!(hit(&t, "n5000.example.org"), None);
        assert_eq!(t.node_count(), 5000);
    }

    #[test]
    fn oversized_builder_shrinks_and_still_finds_everything() {
        let mut b = TrieBuilder::with_capacity(200_000);
        let names: Vec<String> = (0..3000).map(|i| format!("x{i}.test")).collect();
        for (i, n) in names.iter().enumerate() {
            // Every name twice, as overlapping public lists do.
            b.insert(
                n,
                Scope::Subtree,
                RuleRef::new(2 * i as u32, Verdict::Block),
            );
            b.insert(
                n,
                Scope::Subtree,
                RuleRef::new(2 * i as u32 + 1, Verdict::Block),
            );
        }
        let t = b.build();
        assert_eq!(t.node_count(), 3000);
        assert!(
            t.table.len() < buckets_for(200_000) / 10,
            "table was not shrunk"
        );
        for (i, n) in names.iter().enumerate() {
            assert_eq!(hit(&t, n), Some((2 * i, Verdict::Block, 2)), "{n}");
        }
        assert_eq!(hit(&t, "x3000.test"), None);
    }

    #[test]
    fn long_labels_of_every_length_match_in_any_case() {
        let names: Vec<String> = (1..=63)
            .map(|n| format!("{}.example", "abcdefghij".repeat(7)[..n].to_owned()))
            .collect();
        let mut b = TrieBuilder::new();
        for (i, n) in names.iter().enumerate() {
            b.insert(n, Scope::Subtree, RuleRef::new(i as u32, Verdict::Block));
        }
        let t = b.build();
        for (i, n) in names.iter().enumerate() {
            assert_eq!(
                hit(&t, &n.to_ascii_uppercase()),
                Some((i, Verdict::Block, 2))
            );
            // One byte more or less is another label.
            let longer = format!("z{n}");
            assert_eq!(hit(&t, &longer), None, "{longer}");
        }
        assert_eq!(t.node_count(), 63);
    }

    #[test]
    fn empty_trie_matches_nothing() {
        let t = TrieBuilder::new().build();
        assert_eq!(hit(&t, "anything.test"), None);
    }
}
