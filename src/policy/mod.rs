//! The policy: which names are blocked, by which rule, and what to do.
//!
//! A [`Policy`] is an immutable snapshot built from the loaded lists; the
//! server swaps whole snapshots atomically on reload ([`Live`]). No DNS wire
//! types live here: names arrive as label slices, decisions leave as plain
//! data. Lists arrive as [`RuleSet`]s, so this module knows no list format.
//!
//! What a snapshot is, and what it is not yet: one view of every list,
//! merged at build time (one winning rule per name and side). Per-network
//! groups (which lists apply to which clients) will need a rule's list to
//! be tested against the client's group, see `groups.md` beside this file
//! for the design and its cost.

pub mod explain;
pub mod name;
mod owner;
pub mod rule;
pub mod trie;

use std::fmt;
use std::path::{Path, PathBuf};

pub use name::{DomainName, NameError};
use owner::Owners;
pub use rule::{LocalRecord, Rule, RuleSet, Scope, Verdict};
use trie::{RuleRef, Trie, TrieBuilder};

/// The policy in service, swapped whole on reload; queries load it without
/// waiting and finish on the snapshot they loaded.
pub type Live = arc_swap::ArcSwap<Policy>;

/// What the server does with a name a block rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Nxdomain,
    Nodata,
    Refused,
    Redirect,
    /// Nothing blocked: answered as if unlisted, the match counted and
    /// logged (how the IG team trials a list before enforcing it).
    Monitor,
    /// No answer at all (RPZ's `rpz-drop.`).
    Drop,
    /// Over UDP, an empty answer with TC=1 so the client retries over TCP
    /// (RPZ's `rpz-tcp-only.`); over TCP, answered as if unlisted.
    TcpOnly,
    /// The records of RPZ local data ([`Policy::local`]).
    Local(LocalId),
}

/// Index of a rule's local data in [`Policy::local`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalId(pub u32);

impl Action {
    /// The actions a category may name, in the order the configuration
    /// documents them. The others come from RPZ records only.
    pub const CONFIGURABLE: [Action; 5] = [
        Action::Nxdomain,
        Action::Nodata,
        Action::Refused,
        Action::Redirect,
        Action::Monitor,
    ];

    /// The name configuration files, metrics and logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Nxdomain => "nxdomain",
            Action::Nodata => "nodata",
            Action::Refused => "refused",
            Action::Redirect => "redirect",
            Action::Monitor => "monitor",
            Action::Drop => "drop",
            Action::TcpOnly => "tcp-only",
            Action::Local(_) => "local-data",
        }
    }

    /// A category's action by its configuration name.
    pub fn parse(name: &str) -> Option<Action> {
        Self::CONFIGURABLE.into_iter().find(|a| a.as_str() == name)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a group of names is blocked, how, and what staff should use instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub name: String,
    pub action: Action,
    pub reason: Option<String>,
    pub alternatives: Vec<Alternative>,
}

/// An approved tool to use instead, with a link when the configuration
/// gives one (an `http://` or `https://` URL, checked at load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    pub name: String,
    pub url: Option<String>,
}

/// Index of a list in [`Policy::lists`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListId(pub u16);

/// Index of a category in [`Policy::categories`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CategoryId(pub u16);

/// A list as the policy knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListInfo {
    pub name: String,
    pub path: PathBuf,
    /// `None` for allowlists.
    pub category: Option<CategoryId>,
}

/// What `explain` reports about a rule; the query path never reads it.
#[derive(Debug, Clone, Copy)]
struct RuleInfo {
    scope: Scope,
    line: u32,
}

/// A rule that decided a name.
#[derive(Debug, Clone, Copy)]
pub struct RuleHit<'p> {
    pub list_id: ListId,
    pub list: &'p ListInfo,
    /// How many labels the rule's own name has: the rule's name is the last
    /// `depth` labels of the query.
    pub depth: usize,
    /// The rule's index in the snapshot's rule table.
    pub index: usize,
    /// The rule covers only names below its own (`*.name`).
    pub below_only: bool,
    /// Read only when asked: the query path needs none of it.
    rules: &'p [RuleInfo],
}

impl RuleHit<'_> {
    /// The rule's line in its list file.
    pub fn line(&self) -> u32 {
        self.rules[self.index].line
    }

    pub fn scope(&self) -> Scope {
        self.rules[self.index].scope
    }

    /// The rule as an operator would write it, given the queried name
    /// (`*.zoom.us` or `zoom.us`).
    pub fn rule_text(&self, query: &DomainName) -> String {
        let name = query.as_str();
        let skip = name.split('.').count().saturating_sub(self.depth);
        let suffix = name.split('.').skip(skip).collect::<Vec<_>>().join(".");
        match self.scope() {
            Scope::Below => format!("*.{suffix}"),
            Scope::Subtree | Scope::Exact => suffix,
        }
    }
}

