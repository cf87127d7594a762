//! `sinkhole diff OLD.yaml NEW.yaml [--names FILE]`: what publishing NEW in
//! place of OLD would change. The review an IG officer makes before
//! publishing a list change.
//!
//! Two parts:
//! - **Rules**, per list (lists matched by name): the rules NEW adds and
//!   the rules it removes. A rule is its name, scope (`x` or `*.x`),
//!   verdict (block or allow) and its own action when the list gives one
//!   (RPZ); its line number is not part of it, so a rule that merely moved
//!   is not a change. Counts are exact; the JSON carries at most
//!   [`MAX_RULES`] rules per list and direction (then `"truncated": true`),
//!   the text the first [`SHOW_RULES`].
//! - **Names**, when FILE is given: every name in FILE whose decision
//!   differs between the two, newly blocked first, then newly allowed,
//!   then the rest (still blocked or still let through, but decided by
//!   another rule, list, category or action). A decision's line number is
//!   shown but, as for rules, a moved line alone is not a change. A name
//!   under a `monitor` action is not blocked (it resolves), so a monitored
//!   name that becomes enforced is newly blocked.
//!
//! Both sides are loaded the way `check` loads them from disk
//! ([`check_file`]: a local list's file, a `url:` list's last good copy in
//! `state_dir`; nothing is fetched), with each side's own `guard`. A side
//! is invalid (exit 1) when a list cannot be read, or when a block rule
//! reaches a protected name (`check` fails on that too). Without FILE
//! nothing is checked, so nothing can change: exit 0.

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use rustc_hash::{FxHashSet, FxHasher};
use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::lists::source::Escaped;
use crate::lists::{ParsedList, SkipReason};
use crate::policy::explain::Explanation;
use crate::policy::{
    self, Action, DomainName, ListInput, LocalRecord, Policy, PolicyError, RuleSet, Scope, Verdict,
};
use crate::reload::{ListError, check_file};

/// Added or removed rules the text shows per list (and direction).
pub const SHOW_RULES: usize = 20;
/// Added or removed rules the JSON carries per list (and direction).
pub const MAX_RULES: usize = 10_000;
/// Skipped FILE lines the JSON carries (the text shows [`SHOW_RULES`]).
pub const MAX_SKIPPED: usize = 10_000;

/// Why a diff could not be made (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{}:{line}: list {list:?}: {error}", config.display())]
    List {
        config: PathBuf,
        /// Where the list is named in the configuration (1 if not found).
        line: usize,
        list: String,
        error: ListError,
    },
    /// Block rules that reach a protected name (`guard.protected`).
    #[error(
        "{}:{line}: list {list:?}: {count} block rule(s) reach a protected name (guard.protected); remove them, or allowlist what must stay reachable{}",
        config.display(),
        lines.iter().map(|l| format!("\n  {l}")).collect::<String>()
    )]
    Protected {
        config: PathBuf,
        line: usize,
        list: String,
        count: u64,
        /// `FILE:LINE: blocks protected name NAME`, for those the list's
        /// skip log kept.
        lines: Vec<String>,
    },
    #[error("{}: {error}", config.display())]
    Policy { config: PathBuf, error: PolicyError },
    #[error("{}: cannot read the names file: {error}", file.display())]
    Names {
        file: PathBuf,
        error: std::io::Error,
    },
    /// Both sides are invalid: both reasons.
    #[error("{0}\n{1}")]
    Both(Box<DiffError>, Box<DiffError>),
}

/// One configuration with every list loaded and its policy built.
pub struct Side {
    pub path: PathBuf,
    pub config: Config,
    /// Indexed like `config.lists`.
    lists: Vec<ParsedList>,
    policy: Policy,
}

