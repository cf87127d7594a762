//! What `check` and `serve` say to a new user (issue 16, "Diagnostics an
//! IG officer can trust"): every problem as FILE:LINE: reason, list bytes
//! echoed escaped, a binary file called one, each cause printed once, no
//! Rust type names, a tab called a tab, a BOM accepted, invalid UTF-8
//! located, a warning when nothing is blocked, and the shipped
//! configuration protecting the approved tools.

mod common;

use common::cli::{self, Output};
use common::sinkhole::BIN;
use std::fs;
use std::path::Path;
use std::process::Command;

fn check_text(dir: &Path, yaml: &[u8]) -> Output {
    let config = dir.join("sinkhole.yaml");
    fs::write(&config, yaml).unwrap();
    let out = cli::check(&config);
    out.assert_no_panic();
    out
}

const UPSTREAM: &str = "upstream:\n  servers: [\"127.0.0.1:53\"]\n";

#[test]
fn config_mistakes_are_explained_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[u8], &str); 5] = [
        (
            b"cache:\n\tsize: 10\n",
            "sinkhole.yaml:2:1: a tab character",
        ),
        (
            b"cache:\n  size: lots\n",
            "sinkhole.yaml:2:9: cache.size: invalid type: string \"lots\", expected a whole number",
        ),
        (
            b"block:\n  ttl: -5\n",
            "expected a whole number from 0 to 4294967295",
        ),
        (
            b"cache:\n  size: 1\n# caf\xe9\n",
            "sinkhole.yaml:3:6: not UTF-8 text (byte 0xe9)",
        ),
        (
            b"guard:\n  max_shrink: 150%\n",
            "is not a percentage from 0% to 100%",
        ),
    ];
    for (yaml, want) in cases {
        let out = check_text(dir.path(), yaml);
        assert_eq!(out.code, Some(1), "{}", out.show());
        assert!(out.stderr.contains(want), "{want:?} in\n{}", out.show());
        for rust in ["usize", "u32", "u64", "i64"] {
            assert!(!out.all().contains(rust), "{rust} in\n{}", out.show());
        }
    }
    // A byte-order mark is not content.
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(UPSTREAM.as_bytes());
    let out = check_text(dir.path(), &bom);
    assert_eq!(out.code, Some(0), "{}", out.show());
    // A file that cannot be read is named without a made-up position.
    let out = cli::check(&dir.path().join("missing.yaml"));
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains("missing.yaml: cannot read the configuration: No such file or directory")
            && !out.stderr.contains(":0:0"),
        "{}",
        out.show()
    );
}

#[test]
fn list_problems_are_located_escaped_and_named() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("mixed.txt"),
        b"good.example\n\x1b]0;pwned\x07.example\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("binary.txt"),
        b"\x7fELF\x02\x01\x01\x00\x00\x00",
    )
    .unwrap();
    let yaml = format!(
        "{UPSTREAM}lists:\n  - name: mixed\n    path: mixed.txt\n  - name: binary\n    path: binary.txt\n"
    );
    let out = check_text(dir.path(), yaml.as_bytes());
    assert_eq!(out.code, Some(1), "{}", out.show());
    assert!(!out.all().contains('\u{1b}'), "no raw ESC:\n{}", out.show());
    assert!(!out.all().contains('\u{7}'), "no raw BEL:\n{}", out.show());
    assert!(out.stdout.contains("mixed.txt:2:"), "{}", out.show());
    assert!(out.stdout.contains("\\x1b]0;pwned\\x07"), "{}", out.show());
    assert!(
        out.stdout.contains("binary.txt:1: is a binary file"),
        "{}",
        out.show()
    );
}

#[test]
fn serve_prints_a_fatal_list_problem_once() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("bad.txt"), "bad!name\n").unwrap();
    let yaml = format!(
        "listen:\n  dns: [\"127.0.0.1:0\"]\n{UPSTREAM}lists:\n  - name: bad\n    path: bad.txt\n"
    );
    fs::write(dir.path().join("sinkhole.yaml"), yaml).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(dir.path().join("sinkhole.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("every line was rejected").count(),
        1,
        "once:\n{err}"
    );
    assert!(err.contains("bad.txt:1: every line was rejected"), "{err}");
}

#[test]
fn check_warns_when_nothing_is_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let out = check_text(dir.path(), UPSTREAM.as_bytes());
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout.contains("WARNING: no blocklist is configured"),
        "{}",
        out.show()
    );
}

#[test]
fn the_shipped_configuration_protects_nhs_and_the_approved_tools() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    // The shipped file, with one more list holding what must never be
    // blocked.
    let shipped = fs::read_to_string(root.join("sinkhole.yaml")).unwrap();
    let shipped = shipped.replace("blocklists/", &format!("{}/blocklists/", root.display()));
    fs::write(
        dir.path().join("typo.txt"),
        "nhs.uk\nteams.microsoft.com\nlogin.microsoftonline.com\nwebex.com\nattendanywhere.com\nzoom.us\n",
    )
    .unwrap();
    let yaml = shipped.replacen(
        "\nlists:\n",
        "\nlists:\n  - name: typo\n    category: unapproved-video\n    path: typo.txt\n",
        1,
    );
    let out = check_text(dir.path(), yaml.as_bytes());
    assert_eq!(out.code, Some(1), "{}", out.show());
    for (line, name) in [
        (1, "nhs.uk"),
        (2, "teams.microsoft.com"),
        (3, "login.microsoftonline.com"),
        (4, "webex.com"),
        (5, "attendanywhere.com"),
    ] {
        let want = format!("typo.txt:{line}: blocks protected name {name}");
        assert!(out.stdout.contains(&want), "{want} in\n{}", out.show());
    }
    assert!(!out.stdout.contains("typo.txt:6:"), "{}", out.show());
}
