//! Access control (`access.allow`, `access.refused`) against the real
//! binary. Distinct clients are real addresses: all of 127.0.0.0/8 is
//! loopback, so a test client binds 127.0.0.2 or 127.0.0.3 and the server
//! sees that address.

mod common;

use common::dns::{self, Q, Reply};
use common::{FakeUpstream, Setup, Sinkhole, cli, http};
use hickory_proto::op::ResponseCode;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const EDE_PROHIBITED: u16 = 18;

/// A UDP socket bound to `from`, connected to the server.
fn udp_from(from: &str, server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind((from, 0)).expect("bind a loopback client address");
    s.set_read_timeout(Some(dns::TIMEOUT)).unwrap();
    s.connect(server).unwrap();
    s
}

/// A TCP connection from `from` (bound before connecting).
fn tcp_from(from: &str, server: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = (from.parse::<IpAddr>().unwrap(), 0).into();
    sock.bind(&local.into()).unwrap();
    sock.connect(&server.into()).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(dns::TIMEOUT)).unwrap();
    s
}

fn server(up: &FakeUpstream, access: &str) -> Sinkhole {
    Setup::new()
        .upstream(up.addr())
        .list("ads", None, "ads.test\n")
        .yaml(access)
        .serve()
}

fn refused_count(sh: &Sinkhole) -> f64 {
    sh.metric("sinkhole_queries_total", &[("outcome", "refused")])
}

