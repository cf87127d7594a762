//! The matcher: a hashed trie over reversed labels.
//!
//! Every node of the trie — every suffix of every rule's name, `us`,
//! `zoom.us`, `us04web.zoom.us` — is one slot in a single open-addressing
//! table, addressed by a hash of its path from the root. Walking
//! `us04web.zoom.us` hashes `us`, then folds in `zoom`, then `us04web`, and
//! probes the table at each step, stopping at the first suffix that is not a
//! node.
//!
//! Why hashing the path rather than storing child links: the next probe's
//! address depends only on the query's bytes, never on what the previous
//! probe read, so the CPU can have all of a name's probes in flight at once
//! instead of taking one cache miss after another. No label bytes are
//! stored either, so a slot is 12 bytes and a probe is one cache line.
//!
//! A slot is identified by 96 bits of a keyed hash (which bucket, plus two
//! independent 32-bit fingerprints); the key is random per build, so nobody
//! can craft a name that collides. A false match needs a 2^-64 coincidence
//! on top of landing in the same probe run.
//!
//! Each node carries up to two rules: `apex` applies when the query *is* the
//! node's name, `below` when it is strictly under it. A plain rule fills
//! both, `*.name` only `below`, an RPZ exact name only `apex`. The deepest
//! applicable rule on the path is the most specific one.

use rustc_hash::FxHashMap;

use super::rule::{Scope, Verdict};

/// Index of a rule in the policy's rule table, with its verdict folded into
/// the top bit so the trie can settle allow-versus-block ties on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleRef(u32);

const ALLOW_BIT: u32 = 1 << 31;
/// In a slot's `rule` field: the value indexes `pairs`, not a rule.
const PAIR_BIT: u32 = 1 << 30;
/// An interior node, or an absent side of a pair.
const NO_RULE: u32 = u32::MAX;
/// Suffixes hashed and prefetched together; deeper names are rare.
const WINDOW: usize = 16;

impl RuleRef {
    /// Largest rule index representable (30 bits: two flag bits above).
    pub const MAX_INDEX: u32 = PAIR_BIT - 1;

    pub fn new(index: u32, verdict: Verdict) -> Self {
        debug_assert!(index <= Self::MAX_INDEX);
        match verdict {
            Verdict::Block => Self(index),
            Verdict::Allow => Self(index | ALLOW_BIT),
        }
    }

    pub fn index(self) -> usize {
        (self.0 & !ALLOW_BIT) as usize
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

/// Five nodes: one cache line. `fp == 0` marks an empty slot. A probe reads
/// one bucket and almost always ends there.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    fp: [u32; SLOTS],
    check: [u32; SLOTS],
    /// `NO_RULE`; a subtree rule (`RuleRef` bits); or `PAIR_BIT | i`.
    rule: [u32; SLOTS],
}

const SLOTS: usize = 5;

const EMPTY: Bucket = Bucket {
    fp: [0; SLOTS],
    check: [0; SLOTS],
    rule: [NO_RULE; SLOTS],
};

/// A node's path hash: 64 bits that pick the bucket and fingerprint, and 64
/// more from an independently keyed state, of which 32 are kept as a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PathHash {
    h: u64,
    c: u64,
}

#[derive(Debug, Clone, Copy)]
struct Keys {
    seed_h: u64,
    seed_c: u64,
    k_h: u64,
    k_c: u64,
}

impl Keys {
    fn random() -> Self {
        // Odd multipliers keep the mixing invertible-ish; the seeds are what
        // make the hash unpredictable from outside.
        Self {
            seed_h: rand::random(),
            seed_c: rand::random(),
            k_h: rand::random::<u64>() | 1,
            k_c: rand::random::<u64>() | 1,
        }
    }

    fn root(&self) -> PathHash {
        PathHash {
            h: self.seed_h,
            c: self.seed_c,
        }
    }

