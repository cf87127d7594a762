//! The `rpz` list format: a Response Policy Zone in zone-file syntax.
//! (Being written; until then every line is skipped.)

use super::domains::numbered_lines;
use super::{Format, ParsedList, SkipReason};

pub fn parse(text: &str) -> ParsedList {
    let mut list = ParsedList::new(Format::Rpz);
    let mut lines = 0;
    for (n, raw) in numbered_lines(text) {
        lines = n;
        if !raw.trim().is_empty() {
            list.skip(n, raw, SkipReason::Unrecognised("rpz is not supported yet"));
        }
    }
    list.set_line_count(lines);
    list
}
