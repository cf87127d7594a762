//! The `rpz` list format: a Response Policy Zone in zone-file syntax, QNAME
//! triggers only.
//!
//! ```text
//! $TTL 300                            ; accepted, ignored (answers use block.ttl)
//! $ORIGIN rpz.example.                ; owner names below are relative to this
//! @   IN SOA ns.rpz.example. admin.rpz.example. (
//!            2024010101 3600 600 86400 300 )    ; ignored; ( ) span lines
//!     IN NS  ns.rpz.example.          ; ignored
//! ads.example.com      CNAME .              ; NXDOMAIN  (the name itself only)
//! *.ads.example.com    CNAME .              ; NXDOMAIN  (its subdomains only)
//! empty.example.com    CNAME *.             ; NODATA
//! ok.example.com       CNAME rpz-passthru.  ; allow
//! quiet.example.com    CNAME rpz-drop.      ; no answer at all
//! big.example.com      CNAME rpz-tcp-only.  ; empty answer with TC=1 over UDP
//! portal.example.com   A     192.0.2.1      ; local data, answered as given
//!                      AAAA  2001:db8::1    ; (no owner: the previous one)
//!                      TXT   "blocked by IG" "ticket \"42\""
//! moved.example.com 300 IN CNAME garden.example.  ; local data: a CNAME
//! 32.1.2.0.192.rpz-ip  CNAME .              ; skipped: not a QNAME trigger
//! ```
//!
//! **Names.** A record's owner, with the zone's origin removed, is the rule's
//! name: `name` covers that name only ([`Scope::Exact`]), `*.name` only the
//! names below it ([`Scope::Below`]). Names are case-insensitive. As in any
//! zone file, a name without a trailing dot is relative to `$ORIGIN`, `@` is
//! the origin, and a record whose line starts with whitespace has the
//! previous record's owner. `$ORIGIN` takes an absolute name, or a relative
//! one that is appended to the current origin.
//!
//! **The origin.** The resolver is not told the zone's name, so the file must
//! say it: with `$ORIGIN`, or with an absolute SOA owner
//! (`rpz.example. IN SOA …`), which becomes the origin when no `$ORIGIN` came
//! before it. A file that does neither has the root as its origin: names are
//! used as written (`ads.example.com CNAME .` blocks `ads.example.com`).
//!
//! **Actions.** `CNAME .` is NXDOMAIN, `CNAME *.` NODATA, `CNAME
//! rpz-passthru.` allow, `CNAME rpz-drop.` no answer, `CNAME rpz-tcp-only.`
//! TC=1 over UDP; the obsolete passthru form, a CNAME to the trigger's own
//! name (`ok.example.com CNAME ok.example.com.`), is an allow too rather than
//! a CNAME to itself. Anything else of type A, AAAA, TXT or CNAME is local
//! data, answered as given: every record of one owner (even when its records
//! are apart in the file) makes one rule, at the line of its first record.
//! A CNAME target without a trailing dot is relative to `$ORIGIN`, as any
//! name in the file.
//!
//! **Ignored** (neither rules nor skipped): comments (`;` outside quotes),
//! blank lines, `$TTL`, and SOA and NS records.
//!
//! **Skipped**, each with its reason (the parser never fails on content):
//! the other triggers (`rpz-ip`, `rpz-client-ip`, `rpz-nsdname`, `rpz-nsip`
//! as the label just above the origin; never misapplied as names); records
//! at the origin itself (the apex is not a trigger) or outside it; a
//! wildcard at the apex (it would match every name); local data of other
//! types (MX, SRV, …); CNAME targets with a wildcard (`*.garden.example.`,
//! RPZ's name substitution); a record of an owner that already has a
//! different action, or that mixes a CNAME with other local data (the
//! earlier record is kept); classes other than `IN`; `$INCLUDE` (a list is
//! one file) and `$GENERATE`; and anything malformed: a bad name or address,
//! missing or extra data, a quoted string that does not end on its line, an
//! unbalanced parenthesis. A record in parentheses is reported at the line
//! where it starts; one that runs past 100 lines, or to the end of the file,
//! is skipped and the lines after its first are read again as records of
//! their own, so one stray `(` costs one line, not the rest of the file.
//!
//! **Why not hickory's zone parser.** hickory-proto's parser is all or
//! nothing (one bad record fails the whole file, without the line it was on),
//! and it is only a dev-dependency here. A list format has to keep the good
//! lines of a feed and report each bad one as `FILE:LINE`, so this is a small
//! zone-file reader of its own.

use std::hash::{BuildHasher, RandomState};
use std::net::{Ipv4Addr, Ipv6Addr};

use rustc_hash::FxHashMap;

use super::{Action, Format, LocalRecord, ParsedList, Scope, SkipReason, Verdict};
use crate::policy::name::normalize_into;

/// A parenthesised record longer than this is cut off and skipped.
const MAX_RECORD_LINES: u32 = 100;

const RTYPE_A: u16 = 1;
const RTYPE_CNAME: u16 = 5;
const RTYPE_TXT: u16 = 16;
const RTYPE_AAAA: u16 = 28;

/// The labels that mark RPZ triggers other than QNAME.
const TRIGGERS: [&str; 4] = ["rpz-ip", "rpz-client-ip", "rpz-nsdname", "rpz-nsip"];

/// Record types that are real but cannot be local data here (and RFC
/// 3597's `TYPEnnn`).
const OTHER_TYPES: &str = "MX SRV PTR CAA HTTPS SVCB DNAME NAPTR SSHFP TLSA SMIMEA DS CDS \
    DNSKEY CDNSKEY RRSIG NSEC NSEC3 NSEC3PARAM HINFO SPF LOC RP AFSDB CERT KX URI OPENPGPKEY \
    CSYNC ZONEMD APL DHCID IPSECKEY NULL WKS MINFO MB MG MR MD MF A6 EUI48 EUI64 HIP X25 ISDN \
    RT NSAP PX GPOS KEY SIG NXT";

const CONFLICT: &str =
    "conflicts with an earlier record for the same name (the earlier one is kept)";
const UNSUPPORTED_TYPE: &str =
    "local data of this type is not supported; A, AAAA, TXT and CNAME are";
const EXTRA_DATA: &str = "unexpected text after the record data";
const QUOTED: &str = "unexpected quoted text";

pub fn parse(text: &str) -> ParsedList {
    Parser::new(text).run()
}

/// The lines of the text with their 1-based numbers, without a leading byte
/// order mark or the `\r` of `\r\n` (as `domains::numbered_lines`), but able
/// to go back: a record cut off for its parentheses is read again from the
/// line after its first.
#[derive(Clone)]
struct Lines<'a> {
    text: &'a str,
    pos: usize,
    number: u32,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text: text.strip_prefix('\u{feff}').unwrap_or(text),
            pos: 0,
            number: 0,
        }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = (u32, &'a str);

    fn next(&mut self) -> Option<(u32, &'a str)> {
        let rest = self.text.get(self.pos..).filter(|r| !r.is_empty())?;
        // A byte search: `find('\n')` compares each hit as UTF-8, which
        // showed as a sixth of a million-record parse.
        let (line, advance) = match rest.bytes().position(|b| b == b'\n') {
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        self.pos += advance;
        self.number = self.number.saturating_add(1);
        Some((self.number, line.strip_suffix('\r').unwrap_or(line)))
    }
}

/// One word of a record: unquoted as written (escapes kept), or the inside
/// of a quoted string (escapes kept).
#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    text: &'a str,
    quoted: bool,
}

