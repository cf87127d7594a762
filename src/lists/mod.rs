//! Blocklist sources and their parsers, one file per format.
//!
//! Every parser turns text into a [`ParsedList`]: the rules it could use,
//! packed into one buffer, and a log of the lines it could not use. A parser
//! never fails on content; only reading the source can fail.

pub mod adblock;
mod detect;
pub mod domains;
pub mod guard;
pub mod hosts;
pub mod read;
pub mod remote;
pub mod rpz;
pub mod signature;
pub mod source;
pub mod wildcard;

use std::fmt;

use crate::policy::name::normalize_into;
pub use crate::policy::{Action, LocalId, LocalRecord, NameError, Rule, RuleSet, Scope, Verdict};

/// How many skipped lines a [`SkipLog`] keeps verbatim; the rest are counted.
pub const KEEP_SKIPPED: usize = 20;

/// The syntax of a list file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One name per line; a name covers itself and its subdomains.
    Domains,
    /// `/etc/hosts` style: `0.0.0.0 name [name…]`.
    Hosts,
    /// Adblock network rules: `||name^`, `@@||name^`.
    Adblock,
    /// `*.name` (subdomains only) and plain names.
    Wildcard,
    /// A Response Policy Zone in zone-file syntax (QNAME triggers only).
    Rpz,
}

impl Format {
    /// Every format, in the order the configuration documents them.
    pub const ALL: [Format; 5] = [
        Format::Domains,
        Format::Hosts,
        Format::Adblock,
        Format::Wildcard,
        Format::Rpz,
    ];

    pub fn parse(name: &str) -> Option<Format> {
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// The name configuration files and reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Domains => "domains",
            Format::Hosts => "hosts",
            Format::Adblock => "adblock",
            Format::Wildcard => "wildcard",
            Format::Rpz => "rpz",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a line was not turned into a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The name on the line is not a valid domain name.
    BadName(NameError),
    /// A hosts line whose address is not a sinkhole address (a real mapping).
    NotSinkholeAddress,
    /// A hosts line naming only hosts-file boilerplate such as `localhost`.
    HostsBoilerplate,
    /// An adblock rule that DNS cannot express (cosmetic, path, options…).
    UnsupportedAdblock,
    /// An RPZ trigger other than QNAME (`rpz-ip`, `rpz-nsdname`, …): counted
    /// apart, never misapplied as a name rule.
    UnsupportedTrigger(&'static str),
    /// A block rule that would reach a name in `guard.protected`.
    Protected(Box<str>),
    /// Anything else the format cannot use, with a short explanation.
    Unrecognised(&'static str),
}

impl SkipReason {
    /// The reason's kind, as the `reason` label of
    /// `sinkhole_list_rejected_rules_total`: a fixed, small set.
    pub fn kind(&self) -> &'static str {
        match self {
            SkipReason::BadName(_) => "bad-name",
            SkipReason::NotSinkholeAddress | SkipReason::HostsBoilerplate => "not-a-block",
            SkipReason::UnsupportedAdblock => "unsupported",
            SkipReason::UnsupportedTrigger(_) => "unsupported-trigger",
            SkipReason::Protected(_) => "protected",
            SkipReason::Unrecognised(_) => "unrecognised",
        }
    }

    /// Every value [`SkipReason::kind`] returns.
    pub const KINDS: [&'static str; 6] = [
        "bad-name",
        "not-a-block",
        "unsupported",
        "unsupported-trigger",
        "protected",
        "unrecognised",
    ];
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::BadName(e) => write!(f, "not a domain name: {e}"),
            SkipReason::NotSinkholeAddress => {
                f.write_str("hosts entry maps to a real address, not a block address")
            }
            SkipReason::HostsBoilerplate => f.write_str("hosts-file boilerplate (localhost etc.)"),
            SkipReason::UnsupportedAdblock => {
                f.write_str("adblock rule DNS cannot express (cosmetic, path or options)")
            }
            SkipReason::UnsupportedTrigger(trigger) => {
                write!(
                    f,
                    "RPZ trigger {trigger} is not supported (QNAME triggers only)"
                )
            }
            SkipReason::Protected(name) => write!(f, "blocks protected name {name}"),
            SkipReason::Unrecognised(what) => f.write_str(what),
        }
    }
}

/// One line that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLine {
    /// 1-based line number in the source.
    pub line: u32,
    pub reason: SkipReason,
    /// The line as written (trimmed, at most 200 bytes) so `check` can show it.
    pub text: String,
}

/// Skipped lines: all counted, the first [`KEEP_SKIPPED`] kept verbatim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkipLog {
    pub count: u64,
    /// Counts by [`SkipReason::kind`], indexed like [`SkipReason::KINDS`].
    pub by_kind: [u64; SkipReason::KINDS.len()],
    pub first: Vec<SkippedLine>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PackedRule {
    end: u32,
    line: u32,
    scope: Scope,
    verdict: Verdict,
}

