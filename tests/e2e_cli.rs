//! `sinkhole check` and `sinkhole explain`: exit codes, the per-list table,
//! rejected lines, config errors naming FILE:LINE, and explain's decision.

mod common;

use common::Setup;
use common::cli::{self, Output};
use serde_json::{Value, json};
use std::fs;
use std::path::PathBuf;

const REASON: &str = "Zoom is not approved for NHS use (IG policy).";

/// A config with a categorised domains list, a wildcard list without
/// category, and an allowlist.
fn setup() -> Setup {
    Setup::new()
        .category(
            "unapproved-video",
            Some("redirect"),
            REASON,
            &["Microsoft Teams", "Attend Anywhere"],
        )
        .list(
            "unapproved-video",
            Some("unapproved-video"),
            "vimeo-test.example\nzoom.us\n",
        )
        .list_fmt("wild", None, "wildcard", "*.wild.test\n")
        .allowlist("local-exceptions", "support.zoom.us\n")
}

/// Splits a table row into its words/numbers.
fn tokens(line: &str) -> Vec<&str> {
    line.split(|c: char| c.is_whitespace() || c == '|' || c == ',')
        .filter(|t| !t.is_empty())
        .collect()
}

fn row<'a>(out: &'a Output, list: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|l| tokens(l).contains(&list))
        .unwrap_or_else(|| panic!("no table row for list {list}:\n{}", out.show()))
}

#[test]
fn check_ok_prints_one_row_per_list_and_rejected_lines() {
    let s = Setup::new()
        .category("video", Some("redirect"), REASON, &[])
        .list(
            "video",
            Some("video"),
            "zoom.us\nzoom.com\nbad!name.test\nteams-not.example\n..double.test\n",
        )
        .list_fmt(
            "hostsy",
            None,
            "hosts",
            "0.0.0.0 a.test\n0.0.0.0 b.test\nthis-is-junk no no\n",
        );
    let cfg = s.write_config();
    let out = cli::check(&cfg);
    out.assert_no_panic();
    assert_eq!(out.code, Some(0), "usable config → exit 0:\n{}", out.show());

    let video = tokens(row(&out, "video"));
    assert!(video.contains(&"domains"), "format in row: {video:?}");
    assert!(video.contains(&"3"), "3 rules loaded: {video:?}");
    assert!(video.contains(&"2"), "2 lines skipped: {video:?}");
    let hosts = tokens(row(&out, "hostsy"));
    assert!(hosts.contains(&"hosts"), "format in row: {hosts:?}");
    assert!(hosts.contains(&"2"), "2 rules loaded: {hosts:?}");
    assert!(hosts.contains(&"1"), "1 line skipped: {hosts:?}");

    for (file, line) in [("video.txt", 3), ("video.txt", 5), ("hostsy.txt", 3)] {
        let needle = format!("{file}:{line}:");
        let l = out
            .stdout
            .lines()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("rejected line {needle} must be listed:\n{}", out.show()));
        assert!(
            l.split_once(&needle).unwrap().1.trim().len() > 2,
            "a reason follows {needle}: {l:?}"
        );
    }
    for good in [
        "video.txt:1:",
        "video.txt:2:",
        "video.txt:4:",
        "hostsy.txt:1:",
    ] {
        assert!(
            !out.stdout.contains(good),
            "accepted line {good} listed as rejected:\n{}",
            out.show()
        );
    }
}

const BASE: &str = r#"listen:
  dns: ["127.0.0.1:5353"]
  admin: "127.0.0.1:9154"
upstream:
  servers: ["127.0.0.1:5300"]
  timeout: 500ms
cache:
  size: 1000
block:
  action: nxdomain
  ttl: 60
  redirect: {ipv4: 10.0.0.1}
categories:
  video:
    action: redirect
    reason: "not approved"
lists:
  - name: video
    category: video
    path: lists/video.txt
"#;

