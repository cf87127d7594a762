//! What a client receives for blocked names: every row of SPEC.md's answer
//! table (UDP and TCP), the synthesised SOA, EDE, header echo, and matching
//! semantics checked through the wire.

mod common;

use common::dns::{Q, Reply, question_bytes};
use common::{FakeUpstream, Setup, Sinkhole};
use hickory_proto::op::{OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use std::net::{Ipv4Addr, Ipv6Addr};

const TTL: u32 = 77;
const FORWARDED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1); // fake upstream's default A

/// One server with a category (and list) per action. block.action stays
/// nxdomain; every category names its own action.
fn server() -> (Sinkhole, FakeUpstream) {
    let up = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(up.addr())
        .block_ttl(TTL)
        .category_per_action()
        .list("unapproved-video", Some("video"), "zoom.us\n")
        .list("ad-list", Some("ads"), "ads.test\n")
        .list("tracker-list", Some("tracking"), "tracker.test\n")
        .list("malware-list", Some("malware"), "evil.test\n")
        .serve();
    (sh, up)
}

/// The same query over UDP and over TCP.
fn both(sh: &Sinkhole, q: &Q) -> [Reply; 2] {
    [sh.udp(q), sh.tcp(q)]
}

fn assert_soa(r: &Reply, owner: &str) {
    assert_eq!(
        r.soas(),
        vec![(owner.to_string(), TTL, TTL)],
        "AUTHORITY must hold exactly the synthesised SOA (owner = rule, TTL and MINIMUM = block.ttl):\n{}",
        r.dump()
    );
}

fn assert_forwarded(sh: &Sinkhole, up: &FakeUpstream, name: &str) {
    let before = up.count_for(name);
    let r = sh.udp(&Q::a(name));
    assert_eq!(
        r.rcode(),
        ResponseCode::NoError,
        "{name} must be forwarded:\n{}",
        r.dump()
    );
    assert_eq!(
        r.a_addrs(),
        vec![FORWARDED],
        "{name} must get the upstream's answer:\n{}",
        r.dump()
    );
    assert_eq!(
        up.count_for(name),
        before + 1,
        "{name} must reach the upstream"
    );
}

fn assert_blocked(sh: &Sinkhole, up: &FakeUpstream, name: &str) {
    let r = sh.udp(&Q::a(name));
    assert_eq!(
        r.rcode(),
        ResponseCode::NXDomain,
        "{name} must be blocked:\n{}",
        r.dump()
    );
    assert_eq!(
        up.count_for(name),
        0,
        "a blocked name must not reach the upstream"
    );
}

#[test]
fn action_nxdomain_answers_nxdomain_with_soa_of_the_rule() {
    let (sh, up) = server();
    for r in both(&sh, &Q::a("www.ads.test")) {
        assert_eq!(r.rcode(), ResponseCode::NXDomain, "{}", r.dump());
        assert!(r.answers().is_empty(), "{}", r.dump());
        assert_soa(&r, "ads.test.");
    }
    assert_eq!(up.count(), 0, "blocked queries must not be forwarded");
}

