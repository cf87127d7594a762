//! The `config` target: configuration text through `Config::parse`.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use sinkhole::config::Config;

/// The file name errors are reported against (nothing is read from it).
pub const FILE: &str = "/fuzz/sinkhole.yaml";

/// Where relative paths resolve: a directory holding the list files the
/// seeds name, so a configuration with lists can validate past them (at
/// a base that does not exist every list is "missing").
static BASE: LazyLock<PathBuf> = LazyLock::new(|| {
    let base = std::env::temp_dir().join("sinkhole-fuzz-config");
    for (path, text) in [
        ("a.txt", "zoom.us\n"),
        ("lists/list.txt", "ads.example\n"),
        ("lists/video.txt", "zoom.us\n"),
        ("blocklists/unapproved-video.txt", "zoom.us\n"),
        ("blocklists/allow.txt", "support.zoom.us\n"),
        ("admin.token", "s3cret-token\n"),
    ] {
        let file = base.join(path);
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if !file.is_file() {
            let _ = std::fs::write(&file, text);
        }
    }
    base
});

/// One input: the file's bytes (as text, invalid UTF-8 replaced: the
/// loader refuses such a file before parsing it).
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let e = match Config::parse(&text, Path::new(FILE), &BASE) {
        Ok(config) => {
            // Whatever validated can be turned into its stages.
            let _ = config.access.stage();
            let _ = format!("{config:?}");
            return;
        }
        Err(e) => e,
    };
    // `FILE:LINE:COL: message`, or `FILE: message` for the whole file.
    let shown = e.to_string();
    assert_eq!(e.file, Path::new(FILE));
    assert!(
        !e.message.trim().is_empty(),
        "an error without a message: {shown:?}"
    );
    let located = if e.line == 0 {
        format!("{FILE}: ")
    } else {
        format!("{FILE}:{}:{}: ", e.line, e.column)
    };
    assert!(
        shown.starts_with(&located),
        "error {shown:?} is not located as {located:?}"
    );
    if e.line > 0 {
        assert!(e.column >= 1, "column 0 in {shown:?}");
        // YAML's line breaks: LF, CR LF, a lone CR, NEL, LS and PS (a
        // file of lone CRs is one line to `lines()`, many to YAML).
        let breaks = text
            .replace("\r\n", "\n")
            .matches(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
            .count();
        assert!(
            e.line <= breaks + 2,
            "error at line {} of a text with {breaks} line breaks: {shown:?}",
            e.line
        );
    }
}
