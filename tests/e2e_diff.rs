//! `sinkhole diff OLD.yaml NEW.yaml [--names FILE] [--json]`: rules added
//! and removed per list, the names in FILE whose decision changes (newly
//! blocked first), exit codes 0 / 3 / 1 / 2, errors as FILE:LINE, and a
//! run against the real blocklists and top domains in `../shared/data`.

mod common;

use common::Setup;
use common::cli::{self, Output};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// OLD and NEW: two configurations, each in its own temp dir.
struct Pair {
    old: Setup,
    new: Setup,
}

/// The categories both sides define unless a test says otherwise.
fn base(ads_action: &str) -> Setup {
    Setup::new()
        .category("ads", Some(ads_action), "Advertising", &[])
        .category(
            "video",
            Some("nxdomain"),
            "Zoom is not approved",
            &["Teams"],
        )
}

impl Pair {
    fn new(old: Setup, new: Setup) -> Pair {
        old.write_config();
        new.write_config();
        Pair { old, new }
    }

    /// Writes FILE into OLD's directory; returns its path.
    fn names(&self, file: &str, text: &str) -> PathBuf {
        self.old.write(file, text);
        self.old.dir().join(file)
    }

    fn diff(&self, extra: &[&str]) -> Output {
        let old = self.old.config_path();
        let new = self.new.config_path();
        let mut args = vec!["diff", old.to_str().unwrap(), new.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = cli::run(self.old.dir(), &args);
        out.assert_no_panic();
        out
    }

    fn diff_names(&self, names: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["--names", names.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.diff(&args)
    }
}

fn assert_code(out: &Output, code: i32, why: &str) {
    assert_eq!(out.code, Some(code), "{why}:\n{}", out.show());
}

fn assert_has(out: &Output, want: &str) {
    assert!(
        out.stdout.contains(want),
        "stdout must contain {want:?}:\n{}",
        out.show()
    );
}

/// The text block for `name` in the names part (its line and the two
/// below: before, after).
fn name_block(out: &Output, name: &str) -> String {
    let lines: Vec<&str> = out.stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with(&format!("{name} (")))
        .unwrap_or_else(|| panic!("{name} is not listed as changed:\n{}", out.show()));
    lines[at..(at + 3).min(lines.len())].join("\n")
}

/// The heading of the group `name` is listed under.
fn group_of(out: &Output, name: &str) -> String {
    let mut group = String::new();
    for l in out.stdout.lines() {
        let t = l.trim_start();
        if t.starts_with("NEWLY BLOCKED")
            || t.starts_with("NEWLY ALLOWED")
            || t.starts_with("DECIDED DIFFERENTLY")
        {
            group = t.to_owned();
        }
        if t.starts_with(&format!("{name} (")) {
            return group;
        }
    }
    panic!("{name} is not listed as changed:\n{}", out.show())
}

fn changes(v: &Value) -> &Vec<Value> {
    v["names"]["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("names.changes must be an array: {v}"))
}

fn change<'a>(v: &'a Value, name: &str) -> &'a Value {
    changes(v)
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not among the changes: {v:#}"))
}

fn list<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["lists"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no list {name} in {v:#}"))
}

const NAMES: &str = "zoom.us\ndoubleclick.net\nexample.org\n";

#[test]
fn identical_configs_change_nothing() {
    let make = || {
        base("nxdomain")
            .list("ads", Some("ads"), "doubleclick.net\n*.tracker.example\n")
            .allowlist("allow", "ok.doubleclick.net\n")
    };
    let p = Pair::new(make(), make());
    let names = p.names("names.txt", NAMES);
    let out = p.diff_names(&names, &[]);
    assert_code(&out, 0, "identical configs → exit 0");
    assert_has(&out, "Nothing changed for the 3 names");
    assert_has(&out, "No list changed");
    assert_has(&out, "No name changes its decision");
    assert!(
        !out.stdout.contains("NEWLY"),
        "no groups when nothing changes:\n{}",
        out.show()
    );

    let v = p.diff_names(&names, &["--json"]).json();
    assert_eq!(v["changed"], false, "{v}");
    assert_eq!(v["summary"]["lists_changed"], 0, "{v}");
    assert_eq!(v["names"]["checked"], 3, "{v}");
    assert_eq!(v["names"]["changed"], 0, "{v}");
    for l in ["ads", "allow"] {
        assert_eq!(list(&v, l)["status"], "unchanged", "{v}");
    }
}

#[test]
fn a_rule_added_that_blocks_a_name_in_file_exits_3_newly_blocked() {
    let p = Pair::new(
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\n"),
        base("nxdomain").list(
            "ads",
            Some("ads"),
            "doubleclick.net\n# video too\nzoom.us\n",
        ),
    );
    let names = p.names("names.txt", NAMES);
    let out = p.diff_names(&names, &[]);
    assert_code(&out, 3, "a name in FILE is newly blocked → exit 3");
    assert!(
        group_of(&out, "zoom.us").starts_with("NEWLY BLOCKED"),
        "{}",
        out.show()
    );
    let block = name_block(&out, "zoom.us");
    for want in [
        "names.txt:1",
        "before: not on any list",
        "BLOCKED (nxdomain)",
        "rule zoom.us",
        "list ads",
        "line 3",
        "category ads",
    ] {
        assert!(
            block.contains(want),
            "{want:?} in:\n{block}\n\n{}",
            out.show()
        );
    }
    assert_has(&out, "+ zoom.us  line 3");
    assert_has(&out, "1 rule added, 0 removed");
    assert_has(&out, "CHANGES: 1 name in");
    assert_has(
        &out,
        "1 newly blocked, 0 newly allowed, 0 decided differently",
    );
    // Names that did not change are not listed.
    for same in ["doubleclick.net (", "example.org ("] {
        assert!(
            !out.stdout.contains(same),
            "{same} unchanged:\n{}",
            out.show()
        );
    }
}

#[test]
fn a_rule_removed_makes_a_name_newly_allowed() {
    let p = Pair::new(
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\nzoom.us\n"),
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\n"),
    );
    let names = p.names("names.txt", NAMES);
    let out = p.diff_names(&names, &[]);
    assert_code(&out, 3, "a name in FILE is unblocked → exit 3");
    assert!(
        group_of(&out, "zoom.us").starts_with("NEWLY ALLOWED"),
        "{}",
        out.show()
    );
    let block = name_block(&out, "zoom.us");
    assert!(
        block.contains("before: BLOCKED (nxdomain) by rule zoom.us in list ads, line 2"),
        "{block}"
    );
    assert!(block.contains("after:  not on any list"), "{block}");
    assert_has(&out, "- zoom.us  line 2");
    assert_has(&out, "0 rules added, 1 removed");
}

#[test]
fn a_rule_added_that_matches_nothing_in_file_exits_0_but_is_shown() {
    let p = Pair::new(
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\n"),
        base("nxdomain").list(
            "ads",
            Some("ads"),
            "doubleclick.net\nnot-popular.example\n*.cdn.example\n",
        ),
    );
    let names = p.names("names.txt", NAMES);
    let out = p.diff_names(&names, &[]);
    assert_code(&out, 0, "no name in FILE changes → exit 0");
    assert_has(&out, "2 rules added, 0 removed (1 → 3 rules)");
    assert_has(&out, "+ not-popular.example  line 2");
    assert_has(&out, "+ *.cdn.example        line 3");
    assert_has(&out, "Nothing changed for the 3 names");
    assert_has(&out, "Rules: 1 list changed, 2 rules added, 0 removed.");
}

#[test]
fn moved_and_repeated_rules_are_not_changes() {
    let p = Pair::new(
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\nzoom.us\n"),
        base("nxdomain").list(
            "ads",
            Some("ads"),
            "# reordered, one repeated\n\nzoom.us\ndoubleclick.net\nzoom.us\n",
        ),
    );
    let names = p.names("names.txt", NAMES);
    let out = p.diff_names(&names, &[]);
    assert_code(&out, 0, "same rules on other lines → exit 0");
    assert_has(&out, "ads (blocklist, category ads): unchanged");
    let v = p.diff_names(&names, &["--json"]).json();
    assert_eq!(list(&v, "ads")["status"], "unchanged", "{v}");
    assert_eq!(v["names"]["changed"], 0, "a moved line is no change: {v}");
}

#[test]
fn an_allowlist_rule_added_makes_a_blocked_name_newly_allowed() {
    let p = Pair::new(
        base("nxdomain")
            .list("ads", Some("ads"), "doubleclick.net\n")
            .allowlist("exceptions", "nothing.example\n"),
        base("nxdomain")
            .list("ads", Some("ads"), "doubleclick.net\n")
            .allowlist("exceptions", "nothing.example\nstats.doubleclick.net\n"),
    );
    let names = p.names("names.txt", "stats.doubleclick.net\nads.doubleclick.net\n");
    let out = p.diff_names(&names, &[]);
    assert_code(&out, 3, "an allow rule unblocks a name in FILE → exit 3");
    assert!(
        group_of(&out, "stats.doubleclick.net").starts_with("NEWLY ALLOWED"),
        "{}",
        out.show()
    );
    let block = name_block(&out, "stats.doubleclick.net");
    assert!(
        block.contains(
            "after:  allowed by allow rule stats.doubleclick.net in list exceptions, line 2"
        ),
        "{block}"
    );
    assert!(
        !out.stdout.contains("ads.doubleclick.net ("),
        "{}",
        out.show()
    );
    assert_has(&out, "exceptions (allowlist): 1 rule added, 0 removed");

    let v = p.diff_names(&names, &["--json"]).json();
    let c = change(&v, "stats.doubleclick.net");
    assert_eq!(c["change"], "newly-allowed", "{c}");
    assert_eq!(c["new"]["verdict"], "allow", "{c}");
    assert_eq!(c["new"]["blocked"], false, "{c}");
    assert_eq!(c["new"]["list"], "exceptions", "{c}");
    assert_eq!(c["new"]["line"], 2, "{c}");
    let added = &list(&v, "exceptions")["added"]["rules"][0];
    assert_eq!(added["verdict"], "allow", "{added}");
}

#[test]
fn a_category_action_change_changes_the_names_it_decides() {
    let p = Pair::new(
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\n"),
        base("redirect").list("ads", Some("ads"), "doubleclick.net\n"),
    );
    let names = p.names("names.txt", NAMES);
    let out = p.diff_names(&names, &[]);
    assert_code(&out, 3, "an action change is a change → exit 3");
    assert_has(&out, "CATEGORIES\n  ads: action nxdomain → redirect");
    assert!(
        group_of(&out, "doubleclick.net").starts_with("DECIDED DIFFERENTLY"),
        "still blocked, another action:\n{}",
        out.show()
    );
    let block = name_block(&out, "doubleclick.net");
    assert!(block.contains("before: BLOCKED (nxdomain)"), "{block}");
    assert!(block.contains("after:  BLOCKED (redirect)"), "{block}");
    assert_has(&out, "ads (blocklist, category ads): unchanged");

    let v = p.diff_names(&names, &["--json"]).json();
    assert_eq!(
        v["categories"],
        json!([{"name": "ads", "old_action": "nxdomain", "new_action": "redirect"}]),
        "{v}"
    );
    let c = change(&v, "doubleclick.net");
    assert_eq!(c["change"], "changed", "{c}");
    assert_eq!(c["old"]["action"], "nxdomain", "{c}");
    assert_eq!(c["new"]["action"], "redirect", "{c}");
    assert_eq!(v["names"]["other_changes"], 1, "{v}");
}

#[test]
fn monitor_to_enforced_is_newly_blocked() {
    let p = Pair::new(
        base("monitor").list("ads", Some("ads"), "doubleclick.net\n"),
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\n"),
    );
    let names = p.names("names.txt", NAMES);
    let out = p.diff_names(&names, &[]);
    assert_code(&out, 3, "enforcing a monitored list blocks names → exit 3");
    assert!(
        group_of(&out, "doubleclick.net").starts_with("NEWLY BLOCKED"),
        "{}",
        out.show()
    );
    assert!(
        name_block(&out, "doubleclick.net").contains("before: not blocked, only monitored"),
        "{}",
        out.show()
    );
}

#[test]
fn a_monitored_trial_list_changes_no_outcome_but_is_reported() {
    let p = Pair::new(
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\n"),
        base("nxdomain")
            .category("trial", Some("monitor"), "IG trial", &[])
            .list("ads", Some("ads"), "doubleclick.net\n")
            .list("trial", Some("trial"), "zoom.us\ndoubleclick.net\n"),
    );
    let names = p.names("names.txt", NAMES);
    let out = p.diff_names(&names, &[]);
    assert_code(
        &out,
        3,
        "a name decided by another list is a change → exit 3",
    );
    assert_has(
        &out,
        "0 newly blocked, 0 newly allowed, 1 decided differently",
    );
    assert!(group_of(&out, "zoom.us").starts_with("DECIDED DIFFERENTLY"));
    assert!(
        name_block(&out, "zoom.us")
            .contains("after:  not blocked, only monitored, by rule zoom.us in list trial"),
        "{}",
        out.show()
    );
    // The enforcing list still decides what it blocks.
    assert!(!out.stdout.contains("doubleclick.net ("), "{}", out.show());
    let v = p.diff_names(&names, &["--json"]).json();
    let c = change(&v, "zoom.us");
    assert_eq!(c["new"]["verdict"], "monitor", "{c}");
    assert_eq!(c["new"]["blocked"], false, "{c}");
    assert_eq!(c["new"]["action"], "monitor", "{c}");
}

#[test]
fn lists_renamed_added_and_removed() {
    let p = Pair::new(
        base("nxdomain")
            .list("ads", Some("ads"), "doubleclick.net\n")
            .list("video-old", Some("video"), "zoom.us\nvimeo.com\n")
            .list("gone", Some("ads"), "example.org\n"),
        base("nxdomain")
            .list("ads", Some("ads"), "doubleclick.net\n")
            .list("video-new", Some("video"), "vimeo.com\nzoom.us\n")
            .list("trial", Some("video"), "webex.com\n"),
    );
    let names = p.names(
        "names.txt",
        "zoom.us\nexample.org\nwebex.com\nfine.example\n",
    );
    let out = p.diff_names(&names, &[]);
    assert_code(&out, 3, "names move between lists → exit 3");
    assert_has(
        &out,
        "video-new (blocklist, category video): NEW LIST, 2 rules",
    );
    assert_has(&out, "renamed from video-old?");
    assert_has(
        &out,
        "video-old (blocklist, category video): LIST REMOVED, 2 rules",
    );
    assert_has(&out, "renamed to video-new?");
    assert_has(&out, "trial (blocklist, category video): NEW LIST, 1 rule");
    assert_has(&out, "gone (blocklist, category ads): LIST REMOVED, 1 rule");
    assert!(group_of(&out, "webex.com").starts_with("NEWLY BLOCKED"));
    assert!(group_of(&out, "example.org").starts_with("NEWLY ALLOWED"));
    assert!(group_of(&out, "zoom.us").starts_with("DECIDED DIFFERENTLY"));
    assert!(
        name_block(&out, "zoom.us")
            .contains("after:  BLOCKED (nxdomain) by rule zoom.us in list video-new, line 2"),
        "{}",
        out.show()
    );
    // Newly blocked first, then newly allowed, then the rest.
    let at = |s: &str| out.stdout.find(&format!("    {s} (")).unwrap();
    assert!(at("webex.com") < at("example.org") && at("example.org") < at("zoom.us"));

    let v = p.diff_names(&names, &["--json"]).json();
    let order: Vec<&str> = changes(&v)
        .iter()
        .map(|c| c["change"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["newly-blocked", "newly-allowed", "changed"], "{v}");
    let renamed = list(&v, "video-new");
    assert_eq!(renamed["status"], "added", "{renamed}");
    assert_eq!(renamed["old"], Value::Null, "{renamed}");
    assert_eq!(renamed["same_rules_as"], "video-old", "{renamed}");
    assert_eq!(renamed["added"]["count"], 2, "{renamed}");
    let gone = list(&v, "gone");
    assert_eq!(gone["status"], "removed", "{gone}");
    assert_eq!(gone["new"], Value::Null, "{gone}");
    assert_eq!(gone["removed"]["rules"][0]["rule"], "example.org", "{gone}");
    assert_eq!(list(&v, "trial")["same_rules_as"], Value::Null);
    // NEW's lists in NEW's order, then the removed ones.
    let names: Vec<&str> = v["lists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ads", "video-new", "trial", "video-old", "gone"]);
}

#[test]
fn names_file_as_rank_name_csv_or_plain_with_skipped_lines() {
    let p = Pair::new(
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\n"),
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\nzoom.us\nvimeo.com\n"),
    );
    let csv = p.names(
        "top.csv",
        "rank,domain\n1,google.com\n2,zoom.us\n\n# a comment\n3,not a name\n4,vimeo.com\n5,zoom.us\n6,\n",
    );
    let out = p.diff_names(&csv, &[]);
    assert_code(&out, 3, "csv: zoom.us and vimeo.com newly blocked");
    assert!(name_block(&out, "zoom.us").starts_with("    zoom.us (rank 2; "));
    assert!(name_block(&out, "zoom.us").contains("top.csv:3)"));
    assert!(name_block(&out, "vimeo.com").contains("(rank 4; "));
    assert_has(&out, "NAMES in ");
    assert_has(&out, "3 names checked");
    assert_has(&out, "2 lines skipped (not domain names):");
    assert_has(
        &out,
        "top.csv:6: not a domain name: character ' ' is not allowed",
    );
    assert_has(&out, "top.csv:9: no name in the line's second field");
    assert_has(&out, "1 name was given more than once (checked once).");

    let v = p.diff_names(&csv, &["--json"]).json();
    let n = &v["names"];
    assert_eq!(n["checked"], 3, "{n}");
    assert_eq!(n["duplicates"], 1, "{n}");
    assert_eq!(n["skipped_count"], 2, "{n}");
    assert_eq!(n["skipped"][0]["line"], 6, "{n}");
    assert_eq!(n["skipped"][0]["text"], "not a name", "{n}");
    let c = change(&v, "zoom.us");
    assert_eq!(c["rank"], 2, "{c}");
    assert_eq!(c["file_line"], 3, "{c}");

    let plain = p.names(
        "plain.txt",
        "# IG's watch list\nZoom.US.\n\nwww.vimeo.com\nexample.org\nbad..name\n",
    );
    let out = p.diff_names(&plain, &[]);
    assert_code(&out, 3, "plain: zoom.us and www.vimeo.com newly blocked");
    assert!(
        name_block(&out, "zoom.us").contains("(")
            && name_block(&out, "zoom.us").contains("plain.txt:2)")
    );
    assert!(name_block(&out, "www.vimeo.com").contains("rule vimeo.com"));
    assert_has(&out, "plain.txt:6: not a domain name");
    let v = p.diff_names(&plain, &["--json"]).json();
    assert_eq!(change(&v, "zoom.us")["rank"], Value::Null, "{v}");
    assert_eq!(v["names"]["checked"], 3, "{v}");
}

#[test]
fn invalid_old_yaml_exits_1_with_file_and_line() {
    let p = Pair::new(
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\n"),
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\n"),
    );
    p.old.write(
        "sinkhole.yaml",
        "upstream:\n  servers: [\"127.0.0.1:53\"\n  timeout: 2s\nlists: [\n",
    );
    let names = p.names("names.txt", NAMES);
    let out = p.diff_names(&names, &[]);
    assert_code(&out, 1, "bad YAML in OLD → exit 1");
    let old = p.old.config_path().display().to_string();
    assert!(
        out.stderr.lines().any(|l| l.contains(&format!("{old}:"))
            && l[l.find(&old).unwrap() + old.len() + 1..]
                .split(':')
                .next()
                .is_some_and(|n| n.parse::<u32>().is_ok())),
        "stderr names OLD's FILE:LINE:\n{}",
        out.show()
    );
    assert!(
        out.stdout.is_empty(),
        "no report from an invalid side:\n{}",
        out.show()
    );
}

#[test]
fn missing_list_in_new_exits_1_with_file_and_line() {
    let p = Pair::new(
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\n"),
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\n"),
    );
    fs::remove_file(p.new.list_path("ads")).unwrap();
    let out = p.diff(&["--json"]);
    assert_code(&out, 1, "a missing list file in NEW → exit 1");
    let new = p.new.config_path().display().to_string();
    assert!(
        out.stderr.contains(&format!("{new}:")),
        "stderr names NEW:\n{}",
        out.show()
    );
    assert!(out.stderr.contains("ads.txt"), "{}", out.show());
    assert!(out.stdout.is_empty(), "{}", out.show());
}

#[test]
fn an_unusable_list_exits_1_naming_config_line_and_list() {
    let p = Pair::new(
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\n"),
        base("nxdomain").list("ads", Some("ads"), "this is not a list\nnor this\n"),
    );
    let out = p.diff(&[]);
    assert_code(&out, 1, "a list whose every line is rejected → exit 1");
    let new = p.new.config_path().display().to_string();
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains(&new))
        .unwrap_or_else(|| panic!("NEW is named:\n{}", out.show()));
    // The config line that names the list: `  - name: "ads"`.
    let text = fs::read_to_string(p.new.config_path()).unwrap();
    let n = text
        .lines()
        .position(|l| l.contains("- name: \"ads\""))
        .unwrap()
        + 1;
    assert!(
        line.contains(&format!("{new}:{n}: list \"ads\": ")),
        "NEW's FILE:LINE and the list: {line}"
    );
    assert!(
        line.contains("ads.txt:1: every line was rejected"),
        "the list's FILE:LINE and the reason: {line}"
    );
}

#[test]
fn a_block_rule_reaching_a_protected_name_makes_the_side_invalid() {
    let p = Pair::new(
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\n"),
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\nnhs.uk\nwww.nhs.net\n"),
    );
    let out = p.diff(&[]);
    assert_code(
        &out,
        1,
        "a protected name blocked in NEW → exit 1, as check does",
    );
    let new = p.new.config_path().display().to_string();
    assert!(
        out.stderr.contains(&format!("{new}:"))
            && out
                .stderr
                .contains("list \"ads\": 2 block rule(s) reach a protected name"),
        "{}",
        out.show()
    );
    for want in [
        "ads.txt:2: blocks protected name nhs.uk",
        "ads.txt:3: blocks protected name",
    ] {
        assert!(out.stderr.contains(want), "{want:?}:\n{}", out.show());
    }
}

/// A configuration whose `ig` list is remote, with `state` as its
/// `state_dir`.
fn remote_config(dir: &Path, copy: Option<&str>) -> PathBuf {
    fs::create_dir_all(dir.join("state")).unwrap();
    if let Some(text) = copy {
        fs::write(dir.join("state/ig.list"), text).unwrap();
    }
    let cfg = dir.join("sinkhole.yaml");
    fs::write(
        &cfg,
        "upstream:\n  servers: [\"127.0.0.1:53\"]\nstate_dir: state\n\
         categories:\n  ig: {action: nxdomain}\n\
         lists:\n  - name: ig\n    category: ig\n    url: \"https://lists.invalid/ig.txt\"\n",
    )
    .unwrap();
    cfg
}

#[test]
fn a_remote_list_is_compared_from_its_copy_in_state_dir() {
    let (old, new) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let old_cfg = remote_config(old.path(), Some("zoom.us\n"));
    let new_cfg = remote_config(new.path(), Some("zoom.us\nvimeo.com\n"));
    fs::write(old.path().join("names.txt"), "vimeo.com\nzoom.us\n").unwrap();
    let args = |extra: &[&str]| {
        let mut a = vec![
            "diff".to_owned(),
            old_cfg.display().to_string(),
            new_cfg.display().to_string(),
            "--names".to_owned(),
            "names.txt".to_owned(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let out = cli::run(old.path(), &args(&["--json"]));
    out.assert_no_panic();
    assert_code(
        &out,
        3,
        "vimeo.com newly blocked by the remote list's new copy",
    );
    let v = out.json();
    let ig = list(&v, "ig");
    assert_eq!(ig["new"]["url"], "https://lists.invalid/ig.txt", "{ig}");
    assert!(
        ig["new"]["path"]
            .as_str()
            .unwrap()
            .ends_with("state/ig.list"),
        "{ig}"
    );
    assert_eq!(ig["added"]["rules"][0]["rule"], "vimeo.com", "{ig}");
    assert_eq!(change(&v, "vimeo.com")["change"], "newly-blocked");

    // No copy yet: nothing to compare; the side is invalid.
    fs::remove_file(new.path().join("state/ig.list")).unwrap();
    let out = cli::run(old.path(), &args(&[]));
    out.assert_no_panic();
    assert_code(&out, 1, "a remote list never fetched → exit 1");
    assert!(
        out.stderr.contains(&format!("{}:", new_cfg.display()))
            && out.stderr.contains("list \"ig\"")
            && out.stderr.contains("https://lists.invalid/ig.txt"),
        "{}",
        out.show()
    );
}

#[test]
fn both_sides_invalid_reports_both() {
    let p = Pair::new(
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\n"),
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\n"),
    );
    p.old.write("sinkhole.yaml", "nonsense: [\n");
    fs::remove_file(p.new.list_path("ads")).unwrap();
    let out = p.diff(&[]);
    assert_code(&out, 1, "both invalid → exit 1");
    for side in [&p.old, &p.new] {
        let path = side.config_path().display().to_string();
        assert!(out.stderr.contains(&format!("{path}:")), "{}", out.show());
    }
}

#[test]
fn unreadable_names_file_and_usage_errors() {
    let p = Pair::new(
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\n"),
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\n"),
    );
    let missing = p.old.dir().join("no-such-names.txt");
    let out = p.diff_names(&missing, &[]);
    assert_code(&out, 1, "FILE cannot be read → exit 1");
    assert!(out.stderr.contains("no-such-names.txt"), "{}", out.show());

    let old = p.old.config_path();
    let old = old.to_str().unwrap();
    for args in [
        vec!["diff", old],
        vec!["diff", old, old, "--no-such-flag"],
        vec!["diff", old, old, "--names"],
    ] {
        let out = cli::run(p.old.dir(), &args);
        out.assert_no_panic();
        assert_code(&out, 2, &format!("{args:?} is a usage error"));
    }
}

#[test]
fn json_field_by_field() {
    let p = Pair::new(
        base("nxdomain")
            .list("ads", Some("ads"), "doubleclick.net\ntracker.example\n")
            .allowlist("allow", "ok.example\n"),
        base("nxdomain")
            .list(
                "ads",
                Some("ads"),
                "doubleclick.net\nzoom.us\n*.cdn.example\n",
            )
            .allowlist("allow", "ok.example\n"),
    );
    let names = p.names("top.csv", "1,zoom.us\n2,tracker.example\n3,example.org\n");
    let out = p.diff_names(&names, &["--json"]);
    assert_code(&out, 3, "json: same exit codes");
    let v = out.json();
    assert_eq!(v["old"], p.old.config_path().display().to_string());
    assert_eq!(v["new"], p.new.config_path().display().to_string());
    assert_eq!(v["changed"], true);
    assert_eq!(
        v["summary"],
        json!({
            "lists_changed": 1,
            "rules_added": 2,
            "rules_removed": 1,
            "categories_changed": 0,
            "names_checked": 3,
            "names_changed": 2,
        })
    );

    let ads = list(&v, "ads");
    assert_eq!(ads["status"], "changed");
    for (side, rules) in [("old", 2), ("new", 3)] {
        let s = &ads[side];
        assert_eq!(s["kind"], "block", "{s}");
        assert_eq!(s["category"], "ads", "{s}");
        assert_eq!(s["format"], "domains", "{s}");
        assert_eq!(s["rules"], rules, "{s}");
        assert!(
            s["path"].as_str().unwrap().ends_with("lists/ads.txt"),
            "{s}"
        );
    }
    assert_eq!(
        ads["added"],
        json!({
            "count": 2,
            "truncated": false,
            "rules": [
                {"line": 2, "rule": "zoom.us", "scope": "subtree", "verdict": "block"},
                {"line": 3, "rule": "*.cdn.example", "scope": "below", "verdict": "block"},
            ]
        })
    );
    assert_eq!(
        ads["removed"],
        json!({
            "count": 1,
            "truncated": false,
            "rules": [{"line": 2, "rule": "tracker.example", "scope": "subtree", "verdict": "block"}]
        })
    );
    assert_eq!(list(&v, "allow")["status"], "unchanged");
    assert_eq!(list(&v, "allow")["new"]["kind"], "allow");
    assert_eq!(list(&v, "allow")["new"]["category"], Value::Null);
    assert_eq!(v["categories"], json!([]));

    let n = &v["names"];
    assert!(n["file"].as_str().unwrap().ends_with("top.csv"), "{n}");
    for (k, want) in [
        ("checked", 3),
        ("duplicates", 0),
        ("changed", 2),
        ("newly_blocked", 1),
        ("newly_allowed", 1),
        ("other_changes", 0),
        ("skipped_count", 0),
    ] {
        assert_eq!(n[k], want, "names.{k} in {n}");
    }
    assert_eq!(n["skipped"], json!([]));
    assert_eq!(
        changes(&v)[0],
        json!({
            "name": "zoom.us",
            "rank": 1,
            "file_line": 1,
            "change": "newly-blocked",
            "old": {
                "verdict": "forward", "blocked": false, "action": null,
                "list": null, "line": null, "rule": null, "category": null,
            },
            "new": {
                "verdict": "block", "blocked": true, "action": "nxdomain",
                "list": "ads", "line": 2, "rule": "zoom.us", "category": "ads",
            },
        })
    );
    assert_eq!(
        changes(&v)[1],
        json!({
            "name": "tracker.example",
            "rank": 2,
            "file_line": 2,
            "change": "newly-allowed",
            "old": {
                "verdict": "block", "blocked": true, "action": "nxdomain",
                "list": "ads", "line": 2, "rule": "tracker.example", "category": "ads",
            },
            "new": {
                "verdict": "forward", "blocked": false, "action": null,
                "list": null, "line": null, "rule": null, "category": null,
            },
        })
    );
}

#[test]
fn without_names_only_rules_and_exit_0() {
    let p = Pair::new(
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\n"),
        base("redirect").list("ads", Some("ads"), "doubleclick.net\nzoom.us\n"),
    );
    let out = p.diff(&[]);
    assert_code(&out, 0, "without FILE nothing can change → exit 0");
    assert_has(&out, "1 rule added, 0 removed");
    assert_has(&out, "+ zoom.us  line 2");
    assert_has(&out, "None checked: give --names FILE");
    assert_has(&out, "No names checked.");
    let out = p.diff(&["--json"]);
    assert_code(&out, 0, "json without FILE → exit 0");
    let v = out.json();
    assert_eq!(v["changed"], false);
    assert_eq!(v["names"], Value::Null);
    assert_eq!(v["summary"]["names_checked"], Value::Null);
    assert_eq!(v["summary"]["rules_added"], 1);
}

#[test]
fn big_changes_are_capped_in_text_and_json() {
    let many: String = (0..12_000).map(|i| format!("n{i}.example\n")).collect();
    let p = Pair::new(
        base("nxdomain").list("ads", Some("ads"), "doubleclick.net\n"),
        base("nxdomain").list("ads", Some("ads"), &format!("doubleclick.net\n{many}")),
    );
    let out = p.diff(&[]);
    assert_code(&out, 0, "no FILE");
    assert_has(&out, "12,000 rules added, 0 removed");
    assert_has(&out, "+ n19.example  line 21");
    assert_has(&out, "… and 11,980 more");
    assert!(!out.stdout.contains("n20.example"), "text shows 20");
    let v = p.diff(&["--json"]).json();
    let added = &list(&v, "ads")["added"];
    assert_eq!(added["count"], 12_000);
    assert_eq!(added["truncated"], true);
    assert_eq!(added["rules"].as_array().unwrap().len(), 10_000);
}

// ------------------------------------------------------------ real data

fn shared_data() -> Option<PathBuf> {
    [
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
        PathBuf::from("/work/shared/data"),
    ]
    .into_iter()
    .find(|d| d.join("top-domains.csv").is_file() && d.join("blocklists").is_dir())
}

/// The names a `domains`/`adblock` rule line states, lowercased.
fn rule_names(text: &str) -> HashSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', '!']))
        .map(|l| {
            l.trim_start_matches("||")
                .trim_end_matches('^')
                .trim_end_matches('.')
                .to_ascii_lowercase()
        })
        .collect()
}

/// `name` and every parent of it: `a.b.c`, `b.c`, `c`.
fn suffixes(name: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(name), |n| n.split_once('.').map(|(_, rest)| rest))
}

#[test]
fn real_blocklists_against_top_domains() {
    let Some(data) = shared_data() else {
        eprintln!(
            "skipping real_blocklists_against_top_domains: no shared data \
             (../shared/data or /work/shared/data with top-domains.csv and blocklists/)"
        );
        return;
    };
    let read = |f: &str| fs::read_to_string(data.join(f)).unwrap();
    // Part of two real lists: 60,000 lines of StevenBlack (domains) and
    // 30,000 of HaGeZi Light (adblock).
    let steven: String = read("blocklists/stevenblack.domains.txt")
        .lines()
        .take(60_000)
        .map(|l| format!("{l}\n"))
        .collect();
    let hagezi: String = read("blocklists/hagezi-light.adblock.txt")
        .lines()
        .take(30_000)
        .map(|l| format!("{l}\n"))
        .collect();
    let top_text = read("top-domains.csv");
    let top: Vec<&str> = top_text
        .lines()
        .filter_map(|l| l.split(',').nth(1))
        .map(str::trim)
        .collect();
    let old_rules: HashSet<String> = rule_names(&steven)
        .union(&rule_names(&hagezi))
        .cloned()
        .collect();

    // A popular name neither list reaches (nor any parent of it), with
    // names below it in the top list that no list reaches either, if
    // there is one.
    let reached = |n: &str| suffixes(n).any(|s| old_rules.contains(s));
    let candidates: Vec<&str> = top
        .iter()
        .skip(50)
        .copied()
        .filter(|t| t.contains('.') && !reached(t))
        .collect();
    let has_below: HashSet<&str> = top
        .iter()
        .filter(|n| !reached(n))
        .flat_map(|n| suffixes(n).skip(1))
        .collect();
    let popular = candidates
        .iter()
        .copied()
        .find(|t| has_below.contains(t))
        .unwrap_or(candidates[0]);
    // What that rule changes: the name and the names below it that no more
    // specific OLD rule decides.
    let mut expected: Vec<&str> = top
        .iter()
        .copied()
        .filter(|n| suffixes(n).any(|s| s == popular) && !reached(n))
        .collect();
    expected.sort_unstable();
    expected.dedup();

    // One line repeated: a popular name StevenBlack already blocks, if the
    // part holds one (else its first rule). Neither a rule added nor a
    // change.
    let steven_names = rule_names(&steven);
    let repeated = top
        .iter()
        .copied()
        .find(|n| steven_names.contains(*n))
        .unwrap_or_else(|| {
            steven
                .lines()
                .find(|l| !l.starts_with('#') && !l.is_empty())
                .unwrap()
        });
    let added = format!(
        "# IG additions\n{popular}\nig-diff-test-one.invalid\n*.ig-diff-test-two.invalid\n{repeated}\n"
    );
    let make = |extra: &str| {
        base("nxdomain")
            .list("stevenblack", Some("ads"), &format!("{steven}{extra}"))
            .list_fmt("hagezi-light", Some("ads"), "adblock", &hagezi)
    };
    let p = Pair::new(make(""), make(&added));
    let names = data.join("top-domains.csv");
    let started = std::time::Instant::now();
    let out = p.diff_names(&names, &["--json"]);
    eprintln!(
        "diff of {} + {} lines against {} top names: {:?} (debug build)",
        60_000,
        30_000,
        top.len(),
        started.elapsed()
    );
    assert_code(&out, 3, "a top domain is newly blocked → exit 3");
    let v = out.json();
    let steven_diff = list(&v, "stevenblack");
    assert_eq!(steven_diff["status"], "changed");
    assert_eq!(
        steven_diff["added"]["count"], 3,
        "the repeated line is not a rule added: {steven_diff}"
    );
    assert_eq!(steven_diff["removed"]["count"], 0);
    let rules: Vec<&str> = steven_diff["added"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        [
            popular,
            "ig-diff-test-one.invalid",
            "*.ig-diff-test-two.invalid"
        ]
    );
    assert_eq!(list(&v, "hagezi-light")["status"], "unchanged");

    let mut got: Vec<&str> = changes(&v)
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(
        got, expected,
        "exactly the names the new rule {popular} reaches"
    );
    for c in changes(&v) {
        assert_eq!(c["change"], "newly-blocked", "{c}");
        assert_eq!(c["new"]["rule"], popular, "{c}");
        assert_eq!(c["new"]["list"], "stevenblack", "{c}");
        assert_eq!(c["new"]["line"], 60_002, "{c}");
    }
    assert_eq!(v["names"]["skipped_count"], 0, "{}", v["names"]);
    assert_eq!(v["names"]["newly_blocked"], expected.len());
    eprintln!(
        "real data: added {popular:?}, repeated {repeated:?}; newly blocked: {}",
        expected.join(", ")
    );

    // The text report names it too.
    let out = p.diff_names(&names, &[]);
    assert_code(&out, 3, "text: same exit code");
    assert!(group_of(&out, popular).starts_with("NEWLY BLOCKED"));
}
