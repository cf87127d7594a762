//! Forwarding loops: an upstream that is one of sinkhole's own listeners
//! (named directly, reached through a wildcard listener, or found in the
//! host's resolv.conf by `upstream: system`) is a configuration error.

mod common;

use common::{cli, ports};
use std::path::Path;
use std::process::Command;

fn config(dir: &Path, listen: &str, upstream: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("ads.txt"), "ads.test\n").unwrap();
    let cfg = dir.join("sinkhole.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen:\n  dns: [\"{listen}\"]\nupstream:\n  servers: [{upstream}]\nlists:\n  - name: ads\n    path: ads.txt\n"
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn an_upstream_that_is_our_own_listener_is_refused() {
    let port = ports::free_addr().port();
    let dir = tempfile::tempdir().unwrap();
    for (listen, upstream) in [
        (format!("127.0.0.1:{port}"), format!("\"127.0.0.1:{port}\"")),
        (format!("0.0.0.0:{port}"), format!("\"127.0.0.1:{port}\"")),
        (format!("[::]:{port}"), format!("\"[::1]:{port}\"")),
    ] {
        let cfg = config(dir.path(), &listen, &upstream);
        let out = cli::run(dir.path(), &["check", "-c", cfg.to_str().unwrap()]);
        out.assert_no_panic();
        assert_eq!(out.code, Some(1), "{listen} / {upstream}: {}", out.show());
        let text = out.all();
        assert!(
            text.contains("own listener") && text.contains("loop"),
            "{listen} / {upstream}: {text}"
        );
        assert!(
            text.contains(&format!("{}:", cfg.display())),
            "located: {text}"
        );
    }
    // Another port on the same address is no loop.
    let cfg = config(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        &format!("\"127.0.0.1:{}\"", ports::free_addr().port()),
    );
    let out = cli::run(dir.path(), &["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.show());
}

#[test]
fn upstream_system_naming_ourselves_in_resolv_conf_is_refused() {
    // A private mount namespace lets the test put its own resolv.conf in
    // /etc without touching the host's.
    let probe = Command::new("unshare").args(["-m", "true"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIP: cannot create a mount namespace here (unshare -m needs root or user namespaces)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "# the host's resolver is sinkhole itself\nnameserver 127.0.0.1\n",
    )
    .unwrap();
    let cfg = config(dir.path(), "127.0.0.1:53", "\"system\"");
    let out = Command::new("unshare")
        .arg("-m")
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "mount --bind '{}' /etc/resolv.conf && exec '{}' check -c '{}'",
            resolv.display(),
            common::sinkhole::BIN,
            cfg.display()
        ))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("resolv.conf names 127.0.0.1:53") && text.contains("own listener"),
        "{text}"
    );
}
