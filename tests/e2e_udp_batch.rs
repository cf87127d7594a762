//! Batched UDP: many clients sending at once, so the server's `recvmmsg`
//! returns batches of many datagrams from different peers, some answered
//! inline (blocked, cached) and some forwarded. Every answer must reach the
//! socket that asked, carry its own ID and question, and be the right one,
//! over IPv4 and IPv6.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::dns::Q;
use common::{FakeUpstream, Reply, ResponseCode, Script, Setup, Sinkhole};

const CLIENTS: usize = 8;
const PER_CLIENT: usize = 32;
const FORWARDED: usize = 16;
/// Loopback can still drop a datagram when a burst overflows a socket
/// buffer; unanswered queries are re-sent (same ID) this many times.
const ROUNDS: usize = 10;

fn forwarded_name(k: usize) -> String {
    format!("fwd{k}.test")
}

fn server(ipv6: bool) -> (FakeUpstream, Sinkhole) {
    let up = FakeUpstream::start();
    for k in 0..FORWARDED {
        let name = forwarded_name(k);
        up.on(
            &name,
            Script::a(&name, 300, &[Ipv4Addr::new(192, 0, 2, k as u8)]),
        );
    }
    let mut setup = Setup::new()
        .upstream(up.addr())
        .list("ads", None, "ads.test\n");
    if ipv6 {
        setup = setup.with_ipv6();
    }
    (up, setup.serve())
}

/// What one query expects back.
#[derive(Clone)]
enum Want {
    Blocked,
    Forwarded(u8),
}

struct Sent {
    q: Q,
    name: String,
    want: Want,
}

/// Each client's queries: blocked names under `ads.test` and forwarded
/// names, interleaved so a batch holds both kinds.
fn queries(client: usize) -> Vec<Sent> {
    (0..PER_CLIENT)
        .map(|i| {
            if i % 2 == 0 {
                let name = format!("c{client}-q{i}.ads.test");
                Sent {
                    q: Q::a(&name),
                    name,
                    want: Want::Blocked,
                }
            } else {
                let k = (client * PER_CLIENT + i) % FORWARDED;
                let name = forwarded_name(k);
                Sent {
                    q: Q::a(&name),
                    name,
                    want: Want::Forwarded(k as u8),
                }
            }
        })
        .collect()
}

fn check(sent: &Sent, reply: &Reply) {
    assert_eq!(
        reply.question_bytes(),
        sent.q.bytes()[12..].to_vec(),
        "question echoed for {}: {}",
        sent.name,
        reply.dump()
    );
    match sent.want {
        Want::Blocked => assert_eq!(reply.rcode(), ResponseCode::NXDomain, "{}", reply.dump()),
        Want::Forwarded(k) => {
            assert_eq!(reply.rcode(), ResponseCode::NoError, "{}", reply.dump());
            assert_eq!(
                reply.a_addrs(),
                vec![Ipv4Addr::new(192, 0, 2, k)],
                "{}",
                reply.dump()
            );
        }
    }
}

/// Every client fires all its queries before anyone reads; then each reads
/// its answers, re-sending what is missing, until all are in.
fn burst(server: SocketAddr, bind: SocketAddr) {
    let clients: Vec<(UdpSocket, Vec<Sent>)> = (0..CLIENTS)
        .map(|c| {
            let sock = UdpSocket::bind(bind).expect("bind client");
            sock.connect(server).expect("connect");
            sock.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            (sock, queries(c))
        })
        .collect();
    let mut pending: Vec<HashMap<u16, usize>> = clients
        .iter()
        .map(|(_, qs)| qs.iter().enumerate().map(|(i, s)| (s.q.id, i)).collect())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    for round in 0..ROUNDS {
        // Round-robin over the clients, so that any batch of two or more
        // holds datagrams from different peers.
        let mut order: Vec<Vec<usize>> = pending
            .iter()
            .map(|w| w.values().copied().collect())
            .collect();
        for o in &mut order {
            o.sort_unstable();
        }
        for i in 0..PER_CLIENT {
            for ((sock, qs), o) in clients.iter().zip(&order) {
                if let Some(&q) = o.get(i) {
                    sock.send(&qs[q].q.bytes()).expect("send");
                }
            }
        }
        for ((sock, qs), waiting) in clients.iter().zip(pending.iter_mut()) {
            let mut buf = [0u8; 4096];
            while !waiting.is_empty() && Instant::now() < deadline {
                let Ok(n) = sock.recv(&mut buf) else { break };
                let reply = Reply::from_bytes(buf[..n].to_vec());
                // An answer to a re-sent query can arrive twice: only an ID
                // this socket never sent is wrong.
                let known = qs.iter().position(|s| s.q.id == reply.id());
                let Some(i) = known else {
                    panic!(
                        "answer with a foreign ID {:#06x} (round {round})",
                        reply.id()
                    );
                };
                check(&qs[i], &reply);
                waiting.remove(&reply.id());
            }
        }
        if pending.iter().all(HashMap::is_empty) {
            return;
        }
    }
    let missing: usize = pending.iter().map(HashMap::len).sum();
    panic!("{missing} queries never answered after {ROUNDS} rounds");
}

#[test]
fn burst_from_many_ipv4_clients_each_gets_its_own_answers() {
    let (_up, sh) = server(false);
    burst(sh.dns, (Ipv4Addr::LOCALHOST, 0).into());
    // The same again: now the forwarded names come from the cache.
    burst(sh.dns, (Ipv4Addr::LOCALHOST, 0).into());
}

#[test]
fn burst_from_many_ipv6_clients_each_gets_its_own_answers() {
    if UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_err() {
        eprintln!("skipping: no IPv6 loopback on this machine");
        return;
    }
    let (_up, sh) = server(true);
    let server6 = SocketAddr::from((Ipv6Addr::LOCALHOST, sh.dns.port()));
    burst(server6, (Ipv6Addr::LOCALHOST, 0).into());
    burst(server6, (Ipv6Addr::LOCALHOST, 0).into());
}
