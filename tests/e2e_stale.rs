//! Serve-stale (RFC 8767, `cache.serve_stale`): with every upstream
//! failing, a name whose answer expired less than the window ago is
//! answered from it with TTL 30 and EDE 3; without the window, SERVFAIL
//! with EDE 22 as before.

mod common;

use common::dns::Q;
use common::upstream::Script;
use common::{FakeUpstream, Setup};
use hickory_proto::op::ResponseCode;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const EDE_STALE: u16 = 3;
const EDE_NO_REACHABLE_AUTHORITY: u16 = 22;

#[test]
fn an_expired_answer_is_served_stale_when_no_upstream_answers() {
    let up = FakeUpstream::start();
    let ip = Ipv4Addr::new(192, 0, 2, 44);
    up.on("ehr.trust.test", Script::a("ehr.trust.test", 1, &[ip]));
    let sh = Setup::new()
        .upstream(up.addr())
        .timeout("300ms")
        .list("ads", None, "ads.test\n")
        .serve();
    let first = Q::a("ehr.trust.test").edns(1232).udp(sh.dns);
    assert_eq!(first.a_addrs(), vec![ip]);
    // The upstream dies.
    up.on("ehr.trust.test", Script::silent());
    // Until the 1 s TTL runs out the cache answers; then the stale answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = Q::a("ehr.trust.test").edns(1232).udp(sh.dns);
        if r.ede().iter().any(|(c, _)| *c == EDE_STALE) {
            break r;
        }
        assert_eq!(
            r.a_addrs(),
            vec![ip],
            "before expiry, from the cache: {}",
            r.dump()
        );
        assert!(
            Instant::now() < deadline,
            "never served stale: {}",
            r.dump()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
    assert_eq!(r.a_addrs(), vec![ip]);
    assert!(
        r.answers().iter().all(|rec| rec.ttl == 30),
        "stale answers carry TTL 30: {}",
        r.dump()
    );
    assert!(
        up.count_for("ehr.trust.test") >= 2,
        "the upstream was asked again first"
    );
    assert!(sh.metric("sinkhole_cache_lookups_total", &[("result", "stale")]) >= 1.0);
    // A name never answered has nothing stale: SERVFAIL as before.
    up.on("never.trust.test", Script::silent());
    let r = Q::a("never.trust.test").edns(1232).udp(sh.dns);
    assert_eq!(r.rcode(), ResponseCode::ServFail);
    assert!(
        r.ede()
            .iter()
            .any(|(c, _)| *c == EDE_NO_REACHABLE_AUTHORITY)
    );
}

#[test]
fn serve_stale_zero_turns_it_off() {
    let up = FakeUpstream::start();
    let ip = Ipv4Addr::new(192, 0, 2, 45);
    up.on("pacs.trust.test", Script::a("pacs.trust.test", 1, &[ip]));
    let sh = Setup::new()
        .upstream(up.addr())
        .timeout("300ms")
        .list("ads", None, "ads.test\n")
        .serve_stale("0")
        .serve();
    assert_eq!(Q::a("pacs.trust.test").udp(sh.dns).a_addrs(), vec![ip]);
    up.on("pacs.trust.test", Script::silent());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = Q::a("pacs.trust.test").edns(1232).udp(sh.dns);
        if r.rcode() == ResponseCode::ServFail {
            assert!(
                r.ede()
                    .iter()
                    .any(|(c, _)| *c == EDE_NO_REACHABLE_AUTHORITY)
            );
            assert!(!r.ede().iter().any(|(c, _)| *c == EDE_STALE));
            break;
        }
        assert_eq!(r.a_addrs(), vec![ip], "{}", r.dump());
        assert!(Instant::now() < deadline, "never expired: {}", r.dump());
        std::thread::sleep(Duration::from_millis(100));
    }
}
