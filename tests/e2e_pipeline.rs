//! The pipeline's contract points that the redesign fixed or added, each
//! against the real binary: who asked reaches the query record (UDP one at
//! a time, UDP in batches, TCP); answers leave from the address asked on a
//! wildcard bind; RD=0; error answers keep their question and OPT; the
//! upstream stage takes only whole, sane replies, moves on after error
//! RCODEs and relays the last one with its EDE; a 64 KiB reply still fits
//! its TCP frame; a silent upstream does not cost a descriptor per query.

mod common;

use common::dns::{self, Q, Reply};
use common::http;
use common::upstream::{Script, rec_a, rec_txt};
use common::{FakeUpstream, Setup, Sinkhole};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn ip(d: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, d)
}

/// The JSON lines the server logged for queries (`sinkhole::query`).
fn query_records(sh: &Sinkhole) -> Vec<serde_json::Value> {
    sh.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "sinkhole::query")
        .map(|v| v["fields"].clone())
        .collect()
}

/// Waits until a query record for `name` from `client` is logged.
fn record_for(sh: &Sinkhole, name: &str, client: SocketAddr) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = query_records(sh)
            .into_iter()
            .find(|r| r["name"] == name && r["client"] == client.to_string())
        {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no query record for {name} from {client}; records: {:#?}",
            query_records(sh)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn logging_server(up: &FakeUpstream) -> Sinkhole {
    Setup::new()
        .upstream(up.addr())
        .list("ads", None, "ads.test\n")
        .env("RUST_LOG", "info,sinkhole::query=debug")
        .serve()
}

#[test]
fn the_record_knows_the_client_over_udp() {
    let up = FakeUpstream::start();
    let sh = logging_server(&up);
    let sock = dns::udp_socket(sh.dns, dns::TIMEOUT);
    let me = sock.local_addr().unwrap();
    for name in ["one.ads.test", "fwd-one.test"] {
        sock.send(&Q::a(name).bytes()).unwrap();
        dns::recv(&sock).expect("an answer");
    }
    let blocked = record_for(&sh, "one.ads.test", me);
    assert_eq!(blocked["decision"], "blocked");
    assert_eq!(blocked["outcome"], "blocked");
    assert_eq!(blocked["transport"], "udp");
    assert_eq!(blocked["rcode"], 3);
    let forwarded = record_for(&sh, "fwd-one.test", me);
    assert_eq!(forwarded["decision"], "unlisted");
    assert_eq!(forwarded["outcome"], "allowed");
    assert_eq!(forwarded["qtype"], 1);
}

#[test]
fn the_record_knows_each_client_of_a_batch() {
    // Forty sockets send at once, so the server reads them in batches; each
    // answer and each record must belong to its own sender.
    let up = FakeUpstream::start();
    let sh = logging_server(&up);
    let sockets: Vec<UdpSocket> = (0..40)
        .map(|_| dns::udp_socket(sh.dns, dns::TIMEOUT))
        .collect();
    let names: Vec<String> = (0..40)
        .map(|i| {
            if i % 2 == 0 {
                format!("b{i}.ads.test")
            } else {
                format!("f{i}.test")
            }
        })
        .collect();
    let queries: Vec<Q> = names.iter().map(|n| Q::a(n)).collect();
    for (s, q) in sockets.iter().zip(&queries) {
        s.send(&q.bytes()).unwrap();
    }
    for ((s, q), name) in sockets.iter().zip(&queries).zip(&names) {
        let r = Reply::from_bytes(dns::recv(s).expect("every socket gets its answer"));
        assert_eq!(r.id(), q.id, "{name}: {}", r.dump());
        let rec = record_for(&sh, name, s.local_addr().unwrap());
        let want = if name.ends_with("ads.test") {
            "blocked"
        } else {
            "allowed"
        };
        assert_eq!(rec["outcome"], want, "{name}");
    }
}

#[test]
fn the_record_knows_the_client_over_tcp() {
    let up = FakeUpstream::start();
    let sh = logging_server(&up);
    let mut stream = dns::tcp_connect(sh.dns);
    let me = stream.local_addr().unwrap();
    for name in ["tcp.ads.test", "tcp-fwd.test"] {
        dns::tcp_send(&mut stream, &Q::a(name).bytes());
        dns::tcp_recv(&mut stream).expect("an answer");
    }
    assert_eq!(record_for(&sh, "tcp.ads.test", me)["transport"], "tcp");
    let fwd = record_for(&sh, "tcp-fwd.test", me);
    assert_eq!(fwd["transport"], "tcp");
    assert_eq!(fwd["outcome"], "allowed");
}

#[test]
fn on_a_wildcard_bind_answers_leave_from_the_address_asked() {
    // Bound to 0.0.0.0, asked at 127.0.0.5: the kernel alone would answer
    // from 127.0.0.1 (its route to the client), which a connected client
    // socket never sees. Blocked (answered inline) and forwarded (answered
    // from the upstream stage) both.
    let up = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(up.addr())
        .list("ads", None, "ads.test\n")
        .on_wildcard()
        .with_ipv6()
        .serve();
    for addr in [
        SocketAddr::from(([127, 0, 0, 5], sh.dns.port())),
        SocketAddr::from(([127, 0, 0, 1], sh.dns.port())),
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, sh.dns.port())),
    ] {
        for name in ["x.ads.test", "wild.test"] {
            let q = Q::a(name);
            let r = dns::udp_raw(addr, &q.bytes(), Duration::from_secs(5))
                .map(Reply::from_bytes)
                .unwrap_or_else(|| panic!("no answer from {addr} for {name}"));
            assert_eq!(r.id(), q.id);
        }
        let r = dns::tcp(addr, &Q::a("tcp.wild.test").bytes());
        assert_eq!(r.a_addrs(), vec![ip(1)]);
    }
}

