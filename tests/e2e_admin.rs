//! Admin endpoints: /healthz, /readyz, /metrics (counters rise by exactly the
//! queries sent), /reload (picks up changes, keeps a bad list), /explain, and
//! SIGTERM → exit 0.

mod common;

use common::cli;
use common::dns::Q;
use common::http::metric;
use common::{FakeUpstream, Setup, Sinkhole};
use hickory_proto::op::ResponseCode;
use std::fs;
use std::time::Duration;

fn server(up: &FakeUpstream) -> Sinkhole {
    Setup::new()
        .upstream(up.addr())
        .category(
            "video",
            Some("redirect"),
            "Zoom is not approved.",
            &["Microsoft Teams"],
        )
        .list("unapproved-video", Some("video"), "zoom.us\n")
        .list("ads", None, "ads.test\nads2.test\n")
        .allowlist("exceptions", "support.zoom.us\n")
        .serve()
}

fn queries(sh: &Sinkhole, outcome: &str) -> f64 {
    sh.metric("sinkhole_queries_total", &[("outcome", outcome)])
}

#[test]
fn healthz_and_readyz_report_ok_with_list_status() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    assert_eq!(sh.get("/healthz").status, 200);
    let r = sh.get("/readyz");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["ready"], true, "{v}");
    let lists = v["lists"]
        .as_array()
        .unwrap_or_else(|| panic!("lists array: {v}"));
    let find = |name: &str| {
        lists
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("list {name} in /readyz: {v}"))
    };
    assert_eq!(find("unapproved-video")["rules"], 1, "{v}");
    assert_eq!(find("ads")["rules"], 2, "{v}");
    assert!(find("ads")["status"].is_string(), "{v}");
}

#[test]
fn metrics_expose_contract_names() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    sh.udp(&Q::a("zoom.us"));
    sh.udp(&Q::a("allowed.test"));
    let m = sh.metrics();
    for name in [
        "sinkhole_queries_total",
        "sinkhole_blocked_total",
        "sinkhole_query_duration_seconds",
        "sinkhole_upstream_requests_total",
        "sinkhole_upstream_duration_seconds",
        "sinkhole_cache_entries",
        "sinkhole_list_rules",
        "sinkhole_list_last_reload_timestamp_seconds",
        "sinkhole_build_info",
    ] {
        assert!(
            m.lines().any(|l| l.starts_with(name)),
            "/metrics lacks {name}:\n{m}"
        );
    }
    // Prometheus text names the family with _total, OpenMetrics without
    assert!(
        m.contains("# TYPE sinkhole_queries_total counter")
            || m.contains("# TYPE sinkhole_queries counter"),
        "sinkhole_queries_total must be typed counter:\n{m}"
    );
    assert_eq!(
        metric(&m, "sinkhole_list_rules", &[("list", "ads")]),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "sinkhole_list_rules", &[("list", "unapproved-video")]),
        1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "sinkhole_list_last_reload_timestamp_seconds",
            &[("list", "ads")]
        ) > 1.6e9,
        "{m}"
    );
    assert!(
        metric(&m, "sinkhole_cache_entries", &[]) >= 1.0,
        "one forwarded answer is cached:\n{m}"
    );
    assert_eq!(
        metric(&m, "sinkhole_upstream_requests_total", &[("result", "ok")]),
        1.0,
        "one upstream request, ok:\n{m}"
    );
    let build = m
        .lines()
        .find(|l| l.starts_with("sinkhole_build_info{"))
        .unwrap_or_else(|| panic!("sinkhole_build_info series:\n{m}"));
    assert!(
        build.contains("version=\"") && build.ends_with(" 1"),
        "{build}"
    );
    assert!(!m.contains("zoom.us"), "no label per domain name:\n{m}");
}

#[test]
fn blocked_counter_rises_by_exactly_the_blocked_queries_sent() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    let blocked0 = queries(&sh, "blocked");
    let per_list0 = sh.metric(
        "sinkhole_blocked_total",
        &[("list", "ads"), ("category", "ads")],
    );
    let video0 = sh.metric(
        "sinkhole_blocked_total",
        &[("list", "unapproved-video"), ("category", "video")],
    );
    for i in 0..5 {
        let r = sh.udp(&Q::a(&format!("x{i}.ads.test")));
        assert_eq!(r.rcode(), ResponseCode::NXDomain);
    }
    for _ in 0..3 {
        sh.tcp(&Q::a("zoom.us"));
    }
    assert_eq!(queries(&sh, "blocked") - blocked0, 8.0);
    assert_eq!(
        sh.metric(
            "sinkhole_blocked_total",
            &[("list", "ads"), ("category", "ads")]
        ) - per_list0,
        5.0
    );
    assert_eq!(
        sh.metric(
            "sinkhole_blocked_total",
            &[("list", "unapproved-video"), ("category", "video")]
        ) - video0,
        3.0
    );
}

#[test]
fn allowed_and_cached_counters_rise_by_exactly_the_queries_sent() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    let (a0, c0, b0) = (
        queries(&sh, "allowed"),
        queries(&sh, "cached"),
        queries(&sh, "blocked"),
    );
    let names = ["one.test", "two.test", "three.test", "support.zoom.us"];
    for n in names {
        sh.udp(&Q::a(n));
    }
    assert_eq!(queries(&sh, "allowed") - a0, 4.0, "four forwarded");
    assert_eq!(queries(&sh, "cached") - c0, 0.0);
    for n in names {
        sh.udp(&Q::a(n));
        sh.tcp(&Q::a(n));
    }
    assert_eq!(
        queries(&sh, "allowed") - a0,
        4.0,
        "repeats are not forwarded"
    );
    assert_eq!(
        queries(&sh, "cached") - c0,
        8.0,
        "eight answered from cache"
    );
    assert_eq!(queries(&sh, "blocked") - b0, 0.0);
    assert_eq!(up.count(), 4);
}

