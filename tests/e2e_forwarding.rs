//! Forwarding fidelity: what the upstream says reaches the client unchanged
//! (apart from TTLs and AA), UDP size limits and TC→TCP, the cache (TTL
//! countdown, negative caching, key), failover and SERVFAIL.

mod common;

use common::dns::{self, Q, Reply, question_bytes};
use common::upstream::{Script, rec_a, rec_ns, rec_rrsig};
use common::{FakeUpstream, Setup, Sinkhole};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, Record, RecordType};
use std::net::Ipv4Addr;
use std::time::Duration;

fn ip(d: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, d)
}

fn server(up: &FakeUpstream) -> Sinkhole {
    Setup::new().upstream(up.addr()).serve()
}

/// Records without their TTL, for "unchanged apart from TTL" comparisons.
fn no_ttl(recs: &[Record]) -> Vec<(String, RecordType, RData)> {
    recs.iter()
        .filter(|r| r.record_type() != RecordType::OPT)
        .map(|r| {
            (
                r.name.to_ascii().to_lowercase(),
                r.record_type(),
                r.data.clone(),
            )
        })
        .collect()
}

#[test]
fn forwarded_answer_keeps_answer_authority_and_additional_sections() {
    let up = FakeUpstream::start();
    let script = Script::a("full.test", 300, &[ip(50), ip(51)])
        .with_authority(rec_ns("full.test", 300, "ns1.full.test"))
        .with_additional(rec_a("ns1.full.test", 300, ip(53)));
    up.on("full.test", script.clone());
    let sh = server(&up);
    for r in [
        sh.udp(&Q::a("full.test").edns(1232)),
        sh.tcp(&Q::a("full.test")),
    ] {
        assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
        assert_eq!(no_ttl(r.answers()), no_ttl(&script.answers), "{}", r.dump());
        assert_eq!(
            no_ttl(r.authorities()),
            no_ttl(&script.authorities),
            "{}",
            r.dump()
        );
        assert_eq!(
            no_ttl(r.additionals()),
            no_ttl(&script.additionals),
            "{}",
            r.dump()
        );
        for rec in r.answers().iter().chain(r.authorities()) {
            assert!(
                rec.ttl <= 300 && rec.ttl > 0,
                "TTL {} out of range: {}",
                rec.ttl,
                r.dump()
            );
        }
        assert!(!r.tc());
    }
}

#[test]
fn upstream_rcode_and_negative_answers_pass_through() {
    let up = FakeUpstream::start();
    up.on("nx.test", Script::nxdomain("test", 300, 300));
    up.on("nodata.test", Script::nodata("test", 300, 300));
    up.on("refused.test", Script::rcode(ResponseCode::Refused));
    let sh = server(&up);

    let r = sh.udp(&Q::a("nx.test"));
    assert_eq!(r.rcode(), ResponseCode::NXDomain, "{}", r.dump());
    assert!(r.answers().is_empty());
    assert_eq!(
        r.soas().len(),
        1,
        "upstream SOA must reach the client: {}",
        r.dump()
    );
    assert_eq!(r.soas()[0].0, "test.");

    let r = sh.udp(&Q::a("nodata.test"));
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
    assert!(r.answers().is_empty());
    assert_eq!(
        r.soas().len(),
        1,
        "upstream SOA must reach the client: {}",
        r.dump()
    );

    let r = sh.udp(&Q::a("refused.test"));
    assert_eq!(
        r.rcode(),
        ResponseCode::Refused,
        "upstream REFUSED passes through: {}",
        r.dump()
    );
}

#[test]
fn ad_bit_passes_through_and_aa_is_cleared() {
    let up = FakeUpstream::start();
    up.on("ad.test", Script::a("ad.test", 300, &[ip(2)]).with_ad());
    up.on("noad.test", Script::a("noad.test", 300, &[ip(3)]));
    up.on("aa.test", Script::a("aa.test", 300, &[ip(4)]).with_aa());
    let sh = server(&up);
    for _ in 0..2 {
        // second round comes from the cache: same flags
        let r = sh.udp(&Q::a("ad.test").dnssec_ok());
        assert!(r.ad(), "upstream AD must reach the client: {}", r.dump());
        let r = sh.udp(&Q::a("noad.test").dnssec_ok());
        assert!(!r.ad(), "no AD upstream, no AD here: {}", r.dump());
        let r = sh.udp(&Q::a("aa.test"));
        assert!(
            !r.aa(),
            "AA must be cleared (recursive service): {}",
            r.dump()
        );
        assert!(r.ra(), "RA must be set: {}", r.dump());
        assert_eq!(r.a_addrs(), vec![ip(4)]);
    }
}