#[test]
fn rd_clear_gets_the_policy_or_refused_never_the_cache() {
    let up = FakeUpstream::start();
    up.on("cached.test", Script::a("cached.test", 300, &[ip(7)]));
    let sh = Setup::new()
        .upstream(up.addr())
        .list("ads", None, "ads.test\n")
        .serve();
    // Warm the cache with a normal query.
    assert_eq!(sh.udp(&Q::a("cached.test")).a_addrs(), vec![ip(7)]);
    let before = up.count();

    // Blocked: the policy's answer, RD echoed clear.
    let r = sh.udp(&Q::a("x.ads.test").rd(false));
    assert_eq!(r.rcode(), ResponseCode::NXDomain, "{}", r.dump());
    assert!(!r.rd());
    // Cached and uncached alike: REFUSED with EDE 20, nothing from the cache.
    for name in ["cached.test", "never-asked.test"] {
        for q in [Q::a(name).rd(false), Q::a(name).rd(false).edns(1232)] {
            let r = sh.udp(&q);
            assert_eq!(r.rcode(), ResponseCode::Refused, "{name}: {}", r.dump());
            assert!(r.answers().is_empty(), "{name}: no data: {}", r.dump());
            assert_eq!(r.question_bytes(), dns::question_bytes(&q.bytes()));
            if q.edns.is_some() {
                assert_eq!(r.ede().first().map(|e| e.0), Some(20), "{}", r.dump());
            }
        }
    }
    assert_eq!(up.count(), before, "RD=0 never reaches an upstream");
    let m = http::get(sh.admin, "/metrics").body;
    assert_eq!(
        http::metric(&m, "sinkhole_queries_total", &[("outcome", "refused")]),
        4.0
    );
}

#[test]
fn error_answers_echo_the_question_and_the_opt() {
    let up = FakeUpstream::start();
    let sh = Setup::new().upstream(up.addr()).serve();
    // BADVERS: the question, and an OPT saying version 0 with BADVERS.
    let q = Q::a("ver.test").edns(1232).edns_version(1);
    let r = sh.udp(&q);
    // Extended RCODE 16 (hickory decodes it under its other name, BADSIG).
    assert_eq!(u16::from(r.rcode()), 16, "{}", r.dump());
    assert_eq!(r.question_bytes(), dns::question_bytes(&q.bytes()));
    assert!(r.has_opt());
    // NOTIMP, with and without EDNS.
    for q in [
        Q::a("op.test").opcode(hickory_proto::op::OpCode::Status),
        Q::a("op.test")
            .opcode(hickory_proto::op::OpCode::Status)
            .edns(1232),
    ] {
        let r = sh.udp(&q);
        assert_eq!(r.rcode(), ResponseCode::NotImp, "{}", r.dump());
        assert_eq!(r.question_bytes(), dns::question_bytes(&q.bytes()));
        assert_eq!(r.has_opt(), q.edns.is_some(), "{}", r.dump());
    }
    // TC=1 in a query: FORMERR, question and OPT kept.
    let q = Q::a("tc.test").edns(1232);
    let mut raw = q.bytes();
    raw[2] |= 0x02;
    let r = Reply::from_bytes(dns::udp_raw(sh.dns, &raw, dns::TIMEOUT).expect("FORMERR"));
    assert_eq!(r.rcode(), ResponseCode::FormErr, "{}", r.dump());
    assert_eq!(r.question_bytes(), dns::question_bytes(&raw));
    assert!(r.has_opt());
    assert_eq!(up.count(), 0);
}

