//! The block page as a member of staff sees it: a real headless Chromium
//! (Debian's `chromium`) opens `http://zoom.us/` with every name mapped to
//! the running server's block page, and the rendered page must show the
//! reason, the approved alternatives and whom to ask. A screenshot is
//! saved in the test's directory (kept when `SINKHOLE_SCREENSHOT_DIR` is
//! set, which is how the README's picture is made).

mod common;

use common::Setup;
use std::path::{Path, PathBuf};
use std::process::Command;

const REASON: &str = "Zoom is not approved for NHS use: the IG team has not approved its security and data-processing terms.";
const CONTACT: &str = "Information Governance, ig@example.nhs.uk, ext. 1234";

fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "chromium is not installed but CI is set: .ci/run must install the Debian package `chromium`"
            );
        }
        eprintln!("skipping: chromium not installed (Debian package chromium)");
    }
    found
}

/// Runs headless Chromium on `url` with every host mapped to `target`.
fn chromium_run(
    bin: &Path,
    target: std::net::SocketAddr,
    profile: &Path,
    args: &[&str],
    url: &str,
) -> std::process::Output {
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--host-resolver-rules=MAP * {target}"))
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()))
}

#[test]
fn chromium_shows_staff_the_reason_the_alternatives_and_whom_to_ask() {
    let Some(bin) = chromium() else {
        return;
    };
    let sh = Setup::new()
        .category_with_links(
            "unapproved-video",
            Some("redirect"),
            REASON,
            &[
                ("Microsoft Teams", "https://teams.microsoft.com"),
                ("Cisco Webex", "https://www.webex.com"),
            ],
            &["Attend Anywhere"],
        )
        .list("unapproved-video", Some("unapproved-video"), "zoom.us\n")
        .yaml(&format!(
            "blockpage:\n  organisation: \"NHS Example Trust\"\n  contact: \"{CONTACT}\"\n"
        ))
        .with_blockpage()
        .serve();
    let target = sh.http.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The DOM as Chromium rendered it.
    let out = chromium_run(
        &bin,
        target,
        &dir.path().join("profile-dom"),
        &["--dump-dom"],
        "http://zoom.us/",
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("This website is blocked"),
        "Chromium did not render the block page (status {}):\n{dom}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = visible_text(&dom);
    for must in [
        "zoom.us",
        REASON,
        "Microsoft Teams",
        "Cisco Webex",
        "Attend Anywhere",
        CONTACT,
        "Quote this reference",
    ] {
        assert!(
            text.contains(must),
            "{must:?} not in the rendered text:\n{text}"
        );
    }
    assert!(
        dom.contains("href=\"https://teams.microsoft.com/\"")
            || dom.contains("href=\"https://teams.microsoft.com\"")
    );

    // And a picture of it, as a phone-sized and a desktop window would show it.
    let keep = std::env::var_os("SINKHOLE_SCREENSHOT_DIR").map(PathBuf::from);
    for (size, file) in [
        ("900,1000", "blockpage.png"),
        ("390,1100", "blockpage-phone.png"),
    ] {
        let shot = keep
            .clone()
            .unwrap_or_else(|| dir.path().to_path_buf())
            .join(file);
        let out = chromium_run(
            &bin,
            target,
            &dir.path().join(format!("profile-{file}")),
            &[
                &format!("--screenshot={}", shot.display()),
                &format!("--window-size={size}"),
            ],
            "http://zoom.us/",
        );
        let png = std::fs::read(&shot).unwrap_or_else(|e| {
            panic!(
                "no screenshot at {} ({e}): {}",
                shot.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        assert!(
            png.len() > 10_000,
            "a page, not a blank: {} bytes",
            png.len()
        );
    }
}

/// The text a reader sees: the body's content with tags, the head and
/// style elements dropped, entities decoded, whitespace collapsed.
fn visible_text(dom: &str) -> String {
    let body = dom.split("<body").nth(1).unwrap_or(dom);
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