#[test]
fn dnssec_records_reach_the_client_when_do_is_set() {
    let up = FakeUpstream::start();
    let script = Script::a("signed.test", 300, &[ip(5)])
        .with_answer(rec_rrsig("signed.test", 300, RecordType::A, "signed.test"))
        .with_ad();
    up.on("signed.test", script.clone());
    let sh = server(&up);
    for r in [
        sh.udp(&Q::a("signed.test").dnssec_ok()),
        sh.tcp(&Q::a("signed.test").dnssec_ok()),
    ] {
        assert_eq!(
            no_ttl(r.answers()),
            no_ttl(&script.answers),
            "A + RRSIG unchanged: {}",
            r.dump()
        );
        assert!(r.ad(), "{}", r.dump());
    }
    assert!(
        up.last_for("signed.test").unwrap().dnssec_ok(),
        "DO must be sent upstream"
    );
}

#[test]
fn do_and_cd_bits_are_passed_to_the_upstream() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    let r = sh.udp(&Q::a("flags1.test").dnssec_ok().cd(true));
    assert!(r.cd(), "CD echoed: {}", r.dump());
    let seen = up.last_for("flags1.test").expect("query reached upstream");
    assert!(
        seen.dnssec_ok(),
        "DO=1 must reach the upstream: {:?}",
        seen.msg
    );
    assert!(seen.cd(), "CD=1 must reach the upstream: {:?}", seen.msg);

    sh.udp(&Q::a("flags2.test").edns(1232));
    let seen = up.last_for("flags2.test").expect("query reached upstream");
    assert!(
        !seen.dnssec_ok(),
        "DO=0 must stay 0 upstream: {:?}",
        seen.msg
    );
    assert!(!seen.cd(), "CD=0 must stay 0 upstream: {:?}", seen.msg);
}

#[test]
fn answer_has_opt_iff_query_had_opt() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    for name in ["opt1.test", "opt2.test"] {
        // first forwarded, then from cache
        for _ in 0..2 {
            let r = sh.udp(&Q::a(name));
            assert!(!r.has_opt(), "no EDNS in query → no OPT: {}", r.dump());
            let r = sh.udp(&Q::a(name).edns(1232));
            assert!(r.has_opt(), "EDNS in query → OPT: {}", r.dump());
            let r = sh.tcp(&Q::a(name));
            assert!(
                !r.has_opt(),
                "no EDNS in query → no OPT (TCP): {}",
                r.dump()
            );
        }
    }
}

#[test]
fn question_case_is_echoed_on_forwarded_and_cached_answers() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    for name in ["WwW.CaSe.TeSt", "www.CASE.test", "WWW.case.TEST"] {
        let q = Q::a(name).edns(1232);
        let r = sh.udp(&q);
        assert_eq!(
            r.question_bytes(),
            question_bytes(&q.bytes()),
            "question of {name} echoed exactly"
        );
        assert_eq!(r.a_addrs(), vec![ip(1)]);
    }
    assert_eq!(up.count(), 1, "case must not split the cache");
}

#[test]
fn upstream_tc_is_retried_over_tcp() {
    let up = FakeUpstream::start();
    up.on(
        "tc.test",
        Script::a("tc.test", 300, &[ip(77)]).tc_over_udp(),
    );
    let sh = server(&up);
    let r = sh.udp(&Q::a("tc.test").edns(1232));
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
    assert!(!r.tc(), "the full answer fits: {}", r.dump());
    assert_eq!(r.a_addrs(), vec![ip(77)], "{}", r.dump());
    assert_eq!(up.udp_count(), 1, "one UDP attempt");
    assert_eq!(up.tcp_count(), 1, "then one TCP retry to the same upstream");
}

