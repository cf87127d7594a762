//! The guard rails a list passes before it is taken: no block rule may
//! reach a protected name, and a list may not suddenly lose most of its
//! rules. Both exist because the people who edit lists are not the people
//! who are paged when a hospital cannot reach `nhs.uk`.

use rustc_hash::FxHashSet;

use super::{ParsedList, SkipReason, Verdict};
use crate::policy::{DomainName, Scope};

/// The protected names, indexed for a walk over every rule of a list.
pub struct Protected {
    /// The protected names themselves.
    names: FxHashSet<String>,
    /// Every proper parent of one (`uk` for `nhs.uk`), with the protected
    /// name it leads to (for the message).
    parents: rustc_hash::FxHashMap<String, String>,
    /// Last labels of all of them: most rules (`.com`) fail this first test.
    tlds: FxHashSet<String>,
}

impl Protected {
    pub fn new(names: &[DomainName]) -> Self {
        let mut p = Protected {
            names: FxHashSet::default(),
            parents: Default::default(),
            tlds: FxHashSet::default(),
        };
        for n in names {
            let n = n.as_str();
            p.names.insert(n.to_owned());
            p.tlds.insert(n.rsplit('.').next().unwrap_or(n).to_owned());
            for (i, _) in n.match_indices('.') {
                p.parents
                    .entry(n[i + 1..].to_owned())
                    .or_insert_with(|| n.to_owned());
            }
        }
        p
    }

    /// The protected name a block rule would reach, if any: the rule's own
    /// name, a name above it, or (for rules that cover their subdomains) a
    /// name below it.
    pub fn reached_by(&self, name: &str, scope: Scope) -> Option<&str> {
        if self.names.is_empty() || !self.tlds.contains(name.rsplit('.').next().unwrap_or(name)) {
            return None;
        }
        // The rule's name, or any parent of it, is protected.
        let mut suffix = name;
        loop {
            if let Some(p) = self.names.get(suffix) {
                return Some(p);
            }
            match suffix.split_once('.') {
                Some((_, rest)) => suffix = rest,
                None => break,
            }
        }
        // The rule sits above a protected name and covers what is below.
        if scope != Scope::Exact {
            return self.parents.get(name).map(String::as_str);
        }
        None
    }

    /// Rejects the block rules of `list` that reach a protected name, each
    /// as a skipped line of its own kind. Allow rules are never touched.
    pub fn apply(&self, list: &mut ParsedList) {
        if self.names.is_empty() {
            return;
        }
        list.reject_rules(|r| {
            if r.verdict != Verdict::Block {
                return None;
            }
            self.reached_by(r.name, r.scope)
                .map(|p| SkipReason::Protected(p.into()))
        });
    }
}

/// Whether a list that shrinks from `in_service` to `new` rules loses more
/// than `max_percent` of them (and so is kept at the version in service).
pub fn shrinks_too_much(in_service: usize, new: usize, max_percent: u8) -> bool {
    if new >= in_service {
        return false;
    }
    let lost = (in_service - new) as u128 * 100;
    lost > in_service as u128 * u128::from(max_percent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lists::{Format, domains};

    fn protected(names: &[&str]) -> Protected {
        let names: Vec<DomainName> = names
            .iter()
            .map(|n| DomainName::parse(n).unwrap())
            .collect();
        Protected::new(&names)
    }

    #[test]
    fn the_name_its_parents_and_its_children_are_reached() {
        let p = protected(&["nhs.uk", "nhs.net"]);
        assert_eq!(p.reached_by("nhs.uk", Scope::Subtree), Some("nhs.uk"));
        assert_eq!(p.reached_by("uk", Scope::Subtree), Some("nhs.uk"));
        assert_eq!(p.reached_by("uk", Scope::Below), Some("nhs.uk"));
        assert_eq!(p.reached_by("x.nhs.uk", Scope::Subtree), Some("nhs.uk"));
        assert_eq!(p.reached_by("a.b.nhs.net", Scope::Exact), Some("nhs.net"));
        assert_eq!(p.reached_by("net", Scope::Subtree), Some("nhs.net"));
        // An exact rule for a parent covers only the parent.
        assert_eq!(p.reached_by("uk", Scope::Exact), None);
        assert_eq!(p.reached_by("notnhs.uk", Scope::Subtree), None);
        assert_eq!(p.reached_by("nhs.uk.evil.test", Scope::Subtree), None);
        assert_eq!(p.reached_by("zoom.us", Scope::Subtree), None);
        assert_eq!(protected(&[]).reached_by("uk", Scope::Subtree), None);
    }

    #[test]
    fn block_rules_are_rejected_with_their_lines_and_allows_kept() {
        let mut list = domains::parse("zoom.us\nnhs.uk\nuk\nx.nhs.uk\nwebex.com\n");
        protected(&["nhs.uk"]).apply(&mut list);
        let names: Vec<&str> = list.rules().map(|r| r.name).collect();
        assert_eq!(names, ["zoom.us", "webex.com"]);
        let lines: Vec<u32> = list.rules().map(|r| r.line).collect();
        assert_eq!(lines, [1, 5]);
        assert_eq!(
            list.skip_reasons(),
            [
                (2, SkipReason::Protected("nhs.uk".into())),
                (3, SkipReason::Protected("nhs.uk".into())),
                (4, SkipReason::Protected("nhs.uk".into())),
            ]
        );
        assert_eq!(list.skipped().by_kind[4], 3);
        assert_eq!(SkipReason::KINDS[4], "protected");

        let mut allow = domains::parse("nhs.uk\n").into_allowlist();
        protected(&["nhs.uk"]).apply(&mut allow);
        assert_eq!(allow.len(), 1);
        assert_eq!(allow.format(), Format::Domains);
    }

    #[test]
    fn shrink_is_measured_against_the_version_in_service() {
        assert!(!shrinks_too_much(0, 0, 50));
        assert!(!shrinks_too_much(100, 50, 50));
        assert!(shrinks_too_much(100, 49, 50));
        assert!(!shrinks_too_much(100, 200, 50));
        assert!(shrinks_too_much(100, 0, 99));
        assert!(!shrinks_too_much(100, 0, 100));
        assert!(shrinks_too_much(1, 0, 0));
    }
}
