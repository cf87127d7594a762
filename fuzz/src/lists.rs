//! The `list_*` targets: a list file's bytes, parsed whole and in chunks
//! of whole lines (as `lists::read` streams a file), and the rules held to
//! what a rule promises.

use std::path::Path;

use sinkhole::lists::source::{Decoder, Unreadable, decode};
use sinkhole::lists::{
    Action, Format, FormatChoice, KEEP_SKIPPED, ParsedList, RuleSet, Scope, SkipReason, Verdict,
    line_by_line, parse, parse_chunk, sized_for,
};
use sinkhole::policy::name::{MAX_LABEL_LEN, MAX_NAME_LEN};
use sinkhole::policy::{self, Category, Decision, DomainName, ListInput};

use crate::wire;

/// One input: the list file's bytes. The first byte also sets the chunk
/// size of the streamed read.
pub fn run(format: Format, data: &[u8]) {
    let choice = FormatChoice::Fixed(format);
    // Text as it is, when it is UTF-8: the parser alone, and the format
    // detector on it.
    if let Ok(text) = std::str::from_utf8(data) {
        let list = parse(text, choice);
        assert_eq!(list.format(), format);
        check_list(&list);
        check_list(&parse(text, FormatChoice::Auto));
    }
    // Bytes as a file or a download is read: decoded whole, and streamed
    // a chunk of whole lines at a time. Both read the same.
    let whole = decode(data, None).map(|t| {
        let list = parse(&t.text, choice);
        (t.text.into_owned(), list, t.not_utf8)
    });
    let chunk = 1 + usize::from(data.first().copied().unwrap_or(0) % 64);
    let streamed = streamed(data, chunk, choice);
    match (&whole, &streamed) {
        (Ok((text, list, not_utf8)), Ok((s_text, s_list, s_not_utf8))) => {
            check_list(list);
            assert_eq!(
                not_utf8, s_not_utf8,
                "lines not UTF-8 differ in chunks of {chunk}"
            );
            assert_eq!(text, s_text, "decoded text differs in chunks of {chunk}");
            if list != s_list {
                panic!(
                    "parsed in chunks of {chunk}, the list differs:\nwhole: {:?}\nchunks: {:?}",
                    summary(list),
                    summary(s_list)
                );
            }
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "read errors differ in chunks of {chunk}"),
        (a, b) => panic!(
            "whole and chunked reads disagree in chunks of {chunk}: {:?} vs {:?}",
            a.as_ref().err(),
            b.as_ref().err()
        ),
    }
}

fn summary(list: &ParsedList) -> (Vec<(String, u32)>, u64, u32) {
    (
        list.rules().map(|r| (r.name.to_owned(), r.line)).collect(),
        list.skipped().count,
        list.line_count(),
    )
}

/// Whole lines, at most about `size` bytes at a time: what `LineChunks`
/// hands out (a line longer than that comes whole).
fn line_chunks(data: &[u8], size: usize) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let window = &data[start..data.len().min(start + size)];
        let cut = match window.iter().rposition(|&b| b == b'\n') {
            Some(i) => start + i + 1,
            None => match data[start..].iter().position(|&b| b == b'\n') {
                Some(i) => start + i + 1,
                None => data.len(),
            },
        };
        chunks.push(&data[start..cut]);
        start = cut;
    }
    chunks
}

/// What `lists::read` does with a file, chunk by chunk: decode, parse a
/// chunk at a time (RPZ gathered whole and parsed at the end).
fn streamed(
    data: &[u8],
    size: usize,
    choice: FormatChoice,
) -> Result<(String, ParsedList, Vec<u32>), Unreadable> {
    let FormatChoice::Fixed(format) = choice else {
        unreachable!("the targets fix the format");
    };
    let mut decoder = Decoder::new(None);
    let mut list: Option<ParsedList> = None;
    let mut text_all = String::new();
    let mut last_line = 0u32;
    for chunk in line_chunks(data, size) {
        let first_line = decoder.lines().saturating_add(1);
        let text = decoder.feed(chunk)?;
        text_all.push_str(&text);
        let list = list.get_or_insert_with(|| sized_for(format, data.len(), size));
        if line_by_line(format) {
            last_line = last_line.max(parse_chunk(list, &text, first_line));
        }
    }
    let not_utf8 = decoder.finish()?;
    let parsed = match list {
        Some(mut list) if line_by_line(format) => {
            list.set_line_count(last_line);
            list
        }
        Some(_) => parse(&text_all, choice),
        None => parse("", choice),
    };
    Ok((text_all, parsed, not_utf8))
}

/// A rule's name: lowercase letters, digits, `-` and `_` in labels of
/// 1..=63, at most 253 in all, no trailing dot, not an IPv4 address, and
/// already in the form `DomainName` gives it.
fn check_name(name: &str) {
    assert!(!name.is_empty(), "empty rule name");
    assert!(
        name.len() <= MAX_NAME_LEN,
        "rule name of {} bytes",
        name.len()
    );
    for label in name.split('.') {
        assert!(
            (1..=MAX_LABEL_LEN).contains(&label.len()),
            "label {label:?} of {name:?}"
        );
        assert!(
            label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'),
            "bad character in rule name {name:?}"
        );
    }
    assert!(
        name.parse::<std::net::Ipv4Addr>().is_err(),
        "an address as a rule: {name}"
    );
    match DomainName::parse(name) {
        Ok(n) => assert_eq!(n.as_str(), name, "rule name not normalised"),
        Err(e) => panic!("rule name {name:?} does not parse again: {e}"),
    }
}

