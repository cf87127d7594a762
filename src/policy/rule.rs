//! What one list line means to the policy, independent of its format.
//!
//! The lists module turns text into these; the builder turns them into a
//! [`super::Policy`]. This is the whole interface between the two, so the
//! policy knows nothing of list formats.

use super::{Action, LocalId};

/// Which names a rule covers, relative to its own name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The name and every name below it (`example.com`, `||example.com^`).
    Subtree,
    /// Only names strictly below it (`*.example.com`).
    Below,
    /// Only the name itself (RPZ's plain owner names).
    Exact,
}

/// Whether a matching rule lets the name through or stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Block,
    Allow,
}

/// One rule as a list states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule<'a> {
    /// Lowercase, validated, without the trailing dot.
    pub name: &'a str,
    pub scope: Scope,
    pub verdict: Verdict,
    /// 1-based line number in the list's source.
    pub line: u32,
    /// An action of the rule's own (RPZ states one per name); `None` takes
    /// the category's.
    pub action: Option<Action>,
}

/// One record of RPZ local data as the zone gave it: its type and its
/// RDATA in wire form (names uncompressed). The policy carries it without
/// reading it; the DNS side writes it into answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRecord {
    pub rtype: u16,
    pub rdata: Box<[u8]>,
}

/// A list's rules, as the builder reads them.
pub trait RuleSet {
    fn rule_count(&self) -> usize;
    fn rules(&self) -> impl Iterator<Item = Rule<'_>>;
    /// The records of a rule's `Action::Local(id)`, `id` counted within
    /// this list.
    fn local(&self, _id: LocalId) -> &[LocalRecord] {
        &[]
    }
}

impl RuleSet for [Rule<'_>] {
    fn rule_count(&self) -> usize {
        self.len()
    }

    fn rules(&self) -> impl Iterator<Item = Rule<'_>> {
        self.iter().copied()
    }
}
