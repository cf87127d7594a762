//! The `adblock` list format, the DNS subset AdGuard Home and Pi-hole use:
//!
//! ```text
//! [Adblock Plus 2.0]          ← header, a comment
//! ! Title: …                  ← comment (so is a `#` line that is not cosmetic)
//! ||ads.example^              ← block ads.example and its subdomains
//! @@||good.ads.example^       ← allow it again
//! ||ads.example^$important    ← same as without the option (see below)
//! ads.example                 ← a bare domain, as AdGuard Home reads it
//! ```
//!
//! Everything else a browser blocker understands (cosmetic `##` rules, URL
//! paths, `|http://` anchors, `/regex/`, wildcards, options such as
//! `$third-party` or `$client=`) cannot be expressed as "this name and its
//! subdomains", so those lines are skipped as [`SkipReason::UnsupportedAdblock`]
//! rather than turned into a rule that blocks more or less than the author
//! meant.

use super::domains::numbered_lines_from;
use super::{Format, ParsedList, Scope, SkipReason, Verdict};

pub fn parse(text: &str) -> ParsedList {
    let mut list = ParsedList::for_text(Format::Adblock, text);
    let lines = parse_into(&mut list, text, 1);
    list.set_line_count(lines);
    list
}

/// The lines of `text`, numbered from `first`, into `list`; returns the
/// last line's number.
pub fn parse_into(list: &mut ParsedList, text: &str, first: u32) -> u32 {
    let mut lines = first.saturating_sub(1);
    for (n, raw) in numbered_lines_from(text, first) {
        lines = n;
        match classify(raw.trim_ascii()) {
            Line::Comment => {}
            Line::Rule(name, verdict) => {
                list.push_rule(n, raw, name, Scope::Subtree, verdict);
            }
            Line::Unsupported => list.skip(n, raw, SkipReason::UnsupportedAdblock),
        }
    }
    lines
}

#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    Comment,
    /// A name (not yet validated) covering itself and its subdomains.
    Rule(&'a str, Verdict),
    Unsupported,
}

/// What one trimmed line is.
fn classify(line: &str) -> Line<'_> {
    // Fast path for the overwhelmingly common `||name^`, where the name has
    // only name characters; [`classify_any`] gives the same answer, slower.
    if let Some(name) = line.strip_prefix("||").and_then(|r| r.strip_suffix('^'))
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Line::Rule(name, Verdict::Block);
    }
    classify_any(line)
}

fn classify_any(line: &str) -> Line<'_> {
    if line.is_empty() || line.starts_with('!') {
        return Line::Comment;
    }
    if line.starts_with('[') && line.ends_with(']') {
        return Line::Comment; // `[Adblock Plus 2.0]`, `[AdGuard]`
    }
    if line.starts_with('#') {
        // `##.ad` and friends are cosmetic rules for every site; any other
        // `#` line is a hosts-style comment (AdGuard reads them the same way).
        return if COSMETIC_MARKERS.iter().any(|m| line.starts_with(m)) {
            Line::Unsupported
        } else {
            Line::Comment
        };
    }
    if is_cosmetic(line) {
        return Line::Unsupported;
    }

    let (verdict, rule) = match line.strip_prefix("@@") {
        Some(rest) => (Verdict::Allow, rest),
        None => (Verdict::Block, line),
    };
    if rule.starts_with('/') {
        return Line::Unsupported; // `/regex/` or a URL path pattern
    }
    let (pattern, options) = match rule.rfind('$') {
        Some(at) => (&rule[..at], &rule[at + 1..]),
        None => (rule, ""),
    };
    if !options.split(',').all(|o| harmless_option(o.trim_ascii())) {
        return Line::Unsupported;
    }

    if let Some(rest) = pattern.strip_prefix("||") {
        // `||name^`, `||name^|` or plain `||name`. Anything after the name
        // (a path, a port, a `*`) makes it a URL rule, not a name rule.
        let end = rest.bytes().position(is_url_byte).unwrap_or(rest.len());
        let (name, tail) = rest.split_at(end);
        return match tail {
            "" | "^" | "^|" => Line::Rule(name, verdict),
            _ => Line::Unsupported,
        };
    }
    if pattern.bytes().any(is_url_byte) {
        return Line::Unsupported; // `|https://…`, `ad*.example`, `/ads^`…
    }
    // A bare pattern. AdGuard Home takes `ads.example` as a domain, and so
    // do we; but in browser lists a bare word or a `name.` fragment (`ads`,
    // `banner.`) is a URL substring, and as a name it would block a whole
    // top-level domain, so those are not taken.
    if pattern.contains('.') && !pattern.ends_with('.') {
        Line::Rule(pattern, verdict)
    } else {
        Line::Unsupported
    }
}

