//! The `hosts` list format, as in `/etc/hosts`:
//!
//! ```text
//! # comment
//! 0.0.0.0 ads.example tracker.example   # several names, one rule each
//! ::1     ads.example
//! ```
//!
//! As in hosts(5), a `#` anywhere starts a comment. Only sinkhole addresses
//! (unspecified `0.0.0.0`/`::`, or loopback `127.0.0.0/8`/`::1`) make rules:
//! a line mapping a name to a real address is a hosts entry, not a block, so
//! the whole line is skipped. The lines that every hosts file starts with
//! (`127.0.0.1 localhost`, `ff02::1 ip6-allnodes`, …) are reported as
//! boilerplate, once per line, whatever their address.

use std::net::IpAddr;

use super::domains::numbered_lines_from;
use super::{Format, ParsedList, Scope, SkipReason, Verdict};

/// Names hosts files map for the machine itself; never rules.
const BOILERPLATE: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
    "0.0.0.0",
];

pub fn parse(text: &str) -> ParsedList {
    let mut list = ParsedList::for_text(Format::Hosts, text);
    let lines = parse_into(&mut list, text, 1);
    list.set_line_count(lines);
    list
}

/// The lines of `text`, numbered from `first`, into `list`; returns the
/// last line's number.
pub fn parse_into(list: &mut ParsedList, text: &str, first: u32) -> u32 {
    let mut lines = first.saturating_sub(1);
    // Lists repeat one address on every line: parse it once.
    let mut last_addr: (&str, Option<IpAddr>) = ("", None);
    for (n, raw) in numbered_lines_from(text, first) {
        lines = n;
        let content = raw.find('#').map_or(raw, |at| &raw[..at]);
        let mut fields = content.split_ascii_whitespace();
        let Some(first) = fields.next() else {
            continue; // blank or comment
        };
        let names = fields;
        if first != last_addr.0 {
            last_addr = (first, parse_addr(first));
        }
        let Some(addr) = last_addr.1 else {
            let what = if names.clone().next().is_none() {
                "a name with no address (hosts lines are `ADDRESS name…`)"
            } else {
                "first field is not an IP address"
            };
            list.skip(n, raw, SkipReason::Unrecognised(what));
            continue;
        };
        if names.clone().next().is_none() {
            list.skip(n, raw, SkipReason::Unrecognised("an address with no name"));
            continue;
        }
        if addr.is_unspecified() || addr.is_loopback() {
            let mut real = false;
            for name in names.filter(|name| !is_boilerplate(name)) {
                real = true;
                list.push_rule(n, raw, name, Scope::Subtree, Verdict::Block);
            }
            if !real {
                list.skip(n, raw, SkipReason::HostsBoilerplate);
            }
        } else if names.clone().all(is_boilerplate) {
            // `255.255.255.255 broadcasthost` is boilerplate, not a real
            // mapping to worry about.
            list.skip(n, raw, SkipReason::HostsBoilerplate);
        } else {
            list.skip(n, raw, SkipReason::NotSinkholeAddress);
        }
    }
    lines
}

/// An IP address, allowing an IPv6 zone (`fe80::1%lo0`) as hosts files do.
fn parse_addr(field: &str) -> Option<IpAddr> {
    if let Ok(addr) = field.parse() {
        return Some(addr);
    }
    let (addr, _zone) = field.split_once('%')?;
    addr.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
}