impl Side {
    /// Loads a configuration and every list it names, as `check` reads
    /// them from disk.
    pub fn load(path: &Path) -> Result<Side, DiffError> {
        let config = Config::load(path)?;
        let mut lists = Vec::with_capacity(config.lists.len());
        for source in &config.lists {
            let line = || list_line(path, &source.name).unwrap_or(1);
            let parsed = check_file(&config, source).map_err(|error| DiffError::List {
                config: path.to_owned(),
                line: line(),
                list: source.name.clone(),
                error,
            })?;
            let protected = parsed.skipped().by_kind[PROTECTED];
            if protected > 0 {
                let at = source
                    .remote
                    .as_ref()
                    .map_or_else(|| source.path.display().to_string(), |r| r.url.clone());
                return Err(DiffError::Protected {
                    config: path.to_owned(),
                    line: line(),
                    list: source.name.clone(),
                    count: protected,
                    lines: parsed
                        .skipped()
                        .first
                        .iter()
                        .filter(|s| matches!(s.reason, SkipReason::Protected(_)))
                        .map(|s| format!("{at}:{}: {}", s.line, s.reason))
                        .collect(),
                });
            }
            lists.push(parsed);
        }
        // The policy as `Reloader::start` builds it, from these very lists:
        // each list read once, the rules diffed are the rules deciding, and
        // nothing is fetched.
        let inputs: Vec<ListInput<'_, ParsedList>> = config
            .lists
            .iter()
            .zip(&lists)
            .map(|(s, l)| ListInput {
                name: &s.name,
                path: &s.path,
                category: s.category.as_deref(),
                rules: l,
            })
            .collect();
        let policy = policy::build(config.categories.clone(), &inputs).map_err(|error| {
            DiffError::Policy {
                config: path.to_owned(),
                error,
            }
        })?;
        Ok(Side {
            path: path.to_owned(),
            config,
            lists,
            policy,
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// Index of `protected` in [`SkipReason::KINDS`].
const PROTECTED: usize = {
    let mut i = 0;
    while !matches!(SkipReason::KINDS[i].as_bytes(), b"protected") {
        i += 1;
    }
    i
};

/// The 1-based line where `name: LIST` appears in a configuration file.
fn list_line(config: &Path, list: &str) -> Option<usize> {
    let text = std::fs::read_to_string(config).ok()?;
    let names_it = |line: &str| {
        let mut from = 0;
        while let Some(at) = line[from..].find("name:") {
            let at = from + at;
            from = at + "name:".len();
            let boundary = at == 0 || {
                let b = line.as_bytes()[at - 1];
                !(b.is_ascii_alphanumeric() || b == b'_')
            };
            let value = line[from..]
                .split([',', '}', '#'])
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches(['"', '\'']);
            if boundary && value == list {
                return true;
            }
        }
        false
    };
    text.lines().position(names_it).map(|i| i + 1)
}

/// Loads both sides at once (each on its own thread). When both are
/// invalid, the error carries both reasons.
pub fn load_sides(old: &Path, new: &Path) -> Result<(Side, Side), DiffError> {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Side::load(old));
        let b = Side::load(new);
        (a.join(), b)
    });
    let a = a.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        (Err(a), Err(b)) => Err(DiffError::Both(Box::new(a), Box::new(b))),
    }
}

// ---------------------------------------------------------------- names

/// One name to check, from FILE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    pub name: DomainName,
    /// 1-based line in FILE.
    pub line: u32,
    /// The first field of a `rank,name` line, when it is a number.
    pub rank: Option<u64>,
}

/// A FILE line that is not a domain name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedName {
    pub line: u32,
    /// The line's name field, at most 100 characters.
    pub text: String,
    pub reason: String,
}

/// FILE, read: the names to check and the lines that were not names.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub entries: Vec<NameEntry>,
    /// The first [`MAX_SKIPPED`].
    pub skipped: Vec<SkippedName>,
    pub skipped_count: usize,
    /// Names given again on a later line (checked once).
    pub duplicates: usize,
}

impl Names {
    /// Reads FILE: one name per line, or `rank,name` CSV (the second
    /// field is the name). Blank lines and `#` comments are skipped, and so
    /// is a CSV header (a first line whose first field is not a number).
    pub fn read(path: &Path) -> Result<Names, DiffError> {
        let bytes = std::fs::read(path).map_err(|error| DiffError::Names {
            file: path.to_owned(),
            error,
        })?;
        Ok(Names::parse(&String::from_utf8_lossy(&bytes)))
    }

    pub fn parse(text: &str) -> Names {
        let mut names = Names::default();
        let mut seen: FxHashSet<DomainName> = FxHashSet::default();
        let mut first = true;
        for (i, raw) in text.lines().enumerate() {
            let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let trimmed = raw.trim_start_matches('\u{feff}').trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let was_first = std::mem::replace(&mut first, false);
            let (rank, field) = match trimmed.split_once(',') {
                Some((rank, rest)) => {
                    let rank = rank.trim().trim_matches('"');
                    let name = rest.split(',').next().unwrap_or("");
                    let name = name.trim().trim_matches('"').trim();
                    match rank.parse::<u64>() {
                        Ok(r) => (Some(r), name),
                        Err(_) if was_first => continue, // a header: `rank,domain`
                        Err(_) => (None, name),
                    }
                }
                None => (None, trimmed),
            };
            let reason = if field.is_empty() {
                "no name in the line's second field".to_owned()
            } else {
                match DomainName::parse(field) {
                    Ok(name) => {
                        if seen.insert(name.clone()) {
                            names.entries.push(NameEntry { name, line, rank });
                        } else {
                            names.duplicates += 1;
                        }
                        continue;
                    }
                    Err(e) => format!("not a domain name: {e}"),
                }
            };
            names.skipped_count += 1;
            if names.skipped.len() < MAX_SKIPPED {
                names.skipped.push(SkippedName {
                    line,
                    text: field.chars().take(100).collect(),
                    reason,
                });
            }
        }
        names
    }
}