/// RPZ local data as the zone gave it, in wire form: one of the four
/// types local data may be, with RDATA that reads as that type.
fn check_local(records: &[sinkhole::lists::LocalRecord]) {
    assert!(!records.is_empty(), "local data without records");
    for r in records {
        let d = &r.rdata;
        match r.rtype {
            wire::TYPE_A => assert_eq!(d.len(), 4),
            wire::TYPE_AAAA => assert_eq!(d.len(), 16),
            wire::TYPE_TXT => {
                assert!(!d.is_empty(), "empty TXT RDATA");
                let mut p = 0;
                while p < d.len() {
                    p += 1 + usize::from(d[p]);
                }
                assert_eq!(p, d.len(), "TXT strings do not add up");
            }
            wire::TYPE_CNAME => {
                assert!(
                    d.len() <= 255 && d.len() > 1,
                    "CNAME target of {} bytes",
                    d.len()
                );
                let mut p = 0;
                loop {
                    let len = usize::from(d[p]);
                    if len == 0 {
                        // Known issue (regressions/README.md): a `$ORIGIN`
                        // with an empty label (`r..`) completes names with
                        // it, so the root comes early.
                        if p + 1 < d.len() && !*crate::STRICT {
                            return;
                        }
                        break;
                    }
                    assert!(len <= 63, "CNAME target label of {len}");
                    p += 1 + len;
                    assert!(p < d.len(), "CNAME target runs past its RDATA");
                }
                assert_eq!(
                    p + 1,
                    d.len(),
                    "bytes after the CNAME target's root: {d:02x?}"
                );
                // Whatever hickory makes of the bytes, it reads the name.
                let mut m = vec![0, 0, 0x80, 0, 0, 0, 0, 1, 0, 0, 0, 0];
                m.extend_from_slice(&[0, 0, 5, 0, 1, 0, 0, 0, 60]);
                m.extend_from_slice(&(d.len() as u16).to_be_bytes());
                m.extend_from_slice(d);
                if let Err(e) = hickory_proto::op::Message::from_vec(&m) {
                    panic!("CNAME local data {d:02x?} does not read: {e}");
                }
            }
            t => panic!("local data of type {t}"),
        }
    }
}

fn check_list(list: &ParsedList) {
    let format = list.format();
    let lines = list.line_count();
    let mut count = 0usize;
    for rule in list.rules() {
        count += 1;
        check_name(rule.name);
        assert!(
            (1..=lines).contains(&rule.line),
            "rule at line {} of {lines}",
            rule.line
        );
        match format {
            Format::Domains | Format::Wildcard => {
                assert_ne!(rule.scope, Scope::Exact);
                assert_eq!(rule.verdict, Verdict::Block);
                assert_eq!(rule.action, None);
            }
            Format::Hosts => {
                assert_eq!(rule.scope, Scope::Subtree);
                assert_eq!(rule.verdict, Verdict::Block);
                assert_eq!(rule.action, None);
            }
            Format::Adblock => {
                assert_eq!(rule.scope, Scope::Subtree);
                assert_eq!(rule.action, None);
            }
            Format::Rpz => {
                assert_ne!(rule.scope, Scope::Subtree, "RPZ names are exact or *.");
                match (rule.verdict, rule.action) {
                    (Verdict::Allow, None) => {}
                    (Verdict::Allow, Some(a)) => panic!("an allow rule with action {a}"),
                    (Verdict::Block, Some(Action::Local(id))) => {
                        check_local(RuleSet::local(list, id));
                    }
                    (Verdict::Block, Some(_)) => {}
                    (Verdict::Block, None) => panic!("an RPZ block rule without an action"),
                }
            }
        }
    }
    assert_eq!(count, list.len());
    let skipped = list.skipped();
    assert_eq!(
        skipped.by_kind.iter().sum::<u64>(),
        skipped.count,
        "skips by kind"
    );
    assert_eq!(
        skipped.first.len() as u64,
        skipped.count.min(KEEP_SKIPPED as u64),
        "skipped lines kept"
    );
    for s in &skipped.first {
        assert!(
            s.text.len() <= 200,
            "a skipped line kept at {} bytes",
            s.text.len()
        );
        assert!(
            (1..=lines.max(1)).contains(&s.line),
            "skipped line {} of {lines}",
            s.line
        );
        assert!(SkipReason::KINDS.contains(&s.reason.kind()));
        assert!(!s.reason.to_string().is_empty());
    }
    check_policy(list);
}

/// The list as a blocklist in a policy: every rule decides the names it
/// covers (some rule does, not necessarily this one: another may be more
/// specific or allow).
fn check_policy(list: &ParsedList) {
    let categories = vec![Category {
        name: "c".into(),
        action: sinkhole::policy::Action::Nxdomain,
        reason: None,
        alternatives: vec![],
    }];
    let inputs = [ListInput {
        name: "fuzz",
        path: Path::new("fuzz"),
        category: Some("c"),
        rules: list,
    }];
    let policy = match policy::build(categories, &inputs) {
        Ok(p) => p,
        Err(e) => panic!("policy from a parsed list: {e}"),
    };
    assert_eq!(policy.rule_count(), list.len());
    for rule in list.rules().take(64) {
        let covered = match rule.scope {
            Scope::Below => format!("x.{}", rule.name),
            Scope::Subtree | Scope::Exact => rule.name.to_owned(),
        };
        let Ok(name) = DomainName::parse(&covered) else {
            continue; // one label too long for a name below it
        };
        match policy.decide_name(&name) {
            Decision::Forward => panic!("rule {rule:?} decides nothing for {covered}"),
            Decision::Allow(hit) | Decision::Block { hit, .. } => {
                assert!(hit.depth <= name.labels().count());
                assert!(hit.depth >= 1);
            }
        }
    }
}