// ---- the upstream stage -------------------------------------------------

fn two_upstreams(first: &FakeUpstream, second: &FakeUpstream) -> Sinkhole {
    Setup::new()
        .upstream(first.addr())
        .upstream(second.addr())
        .timeout("300ms")
        .serve()
}

fn upstream_results(sh: &Sinkhole, up: &FakeUpstream, result: &str) -> f64 {
    let m = http::get(sh.admin, "/metrics").body;
    http::metric(
        &m,
        "sinkhole_upstream_requests_total",
        &[("upstream", &up.addr().to_string()), ("result", result)],
    )
}

#[test]
fn refused_moves_on_to_the_next_upstream_without_marking_it_failed() {
    let refusing = FakeUpstream::start();
    refusing.set_default(Script::rcode(ResponseCode::Refused));
    let good = FakeUpstream::start();
    let sh = two_upstreams(&refusing, &good);
    let r = sh.udp(&Q::a("r.test"));
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
    assert_eq!(r.a_addrs(), vec![ip(1)]);
    assert_eq!((refusing.count(), good.count()), (1, 1));
    assert_eq!(upstream_results(&sh, &refusing, "ok"), 1.0, "it did answer");
}

#[test]
fn the_last_error_answer_reaches_the_client_with_its_ede() {
    // The first upstream says SERVFAIL with EDE 6 (DNSSEC Bogus), the second
    // never answers: the client learns why, not "no upstream answered".
    let bogus = FakeUpstream::start();
    bogus.set_default(Script::servfail().with_ede(6, "signature expired"));
    let dead = FakeUpstream::silent();
    let sh = two_upstreams(&bogus, &dead);
    let r = dns::udp_raw(
        sh.dns,
        &Q::a("bogus.test").edns(1232).bytes(),
        Duration::from_secs(10),
    )
    .map(Reply::from_bytes)
    .expect("an answer");
    assert_eq!(r.rcode(), ResponseCode::ServFail, "{}", r.dump());
    assert_eq!(
        r.ede(),
        vec![(6, "signature expired".to_string())],
        "{}",
        r.dump()
    );
    assert!(dead.count() >= 1, "the second server was tried");
    assert_eq!(upstream_results(&sh, &bogus, "ok"), 1.0);
    assert_eq!(upstream_results(&sh, &dead, "timeout"), 1.0);
    let m = http::get(sh.admin, "/metrics").body;
    assert_eq!(
        http::metric(&m, "sinkhole_queries_total", &[("outcome", "allowed")]),
        1.0,
        "a relayed answer, not one of ours"
    );

    // With nobody answering at all, EDE 22 is ours.
    let dead2 = FakeUpstream::silent();
    let sh = Setup::new().upstream(dead2.addr()).timeout("200ms").serve();
    let r = dns::udp_raw(
        sh.dns,
        &Q::a("nobody.test").edns(1232).bytes(),
        Duration::from_secs(10),
    )
    .map(Reply::from_bytes)
    .expect("SERVFAIL");
    assert_eq!(r.rcode(), ResponseCode::ServFail);
    assert_eq!(r.ede().first().map(|e| e.0), Some(22), "{}", r.dump());
}

/// An answer's first record's owner, rewritten to point at itself.
fn owner_points_at_itself(reply: &mut [u8]) {
    let question_end = 12 + reply[12..].iter().position(|b| *b == 0).unwrap() + 1 + 4;
    let at = question_end as u16;
    reply[question_end..question_end + 2].copy_from_slice(&(0xC000 | at).to_be_bytes());
}

/// The reply cut in the middle of its answer record.
fn cut_short(reply: &mut Vec<u8>) {
    let len = reply.len();
    reply.truncate(len - 6);
}

