//! The admin port's own limits: a connection whose request headers do not
//! arrive within 10 s (or that sends nothing) is closed; past 512 open
//! connections new ones are closed at once; scrapes go on.

mod common;

use common::dns::closed_within;
use common::{Setup, http};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn slow_headers_and_silent_connections_are_closed() {
    let sh = Setup::new().list("ads", None, "ads.test\n").serve();
    let mut slow = TcpStream::connect(sh.admin).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap(); // never finished
    let mut silent = TcpStream::connect(sh.admin).unwrap();
    let start = Instant::now();
    assert!(
        closed_within(&mut slow, Duration::from_secs(30)),
        "slow headers kept open"
    );
    assert!(
        closed_within(&mut silent, Duration::from_secs(30)),
        "a silent connection kept open"
    );
    assert!(
        start.elapsed() >= Duration::from_secs(5),
        "closed before the header timeout"
    );
    // The port serves on.
    assert_eq!(http::get(sh.admin, "/healthz").status, 200);
}

#[test]
fn past_the_cap_new_connections_are_closed_at_once() {
    let sh = Setup::new().list("ads", None, "ads.test\n").serve();
    let mut conns: Vec<TcpStream> = (0..140)
        .map(|_| TcpStream::connect(sh.admin).unwrap())
        .collect();
    let mut shut = 0;
    for c in &mut conns {
        if closed_within(c, Duration::from_millis(100)) {
            shut += 1;
        }
    }
    assert!(
        shut >= 12,
        "140 connections against a cap of 128: {shut} closed"
    );
    drop(conns);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = http::try_get(sh.admin, "/healthz")
            && r.status == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "the port never served again");
        std::thread::sleep(Duration::from_millis(50));
    }
}
