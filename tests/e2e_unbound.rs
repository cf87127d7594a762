//! Forwarding to a real Unbound (Debian package) serving a static local zone
//! on a loopback port: answers, NXDOMAIN with SOA, TC→TCP against Unbound,
//! cache, and blocking before Unbound is asked.

mod common;

use common::dns::{Q, question_bytes};
use common::unbound::Unbound;
use common::{Setup, Sinkhole};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use std::net::Ipv4Addr;

fn server(ub: &Unbound) -> Sinkhole {
    Setup::new()
        .upstream(ub.addr)
        .block_ttl(45)
        .list("internal-block", None, "blocked.test.internal\n")
        .serve()
}

#[test]
fn forwards_answers_from_unbound_local_zone() {
    let Some(ub) = Unbound::start_or_skip() else {
        return;
    };
    let sh = server(&ub);
    let q = Q::a("WwW.Test.Internal").edns(1232);
    let r = sh.udp(&q);
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
    assert_eq!(
        r.a_addrs(),
        vec![Ipv4Addr::new(192, 0, 2, 10)],
        "{}",
        r.dump()
    );
    assert!(r.answers()[0].ttl <= 300 && r.answers()[0].ttl > 0);
    assert!(!r.aa(), "AA cleared on forwarded answers: {}", r.dump());
    assert!(r.ra());
    assert!(r.has_opt());
    assert_eq!(r.question_bytes(), question_bytes(&q.bytes()));

    let r = sh.tcp(&Q::new("www.test.internal", RecordType::AAAA));
    assert_eq!(
        r.aaaa_addrs(),
        vec!["2001:db8::10".parse::<std::net::Ipv6Addr>().unwrap()]
    );

    let r = sh.udp(&Q::new("mail.test.internal", RecordType::MX));
    assert!(
        r.answers().iter().any(|rec| matches!(&rec.data, RData::MX(mx) if mx.exchange.to_ascii() == "mx.test.internal.")),
        "MX from Unbound: {}",
        r.dump()
    );
}

#[test]
fn nxdomain_and_nodata_from_unbound_carry_its_soa_and_are_cached() {
    let Some(ub) = Unbound::start_or_skip() else {
        return;
    };
    let sh = server(&ub);
    let allowed0 = sh.metric("sinkhole_queries_total", &[("outcome", "allowed")]);
    let cached0 = sh.metric("sinkhole_queries_total", &[("outcome", "cached")]);
    for _ in 0..2 {
        let r = sh.udp(&Q::a("nope.test.internal"));
        assert_eq!(r.rcode(), ResponseCode::NXDomain, "{}", r.dump());
        let soas = r.soas();
        assert_eq!(soas.len(), 1, "Unbound's SOA: {}", r.dump());
        assert_eq!(soas[0].0, "test.internal.");
        assert!(
            soas[0].1 <= 120,
            "negative TTL at most the SOA minimum: {}",
            r.dump()
        );

        let r = sh.udp(&Q::new("www.test.internal", RecordType::TXT));
        assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
        assert!(r.answers().is_empty());
        assert_eq!(r.soas().len(), 1, "NODATA with SOA: {}", r.dump());
    }
    assert_eq!(
        sh.metric("sinkhole_queries_total", &[("outcome", "allowed")]) - allowed0,
        2.0
    );
    assert_eq!(
        sh.metric("sinkhole_queries_total", &[("outcome", "cached")]) - cached0,
        2.0
    );
}

#[test]
fn truncated_unbound_answer_is_fetched_over_tcp() {
    let Some(ub) = Unbound::start_or_skip() else {
        return;
    };
    let sh = server(&ub);
    // ~4 KB of TXT: Unbound truncates it over UDP, so the server must use TCP
    let r = sh.tcp(&Q::new("big.test.internal", RecordType::TXT));
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
    assert!(!r.tc());
    assert_eq!(r.answers().len(), 20, "all 20 TXT records: {}", r.dump());
    // and a UDP client gets TC=1 within 1232 bytes
    let r = sh.udp(&Q::new("big.test.internal", RecordType::TXT).edns(4096));
    assert!(r.tc(), "{}", r.dump());
    assert!(r.raw.len() <= 1232);
}

#[test]
fn blocked_name_is_answered_without_asking_unbound() {
    let Some(ub) = Unbound::start_or_skip() else {
        return;
    };
    let sh = server(&ub);
    // Unbound has blocked.test.internal → 192.0.2.66; the sinkhole must not return it
    let r = sh.udp(&Q::a("blocked.test.internal").edns(1232));
    assert_eq!(r.rcode(), ResponseCode::NXDomain, "{}", r.dump());
    assert!(r.a_addrs().is_empty());
    assert_eq!(
        r.soas(),
        vec![("blocked.test.internal.".to_string(), 45, 45)],
        "{}",
        r.dump()
    );
    assert_eq!(r.ede().first().map(|e| e.0), Some(15));
    // while Unbound itself does have it
    let direct = Q::a("blocked.test.internal").udp(ub.addr);
    assert_eq!(direct.a_addrs(), vec![Ipv4Addr::new(192, 0, 2, 66)]);
}
