//! The kernel's drops at the DNS socket are counted
//! (`sinkhole_udp_drops_total`), and the server answers on after a burst
//! that overflowed its receive buffer.

mod common;

use common::dns::{self, Q, Reply};
use common::{FakeUpstream, Setup};
use hickory_proto::op::ResponseCode;
use std::net::UdpSocket;

#[test]
fn drops_at_a_full_receive_buffer_are_counted() {
    let up = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(up.addr())
        .list("ads", None, "ads.test\n")
        .serve();
    assert_eq!(sh.metric("sinkhole_udp_drops_total", &[]), 0.0);
    // Stopped, the server reads nothing: the socket's buffer (4 MiB, some
    // 4,000 datagrams of kernel bookkeeping) fills and the rest is dropped.
    let pid = sh.pid() as libc::pid_t;
    // SAFETY: signals to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let query = Q::a("x.ads.test").bytes();
    for _ in 0..30_000 {
        let _ = sender.send_to(&query, sh.dns);
    }
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    // Right after SIGCONT the buffer may still be full: ask until answered.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let r = loop {
        let q = Q::a("after.ads.test").bytes();
        if let Some(raw) = dns::udp_raw(sh.dns, &q, std::time::Duration::from_millis(200)) {
            break Reply::from_bytes(raw);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no answer after SIGCONT"
        );
    };
    assert_eq!(
        r.rcode(),
        ResponseCode::NXDomain,
        "answers on: {}",
        r.dump()
    );
    let drops = sh.metric("sinkhole_udp_drops_total", &[]);
    assert!(
        drops > 0.0,
        "30,000 datagrams into a stopped server dropped none?"
    );
    assert!(drops < 30_000.0, "{drops}: the buffer held some");
    // Counted once: a second scrape adds nothing new.
    assert_eq!(sh.metric("sinkhole_udp_drops_total", &[]), drops);
}