/// The policy's answer for one name.
#[derive(Debug, Clone, Copy)]
pub enum Decision<'p> {
    /// No rule matched: forward upstream.
    Forward,
    /// An allow rule was the most specific match: forward upstream.
    Allow(RuleHit<'p>),
    /// A block rule was the most specific match.
    Block {
        hit: RuleHit<'p>,
        category_id: CategoryId,
        category: &'p Category,
        /// The rule's own action if it has one, else the category's.
        action: Action,
    },
}

/// A monitored list's rule that matched a name nobody blocked.
#[derive(Debug, Clone, Copy)]
pub struct Monitored<'p> {
    pub hit: RuleHit<'p>,
    pub category_id: CategoryId,
    pub category: &'p Category,
}

/// An immutable, shareable snapshot of every list's rules.
pub struct Policy {
    trie: Trie,
    /// The rules of monitored lists (`action: monitor`), apart: a trial
    /// list must never weaken what the enforcing lists decide, so it is
    /// asked only when they did not block, and only when there is one.
    monitor: Option<Trie>,
    rules: Vec<RuleInfo>,
    /// A rule's list, from its index.
    owners: Owners,
    /// Rules with an action of their own, by rule index (sorted). Only
    /// rules marked so in the trie are looked up here.
    own_actions: Vec<(u32, Action)>,
    /// RPZ local data, by [`LocalId`].
    local: Vec<Box<[LocalRecord]>>,
    lists: Vec<ListInfo>,
    categories: Vec<Category>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("too many lists (at most 65535)")]
    TooManyLists,
    #[error("too many categories (at most 65535)")]
    TooManyCategories,
    #[error("too many rules (at most {})", RuleRef::MAX_INDEX)]
    TooManyRules,
    #[error("list {list:?} names category {category:?}, which is not defined")]
    UnknownCategory { list: String, category: String },
}

impl Policy {
    /// Decides a name given as labels from the top level down.
    #[inline]
    pub fn decide<'a, I>(&self, labels_from_top: I) -> Decision<'_>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let Some(m) = self.trie.lookup(labels_from_top) else {
            return Decision::Forward;
        };
        let hit = self.hit(&m);
        let (index, list) = (hit.index, hit.list);
        match (m.rule.verdict(), list.category) {
            (Verdict::Block, Some(category_id)) => {
                let category = &self.categories[usize::from(category_id.0)];
                let action = if m.rule.has_own_action() {
                    self.own_action(index).unwrap_or(category.action)
                } else {
                    category.action
                };
                Decision::Block {
                    hit,
                    category_id,
                    category,
                    action,
                }
            }
            // A block rule in an allowlist cannot exist (allowlists are
            // forced to allow), so anything else is an allow.
            _ => Decision::Allow(hit),
        }
    }

    /// The rule a matcher found, with its list (either matcher: rule
    /// indexes are shared).
    #[inline]
    fn hit(&self, m: &trie::Match) -> RuleHit<'_> {
        let index = m.rule.index();
        let list_id = self.owners.owner(index);
        RuleHit {
            list_id,
            list: &self.lists[usize::from(list_id.0)],
            depth: m.depth,
            index,
            below_only: m.rule.is_below_only(),
            rules: &self.rules,
        }
    }

    /// Whether any list is monitored; when none is, the query path asks
    /// nothing more.
    #[inline]
    pub fn monitors(&self) -> bool {
        self.monitor.is_some()
    }

    /// The monitored rule that would have blocked a name the enforcing
    /// lists did not block: a block rule of a monitored list more specific
    /// than `allowed_depth` (the depth of the allow rule that decided the
    /// name, 0 when none did; on a tie, allow wins, as in enforcement).
    pub fn monitored<'a, I>(
        &self,
        labels_from_top: I,
        allowed_depth: usize,
    ) -> Option<Monitored<'_>>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let m = self.monitor.as_ref()?.lookup(labels_from_top)?;
        if m.rule.verdict() != Verdict::Block || m.depth <= allowed_depth {
            return None;
        }
        let hit = self.hit(&m);
        let category_id = hit.list.category?;
        Some(Monitored {
            hit,
            category_id,
            category: &self.categories[usize::from(category_id.0)],
        })
    }

    #[cold]
    fn own_action(&self, index: usize) -> Option<Action> {
        let i = self
            .own_actions
            .binary_search_by_key(&(index as u32), |(r, _)| *r)
            .ok()?;
        Some(self.own_actions[i].1)
    }

    /// The records of an `Action::Local`.
    pub fn local(&self, id: LocalId) -> &[LocalRecord] {
        self.local.get(id.0 as usize).map_or(&[], |r| r)
    }

    /// Convenience for callers holding a validated name.
    pub fn decide_name(&self, name: &DomainName) -> Decision<'_> {
        self.decide(name.labels().rev())
    }

    pub fn lists(&self) -> &[ListInfo] {
        &self.lists
    }

    pub fn categories(&self) -> &[Category] {
        &self.categories
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Heap bytes held by the matcher and rule table.
    pub fn heap_bytes(&self) -> usize {
        self.trie.heap_bytes() + self.rules.capacity() * std::mem::size_of::<RuleInfo>()
    }
}