/// The rules of one list, packed: every name lives in one `String`, so a
/// million-name list costs one allocation for names, not a million.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedList {
    format: Format,
    names: String,
    rules: Vec<PackedRule>,
    /// Rules with an action of their own (RPZ), by rule index, in order:
    /// rules without one pay nothing for the possibility.
    actions: Vec<(u32, Action)>,
    /// Local data of `Action::Local(id)` rules, by `id`.
    local: Vec<Vec<LocalRecord>>,
    skipped: SkipLog,
    lines: u32,
}

impl ParsedList {
    pub fn new(format: Format) -> Self {
        Self {
            format,
            names: String::new(),
            rules: Vec::new(),
            actions: Vec::new(),
            local: Vec::new(),
            skipped: SkipLog::default(),
            lines: 0,
        }
    }

    /// An empty list sized for `text`: its names cannot outgrow the text,
    /// nor its rules its lines, so a million-line list is parsed without
    /// the buffer doublings (and their moment of holding both the old and
    /// the new buffer) that would otherwise set a reload's peak memory.
    /// [`ParsedList::set_line_count`] gives back what was not used.
    pub fn for_text(format: Format, text: &str) -> Self {
        let mut list = Self::new(format);
        list.names.reserve(text.len());
        let lines = memchr::memchr_iter(b'\n', text.as_bytes()).count() + 1;
        list.rules.reserve(lines);
        list
    }

    /// Room for `names` bytes of names and `rules` rules.
    pub fn reserve(&mut self, names: usize, rules: usize) {
        self.names.reserve(names);
        self.rules.reserve(rules);
    }

    /// Validates `name` and records it as a rule, or records the line as
    /// skipped with the name error. Returns whether a rule was added.
    pub fn push_rule(
        &mut self,
        line: u32,
        text: &str,
        name: &str,
        scope: Scope,
        verdict: Verdict,
    ) -> bool {
        match normalize_into(name, &mut self.names) {
            Ok(()) => {
                self.rules.push(PackedRule {
                    end: self.names.len() as u32,
                    line,
                    scope,
                    verdict,
                });
                true
            }
            Err(e) => {
                self.skip(line, text, SkipReason::BadName(e));
                false
            }
        }
    }

    /// As [`ParsedList::push_rule`], for a rule with an action of its own
    /// (an RPZ record's: `CNAME .` is `Nxdomain`, local data is a
    /// `Local(id)` from [`ParsedList::add_local`]).
    pub fn push_rule_with(
        &mut self,
        line: u32,
        text: &str,
        name: &str,
        scope: Scope,
        verdict: Verdict,
        action: Option<Action>,
    ) -> bool {
        let index = self.rules.len() as u32;
        let added = self.push_rule(line, text, name, scope, verdict);
        if let (true, Some(a)) = (added, action) {
            self.actions.push((index, a));
        }
        added
    }

    /// Stores local data for a rule to answer with; returns its id.
    pub fn add_local(&mut self, records: Vec<LocalRecord>) -> LocalId {
        self.local.push(records);
        LocalId((self.local.len() - 1) as u32)
    }