#[test]
fn error_counter_rises_when_all_upstreams_fail() {
    let dead = FakeUpstream::silent();
    let sh = server(&dead);
    let e0 = queries(&sh, "error");
    for i in 0..2 {
        let r = sh.tcp(&Q::a(&format!("dead{i}.test")));
        assert_eq!(r.rcode(), ResponseCode::ServFail);
    }
    assert_eq!(queries(&sh, "error") - e0, 2.0);
    assert!(
        sh.metric("sinkhole_upstream_requests_total", &[("result", "timeout")]) >= 2.0,
        "each SERVFAIL came from at least one upstream timeout"
    );
}

#[test]
fn reload_picks_up_an_added_name() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    assert_eq!(
        sh.udp(&Q::a("newly-bad.test")).rcode(),
        ResponseCode::NoError
    );
    fs::write(
        sh.setup.list_path("ads"),
        "ads.test\nads2.test\nnewly-bad.test\n",
    )
    .unwrap();
    let ok0 = sh.metric("sinkhole_reloads_total", &[("result", "ok")]);
    let r = sh.post("/reload");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let ads = v["lists"]
        .as_array()
        .and_then(|a| a.iter().find(|l| l["name"] == "ads"))
        .unwrap_or_else(|| panic!("ads in reload summary: {v}"));
    assert_eq!(ads["status"], "ok", "{v}");
    assert_eq!(ads["rules"], 3, "{v}");
    assert_eq!(ads["error"], serde_json::Value::Null, "{v}");
    let r = sh.udp(&Q::a("www.newly-bad.test"));
    assert_eq!(
        r.rcode(),
        ResponseCode::NXDomain,
        "blocked after reload: {}",
        r.dump()
    );
    assert_eq!(up.count_for("www.newly-bad.test"), 0);
    assert!(sh.metric("sinkhole_reloads_total", &[("result", "ok")]) > ok0);
    assert_eq!(sh.metric("sinkhole_list_rules", &[("list", "ads")]), 3.0);
}

fn assert_reload_keeps(sh: &Sinkhole, up: &FakeUpstream) {
    let err0 = sh.metric("sinkhole_reloads_total", &[("result", "error")]);
    let r = sh.post("/reload");
    assert_eq!(r.status, 422, "a kept list makes /reload 422: {}", r.body);
    let v = r.json();
    let ads = v["lists"]
        .as_array()
        .and_then(|a| a.iter().find(|l| l["name"] == "ads"))
        .unwrap_or_else(|| panic!("ads in reload summary: {v}"));
    assert_eq!(ads["status"], "kept", "{v}");
    assert_eq!(ads["rules"], 2, "previous version in service: {v}");
    assert!(
        ads["error"].as_str().is_some_and(|e| !e.is_empty()),
        "says why: {v}"
    );
    let video = v["lists"]
        .as_array()
        .and_then(|a| a.iter().find(|l| l["name"] == "unapproved-video"))
        .unwrap_or_else(|| panic!("unapproved-video in reload summary: {v}"));
    assert_eq!(video["status"], "ok", "the good list reloads: {v}");
    for name in ["ads.test", "x.ads2.test"] {
        let r = sh.udp(&Q::a(name));
        assert_eq!(
            r.rcode(),
            ResponseCode::NXDomain,
            "kept list still blocks {name}: {}",
            r.dump()
        );
    }
    assert_eq!(up.count(), 0);
    assert_eq!(sh.get("/healthz").status, 200);
    assert!(sh.metric("sinkhole_reloads_total", &[("result", "error")]) > err0);
    assert_eq!(sh.metric("sinkhole_list_rules", &[("list", "ads")]), 2.0);
}

#[test]
fn reload_keeps_a_deleted_list_at_its_previous_version() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    fs::remove_file(sh.setup.list_path("ads")).unwrap();
    assert_reload_keeps(&sh, &up);
}

#[test]
fn reload_keeps_a_list_whose_every_line_is_junk() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    fs::write(sh.setup.list_path("ads"), "bad!name\n..dots..\n").unwrap();
    assert_reload_keeps(&sh, &up);
}

#[test]
fn explain_endpoint_matches_cli_explain_json() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    for name in [
        "us04web.zoom.us",
        "support.zoom.us",
        "x.ads.test",
        "example.org",
    ] {
        let r = sh.get(&format!("/explain?name={name}"));
        assert_eq!(r.status, 200, "{}", r.body);
        let http = r.json();
        let out = cli::explain(&sh.setup.config_path(), name, &["--json"]);
        assert_eq!(out.code, Some(0), "{}", out.show());
        assert_eq!(
            http,
            out.json(),
            "/explain and `explain --json` must agree for {name}"
        );
    }
    let v = sh.get("/explain?name=us04web.zoom.us").json();
    assert_eq!(v["verdict"], "block");
    assert_eq!(v["list"], "unapproved-video");
}

#[test]
fn sigterm_exits_zero() {
    let up = FakeUpstream::start();
    let mut sh = server(&up);
    sh.udp(&Q::a("before-term.test"));
    // the shell's builtin kill: no procps needed
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", sh.pid())])
        .status()
        .expect("run sh -c kill");
    assert!(status.success());
    let exit = sh
        .wait_exit(Duration::from_secs(15))
        .expect("sinkhole exits after SIGTERM");
    assert_eq!(exit.code(), Some(0), "SIGTERM → exit 0, got {exit}");
}