/// Characters that only appear in URL patterns, never in a name.
fn is_url_byte(b: u8) -> bool {
    matches!(
        b,
        b'^' | b'|' | b'*' | b'/' | b':' | b'?' | b'&' | b'=' | b'#' | b'@'
    )
}

/// Options that do not change what a DNS-level rule means, so the rule can
/// be taken as a plain one:
/// - none at all (`||name^$` with an empty option list);
/// - `all` and `document`/`doc` only widen a browser rule to every request
///   type, including the page itself; blocking the name in DNS already does
///   that;
/// - `important` only lets a block rule beat `@@` exceptions in the same
///   filter engine. We take it as a plain block, so an explicit allow rule
///   still wins: the only possible difference is blocking less, never
///   blocking something the operator allowed.
///
/// Anything else (`third-party`, `client=`, `dnstype=`, `dnsrewrite=`,
/// `denyallow=`, `badfilter`, negations…) narrows or changes the rule in ways
/// a name-and-subdomains rule cannot express.
fn harmless_option(option: &str) -> bool {
    matches!(option, "" | "important" | "all" | "document" | "doc")
}

/// Markers of element hiding, scriptlet, CSS and HTML filtering rules.
const COSMETIC_MARKERS: &[&str] = &[
    "##", "#@#", "#?#", "#@?#", "#$#", "#@$#", "#%#", "#@%#", "#$?#", "#@$?#",
];

