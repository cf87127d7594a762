//! Self-tests of the harness pieces that do not need the sinkhole binary:
//! the fake upstream, the DNS client, the Unbound fixture, the metrics parser.

mod common;

use common::dns::{self, Q};
use common::http::metric;
use common::unbound::Unbound;
use common::upstream::{FakeUpstream, Script, rec_rrsig};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use std::net::Ipv4Addr;
use std::time::Duration;

#[test]
fn fake_upstream_answers_scripts_and_counts() {
    let up = FakeUpstream::start();
    up.on(
        "a.test",
        Script::a("a.test", 42, &[Ipv4Addr::new(192, 0, 2, 7)]).with_ad(),
    );
    up.on("nx.test", Script::nxdomain("test", 300, 60));
    let r = Q::a("A.Test").edns(1232).udp(up.addr());
    assert_eq!(r.rcode(), ResponseCode::NoError);
    assert_eq!(r.a_addrs(), vec![Ipv4Addr::new(192, 0, 2, 7)]);
    assert_eq!(r.answers()[0].ttl, 42);
    assert!(r.ad());
    assert_eq!(
        r.question_bytes(),
        dns::question_bytes(&Q::a("A.Test").bytes())
    );
    let r = Q::a("nx.test").tcp(up.addr());
    assert_eq!(r.rcode(), ResponseCode::NXDomain);
    assert_eq!(r.soas(), vec![("test.".to_string(), 300, 60)]);
    assert_eq!((up.udp_count(), up.tcp_count()), (1, 1));
    assert_eq!(up.count_for("a.test"), 1);
    assert!(!up.last_for("a.test").unwrap().dnssec_ok());
}

#[test]
fn fake_upstream_truncates_and_stays_silent() {
    let up = FakeUpstream::start();
    up.on(
        "tc.test",
        Script::a("tc.test", 60, &[Ipv4Addr::new(192, 0, 2, 8)]).tc_over_udp(),
    );
    up.on("big.test", Script::many_a("big.test", 60, 40));
    up.on("quiet.test", Script::silent());
    up.on(
        "sig.test",
        Script::a("sig.test", 60, &[Ipv4Addr::new(192, 0, 2, 9)]).with_answer(rec_rrsig(
            "sig.test",
            60,
            RecordType::A,
            "test",
        )),
    );
    let r = Q::a("tc.test").udp(up.addr());
    assert!(r.tc() && r.answers().is_empty());
    assert_eq!(Q::a("tc.test").tcp(up.addr()).answers().len(), 1);
    let r = Q::a("big.test").udp(up.addr());
    assert!(r.tc(), "40 A records exceed 512 bytes");
    assert_eq!(
        Q::a("big.test").edns(1232).udp(up.addr()).answers().len(),
        40
    );
    assert!(
        dns::udp_raw(
            up.addr(),
            &Q::a("quiet.test").bytes(),
            Duration::from_millis(300)
        )
        .is_none()
    );
    let r = Q::a("sig.test").dnssec_ok().udp(up.addr());
    assert_eq!(r.answers()[1].record_type(), RecordType::RRSIG);
    assert!(up.last_for("sig.test").unwrap().dnssec_ok());
}

#[test]
fn unbound_fixture_serves_local_zone() {
    let Some(ub) = Unbound::start_or_skip() else {
        return;
    };
    let r = Q::a("www.test.internal").udp(ub.addr);
    assert_eq!(
        r.a_addrs(),
        vec![Ipv4Addr::new(192, 0, 2, 10)],
        "{}",
        r.dump()
    );
    let r = Q::a("nope.test.internal").udp(ub.addr);
    assert_eq!(r.rcode(), ResponseCode::NXDomain);
    assert_eq!(r.soas().len(), 1);
    let r = Q::new("big.test.internal", RecordType::TXT)
        .edns(1232)
        .udp(ub.addr);
    assert!(r.tc(), "4 KB TXT must be truncated at 1232: {}", r.dump());
    let r = Q::new("big.test.internal", RecordType::TXT).tcp(ub.addr);
    assert_eq!(r.answers().len(), 20);
}

#[test]
fn metric_parser_reads_labels() {
    let text = "# TYPE sinkhole_queries_total counter\n\
        sinkhole_queries_total{outcome=\"blocked\"} 3\n\
        sinkhole_queries_total{outcome=\"allowed\"} 5\n\
        sinkhole_blocked_total{category=\"a b\",list=\"x\"} 2\n\
        sinkhole_build_info{version=\"0.1.0\"} 1\n";
    assert_eq!(
        metric(text, "sinkhole_queries_total", &[("outcome", "blocked")]),
        3.0
    );
    assert_eq!(metric(text, "sinkhole_queries_total", &[]), 8.0);
    assert_eq!(
        metric(
            text,
            "sinkhole_blocked_total",
            &[("list", "x"), ("category", "a b")]
        ),
        2.0
    );
    assert_eq!(
        metric(text, "sinkhole_queries_total", &[("outcome", "cached")]),
        0.0
    );
}

#[test]
fn setup_renders_a_config_the_server_accepts() {
    let s = common::Setup::new()
        .upstream("127.0.0.1:5300".parse().unwrap())
        .block_action("nodata")
        .block_ttl(77)
        .category(
            "video",
            Some("redirect"),
            "Not \"approved\": IG",
            &["Teams", "Attend Anywhere"],
        )
        .category("plain-cat", None, "r", &[])
        .list("unapproved-video", Some("video"), "zoom.us\n")
        .list_fmt("wild", None, "wildcard", "*.wild.test\n")
        .allowlist("exceptions", "support.zoom.us\n");
    let path = s.write_config();
    let cfg = sinkhole::config::Config::load(&path)
        .unwrap_or_else(|e| panic!("{e:?}\n{}", std::fs::read_to_string(&path).unwrap()));
    assert!(cfg.lists.iter().any(|l| l.name == "wild"));
    assert_eq!(cfg.block.ttl, 77);
}