/// Appends the tokens of one line to `out`, tracking parentheses in
/// `depth`. The first problem is put in `problem`; reading goes on so that
/// the parentheses of a bad record still say where it ends.
fn tokenize<'a>(
    line: &'a str,
    depth: &mut u32,
    out: &mut Vec<Token<'a>>,
    problem: &mut Option<&'static str>,
) {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c if c.is_ascii_whitespace() => i += 1,
            b';' => return,
            b'(' => {
                *depth = depth.saturating_add(1);
                i += 1;
            }
            b')' => {
                if *depth == 0 {
                    problem.get_or_insert("unbalanced parenthesis: ) without (");
                } else {
                    *depth -= 1;
                }
                i += 1;
            }
            b'"' => {
                let start = i + 1;
                let mut j = start;
                loop {
                    match b.get(j) {
                        None => {
                            problem.get_or_insert(
                                "quoted string without its closing quote (quotes end on their line)",
                            );
                            return;
                        }
                        Some(b'\\') => j += 2,
                        Some(b'"') => break,
                        Some(_) => j += 1,
                    }
                }
                // b[j] is the ASCII quote, so both ends are char boundaries.
                out.push(Token {
                    text: &line[start..j],
                    quoted: true,
                });
                i = j + 1;
            }
            _ => {
                let start = i;
                while i < b.len() {
                    match b[i] {
                        b'\\' => i += 2,
                        c if c.is_ascii_whitespace() || matches!(c, b';' | b'(' | b')' | b'"') => {
                            break;
                        }
                        _ => i += 1,
                    }
                }
                // Stops only at an ASCII byte or the end: a char boundary.
                let end = i.min(b.len());
                out.push(Token {
                    text: &line[start..end],
                    quoted: false,
                });
                i = end;
            }
        }
    }
}

/// What the owner of a record without one (line starting with whitespace)
/// would be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Previous {
    /// No record has named an owner yet.
    Missing,
    /// The last owner named could not be used.
    Unusable,
    /// The last owner named is in `Parser::owner`.
    Valid,
}

/// What one record asks for its owner.
enum Data {
    Policy(Verdict, Option<Action>),
    Record(LocalRecord),
}

enum EntryData {
    Policy(Verdict, Option<Action>),
    /// Index into `Owners::locals`.
    Local(u32),
}

/// One owner (name and scope) with its first line and what it asks for.
struct Entry<'a> {
    /// The owner relative to the origin, `*.` included, in `Owners::keys`.
    start: usize,
    end: usize,
    /// The next entry whose key has the same hash, or `NONE`.
    next: u32,
    line: u32,
    text: &'a str,
    data: EntryData,
}

const NONE: u32 = u32::MAX;

/// Every owner in first-appearance order, found again by name without an
/// allocation per name: keys are packed into one string and the index maps
/// a key's hash to a chain of entries.
struct Owners<'a> {
    keys: String,
    entries: Vec<Entry<'a>>,
    index: FxHashMap<u64, u32>,
    hasher: RandomState,
    locals: Vec<Vec<LocalRecord>>,
}

impl<'a> Owners<'a> {
    fn new() -> Self {
        Self {
            keys: String::new(),
            entries: Vec::new(),
            index: FxHashMap::default(),
            hasher: RandomState::new(),
            locals: Vec::new(),
        }
    }

    /// Adds a record of owner `key`, or says why it conflicts with the
    /// owner's earlier records (which are kept).
    fn add(&mut self, key: &str, line: u32, text: &'a str, data: Data) -> Result<(), &'static str> {
        let hash = self.hasher.hash_one(key);
        let head = self.index.get(&hash).copied();
        let mut at = head.unwrap_or(NONE);
        while at != NONE {
            let e = &self.entries[at as usize];
            if &self.keys[e.start..e.end] == key {
                break;
            }
            at = e.next;
        }
        if at == NONE {
            let start = self.keys.len();
            self.keys.push_str(key);
            let data = match data {
                Data::Policy(verdict, action) => EntryData::Policy(verdict, action),
                Data::Record(record) => {
                    self.locals.push(vec![record]);
                    EntryData::Local(u32::try_from(self.locals.len() - 1).unwrap_or(NONE))
                }
            };
            let index = u32::try_from(self.entries.len()).unwrap_or(NONE);
            self.entries.push(Entry {
                start,
                end: self.keys.len(),
                next: head.unwrap_or(NONE),
                line,
                text,
                data,
            });
            self.index.insert(hash, index);
            return Ok(());
        }
        match (&self.entries[at as usize].data, data) {
            // The same action again says nothing new.
            (EntryData::Policy(v, a), Data::Policy(v2, a2)) if (*v, *a) == (v2, a2) => Ok(()),
            (EntryData::Local(i), Data::Record(record)) => {
                let records = &mut self.locals[*i as usize];
                let has_cname = records.iter().any(|r| r.rtype == RTYPE_CNAME);
                if has_cname && records.len() == 1 && records[0] == record {
                    Ok(())
                } else if has_cname || record.rtype == RTYPE_CNAME {
                    // A CNAME is the only data its owner may have.
                    Err(CONFLICT)
                } else {
                    records.push(record);
                    Ok(())
                }
            }
            _ => Err(CONFLICT),
        }
    }

    /// Turns every owner into its rule, in first-appearance order.
    fn emit(self, list: &mut ParsedList) {
        let Owners {
            keys,
            entries,
            index,
            mut locals,
            ..
        } = self;
        drop(index);
        for e in entries {
            let key = &keys[e.start..e.end];
            let (name, scope) = match key.strip_prefix("*.") {
                Some(rest) => (rest, Scope::Below),
                None => (key, Scope::Exact),
            };
            let (verdict, action) = match e.data {
                EntryData::Policy(verdict, action) => (verdict, action),
                EntryData::Local(i) => {
                    let records = locals
                        .get_mut(i as usize)
                        .map(std::mem::take)
                        .unwrap_or_default();
                    (Verdict::Block, Some(Action::Local(list.add_local(records))))
                }
            };
            list.push_rule_with(e.line, e.text, name, scope, verdict, action);
        }
    }
}

/// Where an owner is against the origin.
enum Place<'s> {
    Apex,
    /// Below the origin: the owner with the origin removed.
    Below(&'s str),
    Outside,
}

fn place<'s>(owner: &'s str, origin: &str) -> Place<'s> {
    if owner == origin {
        Place::Apex
    } else if origin.is_empty() {
        Place::Below(owner)
    } else {
        match owner
            .strip_suffix(origin)
            .and_then(|rest| rest.strip_suffix('.'))
        {
            Some(rel) => Place::Below(rel),
            None => Place::Outside,
        }
    }
}

/// Writes the absolute, lowercase form of the zone-file name `token`
/// (without the trailing dot; the root is empty) into `out`.
fn absolute_into(out: &mut String, token: &str, origin: &str) {
    out.clear();
    if token == "@" {
        out.push_str(origin);
    } else if let Some(abs) = token.strip_suffix('.') {
        out.push_str(abs);
    } else {
        out.push_str(token);
        if !origin.is_empty() {
            out.push('.');
            out.push_str(origin);
        }
    }
    out.make_ascii_lowercase();
}

