//! Forwarding loops: an upstream that is one of sinkhole's own listeners
//! (named directly, reached through a wildcard listener, or found in the
//! host's resolv.conf by `upstream: system`) is a configuration error; one
//! that forwards back to us is found at run time, without a storm.

mod common;

use common::dns::Q;
use common::{ResponseCode, cli, ports};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn config(dir: &Path, listen: &str, upstream: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("ads.txt"), "ads.test\n").unwrap();
    let cfg = dir.join("sinkhole.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen:\n  dns: [\"{listen}\"]\nupstream:\n  servers: [{upstream}]\nlists:\n  - name: ads\n    path: ads.txt\n"
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn an_upstream_that_is_our_own_listener_is_refused() {
    let port = ports::free_addr().port();
    let dir = tempfile::tempdir().unwrap();
    for (listen, upstream) in [
        (format!("127.0.0.1:{port}"), format!("\"127.0.0.1:{port}\"")),
        (format!("0.0.0.0:{port}"), format!("\"127.0.0.1:{port}\"")),
        (format!("[::]:{port}"), format!("\"[::1]:{port}\"")),
    ] {
        let cfg = config(dir.path(), &listen, &upstream);
        let out = cli::run(dir.path(), &["check", "-c", cfg.to_str().unwrap()]);
        out.assert_no_panic();
        assert_eq!(out.code, Some(1), "{listen} / {upstream}: {}", out.show());
        let text = out.all();
        assert!(
            text.contains("own listener") && text.contains("loop"),
            "{listen} / {upstream}: {text}"
        );
        assert!(
            text.contains(&format!("{}:", cfg.display())),
            "located: {text}"
        );
    }
    // Another port on the same address is no loop.
    let cfg = config(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        &format!("\"127.0.0.1:{}\"", ports::free_addr().port()),
    );
    let out = cli::run(dir.path(), &["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.show());
}

#[test]
fn upstream_system_naming_ourselves_in_resolv_conf_is_refused() {
    // A private mount namespace lets the test put its own resolv.conf in
    // /etc without touching the host's.
    let probe = Command::new("unshare").args(["-m", "true"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIP: cannot create a mount namespace here (unshare -m needs root or user namespaces)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "# the host's resolver is sinkhole itself\nnameserver 127.0.0.1\n",
    )
    .unwrap();
    let cfg = config(dir.path(), "127.0.0.1:53", "\"system\"");
    let out = Command::new("unshare")
        .arg("-m")
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "mount --bind '{}' /etc/resolv.conf && exec '{}' check -c '{}'",
            resolv.display(),
            common::sinkhole::BIN,
            cfg.display()
        ))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("resolv.conf names 127.0.0.1:53") && text.contains("own listener"),
        "{text}"
    );
}

/// Counts every query the server has recorded, whatever its outcome.
fn queries_seen(sh: &common::Sinkhole) -> f64 {
    ["blocked", "allowed", "cached", "refused", "error"]
        .iter()
        .map(|o| {
            common::http::metric_opt(&sh.metrics(), "sinkhole_queries_total", &[("outcome", o)])
                .unwrap_or(0.0)
        })
        .sum()
}

#[test]
fn an_upstream_that_forwards_back_to_us_is_detected_without_a_storm() {
    // sinkhole forwards to a real Unbound that forwards everything back to
    // sinkhole: the loop is made after start, as when someone repoints a
    // site resolver, so only the run-time detection can see it.
    let port = ports::free_fixed_port();
    let sh = common::Setup::new()
        .upstream(([127, 0, 0, 1], port).into())
        .timeout("500ms")
        .list("ads", None, "ads.test\n")
        .yaml("log:\n  queries: all\n")
        .serve();
    let Some(unbound) = common::unbound::Unbound::forwarder_on_or_skip(port, sh.dns) else {
        return;
    };

    let upstream_up = |sh: &common::Sinkhole| {
        sh.metric(
            "sinkhole_upstream_up",
            &[("upstream", &format!("127.0.0.1:{port}"))],
        )
    };

    // One client query goes round at most a few times: it and its copies
    // join the query already waiting for the same question, on both sides.
    let before = queries_seen(&sh);
    let r = Q::a("round.loop.example").udp(sh.dns);
    assert_eq!(r.rcode(), ResponseCode::ServFail, "{}", r.dump());
    let during = queries_seen(&sh) - before;
    assert!(
        during <= 10.0,
        "one client query became {during} queries at sinkhole"
    );

    // The failed attempt marks the upstream down; its probe comes back to
    // our own listener, which marks it looped and logs an error.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sh.logs().contains("upstream_loop") {
        assert!(
            Instant::now() < deadline,
            "no loop detected:\n{}\n--- unbound ---\n{}",
            sh.logs(),
            unbound.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let line = sh
        .logs()
        .lines()
        .find(|l| l.contains("upstream_loop"))
        .unwrap()
        .to_string();
    assert!(line.contains("\"level\":\"ERROR\""), "{line}");
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert_eq!(
        upstream_up(&sh),
        0.0,
        "a looped upstream shows as out of service"
    );

    // Looped, the upstream is not asked at all: SERVFAIL at once, and no
    // copy of these names ever comes back (each has one audit line).
    // Counters would not show it: Unbound's retries of the earlier query
    // finish at their own pace.
    for i in 0..20 {
        let r = Q::a(&format!("after{i}.loop.example")).udp(sh.dns);
        assert_eq!(r.rcode(), ResponseCode::ServFail, "{}", r.dump());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let logs = sh.logs();
        let lines: Vec<String> = logs
            .lines()
            .filter(|l| l.contains("\"name\":\"after"))
            .map(str::to_string)
            .collect();
        if lines.len() >= 20 {
            break lines;
        }
        assert!(Instant::now() < deadline, "audit lines missing:\n{logs}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(lines.len(), 20, "a name came round again: {lines:#?}");
    for l in &lines {
        assert!(l.contains("\"outcome\":\"error\""), "{l}");
    }

    // The loop is undone (Unbound replaced by a real upstream on the same
    // port): the probe is answered without coming back, and the upstream
    // is used again.
    drop(unbound);
    let real = common::FakeUpstream::start_on(([127, 0, 0, 1], port).into());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = Q::a("again.trust.test").udp(sh.dns);
        if r.rcode() == ResponseCode::NoError {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never used again:\n{}",
            sh.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(real.count() >= 1);
    assert!(sh.logs().contains("upstream_loop_gone"), "{}", sh.logs());
    assert_eq!(upstream_up(&sh), 1.0);
}

/// A forwarder with no mind of its own: each query it gets is sent on to
/// `to` from a fresh socket and the answer relayed back. It merges nothing,
/// so in a loop only sinkhole can stop a query going round. It relays at
/// most `cap` queries (a failing test stays bounded) and counts them all.
struct Relay {
    relayed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Relay {
    fn start_on(port: u16, to: std::net::SocketAddr, cap: usize) -> Relay {
        use std::sync::atomic::Ordering;
        let sock = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
        let relayed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = relayed.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                if count.fetch_add(1, Ordering::SeqCst) >= cap {
                    continue;
                }
                let query = buf[..n].to_vec();
                let back = sock.try_clone().unwrap();
                std::thread::spawn(move || {
                    let out = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                    out.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                    out.send_to(&query, to).unwrap();
                    let mut reply = [0u8; 4096];
                    if let Ok((m, _)) = out.recv_from(&mut reply) {
                        let _ = back.send_to(&reply[..m], from);
                    }
                });
            }
        });
        Relay { relayed }
    }

    fn relayed(&self) -> usize {
        self.relayed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn a_forwarder_that_merges_nothing_cannot_make_one_query_a_storm() {
    // The relay's port is fixed before sinkhole starts: sinkhole → relay →
    // sinkhole. Each copy of a looped query joins the one already waiting
    // for the same question (per worker), so the chain stops within a hop
    // or two per worker instead of running until the first attempt's
    // timeout (thousands of hops on loopback).
    let port = ports::free_fixed_port();
    let sh = common::Setup::new()
        .upstream(([127, 0, 0, 1], port).into())
        .timeout("1s")
        .list("ads", None, "ads.test\n")
        .serve();
    let relay = Relay::start_on(port, sh.dns, 5_000);
    for i in 0..3 {
        let before = relay.relayed();
        let r = Q::a(&format!("round{i}.loop.example")).udp(sh.dns);
        assert_eq!(r.rcode(), ResponseCode::ServFail, "{}", r.dump());
        let hops = relay.relayed() - before;
        assert!(hops <= 8, "one client query went round {hops} times");
    }
    // And the probe that follows the failures finds the loop.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sh.logs().contains("upstream_loop") {
        assert!(
            Instant::now() < deadline,
            "no loop detected:\n{}",
            sh.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