/// One list's contribution to a snapshot.
pub struct ListInput<'a, R: RuleSet + ?Sized> {
    pub name: &'a str,
    pub path: &'a Path,
    /// The category name; `None` makes this an allowlist.
    pub category: Option<&'a str>,
    pub rules: &'a R,
}

/// Builds a [`Policy`] from categories and lists. Lists are applied in order;
/// on a tie between two block rules the earlier list's rule is reported.
pub fn build<R: RuleSet + ?Sized>(
    categories: Vec<Category>,
    lists: &[ListInput<'_, R>],
) -> Result<Policy, PolicyError> {
    if lists.len() > usize::from(u16::MAX) {
        return Err(PolicyError::TooManyLists);
    }
    if categories.len() > usize::from(u16::MAX) {
        return Err(PolicyError::TooManyCategories);
    }
    let total: usize = lists.iter().map(|l| l.rules.rule_count()).sum();
    if total > RuleRef::MAX_INDEX as usize {
        return Err(PolicyError::TooManyRules);
    }
    let category_of = |input: &ListInput<'_, R>| {
        input
            .category
            .and_then(|c| categories.iter().find(|k| k.name == c))
    };
    let monitored: usize = lists
        .iter()
        .filter(|l| category_of(l).is_some_and(|c| c.action == Action::Monitor))
        .map(|l| l.rules.rule_count())
        .sum();
    let mut builder = TrieBuilder::with_capacity(total - monitored);
    let mut monitor = lists
        .iter()
        .any(|l| category_of(l).is_some_and(|c| c.action == Action::Monitor))
        .then(|| TrieBuilder::with_capacity(monitored));
    let mut rules = Vec::with_capacity(total);
    let mut own_actions = Vec::new();
    let mut local: Vec<Box<[LocalRecord]>> = Vec::new();
    let mut infos = Vec::with_capacity(lists.len());
    let mut list_starts = Vec::with_capacity(lists.len());
    for input in lists {
        list_starts.push(rules.len() as u32);
        let category = match input.category {
            None => None,
            Some(wanted) => Some(
                categories
                    .iter()
                    .position(|c| c.name == wanted)
                    .map(|p| CategoryId(p as u16))
                    .ok_or_else(|| PolicyError::UnknownCategory {
                        list: input.name.to_owned(),
                        category: wanted.to_owned(),
                    })?,
            ),
        };
        let is_monitored = category
            .is_some_and(|c: CategoryId| categories[usize::from(c.0)].action == Action::Monitor);
        for rule in input.rules.rules() {
            // Allowlists allow, whatever their syntax says.
            let verdict = if category.is_none() {
                Verdict::Allow
            } else {
                rule.verdict
            };
            let index = rules.len() as u32;
            rules.push(RuleInfo {
                scope: rule.scope,
                line: rule.line,
            });
            let mut r = RuleRef::new(index, verdict);
            if rule.scope == Scope::Below {
                r = r.with_below_only();
            }
            if is_monitored {
                // A trial: whatever the list's own actions, it only counts.
                if let Some(m) = monitor.as_mut() {
                    m.insert(rule.name, rule.scope, r);
                }
                continue;
            }
            if let (Some(action), Verdict::Block) = (rule.action, verdict) {
                // Local data moves into the policy's own table.
                let action = match action {
                    Action::Local(id) => {
                        local.push(input.rules.local(id).into());
                        Action::Local(LocalId((local.len() - 1) as u32))
                    }
                    other => other,
                };
                own_actions.push((index, action));
                r = r.with_own_action();
            }
            builder.insert(rule.name, rule.scope, r);
        }
        infos.push(ListInfo {
            name: input.name.to_owned(),
            path: input.path.to_owned(),
            category,
        });
    }
    Ok(Policy {
        trie: builder.build(),
        monitor: monitor.map(TrieBuilder::build),
        owners: Owners::new(list_starts, rules.len()),
        own_actions,
        local,
        rules,
        lists: infos,
        categories,
    })
}

#[cfg(test)]
mod tests;