/// Waits until the server has counted `n` refused queries.
fn wait_refused(sh: &Sinkhole, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while refused_count(sh) < n {
        assert!(
            Instant::now() < deadline,
            "the server counted {} refused queries, expected {n}",
            refused_count(sh)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_client_outside_the_allow_list_is_refused_with_ede_18_over_udp_and_tcp() {
    let up = FakeUpstream::start();
    let sh = server(&up, "access:\n  allow: [\"127.0.0.1/32\"]\n");

    // Allowed: answered as usual.
    let ok = udp_from("127.0.0.1", sh.dns);
    ok.send(&Q::a("x.ads.test").bytes()).unwrap();
    let r = Reply::from_bytes(dns::recv(&ok).expect("an answer for 127.0.0.1"));
    assert_eq!(r.rcode(), ResponseCode::NXDomain, "{}", r.dump());

    // Refused over UDP, for a blocked name and a forwarded one alike: the
    // refused client learns nothing about the policy.
    let other = udp_from("127.0.0.2", sh.dns);
    for name in ["x.ads.test", "fwd.test"] {
        let q = Q::a(name).edns(1232);
        other.send(&q.bytes()).unwrap();
        let r = Reply::from_bytes(dns::recv(&other).expect("REFUSED for 127.0.0.2"));
        assert_eq!(r.rcode(), ResponseCode::Refused, "{name}: {}", r.dump());
        assert_eq!(r.id(), q.id);
        assert_eq!(
            r.question_bytes(),
            dns::question_bytes(&q.bytes()),
            "question echoed"
        );
        assert!(
            r.ede().iter().any(|(code, _)| *code == EDE_PROHIBITED),
            "EDE 18 expected: {}",
            r.dump()
        );
        assert!(r.answers().is_empty());
    }

    // And over TCP.
    let mut t = tcp_from("127.0.0.2", sh.dns);
    dns::tcp_send(&mut t, &Q::a("fwd.test").edns(1232).bytes());
    let r = Reply::from_bytes(dns::tcp_recv(&mut t).expect("REFUSED over TCP"));
    assert_eq!(r.rcode(), ResponseCode::Refused, "{}", r.dump());
    assert!(r.ede().iter().any(|(code, _)| *code == EDE_PROHIBITED));

    wait_refused(&sh, 3.0);
    // The upstream never heard of the refused client's names.
    assert!(
        up.count_for("fwd.test") == 0,
        "a refused query must not be forwarded"
    );
}

#[test]
fn drop_answers_nothing_and_counts_it() {
    let up = FakeUpstream::start();
    let sh = server(&up, "access:\n  allow: [\"127.0.0.1\"]\n  refused: drop\n");
    let dropped = udp_from("127.0.0.3", sh.dns);
    dropped.send(&Q::a("x.ads.test").bytes()).unwrap();
    // Garbage from a refused client gets nothing either (no FORMERR).
    dropped.send(b"\x00\x01garbage").unwrap();
    wait_refused(&sh, 2.0);
    // The server has handled both; an allowed client is still answered...
    let ok = udp_from("127.0.0.1", sh.dns);
    ok.send(&Q::a("x.ads.test").bytes()).unwrap();
    assert!(dns::recv(&ok).is_some());
    // ...and nothing was sent to the refused one.
    dropped.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    match dropped.recv(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a dropped client got something: {other:?}"),
    }

    // A dropped TCP client gets its connection and no answer.
    let mut t = tcp_from("127.0.0.3", sh.dns);
    dns::tcp_send(&mut t, &Q::a("fwd.test").bytes());
    wait_refused(&sh, 3.0);
    t.set_nonblocking(true).unwrap();
    let mut one = [0u8; 1];
    match t.read(&mut one) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok(0) => {} // closed: also nothing
        other => panic!("a dropped TCP client got something: {other:?}"),
    }
    let _ = t.write_all(b"");
}

#[test]
fn the_default_admits_loopback() {
    let up = FakeUpstream::start();
    let sh = server(&up, "");
    for from in ["127.0.0.1", "127.0.0.2"] {
        let s = udp_from(from, sh.dns);
        s.send(&Q::a("x.ads.test").bytes()).unwrap();
        let r = Reply::from_bytes(dns::recv(&s).expect("an answer"));
        assert_eq!(r.rcode(), ResponseCode::NXDomain, "{from}: {}", r.dump());
    }
    assert_eq!(refused_count(&sh), 0.0);
}

#[test]
fn explain_says_whether_a_client_would_be_refused() {
    let up = FakeUpstream::start();
    let setup = Setup::new()
        .upstream(up.addr())
        .list("ads", None, "ads.test\n")
        .yaml("access:\n  allow: [\"10.0.0.0/8\", \"127.0.0.1\"]\n");
    let cfg = setup.write_config();
    for (client, want) in [("10.2.3.4", "allow"), ("203.0.113.9", "refuse")] {
        let out = cli::explain(&cfg, "x.ads.test", &["--client", client, "--json"]);
        out.assert_no_panic();
        assert_eq!(out.code, Some(0), "{}", out.show());
        let v = out.json();
        assert_eq!(v["access"], want, "{client}: {v}");
        assert_eq!(
            v["verdict"], "block",
            "the policy's decision is still shown"
        );
    }
    let text = cli::explain(&cfg, "x.ads.test", &["--client", "203.0.113.9"]);
    assert!(
        text.stdout.contains("REFUSED with EDE 18"),
        "{}",
        text.show()
    );
    let without = cli::explain(&cfg, "x.ads.test", &["--json"]).json();
    assert!(without.get("access").is_none(), "{without}");

    let sh = setup.serve();
    let v = http::get(sh.admin, "/explain?name=x.ads.test&client=203.0.113.9").json();
    assert_eq!(v["access"], "refuse", "{v}");
    let v = http::get(sh.admin, "/explain?name=x.ads.test&client=127.0.0.1").json();
    assert_eq!(v["access"], "allow", "{v}");
}

#[test]
fn a_bad_network_is_a_located_config_error() {
    for (value, says) in [
        ("10.1.2.3/8", "the network is 10.0.0.0/8"),
        ("10.0.0.0/40", "longer than the address"),
        ("intranet", "expected an address or ADDRESS/PREFIX"),
    ] {
        let setup = Setup::new()
            .list("ads", None, "ads.test\n")
            .yaml(&format!("access:\n  allow: [\"127.0.0.1\", \"{value}\"]\n"));
        let cfg = setup.write_config();
        let out = cli::check(&cfg);
        out.assert_no_panic();
        assert_eq!(out.code, Some(1), "{value}: {}", out.show());
        let text = out.all();
        assert!(text.contains(says), "{value}: {text}");
        let located = format!("{}:", cfg.display());
        assert!(
            text.lines()
                .any(|l| l.contains(&located) && l.contains(value)),
            "{value}: the error names FILE:LINE:COL: {text}"
        );
    }
    let setup = Setup::new()
        .list("ads", None, "ads.test\n")
        .yaml("access:\n  refused: ignore\n");
    let out = cli::check(&setup.write_config());
    assert_eq!(out.code, Some(1), "{}", out.show());
    assert!(
        out.all().contains("expected refuse or drop"),
        "{}",
        out.show()
    );
}

#[test]
fn a_rate_limited_client_does_not_slow_its_neighbour() {
    let up = FakeUpstream::start();
    let sh = server(
        &up,
        "limits:\n  client_qps: 5\n  client_burst: 5\n  over_limit: refuse\n",
    );
    let noisy = udp_from("127.0.0.2", sh.dns);
    let (mut answered, mut limited) = (0, 0);
    for i in 0..50 {
        noisy
            .send(&Q::a(&format!("n{i}.ads.test")).edns(1232).bytes())
            .unwrap();
        let r = Reply::from_bytes(dns::recv(&noisy).expect("refuse mode answers"));
        match r.rcode() {
            ResponseCode::NXDomain => answered += 1,
            ResponseCode::Refused => {
                assert!(
                    r.ede()
                        .iter()
                        .any(|(c, t)| *c == EDE_PROHIBITED && t.contains("rate")),
                    "{}",
                    r.dump()
                );
                limited += 1;
            }
            other => panic!("{other:?}: {}", r.dump()),
        }
    }
    assert!(
        (5..=10).contains(&answered),
        "the burst of 5 (and what refilled): {answered}"
    );
    assert_eq!(answered + limited, 50);
    // The neighbour, on its own bucket, is answered in full.
    let quiet = udp_from("127.0.0.3", sh.dns);
    for i in 0..5 {
        quiet
            .send(&Q::a(&format!("q{i}.ads.test")).bytes())
            .unwrap();
        let r = Reply::from_bytes(dns::recv(&quiet).expect("an answer"));
        assert_eq!(r.rcode(), ResponseCode::NXDomain, "{}", r.dump());
    }
    assert_eq!(
        sh.metric("sinkhole_ratelimited_total", &[]),
        f64::from(limited)
    );
    wait_refused(&sh, f64::from(limited));
}

#[test]
fn over_limit_drop_sends_nothing() {
    let up = FakeUpstream::start();
    let sh = server(&up, "limits:\n  client_qps: 1\n  client_burst: 1\n");
    let s = udp_from("127.0.0.4", sh.dns);
    s.send(&Q::a("a.ads.test").bytes()).unwrap();
    assert!(dns::recv(&s).is_some(), "the first is within the burst");
    s.send(&Q::a("b.ads.test").bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sh.metric("sinkhole_ratelimited_total", &[]) < 1.0 {
        assert!(Instant::now() < deadline, "never counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    assert!(
        matches!(s.recv(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "over the limit with drop: nothing sent"
    );
}
