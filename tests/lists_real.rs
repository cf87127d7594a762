//! Parses the real, third-party blocklists in `../shared/data/blocklists`
//! with `format: auto` and checks format, rule counts, skips and the union
//! of names. Skipped (with a message) when the data directory is absent.
//!
//! Run with `--nocapture` to see counts and timings; use `--release` for
//! timings that mean anything.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use sinkhole::lists::{self, Format, FormatChoice, ParsedList, Scope};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/blocklists");

/// Rule lines per file, counted with
/// `grep -v -e '^[#!]' -e '^[[:space:]]*$' FILE | wc -l`. Every such line in
/// these files holds exactly one name, and every name is valid.
const EXPECTED: &[(&str, usize)] = &[
    ("adguarddns.hosts.txt", 123_962),
    ("blp-phishing.domains.txt", 190_215),
    ("blp-tracking.domains.txt", 143_876),
    ("easylist.hosts.txt", 86_674),
    ("hagezi-light.adblock.txt", 122_680),
    ("hagezi-light.wildcard.txt", 122_680),
    ("hagezi-personal.domains.txt", 12_305),
    ("stevenblack.domains.txt", 140_626),
];

/// Unique names over all files, counted with shell tools after stripping
/// `0.0.0.0 `, `||`, `^` and `*.` and lowercasing: 577,704. The data README
/// says "about 577,000".
const UNION: std::ops::RangeInclusive<usize> = 570_000..=585_000;

fn expected_format(file: &str) -> Option<Format> {
    [
        (".domains.txt", Format::Domains),
        (".hosts.txt", Format::Hosts),
        (".adblock.txt", Format::Adblock),
        (".wildcard.txt", Format::Wildcard),
    ]
    .into_iter()
    .find(|(suffix, _)| file.ends_with(suffix))
    .map(|(_, f)| f)
}

/// Lines that are neither blank nor a `#`/`!` comment.
fn rule_lines(text: &str) -> usize {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', '!']))
        .count()
}

#[test]
fn real_blocklists() {
    let dir = Path::new(DIR);
    if !dir.is_dir() {
        println!("skipping: ../shared/data/blocklists not found (looked in {DIR})");
        return;
    }
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read blocklist directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .txt lists in {DIR}");

    let mut parsed: Vec<(String, ParsedList)> = Vec::new();
    let mut total_rules = 0;
    let mut total_time = std::time::Duration::ZERO;
    for path in &files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(path).expect("read list");
        let text = String::from_utf8_lossy(&bytes);

        let start = Instant::now();
        let list = lists::parse(&text, FormatChoice::Auto);
        let took = start.elapsed();
        total_time += took;
        total_rules += list.len();

        let skipped = list.skipped();
        println!(
            "{file}: {} as {}, {} rules, {} skipped, {} lines, {:.1} ms",
            human(bytes.len()),
            list.format(),
            list.len(),
            skipped.count,
            list.line_count(),
            took.as_secs_f64() * 1e3,
        );
        for s in &skipped.first {
            println!("    skipped line {}: {} ({})", s.line, s.text, s.reason);
        }

        if let Some(format) = expected_format(&file) {
            assert_eq!(list.format(), format, "{file}: detected format");
        }
        assert_eq!(list.line_count() as usize, text.lines().count(), "{file}");

        // Every rule line is either a rule or a skip (one name per line in
        // all these files), and almost all of them are rules.
        let content = rule_lines(&text);
        assert_eq!(
            list.len() as u64 + skipped.count,
            content as u64,
            "{file}: rules + skipped != rule lines"
        );
        assert!(
            skipped.count as usize <= content / 1000,
            "{file}: {} of {content} lines skipped",
            skipped.count
        );
        match EXPECTED.iter().find(|(name, _)| *name == file) {
            Some(&(_, expected)) => {
                let low = expected - expected / 1000;
                assert!(
                    (low..=expected).contains(&list.len()),
                    "{file}: {} rules, expected {low}..={expected}",
                    list.len()
                );
            }
            None => assert!(list.len() >= 1_000, "{file}: only {} rules", list.len()),
        }

        // Scope follows the syntax: wildcard lists are all `*.name`.
        let below = list.rules().filter(|r| r.scope == Scope::Below).count();
        match list.format() {
            Format::Wildcard => assert_eq!(below, list.len(), "{file}"),
            _ => assert_eq!(below, 0, "{file}"),
        }
        parsed.push((file, list));
    }

    let union: HashSet<&str> = parsed
        .iter()
        .flat_map(|(_, list)| list.rules().map(|r| r.name))
        .collect();
    println!(
        "all: {total_rules} rules, {} unique names, parsed in {:.1} ms",
        union.len(),
        total_time.as_secs_f64() * 1e3
    );
    assert!(
        UNION.contains(&union.len()),
        "{} unique names, expected {UNION:?}",
        union.len()
    );
}

fn human(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}