    /// Removes every rule `reject` gives a reason for, recording each as a
    /// skipped line (its text: the rule's name). The guard rails use this
    /// after parsing, so no parser needs to know them.
    pub fn reject_rules(&mut self, mut reject: impl FnMut(&Rule<'_>) -> Option<SkipReason>) {
        let mut rejected: Vec<(usize, u32, String, SkipReason)> = Vec::new();
        for (i, rule) in self.rules().enumerate() {
            if let Some(reason) = reject(&rule) {
                rejected.push((i, rule.line, rule.name.to_owned(), reason));
            }
        }
        if rejected.is_empty() {
            return;
        }
        // Compacted in place: a guard rejecting three lines of a million
        // must not copy the million (a reload's peak memory).
        let mut gone = rejected.iter().map(|r| r.0).peekable();
        let mut kept = 0usize;
        let mut read_start = 0usize;
        let mut write_end = 0usize;
        let mut actions = self.actions.iter().copied().peekable();
        let mut kept_actions = Vec::with_capacity(self.actions.len());
        // SAFETY: names hold only ASCII (`normalize_into` admits nothing
        // else), so moving whole names keeps the buffer valid UTF-8.
        let names = unsafe { self.names.as_mut_vec() };
        for i in 0..self.rules.len() {
            let r = self.rules[i];
            let end = r.end as usize;
            let action = actions.next_if(|(at, _)| *at as usize == i).map(|(_, a)| a);
            if gone.next_if_eq(&i).is_none() {
                let len = end - read_start;
                names.copy_within(read_start..end, write_end);
                write_end += len;
                if let Some(a) = action {
                    kept_actions.push((kept as u32, a));
                }
                self.rules[kept] = PackedRule {
                    end: write_end as u32,
                    ..r
                };
                kept += 1;
            }
            read_start = end;
        }
        names.truncate(write_end);
        self.rules.truncate(kept);
        self.actions = kept_actions;
        for (_, line, name, reason) in rejected {
            self.skip(line, &name, reason);
        }
        self.skipped.first.sort_by_key(|s| s.line);
    }

    /// Orders the kept skipped lines by line number (after lines were
    /// skipped out of order, e.g. by the decoder).
    pub fn sort_skipped(&mut self) {
        self.skipped.first.sort_by_key(|s| s.line);
    }

    /// Records a line the format cannot use.
    pub fn skip(&mut self, line: u32, text: &str, reason: SkipReason) {
        self.skipped.count += 1;
        let kind = reason.kind();
        if let Some(i) = SkipReason::KINDS.iter().position(|k| *k == kind) {
            self.skipped.by_kind[i] += 1;
        }
        if self.skipped.first.len() < KEEP_SKIPPED {
            let text = text.trim();
            let mut cut = text.len().min(200);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            self.skipped.first.push(SkippedLine {
                line,
                reason,
                text: text[..cut].to_owned(),
            });
        }
    }

    /// Records how many lines the source had (for reports); the parse is
    /// over, so unused room goes back (shrinking a large buffer moves
    /// nothing: the allocator trims it where it lies).
    pub fn set_line_count(&mut self, lines: u32) {
        self.lines = lines;
        if self.names.capacity() - self.names.len() > self.names.len() / 8 {
            self.names.shrink_to_fit();
        }
        if self.rules.capacity() - self.rules.len() > self.rules.len() / 8 {
            self.rules.shrink_to_fit();
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn line_count(&self) -> u32 {
        self.lines
    }

    pub fn skipped(&self) -> &SkipLog {
        &self.skipped
    }

    /// (line, reason) of each kept skipped line, for tests.
    #[cfg(test)]
    pub(crate) fn skip_reasons(&self) -> Vec<(u32, SkipReason)> {
        self.skipped
            .first
            .iter()
            .map(|s| (s.line, s.reason.clone()))
            .collect()
    }

    pub fn rules(&self) -> impl ExactSizeIterator<Item = Rule<'_>> + '_ {
        let mut start = 0usize;
        let mut actions = self.actions.iter().peekable();
        self.rules.iter().enumerate().map(move |(i, r)| {
            let end = r.end as usize;
            let name = &self.names[start..end];
            start = end;
            let action = actions
                .next_if(|(at, _)| *at as usize == i)
                .map(|(_, a)| *a);
            Rule {
                name,
                scope: r.scope,
                verdict: r.verdict,
                line: r.line,
                action,
            }
        })
    }

    /// Turns every rule into an allow rule (for allowlists, whatever their
    /// syntax says).
    pub fn into_allowlist(mut self) -> Self {
        for r in &mut self.rules {
            r.verdict = Verdict::Allow;
        }
        self
    }
}

impl RuleSet for ParsedList {
    fn rule_count(&self) -> usize {
        self.len()
    }

    fn rules(&self) -> impl Iterator<Item = Rule<'_>> {
        ParsedList::rules(self)
    }

    fn local(&self, id: LocalId) -> &[LocalRecord] {
        self.local.get(id.0 as usize).map_or(&[], Vec::as_slice)
    }
}

/// The format asked for in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatChoice {
    Auto,
    Fixed(Format),
}

/// Whether `format` can be parsed a chunk of whole lines at a time
/// ([`parse_chunk`]): every format but RPZ, whose records may span lines
/// and whose `$ORIGIN` carries over.
pub fn line_by_line(format: Format) -> bool {
    format != Format::Rpz
}

/// Parses a chunk of whole lines of a longer list into `list`, numbering
/// from `first`; returns the last line's number. Only for formats that are
/// [`line_by_line`] (RPZ is parsed whole).
pub fn parse_chunk(list: &mut ParsedList, text: &str, first: u32) -> u32 {
    match list.format() {
        Format::Domains | Format::Wildcard => domains::parse_names_into(list, text, first),
        Format::Hosts => hosts::parse_into(list, text, first),
        Format::Adblock => adblock::parse_into(list, text, first),
        Format::Rpz => {
            *list = rpz::parse(text);
            list.line_count()
        }
    }
}

/// The format of a list whose first part is `head`.
pub fn choose_format(head: &str, choice: FormatChoice) -> Format {
    match choice {
        FormatChoice::Fixed(f) => f,
        FormatChoice::Auto => detect::detect(head),
    }
}

/// An empty list of `format`, sized for a file of `bytes` whose lines are
/// about `line_len` bytes long (estimated from its first part).
pub fn sized_for(format: Format, bytes: usize, line_len: usize) -> ParsedList {
    let mut list = ParsedList::new(format);
    list.reserve(bytes, bytes / line_len.max(1) + 1);
    list
}

/// Parses a whole list. `Auto` looks at the content to pick a format.
pub fn parse(text: &str, choice: FormatChoice) -> ParsedList {
    let format = match choice {
        FormatChoice::Fixed(f) => f,
        FormatChoice::Auto => detect::detect(text),
    };
    match format {
        Format::Domains => domains::parse(text),
        Format::Hosts => hosts::parse(text),
        Format::Adblock => adblock::parse(text),
        Format::Wildcard => wildcard::parse(text),
        Format::Rpz => rpz::parse(text),
    }
}
