//! TCP under pressure: `limits.tcp_connections` caps open connections (past
//! it new ones are closed at once), idle and half-sent connections are
//! closed after `limits.tcp_idle`, and clients are still answered while
//! hundreds of connections sit idle.

mod common;

use common::dns::{self, Q, Reply};
use common::{FakeUpstream, Setup};
use hickory_proto::op::ResponseCode;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn past_the_cap_new_connections_are_closed_and_others_are_answered() {
    let up = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(up.addr())
        .list("ads", None, "ads.test\n")
        .yaml("limits:\n  tcp_connections: 50\n  tcp_idle: 60s\n")
        .serve();
    let mut conns: Vec<TcpStream> = (0..80).map(|_| dns::tcp_connect(sh.dns)).collect();
    // UDP is untouched.
    assert_eq!(
        Q::a("u.ads.test").udp(sh.dns).rcode(),
        ResponseCode::NXDomain
    );
    let mut shut = 0;
    for c in &mut conns {
        if dns::closed_within(c, Duration::from_millis(100)) {
            shut += 1;
        }
    }
    assert_eq!(shut, 30, "80 connections against a cap of 50");
    // Freed slots are taken again.
    drop(conns);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = dns::tcp_connect(sh.dns);
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        dns::tcp_send(&mut s, &Q::a("t.ads.test").bytes());
        if let Some(raw) = dns::tcp_recv(&mut s) {
            assert_eq!(Reply::from_bytes(raw).rcode(), ResponseCode::NXDomain);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slots never freed");
    }
}

#[test]
fn a_half_sent_message_is_closed_after_the_idle_timeout() {
    let up = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(up.addr())
        .list("ads", None, "ads.test\n")
        .yaml("limits:\n  tcp_idle: 1s\n")
        .serve();
    let mut half = dns::tcp_connect(sh.dns);
    half.write_all(&[0x00]).unwrap(); // one byte of the length prefix
    let mut body = dns::tcp_connect(sh.dns);
    body.write_all(&[0x00, 0x40, 0x12]).unwrap(); // 64 bytes promised, 1 sent
    let mut silent = dns::tcp_connect(sh.dns);
    for (what, s) in [
        ("half a prefix", &mut half),
        ("half a message", &mut body),
        ("nothing", &mut silent),
    ] {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut b = [0u8; 16];
        match s.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("{what}: expected the server to close, got {other:?}"),
        }
    }
}

#[test]
fn five_hundred_idle_connections_do_not_stop_a_new_client() {
    let up = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(up.addr())
        .list("ads", None, "ads.test\n")
        .serve();
    let idle: Vec<TcpStream> = (0..500).map(|_| dns::tcp_connect(sh.dns)).collect();
    let r = Q::a("new.ads.test").tcp(sh.dns);
    assert_eq!(r.rcode(), ResponseCode::NXDomain, "{}", r.dump());
    let r = Q::a("fwd.trust.test").tcp(sh.dns);
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
    assert_eq!(
        Q::a("udp.ads.test").udp(sh.dns).rcode(),
        ResponseCode::NXDomain
    );
    drop(idle);
}

#[test]
fn a_client_that_never_reads_its_answers_is_closed() {
    // Queries for a blocked name, written as fast as the server takes them,
    // answers never read: once the socket buffers are full the server
    // cannot write, and after the idle timeout it closes the connection
    // rather than hold it (and the answers queued) for ever.
    let up = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(up.addr())
        .list("ads", None, "ads.test\n")
        .yaml("limits:\n  tcp_idle: 1s\n")
        .serve();
    let mut s = dns::tcp_connect(sh.dns);
    s.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let query = Q::a("x.ads.test").bytes();
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    let batch: Vec<u8> = framed.repeat(256);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let closed_by_server = loop {
        match s.write_all(&batch) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => break e,
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a client that never reads was kept open for a minute"
        );
    };
    assert!(
        matches!(
            closed_by_server.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ),
        "{closed_by_server}"
    );
    // And the server still answers.
    assert_eq!(
        Q::a("y.ads.test").tcp(sh.dns).rcode(),
        ResponseCode::NXDomain
    );
}