fn is_boilerplate(name: &str) -> bool {
    // Cheap test first: they all start with `l`, `b`, `i` or `0`.
    let first = name.as_bytes().first().map(u8::to_ascii_lowercase);
    if !matches!(first, Some(b'l' | b'b' | b'i' | b'0')) {
        return false;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    BOILERPLATE.iter().any(|b| b.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lists::{NameError, SkippedLine};

    fn rules(list: &ParsedList) -> Vec<(&str, u32)> {
        list.rules()
            .inspect(|r| {
                assert_eq!(r.verdict, Verdict::Block);
                assert_eq!(r.scope, Scope::Subtree);
            })
            .map(|r| (r.name, r.line))
            .collect()
    }

    #[test]
    fn sinkhole_addresses() {
        let text = "0.0.0.0 a.example\n127.0.0.1 b.example\n:: c.example\n::1 d.example\n\
                    127.0.0.2 e.example\n0:0:0:0:0:0:0:0 f.example\n::0 g.example\n";
        let list = parse(text);
        assert_eq!(list.format(), Format::Hosts);
        assert_eq!(
            rules(&list),
            [
                ("a.example", 1),
                ("b.example", 2),
                ("c.example", 3),
                ("d.example", 4),
                ("e.example", 5),
                ("f.example", 6),
                ("g.example", 7),
            ]
        );
        assert_eq!(list.skipped().count, 0);
        assert_eq!(list.line_count(), 7);
    }

    #[test]
    fn real_addresses_skip_the_whole_line() {
        let list = parse("192.168.1.10 nas.home printer.home\n2001:db8::1 v6.example\n");
        assert!(list.is_empty());
        assert_eq!(
            list.skip_reasons(),
            [
                (1, SkipReason::NotSinkholeAddress),
                (2, SkipReason::NotSinkholeAddress),
            ]
        );
    }

    #[test]
    fn several_names_on_a_line() {
        let list = parse("0.0.0.0\ta.example  B.Example. c.example # note\n");
        assert_eq!(
            rules(&list),
            [("a.example", 1), ("b.example", 1), ("c.example", 1)]
        );
    }

    #[test]
    fn comments_blank_lines_crlf_bom() {
        let text = "\u{feff}# Title\r\n\r\n   # indented\r\n0.0.0.0 a.example#glued comment\r\n\t\r\n0.0.0.0 b.example\r\n";
        let list = parse(text);
        assert_eq!(rules(&list), [("a.example", 4), ("b.example", 6)]);
        assert_eq!(list.skipped().count, 0);
        assert_eq!(list.line_count(), 6);
    }

    #[test]
    fn boilerplate_counts_once_per_line() {
        let text = "127.0.0.1 localhost localhost.localdomain local\n\
                    255.255.255.255 broadcasthost\n\
                    ::1 localhost ip6-localhost ip6-loopback\n\
                    fe80::1%lo0 localhost\n\
                    ff00::0 ip6-localnet\n\
                    ff00::0 ip6-mcastprefix\n\
                    ff02::1 ip6-allnodes\n\
                    ff02::2 ip6-allrouters\n\
                    ff02::3 ip6-allhosts\n\
                    0.0.0.0 0.0.0.0\n\
                    127.0.0.1 LOCALHOST.\n";
        let list = parse(text);
        assert!(list.is_empty());
        assert_eq!(list.skipped().count, 11);
        assert!(
            list.skipped()
                .first
                .iter()
                .all(|s| s.reason == SkipReason::HostsBoilerplate)
        );
    }

    #[test]
    fn boilerplate_mixed_with_real_names_keeps_the_real_ones() {
        let list = parse("127.0.0.1 localhost ads.example\n");
        assert_eq!(rules(&list), [("ads.example", 1)]);
        assert_eq!(list.skipped().count, 0);
    }

    #[test]
    fn address_alone_or_name_alone() {
        let list = parse("0.0.0.0\nads.example\nads.example 0.0.0.0\n0.0.0.0 # only a comment\n");
        assert!(list.is_empty());
        assert_eq!(
            list.skip_reasons(),
            [
                (1, SkipReason::Unrecognised("an address with no name")),
                (
                    2,
                    SkipReason::Unrecognised(
                        "a name with no address (hosts lines are `ADDRESS name…`)"
                    )
                ),
                (
                    3,
                    SkipReason::Unrecognised("first field is not an IP address")
                ),
                (4, SkipReason::Unrecognised("an address with no name")),
            ]
        );
    }

    #[test]
    fn bad_names_are_reported_per_name() {
        let list = parse("0.0.0.0 good.example bad/é.example 10.1.2.3\n");
        assert_eq!(rules(&list), [("good.example", 1)]);
        assert_eq!(
            list.skipped().first,
            [
                SkippedLine {
                    line: 1,
                    reason: SkipReason::BadName(NameError::BadChar('/')),
                    text: "0.0.0.0 good.example bad/é.example 10.1.2.3".into(),
                },
                SkippedLine {
                    line: 1,
                    reason: SkipReason::BadName(NameError::IpAddress),
                    text: "0.0.0.0 good.example bad/é.example 10.1.2.3".into(),
                },
            ]
        );
    }

    #[test]
    fn adblock_and_url_lines_are_not_hosts_lines() {
        let list = parse("||ads.example^\nhttp://1.2.3.4/x\n");
        assert!(list.is_empty());
        assert_eq!(list.skipped().count, 2);
    }

    #[test]
    fn zone_ids() {
        assert_eq!(parse_addr("fe80::1%lo0"), "fe80::1".parse().ok());
        assert_eq!(parse_addr("::1%eth0"), "::1".parse().ok());
        assert_eq!(parse_addr("1.2.3.4%x"), None);
        assert_eq!(parse_addr("%"), None);
        assert_eq!(parse_addr("example"), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(
            lines in proptest::collection::vec("[ \t#%:0-9a-fA-F.xyz_\u{e9}\u{feff}\r-]{0,40}", 0..20)
        ) {
            let text = lines.join("\n");
            let list = parse(&text);
            for rule in list.rules() {
                proptest::prop_assert!(!rule.name.is_empty());
                proptest::prop_assert!(!is_boilerplate(rule.name));
            }
        }
    }
}
