//! The audit log and `/stats` (SPEC "Staff and monitoring"), read from the
//! running server's stdout and admin port: which queries get a line under
//! each `log.queries`, the keys of each line, the client under each
//! `log.client`, the counts `/stats` gives after known traffic, and its
//! memory staying flat while a million distinct blocked names are asked.

mod common;

use common::dns::{self, Q};
use common::http;
use common::upstream::Script;
use common::{FakeUpstream, Setup, Sinkhole};
use hickory_proto::rr::RecordType;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

fn setup(up: &FakeUpstream, log: &str) -> Setup {
    Setup::new()
        .upstream(up.addr())
        .category(
            "video",
            Some("redirect"),
            "Zoom is not approved.",
            &["Teams"],
        )
        .category("ads", Some("nxdomain"), "Advertising", &[])
        .list("unapproved-video", Some("video"), "zoom.us\n")
        .list_fmt("ads-wild", Some("ads"), "wildcard", "*.adserver.test\n")
        .yaml(log)
}

/// The audit lines (JSON with an `event` key) the server wrote so far.
fn lines(sh: &Sinkhole) -> Vec<serde_json::Value> {
    sh.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("event").is_some())
        .collect()
}

/// Waits until `n` audit lines are written, then returns them.
fn wait_lines(sh: &Sinkhole, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = lines(sh);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} audit lines of {n}:\n{}",
            got.len(),
            sh.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asks the audit writer to catch up: a blocked query marks the end.