// ---------------------------------------------------------------- report

/// A rule as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleOut {
    /// Its line in NEW's file for an added rule, in OLD's for a removed one.
    pub line: u32,
    /// As it would be written: `zoom.us`, `*.zoom.us`.
    pub rule: String,
    /// `subtree` (the name and below), `below` (`*.name`) or `exact`.
    pub scope: &'static str,
    /// `block` or `allow`.
    pub verdict: &'static str,
    /// The rule's own action (RPZ), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
}

/// Rules added (or removed) in one list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RuleChanges {
    /// All of them, exactly.
    pub count: usize,
    /// `rules` stops at [`MAX_RULES`].
    pub truncated: bool,
    /// In file order.
    pub rules: Vec<RuleOut>,
}

/// One side's view of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListSide {
    /// `block` or `allow`.
    pub kind: &'static str,
    pub category: Option<String>,
    /// The file read: the list's own, or a `url:` list's copy in
    /// `state_dir`.
    pub path: String,
    /// For a `url:` list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub format: &'static str,
    pub rules: usize,
}

/// One list, compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListDiff {
    pub name: String,
    /// `added` (only in NEW), `removed` (only in OLD), `changed` (rules,
    /// kind or category differ) or `unchanged`.
    pub status: &'static str,
    pub old: Option<ListSide>,
    pub new: Option<ListSide>,
    pub added: RuleChanges,
    pub removed: RuleChanges,
    /// For an added list: the removed list with exactly the same rules
    /// (the list was most likely renamed); and the other way round.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_rules_as: Option<String>,
}

/// A category whose action differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CategoryChange {
    pub name: String,
    pub old_action: &'static str,
    pub new_action: &'static str,
}

/// How a name is decided on one side (what `explain` says of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameDecision {
    /// As `explain` says it: `block`, `allow` (an allow rule matched),
    /// `monitor` (a monitored list would block it; it resolves) or
    /// `forward` (no rule matched).
    pub verdict: &'static str,
    /// The name does not resolve as usual: `block` (with any action but
    /// `monitor`).
    pub blocked: bool,
    pub action: Option<&'static str>,
    pub list: Option<String>,
    pub line: Option<u32>,
    pub rule: Option<String>,
    pub category: Option<String>,
}

impl NameDecision {
    fn of(policy: &Policy, name: &DomainName) -> NameDecision {
        let e = Explanation::new(policy, name, None);
        NameDecision {
            verdict: e.verdict,
            blocked: e.verdict == "block" && e.action != Some(Action::Monitor.as_str()),
            action: e.action,
            list: e.list,
            line: e.line,
            rule: e.rule,
            category: e.category,
        }
    }

    /// The same decision, made the same way; the line may differ.
    fn same_as(&self, other: &NameDecision) -> bool {
        (
            self.verdict,
            self.action,
            &self.list,
            &self.rule,
            &self.category,
        ) == (
            other.verdict,
            other.action,
            &other.list,
            &other.rule,
            &other.category,
        )
    }

    /// One line for a person.
    fn describe(&self) -> String {
        let rule = self.rule.as_deref().unwrap_or("?");
        let list = self.list.as_deref().unwrap_or("?");
        let line = self.line.unwrap_or(0);
        match self.verdict {
            _ if self.blocked => format!(
                "BLOCKED ({}) by rule {rule} in list {list}, line {line}, category {}",
                self.action.unwrap_or("?"),
                self.category.as_deref().unwrap_or("?")
            ),
            "block" | "monitor" => format!(
                "not blocked, only monitored, by rule {rule} in list {list}, line {line}, category {}",
                self.category.as_deref().unwrap_or("?")
            ),
            "allow" => format!("allowed by allow rule {rule} in list {list}, line {line}"),
            _ => "not on any list".to_owned(),
        }
    }
}

/// A name in FILE whose decision changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameChange {
    pub name: String,
    pub rank: Option<u64>,
    /// Its line in FILE.
    pub file_line: u32,
    /// `newly-blocked`, `newly-allowed` (blocked before, resolves now) or
    /// `changed` (blocked in both, or resolving in both, but decided
    /// differently).
    pub change: &'static str,
    pub old: NameDecision,
    pub new: NameDecision,
}

/// The names part of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamesReport {
    pub file: String,
    /// Distinct valid names checked.
    pub checked: usize,
    pub duplicates: usize,
    pub changed: usize,
    pub newly_blocked: usize,
    pub newly_allowed: usize,
    pub other_changes: usize,
    /// Newly blocked first, then newly allowed, then the others; each in
    /// FILE order.
    pub changes: Vec<NameChange>,
    pub skipped_count: usize,
    /// FILE lines that are not names (at most [`MAX_SKIPPED`]).
    pub skipped: Vec<SkippedName>,
}

