//! Lifecycle: SIGTERM drains under load (every query that reached the
//! upstream is answered, then exit 0) and ends the process within its
//! bound even while a reload hangs on a download; port 53 as a non-root
//! user with only CAP_NET_BIND_SERVICE.

mod common;

use common::dns::{self, Q, Reply};
use common::listserver::{ListServer, Route};
use common::upstream::Script;
use common::{FakeUpstream, ResponseCode, Setup, ports};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn ip(d: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, d)
}

fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[test]
fn sigterm_under_load_answers_every_query_it_forwarded_then_exits_zero() {
    // The upstream takes 20 ms a query, one at a time, so queries are
    // always waiting on it.
    let up = FakeUpstream::start();
    up.set_default(Script::a("x", 60, &[ip(8)]).delayed(Duration::from_millis(20)));
    let mut sh = Setup::new()
        .upstream(up.addr())
        .timeout("2s")
        .list("ads", None, "ads.test\n")
        .serve();
    let dns = sh.dns;
    let stop = Arc::new(AtomicBool::new(false));
    let forwarded_answers = Arc::new(AtomicUsize::new(0));
    let other_answers = Arc::new(AtomicUsize::new(0));
    // Eight clients: each sends a new name (forwarded), a blocked one and
    // a repeated one (cached), reading answers as they come.
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (stop, fwd, other) = (
                stop.clone(),
                forwarded_answers.clone(),
                other_answers.clone(),
            );
            std::thread::spawn(move || {
                let sock = dns::udp_socket(dns, Duration::from_millis(50));
                let mut n = 0u32;
                let mut quiet = 0;
                loop {
                    if !stop.load(Ordering::Relaxed) {
                        n += 1;
                        for name in [
                            format!("c{c}-n{n}.drain.example"),
                            "x.ads.test".to_string(),
                            "warm.drain.example".to_string(),
                        ] {
                            let _ = sock.send(&Q::a(&name).id(n as u16).bytes());
                        }
                    }
                    match dns::recv(&sock) {
                        Some(raw) => {
                            quiet = 0;
                            let r = Reply::from_bytes(raw);
                            let q = r.msg.queries.first().map(|q| q.name().to_ascii());
                            match q {
                                Some(name) if name.contains("-n") => {
                                    fwd.fetch_add(1, Ordering::Relaxed);
                                }
                                _ => {
                                    other.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        // After the stop, a few quiet reads end the client.
                        None if stop.load(Ordering::Relaxed) => {
                            quiet += 1;
                            if quiet > 20 {
                                return;
                            }
                        }
                        None => {}
                    }
                }
            })
        })
        .collect();
    // Under load: wait until many queries went upstream.
    let deadline = Instant::now() + Duration::from_secs(20);
    while up.count() < 50 {
        assert!(Instant::now() < deadline, "the load never built up");
        std::thread::sleep(Duration::from_millis(10));
    }
    sigterm(sh.pid());
    let exit = sh
        .wait_exit(Duration::from_secs(15))
        .expect("sinkhole exits after SIGTERM under load");
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(exit.code(), Some(0), "{exit}");
    // Every query the upstream saw was answered to its client: the drain
    // finished what was in flight. (Queries sent as the sockets closed
    // were never taken, and are not counted at the upstream either.)
    let upstream_saw = up.count();
    let answered = forwarded_answers.load(Ordering::Relaxed);
    assert!(
        answered >= upstream_saw,
        "the upstream saw {upstream_saw} queries, clients got {answered} answers"
    );
    assert!(other_answers.load(Ordering::Relaxed) > 0);
}

#[test]
fn sigterm_during_a_reload_stuck_on_a_download_exits_within_its_bound() {
    let up = FakeUpstream::start();
    let server = ListServer::start();
    server.set("/ads.txt", Route::list("ads.test\n"));
    let mut sh = Setup::new()
        .upstream(up.addr())
        .category("ads", Some("nxdomain"), "Advertising", &[])
        .remote_list("remote", Some("ads"), &server.url("/ads.txt"), &[])
        .serve();
    // The next download hangs (the server sends headers, then nothing).
    server.set("/ads.txt", Route::hang());
    let admin = sh.admin;
    let _reload = std::thread::spawn(move || {
        let _ =
            common::http::try_request_within(admin, "POST", "/reload", "", Duration::from_secs(60));
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.requests("/ads.txt") < 2 {
        assert!(Instant::now() < deadline, "the reload never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Still answering while the reload hangs.
    assert_eq!(Q::a("ads.test").udp(sh.dns).rcode(), ResponseCode::NXDomain);
    let asked = Instant::now();
    sigterm(sh.pid());
    // The bound: the drain's (two upstream timeouts and a second) plus the
    // audit log's flush; far below the download's own 30 s.
    let exit = sh
        .wait_exit(Duration::from_secs(20))
        .expect("sinkhole exits while a reload is stuck");
    assert_eq!(exit.code(), Some(0), "{exit}");
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "exited before the stuck download gave up"
    );
}

/// `setpriv` and the unprivileged account to run as, when this test can
/// drop privileges (it runs as root).
fn drop_privileges() -> Option<&'static str> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipping: not root, so privileges cannot be dropped here");
        return None;
    }
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if setpriv.is_none() {
        eprintln!("skipping: setpriv (util-linux) not installed");
    }
    setpriv
}

/// Starts `sinkhole serve` as uid/gid 65534 through setpriv, with
/// CAP_NET_BIND_SERVICE as an ambient capability when `cap` is set.
fn serve_unprivileged(
    setpriv: &str,
    cap: bool,
    dir: &std::path::Path,
    dns: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
) -> std::process::Child {
    std::fs::write(dir.join("ads.txt"), "ads.test\n").unwrap();
    std::fs::write(
        dir.join("sinkhole.yaml"),
        format!(
            "listen:\n  dns: [\"{dns}\"]\n  admin: \"{admin}\"\nupstream:\n  servers: [\"{upstream}\"]\n\
             lists:\n  - name: ads\n    path: ads.txt\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    for f in ["", "ads.txt", "sinkhole.yaml"] {
        let mode = if f.is_empty() { 0o755 } else { 0o644 };
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let mut args = vec![
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--no-new-privs",
    ];
    if cap {
        args.extend([
            "--inh-caps=+net_bind_service",
            "--ambient-caps=+net_bind_service",
        ]);
    } else {
        args.extend(["--inh-caps=-all"]);
    }
    Command::new(setpriv)
        .args(&args)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_sinkhole"))
        .args(["serve", "-c"])
        .arg(dir.join("sinkhole.yaml"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("out")).unwrap())
        .stderr(std::fs::File::create(dir.join("err")).unwrap())
        .spawn()
        .expect("spawn setpriv")
}

#[test]
fn port_53_as_a_non_root_user_needs_only_cap_net_bind_service() {
    let Some(setpriv) = drop_privileges() else {
        return;
    };
    // A loopback address of its own: port 53 on 127.0.0.1 may be the host's.
    let dns: SocketAddr = (Ipv4Addr::new(127, 53, 53, 53), 53).into();
    if std::net::UdpSocket::bind(dns).is_err() {
        eprintln!("skipping: {dns} is taken on this host");
        return;
    }
    let up = FakeUpstream::start();
    let dir = tempfile::tempdir().unwrap();

    // Without the capability: a clear error, not a hang or a panic.
    let admin = ports::free_addr();
    let mut child = serve_unprivileged(setpriv, false, dir.path(), dns, admin, up.addr());
    let status = child.wait().unwrap();
    let err = std::fs::read_to_string(dir.path().join("err")).unwrap()
        + &std::fs::read_to_string(dir.path().join("out")).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("127.53.53.53:53"), "{err}");
    assert!(
        err.to_lowercase().contains("permission denied"),
        "names the cause: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // With it: serves on port 53 as uid 65534.
    let admin = ports::free_addr();
    let mut child = serve_unprivileged(setpriv, true, dir.path(), dns, admin, up.addr());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = common::http::try_get(admin, "/readyz")
            && r.status == 200
        {
            break;
        }
        if let Some(s) = child.try_wait().unwrap() {
            panic!(
                "exited with {s}: {}",
                std::fs::read_to_string(dir.path().join("err")).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid}"
    );
    assert_eq!(Q::a("x.ads.test").udp(dns).rcode(), ResponseCode::NXDomain);
    assert_eq!(Q::a("fine.example.org").udp(dns).a_addrs(), vec![ip(1)]);
    sigterm(child.id());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
