//! Descriptors: started with the usual service limit of 1,024 open files
//! (`prlimit`, soft and hard), sinkhole holds as many idle connections to
//! its DNS and admin ports as its descriptor budget allows, closes the rest
//! at once, and keeps answering cached, blocked and forwarded queries over
//! UDP meanwhile; the admin API is back when the connections go.

mod common;

use common::dns::{self, Q, closed_within};
use common::{FakeUpstream, ResponseCode, Setup};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

/// Raises this test process's own soft limit so it can hold the
/// connections; false when its hard limit will not allow it.
fn room_for(connections: u64) -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) != 0 {
            return false;
        }
        let want = connections + 512;
        if lim.rlim_cur >= want {
            return true;
        }
        if lim.rlim_max < want {
            return false;
        }
        lim.rlim_cur = want;
        libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) == 0
    }
}

fn prlimit() -> Option<&'static str> {
    ["/usr/bin/prlimit", "/bin/prlimit"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

#[test]
fn two_thousand_idle_connections_at_a_1024_file_limit_leave_udp_answering() {
    let Some(prlimit) = prlimit() else {
        eprintln!("skipping: prlimit (util-linux) not installed");
        return;
    };
    if !room_for(2_000) {
        eprintln!("skipping: this process's hard open-file limit is below 2,512");
        return;
    }
    let up = FakeUpstream::start();
    let sh = Setup::new()
        .upstream(up.addr())
        .list("ads", None, "ads.test\n")
        // Idle connections are kept a minute: the test's, not the timeout's.
        .yaml("limits:\n  tcp_idle: 60s\n")
        .launched_by(&[prlimit, "--nofile=1024:1024", "--"])
        .serve();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", sh.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(
        line.split_whitespace().filter(|w| *w == "1024").count() == 2,
        "started at 1,024 soft and hard: {line}"
    );
    assert!(
        sh.logs().contains("fewer client connections"),
        "the budget is logged: {}",
        sh.logs()
    );

    // Warm one name into the cache while the admin port still answers.
    assert_eq!(
        Q::a("cached.example.org").udp(sh.dns).a_addrs(),
        vec![Ipv4Addr::new(192, 0, 2, 1)]
    );

    // 1,000 idle connections to each port.
    let mut conns: Vec<TcpStream> = Vec::with_capacity(2_000);
    for i in 0..2_000 {
        let to = if i % 2 == 0 { sh.dns } else { sh.admin };
        conns.push(TcpStream::connect(to).expect("connect"));
    }
    // Those past the budget are closed at once; the rest are held.
    let mut held = 0;
    for c in &mut conns {
        if !closed_within(c, Duration::from_millis(20)) {
            held += 1;
        }
    }
    assert!(
        (100..1_024).contains(&held),
        "{held} of 2,000 connections held at a limit of 1,024"
    );

    // UDP carries on: cached, blocked, and forwarded (a new upstream
    // socket is not needed: the pool was opened before any client).
    let r = Q::a("cached.example.org").udp(sh.dns);
    assert_eq!(
        r.a_addrs(),
        vec![Ipv4Addr::new(192, 0, 2, 1)],
        "{}",
        r.dump()
    );
    assert_eq!(
        Q::a("x.ads.test").udp(sh.dns).rcode(),
        ResponseCode::NXDomain
    );
    for i in 0..20 {
        let name = format!("new{i}.example.org");
        let r = Q::a(&name).udp(sh.dns);
        assert_eq!(r.rcode(), ResponseCode::NoError, "{name}: {}", r.dump());
        assert_eq!(up.count_for(&name), 1);
    }
    assert!(
        !sh.logs().contains("Too many open files"),
        "the budget kept EMFILE away: {}",
        sh.logs()
    );

    // The connections go; the ports take new ones again.
    drop(conns);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = common::http::try_get(sh.admin, "/healthz")
            && r.status == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "the admin port never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut s = dns::tcp_connect(sh.dns);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    dns::tcp_send(&mut s, &Q::a("y.ads.test").bytes());
    let raw = dns::tcp_recv(&mut s).expect("a TCP answer once connections are free");
    assert_eq!(
        common::Reply::from_bytes(raw).rcode(),
        ResponseCode::NXDomain
    );
}
