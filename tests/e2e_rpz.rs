//! RPZ lists in a running server (SPEC "RPZ"): every QNAME action on the
//! wire (NXDOMAIN, NODATA, passthru, drop, tcp-only), local data (A, AAAA,
//! TXT answered as given with `block.ttl` and EDE 4; a CNAME whose target
//! is resolved like any name, from the upstream, or with the target's own
//! block answer), exact and `*.` scope, and other triggers skipped and
//! counted, never applied.

mod common;

use common::dns::Q;
use common::upstream::Script;
use common::{FakeUpstream, Setup, Sinkhole};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use std::net::Ipv4Addr;
use std::time::Duration;

const ZONE: &str = r#"$TTL 300
$ORIGIN rpz.example.
@           IN SOA  localhost. hostmaster.localhost. ( 1 3600 600 86400 60 )
            IN NS   localhost.
nx.test             CNAME .
*.nx.test           CNAME .
nodata.test         CNAME *.
passthru.nx.test    CNAME rpz-passthru.
drop.test           CNAME rpz-drop.
tcponly.test        CNAME rpz-tcp-only.
local.test          A     192.0.2.10
local.test          A     192.0.2.11
local.test          AAAA  2001:db8::10
local.test          TXT   "managed by" "IG"
alias.test          CNAME www.allowed.test.
alias-blocked.test  CNAME zoom.us.
; triggers we do not apply
32.1.0.0.10.rpz-ip          CNAME .
24.0.2.0.192.rpz-client-ip CNAME .
ns.evil.rpz-nsdname        CNAME .
32.1.0.0.10.rpz-nsip       CNAME .
"#;

fn server(up: &FakeUpstream) -> Sinkhole {
    Setup::new()
        .upstream(up.addr())
        .block_ttl(42)
        .category("ig", None, "IG policy zone", &["Microsoft Teams"])
        .category("video", Some("nxdomain"), "Zoom is not approved", &[])
        .list_fmt("zone", Some("ig"), "rpz", ZONE)
        .list("video", Some("video"), "zoom.us\n")
        .serve()
}

fn edns(name: &str, qtype: RecordType) -> Q {
    Q::new(name, qtype).edns(1232)
}

#[test]
fn qname_actions() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    // `name` is exact: nx.test and (by *.) its subdomains.
    let r = sh.udp(&edns("nx.test", RecordType::A));
    assert_eq!(r.rcode(), ResponseCode::NXDomain, "{}", r.dump());
    assert_eq!(r.soas().first().map(|s| s.1), Some(42), "{}", r.dump());
    assert_eq!(r.ede().first().map(|e| e.0), Some(15), "{}", r.dump());
    assert_eq!(sh.udp(&Q::a("a.b.nx.test")).rcode(), ResponseCode::NXDomain);
    // Passthru beats the wildcard above it.
    let r = sh.udp(&Q::a("passthru.nx.test"));
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
    assert_eq!(up.count_for("passthru.nx.test"), 1);
    // NODATA is exact: a subdomain of nodata.test is not listed.
    let r = sh.udp(&Q::a("nodata.test"));
    assert_eq!(r.rcode(), ResponseCode::NoError);
    assert!(r.answers().is_empty());
    assert_eq!(r.soas().len(), 1, "{}", r.dump());
    sh.udp(&Q::a("sub.nodata.test"));
    assert_eq!(up.count_for("sub.nodata.test"), 1, "exact means exact");
}

#[test]
fn drop_sends_nothing_and_tcp_only_truncates_udp() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    let q = Q::a("drop.test");
    assert!(
        sh.udp_raw(&q.bytes(), Duration::from_millis(500)).is_none(),
        "rpz-drop: no answer"
    );
    assert_eq!(
        sh.metric(
            "sinkhole_blocked_total",
            &[("category", "ig"), ("list", "zone")]
        ),
        1.0
    );
    let r = sh.udp(&Q::a("tcponly.test"));
    assert!(r.tc(), "TC over UDP: {}", r.dump());
    assert!(r.answers().is_empty());
    assert_eq!(up.count_for("tcponly.test"), 0);
    let r = sh.tcp(&Q::a("tcponly.test"));
    assert!(!r.tc());
    assert_eq!(r.a_addrs().len(), 1, "resolved over TCP: {}", r.dump());
    assert_eq!(up.count_for("tcponly.test"), 1);
}

