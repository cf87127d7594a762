//! A failing upstream is marked down, skipped (the healthy one takes the
//! load at once), probed in the background, and used again once it
//! answers.

mod common;

use common::dns::Q;
use common::upstream::Script;
use common::{FakeUpstream, Setup};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

#[test]
fn a_silent_upstream_is_skipped_then_taken_back_when_it_answers() {
    let first = FakeUpstream::start();
    let second = FakeUpstream::start();
    first.set_default(Script::silent());
    let sh = Setup::new()
        .upstream(first.addr())
        .upstream(second.addr())
        .timeout("300ms")
        .list("ads", None, "ads.test\n")
        .serve();

    // The first query waits out the first server, then the second answers.
    let r = Q::a("one.trust.test").udp(sh.dns);
    assert_eq!(
        r.a_addrs(),
        vec![Ipv4Addr::new(192, 0, 2, 1)],
        "{}",
        r.dump()
    );
    assert_eq!(first.count_for("one.trust.test"), 1);
    assert_eq!(
        sh.metric(
            "sinkhole_upstream_up",
            &[("upstream", &first.addr().to_string())]
        ),
        0.0
    );

    // Marked down: the next queries go straight to the second server.
    for name in ["two.trust.test", "three.trust.test"] {
        let r = Q::a(name).udp(sh.dns);
        assert_eq!(r.a_addrs(), vec![Ipv4Addr::new(192, 0, 2, 1)]);
        assert_eq!(
            first.count_for(name),
            0,
            "{name}: the down server was asked"
        );
        assert_eq!(second.count_for(name), 1, "{name}");
    }
    assert!(sh.logs().contains("upstream_down"), "logged: {}", sh.logs());

    // It recovers; the background probe (. NS) notices within seconds and
    // queries go to it again, in order.
    first.set_default(Script::a("x", 300, &[Ipv4Addr::new(192, 0, 2, 9)]));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 0;
    loop {
        let name = format!("back{i}.trust.test");
        let _ = Q::a(&name).udp(sh.dns);
        if first.count_for(&name) == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first server was never used again"
        );
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        first
            .seen()
            .iter()
            .any(|s| s.qname() == "." || s.qname().is_empty()),
        "probed with . NS: {:?}",
        first.seen().iter().map(|s| s.qname()).collect::<Vec<_>>()
    );
    assert!(sh.logs().contains("upstream_up"));
}