/// A cosmetic rule: a marker after a domain list (`example.com##.ad`), or
/// HTML filtering (`example.com$$script`).
fn is_cosmetic(line: &str) -> bool {
    let bytes = line.as_bytes();
    bytes.iter().enumerate().any(|(at, &b)| {
        let rest = &bytes[at..];
        match b {
            b'#' => COSMETIC_MARKERS
                .iter()
                .any(|m| rest.starts_with(m.as_bytes())),
            b'$' => rest.starts_with(b"$$") || rest.starts_with(b"$@$"),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lists::NameError;

    fn rules(list: &ParsedList) -> Vec<(&str, Verdict, u32)> {
        list.rules()
            .inspect(|r| assert_eq!(r.scope, Scope::Subtree))
            .map(|r| (r.name, r.verdict, r.line))
            .collect()
    }

    #[test]
    fn block_and_allow_rules() {
        let text = "||ads.example^\n@@||good.ads.example^\n||Tracker.EXAMPLE.^\n";
        let list = parse(text);
        assert_eq!(list.format(), Format::Adblock);
        assert_eq!(
            rules(&list),
            [
                ("ads.example", Verdict::Block, 1),
                ("good.ads.example", Verdict::Allow, 2),
                ("tracker.example", Verdict::Block, 3),
            ]
        );
        assert_eq!(list.skipped().count, 0);
        assert_eq!(list.line_count(), 3);
    }

    #[test]
    fn headers_and_comments_are_not_counted() {
        let text =
            "[Adblock Plus 2.0]\n! Title: x\n!\n# hosts-style comment\n#\n\n  \n||a.example^\n";
        let list = parse(text);
        assert_eq!(rules(&list), [("a.example", Verdict::Block, 8)]);
        assert_eq!(list.skipped().count, 0);
        assert_eq!(list.line_count(), 8);
    }

    #[test]
    fn crlf_and_bom() {
        let list = parse("\u{feff}! Title\r\n||a.example^\r\n@@||b.example^\r\n");
        assert_eq!(
            rules(&list),
            [
                ("a.example", Verdict::Block, 2),
                ("b.example", Verdict::Allow, 3)
            ]
        );
        assert_eq!(list.skipped().count, 0);
    }

    #[test]
    fn harmless_options_are_accepted() {
        let text = "||a.example^$important\n||b.example^$all\n||c.example^$document\n\
                    ||d.example^$\n@@||e.example^$important,document\n||f.example^$doc\n";
        let list = parse(text);
        assert_eq!(
            rules(&list),
            [
                ("a.example", Verdict::Block, 1),
                ("b.example", Verdict::Block, 2),
                ("c.example", Verdict::Block, 3),
                ("d.example", Verdict::Block, 4),
                ("e.example", Verdict::Allow, 5),
                ("f.example", Verdict::Block, 6),
            ]
        );
    }

    #[test]
    fn other_options_are_unsupported() {
        let text = "||a.example^$third-party\n||b.example^$client=192.168.1.1\n\
                    ||c.example^$dnstype=AAAA\n@@||d.example^$badfilter\n\
                    ||e.example^$important,third-party\n||f.example^$~important\n";
        let list = parse(text);
        assert!(list.is_empty());
        assert_eq!(list.skipped().count, 6);
        assert!(
            list.skip_reasons()
                .iter()
                .all(|(_, r)| *r == SkipReason::UnsupportedAdblock)
        );
    }

    #[test]
    fn name_without_caret_and_end_anchor() {
        let list = parse("||a.example\n||b.example^|\n");
        assert_eq!(
            rules(&list),
            [
                ("a.example", Verdict::Block, 1),
                ("b.example", Verdict::Block, 2)
            ]
        );
    }

    #[test]
    fn wildcards_paths_urls_and_regexes_are_unsupported() {
        let text = "||*.a.example^\n||ads*.example^\n||a.example*^\n||a.example/ads\n\
                    ||a.example^/path\n||a.example:8080^\n|http://a.example/\n|https://b.example^\n\
                    /banner[0-9]+\\.example/\n@@/ads/\n/ads/*\nads.*.example\nadserver.example^\n\
                    ||a.example^x\n||a.example^^\n";
        let list = parse(text);
        assert!(list.is_empty(), "{:?}", rules(&list));
        assert_eq!(list.skipped().count, 15);
        assert!(
            list.skip_reasons()
                .iter()
                .all(|(_, r)| *r == SkipReason::UnsupportedAdblock)
        );
    }

    #[test]
    fn cosmetic_rules_are_unsupported_even_at_line_start() {
        let text = "##.ad-banner\nexample.com##.ad\nexample.com#@#.ad\n#?#div:has(.ad)\n\
                    example.com#$#body { x }\nexample.com#%#//scriptlet('x')\n\
                    example.com$$script[data-ad]\n###ad_id\n";
        let list = parse(text);
        assert!(list.is_empty());
        assert_eq!(list.skipped().count, 8);
        assert!(
            list.skip_reasons()
                .iter()
                .all(|(_, r)| *r == SkipReason::UnsupportedAdblock)
        );
    }

    #[test]
    fn bare_domains_are_block_subtree() {
        let list = parse("ads.example\n@@good.example\nAds.Tracker.Example\n");
        assert_eq!(
            rules(&list),
            [
                ("ads.example", Verdict::Block, 1),
                ("good.example", Verdict::Allow, 2),
                ("ads.tracker.example", Verdict::Block, 3),
            ]
        );
    }

    #[test]
    fn bare_words_and_fragments_are_not_domains() {
        let list = parse("ads\nbanner.\n-ad-300x250.\n@@\n");
        assert!(list.is_empty());
        assert_eq!(
            list.skip_reasons(),
            [
                (1, SkipReason::UnsupportedAdblock),
                (2, SkipReason::UnsupportedAdblock),
                (3, SkipReason::UnsupportedAdblock),
                (4, SkipReason::UnsupportedAdblock),
            ]
        );
    }

    #[test]
    fn bad_names_keep_the_name_error() {
        let list = parse("||1.2.3.4^\n||a..example^\n||^\n0.0.0.0 a.example\n");
        assert!(list.is_empty());
        assert_eq!(
            list.skip_reasons(),
            [
                (1, SkipReason::BadName(NameError::IpAddress)),
                (2, SkipReason::BadName(NameError::EmptyLabel)),
                (3, SkipReason::BadName(NameError::Empty)),
                (4, SkipReason::BadName(NameError::BadChar(' '))),
            ]
        );
    }

    #[test]
    fn classify_examples() {
        assert_eq!(
            classify("||a.example^"),
            Line::Rule("a.example", Verdict::Block)
        );
        assert_eq!(
            classify("@@||a.example^"),
            Line::Rule("a.example", Verdict::Allow)
        );
        assert_eq!(classify("# comment ## with hashes"), Line::Comment);
        assert_eq!(classify("#@#.ad"), Line::Unsupported);
        assert_eq!(classify("# plain comment"), Line::Comment);
        assert_eq!(classify("[AdGuard]"), Line::Comment);
        assert_eq!(classify("@@"), Line::Unsupported);
        assert_eq!(classify("$"), Line::Unsupported);
        assert_eq!(classify("$$"), Line::Unsupported);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(
            lines in proptest::collection::vec("[ \t#!@|^$*/,=:.a-z0-9\\[\\]\u{e9}\u{feff}\r-]{0,40}", 0..20)
        ) {
            let text = lines.join("\n");
            let list = parse(&text);
            for rule in list.rules() {
                proptest::prop_assert!(!rule.name.is_empty());
                proptest::prop_assert!(!rule.name.bytes().any(is_url_byte));
            }
        }

        #[test]
        fn fast_path_agrees(line in "(@@)?\\|\\|[a-zA-Z0-9._^$#*/|-]{0,12}\\^?") {
            proptest::prop_assert_eq!(classify(&line), classify_any(&line));
        }

        #[test]
        fn never_panics_on_any_text(text in "\\PC*(\r?\n\\PC*){0,8}") {
            let _ = parse(&text);
        }
    }
}
