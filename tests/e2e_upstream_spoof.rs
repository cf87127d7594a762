//! An upstream answer is taken only when its source address and port, ID
//! and question match the query sent; anything else is dropped, counted in
//! `sinkhole_upstream_mismatched_total`, and the query waits on for the
//! real answer.

mod common;

use common::Setup;
use common::dns::{self, Q, Reply};
use std::net::{Ipv4Addr, UdpSocket};
use std::thread;

/// The reply to `query` (header and question, no OPT) with one A record.
fn reply(query: &[u8], id: u16, ip: Ipv4Addr) -> Vec<u8> {
    let mut end = 12;
    while query[end] != 0 {
        end += 1 + usize::from(query[end]);
    }
    end += 1 + 4;
    let mut r = query[..end].to_vec();
    r[0..2].copy_from_slice(&id.to_be_bytes());
    r[2] |= 0x80; // QR
    r[3] = 0x80; // RA, NOERROR
    r[6..8].copy_from_slice(&1u16.to_be_bytes()); // ANCOUNT
    r[8..12].fill(0); // NSCOUNT, ARCOUNT
    r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    r.extend_from_slice(&ip.octets());
    r
}

#[test]
fn forged_answers_are_dropped_counted_and_the_real_one_is_taken() {
    let upstream = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = upstream.local_addr().unwrap();
    let forger = thread::spawn(move || {
        let other_port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let mut buf = [0u8; 4096];
        // The client's query, not the health probe sent at start.
        let (n, peer) = loop {
            let (n, peer) = upstream.recv_from(&mut buf).unwrap();
            if !String::from_utf8_lossy(&buf[..n]).contains("sinkhole-loop-check") {
                break (n, peer);
            }
        };
        let q = &buf[..n];
        let id = u16::from_be_bytes([q[0], q[1]]);
        let evil = Ipv4Addr::new(6, 6, 6, 6);
        // Another ID.
        upstream
            .send_to(&reply(q, id ^ 0x5a5a, evil), peer)
            .unwrap();
        // Our ID, another question (the first letter of the name changed).
        let mut other = reply(q, id, evil);
        other[13] = if other[13] == b'z' { b'y' } else { b'z' };
        upstream.send_to(&other, peer).unwrap();
        // Everything right, but from another port.
        other_port.send_to(&reply(q, id, evil), peer).unwrap();
        // Too short to be DNS at all.
        upstream.send_to(&[0u8; 5], peer).unwrap();
        // The real answer.
        upstream
            .send_to(&reply(q, id, Ipv4Addr::new(192, 0, 2, 7)), peer)
            .unwrap();
    });
    let sh = Setup::new()
        .upstream(addr)
        .list("ads", None, "ads.test\n")
        .serve();
    let r: Reply = Q::a("victim.test").udp(sh.dns);
    forger.join().unwrap();
    assert_eq!(
        r.a_addrs(),
        vec![Ipv4Addr::new(192, 0, 2, 7)],
        "only the real answer is taken: {}",
        r.dump()
    );
    // The four forgeries were read before the real answer (same socket,
    // in order) except the one from another port, which may arrive after;
    // wait for all four to be counted.
    let deadline = std::time::Instant::now() + dns::TIMEOUT;
    loop {
        let n = sh.metric("sinkhole_upstream_mismatched_total", &[]);
        if n >= 4.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mismatched counted {n}, expected 4"
        );
        thread::sleep(std::time::Duration::from_millis(20));
    }
    // And the cache holds the real answer, not a forged one.
    let again = Q::a("victim.test").udp(sh.dns);
    assert_eq!(again.a_addrs(), vec![Ipv4Addr::new(192, 0, 2, 7)]);
}
