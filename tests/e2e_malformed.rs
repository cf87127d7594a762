//! Malformed input: short packets and QR=1 are dropped, a truncated question
//! gets FORMERR, unknown opcodes NOTIMP, EDNS version 1 BADVERS, and the
//! server keeps serving after a burst of garbage over UDP and TCP.

mod common;

use common::dns::{self, Q, Reply};
use common::{FakeUpstream, Setup, Sinkhole, XorShift};
use hickory_proto::op::ResponseCode;
use std::io::Write;
use std::time::Duration;

fn server(up: &FakeUpstream) -> Sinkhole {
    Setup::new()
        .upstream(up.addr())
        .list("ads", None, "ads.test\n")
        .serve()
}

fn id_of(d: &[u8]) -> Option<u16> {
    (d.len() >= 2).then(|| u16::from_be_bytes([d[0], d[1]]))
}

/// Sends `packet`, then two probes on the same socket: the only datagrams
/// that may come back are the probes' answers.
fn assert_dropped(sh: &Sinkhole, packet: &[u8]) {
    let sock = dns::udp_socket(sh.dns, dns::TIMEOUT);
    sock.send(packet).unwrap();
    for probe_name in ["ads.test", "probe.test"] {
        let probe = Q::a(probe_name);
        sock.send(&probe.bytes()).unwrap();
        let d = dns::recv(&sock).unwrap_or_else(|| panic!("probe {probe_name} unanswered"));
        assert_eq!(
            id_of(&d),
            Some(probe.id),
            "got an answer to a packet that must be dropped ({packet:02x?}): {d:02x?}"
        );
    }
}

#[test]
fn packets_shorter_than_a_header_are_dropped() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    assert_dropped(&sh, &[]);
    assert_dropped(&sh, &[0x12]);
    assert_dropped(&sh, &[0xab, 0xcd, 0x01, 0x00, 0x00]);
    assert_dropped(&sh, &[0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0]);
}

#[test]
fn responses_qr_set_are_dropped() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    let mut p = Q::a("ads.test").bytes();
    p[2] |= 0x80;
    assert_dropped(&sh, &p);
    let mut p = Q::a("fine.test").bytes();
    p[2] |= 0x80;
    assert_dropped(&sh, &p);
    assert_eq!(up.count_for("fine.test"), 0);
}