/// Writes BASE with line `line` (1-based) replaced, runs check.
fn check_with(line: usize, replacement: &str) -> (Output, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("lists")).unwrap();
    fs::write(dir.path().join("lists/video.txt"), "zoom.us\n").unwrap();
    let mut lines: Vec<&str> = BASE.lines().collect();
    if line > 0 {
        lines[line - 1] = replacement;
    }
    let cfg = dir.path().join("sinkhole.yaml");
    fs::write(&cfg, lines.join("\n") + "\n").unwrap();
    (cli::check(&cfg), cfg, dir)
}

fn assert_config_error(out: &Output, lines: &[usize], mention: &str) {
    out.assert_no_panic();
    assert_eq!(
        out.code,
        Some(1),
        "invalid config → exit 1:\n{}",
        out.show()
    );
    let located = lines
        .iter()
        .any(|l| out.stderr.contains(&format!("sinkhole.yaml:{l}:")));
    assert!(
        located,
        "stderr must name sinkhole.yaml:LINE:COLUMN with LINE in {lines:?}:\n{}",
        out.show()
    );
    assert!(
        out.stderr.contains(mention),
        "stderr must mention {mention:?}:\n{}",
        out.show()
    );
}

#[test]
fn check_base_config_is_valid() {
    let (out, _, _d) = check_with(0, "");
    out.assert_no_panic();
    assert_eq!(out.code, Some(0), "{}", out.show());
}