#[test]
fn a_compression_loop_or_a_cut_reply_moves_on_to_the_next_upstream() {
    for (what, mangle) in [
        (
            "loop",
            (|r: &mut Vec<u8>| owner_points_at_itself(r)) as fn(&mut Vec<u8>),
        ),
        ("cut", cut_short),
    ] {
        let broken = FakeUpstream::start();
        broken.set_default(Script::a("m.test", 300, &[ip(9)]).mangled(mangle));
        let good = FakeUpstream::start();
        let sh = two_upstreams(&broken, &good);
        let r = sh.udp(&Q::a("m.test"));
        assert_eq!(r.a_addrs(), vec![ip(1)], "{what}: {}", r.dump());
        assert_eq!(upstream_results(&sh, &broken, "error"), 1.0, "{what}");
        // Not cached from the broken one either: asking again is a cache
        // hit of the good answer.
        assert_eq!(sh.udp(&Q::a("m.test")).a_addrs(), vec![ip(1)], "{what}");
        assert_eq!(good.count(), 1, "{what}");
    }
}

#[test]
fn ttls_are_made_sane_before_clients_see_them() {
    let up = FakeUpstream::start();
    up.on("huge.test", Script::a("huge.test", u32::MAX, &[ip(3)]));
    up.on("week.test", Script::a("week.test", 7 * 86_400, &[ip(4)]));
    let sh = Setup::new().upstream(up.addr()).serve();
    // RFC 2181 §8: the top bit set means zero, and zero is not cached.
    let r = sh.udp(&Q::a("huge.test"));
    assert_eq!(r.answers()[0].ttl, 0, "{}", r.dump());
    sh.udp(&Q::a("huge.test"));
    assert_eq!(up.count_for("huge.test"), 2, "a zero TTL is not cached");
    // Above the cache's ceiling: a day.
    let r = sh.udp(&Q::a("week.test"));
    assert_eq!(r.answers()[0].ttl, 86_400, "{}", r.dump());
}

/// Moves the reply's OPT (last) before its last additional record.
fn opt_not_last(reply: &mut Vec<u8>) {
    // The OPT is the last 11 bytes (no options); the A record before it,
    // owner a pointer, is 16.
    let len = reply.len();
    let (rest, tail) = reply.split_at(len - 27);
    let (a, opt) = tail.split_at(16);
    let moved: Vec<u8> = [rest, opt, a].concat();
    *reply = moved;
}

#[test]
fn an_opt_anywhere_in_the_additional_section_is_taken() {
    let up = FakeUpstream::start();
    up.on(
        "opt.test",
        Script::a("opt.test", 300, &[ip(5)])
            .with_additional(rec_a("opt.test", 300, ip(6)))
            .mangled(opt_not_last),
    );
    let sh = Setup::new().upstream(up.addr()).serve();
    for _ in 0..2 {
        let r = sh.udp(&Q::a("opt.test").edns(1232));
        assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
        assert_eq!(r.a_addrs(), vec![ip(5)]);
        assert_eq!(r.additionals().len(), 1, "{}", r.dump());
        assert!(r.has_opt());
    }
    assert_eq!(up.count(), 1, "and it is cached");
}

#[test]
fn a_reply_near_64_kib_still_fits_its_tcp_frame() {
    // An upstream's TCP reply of 65,530 bytes with no OPT: our OPT would
    // take the answer past what a frame's length can say. The client must
    // get a well-formed message saying it was cut, not a wrapped length.
    let up = FakeUpstream::start();
    let strings =
        |n: usize, len: usize| -> Vec<String> { (0..n).map(|i| format!("{i:0>len$}")).collect() };
    // 12 header + 14 question + 25 × 2,522 + one record of 12 + 2,442.
    let mut script = Script::default();
    for _ in 0..25 {
        script = script.with_answer(rec_txt("big.test", 300, strings(10, 250)));
    }
    let mut last = strings(9, 250);
    last.push("x".repeat(182));
    script = script.with_answer(rec_txt("big.test", 300, last));
    up.on("big.test", script.tc_over_udp().without_edns());
    let sh = Setup::new().upstream(up.addr()).serve();
    let q = Q::new("big.test", RecordType::TXT).edns(1232);
    let r = sh.tcp(&q);
    assert_eq!(r.id(), q.id);
    assert!(r.tc(), "cut, and says so: {}", r.dump());
    assert!(r.answers().is_empty());
    assert!(r.has_opt());
    // Without EDNS the same answer fits whole (no OPT to add).
    let r = sh.tcp(&Q::new("big.test", RecordType::TXT));
    assert_eq!(r.answers().len(), 26, "{}", r.dump());
    assert_eq!(r.raw.len(), 65_530);
}