    /// Folds one label (any case) into a parent's path hash.
    ///
    /// A label of up to seven bytes fits one word with its length in the
    /// spare top byte, so it costs one multiply per state; longer labels
    /// fold their length in first. Either way the words fed in determine the
    /// label, so distinct labels never collide before the keyed mixing.
    #[inline(always)]
    fn child(&self, parent: PathHash, label: &[u8]) -> PathHash {
        let len = label.len() as u64;
        if label.len() < 8 {
            let w = if label.is_empty() {
                0
            } else {
                lower_word(load_tail(label))
            } | (len << 56);
            return PathHash {
                h: mix(parent.h ^ w, self.k_h),
                c: mix(parent.c ^ w, self.k_c),
            };
        }
        // The prefix word has bit 63 set; a short label's word never does
        // (its top byte is its length, at most 7).
        let tag = (len << 56) | (1 << 63);
        let mut h = mix(parent.h ^ tag, self.k_h);
        let mut c = mix(parent.c ^ tag, self.k_c);
        let mut chunks = label.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let w = lower_word(u64::from_le_bytes(word));
            h = mix(h ^ w, self.k_h);
            c = mix(c ^ w, self.k_c);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let w = lower_word(load_tail(rest));
            h = mix(h ^ w, self.k_h);
            c = mix(c ^ w, self.k_c);
        }
        PathHash { h, c }
    }
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

impl PathHash {
    #[inline]
    fn fp(self) -> u32 {
        (self.h as u32) | 1
    }

    #[inline]
    fn check(self) -> u32 {
        self.c as u32
    }

    /// Bucket in `0..cap` from the hash's high bits (Lemire's multiply-shift,
    /// so the table need not be a power of two).
    #[inline]
    fn bucket(self, cap: usize) -> usize {
        (((self.h >> 32) * cap as u64) >> 32) as usize
    }
}

/// The immutable matcher.
pub struct Trie {
    buckets: Box<[Bucket]>,
    /// (apex, below) for nodes whose two sides differ.
    pairs: Box<[[u32; 2]]>,
    keys: Keys,
}

impl Trie {
    /// The most specific rule for a name given as labels from the top level
    /// down (`["us", "zoom", "www"]` for `www.zoom.us`). Labels may be in any
    /// case.
    ///
    /// Every suffix's hash is computed first, touching its bucket so the
    /// cache misses of all probes are in flight together. Then the walk goes
    /// bottom-up: the deepest suffix that is a node with an applicable rule
    /// is the answer, so a listed name costs one probe and a subdomain of
    /// one two.
    #[inline]
    pub fn lookup<'a, I>(&self, labels_from_top: I) -> Option<Match>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let cap = self.buckets.len();
        if cap == 0 {
            return None;
        }
        let mut labels = labels_from_top.into_iter();
        let mut paths = [PathHash { h: 0, c: 0 }; WINDOW];
        let mut path = self.keys.root();
        let mut n = 0;
        let mut touched = 0u32;
        while n < WINDOW {
            let Some(label) = labels.next() else { break };
            path = self.keys.child(path, label);
            paths[n] = path;
            // An independent load per suffix: nothing waits on it yet.
            touched ^= self.buckets[path.bucket(cap)].fp[0];
            n += 1;
        }
        std::hint::black_box(touched);
        match labels.next() {
            None => self.deepest(&paths[..n]),
            // Names deeper than the window are rare: walk them top-down.
            Some(next) => self.walk_down(&paths, n, path, next, labels),
        }
    }

    /// Bottom-up over a whole name's suffix hashes (`paths[i]` has `i + 1`
    /// labels; the last is the name itself).
    #[inline]
    fn deepest(&self, paths: &[PathHash]) -> Option<Match> {
        let n = paths.len();
        for depth in (1..=n).rev() {
            let Some(node_rule) = self.find(paths[depth - 1]) else {
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

    #[cold]
    fn walk_down<'a>(
        &self,
        paths: &[PathHash; WINDOW],
        n: usize,
        mut path: PathHash,
        next: &'a [u8],
        rest: impl Iterator<Item = &'a [u8]>,
    ) -> Option<Match> {
        let mut best = None;
        for (i, p) in paths[..n].iter().enumerate() {
            let Some(node_rule) = self.find(*p) else {
                return best;
            };
            self.consider(node_rule, false, i + 1, &mut best);
        }
        let mut labels = std::iter::once(next).chain(rest).peekable();
        let mut depth = n;
        while let Some(label) = labels.next() {
            path = self.keys.child(path, label);
            let Some(node_rule) = self.find(path) else {
                break;
            };
            depth += 1;
            self.consider(node_rule, labels.peek().is_none(), depth, &mut best);
        }
        best
    }

    #[inline]
    fn consider(&self, node_rule: u32, last: bool, depth: usize, best: &mut Option<Match>) {
        let (apex, below) = self.sides(node_rule);
        let rule = if last { apex } else { below };
        if rule != NO_RULE {
            *best = Some(Match {
                rule: RuleRef(rule),
                depth,
            });
        }
    }

    /// Number of nodes (distinct name suffixes).
    pub fn node_count(&self) -> usize {
        self.buckets
            .iter()
            .map(|b| b.fp.iter().filter(|f| **f != 0).count())
            .sum()
    }

    /// Heap bytes held by the trie.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buckets) + std::mem::size_of_val(&*self.pairs)
    }

    /// The node's rule field, if `path` is a node.
    #[inline]
    fn find(&self, path: PathHash) -> Option<u32> {
        let cap = self.buckets.len();
        let (fp, check) = (path.fp(), path.check());
        let mut i = path.bucket(cap);
        loop {
            let b = &self.buckets[i];
            for s in 0..SLOTS {
                if b.fp[s] == fp && b.check[s] == check {
                    return Some(b.rule[s]);
                }
            }
            // A bucket with room ends the probe: nothing was pushed past it.
            if b.fp[SLOTS - 1] == 0 {
                return None;
            }
            i += 1;
            if i == cap {
                i = 0;
            }
        }
    }

    #[inline]
    fn sides(&self, rule: u32) -> (u32, u32) {
        if rule == NO_RULE {
            (NO_RULE, NO_RULE)
        } else if rule & PAIR_BIT != 0 {
            let [apex, below] = self.pairs[(rule & !PAIR_BIT) as usize];
            (apex, below)
        } else {
            (rule, rule)
        }
    }
}

