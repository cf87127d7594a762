//! The `domains` list format: one name per line.
//!
//! ```text
//! # comment           ! also a comment (some lists use adblock-style headers)
//! ads.example.com     ← blocks the name and every subdomain
//! tracker.example     # inline comments follow whitespace
//! *.cdn.example       ← accepted too: subdomains only (see below)
//! ```
//!
//! A line with two or more fields is skipped, not guessed at: it is usually a
//! hosts line in the wrong list, and the report says so.
//!
//! This file also holds the line-walking helpers the other parsers share.

use super::{Format, ParsedList, Scope, SkipReason, Verdict};

pub fn parse(text: &str) -> ParsedList {
    parse_names(text, Format::Domains)
}

/// One name per line, `*.name` allowed: the grammar of both `domains` and
/// `wildcard` lists, which differ only in which format they report.
///
/// A `*.name` line means "only strict subdomains of name" ([`Scope::Below`]).
/// In a `domains` list that is not strictly the format, but lists in the wild
/// mix the two and the meaning is unambiguous, so we take it rather than skip
/// it (Postel: be liberal in what you accept).
pub(super) fn parse_names(text: &str, format: Format) -> ParsedList {
    let mut list = ParsedList::for_text(format, text);
    let lines = parse_names_into(&mut list, text, 1);
    list.set_line_count(lines);
    list
}

/// The lines of `text`, numbered from `first`, into `list` (a chunk of a
/// longer list: see [`super::parse_chunk`]). Returns the last line's number.
pub(super) fn parse_names_into(list: &mut ParsedList, text: &str, first: u32) -> u32 {
    let mut lines = first.saturating_sub(1);
    for (n, raw) in numbered_lines_from(text, first) {
        lines = n;
        let line = raw.trim_ascii();
        if line.is_empty() || line.starts_with(['#', '!']) {
            continue;
        }
        // Not empty: the line is trimmed and does not start with `#`. Most
        // lines are a bare name: one scan tells, and only the others are
        // looked at twice.
        let token = if line.bytes().any(|b| b == b'#' || b.is_ascii_whitespace()) {
            let token = strip_inline_comment(line);
            if token.bytes().any(|b| b.is_ascii_whitespace()) {
                list.skip(
                    n,
                    raw,
                    SkipReason::Unrecognised("more than one name on a line"),
                );
                continue;
            }
            token
        } else {
            line
        };
        let (name, scope) = match token.strip_prefix("*.") {
            Some(rest) => (rest, Scope::Below),
            None => (token, Scope::Subtree),
        };
        list.push_rule(n, raw, name, scope, Verdict::Block);
    }
    lines
}

/// The lines of `text` with their 1-based numbers, without a leading byte
/// order mark. `str::lines` already drops the `\r` of `\r\n` endings; callers
/// trim whatever whitespace is left.
pub(super) fn numbered_lines(text: &str) -> impl Iterator<Item = (u32, &str)> {
    numbered_lines_from(text, 1)
}

/// As [`numbered_lines`], the first line numbered `first` (a BOM is only
/// looked for at the very start of a list).
pub(super) fn numbered_lines_from(text: &str, first: u32) -> impl Iterator<Item = (u32, &str)> {
    let text = if first == 1 {
        text.strip_prefix('\u{feff}').unwrap_or(text)
    } else {
        text
    };
    // `str::lines`, by memchr: a million-line list spent more on finding
    // its line ends through `lines()`'s char searcher than on anything but
    // checking the names.
    let mut ends = memchr::memchr_iter(b'\n', text.as_bytes());
    let mut pos = 0usize;
    let mut n = first;
    std::iter::from_fn(move || {
        if pos >= text.len() {
            return None;
        }
        let line = match ends.next() {
            Some(end) => {
                let line = &text[pos..end];
                pos = end + 1;
                line.strip_suffix('\r').unwrap_or(line)
            }
            None => {
                let line = &text[pos..];
                pos = text.len();
                line
            }
        };
        let number = n;
        n = n.saturating_add(1);
        Some((number, line))
    })
}