#[test]
fn large_answer_is_truncated_over_udp_without_edns_and_complete_over_tcp() {
    let up = FakeUpstream::start();
    up.on("many.test", Script::many_a("many.test", 300, 40));
    let sh = server(&up);
    let r = sh.udp(&Q::a("many.test"));
    assert!(
        r.tc(),
        "40 A records do not fit 512 bytes: TC expected: {}",
        r.dump()
    );
    assert!(
        r.raw.len() <= 512,
        "UDP answer without EDNS is {} bytes > 512",
        r.raw.len()
    );
    let r = sh.tcp(&Q::a("many.test"));
    assert!(!r.tc());
    assert_eq!(
        r.a_addrs().len(),
        40,
        "TCP gets the full answer: {}",
        r.dump()
    );
}

#[test]
fn udp_limit_follows_client_edns_size() {
    let up = FakeUpstream::start();
    up.on("many.test", Script::many_a("many.test", 300, 40)); // ~690 bytes
    let sh = server(&up);
    let r = sh.udp(&Q::a("many.test").edns(600));
    assert!(
        r.tc(),
        "answer > 600 bytes must be truncated for a 600-byte client: {}",
        r.dump()
    );
    assert!(
        r.raw.len() <= 600,
        "UDP answer {} bytes > client's 600",
        r.raw.len()
    );
    let r = sh.udp(&Q::a("many.test").edns(1232));
    assert!(!r.tc(), "fits in 1232: {}", r.dump());
    assert_eq!(r.a_addrs().len(), 40);
    assert!(r.raw.len() <= 1232);
}

#[test]
fn udp_limit_is_capped_at_1232_even_if_client_offers_more() {
    let up = FakeUpstream::start();
    up.on("bigtxt.test", Script::big_txt("bigtxt.test", 300, 2000));
    let sh = server(&up);
    let q = Q::new("bigtxt.test", RecordType::TXT);
    let r = sh.udp(&q.clone().edns(4096));
    assert!(
        r.tc(),
        "2 KB answer must be truncated at 1232: {}",
        r.dump()
    );
    assert!(
        r.raw.len() <= 1232,
        "UDP answer {} bytes > 1232",
        r.raw.len()
    );
    let r = sh.tcp(&q);
    assert!(!r.tc());
    let txt_len: usize = r
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::TXT(t) => Some(t.txt_data.iter().map(|s| s.len()).sum::<usize>()),
            _ => None,
        })
        .sum();
    assert!(
        txt_len >= 2000,
        "TCP gets the whole TXT ({txt_len} bytes): {}",
        r.dump()
    );
}

#[test]
fn cache_counts_ttl_down_and_sends_nothing_upstream() {
    let up = FakeUpstream::start();
    up.on("ttl.test", Script::a("ttl.test", 300, &[ip(9)]));
    let sh = server(&up);
    let first = sh.udp(&Q::a("ttl.test"));
    let t1 = first.answers()[0].ttl;
    std::thread::sleep(Duration::from_millis(1300));
    let second = sh.udp(&Q::a("ttl.test"));
    assert_eq!(second.a_addrs(), vec![ip(9)], "{}", second.dump());
    let t2 = second.answers()[0].ttl;
    assert!(
        t2 < t1,
        "cached TTL must count down: first {t1}, after 1.3 s {t2}"
    );
    assert!(t1 <= 300);
    assert_eq!(up.count(), 1, "a cache hit sends nothing upstream");
}

#[test]
fn cache_key_ignores_case_but_separates_qtype_do_and_cd() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    sh.udp(&Q::a("key.test"));
    sh.udp(&Q::a("KEY.Test"));
    assert_eq!(up.count(), 1, "case-insensitive key");
    sh.udp(&Q::new("key.test", RecordType::AAAA));
    assert_eq!(up.count(), 2, "qtype is part of the key");
    sh.udp(&Q::a("key.test").dnssec_ok());
    assert_eq!(up.count(), 3, "DO is part of the key");
    sh.udp(&Q::a("key.test").dnssec_ok());
    assert_eq!(up.count(), 3, "DO=1 answer is cached");
    sh.udp(&Q::a("key.test").cd(true));
    assert_eq!(up.count(), 4, "CD is part of the key");
    sh.udp(&Q::a("key.test").cd(true));
    sh.tcp(&Q::a("key.test"));
    assert_eq!(up.count(), 4, "cached regardless of client transport");
}