#[test]
fn a_silent_upstream_costs_no_descriptor_per_query() {
    // Each worker asks from a fixed pool of sockets: 500 queries waiting on
    // a blackholed upstream add no descriptors (a socket per query would
    // add 500).
    let dead = FakeUpstream::silent();
    let sh = Setup::new().upstream(dead.addr()).timeout("5s").serve();
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", sh.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = fds();
    let sock = dns::udp_socket(sh.dns, dns::TIMEOUT);
    // In rounds of 50, each waited for at the silent server, so no socket
    // buffer on the way overflows.
    let deadline = Instant::now() + Duration::from_secs(20);
    for round in 0..10 {
        for i in 0..50 {
            let name = format!("q{round}-{i}.blackhole.test");
            sock.send(&Q::a(&name).bytes()).unwrap();
        }
        while dead.count() < 50 * (round + 1) {
            assert!(Instant::now() < deadline, "only {} arrived", dead.count());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let during = fds();
    assert!(
        during <= before + 4,
        "{before} descriptors before, {during} with 500 queries waiting"
    );
}

#[test]
fn a_full_table_of_waiting_queries_answers_servfail_at_once() {
    // Queries waiting on upstreams are bounded (10,000 over all workers):
    // past the bound a query is answered SERVFAIL at once, never queued.
    let dead = FakeUpstream::silent();
    let sh = Setup::new().upstream(dead.addr()).timeout("30s").serve();
    // A short read timeout: the loop below polls the upstream's count too.
    let sock = dns::udp_socket(sh.dns, Duration::from_millis(20));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    let servfail = loop {
        assert!(sent < 10_100, "no SERVFAIL after {sent} waiting queries");
        assert!(Instant::now() < deadline, "too slow");
        for _ in 0..100 {
            sock.send(&Q::a(&format!("w{sent}.wait.test")).bytes())
                .unwrap();
            sent += 1;
        }
        // Every query reaches the upstream or is answered: wait for either.
        let mut answered = Vec::new();
        while dead.count() + answered.len() < sent {
            assert!(
                Instant::now() < deadline,
                "{sent} sent, {} upstream, {} answered",
                dead.count(),
                answered.len()
            );
            if let Some(a) = dns::recv(&sock) {
                answered.push(Reply::from_bytes(a));
            }
        }
        if !answered.is_empty() {
            break answered;
        }
    };
    assert!(dead.count() <= 10_000, "{} waiting", dead.count());
    for r in &servfail {
        assert_eq!(r.rcode(), ResponseCode::ServFail, "{}", r.dump());
    }
    let m = http::get(sh.admin, "/metrics").body;
    assert_eq!(
        http::metric(&m, "sinkhole_queries_total", &[("outcome", "error")]),
        servfail.len() as f64
    );
}

#[test]
fn sigterm_lets_queries_waiting_upstream_finish() {
    // SPEC: SIGTERM finishes in-flight queries, then exits 0. The query is
    // at the upstream (which takes 500 ms) when the signal arrives.
    let slow = FakeUpstream::start();
    slow.on(
        "slow.test",
        Script::a("slow.test", 60, &[ip(8)]).delayed(Duration::from_millis(500)),
    );
    let mut sh = Setup::new().upstream(slow.addr()).timeout("2s").serve();
    let sock = dns::udp_socket(sh.dns, Duration::from_secs(5));
    let q = Q::a("slow.test");
    sock.send(&q.bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow.count() == 0 {
        assert!(
            Instant::now() < deadline,
            "the query never reached upstream"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", sh.pid())])
        .status()
        .expect("run sh -c kill");
    assert!(status.success());
    let r = Reply::from_bytes(dns::recv(&sock).expect("answered despite SIGTERM"));
    assert_eq!(r.id(), q.id);
    assert_eq!(r.a_addrs(), vec![ip(8)], "{}", r.dump());
    let exit = sh
        .wait_exit(Duration::from_secs(15))
        .expect("sinkhole exits after SIGTERM");
    assert_eq!(exit.code(), Some(0));
}