/// Cuts a `#` comment that starts the text or follows whitespace, so
/// `name # why` loses its comment but a `#` glued to a name stays part of it
/// (and makes the name invalid, which the report then shows).
pub(super) fn strip_inline_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut from = 0;
    while let Some(at) = line[from..].find('#').map(|i| from + i) {
        if at == 0 || bytes[at - 1].is_ascii_whitespace() {
            return line[..at].trim_ascii_end();
        }
        from = at + 1;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lists::{NameError, SkippedLine};

    fn rules(list: &ParsedList) -> Vec<(&str, Scope, u32)> {
        list.rules()
            .inspect(|r| assert_eq!(r.verdict, Verdict::Block))
            .map(|r| (r.name, r.scope, r.line))
            .collect()
    }

    #[test]
    fn lines_are_split_as_str_lines_splits_them() {
        for text in [
            "", "\n", "a", "a\n", "a\r\nb", "a\r", "a\r\r\n", "\n\nb\n", "a\rb\n", "x\n\r\n",
        ] {
            let ours: Vec<_> = numbered_lines_from(text, 5).collect();
            let std: Vec<_> = text
                .lines()
                .enumerate()
                .map(|(i, l)| (i as u32 + 5, l))
                .collect();
            assert_eq!(ours, std, "{text:?}");
        }
    }

    #[test]
    fn one_name_per_line() {
        let list = parse("ads.example.com\ntracker.example\n");
        assert_eq!(list.format(), Format::Domains);
        assert_eq!(
            rules(&list),
            [
                ("ads.example.com", Scope::Subtree, 1),
                ("tracker.example", Scope::Subtree, 2),
            ]
        );
        assert_eq!(list.skipped().count, 0);
        assert_eq!(list.line_count(), 2);
    }

    #[test]
    fn comments_and_blank_lines_are_neither_rules_nor_skips() {
        let text = "# Title: test\n\n   \n! adblock-style header\n\t# indented\na.example\n#\n";
        let list = parse(text);
        assert_eq!(rules(&list), [("a.example", Scope::Subtree, 6)]);
        assert_eq!(list.skipped().count, 0);
        assert!(list.skipped().first.is_empty());
        assert_eq!(list.line_count(), 7);
    }

    #[test]
    fn inline_comments_after_whitespace() {
        let list = parse("a.example # why\nb.example\t#tab\nc.example#glued\n");
        assert_eq!(
            rules(&list),
            [
                ("a.example", Scope::Subtree, 1),
                ("b.example", Scope::Subtree, 2)
            ]
        );
        assert_eq!(
            list.skipped().first,
            [SkippedLine {
                line: 3,
                reason: SkipReason::BadName(NameError::BadChar('#')),
                text: "c.example#glued".into(),
            }]
        );
    }

    #[test]
    fn more_than_one_name_is_skipped() {
        let list = parse("0.0.0.0 ads.example\na.example b.example # both\n");
        assert!(list.is_empty());
        let skipped = list.skipped();
        assert_eq!(skipped.count, 2);
        assert_eq!(
            skipped.first[0].reason,
            SkipReason::Unrecognised("more than one name on a line")
        );
        assert_eq!(skipped.first[0].text, "0.0.0.0 ads.example");
        assert_eq!(skipped.first[1].line, 2);
    }

    #[test]
    fn wildcard_line_means_strict_subdomains() {
        let list = parse("*.cdn.example\n*.\n*ads.example\n");
        assert_eq!(rules(&list), [("cdn.example", Scope::Below, 1)]);
        let reasons: Vec<_> = list.skipped().first.iter().map(|s| &s.reason).collect();
        assert_eq!(
            reasons,
            [
                &SkipReason::BadName(NameError::Empty),
                &SkipReason::BadName(NameError::BadChar('*')),
            ]
        );
    }

    #[test]
    fn lowercases_and_strips_trailing_dot() {
        let list = parse("Ads.EXAMPLE.com.\n");
        assert_eq!(rules(&list), [("ads.example.com", Scope::Subtree, 1)]);
    }

    #[test]
    fn crlf_bom_tabs_and_padding() {
        let list = parse("\u{feff}# header\r\n\ta.example  \r\n\r\n  b.example\t\r\nc.example\r");
        assert_eq!(
            rules(&list),
            [
                ("a.example", Scope::Subtree, 2),
                ("b.example", Scope::Subtree, 4),
                ("c.example", Scope::Subtree, 5),
            ]
        );
        assert_eq!(list.skipped().count, 0);
        assert_eq!(list.line_count(), 5);
    }

    #[test]
    fn bom_on_a_name_line() {
        let list = parse("\u{feff}a.example\n");
        assert_eq!(rules(&list), [("a.example", Scope::Subtree, 1)]);
    }

    #[test]
    fn bad_names_are_skipped_with_the_name_error() {
        let list = parse("10.0.0.1\na..example\nhttp://a.example/\n||a.example^\n");
        assert!(list.is_empty());
        let reasons: Vec<_> = list
            .skipped()
            .first
            .iter()
            .map(|s| s.reason.clone())
            .collect();
        assert_eq!(
            reasons,
            [
                SkipReason::BadName(NameError::IpAddress),
                SkipReason::BadName(NameError::EmptyLabel),
                SkipReason::BadName(NameError::BadChar(':')),
                SkipReason::BadName(NameError::BadChar('|')),
            ]
        );
    }

    #[test]
    fn empty_text() {
        let list = parse("");
        assert!(list.is_empty());
        assert_eq!(list.line_count(), 0);
        assert_eq!(list.skipped().count, 0);
    }

    #[test]
    fn skip_log_keeps_only_the_first_lines() {
        let text = "a b\n".repeat(100);
        let list = parse(&text);
        assert_eq!(list.skipped().count, 100);
        assert_eq!(list.skipped().first.len(), crate::lists::KEEP_SKIPPED);
    }

    #[test]
    fn very_long_line() {
        let long = "a".repeat(100_000);
        let list = parse(&format!("{long}\n{long} {long}\n"));
        assert!(list.is_empty());
        assert_eq!(list.skipped().count, 2);
        assert!(list.skipped().first[0].text.len() <= 200);
    }

    #[test]
    fn inline_comment_helper() {
        assert_eq!(strip_inline_comment("a # b"), "a");
        assert_eq!(strip_inline_comment("a#b # c"), "a#b");
        assert_eq!(strip_inline_comment("# all"), "");
        assert_eq!(strip_inline_comment("a#b"), "a#b");
        assert_eq!(strip_inline_comment("a"), "a");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC*(\r?\n\\PC*){0,8}") {
            let list = parse(&text);
            proptest::prop_assert!(list.len() as u64 + list.skipped().count <= text.lines().count() as u64);
        }

        #[test]
        fn never_panics_on_list_like_text(
            lines in proptest::collection::vec("[ \t#!*.a-zA-Z0-9_\u{e9}\u{feff}\r-]{0,30}", 0..20)
        ) {
            let text = lines.join("\n");
            let list = parse(&text);
            for rule in list.rules() {
                proptest::prop_assert!(!rule.name.is_empty());
                proptest::prop_assert_eq!(rule.name, rule.name.to_ascii_lowercase());
            }
        }
    }
}
