//! The matcher: a trie over reversed labels, stored as one open-addressing
//! hash table of edges.
//!
//! A node is identified by its slot in the table; its key is (parent slot,
//! label). Walking `www.zoom.us` probes `(ROOT, "us")`, then `(us, "zoom")`,
//! then `(zoom, "www")`, stopping at the first label with no node. Each probe
//! hashes one short label, not the whole remaining suffix as a hash-set walk
//! would, and a miss usually ends after the top-level label or the one below.
//!
//! Each node carries up to two rule references: `apex` applies when the query
//! *is* the node's name, `below` when the query is strictly under it. A plain
//! rule fills both, `*.name` only `below`, an RPZ exact name only `apex`. The
//! deepest filled reference on the path is the most specific rule.
//!
//! The trie is built once per load and never mutated; lookups take the labels
//! as they arrive (any case) and allocate nothing.

use super::rule::{Scope, Verdict};

/// Index of a rule in the policy's rule table, with its verdict folded into
/// the top bit so the trie can settle allow-versus-block ties on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleRef(u32);

const ALLOW_BIT: u32 = 1 << 31;
const NO_RULE: u32 = u32::MAX;
/// The parent of top-level labels.
const ROOT: u32 = u32::MAX;
/// Marks an empty slot (no real label offset is this large).
const EMPTY: u32 = u32::MAX;

impl RuleRef {
    /// Largest rule index representable (31 bits).
    pub const MAX_INDEX: u32 = ALLOW_BIT - 2;

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

    /// Which of two rules on the same node and scope wins: allow beats block,
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

#[derive(Debug, Clone, Copy)]
struct Node {
    parent: u32,
    /// Offset of the label in the arena: one length byte, then the bytes.
    label: u32,
    apex: u32,
    below: u32,
}

const VACANT: Node = Node {
    parent: 0,
    label: EMPTY,
    apex: NO_RULE,
    below: NO_RULE,
};

/// The immutable matcher.
pub struct Trie {
    slots: Box<[Node]>,
    arena: Box<[u8]>,
    nodes: usize,
}

impl Trie {
    /// The most specific rule for a name given as labels from the top level
    /// down (`["us", "zoom", "www"]` for `www.zoom.us`). Labels may be in any
    /// case.
    #[inline]
    pub fn lookup<'a, I>(&self, labels_from_top: I) -> Option<Match>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let mut labels = labels_from_top.into_iter().peekable();
        let mut parent = ROOT;
        let mut depth = 0usize;
        let mut best = None;
        while let Some(label) = labels.next() {
            let Some(slot) = self.find(parent, label) else {
                break;
            };
            depth += 1;
            let node = &self.slots[slot];
            let rule = if labels.peek().is_none() {
                node.apex
            } else {
                node.below
            };
            if rule != NO_RULE {
                best = Some(Match {
                    rule: RuleRef(rule),
                    depth,
                });
            }
            parent = slot as u32;
        }
        best
    }

    /// Number of nodes (distinct name suffixes).
    pub fn node_count(&self) -> usize {
        self.nodes
    }

    /// Heap bytes held by the trie.
    pub fn heap_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Node>() + self.arena.len()
    }

    #[inline]
    fn find(&self, parent: u32, label: &[u8]) -> Option<usize> {
        let cap = self.slots.len();
        if cap == 0 || label.is_empty() || label.len() > 63 {
            return None;
        }
        let mut slot = bucket(hash_label(parent, label), cap);
        loop {
            let node = &self.slots[slot];
            if node.label == EMPTY {
                return None;
            }
            if node.parent == parent && label_eq(&self.arena, node.label, label) {
                return Some(slot);
            }
            slot += 1;
            if slot == cap {
                slot = 0;
            }
        }
    }
}

/// Collects rules, then lays them out as a [`Trie`].
///
/// Node ids here are insertion indices (stable while the index grows); the
/// final table renumbers them to slots.
pub struct TrieBuilder {
    nodes: Vec<Node>,
    /// Open-addressing index over `nodes`: slot → node id + 1 (0 = empty).
    index: Vec<u32>,
    arena: Vec<u8>,
}

impl Default for TrieBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TrieBuilder {
    pub fn new() -> Self {
        Self {
            nodes: Vec::new(),
            index: vec![0; 1024],
            arena: Vec::new(),
        }
    }

    /// Adds a rule for `name` (lowercase, validated, dot-separated).
    pub fn insert(&mut self, name: &str, scope: Scope, rule: RuleRef) {
        let mut parent = ROOT;
        for label in name.rsplit('.') {
            parent = self.child(parent, label.as_bytes());
        }
        if parent == ROOT {
            return;
        }
        let node = &mut self.nodes[parent as usize];
        let (apex, below) = match scope {
            Scope::Subtree => (true, true),
            Scope::Below => (false, true),
            Scope::Exact => (true, false),
        };
        if apex {
            place(&mut node.apex, rule);
        }
        if below {
            place(&mut node.below, rule);
        }
    }