#[test]
fn local_data_is_answered_as_given() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    let r = sh.udp(&edns("local.test", RecordType::A));
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
    let mut addrs = r.a_addrs();
    addrs.sort();
    assert_eq!(
        addrs,
        [Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 11)]
    );
    assert!(r.answers().iter().all(|a| a.ttl == 42), "{}", r.dump());
    let ede = r.ede();
    assert_eq!(ede.first().map(|e| e.0), Some(4), "{}", r.dump());
    assert!(
        ede[0].1.contains("ig") && ede[0].1.contains("zone"),
        "{ede:?}"
    );
    assert!(!r.ad());

    let r = sh.udp(&Q::new("local.test", RecordType::AAAA));
    assert_eq!(
        r.aaaa_addrs(),
        ["2001:db8::10".parse::<std::net::Ipv6Addr>().unwrap()]
    );
    let r = sh.udp(&Q::new("local.test", RecordType::TXT));
    let txt: Vec<String> = r
        .answers()
        .iter()
        .filter_map(|a| match &a.data {
            RData::TXT(t) => Some(t.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(txt.len(), 1, "{}", r.dump());
    assert!(
        txt[0].contains("managed by") && txt[0].contains("IG"),
        "{txt:?}"
    );
    // A type the zone has no record of: NODATA.
    let r = sh.udp(&Q::new("local.test", RecordType::MX));
    assert_eq!(r.rcode(), ResponseCode::NoError);
    assert!(r.answers().is_empty(), "{}", r.dump());
    assert_eq!(up.count(), 0);
}

#[test]
fn a_local_cname_is_resolved_like_any_name() {
    let up = FakeUpstream::start();
    up.on(
        "www.allowed.test",
        Script::a("www.allowed.test", 300, &[Ipv4Addr::new(198, 51, 100, 7)]),
    );
    let sh = server(&up);
    for round in ["from upstream", "from the cache"] {
        let r = sh.udp(&edns("alias.test", RecordType::A));
        assert_eq!(r.rcode(), ResponseCode::NoError, "{round}: {}", r.dump());
        let answers = r.answers();
        assert_eq!(answers.len(), 2, "{round}: {}", r.dump());
        assert!(
            matches!(&answers[0].data, RData::CNAME(c) if c.0.to_ascii() == "www.allowed.test."),
            "{round}: {}",
            r.dump()
        );
        assert_eq!(answers[0].ttl, 42, "our CNAME has block.ttl");
        assert_eq!(r.a_addrs(), [Ipv4Addr::new(198, 51, 100, 7)], "{round}");
        assert!(answers[1].ttl <= 300 && answers[1].ttl > 200, "its own TTL");
        assert_eq!(r.ede().first().map(|e| e.0), Some(4), "{round}");
        // The question is the client's own.
        let asked = common::dns::question_bytes(&edns("alias.test", RecordType::A).bytes());
        assert_eq!(r.question_bytes(), asked, "{round}");
    }
    assert_eq!(
        up.count_for("www.allowed.test"),
        1,
        "the second came from the cache"
    );
    assert_eq!(up.count_for("alias.test"), 0);

    // Over TCP too.
    let r = sh.tcp(&Q::a("alias.test"));
    assert_eq!(r.a_addrs(), [Ipv4Addr::new(198, 51, 100, 7)]);
}

#[test]
fn a_local_cname_to_a_blocked_name_gets_the_targets_block_answer() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    let r = sh.udp(&edns("alias-blocked.test", RecordType::A));
    assert_eq!(r.rcode(), ResponseCode::NXDomain, "{}", r.dump());
    assert_eq!(r.answers().len(), 1, "the CNAME: {}", r.dump());
    let ede = r.ede();
    assert_eq!(ede.first().map(|e| e.0), Some(15), "{}", r.dump());
    assert!(ede[0].1.contains("video"), "the target's own EDE: {ede:?}");
    assert_eq!(up.count(), 0);
}

#[test]
fn other_triggers_are_skipped_and_counted() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    for name in [
        "32.1.0.0.10.rpz-ip",
        "ns.evil.rpz-nsdname",
        "ns.evil",
        "10.0.0.1",
    ] {
        let r = sh.udp(&Q::a(name));
        assert_ne!(r.rcode(), ResponseCode::NXDomain, "{name}: {}", r.dump());
    }
    assert_eq!(
        sh.metric(
            "sinkhole_list_rejected_rules_total",
            &[("list", "zone"), ("reason", "unsupported-trigger")]
        ),
        4.0
    );
    let v = sh.get("/readyz").json();
    let zone = v["lists"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "zone")
        .unwrap()
        .clone();
    assert_eq!(zone["format"], "rpz");
    assert_eq!(zone["skipped"], 4, "{zone}");
}