#[test]
fn negative_answers_are_cached() {
    let up = FakeUpstream::start();
    up.on("nx.test", Script::nxdomain("test", 300, 300));
    up.on("nodata.test", Script::nodata("test", 300, 300));
    let sh = server(&up);
    for _ in 0..3 {
        let r = sh.udp(&Q::a("nx.test"));
        assert_eq!(r.rcode(), ResponseCode::NXDomain, "{}", r.dump());
        assert_eq!(r.soas().len(), 1, "{}", r.dump());
        let r = sh.udp(&Q::a("nodata.test"));
        assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
        assert!(r.answers().is_empty());
        assert_eq!(r.soas().len(), 1, "{}", r.dump());
    }
    assert_eq!(up.count_for("nx.test"), 1, "NXDOMAIN cached");
    assert_eq!(up.count_for("nodata.test"), 1, "NODATA cached");
}

#[test]
fn negative_cache_lasts_min_of_soa_ttl_and_minimum_and_positive_cache_its_ttl() {
    let up = FakeUpstream::start();
    up.on("short-ttl.test", Script::nxdomain("test", 2, 300));
    up.on("short-min.test", Script::nxdomain("test", 300, 2));
    up.on("short-a.test", Script::a("short-a.test", 2, &[ip(10)]));
    let sh = server(&up);
    let names = ["short-ttl.test", "short-min.test", "short-a.test"];
    for name in names {
        sh.udp(&Q::a(name));
        sh.udp(&Q::a(name));
        assert_eq!(
            up.count_for(name),
            1,
            "{name}: an immediate repeat is a cache hit"
        );
    }
    std::thread::sleep(Duration::from_millis(3200));
    for name in names {
        sh.udp(&Q::a(name));
        assert_eq!(
            up.count_for(name),
            2,
            "{name}: expired after 2 s, so asked again"
        );
    }
}

#[test]
fn cached_negative_answer_carries_the_negative_ttl() {
    let up = FakeUpstream::start();
    up.on("short-ttl.test", Script::nxdomain("test", 2, 300));
    up.on("short-min.test", Script::nxdomain("test", 300, 2));
    let sh = server(&up);
    for name in ["short-ttl.test", "short-min.test"] {
        sh.udp(&Q::a(name));
        let r = sh.udp(&Q::a(name));
        assert_eq!(
            up.count_for(name),
            1,
            "{name}: an immediate repeat is a cache hit"
        );
        let soas = r.soas();
        assert_eq!(soas.len(), 1, "{}", r.dump());
        // a client must not keep the negative answer longer than we do
        assert!(
            soas[0].1 <= 2,
            "{name}: cached SOA TTL {} exceeds the negative TTL min(SOA TTL, MINIMUM) = 2 (RFC 2308 §5)",
            soas[0].1
        );
    }
}

#[test]
fn cache_size_zero_disables_caching() {
    let up = FakeUpstream::start();
    let sh = Setup::new().upstream(up.addr()).cache_size(0).serve();
    for _ in 0..3 {
        assert_eq!(sh.udp(&Q::a("nocache.test")).a_addrs(), vec![ip(1)]);
    }
    assert_eq!(up.count(), 3, "cache.size 0: every query goes upstream");
}

#[test]
fn failover_when_first_upstream_never_answers() {
    let dead = FakeUpstream::silent();
    let good = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(dead.addr())
        .upstream(good.addr())
        .serve();
    let r = dns::udp_raw(sh.dns, &Q::a("fo.test").bytes(), Duration::from_secs(10))
        .map(Reply::from_bytes)
        .expect("an answer despite the dead first upstream");
    assert_eq!(r.a_addrs(), vec![ip(1)], "{}", r.dump());
    assert!(dead.count() >= 1, "first upstream is tried first");
    assert_eq!(good.count(), 1);
}

