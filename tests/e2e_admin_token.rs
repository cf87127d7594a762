//! `listen.admin_token_file`: `POST /reload` needs the token; GET
//! endpoints stay open for scrapes; a bad token file is a located error.

mod common;

use common::{Setup, cli, http};
use std::net::SocketAddr;

fn post_reload(admin: SocketAddr, authorization: Option<&str>) -> http::Response {
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let req = format!(
        "POST /reload HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n{auth}Content-Length: 0\r\n\r\n"
    );
    http::raw(admin, req.as_bytes()).expect("an HTTP answer")
}

#[test]
fn reload_needs_the_bearer_token_and_gets_stay_open() {
    let setup = Setup::new().list("ads", None, "ads.test\n");
    // Surrounding whitespace (an editor's newline) is not part of the token.
    std::fs::write(setup.dir().join("admin.token"), "  s3cret-Token_1\n\n").unwrap();
    let sh = setup
        .yaml_listen("  admin_token_file: admin.token\n")
        .serve();
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cret-Token_"),
        Some("Basic s3cret-Token_1"),
        Some("Bearer s3cret-Token_12"),
    ] {
        let r = post_reload(sh.admin, auth);
        assert_eq!(r.status, 401, "{auth:?}: {}", r.body);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{auth:?}");
    }
    let builds = sh.metric("sinkhole_policy_builds_total", &[]);
    let r = post_reload(sh.admin, Some("Bearer s3cret-Token_1"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["ok"], true);
    // The refused requests reloaded nothing; the accepted one found nothing changed.
    assert_eq!(sh.metric("sinkhole_policy_builds_total", &[]), builds);
    for path in [
        "/metrics",
        "/healthz",
        "/readyz",
        "/explain?name=x.ads.test",
    ] {
        assert_eq!(http::get(sh.admin, path).status, 200, "{path}");
    }
}

#[test]
fn a_missing_or_empty_token_file_is_a_located_error() {
    for (contents, says) in [(None, "No such file"), (Some(" \n"), "is empty")] {
        let setup = Setup::new().list("ads", None, "ads.test\n");
        if let Some(c) = contents {
            std::fs::write(setup.dir().join("admin.token"), c).unwrap();
        }
        let setup = setup.yaml_listen("  admin_token_file: admin.token\n");
        let cfg = setup.write_config();
        let out = cli::check(&cfg);
        out.assert_no_panic();
        assert_eq!(out.code, Some(1), "{}", out.show());
        let text = out.all();
        assert!(text.contains(says), "{text}");
        assert!(
            text.contains(&format!("{}:", cfg.display())) && text.contains("admin_token_file"),
            "FILE:LINE:COL and the key: {text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
    }
}
