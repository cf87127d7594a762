//! Guessing a list's format from its content (`format: auto`).
//!
//! The first [`SAMPLE`] lines that are neither blank nor comments (`#` or `!`
//! at the start) each vote for the format they look like; the majority wins
//! and a tie, or no vote at all, means `domains`.

use std::net::IpAddr;

use super::Format;
use super::domains::numbered_lines;

/// How many rule lines are looked at.
const SAMPLE: usize = 200;

pub fn detect(text: &str) -> Format {
    // Indexed by `slot`.
    const FORMATS: [Format; 4] = [
        Format::Domains,
        Format::Hosts,
        Format::Adblock,
        Format::Wildcard,
    ];
    let mut votes = [0u32; 4];
    let rule_lines = numbered_lines(text)
        .map(|(_, line)| line.trim_ascii())
        .filter(|line| !line.is_empty() && !line.starts_with(['#', '!']))
        .take(SAMPLE);
    for line in rule_lines {
        if let Some(format) = vote(line) {
            votes[slot(format)] += 1;
        }
    }
    let best = votes.iter().copied().max().unwrap_or(0);
    let mut leaders = FORMATS.iter().filter(|f| votes[slot(**f)] == best);
    match (leaders.next(), leaders.next()) {
        (Some(&format), None) if best > 0 => format,
        _ => Format::Domains,
    }
}

fn slot(format: Format) -> usize {
    match format {
        // RPZ is never guessed: a zone must be named `format: rpz`.
        Format::Domains | Format::Rpz => 0,
        Format::Hosts => 1,
        Format::Adblock => 2,
        Format::Wildcard => 3,
    }
}

/// What one rule line looks like, if anything.
fn vote(line: &str) -> Option<Format> {
    if line.starts_with("||") || line.starts_with("@@") {
        return Some(Format::Adblock);
    }
    if line.starts_with('[') && line.ends_with(']') {
        return Some(Format::Adblock); // `[Adblock Plus 2.0]`
    }
    if line.starts_with("*.") {
        return Some(Format::Wildcard);
    }
    let mut fields = line.split_ascii_whitespace();
    let first = fields.next()?;
    if fields.next().is_some() {
        // `ADDRESS name…`; other multi-field lines say nothing.
        return first.parse::<IpAddr>().ok().map(|_| Format::Hosts);
    }
    // One field: a name, unless it carries adblock pattern syntax
    // (`|https://…`, `/ads/`, `ads.example^`, `example.com##.ad`, `$options`).
    if first.contains(['|', '^', '$', '/']) || first.contains("##") || first.contains("#@#") {
        return Some(Format::Adblock);
    }
    Some(Format::Domains)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format() {
        assert_eq!(detect("a.example\nb.example\n"), Format::Domains);
        assert_eq!(
            detect("0.0.0.0 a.example\n127.0.0.1 b.example c.example\n"),
            Format::Hosts
        );
        assert_eq!(detect("||a.example^\n@@||b.example^\n"), Format::Adblock);
        assert_eq!(detect("*.a.example\n*.b.example\n"), Format::Wildcard);
    }

    #[test]
    fn empty_or_only_comments_is_domains() {
        assert_eq!(detect(""), Format::Domains);
        assert_eq!(detect("\n\n   \n"), Format::Domains);
        assert_eq!(detect("# a\n! b\n"), Format::Domains);
    }

    #[test]
    fn ties_are_domains() {
        assert_eq!(detect("*.a.example\nb.example\n"), Format::Domains);
        assert_eq!(detect("0.0.0.0 a.example\n||b.example^\n"), Format::Domains);
    }

    #[test]
    fn majority_wins() {
        let text = "a.example\n0.0.0.0 b.example\n0.0.0.0 c.example\n";
        assert_eq!(detect(text), Format::Hosts);
        let text = "*.a.example\n*.b.example\nc.example\n";
        assert_eq!(detect(text), Format::Wildcard);
    }

    #[test]
    fn adblock_with_bang_headers() {
        let text = "[Adblock Plus 2.0]\n! Title: x\n! Homepage: y\n!\n||a.example^\n||b.example^$important\n";
        assert_eq!(detect(text), Format::Adblock);
    }

    #[test]
    fn hosts_with_boilerplate_and_comments() {
        let text = "\u{feff}# hosts\r\n127.0.0.1 localhost\r\n::1 localhost\r\n\
                    0.0.0.0 a.example # x\r\n0.0.0.0\tb.example\r\n";
        assert_eq!(detect(text), Format::Hosts);
    }

    #[test]
    fn browser_adblock_lists_without_double_pipes() {
        let text = "! EasyList\n/ads/banner\n-ad-300x250.\n|https://a.example/x\nexample.com##.ad\n\
                    ##.banner\nads.example^\n";
        assert_eq!(detect(text), Format::Adblock);
    }

    #[test]
    fn only_the_first_sample_lines_vote() {
        let mut text = "a.example\n".repeat(SAMPLE);
        text.push_str(&"0.0.0.0 b.example\n".repeat(SAMPLE * 2));
        assert_eq!(detect(&text), Format::Domains);
    }

    #[test]
    fn a_hosts_line_needs_an_address_and_a_name() {
        // A lone address is a single token: a (bad) name, not a hosts line.
        assert_eq!(detect("0.0.0.0\n"), Format::Domains);
        assert_eq!(detect("a.example b.example\n"), Format::Domains);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC*(\r?\n\\PC*){0,8}") {
            let _ = detect(&text);
        }
    }
}