fn marker(sh: &Sinkhole) -> Vec<serde_json::Value> {
    sh.udp(&Q::a("marker.zoom.us"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = lines(sh);
        if got.iter().any(|l| l["name"] == "marker.zoom.us") {
            return got
                .into_iter()
                .filter(|l| l["name"] != "marker.zoom.us")
                .collect();
        }
        assert!(Instant::now() < deadline, "the marker never logged");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stats(sh: &Sinkhole) -> serde_json::Value {
    http::get(sh.admin, "/stats").json()
}

#[test]
fn blocked_queries_are_logged_with_every_key_by_default() {
    let up = FakeUpstream::start();
    let sh = setup(&up, "").serve();
    let sock = dns::udp_socket(sh.dns, dns::TIMEOUT);
    let me = sock.local_addr().unwrap();
    sock.send(&Q::new("US04web.Zoom.US", RecordType::AAAA).bytes())
        .unwrap();
    dns::recv(&sock).unwrap();
    sock.send(&Q::a("x.ads.AdServer.test").bytes()).unwrap();
    dns::recv(&sock).unwrap();
    sh.udp(&Q::a("allowed.test"));
    let got = wait_lines(&sh, 2);
    assert_eq!(
        got.len(),
        2,
        "allowed queries get no line by default: {got:#?}"
    );
    let zoom = &got[0];
    assert_eq!(zoom["event"], "blocked");
    assert_eq!(zoom["client"], me.ip().to_string());
    assert_eq!(zoom["name"], "us04web.zoom.us");
    assert_eq!(zoom["qtype"], "AAAA");
    assert_eq!(zoom["action"], "redirect");
    assert_eq!(zoom["category"], "video");
    assert_eq!(zoom["list"], "unapproved-video");
    assert_eq!(zoom["rule"], "zoom.us");
    let ts = zoom["ts"].as_str().unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && &ts[10..11] == "T",
        "RFC 3339 UTC: {ts}"
    );
    let ad = &got[1];
    assert_eq!(ad["rule"], "*.adserver.test");
    assert_eq!(ad["action"], "nxdomain");
    assert_eq!(ad["qtype"], "A");
    let m = sh.metrics();
    assert_eq!(http::metric(&m, "sinkhole_log_dropped_total", &[]), 0.0);
}

#[test]
fn log_all_adds_a_line_per_query_with_outcome_and_rcode() {
    let up = FakeUpstream::start();
    up.on("gone.test", Script::nxdomain("test", 300, 60));
    let sh = setup(&up, "log:\n  queries: all\n").serve();
    sh.udp(&Q::a("zoom.us"));
    sh.udp(&Q::a("fine.test"));
    sh.udp(&Q::a("fine.test"));
    sh.udp(&Q::a("gone.test"));
    let got = wait_lines(&sh, 4);
    let by = |name: &str| -> Vec<&serde_json::Value> {
        got.iter().filter(|l| l["name"] == name).collect()
    };
    assert_eq!(by("zoom.us")[0]["event"], "blocked");
    let fine = by("fine.test");
    assert_eq!(fine.len(), 2);
    assert_eq!(fine[0]["event"], "query");
    assert_eq!(fine[0]["outcome"], "allowed");
    assert_eq!(fine[0]["rcode"], "NOERROR");
    assert_eq!(fine[1]["outcome"], "cached");
    assert!(fine[0].get("action").is_none());
    let gone = by("gone.test");
    assert_eq!(gone[0]["rcode"], "NXDOMAIN");
    assert_eq!(gone[0]["outcome"], "allowed");
}

#[test]
fn log_none_writes_nothing_but_stats_still_count() {
    let up = FakeUpstream::start();
    let sh = setup(&up, "log:\n  queries: none\n").serve();
    for _ in 0..3 {
        sh.udp(&Q::a("zoom.us"));
    }
    // No line to wait for: poll /stats until the writer has counted all.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = stats(&sh);
        if s["top_blocked_names"][0]["count"] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "never counted: {s}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(lines(&sh).is_empty(), "no audit line: {}", sh.logs());
}

#[test]
fn clients_are_shown_as_configured() {
    let up = FakeUpstream::start();
    let client_of = |log: &str, v6: bool| -> Vec<Option<String>> {
        let mut s = setup(&up, log);
        if v6 {
            s = s.with_ipv6();
        }
        let sh = s.serve();
        let addr = if v6 {
            SocketAddr::from((Ipv6Addr::LOCALHOST, sh.dns.port()))
        } else {
            sh.dns
        };
        for name in ["a.zoom.us", "b.zoom.us"] {
            dns::udp(addr, &Q::a(name).bytes());
        }
        let got = marker(&sh);
        got.iter()
            .map(|l| l.get("client").and_then(|c| c.as_str()).map(str::to_owned))
            .collect()
    };
    assert_eq!(
        client_of("log:\n  client: full\n", false),
        vec![Some("127.0.0.1".into()); 2]
    );
    assert_eq!(
        client_of("log:\n  client: subnet\n", false),
        vec![Some("127.0.0.0/24".into()); 2]
    );
    assert_eq!(
        client_of("log:\n  client: subnet\n", true),
        vec![Some("::/56".into()); 2]
    );
    assert_eq!(client_of("log:\n  client: none\n", false), vec![None, None]);
    let k1 = client_of("log:\n  client: hashed\n  client_hash_key: \"k1\"\n", false);
    let k2 = client_of("log:\n  client: hashed\n  client_hash_key: \"k2\"\n", false);
    let h = k1[0].clone().unwrap();
    assert!(
        h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit()),
        "{h}"
    );
    assert_eq!(
        k1[1].as_deref(),
        Some(h.as_str()),
        "same client, same string"
    );
    assert_ne!(
        k2[0].as_deref(),
        Some(h.as_str()),
        "another key, another string"
    );
    assert!(!h.contains("127"), "no address in it");
}

#[test]
fn stats_count_blocked_queries_by_name_category_and_client() {
    let up = FakeUpstream::start();
    let sh = setup(&up, "stats:\n  window: 10m\n").serve();
    for _ in 0..3 {
        sh.udp(&Q::a("zoom.us"));
    }
    sh.udp(&Q::a("meet.zoom.us"));
    for _ in 0..2 {
        sh.udp(&Q::a("x.adserver.test"));
    }
    sh.udp(&Q::a("allowed.test"));
    marker(&sh);
    let s = stats(&sh);
    assert_eq!(s["window_seconds"], 600);
    let names = &s["top_blocked_names"];
    assert_eq!(names[0], serde_json::json!({"name": "zoom.us", "count": 3}));
    assert_eq!(
        names[1],
        serde_json::json!({"name": "x.adserver.test", "count": 2})
    );
    assert!(
        names
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["name"] != "allowed.test"),
        "only blocked names: {s}"
    );
    // marker.zoom.us counts too: video 3 + 1 + 1, ads 2.
    assert_eq!(
        s["top_categories"],
        serde_json::json!([{"category": "video", "count": 5}, {"category": "ads", "count": 2}])
    );
    assert_eq!(
        s["top_clients"],
        serde_json::json!([{"client": "127.0.0.1", "count": 7}])
    );

    let quiet = setup(&up, "log:\n  client: none\n").serve();
    quiet.udp(&Q::a("zoom.us"));
    marker(&quiet);
    let s = stats(&quiet);
    assert_eq!(s["top_blocked_names"][0]["count"], 1);
    assert_eq!(
        s["top_clients"],
        serde_json::json!([]),
        "no clients with none"
    );
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// Sends `n` blocked queries for distinct names from `from`, in flights of
/// 256 answered before the next; returns how many were answered.
fn flood(sh: &Sinkhole, from: u64, n: u64) -> u64 {
    let sock = dns::udp_socket(sh.dns, Duration::from_millis(500));
    let mut answered = 0;
    let mut i = from;
    while i < from + n {
        let flight = 256.min(from + n - i);
        for k in 0..flight {
            let q = Q::a(&format!("n{}.blocked.test", i + k));
            sock.send(&q.bytes()).unwrap();
        }
        for _ in 0..flight {
            if dns::recv(&sock).is_some() {
                answered += 1;
            } else {
                break; // a lost datagram: the next flight goes on
            }
        }
        i += flight;
    }
    answered
}

#[test]
fn stats_memory_stays_flat_over_a_million_distinct_blocked_names() {
    let up = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(up.addr())
        .list("blocked", None, "blocked.test\n")
        // No lines (a million would be 200 MB of log): only the counting.
        .yaml("log:\n  queries: none\n")
        .serve();
    // Warm up: every bucket of the summary filled, the allocator settled.
    assert!(flood(&sh, 0, 100_000) > 90_000);
    let before = rss_kib(sh.pid());
    assert!(flood(&sh, 100_000, 900_000) > 800_000);
    let after = rss_kib(sh.pid());
    let s = stats(&sh);
    assert_eq!(s["top_blocked_names"].as_array().unwrap().len(), 20);
    assert!(
        after <= before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 900,000 more distinct names"
    );
    assert_eq!(
        http::metric(&sh.metrics(), "sinkhole_log_dropped_total", &[]),
        0.0
    );
}
