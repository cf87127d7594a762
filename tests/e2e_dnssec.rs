//! DNSSEC verdicts through sinkhole, against a real validating Unbound with
//! zones signed by ldns: AD reaches exactly the clients that ask for it
//! (AD or DO set, RFC 6840 §5.7), in whatever order clients ask, fresh or
//! cached; a bogus answer's SERVFAIL reaches the client with Unbound's own
//! Extended DNS Error. Each answer is held against what Unbound itself says
//! to the same query.

mod common;

use common::dns::{self, Q, Reply};
use common::http;
use common::unbound::{EXPIRED_ZONE, SIGNED_ZONE, Unbound};
use common::{Setup, Sinkhole};
use hickory_proto::op::ResponseCode;

fn server(ub: &Unbound) -> Sinkhole {
    Setup::new().upstream(ub.addr).serve()
}

fn cached(sh: &Sinkhole) -> f64 {
    let m = http::get(sh.admin, "/metrics").body;
    http::metric(&m, "sinkhole_queries_total", &[("outcome", "cached")])
}

/// Asks sinkhole and Unbound the same query; both must agree on AD.
fn ad_of(sh: &Sinkhole, ub: &Unbound, q: &Q) -> bool {
    let ours = sh.udp(q);
    let theirs = dns::udp(ub.addr, &q.bytes());
    assert_eq!(ours.rcode(), ResponseCode::NoError, "{}", ours.dump());
    assert_eq!(
        ours.ad(),
        theirs.ad(),
        "AD differs from Unbound's for {q:?}:\nsinkhole {}\nunbound {}",
        ours.dump(),
        theirs.dump()
    );
    ours.ad()
}

#[test]
fn ad_reaches_the_clients_that_ask_in_either_order() {
    let Some(ub) = Unbound::start_validating_or_skip() else {
        return;
    };
    let sh = server(&ub);
    let www = format!("www.{SIGNED_ZONE}");
    let ns = format!("ns.{SIGNED_ZONE}");

    // AD=0 first (answered and cached without AD), then AD=1 from the cache.
    assert!(!ad_of(&sh, &ub, &Q::a(&www)));
    let before = cached(&sh);
    assert!(ad_of(&sh, &ub, &Q::a(&www).ad(true)));
    assert!(ad_of(&sh, &ub, &Q::a(&www).edns(1232).dnssec_ok()));
    assert!(!ad_of(&sh, &ub, &Q::a(&www).edns(1232)));
    assert_eq!(cached(&sh) - before, 2.0, "AD=1 and plain EDNS from cache");

    // AD=1 first, then AD=0 from the cache.
    assert!(ad_of(&sh, &ub, &Q::a(&ns).ad(true)));
    let before = cached(&sh);
    assert!(!ad_of(&sh, &ub, &Q::a(&ns)));
    assert!(ad_of(&sh, &ub, &Q::a(&ns).ad(true)));
    assert_eq!(cached(&sh) - before, 2.0, "both from cache");
}

#[test]
fn a_bogus_answer_keeps_unbound_s_extended_error() {
    let Some(ub) = Unbound::start_validating_or_skip() else {
        return;
    };
    let sh = server(&ub);
    let q = Q::a(&format!("www.{EXPIRED_ZONE}")).edns(1232);
    let theirs = dns::udp(ub.addr, &q.bytes());
    assert_eq!(theirs.rcode(), ResponseCode::ServFail, "{}", theirs.dump());
    let theirs_ede = theirs.ede();
    assert!(
        !theirs_ede.is_empty(),
        "Unbound gives an EDE: {}",
        theirs.dump()
    );
    let ours: Reply = sh.udp(&q);
    assert_eq!(ours.rcode(), ResponseCode::ServFail, "{}", ours.dump());
    assert_eq!(
        ours.ede().iter().map(|e| e.0).collect::<Vec<_>>(),
        theirs_ede.iter().map(|e| e.0).collect::<Vec<_>>(),
        "the client learns Unbound's reason, not EDE 22: {}",
        ours.dump()
    );
}
