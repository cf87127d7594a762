//! Free loopback ports. A port is handed out at most once per test process, so
//! parallel tests in one binary never collide with each other.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Mutex;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Remembers `port` as used; returns false if it was already handed out.
pub fn claim(port: u16) -> bool {
    let mut g = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    g.get_or_insert_with(HashSet::new).insert(port)
}

/// A loopback port that is currently free for both TCP and UDP.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let tcp = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) {
            Ok(l) => l,
            Err(_) => continue,
        };
        let port = tcp.local_addr().expect("local_addr").port();
        let udp_free = UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
        drop(tcp);
        if udp_free && claim(port) {
            return port;
        }
    }
    panic!("could not find a free loopback port for TCP+UDP");
}

/// A free port outside the kernel's ephemeral range (32768 and up), for a
/// server that must bind it some time after it is chosen: no socket bound
/// to port 0 meanwhile can take it.
pub fn free_fixed_port() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    for i in 0..2_000u64 {
        let port = 10_000
            + ((seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(i * 7919))
                % 22_000) as u16;
        let tcp_free = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
        let udp_free = UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
        if tcp_free && udp_free && claim(port) {
            return port;
        }
    }
    panic!("could not find a free fixed loopback port");
}

pub fn free_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
}