/// Totals, for CI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub lists_changed: usize,
    pub rules_added: usize,
    pub rules_removed: usize,
    pub categories_changed: usize,
    /// `null` without `--names`.
    pub names_checked: Option<usize>,
    pub names_changed: usize,
}

/// Everything `sinkhole diff` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub old: String,
    pub new: String,
    /// Some name in FILE changes its decision (exit 3).
    pub changed: bool,
    pub summary: Summary,
    /// NEW's lists in its order, then those only OLD has.
    pub lists: Vec<ListDiff>,
    pub categories: Vec<CategoryChange>,
    /// `null` without `--names`.
    pub names: Option<NamesReport>,
}

/// Loads both configurations (and FILE) and compares them.
pub fn run(old: &Path, new: &Path, names: Option<&Path>) -> Result<Report, DiffError> {
    let file = names.map(|f| Names::read(f).map(|n| (f, n))).transpose()?;
    let (a, b) = load_sides(old, new)?;
    Ok(compare(&a, &b, file.as_ref().map(|(f, n)| (*f, n))))
}

/// Compares two loaded sides; `names` is FILE and what it held.
pub fn compare(old: &Side, new: &Side, names: Option<(&Path, &Names)>) -> Report {
    let lists = compare_lists(old, new);
    let categories = compare_categories(&old.config, &new.config);
    let names = names.map(|(file, names)| compare_names(old, new, file, names));
    let summary = Summary {
        lists_changed: lists.iter().filter(|l| l.status != "unchanged").count(),
        rules_added: lists.iter().map(|l| l.added.count).sum(),
        rules_removed: lists.iter().map(|l| l.removed.count).sum(),
        categories_changed: categories.len(),
        names_checked: names.as_ref().map(|n| n.checked),
        names_changed: names.as_ref().map_or(0, |n| n.changed),
    };
    Report {
        old: old.path.display().to_string(),
        new: new.path.display().to_string(),
        changed: summary.names_changed > 0,
        summary,
        lists,
        categories,
        names,
    }
}

/// What makes two rules the same rule: not the line.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key<'a> {
    name: &'a str,
    scope: Scope,
    verdict: Verdict,
    action: OwnAction<'a>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OwnAction<'a> {
    /// The category's.
    None,
    Fixed(Action),
    /// Local data: compared by content (ids differ between lists).
    Local(&'a [LocalRecord]),
}

impl Hash for Key<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.name.hash(h);
        self.scope.hash(h);
        self.verdict.hash(h);
        match self.action {
            OwnAction::None => 0u8.hash(h),
            OwnAction::Fixed(a) => {
                1u8.hash(h);
                a.hash(h);
            }
            OwnAction::Local(records) => {
                2u8.hash(h);
                for r in records {
                    r.rtype.hash(h);
                    r.rdata.hash(h);
                }
            }
        }
    }
}

fn rule_keys(list: &ParsedList) -> impl Iterator<Item = (Key<'_>, u32)> {
    list.rules().map(move |r| {
        let action = match r.action {
            None => OwnAction::None,
            Some(Action::Local(id)) => OwnAction::Local(RuleSet::local(list, id)),
            Some(a) => OwnAction::Fixed(a),
        };
        (
            Key {
                name: r.name,
                scope: r.scope,
                verdict: r.verdict,
                action,
            },
            r.line,
        )
    })
}

fn rule_out(key: &Key<'_>, line: u32) -> RuleOut {
    RuleOut {
        line,
        rule: match key.scope {
            Scope::Below => format!("*.{}", key.name),
            Scope::Subtree | Scope::Exact => key.name.to_owned(),
        },
        scope: match key.scope {
            Scope::Subtree => "subtree",
            Scope::Below => "below",
            Scope::Exact => "exact",
        },
        verdict: verdict_str(key.verdict),
        action: match key.action {
            OwnAction::None => None,
            OwnAction::Fixed(a) => Some(a.as_str()),
            OwnAction::Local(_) => Some("local-data"),
        },
    }
}

fn verdict_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Block => "block",
        Verdict::Allow => "allow",
    }
}

fn push_change(changes: &mut RuleChanges, key: &Key<'_>, line: u32) {
    changes.count += 1;
    if changes.rules.len() < MAX_RULES {
        changes.rules.push(rule_out(key, line));
    } else {
        changes.truncated = true;
    }
}

/// A list's rule set, order-independent, for spotting renamed lists: the
/// distinct rules' count and the sum of their hashes.
type Fingerprint = (usize, u64);