/// A TTL: `3600`, or BIND's `1h30m`.
fn is_ttl(token: &str) -> bool {
    let b = token.as_bytes();
    if !b.first().is_some_and(u8::is_ascii_digit) {
        return false;
    }
    let mut after_digit = false;
    for &c in b {
        if c.is_ascii_digit() {
            after_digit = true;
        } else if after_digit && matches!(c.to_ascii_lowercase(), b's' | b'm' | b'h' | b'd' | b'w')
        {
            after_digit = false;
        } else {
            return false;
        }
    }
    true
}

/// `Some(true)` for `IN`, `Some(false)` for another class, `None` for a
/// word that is no class.
fn class(token: &str) -> Option<bool> {
    if token.eq_ignore_ascii_case("IN") {
        return Some(true);
    }
    let other = ["CH", "CHAOS", "HS", "HESIOD", "CS", "NONE", "ANY"]
        .iter()
        .any(|c| token.eq_ignore_ascii_case(c))
        || numbered(token, "CLASS");
    other.then_some(false)
}

/// `CLASS3`, `TYPE65280`: RFC 3597's generic names.
fn numbered(token: &str, prefix: &str) -> bool {
    token.len() > prefix.len()
        && token.is_char_boundary(prefix.len())
        && token[..prefix.len()].eq_ignore_ascii_case(prefix)
        && token[prefix.len()..].bytes().all(|c| c.is_ascii_digit())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Soa,
    Ns,
    Cname,
    A,
    Aaaa,
    Txt,
    Unsupported,
    NotAType,
}

fn kind(token: &str) -> Kind {
    let is = |name: &str| token.eq_ignore_ascii_case(name);
    if is("SOA") {
        Kind::Soa
    } else if is("NS") {
        Kind::Ns
    } else if is("CNAME") {
        Kind::Cname
    } else if is("A") {
        Kind::A
    } else if is("AAAA") {
        Kind::Aaaa
    } else if is("TXT") {
        Kind::Txt
    } else if OTHER_TYPES.split_ascii_whitespace().any(is) || numbered(token, "TYPE") {
        Kind::Unsupported
    } else {
        Kind::NotAType
    }
}

/// The byte of the escape at `b[i]` (a `\`) and how many bytes it takes:
/// `\DDD` (decimal, at most 255) or `\X`.
fn escape(b: &[u8], i: usize) -> Result<(u8, usize), &'static str> {
    match b.get(i + 1) {
        None => Err("a \\ at the end of a word"),
        Some(c) if c.is_ascii_digit() => {
            let digits = b
                .get(i + 1..i + 4)
                .filter(|d| d.iter().all(u8::is_ascii_digit))
                .ok_or("bad \\DDD escape (three decimal digits)")?;
            let value = digits
                .iter()
                .fold(0u32, |v, d| v * 10 + u32::from(d - b'0'));
            let byte = u8::try_from(value).map_err(|_| "bad \\DDD escape (above 255)")?;
            Ok((byte, 4))
        }
        Some(&c) => Ok((c, 2)),
    }
}

/// The RDATA of a TXT record: each token one character-string.
fn txt_rdata(tokens: &[Token]) -> Result<Box<[u8]>, &'static str> {
    if tokens.is_empty() {
        return Err("TXT record without text");
    }
    let mut out = Vec::with_capacity(tokens.iter().map(|t| t.text.len() + 1).sum());
    for t in tokens {
        let at = out.len();
        out.push(0);
        let b = t.text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\' {
                let (byte, step) = escape(b, i)?;
                out.push(byte);
                i += step;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out[at] =
            u8::try_from(out.len() - at - 1).map_err(|_| "TXT string longer than 255 bytes")?;
    }
    if out.len() > usize::from(u16::MAX) {
        return Err("TXT data longer than 65535 bytes");
    }
    Ok(out.into_boxed_slice())
}

/// The uncompressed wire form of the name `token` (lowercase; relative
/// names completed with `origin`).
fn name_wire(token: &str, origin: &str) -> Result<Box<[u8]>, &'static str> {
    const BAD: &str = "CNAME target is not a valid domain name";
    let mut out = Vec::with_capacity(token.len() + origin.len() + 2);
    let mut relative = true;
    if token != "@" {
        let b = token.as_bytes();
        let mut label_at = 0;
        out.push(0);
        let mut i = 0;
        while i < b.len() {
            let (byte, separator) = match b[i] {
                b'.' => {
                    i += 1;
                    (0, true)
                }
                b'\\' => {
                    let (byte, step) = escape(b, i)?;
                    i += step;
                    (byte, false)
                }
                c @ 0x21..=0x7e => {
                    i += 1;
                    (c, false)
                }
                _ => return Err(BAD),
            };
            if separator {
                let len = out.len() - label_at - 1;
                if len == 0 {
                    return Err("CNAME target has an empty label");
                }
                out[label_at] = u8::try_from(len).map_err(|_| BAD)?;
                if i == b.len() {
                    relative = false;
                } else {
                    label_at = out.len();
                    out.push(0);
                }
            } else {
                out.push(byte.to_ascii_lowercase());
            }
            if out.len() - label_at - 1 > 63 {
                return Err("CNAME target has a label longer than 63 bytes");
            }
        }
        if relative {
            // The token is not empty and did not end with a separator.
            out[label_at] = u8::try_from(out.len() - label_at - 1).map_err(|_| BAD)?;
        }
    }
    if relative && !origin.is_empty() {
        for label in origin.split('.') {
            out.push(u8::try_from(label.len()).map_err(|_| BAD)?);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    if out.len() == 1 {
        return Err("CNAME target is the root");
    }
    if out.len() > 255 {
        return Err("CNAME target longer than 255 bytes");
    }
    Ok(out.into_boxed_slice())
}

/// The single unquoted word of a record's data.
fn one_word<'a>(rdata: &[Token<'a>], missing: &'static str) -> Result<&'a str, &'static str> {
    match rdata {
        [] => Err(missing),
        [t] if t.quoted => Err(QUOTED),
        [t] => Ok(t.text),
        _ => Err(EXTRA_DATA),
    }
}