#[test]
fn failover_when_first_upstream_port_is_closed() {
    let closed = common::ports::free_addr();
    let good = FakeUpstream::start();
    let sh = Setup::new().upstream(closed).upstream(good.addr()).serve();
    let r = dns::udp_raw(sh.dns, &Q::a("fo.test").bytes(), Duration::from_secs(10))
        .map(Reply::from_bytes)
        .expect("an answer despite the closed first upstream");
    assert_eq!(r.a_addrs(), vec![ip(1)], "{}", r.dump());
    assert_eq!(good.count(), 1);
}

#[test]
fn failover_when_first_upstream_says_servfail() {
    let bad = FakeUpstream::start();
    bad.set_default(Script::servfail());
    let good = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(bad.addr())
        .upstream(good.addr())
        .serve();
    let r = sh.udp(&Q::a("fo.test"));
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
    assert_eq!(r.a_addrs(), vec![ip(1)]);
    assert_eq!(bad.count(), 1, "SERVFAIL server asked first");
    assert_eq!(good.count(), 1);
}

#[test]
fn servfail_when_every_upstream_fails() {
    let dead1 = FakeUpstream::silent();
    let dead2 = FakeUpstream::silent();
    let sick = FakeUpstream::start();
    sick.set_default(Script::servfail());
    let sh = Setup::new()
        .upstream(dead1.addr())
        .upstream(sick.addr())
        .upstream(dead2.addr())
        .serve();
    for (i, transport) in ["udp", "tcp"].into_iter().enumerate() {
        let q = Q::a(&format!("dead{i}.test")).id(0x5a5a + i as u16);
        let r = if transport == "udp" {
            dns::udp_raw(sh.dns, &q.bytes(), Duration::from_secs(10))
                .map(Reply::from_bytes)
                .expect("SERVFAIL, not silence, when all upstreams fail")
        } else {
            sh.tcp(&q)
        };
        assert_eq!(
            r.rcode(),
            ResponseCode::ServFail,
            "{transport}: {}",
            r.dump()
        );
        assert_eq!(r.id(), q.id);
        assert_eq!(r.question_bytes(), question_bytes(&q.bytes()));
    }
    assert!(
        dead1.count() >= 1 && sick.count() >= 1 && dead2.count() >= 1,
        "every upstream tried"
    );
}

#[test]
fn clients_asking_the_same_question_at_once_share_one_upstream_query() {
    // The upstream takes 300 ms: 40 clients (each its own socket, mixed
    // case, over UDP and TCP) ask for the same name meanwhile. Each worker
    // sends the question once and every client gets the answer under its
    // own ID and question.
    let up = FakeUpstream::start();
    up.on(
        "shared.example.org",
        Script::a("shared.example.org", 300, &[ip(42)]).delayed(Duration::from_millis(300)),
    );
    // The fake upstream answers one query at a time: without sharing, the
    // copies would queue there and most would time out (no stale answers
    // to fall back on).
    let sh = Setup::new()
        .upstream(up.addr())
        .timeout("3s")
        .serve_stale("0")
        .serve();
    let names = [
        "shared.example.org",
        "SHARED.example.org",
        "Shared.Example.Org",
    ];
    let clients: Vec<_> = (0..40u16)
        .map(|i| {
            let server = sh.dns;
            let name = names[usize::from(i) % names.len()];
            std::thread::spawn(move || {
                let q = Q::a(name).id(1000 + i);
                let r = if i % 4 == 0 {
                    q.tcp(server)
                } else {
                    q.udp(server)
                };
                (i, name, r)
            })
        })
        .collect();
    for c in clients {
        let (i, name, r) = c.join().unwrap();
        assert_eq!(r.id(), 1000 + i);
        assert_eq!(r.a_addrs(), vec![ip(42)], "{}", r.dump());
        assert_eq!(
            r.question_bytes(),
            question_bytes(&Q::a(name).bytes()),
            "the client's own question, in its own case"
        );
    }
    let asked = up.count_for("shared.example.org");
    assert!(
        (1..=2).contains(&asked),
        "40 clients cost {asked} upstream queries (one per worker at most)"
    );
}
