//! The `domains` list format.

use super::{Format, ParsedList};

pub fn parse(text: &str) -> ParsedList {
    let _ = text;
    ParsedList::new(Format::Domains)
}