#[test]
fn truncated_question_gets_formerr() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    let full = Q::a("www.example.test").id(0xabcd).bytes();
    for cut in [13, 17, full.len() - 3] {
        let p = &full[..cut];
        let d = sh
            .udp_raw(p, dns::TIMEOUT)
            .unwrap_or_else(|| panic!("no answer to a truncated question ({cut} bytes)"));
        assert_eq!(id_of(&d), Some(0xabcd), "ID echoed: {d:02x?}");
        assert!(d[2] & 0x80 != 0, "QR set: {d:02x?}");
        assert_eq!(
            d[3] & 0x0f,
            1,
            "RCODE FORMERR for {cut}-byte query: {d:02x?}"
        );
        // and the same over TCP
        let mut s = dns::tcp_connect(sh.dns);
        dns::tcp_send(&mut s, p);
        let d = dns::tcp_recv(&mut s).expect("FORMERR over TCP");
        assert_eq!(d[3] & 0x0f, 1, "RCODE FORMERR over TCP: {d:02x?}");
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn unknown_opcode_gets_notimp() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    for opcode in [3u8, 7, 15] {
        let mut p = Q::a("opcode.test").id(0x0c0d).bytes();
        p[2] = (p[2] & 0x87) | (opcode << 3);
        let d = sh
            .udp_raw(&p, dns::TIMEOUT)
            .unwrap_or_else(|| panic!("no answer to opcode {opcode}"));
        assert_eq!(id_of(&d), Some(0x0c0d));
        assert!(d[2] & 0x80 != 0, "QR set: {d:02x?}");
        assert_eq!((d[2] >> 3) & 0x0f, opcode, "opcode echoed: {d:02x?}");
        assert_eq!(d[3] & 0x0f, 4, "RCODE NOTIMP for opcode {opcode}: {d:02x?}");
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn edns_version_1_gets_badvers() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    for name in ["ads.test", "fine.test"] {
        let q = Q::a(name).edns_version(1);
        for r in [sh.udp(&q), sh.tcp(&q)] {
            assert_eq!(r.id(), q.id);
            assert_eq!(r.header_rcode(), 0, "header RCODE bits 0: {}", r.dump());
            let edns = r
                .msg
                .edns
                .as_ref()
                .unwrap_or_else(|| panic!("BADVERS needs OPT: {}", r.dump()));
            assert_eq!(
                edns.rcode_high(),
                1,
                "OPT extended RCODE 1 (BADVERS = 16): {}",
                r.dump()
            );
            assert_eq!(edns.version(), 0, "we speak EDNS version 0: {}", r.dump());
            // BADVERS and BADSIG share the value 16; hickory decodes it as either
            assert_eq!(
                u16::from(r.rcode()),
                16,
                "extended RCODE 16 (BADVERS): {}",
                r.dump()
            );
            assert!(r.answers().is_empty(), "{}", r.dump());
        }
    }
    assert_eq!(up.count(), 0, "BADVERS queries are not forwarded");
}

#[test]
fn keeps_serving_after_a_burst_of_garbage() {
    let up = FakeUpstream::start();
    let sh = server(&up);
    let mut rng = XorShift(0x5eed_1234_abcd_0001);
    let sock = dns::udp_socket(sh.dns, Duration::from_millis(100));
    let valid = Q::a("www.example.test").edns(1232).bytes();
    for i in 0..600 {
        let p = match i % 3 {
            // random bytes of random length
            0 => {
                let n = rng.below(600) as usize;
                rng.bytes(n)
            }
            // a valid query with a few bytes flipped
            1 => {
                let mut p = valid.clone();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(p.len() as u64) as usize;
                    p[at] ^= rng.next_u64() as u8 | 1;
                }
                p
            }
            // a valid header with random counts and a random tail
            _ => {
                let mut p = valid[..12].to_vec();
                p[2] &= 0x7f;
                let tail = rng.below(300) as usize;
                p[4..12].copy_from_slice(&rng.bytes(8));
                p.extend(rng.bytes(tail));
                p
            }
        };
        sock.send(&p).unwrap();
    }
    // garbage over TCP: bad lengths, short frames, frames then hang-up
    for _ in 0..20 {
        let mut s = dns::tcp_connect(sh.dns);
        let n = rng.below(100) as usize;
        let mut frame = (rng.below(65535) as u16).to_be_bytes().to_vec();
        frame.extend(rng.bytes(n));
        let _ = s.write_all(&frame);
    }
    for _ in 0..20 {
        let mut s = dns::tcp_connect(sh.dns);
        let n = 12 + rng.below(100) as usize;
        dns::tcp_send(&mut s, &rng.bytes(n));
    }

    // The burst overflows the listening sockets' receive buffers on purpose,
    // and the kernel drops what does not fit, as it would for any UDP
    // server. So first wait (bounded) until the server has drained and
    // answers again: a readiness check, not a sleep.
    let probe = Q::a("www.example.test").bytes();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sh.udp_raw(&probe, Duration::from_millis(200)).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "server did not answer again within 20 s after the burst"
        );
    }
    // Then every probe must be answered: each comes from a fresh source
    // port, so SO_REUSEPORT spreads them over the worker sockets, and one
    // socket whose loop died would lose about half of them.
    for i in 0..8 {
        let r = sh.udp(&Q::a("www.example.test"));
        assert_eq!(r.rcode(), ResponseCode::NoError, "probe {i}: {}", r.dump());
        assert_eq!(r.a_addrs(), vec![std::net::Ipv4Addr::new(192, 0, 2, 1)]);
    }
    let r = sh.tcp(&Q::a("ads.test"));
    assert_eq!(r.rcode(), ResponseCode::NXDomain, "{}", r.dump());
    let r: Reply = sh.udp(&Q::a("after-garbage.test").edns(1232));
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.dump());
    assert_eq!(sh.get("/healthz").status, 200);
}