#[test]
fn action_nodata_answers_noerror_empty_with_soa() {
    let (sh, up) = server();
    for qtype in [RecordType::A, RecordType::AAAA, RecordType::TXT] {
        for r in both(&sh, &Q::new("cdn.tracker.test", qtype)) {
            assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
            assert!(r.answers().is_empty(), "{}", r.dump());
            assert_soa(&r, "tracker.test.");
        }
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn action_refused_answers_refused() {
    let (sh, up) = server();
    for r in both(&sh, &Q::a("evil.test")) {
        assert_eq!(r.rcode(), ResponseCode::Refused, "{}", r.dump());
        assert!(r.answers().is_empty(), "{}", r.dump());
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn action_redirect_a_answers_redirect_ipv4_with_block_ttl() {
    let (sh, up) = server();
    for r in both(&sh, &Q::a("us04web.zoom.us")) {
        assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
        assert_eq!(
            r.a_addrs(),
            vec![Ipv4Addr::new(10, 0, 0, 1)],
            "{}",
            r.dump()
        );
        assert_eq!(r.answers().len(), 1, "{}", r.dump());
        let rec = &r.answers()[0];
        assert_eq!(rec.ttl, TTL, "redirect TTL must be block.ttl");
        assert_eq!(rec.name.to_ascii().to_lowercase(), "us04web.zoom.us.");
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn action_redirect_aaaa_answers_redirect_ipv6_with_block_ttl() {
    let (sh, _up) = server();
    for r in both(&sh, &Q::new("zoom.us", RecordType::AAAA)) {
        assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
        assert_eq!(
            r.aaaa_addrs(),
            vec!["fd00::1".parse::<Ipv6Addr>().unwrap()],
            "{}",
            r.dump()
        );
        assert_eq!(r.answers().len(), 1, "{}", r.dump());
        assert_eq!(r.answers()[0].ttl, TTL);
    }
}

#[test]
fn action_redirect_other_qtypes_answer_nodata_with_soa() {
    let (sh, up) = server();
    for qtype in [RecordType::MX, RecordType::TXT, RecordType::HTTPS] {
        for r in both(&sh, &Q::new("us04web.zoom.us", qtype)) {
            assert_eq!(r.rcode(), ResponseCode::NoError, "{qtype}: {}", r.dump());
            assert!(r.answers().is_empty(), "{qtype}: {}", r.dump());
            assert_soa(&r, "zoom.us.");
        }
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn list_without_category_uses_block_action_and_its_name_as_category() {
    let up = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(up.addr())
        .block_action("nodata")
        .block_ttl(TTL)
        .list("plain-list", None, "plain.test\n")
        .serve();
    let r = sh.udp(&Q::a("www.plain.test").edns(1232));
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
    assert!(r.answers().is_empty(), "{}", r.dump());
    assert_soa(&r, "plain.test.");
    let ede = r.ede();
    assert_eq!(ede.len(), 1, "one EDE expected: {}", r.dump());
    assert_eq!(ede[0].0, 15, "EDE Blocked");
    assert!(
        ede[0].1.contains("plain-list"),
        "EDE text must name the list: {:?}",
        ede[0].1
    );
    assert_eq!(up.count(), 0);
}

#[test]
fn ede_blocked_names_category_and_list_for_nxdomain_nodata_refused() {
    let (sh, _up) = server();
    for (name, category, list) in [
        ("ads.test", "ads", "ad-list"),
        ("tracker.test", "tracking", "tracker-list"),
        ("evil.test", "malware", "malware-list"),
    ] {
        for r in both(&sh, &Q::a(name).edns(1232)) {
            assert!(
                r.has_opt(),
                "query had EDNS, so must the answer: {}",
                r.dump()
            );
            let ede = r.ede();
            assert_eq!(
                ede.len(),
                1,
                "{name}: one EDE option expected: {}",
                r.dump()
            );
            assert_eq!(ede[0].0, 15, "{name}: EDE INFO-CODE must be 15 (Blocked)");
            assert!(
                ede[0].1.contains(category),
                "{name}: EDE text {:?} must name category {category}",
                ede[0].1
            );
            assert!(
                ede[0].1.contains(list),
                "{name}: EDE text {:?} must name list {list}",
                ede[0].1
            );
        }
    }
}

#[test]
fn ede_forged_answer_for_redirect() {
    let (sh, _up) = server();
    for qtype in [RecordType::A, RecordType::AAAA, RecordType::MX] {
        for r in both(&sh, &Q::new("zoom.us", qtype).edns(1232)) {
            let ede = r.ede();
            assert_eq!(
                ede.len(),
                1,
                "{qtype}: one EDE option expected: {}",
                r.dump()
            );
            assert_eq!(
                ede[0].0, 4,
                "{qtype}: redirect must carry EDE 4 (Forged Answer)"
            );
            assert!(
                ede[0].1.contains("video"),
                "EDE text {:?} must name the category",
                ede[0].1
            );
            assert!(
                ede[0].1.contains("unapproved-video"),
                "EDE text {:?} must name the list",
                ede[0].1
            );
        }
    }
}

#[test]
fn no_opt_and_no_ede_when_query_had_no_edns() {
    let (sh, _up) = server();
    for name in ["ads.test", "tracker.test", "evil.test", "zoom.us"] {
        for r in both(&sh, &Q::a(name)) {
            assert!(
                !r.has_opt(),
                "{name}: no EDNS in query, so no OPT in answer: {}",
                r.dump()
            );
            assert!(r.ede().is_empty());
        }
    }
}

#[test]
fn header_is_echoed_ra_set_ad_never_set() {
    let (sh, _up) = server();
    let mut id = 0xbe00;
    for name in [
        "ZoOm.Us",
        "Us04Web.ZOOM.us",
        "WWW.Ads.TeSt",
        "tRaCkEr.TEST",
        "EVIL.test",
    ] {
        for (rd, cd) in [(true, false), (false, true), (true, true)] {
            for edns in [false, true] {
                id += 1;
                let mut q = Q::a(name).id(id).rd(rd).cd(cd).ad(true);
                if edns {
                    q = q.dnssec_ok();
                }
                for r in both(&sh, &q) {
                    let ctx = format!("{name} rd={rd} cd={cd} edns={edns}:\n{}", r.dump());
                    assert_eq!(r.id(), id, "ID echoed: {ctx}");
                    assert!(r.qr(), "QR set: {ctx}");
                    assert_eq!(r.rd(), rd, "RD echoed: {ctx}");
                    assert_eq!(r.cd(), cd, "CD echoed: {ctx}");
                    assert!(r.ra(), "RA set: {ctx}");
                    assert!(!r.ad(), "AD never set on synthesised answers: {ctx}");
                    assert_eq!(
                        r.msg.metadata.op_code,
                        OpCode::Query,
                        "opcode echoed: {ctx}"
                    );
                    assert_eq!(
                        r.question_bytes(),
                        question_bytes(&q.bytes()),
                        "question echoed byte for byte (same case): {ctx}"
                    );
                }
            }
        }
    }
}

#[test]
fn plain_entry_matches_name_and_subdomains_but_not_lookalikes() {
    let (sh, up) = server();
    for name in ["ads.test", "x.ads.test", "a.b.c.ads.test"] {
        assert_blocked(&sh, &up, name);
    }
    for name in ["notads.test", "ads.test.example.net", "s.test"] {
        assert_forwarded(&sh, &up, name);
    }
}

#[test]
fn matching_is_case_insensitive_in_query_and_list() {
    let up = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(up.addr())
        .list("caps", None, "MiXeD.Example.TEST\n")
        .serve();
    for name in [
        "mixed.example.test",
        "MIXED.EXAMPLE.TEST",
        "www.Mixed.Example.Test",
    ] {
        assert_blocked(&sh, &up, name);
    }
}

#[test]
fn wildcard_entry_blocks_subdomains_only() {
    let up = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(up.addr())
        .list_fmt("wild", None, "wildcard", "*.wild.test\n")
        .serve();
    assert_forwarded(&sh, &up, "wild.test");
    assert_blocked(&sh, &up, "a.wild.test");
    assert_blocked(&sh, &up, "a.b.wild.test");
    assert_forwarded(&sh, &up, "notwild.test");
}

#[test]
fn most_specific_rule_wins_and_allow_wins_ties() {
    let up = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(up.addr())
        .list("block", None, "zoom.us\nads.example.com\ntie.test\n")
        .allowlist("allow", "support.zoom.us\nexample.com\ntie.test\n")
        .serve();
    // allow support.zoom.us beats block zoom.us
    assert_forwarded(&sh, &up, "support.zoom.us");
    assert_forwarded(&sh, &up, "eu.support.zoom.us");
    assert_blocked(&sh, &up, "zoom.us");
    assert_blocked(&sh, &up, "us04web.zoom.us");
    // block ads.example.com beats allow example.com
    assert_blocked(&sh, &up, "ads.example.com");
    assert_blocked(&sh, &up, "x.ads.example.com");
    assert_forwarded(&sh, &up, "www.example.com");
    assert_forwarded(&sh, &up, "example.com");
    // same rule in both: allow wins
    assert_forwarded(&sh, &up, "tie.test");
    assert_forwarded(&sh, &up, "www.tie.test");
}

#[test]
fn hosts_and_adblock_lists_block_through_the_wire() {
    let up = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(up.addr())
        .list_fmt(
            "hosts-list",
            None,
            "hosts",
            "0.0.0.0 hosts-blocked.test\n127.0.0.1 other-hosts.test\n",
        )
        .list_fmt("adblock-list", None, "adblock", "||adblock-blocked.test^\n")
        .serve();
    assert_blocked(&sh, &up, "hosts-blocked.test");
    assert_blocked(&sh, &up, "www.other-hosts.test");
    assert_blocked(&sh, &up, "adblock-blocked.test");
    assert_blocked(&sh, &up, "cdn.adblock-blocked.test");
    assert_forwarded(&sh, &up, "unlisted.test");
}

#[test]
fn blocked_answer_too_big_for_the_client_is_truncated_over_udp_only() {
    // A 150-character category and list name fill the EDE text to its cap;
    // with a ~250-byte name the answer outgrows a 512-byte client.
    let long = "c".repeat(150);
    let up = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(up.addr())
        .category(&long, Some("nxdomain"), "reason", &[])
        .list(&format!("l{long}"), Some(long.as_str()), "big.test\n")
        .serve();
    let label = "a".repeat(60);
    let name = format!("{label}.{label}.{label}.{}.big.test", &label[..50]);
    let q = Q::a(&name).edns(512);
    let udp = sh.udp(&q);
    assert!(
        udp.tc(),
        "TC=1 expected over UDP: {} bytes\n{}",
        udp.raw.len(),
        udp.dump()
    );
    assert!(
        udp.raw.len() <= 512,
        "UDP answer of {} bytes",
        udp.raw.len()
    );
    assert_eq!(
        udp.question_bytes(),
        q.bytes()[12..12 + udp.question_bytes().len()].to_vec()
    );
    let tcp = sh.tcp(&q);
    assert!(!tcp.tc(), "the whole answer over TCP: {}", tcp.dump());
    assert!(tcp.raw.len() > 512, "TCP answer of {} bytes", tcp.raw.len());
    assert_eq!(tcp.rcode(), ResponseCode::NXDomain);
    assert_eq!(tcp.ede().len(), 1, "{}", tcp.dump());
}
