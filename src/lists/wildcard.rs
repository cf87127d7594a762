//! The `wildcard` list format (DNSCrypt, Blocky, YogaDNS…):
//!
//! ```text
//! # comment
//! *.ads.example      ← strict subdomains of ads.example (Scope::Below)
//! tracker.example    ← the name and its subdomains (Scope::Subtree)
//! ```
//!
//! The grammar is the same as `domains` (which accepts `*.name` too), so both
//! share one parser; inline `# comments` and `!` comment lines work here as
//! well. Any other use of `*` (`*ads.example`, `ads.*`, `a.*.example`) is not
//! a name and is skipped as a bad name.

use super::{Format, ParsedList, domains};

pub fn parse(text: &str) -> ParsedList {
    domains::parse_names(text, Format::Wildcard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lists::{NameError, Scope, SkipReason, Verdict};

    fn rules(list: &ParsedList) -> Vec<(&str, Scope, u32)> {
        list.rules()
            .inspect(|r| assert_eq!(r.verdict, Verdict::Block))
            .map(|r| (r.name, r.scope, r.line))
            .collect()
    }

    #[test]
    fn star_dot_is_below_and_plain_is_subtree() {
        let list = parse("# Title\n*.ads.example\ntracker.example\n\n*.Mixed.CASE.example.\n");
        assert_eq!(list.format(), Format::Wildcard);
        assert_eq!(
            rules(&list),
            [
                ("ads.example", Scope::Below, 2),
                ("tracker.example", Scope::Subtree, 3),
                ("mixed.case.example", Scope::Below, 5),
            ]
        );
        assert_eq!(list.skipped().count, 0);
        assert_eq!(list.line_count(), 5);
    }

    #[test]
    fn comments_crlf_bom() {
        let list = parse("\u{feff}# c\r\n*.a.example # inline\r\n! bang\r\n\r\n");
        assert_eq!(rules(&list), [("a.example", Scope::Below, 2)]);
        assert_eq!(list.skipped().count, 0);
        assert_eq!(list.line_count(), 4);
    }

    #[test]
    fn other_wildcards_are_bad_names() {
        let list = parse("*ads.example\nads.*\na.*.example\n*.*.example\n*\n*.\n");
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
                SkipReason::BadName(NameError::BadChar('*')),
                SkipReason::BadName(NameError::BadChar('*')),
                SkipReason::BadName(NameError::BadChar('*')),
                SkipReason::BadName(NameError::BadChar('*')),
                SkipReason::BadName(NameError::BadChar('*')),
                SkipReason::BadName(NameError::Empty),
            ]
        );
    }

    #[test]
    fn two_fields_are_skipped() {
        let list = parse("*.a.example *.b.example\n");
        assert!(list.is_empty());
        assert_eq!(
            list.skipped().first[0].reason,
            SkipReason::Unrecognised("more than one name on a line")
        );
    }
}