struct Parser<'a> {
    list: ParsedList,
    lines: Lines<'a>,
    line_count: u32,
    /// Records cut off before this line are not read again (so a file of
    /// `(` lines is read at most twice over, not a hundred times).
    reread_until: u32,
    /// Lowercase, without the trailing dot; empty for the root.
    origin: String,
    /// Set by `$ORIGIN` or the first SOA.
    origin_set: bool,
    /// The last owner named, absolute and lowercase.
    owner: String,
    previous: Previous,
    tokens: Vec<Token<'a>>,
    scratch: String,
    owners: Owners<'a>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            list: ParsedList::for_text(Format::Rpz, text),
            lines: Lines::new(text),
            line_count: 0,
            reread_until: 0,
            origin: String::new(),
            origin_set: false,
            owner: String::new(),
            previous: Previous::Missing,
            tokens: Vec::new(),
            scratch: String::new(),
            owners: Owners::new(),
        }
    }

    fn run(mut self) -> ParsedList {
        while let Some((n, raw)) = self.lines.next() {
            self.line_count = self.line_count.max(n);
            let mut tokens = std::mem::take(&mut self.tokens);
            tokens.clear();
            let mut depth = 0;
            let mut problem = None;
            tokenize(raw, &mut depth, &mut tokens, &mut problem);
            if depth > 0 {
                let after_first = self.lines.clone();
                let mut span = 1;
                let mut cut = None;
                while depth > 0 {
                    if span >= MAX_RECORD_LINES {
                        cut = Some("parenthesised record longer than 100 lines");
                        break;
                    }
                    let Some((m, more)) = self.lines.next() else {
                        cut = Some("unbalanced parenthesis: no ) before the end of the file");
                        break;
                    };
                    self.line_count = self.line_count.max(m);
                    span += 1;
                    tokenize(more, &mut depth, &mut tokens, &mut problem);
                }
                if let Some(reason) = cut {
                    self.list.skip(n, raw, SkipReason::Unrecognised(reason));
                    if n > self.reread_until {
                        self.reread_until = self.lines.number;
                        self.lines = after_first;
                    }
                    // Its owner, if it named one, is not known to be usable.
                    if raw.starts_with(|c: char| !c.is_ascii_whitespace() && c != '(') {
                        self.previous = Previous::Unusable;
                    }
                    self.tokens = tokens;
                    continue;
                }
            }
            if !tokens.is_empty() || problem.is_some() {
                self.record(n, raw, &tokens, problem);
            }
            self.tokens = tokens;
        }
        self.owners.emit(&mut self.list);
        self.list.set_line_count(self.line_count);
        self.list
    }

    fn skip(&mut self, n: u32, raw: &str, reason: &'static str) {
        self.list.skip(n, raw, SkipReason::Unrecognised(reason));
    }

    /// One whole record (or directive), its tokens read from line `n` on.
    fn record(
        &mut self,
        n: u32,
        raw: &'a str,
        tokens: &[Token<'a>],
        problem: Option<&'static str>,
    ) {
        // An owner is named when the record starts at the first column.
        let named = !raw.starts_with(|c: char| c.is_ascii_whitespace() || c == '(');
        let mut rest = tokens;
        if named {
            match tokens.first() {
                Some(t) if !t.quoted && t.text.starts_with('$') => {
                    match problem {
                        Some(p) => self.skip(n, raw, p),
                        None => self.directive(n, raw, tokens),
                    }
                    return;
                }
                Some(t) if !t.quoted => {
                    absolute_into(&mut self.owner, t.text, &self.origin);
                    self.previous = Previous::Valid;
                    rest = &tokens[1..];
                }
                _ => {
                    self.previous = Previous::Unusable;
                    let reason = problem.unwrap_or("owner name in quotes");
                    return self.skip(n, raw, reason);
                }
            }
        }
        if let Some(p) = problem {
            return self.skip(n, raw, p);
        }

        // [TTL] [class], in either order, then the type.
        let mut ttl = false;
        let mut in_class = false;
        while let Some(t) = rest.first().filter(|t| !t.quoted) {
            if !ttl && is_ttl(t.text) {
                ttl = true;
            } else if let (false, Some(is_in)) = (in_class, class(t.text)) {
                if !is_in {
                    return self.skip(n, raw, "class other than IN");
                }
                in_class = true;
            } else {
                break;
            }
            rest = &rest[1..];
        }
        let Some((rtype, rdata)) = rest.split_first() else {
            return self.skip(n, raw, "no record type");
        };
        let kind = if rtype.quoted {
            Kind::NotAType
        } else {
            kind(rtype.text)
        };
        match kind {
            Kind::NotAType => return self.skip(n, raw, "not a record type"),
            Kind::Soa => {
                if !self.origin_set {
                    self.origin_set = true;
                    let absolute = named && tokens[0].text != "@" && tokens[0].text.ends_with('.');
                    if absolute {
                        self.scratch.clear();
                        if !self.owner.is_empty()
                            && let Err(e) = normalize_into(&self.owner, &mut self.scratch)
                        {
                            self.list.skip(n, raw, SkipReason::BadName(e));
                            return;
                        }
                        self.origin.clone_from(&self.owner);
                    }
                }
                return;
            }
            Kind::Ns => return,
            _ => {}
        }
        match self.previous {
            Previous::Valid => {}
            Previous::Missing => {
                return self.skip(
                    n,
                    raw,
                    "no owner name, and no earlier record to take it from",
                );
            }
            Previous::Unusable => {
                return self.skip(
                    n,
                    raw,
                    "no owner name, and the earlier record's was unusable",
                );
            }
        }

        let rel = match place(&self.owner, &self.origin) {
            Place::Apex => return self.skip(n, raw, "record at the zone's apex is not a trigger"),
            Place::Outside => return self.skip(n, raw, "name outside the zone's origin"),
            Place::Below(rel) => rel,
        };
        let last = rel.rsplit('.').next().unwrap_or(rel);
        if let Some(trigger) = TRIGGERS.iter().find(|t| **t == last) {
            self.list
                .skip(n, raw, SkipReason::UnsupportedTrigger(trigger));
            return;
        }
        if rel == "*" {
            return self.skip(
                n,
                raw,
                "wildcard at the zone's apex (every name) is not supported",
            );
        }
        let name = rel.strip_prefix("*.").unwrap_or(rel);
        self.scratch.clear();
        if let Err(e) = normalize_into(name, &mut self.scratch) {
            self.list.skip(n, raw, SkipReason::BadName(e));
            return;
        }

        let data = match kind {
            Kind::Cname => cname(rel, rdata, &self.origin),
            Kind::A => one_word(rdata, "A record without an address").and_then(|t| {
                t.parse::<Ipv4Addr>()
                    .map(|ip| record(RTYPE_A, &ip.octets()))
                    .map_err(|_| "not an IPv4 address")
            }),
            Kind::Aaaa => one_word(rdata, "AAAA record without an address").and_then(|t| {
                t.parse::<Ipv6Addr>()
                    .map(|ip| record(RTYPE_AAAA, &ip.octets()))
                    .map_err(|_| "not an IPv6 address")
            }),
            Kind::Txt => txt_rdata(rdata).map(|rdata| {
                Data::Record(LocalRecord {
                    rtype: RTYPE_TXT,
                    rdata,
                })
            }),
            _ => Err(UNSUPPORTED_TYPE),
        };
        let added = data.and_then(|data| self.owners.add(rel, n, raw, data));
        if let Err(reason) = added {
            self.list.skip(n, raw, SkipReason::Unrecognised(reason));
        }
    }

    /// A `$` line (its first token is the directive).
    fn directive(&mut self, n: u32, raw: &str, tokens: &[Token]) {
        let word = tokens[0].text;
        let is = |name: &str| word.eq_ignore_ascii_case(name);
        if is("$ORIGIN") {
            let arg = match one_word(&tokens[1..], "$ORIGIN without a name") {
                Ok(arg) => arg,
                Err(reason) => return self.skip(n, raw, reason),
            };
            let mut origin = String::new();
            absolute_into(&mut origin, arg, &self.origin);
            // `r..` leaves `r.` here, which the name check below would
            // take as `r` with its final dot, and every name made from it
            // would carry an empty label (found by the list_rpz fuzz
            // target: a CNAME target with a stray byte after the root).
            if origin.starts_with('.') || origin.ends_with('.') || origin.contains("..") {
                self.list.skip(
                    n,
                    raw,
                    SkipReason::BadName(crate::policy::NameError::EmptyLabel),
                );
                return;
            }
            self.scratch.clear();
            if !origin.is_empty()
                && let Err(e) = normalize_into(&origin, &mut self.scratch)
            {
                self.list.skip(n, raw, SkipReason::BadName(e));
                return;
            }
            self.origin = origin;
            self.origin_set = true;
        } else if is("$TTL") {
            match one_word(&tokens[1..], "$TTL without a TTL") {
                Ok(ttl) if is_ttl(ttl) => {}
                Ok(_) => self.skip(n, raw, "$TTL with a bad TTL"),
                Err(reason) => self.skip(n, raw, reason),
            }
        } else if is("$INCLUDE") {
            self.skip(
                n,
                raw,
                "$INCLUDE is not supported: a list is read from one file",
            );
        } else if is("$GENERATE") {
            self.skip(n, raw, "$GENERATE is not supported");
        } else {
            self.skip(n, raw, "unknown $ directive");
        }
    }
}