    fn child(&mut self, parent: u32, label: &[u8]) -> u32 {
        let cap = self.index.len();
        let mut slot = bucket(hash_label(parent, label), cap);
        loop {
            let entry = self.index[slot];
            if entry == 0 {
                break;
            }
            let node = &self.nodes[(entry - 1) as usize];
            if node.parent == parent && label_eq(&self.arena, node.label, label) {
                return entry - 1;
            }
            slot += 1;
            if slot == cap {
                slot = 0;
            }
        }
        let id = self.nodes.len() as u32;
        let offset = self.arena.len() as u32;
        self.arena.push(label.len() as u8);
        self.arena.extend(label.iter().map(u8::to_ascii_lowercase));
        self.nodes.push(Node {
            parent,
            label: offset,
            apex: NO_RULE,
            below: NO_RULE,
        });
        self.index[slot] = id + 1;
        if self.nodes.len() * 4 > cap * 3 {
            self.grow();
        }
        id
    }

    fn grow(&mut self) {
        let cap = self.index.len() * 2;
        let mut index = vec![0u32; cap];
        for (id, node) in self.nodes.iter().enumerate() {
            let label = label_at(&self.arena, node.label);
            let mut slot = bucket(hash_label(node.parent, label), cap);
            while index[slot] != 0 {
                slot += 1;
                if slot == cap {
                    slot = 0;
                }
            }
            index[slot] = id as u32 + 1;
        }
        self.index = index;
    }

    pub fn build(self) -> Trie {
        let count = self.nodes.len();
        // ~80% load: short probe runs, and no power-of-two rounding waste.
        let cap = if count == 0 { 0 } else { count * 5 / 4 + 1 };
        let mut slots = vec![VACANT; cap];
        let mut slot_of = vec![0u32; count];
        // Parents are always created before their children, so a parent's
        // final slot is known by the time a child is placed.
        for (id, node) in self.nodes.iter().enumerate() {
            let parent = if node.parent == ROOT {
                ROOT
            } else {
                slot_of[node.parent as usize]
            };
            let label = label_at(&self.arena, node.label);
            let mut slot = bucket(hash_label(parent, label), cap);
            while slots[slot].label != EMPTY {
                slot += 1;
                if slot == cap {
                    slot = 0;
                }
            }
            slots[slot] = Node { parent, ..*node };
            slot_of[id] = slot as u32;
        }
        Trie {
            slots: slots.into_boxed_slice(),
            arena: self.arena.into_boxed_slice(),
            nodes: count,
        }
    }
}

fn place(slot: &mut u32, rule: RuleRef) {
    if *slot == NO_RULE || rule.beats(RuleRef(*slot)) {
        *slot = rule.0;
    }
}

#[inline]
fn label_at(arena: &[u8], offset: u32) -> &[u8] {
    let start = offset as usize;
    let len = arena[start] as usize;
    &arena[start + 1..start + 1 + len]
}

/// Compares a stored (lowercase) label with a query label in any case.
#[inline]
fn label_eq(arena: &[u8], offset: u32, label: &[u8]) -> bool {
    let stored = label_at(arena, offset);
    stored.len() == label.len()
        && stored
            .iter()
            .zip(label)
            .all(|(s, q)| *s == q.to_ascii_lowercase())
}

/// Maps a hash onto `0..cap` without a power-of-two table (Lemire's
/// multiply-shift).
#[inline]
fn bucket(hash: u64, cap: usize) -> usize {
    (((hash >> 32) * cap as u64) >> 32) as usize
}

const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// Hash of (parent, label), case-insensitive for ASCII. Reads the label eight
/// bytes at a time and lowercases each word with bit tricks, so hashing costs
/// a few instructions per word rather than per byte.
#[inline]
fn hash_label(parent: u32, label: &[u8]) -> u64 {
    let mut h = (u64::from(parent) ^ ((label.len() as u64) << 32)).wrapping_mul(K);
    let mut chunks = label.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = (h.rotate_left(23) ^ lower_word(u64::from_le_bytes(word))).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(23) ^ lower_word(u64::from_le_bytes(word))).wrapping_mul(K);
    }
    h ^ (h >> 29)
}

/// ASCII-lowercases eight bytes at once: sets bit 0x20 in every byte that is
/// in `A..=Z`, leaves all others (including non-ASCII) alone.
#[inline]
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
    fn grows_past_initial_capacity() {
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
