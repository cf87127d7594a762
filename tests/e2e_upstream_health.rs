//! A failing upstream is marked down, skipped (the healthy one takes the
//! load at once), probed in the background, and used again once it
//! answers.

mod common;

use common::dns::Q;
use common::upstream::Script;
use common::{FakeUpstream, Setup};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// `sinkhole_upstream_up` for `up`.
fn up_gauge(sh: &common::Sinkhole, up: &FakeUpstream) -> f64 {
    sh.metric(
        "sinkhole_upstream_up",
        &[("upstream", &up.addr().to_string())],
    )
}

/// Asks fresh names (`<prefix><i>.trust.test`) until one reaches `first`
/// again: its probe has been answered and it is back in service.
fn until_first_is_asked_again(sh: &common::Sinkhole, first: &FakeUpstream, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    for i in 0.. {
        let name = format!("{prefix}{i}.trust.test");
        let _ = Q::a(&name).udp(sh.dns);
        if first.count_for(&name) == 1 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the first server was never used again:\n{}",
            sh.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

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

    // The first query waits out the first server, then the second
    // answers; the failure marks the first down (SPEC: skipped until it
    // answers).
    let r = Q::a("one.trust.test").udp(sh.dns);
    assert_eq!(
        r.a_addrs(),
        vec![Ipv4Addr::new(192, 0, 2, 1)],
        "{}",
        r.dump()
    );
    assert_eq!(first.count_for("one.trust.test"), 1);
    assert_eq!(up_gauge(&sh, &first), 0.0);

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

    // It recovers; the background probe notices within seconds and
    // queries go to it again, in order.
    first.set_default(Script::a("x", 300, &[Ipv4Addr::new(192, 0, 2, 9)]));
    until_first_is_asked_again(&sh, &first, "back");
    assert!(
        first.seen().iter().any(|s| s
            .qname()
            .trim_end_matches('.')
            .ends_with(".sinkhole-loop-check")),
        "probed with the loop probe: {:?}",
        first.seen().iter().map(|s| s.qname()).collect::<Vec<_>>()
    );
    assert!(sh.logs().contains("upstream_up"));
    assert_eq!(up_gauge(&sh, &first), 1.0);
}

/// REFUSED with the question left out, as NSD answers a class it does not
/// serve.
fn bare_refused(msg: &mut Vec<u8>) {
    msg.truncate(12);
    msg[3] = (msg[3] & 0xF0) | 5;
    msg[4..12].fill(0);
}

#[test]
fn an_error_answer_without_the_question_moves_on_at_once_and_keeps_the_server_up() {
    let first = FakeUpstream::start();
    let second = FakeUpstream::start();
    first.set_default(Script::a("x", 300, &[Ipv4Addr::new(192, 0, 2, 7)]).mangled(bare_refused));
    let sh = Setup::new()
        .upstream(first.addr())
        .upstream(second.addr())
        .timeout("1s")
        .list("ads", None, "ads.test\n")
        .serve();
    // More queries than it takes to mark a failing server down: each is
    // asked at the first server (alive, just no use for these), then the
    // second answers.
    for i in 0..6 {
        let name = format!("odd{i}.trust.test");
        let r = Q::a(&name).udp(sh.dns);
        assert_eq!(
            r.a_addrs(),
            vec![Ipv4Addr::new(192, 0, 2, 1)],
            "{}",
            r.dump()
        );
        assert_eq!(
            first.count_for(&name),
            1,
            "{name}: the first server was skipped"
        );
    }
    assert!(!sh.logs().contains("upstream_down"), "{}", sh.logs());
    assert_eq!(sh.metric("sinkhole_upstream_mismatched_total", &[]), 0.0);
}

#[test]
fn a_server_slow_on_one_name_is_out_only_until_its_probe_is_answered() {
    // One name the first server never answers (its authority is down,
    // say): the server is marked down by that failure, like a dead one,
    // but it answers the probe, so it is back within seconds and takes
    // its queries again.
    let first = FakeUpstream::start();
    let second = FakeUpstream::start();
    first.set_default(Script::a("x", 300, &[Ipv4Addr::new(192, 0, 2, 8)]));
    first.on("slow.trust.test", Script::silent());
    let sh = Setup::new()
        .upstream(first.addr())
        .upstream(second.addr())
        .timeout("300ms")
        .list("ads", None, "ads.test\n")
        .serve();
    let r = Q::a("slow.trust.test").udp(sh.dns);
    assert_eq!(
        r.a_addrs(),
        vec![Ipv4Addr::new(192, 0, 2, 1)],
        "{}",
        r.dump()
    );
    assert!(sh.logs().contains("upstream_down"), "{}", sh.logs());
    until_first_is_asked_again(&sh, &first, "fine");
    let r = Q::a("fine-again.trust.test").udp(sh.dns);
    assert_eq!(
        r.a_addrs(),
        vec![Ipv4Addr::new(192, 0, 2, 8)],
        "{}",
        r.dump()
    );
    assert!(sh.logs().contains("upstream_up"), "{}", sh.logs());
    assert_eq!(up_gauge(&sh, &first), 1.0);
}

#[test]
fn a_healthy_upstream_is_never_probed() {
    // Probes go only to servers that failed, are down or loop: one that
    // answers sees nothing but its clients' queries (counts stay exact).
    let up = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(up.addr())
        .list("ads", None, "ads.test\n")
        .serve();
    for i in 0..5 {
        let r = Q::a(&format!("h{i}.trust.test")).udp(sh.dns);
        assert_eq!(r.a_addrs(), vec![Ipv4Addr::new(192, 0, 2, 1)]);
    }
    let names: Vec<String> = up.seen().iter().map(|s| s.qname()).collect();
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(
        names.iter().all(|n| !n.contains("sinkhole-loop-check")),
        "{names:?}"
    );
}