fn record(rtype: u16, rdata: &[u8]) -> Data {
    Data::Record(LocalRecord {
        rtype,
        rdata: rdata.into(),
    })
}

/// What a CNAME of owner `rel` (relative, `*.` included) means.
fn cname(rel: &str, rdata: &[Token], origin: &str) -> Result<Data, &'static str> {
    let target = one_word(rdata, "CNAME record without a target")?;
    let is = |name: &str| target.eq_ignore_ascii_case(name);
    let policy = |verdict, action| Ok(Data::Policy(verdict, action));
    if is(".") {
        policy(Verdict::Block, Some(Action::Nxdomain))
    } else if is("*.") {
        policy(Verdict::Block, Some(Action::Nodata))
    } else if is("rpz-passthru.") {
        policy(Verdict::Allow, None)
    } else if is("rpz-drop.") {
        policy(Verdict::Block, Some(Action::Drop))
    } else if is("rpz-tcp-only.") {
        policy(Verdict::Block, Some(Action::TcpOnly))
    } else if target
        .strip_suffix('.')
        .is_some_and(|t| t.eq_ignore_ascii_case(rel))
    {
        // The obsolete passthru: a CNAME to the trigger's own name.
        policy(Verdict::Allow, None)
    } else if target.starts_with("*.") {
        Err("CNAME to a wildcard (RPZ name substitution) is not supported")
    } else {
        Ok(Data::Record(LocalRecord {
            rtype: RTYPE_CNAME,
            rdata: name_wire(target, origin)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lists::{LocalId, NameError, Rule, RuleSet};

    const HEAD: &str = "$TTL 300\n$ORIGIN rpz.example.\n\
        @ IN SOA ns.rpz.example. admin.rpz.example. ( 1 3600 600 86400 300 )\n\
        \tIN NS ns.rpz.example.\n";

    fn zone(body: &str) -> String {
        format!("{HEAD}{body}")
    }

    fn rules(list: &ParsedList) -> Vec<(&str, Scope, Verdict, u32, Option<Action>)> {
        list.rules()
            .map(|r| (r.name, r.scope, r.verdict, r.line, r.action))
            .collect()
    }

    fn reasons(list: &ParsedList) -> Vec<(u32, SkipReason)> {
        list.skip_reasons()
    }

    fn local(list: &ParsedList, rule: &Rule) -> Vec<(u16, Vec<u8>)> {
        let Some(Action::Local(id)) = rule.action else {
            panic!("no local data: {rule:?}");
        };
        RuleSet::local(list, id)
            .iter()
            .map(|r| (r.rtype, r.rdata.to_vec()))
            .collect()
    }

    fn kind_count(list: &ParsedList, kind: &str) -> u64 {
        let i = SkipReason::KINDS.iter().position(|k| *k == kind).unwrap();
        list.skipped().by_kind[i]
    }

    fn un(reason: &'static str) -> SkipReason {
        SkipReason::Unrecognised(reason)
    }

    #[test]
    fn every_action() {
        let list = parse(&zone(
            "nx.example.com CNAME .\n\
             nodata.example.com CNAME *.\n\
             ok.example.com CNAME rpz-passthru.\n\
             quiet.example.com CNAME rpz-drop.\n\
             big.example.com CNAME rpz-tcp-only.\n\
             UPPER.Example.COM cname RPZ-DROP.\n",
        ));
        assert_eq!(list.format(), Format::Rpz);
        use Scope::Exact;
        use Verdict::{Allow, Block};
        assert_eq!(
            rules(&list),
            [
                ("nx.example.com", Exact, Block, 5, Some(Action::Nxdomain)),
                ("nodata.example.com", Exact, Block, 6, Some(Action::Nodata)),
                ("ok.example.com", Exact, Allow, 7, None),
                ("quiet.example.com", Exact, Block, 8, Some(Action::Drop)),
                ("big.example.com", Exact, Block, 9, Some(Action::TcpOnly)),
                ("upper.example.com", Exact, Block, 10, Some(Action::Drop)),
            ]
        );
        assert_eq!(list.skipped().count, 0, "{:?}", reasons(&list));
        assert_eq!(list.line_count(), 10);
    }

    #[test]
    fn exact_and_wildcard_scopes_are_separate_owners() {
        let list = parse(&zone(
            "ads.example.com CNAME .\n*.ads.example.com CNAME rpz-passthru.\n",
        ));
        assert_eq!(
            rules(&list),
            [
                (
                    "ads.example.com",
                    Scope::Exact,
                    Verdict::Block,
                    5,
                    Some(Action::Nxdomain)
                ),
                ("ads.example.com", Scope::Below, Verdict::Allow, 6, None),
            ]
        );
    }

    #[test]
    fn relative_absolute_apex_and_outside_owners() {
        let list = parse(&zone(
            "rel.example CNAME .\n\
             abs.example.rpz.example. CNAME .\n\
             ABS2.example.RPZ.Example. CNAME .\n\
             @ A 192.0.2.1\n\
             rpz.example. TXT apex\n\
             other.example. CNAME .\n\
             notrpz.example. CNAME .\n",
        ));
        assert_eq!(
            list.rules().map(|r| r.name).collect::<Vec<_>>(),
            ["rel.example", "abs.example", "abs2.example"]
        );
        assert_eq!(
            reasons(&list),
            [
                (8, un("record at the zone's apex is not a trigger")),
                (9, un("record at the zone's apex is not a trigger")),
                (10, un("name outside the zone's origin")),
                (11, un("name outside the zone's origin")),
            ]
        );
    }

    #[test]
    fn omitted_owner_takes_the_previous_one() {
        let list = parse(&zone(
            "portal.example A 192.0.2.1\n\
             \tA 192.0.2.2\n\
             \x20 300 IN AAAA 2001:db8::1\n\
             other.example CNAME .\n\
             \tCNAME rpz-drop.\n",
        ));
        let all: Vec<_> = list.rules().collect();
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].name, all[0].line), ("portal.example", 5));
        let mut v6 = vec![0x20, 0x01, 0x0d, 0xb8];
        v6.extend([0; 11]);
        v6.push(1);
        assert_eq!(
            local(&list, &all[0]),
            [(1, vec![192, 0, 2, 1]), (1, vec![192, 0, 2, 2]), (28, v6)]
        );
        assert_eq!(reasons(&list), [(9, un(CONFLICT))]);
    }

    #[test]
    fn records_of_one_owner_share_one_local_id_even_apart() {
        let list = parse(&zone(
            "a.example A 192.0.2.1\n\
             b.example A 192.0.2.9\n\
             a.example. A 192.0.2.2\n\
             A.EXAMPLE 60 TXT hello\n",
        ));
        let all: Vec<_> = list.rules().collect();
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].name, all[0].line), ("a.example", 5));
        assert_eq!((all[1].name, all[1].line), ("b.example", 6));
        assert_eq!(all[0].action, Some(Action::Local(LocalId(0))));
        assert_eq!(all[1].action, Some(Action::Local(LocalId(1))));
        // `a.example.` is absolute: outside the origin.
        assert_eq!(reasons(&list), [(7, un("name outside the zone's origin"))]);
        assert_eq!(
            local(&list, &all[0]),
            [(1, vec![192, 0, 2, 1]), (16, b"\x05hello".to_vec())]
        );
        assert_eq!(local(&list, &all[1]), [(1, vec![192, 0, 2, 9])]);
    }

    #[test]
    fn origin_changes() {
        let list = parse(
            "$ORIGIN rpz.example.\n\
             a CNAME .\n\
             $ORIGIN sub.rpz.example.\n\
             b CNAME .\n\
             c.rpz.example. CNAME .\n\
             $ORIGIN deeper\n\
             d CNAME .\n\
             $ORIGIN .\n\
             e.example CNAME .\n\
             $origin other.\n\
             f CNAME .\n",
        );
        assert_eq!(
            list.rules().map(|r| r.name).collect::<Vec<_>>(),
            ["a", "b", "d", "e.example", "f"]
        );
        assert_eq!(reasons(&list), [(5, un("name outside the zone's origin"))]);
    }

    #[test]
    fn an_origin_with_an_empty_label_is_skipped() {
        let list = parse("$ORIGIN rpz.example.\n$ORIGIN r..\n$ORIGIN .x.\ne CNAME b\n");
        assert_eq!(
            reasons(&list),
            [
                (2, SkipReason::BadName(NameError::EmptyLabel)),
                (3, SkipReason::BadName(NameError::EmptyLabel)),
            ]
        );
        assert_eq!(list.rules().map(|r| r.name).collect::<Vec<_>>(), ["e"]);
    }

    #[test]
    fn bad_origin_is_skipped_and_the_old_one_kept() {
        let list = parse("$ORIGIN rpz.example.\n$ORIGIN bad!name.\n$ORIGIN\na CNAME .\n");
        assert_eq!(list.rules().map(|r| r.name).collect::<Vec<_>>(), ["a"]);
        assert_eq!(
            reasons(&list),
            [
                (2, SkipReason::BadName(NameError::BadChar('!'))),
                (3, un("$ORIGIN without a name")),
            ]
        );
    }

    #[test]
    fn soa_and_ns_only_is_empty_without_skips() {
        let text = "; a feed with no rules yet\n\
                    $TTL 1h\n\
                    $ORIGIN rpz.example.\n\
                    @ 3600 IN SOA ns1.rpz.example. hostmaster.rpz.example. (\n\
                    \t2024010101 ; serial\n\
                    \t3600       ; refresh\n\
                    \t600 86400\n\
                    \t300 )\n\
                    \tIN NS ns1.rpz.example.\n\
                    @ NS ns2.rpz.example.\n\
                    \n";
        let list = parse(text);
        assert!(list.is_empty());
        assert_eq!(list.skipped().count, 0, "{:?}", reasons(&list));
        assert_eq!(list.line_count(), 11);
    }

    #[test]
    fn multi_line_record_reports_its_first_line() {
        let list = parse(&zone(
            "multi.example (\n  TXT \"a\" ; comment\n  \"b\" )\nnext.example ( CNAME\n . )\n",
        ));
        let all: Vec<_> = list.rules().collect();
        assert_eq!((all[0].name, all[0].line), ("multi.example", 5));
        assert_eq!(local(&list, &all[0]), [(16, b"\x01a\x01b".to_vec())]);
        assert_eq!(
            (all[1].name, all[1].line, all[1].action),
            ("next.example", 8, Some(Action::Nxdomain))
        );
        assert_eq!(list.skipped().count, 0);
    }

    #[test]
    fn soa_owner_is_the_origin_without_origin_directive() {
        let list = parse(
            "early.example CNAME .\n\
             rpz.example. IN SOA ns. admin. 1 2 3 4 5\n\
             a.example CNAME .\n\
             b.example.rpz.example. CNAME .\n\
             other.rpz.example. SOA ns. admin. 1 2 3 4 5\n\
             c CNAME .\n",
        );
        assert_eq!(
            list.rules().map(|r| r.name).collect::<Vec<_>>(),
            ["early.example", "a.example", "b.example", "c"]
        );
        assert_eq!(list.skipped().count, 0);
    }

    #[test]
    fn without_origin_names_are_used_as_written() {
        let list = parse(
            "@ SOA ns. admin. 1 2 3 4 5\nads.example.com CNAME .\nabs.example. CNAME .\n*.wild.example CNAME *.\n",
        );
        assert_eq!(
            rules(&list),
            [
                (
                    "ads.example.com",
                    Scope::Exact,
                    Verdict::Block,
                    2,
                    Some(Action::Nxdomain)
                ),
                (
                    "abs.example",
                    Scope::Exact,
                    Verdict::Block,
                    3,
                    Some(Action::Nxdomain)
                ),
                (
                    "wild.example",
                    Scope::Below,
                    Verdict::Block,
                    4,
                    Some(Action::Nodata)
                ),
            ]
        );
    }

    #[test]
    fn txt_strings_quotes_and_escapes() {
        let long = "x".repeat(255);
        let too_long = "x".repeat(256);
        let list = parse(&zone(&format!(
            "t1 TXT \"hello world\"\n\
             t2 TXT \"say \\\"hi\\\"\" back\\\\slash \"\\065\\066\"\n\
             t3 TXT \"semi ; colon\" ; a real comment\n\
             t4 TXT \"\"\n\
             t5 TXT {long}\n\
             t6 TXT {too_long}\n\
             t7 TXT \"\\256\"\n\
             t8 TXT \"\\12\"\n\
             t9 TXT \"open\n\
             t10 TXT\n"
        )));
        let all: Vec<_> = list.rules().collect();
        assert_eq!(
            all.iter().map(|r| r.name).collect::<Vec<_>>(),
            ["t1", "t2", "t3", "t4", "t5"]
        );
        assert_eq!(local(&list, &all[0]), [(16, b"\x0bhello world".to_vec())]);
        assert_eq!(
            local(&list, &all[1]),
            [(16, b"\x08say \"hi\"\x0aback\\slash\x02AB".to_vec())]
        );
        assert_eq!(local(&list, &all[2]), [(16, b"\x0csemi ; colon".to_vec())]);
        assert_eq!(local(&list, &all[3]), [(16, vec![0])]);
        let mut expect = vec![255];
        expect.extend(long.as_bytes());
        assert_eq!(local(&list, &all[4]), [(16, expect)]);
        assert_eq!(
            reasons(&list),
            [
                (10, un("TXT string longer than 255 bytes")),
                (11, un("bad \\DDD escape (above 255)")),
                (12, un("bad \\DDD escape (three decimal digits)")),
                (
                    13,
                    un("quoted string without its closing quote (quotes end on their line)")
                ),
                (14, un("TXT record without text")),
            ]
        );
    }

    #[test]
    fn cname_local_data_wire_form() {
        let list = parse(&zone(
            "abs.example CNAME Garden.Example.\n\
             rel.example CNAME garden\n\
             at.example CNAME @\n\
             esc.example CNAME a\\.b.example.\n\
             *.w.example CNAME garden.example.\n",
        ));
        let all: Vec<_> = list.rules().collect();
        assert_eq!(all.len(), 5, "{:?}", reasons(&list));
        assert_eq!(
            local(&list, &all[0]),
            [(5, b"\x06garden\x07example\x00".to_vec())]
        );
        assert_eq!(
            local(&list, &all[1]),
            [(5, b"\x06garden\x03rpz\x07example\x00".to_vec())]
        );
        assert_eq!(
            local(&list, &all[2]),
            [(5, b"\x03rpz\x07example\x00".to_vec())]
        );
        assert_eq!(
            local(&list, &all[3]),
            [(5, b"\x03a.b\x07example\x00".to_vec())]
        );
        assert_eq!((all[4].name, all[4].scope), ("w.example", Scope::Below));
        assert_eq!(
            local(&list, &all[4]),
            [(5, b"\x06garden\x07example\x00".to_vec())]
        );
    }

    #[test]
    fn bad_cname_targets_are_skipped() {
        let label64 = "a".repeat(64);
        let long = vec!["a".repeat(63); 4].join(".");
        let list = parse(&zone(&format!(
            "w.example CNAME *.garden.example.\n\
             l.example CNAME {label64}.example.\n\
             t.example CNAME {long}.\n\
             e.example CNAME a..b.\n\
             m.example CNAME\n\
             x.example CNAME a. b.\n\
             q.example CNAME \"a.\"\n"
        )));
        assert!(list.is_empty());
        assert_eq!(
            reasons(&list),
            [
                (
                    5,
                    un("CNAME to a wildcard (RPZ name substitution) is not supported")
                ),
                (6, un("CNAME target has a label longer than 63 bytes")),
                (7, un("CNAME target longer than 255 bytes")),
                (8, un("CNAME target has an empty label")),
                (9, un("CNAME record without a target")),
                (10, un(EXTRA_DATA)),
                (11, un(QUOTED)),
            ]
        );
    }

    #[test]
    fn obsolete_passthru_is_an_allow() {
        let list = parse(&zone(
            "ok.example.com CNAME ok.example.com.\n*.ok.example CNAME *.ok.example.\n",
        ));
        assert_eq!(
            rules(&list),
            [
                ("ok.example.com", Scope::Exact, Verdict::Allow, 5, None),
                ("ok.example", Scope::Below, Verdict::Allow, 6, None),
            ]
        );
    }

    #[test]
    fn multiple_a_records_share_one_local_id() {
        let list = parse(&zone(
            "multi A 192.0.2.1\nmulti A 192.0.2.2\nmulti A 192.0.2.3\nsolo A 198.51.100.1\n",
        ));
        let all: Vec<_> = list.rules().collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].action, Some(Action::Local(LocalId(0))));
        assert_eq!(
            local(&list, &all[0])
                .iter()
                .map(|(_, d)| d[3])
                .collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(all[1].action, Some(Action::Local(LocalId(1))));
        assert_eq!(local(&list, &all[1]), [(1, vec![198, 51, 100, 1])]);
    }

    #[test]
    fn other_triggers_are_skipped_and_counted() {
        let list = parse(&zone(
            "32.1.2.0.192.rpz-ip CNAME .\n\
             24.0.0.10.rpz-client-ip CNAME rpz-drop.\n\
             ns.evil.example.rpz-nsdname CNAME .\n\
             *.evil.example.rpz-nsdname CNAME .\n\
             32.1.0.0.127.rpz-nsip A 192.0.2.1\n\
             32.1.2.0.192.RPZ-IP.rpz.example. CNAME .\n\
             rpz-ip.example.com CNAME .\n",
        ));
        // Only the last is a QNAME trigger (the label above the origin is
        // `com`).
        assert_eq!(
            list.rules().map(|r| r.name).collect::<Vec<_>>(),
            ["rpz-ip.example.com"]
        );
        assert_eq!(kind_count(&list, "unsupported-trigger"), 6);
        assert_eq!(list.skipped().count, 6);
        let t = SkipReason::UnsupportedTrigger;
        assert_eq!(
            reasons(&list),
            [
                (5, t("rpz-ip")),
                (6, t("rpz-client-ip")),
                (7, t("rpz-nsdname")),
                (8, t("rpz-nsdname")),
                (9, t("rpz-nsip")),
                (10, t("rpz-ip")),
            ]
        );
    }

    #[test]
    fn conflicting_records_keep_the_first() {
        let list = parse(&zone(
            "p CNAME .\n\
             p CNAME rpz-passthru.\n\
             p A 192.0.2.1\n\
             p CNAME .\n\
             l A 192.0.2.1\n\
             l CNAME .\n\
             l CNAME garden.example.\n\
             l TXT ok\n\
             c CNAME garden.example.\n\
             c CNAME garden.example.\n\
             c CNAME other.example.\n\
             c A 192.0.2.1\n",
        ));
        let all: Vec<_> = list.rules().collect();
        assert_eq!(
            all.iter().map(|r| (r.name, r.line)).collect::<Vec<_>>(),
            [("p", 5), ("l", 9), ("c", 13)]
        );
        assert_eq!(all[0].action, Some(Action::Nxdomain));
        assert_eq!(local(&list, &all[1]).len(), 2);
        assert_eq!(local(&list, &all[2]).len(), 1);
        assert_eq!(
            reasons(&list)
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>(),
            [6, 7, 10, 11, 15, 16]
        );
        assert!(reasons(&list).iter().all(|(_, r)| *r == un(CONFLICT)));
    }

    #[test]
    fn ttl_and_class_in_either_order() {
        let list = parse(&zone(
            "a 300 IN CNAME .\n\
             b IN 300 CNAME .\n\
             c 1h30m CNAME .\n\
             d in cname .\n\
             e CH CNAME .\n\
             f 300 300 CNAME .\n\
             g IN IN CNAME .\n",
        ));
        assert_eq!(
            list.rules().map(|r| r.name).collect::<Vec<_>>(),
            ["a", "b", "c", "d"]
        );
        assert_eq!(
            reasons(&list),
            [
                (9, un("class other than IN")),
                (10, un("not a record type")),
                (11, un("not a record type")),
            ]
        );
    }

    #[test]
    fn directives() {
        let list = parse(&zone(
            "$INCLUDE other.zone\n\
             $GENERATE 1-10 host$ CNAME .\n\
             $FOO bar\n\
             $TTL\n\
             $TTL abc\n\
             $TTL 1d ; fine\n\
             a CNAME .\n",
        ));
        assert_eq!(list.rules().map(|r| r.name).collect::<Vec<_>>(), ["a"]);
        assert_eq!(
            reasons(&list),
            [
                (
                    5,
                    un("$INCLUDE is not supported: a list is read from one file")
                ),
                (6, un("$GENERATE is not supported")),
                (7, un("unknown $ directive")),
                (8, un("$TTL without a TTL")),
                (9, un("$TTL with a bad TTL")),
            ]
        );
    }

    #[test]
    fn unsupported_local_data_types() {
        let list = parse(&zone(
            "m MX 10 mail.example.\ns SRV 0 0 443 t.example.\ng TYPE65280 \\# 0\n",
        ));
        assert!(list.is_empty());
        assert_eq!(
            reasons(&list),
            [
                (5, un(UNSUPPORTED_TYPE)),
                (6, un(UNSUPPORTED_TYPE)),
                (7, un(UNSUPPORTED_TYPE))
            ]
        );
    }

    #[test]
    fn junk_lines_are_skipped_with_reasons() {
        let list = parse(&zone(
            "just-a-name.example\n\
             0.0.0.0 ads.example\n\
             bad!name CNAME .\n\
             a A 999.1.1.1\n\
             b A 192.0.2.1 extra\n\
             c AAAA 192.0.2.1\n\
             d A\n\
             e A \"192.0.2.1\"\n\
             \"quoted\" CNAME .\n\
             \tA 192.0.2.1\n\
             * CNAME .\n\
             x.*.y CNAME .\n\
             ) CNAME .\n\
             1.2.3.4 CNAME .\n",
        ));
        assert!(list.is_empty(), "{:?}", rules(&list));
        assert_eq!(
            reasons(&list),
            [
                (5, un("no record type")),
                (6, un("not a record type")),
                (7, SkipReason::BadName(NameError::BadChar('!'))),
                (8, un("not an IPv4 address")),
                (9, un(EXTRA_DATA)),
                (10, un("not an IPv6 address")),
                (11, un("A record without an address")),
                (12, un(QUOTED)),
                (13, un("owner name in quotes")),
                (
                    14,
                    un("no owner name, and the earlier record's was unusable")
                ),
                (
                    15,
                    un("wildcard at the zone's apex (every name) is not supported")
                ),
                (16, SkipReason::BadName(NameError::BadChar('*'))),
                (17, un("unbalanced parenthesis: ) without (")),
                (18, SkipReason::BadName(NameError::IpAddress)),
            ]
        );
    }

    #[test]
    fn first_record_without_owner_is_skipped() {
        let list = parse("  A 192.0.2.1\n  CNAME .\n");
        assert!(list.is_empty());
        assert_eq!(list.skipped().count, 2);
        assert_eq!(
            reasons(&list)[0].1,
            un("no owner name, and no earlier record to take it from")
        );
    }

    #[test]
    fn unclosed_parenthesis_costs_one_line() {
        let list = parse(&zone("bad CNAME ( .\na CNAME .\nb CNAME .\n"));
        assert_eq!(list.rules().map(|r| r.name).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(
            reasons(&list),
            [(
                5,
                un("unbalanced parenthesis: no ) before the end of the file")
            )]
        );
        assert_eq!(list.line_count(), 7);
    }

    #[test]
    fn long_parenthesised_record_is_cut_off() {
        let mut body = String::from("big TXT (\n");
        for i in 0..150 {
            body.push_str(&format!("  w{i}\n"));
        }
        body.push_str(")\nafter CNAME .\n");
        let list = parse(&zone(&body));
        // The lines after the first are read again: `  wN` is no record
        // type, the `)` is unbalanced, `after` is a rule.
        assert_eq!(list.rules().map(|r| r.name).collect::<Vec<_>>(), ["after"]);
        let r = reasons(&list);
        assert_eq!(r[0], (5, un("parenthesised record longer than 100 lines")));
        assert_eq!(r[1], (6, un("not a record type")));
        assert_eq!(list.skipped().count, 1 + 150 + 1);
    }

    #[test]
    fn many_open_parentheses_are_read_at_most_twice() {
        let text = "a CNAME ( .\n".repeat(2000);
        let list = parse(&text);
        assert!(list.is_empty());
        assert!(list.skipped().count < 2000);
        assert_eq!(list.line_count(), 2000);
    }

    #[test]
    fn bom_crlf_and_comments() {
        let list = parse(
            "\u{feff}$ORIGIN rpz.example.\r\n; comment\r\n\r\na CNAME . ; why\r\nb TXT \"x;y\"\r\n",
        );
        let all: Vec<_> = list.rules().collect();
        assert_eq!(
            all.iter().map(|r| (r.name, r.line)).collect::<Vec<_>>(),
            [("a", 4), ("b", 5)]
        );
        assert_eq!(local(&list, &all[1]), [(16, b"\x03x;y".to_vec())]);
        assert_eq!(list.skipped().count, 0);
        assert_eq!(list.line_count(), 5);
    }

    #[test]
    fn large_zone_parses() {
        let n = 200_000;
        let mut text = String::from(HEAD);
        for i in 0..n {
            match i % 4 {
                0 => text.push_str(&format!("n{i}.example.com CNAME .\n")),
                1 => text.push_str(&format!("*.w{i}.example.com 300 IN CNAME rpz-passthru.\n")),
                2 => text.push_str(&format!("l{i}.example.com A 192.0.2.{}\n", i % 256)),
                _ => text.push_str(&format!("l{}.example.com TXT \"t{i}\"\n", i - 1)),
            }
        }
        let list = parse(&text);
        assert_eq!(list.skipped().count, 0);
        assert_eq!(list.len(), n * 3 / 4);
        let last = list.rules().last().unwrap();
        let Some(Action::Local(id)) = last.action else {
            panic!("{last:?}")
        };
        assert_eq!(RuleSet::local(&list, id).len(), 2);
    }

    /// A small deterministic generator (xorshift64*), so a failure repeats.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn check_invariants(text: &str) {
        let list = parse(text);
        let lines = list.line_count();
        for r in list.rules() {
            assert!(r.line >= 1 && r.line <= lines, "{text:?}");
            if let Some(Action::Local(id)) = r.action {
                assert!(!RuleSet::local(&list, id).is_empty(), "{text:?}");
            }
            let last = r.name.rsplit('.').next().unwrap_or(r.name);
            assert!(!TRIGGERS.contains(&last), "{text:?}");
        }
        for s in &list.skipped().first {
            assert!(s.line >= 1 && s.line <= lines, "{text:?}");
        }
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seed = zone(
            "a CNAME .\n*.b CNAME *.\nc A 192.0.2.1\n\tAAAA ::1\n\tTXT \"x\\\"y\" z\n\
             d CNAME garden.example.\n32.1.2.0.192.rpz-ip CNAME .\ne ( CNAME\n rpz-drop. )\n",
        );
        let alphabet = b"();\"\\ \t\n\r.*@$aAz09-_\xff";
        for round in 0..3000 {
            let text = if round % 3 == 0 {
                let len = rng.below(300);
                let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                let mut bytes = seed.clone().into_bytes();
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(bytes.len() + 1);
                    let c = alphabet[rng.below(alphabet.len())];
                    match rng.below(3) {
                        0 => bytes.insert(at, c),
                        1 if at < bytes.len() => {
                            bytes.remove(at);
                        }
                        _ if at < bytes.len() => bytes[at] = c,
                        _ => {}
                    }
                }
                String::from_utf8_lossy(&bytes).into_owned()
            };
            check_invariants(&text);
        }
    }
}