fn fingerprint<'a>(keys: impl Iterator<Item = &'a Key<'a>>) -> Fingerprint {
    keys.fold((0, 0u64), |(n, sum), k| {
        let mut h = FxHasher::default();
        k.hash(&mut h);
        (n + 1, sum.wrapping_add(h.finish()))
    })
}

/// Rules only in `new` (added) and only in `old` (removed), each once, in
/// file order.
///
/// Lists mostly change in places: the rules both have in the same order
/// at the start and at the end are only scanned, and only the middles go
/// into hash sets. A rule of the middle that the other middle lacks is
/// still no change when the common edges hold it (it moved).
fn diff_rules<'a>(old: &'a ParsedList, new: &'a ParsedList) -> (RuleChanges, RuleChanges) {
    let old: Vec<(Key<'a>, u32)> = rule_keys(old).collect();
    let new: Vec<(Key<'a>, u32)> = rule_keys(new).collect();
    let head = old.iter().zip(&new).take_while(|(a, b)| a.0 == b.0).count();
    let tail = old[head..]
        .iter()
        .rev()
        .zip(new[head..].iter().rev())
        .take_while(|(a, b)| a.0 == b.0)
        .count();
    let old_mid = &old[head..old.len() - tail];
    let new_mid = &new[head..new.len() - tail];
    let set = |rules: &[(Key<'a>, u32)]| -> FxHashSet<Key<'a>> {
        let mut set = FxHashSet::default();
        set.reserve(rules.len());
        set.extend(rules.iter().map(|(k, _)| *k));
        set
    };
    let (old_set, new_set) = (set(old_mid), set(new_mid));
    let mut only_new: FxHashSet<Key<'a>> = new_set.difference(&old_set).copied().collect();
    let mut only_old: FxHashSet<Key<'a>> = old_set.difference(&new_set).copied().collect();
    drop((old_set, new_set));
    if !(only_new.is_empty() && only_old.is_empty()) {
        for (k, _) in old[..head].iter().chain(&old[old.len() - tail..]) {
            only_new.remove(k);
            only_old.remove(k);
        }
    }
    let report = |rules: &[(Key<'a>, u32)], only: &mut FxHashSet<Key<'a>>| {
        let mut changes = RuleChanges::default();
        for (k, line) in rules {
            // `remove` so that a rule written twice is reported once.
            if only.remove(k) {
                push_change(&mut changes, k, *line);
            }
        }
        changes
    };
    (
        report(new_mid, &mut only_new),
        report(old_mid, &mut only_old),
    )
}

/// Every rule of a list that only one side has, each once.
fn all_rules(list: &ParsedList) -> (RuleChanges, Fingerprint) {
    let mut seen: FxHashSet<Key<'_>> = FxHashSet::default();
    seen.reserve(list.len());
    let mut all = RuleChanges::default();
    for (k, line) in rule_keys(list) {
        if seen.insert(k) {
            push_change(&mut all, &k, line);
        }
    }
    (all, fingerprint(seen.iter()))
}

fn list_side(side: &Side, i: usize) -> ListSide {
    let source = &side.config.lists[i];
    let parsed = &side.lists[i];
    ListSide {
        kind: if source.category.is_some() {
            "block"
        } else {
            "allow"
        },
        category: source.category.clone(),
        path: source.path.display().to_string(),
        url: source.remote.as_ref().map(|r| r.url.clone()),
        format: parsed.format().as_str(),
        rules: parsed.len(),
    }
}

fn compare_lists(old: &Side, new: &Side) -> Vec<ListDiff> {
    let find = |side: &Side, name: &str| side.config.lists.iter().position(|l| l.name == name);
    let mut out = Vec::new();
    let mut added_prints = Vec::new();
    for (i, source) in new.config.lists.iter().enumerate() {
        let new_side = list_side(new, i);
        match find(old, &source.name) {
            Some(j) => {
                let old_side = list_side(old, j);
                let (added, removed) = diff_rules(&old.lists[j], &new.lists[i]);
                let status = if added.count > 0
                    || removed.count > 0
                    || old_side.kind != new_side.kind
                    || old_side.category != new_side.category
                {
                    "changed"
                } else {
                    "unchanged"
                };
                out.push(ListDiff {
                    name: source.name.clone(),
                    status,
                    old: Some(old_side),
                    new: Some(new_side),
                    added,
                    removed,
                    same_rules_as: None,
                });
            }
            None => {
                let (added, print) = all_rules(&new.lists[i]);
                added_prints.push((out.len(), print));
                out.push(ListDiff {
                    name: source.name.clone(),
                    status: "added",
                    old: None,
                    new: Some(new_side),
                    added,
                    removed: RuleChanges::default(),
                    same_rules_as: None,
                });
            }
        }
    }
    for (j, source) in old.config.lists.iter().enumerate() {
        if find(new, &source.name).is_some() {
            continue;
        }
        let (removed, print) = all_rules(&old.lists[j]);
        let renamed = added_prints
            .iter()
            .find(|(_, p)| *p == print && print.0 > 0)
            .map(|(at, _)| *at);
        if let Some(at) = renamed {
            out[at].same_rules_as = Some(source.name.clone());
        }
        out.push(ListDiff {
            name: source.name.clone(),
            status: "removed",
            old: Some(list_side(old, j)),
            new: None,
            added: RuleChanges::default(),
            removed,
            same_rules_as: renamed.map(|at| out[at].name.clone()),
        });
    }
    out
}

fn compare_categories(old: &Config, new: &Config) -> Vec<CategoryChange> {
    new.categories
        .iter()
        .filter_map(|n| {
            let o = old.categories.iter().find(|o| o.name == n.name)?;
            (o.action != n.action).then(|| CategoryChange {
                name: n.name.clone(),
                old_action: o.action.as_str(),
                new_action: n.action.as_str(),
            })
        })
        .collect()
}

fn compare_names(old: &Side, new: &Side, file: &Path, names: &Names) -> NamesReport {
    let mut blocked = Vec::new();
    let mut allowed = Vec::new();
    let mut other = Vec::new();
    for entry in &names.entries {
        let a = NameDecision::of(&old.policy, &entry.name);
        let b = NameDecision::of(&new.policy, &entry.name);
        if a.same_as(&b) {
            continue;
        }
        let (change, group) = match (a.blocked, b.blocked) {
            (false, true) => ("newly-blocked", &mut blocked),
            (true, false) => ("newly-allowed", &mut allowed),
            _ => ("changed", &mut other),
        };
        group.push(NameChange {
            name: entry.name.to_string(),
            rank: entry.rank,
            file_line: entry.line,
            change,
            old: a,
            new: b,
        });
    }
    let (newly_blocked, newly_allowed, other_changes) = (blocked.len(), allowed.len(), other.len());
    let mut changes = blocked;
    changes.append(&mut allowed);
    changes.append(&mut other);
    NamesReport {
        file: file.display().to_string(),
        checked: names.entries.len(),
        duplicates: names.duplicates,
        changed: changes.len(),
        newly_blocked,
        newly_allowed,
        other_changes,
        changes,
        skipped_count: names.skipped_count,
        skipped: names.skipped.clone(),
    }
}

// ---------------------------------------------------------------- text

/// `1234567` as `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

impl ListSide {
    fn describe(&self) -> String {
        match (self.kind, &self.category) {
            ("block", Some(c)) => format!("blocklist, category {c}"),
            _ => "allowlist".to_owned(),
        }
    }
}

fn write_rules(s: &mut String, sign: char, changes: &RuleChanges, list_kind: &str) {
    let shown = &changes.rules[..changes.rules.len().min(SHOW_RULES)];
    let width = shown.iter().map(|r| r.rule.len()).max().unwrap_or(0);
    for r in shown {
        let mut notes = Vec::new();
        if r.verdict == "allow" && list_kind == "block" {
            notes.push("allow rule".to_owned());
        }
        if r.scope == "exact" {
            notes.push("this name only".to_owned());
        }
        if let Some(a) = r.action {
            notes.push(format!("action {a}"));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!("  ({})", notes.join(", "))
        };
        let _ = writeln!(s, "      {sign} {:<width$}  line {}{notes}", r.rule, r.line);
    }
    if changes.count > shown.len() {
        let _ = writeln!(
            s,
            "      … and {} more",
            thousands(changes.count - shown.len())
        );
    }
}

impl Report {
    /// Whether any name in FILE changes its decision (exit 3).
    pub fn names_changed(&self) -> bool {
        self.changed
    }

    /// The report for a person: lists, categories, names, then a result.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Comparing OLD {}", self.old);
        let _ = writeln!(s, "     with NEW {}", self.new);

        let _ = writeln!(s, "\nLISTS");
        for l in &self.lists {
            self.write_list(&mut s, l);
        }
        if self.summary.lists_changed == 0 {
            let _ = writeln!(s, "  No list changed: every list has the same rules.");
        }

        if !self.categories.is_empty() {
            let _ = writeln!(s, "\nCATEGORIES");
            for c in &self.categories {
                let _ = writeln!(
                    s,
                    "  {}: action {} → {} (every name its lists block is answered differently)",
                    c.name, c.old_action, c.new_action
                );
            }
        }

        match &self.names {
            Some(n) => write_names(&mut s, n),
            None => {
                let _ = writeln!(
                    s,
                    "\nNAMES\n  None checked: give --names FILE (one name per line, or rank,name) \
                     to see which names change."
                );
            }
        }

        let _ = writeln!(s, "\nRESULT");
        match &self.names {
            Some(n) if n.changed > 0 => {
                let _ = writeln!(
                    s,
                    "  CHANGES: {} in {} {} decision: {} newly blocked, {} newly allowed, {} decided differently.",
                    plural(n.changed, "name", "names"),
                    n.file,
                    if n.changed == 1 {
                        "changes its"
                    } else {
                        "change their"
                    },
                    thousands(n.newly_blocked),
                    thousands(n.newly_allowed),
                    thousands(n.other_changes),
                );
            }
            Some(n) => {
                let _ = writeln!(
                    s,
                    "  Nothing changed for the {} in {}.",
                    plural(n.checked, "name", "names"),
                    n.file
                );
            }
            None => {
                let _ = writeln!(s, "  No names checked.");
            }
        }
        if self.summary.lists_changed == 0 {
            let _ = writeln!(
                s,
                "  Rules: nothing changed (every list has the same rules)."
            );
        } else {
            let _ = writeln!(
                s,
                "  Rules: {} changed, {} added, {} removed.",
                plural(self.summary.lists_changed, "list", "lists"),
                plural(self.summary.rules_added, "rule", "rules"),
                thousands(self.summary.rules_removed),
            );
        }
        s
    }

    fn write_list(&self, s: &mut String, l: &ListDiff) {
        match (l.status, &l.old, &l.new) {
            ("added", _, Some(n)) => {
                let _ = writeln!(
                    s,
                    "  {} ({}): NEW LIST, {}",
                    l.name,
                    n.describe(),
                    plural(l.added.count, "rule", "rules")
                );
                if let Some(was) = &l.same_rules_as {
                    let _ = writeln!(
                        s,
                        "    same rules as removed list {was}: renamed from {was}?"
                    );
                }
                write_rules(s, '+', &l.added, n.kind);
            }
            ("removed", Some(o), _) => {
                let _ = writeln!(
                    s,
                    "  {} ({}): LIST REMOVED, {}",
                    l.name,
                    o.describe(),
                    plural(l.removed.count, "rule", "rules")
                );
                if let Some(now) = &l.same_rules_as {
                    let _ = writeln!(s, "    same rules as new list {now}: renamed to {now}?");
                }
                write_rules(s, '-', &l.removed, o.kind);
            }
            (status, Some(o), Some(n)) => {
                if status == "unchanged" {
                    let _ = writeln!(
                        s,
                        "  {} ({}): unchanged ({})",
                        l.name,
                        n.describe(),
                        plural(n.rules, "rule", "rules")
                    );
                    return;
                }
                let counts = format!("{} → {} rules", thousands(o.rules), thousands(n.rules));
                let _ = writeln!(
                    s,
                    "  {} ({}): {} added, {} removed ({counts})",
                    l.name,
                    n.describe(),
                    plural(l.added.count, "rule", "rules"),
                    thousands(l.removed.count)
                );
                if o.kind != n.kind || o.category != n.category {
                    let _ = writeln!(s, "    was: {}", o.describe());
                }
                if l.added.count > 0 {
                    let _ = writeln!(s, "    added (line in NEW):");
                    write_rules(s, '+', &l.added, n.kind);
                }
                if l.removed.count > 0 {
                    let _ = writeln!(s, "    removed (line in OLD):");
                    write_rules(s, '-', &l.removed, o.kind);
                }
            }
            _ => {}
        }
    }
}

fn write_names(s: &mut String, n: &NamesReport) {
    let _ = writeln!(
        s,
        "\nNAMES in {}: {} checked",
        n.file,
        plural(n.checked, "name", "names")
    );
    let groups = [
        (
            "newly-blocked",
            "NEWLY BLOCKED (resolved before, blocked now)",
        ),
        (
            "newly-allowed",
            "NEWLY ALLOWED (blocked before, resolve now)",
        ),
        (
            "changed",
            "DECIDED DIFFERENTLY (same outcome, but another rule, list, category or action)",
        ),
    ];
    if n.changed == 0 {
        let _ = writeln!(s, "  No name changes its decision.");
    }
    for (kind, title) in groups {
        let members: Vec<&NameChange> = n.changes.iter().filter(|c| c.change == kind).collect();
        if members.is_empty() {
            continue;
        }
        let _ = writeln!(s, "  {title}: {}", thousands(members.len()));
        for c in members {
            let at = match c.rank {
                Some(r) => format!("rank {r}; {}:{}", n.file, c.file_line),
                None => format!("{}:{}", n.file, c.file_line),
            };
            let _ = writeln!(s, "    {} ({at})", c.name);
            let _ = writeln!(s, "      before: {}", c.old.describe());
            let _ = writeln!(s, "      after:  {}", c.new.describe());
        }
    }
    if n.skipped_count > 0 {
        let _ = writeln!(
            s,
            "  {} skipped (not domain names):",
            plural(n.skipped_count, "line", "lines")
        );
        for k in n.skipped.iter().take(SHOW_RULES) {
            let _ = writeln!(
                s,
                "    {}:{}: {} (\"{}\")",
                n.file,
                k.line,
                k.reason,
                Escaped(&k.text)
            );
        }
        if n.skipped_count > SHOW_RULES {
            let _ = writeln!(
                s,
                "    … and {} more",
                thousands(n.skipped_count - SHOW_RULES)
            );
        }
    }
    if n.duplicates > 0 {
        let _ = writeln!(
            s,
            "  {} given more than once (checked once).",
            plural(n.duplicates, "name was", "names were")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_file_plain_csv_comments_header_and_junk() {
        let n = Names::parse(
            "rank,domain\n1,Google.com\n\n# comment\n2,bad name\n3,\nzoom.us\nzoom.us\n4,\"x.org\",extra\n",
        );
        let got: Vec<(&str, u32, Option<u64>)> = n
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.line, e.rank))
            .collect();
        assert_eq!(
            got,
            vec![
                ("google.com", 2, Some(1)),
                ("zoom.us", 7, None),
                ("x.org", 9, Some(4))
            ]
        );
        assert_eq!(n.duplicates, 1);
        assert_eq!(n.skipped_count, 2);
        assert_eq!(n.skipped[0].line, 5);
        assert_eq!(n.skipped[1].line, 6);
    }

    #[test]
    fn a_numeric_first_line_is_not_a_header() {
        let n = Names::parse("1,a.example\n");
        assert_eq!(n.entries.len(), 1);
    }

    #[test]
    fn thousands_separates() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    fn domains(names: &[String]) -> ParsedList {
        let text: String = names.iter().map(|n| format!("{n}\n")).collect();
        crate::lists::parse(
            &text,
            crate::lists::FormatChoice::Fixed(crate::lists::Format::Domains),
        )
    }

    #[test]
    fn a_rule_moved_into_the_common_edges_is_not_added() {
        let names = |s: &[&str]| s.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let old = domains(&names(&["a.x", "b.x", "c.x"]));
        let new = domains(&names(&["b.x", "a.x", "b.x", "c.x"]));
        let (added, removed) = diff_rules(&old, &new);
        assert_eq!((added.count, removed.count), (0, 0));
        let (added, removed) = diff_rules(&new, &old);
        assert_eq!((added.count, removed.count), (0, 0));
    }

    /// Against plain set differences, on random small lists with
    /// repeats, shared edges and moves.
    #[test]
    fn agrees_with_set_difference() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..2000 {
            let mut pick = |len: u64| -> Vec<String> {
                (0..next(len)).map(|_| format!("n{}.x", next(8))).collect()
            };
            let (head, a, b, tail) = (pick(4), pick(6), pick(6), pick(4));
            let old = [&head[..], &a[..], &tail[..]].concat();
            let new = [&head[..], &b[..], &tail[..]].concat();
            let (added, removed) = diff_rules(&domains(&old), &domains(&new));
            let set = |v: &[String]| v.iter().cloned().collect::<std::collections::HashSet<_>>();
            let in_order = |from: &[String], not_in: &[String]| {
                let not_in = set(not_in);
                let mut seen = std::collections::HashSet::new();
                from.iter()
                    .filter(|n| !not_in.contains(*n) && seen.insert(n.to_string()))
                    .cloned()
                    .collect::<Vec<_>>()
            };
            let rules =
                |c: &RuleChanges| c.rules.iter().map(|r| r.rule.clone()).collect::<Vec<_>>();
            assert_eq!(rules(&added), in_order(&new, &old), "{old:?} → {new:?}");
            assert_eq!(rules(&removed), in_order(&old, &new), "{old:?} → {new:?}");
            assert_eq!(added.count, added.rules.len());
        }
    }

    #[test]
    fn moved_and_repeated_rules_are_not_changes() {
        let old = crate::lists::parse(
            "a.example\nb.example\n",
            crate::lists::FormatChoice::Fixed(crate::lists::Format::Domains),
        );
        let new = crate::lists::parse(
            "# moved\nb.example\na.example\na.example\n*.c.example\n",
            crate::lists::FormatChoice::Fixed(crate::lists::Format::Domains),
        );
        let (added, removed) = diff_rules(&old, &new);
        assert_eq!(added.count, 1);
        assert_eq!(added.rules[0].rule, "*.c.example");
        assert_eq!(added.rules[0].line, 5);
        assert_eq!(removed.count, 0);
        let (added, removed) = diff_rules(&new, &old);
        assert_eq!((added.count, removed.count), (0, 1));
    }
}