/// Collects rules, then lays them out as a [`Trie`].
pub struct TrieBuilder {
    keys: Keys,
    /// Every node's (apex, below), keyed by its full path hash.
    nodes: FxHashMap<PathHash, [u32; 2]>,
}

impl Default for TrieBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TrieBuilder {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// `rules` sizes the node map up front (each rule adds one to three
    /// nodes), sparing rehashes on big loads.
    pub fn with_capacity(rules: usize) -> Self {
        let mut nodes = FxHashMap::default();
        nodes.reserve(rules + rules / 4);
        Self {
            keys: Keys::random(),
            nodes,
        }
    }

    /// Adds a rule for `name` (lowercase, validated, dot-separated).
    pub fn insert(&mut self, name: &str, scope: Scope, rule: RuleRef) {
        let mut path = self.keys.root();
        let mut labels = name.rsplit('.').peekable();
        while let Some(label) = labels.next() {
            path = self.keys.child(path, label.as_bytes());
            let node = self.nodes.entry(path).or_insert([NO_RULE, NO_RULE]);
            if labels.peek().is_none() {
                let (apex, below) = match scope {
                    Scope::Subtree => (true, true),
                    Scope::Below => (false, true),
                    Scope::Exact => (true, false),
                };
                if apex {
                    place(&mut node[0], rule);
                }
                if below {
                    place(&mut node[1], rule);
                }
            }
        }
    }

    pub fn build(self) -> Trie {
        let count = self.nodes.len();
        // ~85% of slots used: buckets of five rarely overflow at that load.
        let cap = if count == 0 {
            0
        } else {
            (count * 20 / 17).div_ceil(SLOTS) + 1
        };
        let mut buckets = vec![EMPTY; cap];
        let mut pairs = Vec::new();
        for (path, [apex, below]) in self.nodes {
            let rule = if apex == below {
                apex
            } else {
                pairs.push([apex, below]);
                PAIR_BIT | (pairs.len() - 1) as u32
            };
            // Slots fill front to back, so the last slot being empty means
            // the bucket has room.
            let mut i = path.bucket(cap);
            while buckets[i].fp[SLOTS - 1] != 0 {
                i += 1;
                if i == cap {
                    i = 0;
                }
            }
            let b = &mut buckets[i];
            let s = b.fp.iter().position(|f| *f == 0).unwrap_or(SLOTS - 1);
            b.fp[s] = path.fp();
            b.check[s] = path.check();
            b.rule[s] = rule;
        }
        Trie {
            buckets: buckets.into_boxed_slice(),
            pairs: pairs.into_boxed_slice(),
            keys: self.keys,
        }
    }
}

fn place(side: &mut u32, rule: RuleRef) {
    if *side == NO_RULE || rule.beats(RuleRef(*side)) {
        *side = rule.0;
    }
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
        assert_eq!(t.node_count(), 5002);
    }

    #[test]
    fn empty_trie_matches_nothing() {
        let t = TrieBuilder::new().build();
        assert_eq!(hit(&t, "anything.test"), None);
    }
}