#[test]
fn check_rejects_unknown_key_with_file_and_line() {
    let (out, _, _d) = check_with(2, r#"  dnss: ["127.0.0.1:5353"]"#);
    assert_config_error(&out, &[2], "dnss");
}

#[test]
fn check_rejects_bad_duration_with_file_and_line() {
    let (out, _, _d) = check_with(6, "  timeout: 2 parsecs");
    assert_config_error(&out, &[6], "parsecs");
}

#[test]
fn check_rejects_bad_address_with_file_and_line() {
    let (out, _, _d) = check_with(5, r#"  servers: ["300.1.2.3:53"]"#);
    assert_config_error(&out, &[5], "300.1.2.3");
}

#[test]
fn check_rejects_bad_action_with_file_and_line() {
    let (out, _, _d) = check_with(10, "  action: explode");
    assert_config_error(&out, &[10], "explode");
}

#[test]
fn check_rejects_list_naming_undefined_category() {
    let (out, _, _d) = check_with(19, "    category: no-such-category");
    assert_config_error(&out, &[18, 19], "no-such-category");
}

#[test]
fn check_rejects_missing_list_file() {
    let (out, _, _d) = check_with(20, "    path: lists/missing.txt");
    out.assert_no_panic();
    assert_eq!(
        out.code,
        Some(1),
        "missing list file → exit 1:\n{}",
        out.show()
    );
    assert!(
        out.all().contains("missing.txt"),
        "the missing file is named:\n{}",
        out.show()
    );
}

#[test]
fn usage_errors_exit_2() {
    let (_, cfg, _d) = check_with(0, "");
    let dir = cfg.parent().unwrap();
    let c = cfg.to_str().unwrap();
    for args in [
        vec!["check", "-c", c, "--no-such-flag"],
        vec!["no-such-command"],
        vec!["explain", "-c", c],
    ] {
        let out = cli::run(dir, &args);
        out.assert_no_panic();
        assert_eq!(
            out.code,
            Some(2),
            "{args:?} is a usage error:\n{}",
            out.show()
        );
    }
}

#[test]
fn explain_json_block_gives_list_line_rule_category_action() {
    let s = setup();
    let cfg = s.write_config();
    let out = cli::explain(&cfg, "us04web.zoom.us", &["--json"]);
    out.assert_no_panic();
    assert_eq!(out.code, Some(0), "{}", out.show());
    let v = out.json();
    let expect = json!({
        "name": "us04web.zoom.us",
        "verdict": "block",
        "action": "redirect",
        "rule": "zoom.us",
        "list": "unapproved-video",
        "line": 2,
        "category": "unapproved-video",
        "reason": REASON,
        "alternatives": ["Microsoft Teams", "Attend Anywhere"],
    });
    for (k, want) in expect.as_object().unwrap() {
        assert_eq!(&v[k], want, "field {k} of {v}");
    }
    let path = v["path"]
        .as_str()
        .unwrap_or_else(|| panic!("path must be a string: {v}"));
    assert!(path.ends_with("unapproved-video.txt"), "path {path}");
}

#[test]
fn explain_json_wildcard_rule_uses_block_action_and_list_as_category() {
    let s = setup().block_action("nodata");
    let cfg = s.write_config();
    let out = cli::explain(&cfg, "a.b.wild.test", &["--json"]);
    assert_eq!(out.code, Some(0), "{}", out.show());
    let v = out.json();
    assert_eq!(v["verdict"], "block", "{v}");
    assert_eq!(v["action"], "nodata", "{v}");
    assert_eq!(v["rule"], "*.wild.test", "{v}");
    assert_eq!(v["list"], "wild", "{v}");
    assert_eq!(v["category"], "wild", "{v}");
    assert_eq!(v["line"], 1, "{v}");

    // *.x does not match x itself
    let v = cli::explain(&cfg, "wild.test", &["--json"]).json();
    assert_eq!(v["verdict"], "forward", "{v}");
}

#[test]
fn explain_json_allow_and_forward() {
    let s = setup();
    let cfg = s.write_config();
    let out = cli::explain(&cfg, "eu.support.zoom.us", &["--json"]);
    assert_eq!(out.code, Some(0), "allow still exits 0:\n{}", out.show());
    let v = out.json();
    assert_eq!(v["verdict"], "allow", "{v}");
    assert_eq!(v["rule"], "support.zoom.us", "{v}");
    assert_eq!(v["list"], "local-exceptions", "{v}");
    assert_eq!(v["line"], 1, "{v}");
    assert_eq!(v["action"], Value::Null, "{v}");

    let out = cli::explain(&cfg, "notzoom.us", &["--json"]);
    assert_eq!(out.code, Some(0), "forward still exits 0:\n{}", out.show());
    let v = out.json();
    assert_eq!(v["name"], "notzoom.us", "{v}");
    assert_eq!(v["verdict"], "forward", "{v}");
    for k in ["action", "rule", "list", "line", "category"] {
        assert_eq!(v[k], Value::Null, "{k} must be null for forward: {v}");
    }
}

#[test]
fn explain_is_case_insensitive() {
    let s = setup();
    let cfg = s.write_config();
    let v = cli::explain(&cfg, "US04WEB.Zoom.US", &["--json"]).json();
    assert_eq!(v["verdict"], "block", "{v}");
    assert_eq!(v["rule"], "zoom.us", "{v}");
}

#[test]
fn explain_text_mentions_verdict_list_line_rule_category_action() {
    let s = setup();
    let cfg = s.write_config();
    let out = cli::explain(&cfg, "us04web.zoom.us", &[]);
    out.assert_no_panic();
    assert_eq!(out.code, Some(0), "{}", out.show());
    let text = out.stdout.to_lowercase();
    for want in ["block", "unapproved-video", "zoom.us", "redirect"] {
        assert!(
            text.contains(want),
            "explain text must mention {want:?}:\n{}",
            out.show()
        );
    }
    assert!(
        text.contains(":2") || text.contains("line 2") || text.contains("line: 2"),
        "explain text must give line 2:\n{}",
        out.show()
    );
}

#[test]
fn explain_invalid_name_exits_2() {
    let s = setup();
    let cfg = s.write_config();
    for bad in ["a b", "a..b"] {
        let out = cli::explain(&cfg, bad, &["--json"]);
        out.assert_no_panic();
        assert_eq!(
            out.code,
            Some(2),
            "invalid name {bad:?} → exit 2:\n{}",
            out.show()
        );
    }
}
