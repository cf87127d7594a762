//! Remote and signed lists (SPEC "The IG team's lists"), against a real
//! HTTP server in the test: conditional requests (a 304 builds nothing,
//! counted at the server), what a download must look like (a 404, an HTML
//! page and an empty body are kept at the previous version), the size cap
//! and the timeout, a cold start from `state_dir` with the server down, a
//! first start with no copy (DNS answers, `/readyz` 503, then 200 once the
//! server is back), and minisign signatures (good, bad, missing, wrong key)
//! made in the test with the `minisign` tool.

mod common;

use common::dns::Q;
use common::listserver::{ListServer, Route};
use common::{FakeUpstream, Setup, Sinkhole};
use hickory_proto::op::ResponseCode;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Generous: the server's own retry is within 10 s.
const DEADLINE: Duration = Duration::from_secs(40);

fn rcode(sh: &Sinkhole, name: &str) -> ResponseCode {
    sh.udp(&Q::a(name)).rcode()
}

fn status_of(v: &serde_json::Value, name: &str) -> serde_json::Value {
    v["lists"]
        .as_array()
        .and_then(|a| a.iter().find(|l| l["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("{name} in {v}"))
}

/// Polls until `done` holds, failing with the server's logs after DEADLINE.
fn wait(sh: &Sinkhole, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < DEADLINE, "{what}\n{}", sh.logs());
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn remote_setup(up: &FakeUpstream, url: &str, extra: &[&str]) -> Setup {
    Setup::new()
        .upstream(up.addr())
        .category("ads", Some("nxdomain"), "Advertising", &[])
        .remote_list("remote", Some("ads"), url, extra)
}

#[test]
fn a_remote_list_is_fetched_and_a_304_rebuilds_nothing() {
    let up = FakeUpstream::start();
    let server = ListServer::start();
    server.set("/ads.txt", Route::list("ads.test\ntracker.test\n"));
    let sh = remote_setup(&up, &server.url("/ads.txt"), &["refresh: 1s"]).serve();
    assert_eq!(rcode(&sh, "www.ads.test"), ResponseCode::NXDomain);
    let v = sh.get("/readyz").json();
    let remote = status_of(&v, "remote");
    assert_eq!(remote["status"], "ok", "{v}");
    assert_eq!(remote["source"], "url", "{v}");
    assert_eq!(remote["rules"], 2, "{v}");
    assert!(
        remote["updated"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{v}"
    );
    let builds = sh.metric("sinkhole_policy_builds_total", &[]);
    let updated = remote["updated"].clone();

    // Refreshed every second: each is a conditional request answered 304.
    wait(&sh, "two 304s", || server.not_modified("/ads.txt") >= 2);
    assert_eq!(sh.metric("sinkhole_policy_builds_total", &[]), builds);
    assert!(
        sh.metric(
            "sinkhole_list_fetches_total",
            &[("list", "remote"), ("result", "not_modified")]
        ) >= 2.0
    );
    assert_eq!(
        status_of(&sh.get("/readyz").json(), "remote")["updated"],
        updated
    );

    // A change is taken on the next refresh.
    server.set(
        "/ads.txt",
        Route::list("ads.test\ntracker.test\nnew.test\n"),
    );
    wait(&sh, "new.test blocked", || {
        rcode(&sh, "new.test") == ResponseCode::NXDomain
    });
    wait(&sh, "a build counted", || {
        sh.metric("sinkhole_policy_builds_total", &[]) > builds
    });
    // The copy on disk is the new version.
    let copy = std::fs::read_to_string(sh.dir().join("state/remote.list")).unwrap();
    assert!(copy.contains("new.test"), "{copy}");
}

#[test]
fn last_modified_is_honoured_too() {
    let up = FakeUpstream::start();
    let server = ListServer::start();
    let mut route = Route::list("ads.test\n");
    route.etag = None;
    route.last_modified = Some("Sun, 29 Nov 2026 05:00:00 GMT".into());
    server.set("/lm.txt", route);
    let sh = remote_setup(&up, &server.url("/lm.txt"), &["refresh: 1s"]).serve();
    assert_eq!(rcode(&sh, "ads.test"), ResponseCode::NXDomain);
    wait(&sh, "a 304 by date", || server.not_modified("/lm.txt") >= 1);
}

#[test]
fn a_download_that_is_not_a_list_is_kept_at_the_previous_version() {
    let up = FakeUpstream::start();
    let server = ListServer::start();
    let rules: String = (0..20).map(|i| format!("r{i}.test\n")).collect();
    server.set("/l.txt", Route::list(&rules));
    let sh = remote_setup(&up, &server.url("/l.txt"), &[]).serve();
    assert_eq!(rcode(&sh, "r3.test"), ResponseCode::NXDomain);
    let bad = [
        (
            "404",
            Route::status(404, "gone\n", "text/plain"),
            "HTTP 404",
        ),
        (
            "an HTML error page",
            Route::status(200, "<html><body>Moved</body></html>", "text/plain"),
            "HTML",
        ),
        (
            "text/html",
            Route::status(200, "r1.test\n", "text/html; charset=utf-8"),
            "HTML",
        ),
        (
            "an empty body",
            Route::status(200, "", "text/plain"),
            "no line is a rule",
        ),
        (
            "comments only",
            Route::status(200, "# moved to another URL\n", "text/plain"),
            "no line is a rule",
        ),
    ];
    for (what, route, says) in bad {
        server.set("/l.txt", route);
        let r = sh.post("/reload");
        assert_eq!(r.status, 422, "{what}: {}", r.body);
        let s = status_of(&r.json(), "remote");
        assert_eq!(s["status"], "kept", "{what}: {s}");
        assert_eq!(s["rules"], 20, "{what}: {s}");
        assert!(s["error"].as_str().unwrap().contains(says), "{what}: {s}");
        assert_eq!(rcode(&sh, "r3.test"), ResponseCode::NXDomain, "{what}");
    }
}

#[test]
fn downloads_over_the_size_cap_are_refused() {
    let up = FakeUpstream::start();
    let server = ListServer::start();
    server.set("/big.txt", Route::list("ads.test\n"));
    let sh = remote_setup(&up, &server.url("/big.txt"), &[]).serve();
    let line = b"abcdefghijklmnopqrstuvwxyz.example\n";
    let big: Vec<u8> = line
        .iter()
        .copied()
        .cycle()
        .take((64 << 20) + 100)
        .collect();
    server.set("/big.txt", Route::bytes(big));
    let r = sh.post("/reload");
    assert_eq!(r.status, 422, "{}", r.body);
    let s = status_of(&r.json(), "remote");
    assert!(
        s["error"].as_str().unwrap().contains("larger than 64 MiB"),
        "{s}"
    );
    assert_eq!(rcode(&sh, "ads.test"), ResponseCode::NXDomain);
}

#[test]
fn a_server_that_never_answers_times_out_after_30_s() {
    let up = FakeUpstream::start();
    let server = ListServer::start();
    server.set("/slow.txt", Route::list("ads.test\n"));
    let sh = remote_setup(&up, &server.url("/slow.txt"), &[]).serve();
    server.set("/slow.txt", Route::hang());
    // While the download hangs, DNS and local changes go on.
    let admin = sh.admin;
    let reload = std::thread::spawn(move || {
        common::http::post_waiting(admin, "/reload", Duration::from_secs(60))
    });
    assert_eq!(rcode(&sh, "ads.test"), ResponseCode::NXDomain);
    let r = reload.join().unwrap();
    assert_eq!(r.status, 422, "{}", r.body);
    let s = status_of(&r.json(), "remote");
    assert!(
        s["error"]
            .as_str()
            .unwrap()
            .contains("no answer within 30s"),
        "{s}"
    );
    assert_eq!(s["status"], "kept");
}

#[test]
fn a_cold_start_with_the_server_down_serves_the_copy_on_disk() {
    let up = FakeUpstream::start();
    let server = ListServer::start();
    server.set("/ads.txt", Route::list("ads.test\n"));
    let setup = remote_setup(&up, &server.url("/ads.txt"), &[]);
    let sh = setup.serve();
    assert_eq!(rcode(&sh, "ads.test"), ResponseCode::NXDomain);
    let setup = stop(sh);
    drop(server);

    let sh = setup.serve();
    assert_eq!(rcode(&sh, "ads.test"), ResponseCode::NXDomain, "from disk");
    let s = status_of(&sh.get("/readyz").json(), "remote");
    assert_eq!(s["source"], "disk", "{s}");
    assert_eq!(s["rules"], 1, "{s}");
    // The fetch failed, but the list has a version: ready.
    assert_eq!(sh.get("/readyz").status, 200);
}

/// Stops a server and hands its setup (and directory) back.
fn stop(mut sh: Sinkhole) -> Setup {
    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", sh.pid())])
        .status()
        .unwrap();
    assert!(status.success());
    sh.wait_exit(Duration::from_secs(15)).expect("exits");
    sh.into_setup()
}

#[test]
fn a_first_start_without_a_copy_answers_dns_and_waits_to_be_ready() {
    let up = FakeUpstream::start();
    // Claim a port, then free it: nothing listens there for now.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("http://{addr}/ads.txt");
    let sh = remote_setup(&up, &url, &[]).serve_unready();
    assert_eq!(
        rcode(&sh, "ads.test"),
        ResponseCode::NoError,
        "served without it"
    );
    let r = sh.get("/readyz");
    assert_eq!(r.status, 503, "{}", r.body);
    let s = status_of(&r.json(), "remote");
    assert_eq!(s["status"], "missing", "{s}");
    assert!(s["error"].as_str().is_some(), "{s}");

    let server = ListServer::start_on(addr);
    server.set("/ads.txt", Route::list("ads.test\n"));
    wait(&sh, "ready once the list server is back", || {
        sh.get("/readyz").status == 200
    });
    assert_eq!(rcode(&sh, "ads.test"), ResponseCode::NXDomain);
}

/// A minisign key pair in `dir` (no password), or None without the tool.
fn keypair(dir: &Path) -> Option<String> {
    let ok = Command::new("minisign")
        .args(["-G", "-W", "-f", "-p"])
        .arg(dir.join("k.pub"))
        .arg("-s")
        .arg(dir.join("k.sec"))
        .output()
        .ok()?
        .status
        .success();
    assert!(ok, "minisign -G");
    let pubkey = std::fs::read_to_string(dir.join("k.pub")).unwrap();
    Some(pubkey.lines().last().unwrap().trim().to_owned())
}

fn sign(dir: &Path, file: &Path) -> Vec<u8> {
    let out = Command::new("minisign")
        .arg("-S")
        .arg("-s")
        .arg(dir.join("k.sec"))
        .arg("-m")
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "minisign -S: {out:?}");
    let mut sig = file.as_os_str().to_owned();
    sig.push(".minisig");
    std::fs::read(sig).unwrap()
}

#[test]
fn signed_lists_are_taken_only_when_the_signature_verifies() {
    let keys = tempfile::tempdir().unwrap();
    let Some(key) = keypair(keys.path()) else {
        eprintln!("SKIP: minisign is not installed (apt install minisign)");
        return;
    };
    let other = tempfile::tempdir().unwrap();
    keypair(other.path()).unwrap();
    let up = FakeUpstream::start();
    let server = ListServer::start();
    let write = |dir: &Path, body: &str| {
        let f = dir.join("list.txt");
        std::fs::write(&f, body).unwrap();
        sign(dir, &f)
    };
    let v1 = "ads.test\n";
    server.set("/s.txt", Route::list(v1));
    server.set("/s.txt.minisig", Route::bytes(write(keys.path(), v1)));
    let key_line = format!("public_key: \"{key}\"");
    let sh = remote_setup(
        &up,
        &server.url("/s.txt"),
        &["signature: minisign", key_line.as_str()],
    )
    .serve();
    assert_eq!(
        rcode(&sh, "ads.test"),
        ResponseCode::NXDomain,
        "good signature"
    );

    let v2 = "ads.test\nv2.test\n";
    // Bad: the list changed after signing.
    server.set("/s.txt", Route::list(v2));
    let r = sh.post("/reload");
    assert_eq!(r.status, 422, "{}", r.body);
    let s = status_of(&r.json(), "remote");
    assert!(
        s["error"].as_str().unwrap().contains("does not verify"),
        "{s}"
    );
    assert_eq!(rcode(&sh, "v2.test"), ResponseCode::NoError);
    // Wrong key.
    server.set("/s.txt.minisig", Route::bytes(write(other.path(), v2)));
    let s = status_of(&sh.post("/reload").json(), "remote");
    assert!(s["error"].as_str().unwrap().contains("another key"), "{s}");
    // Missing.
    server.set("/s.txt.minisig", Route::status(404, "", "text/plain"));
    let s = status_of(&sh.post("/reload").json(), "remote");
    assert!(
        s["error"].as_str().unwrap().contains("signature missing"),
        "{s}"
    );
    assert_eq!(rcode(&sh, "v2.test"), ResponseCode::NoError);
    // Good again.
    server.set("/s.txt.minisig", Route::bytes(write(keys.path(), v2)));
    assert_eq!(sh.post("/reload").status, 200);
    assert_eq!(rcode(&sh, "v2.test"), ResponseCode::NXDomain);
    assert!(sh.dir().join("state/remote.list.minisig").is_file());
}

#[test]
fn signed_local_lists_verify_their_minisig_file() {
    let keys = tempfile::tempdir().unwrap();
    let Some(key) = keypair(keys.path()) else {
        eprintln!("SKIP: minisign is not installed (apt install minisign)");
        return;
    };
    let up = FakeUpstream::start();
    let key_line = format!("public_key: \"{key}\"");
    let setup = Setup::new()
        .upstream(up.addr())
        .category("ads", Some("nxdomain"), "Advertising", &[])
        .list_with(
            "ads",
            Some("ads"),
            "domains",
            "ads.test\n",
            &["signature: minisign", key_line.as_str()],
        );
    let list = setup.list_path("ads");
    sign(keys.path(), &list);
    let config = setup.write_config();
    assert_eq!(common::cli::check(&config).code, Some(0));
    let sh = setup.serve();
    assert_eq!(rcode(&sh, "ads.test"), ResponseCode::NXDomain);
    std::fs::write(&list, "ads.test\nunsigned.test\n").unwrap();
    let r = sh.post("/reload");
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(rcode(&sh, "unsigned.test"), ResponseCode::NoError);
    sign(keys.path(), &list);
    assert_eq!(sh.post("/reload").status, 200);
    assert_eq!(rcode(&sh, "unsigned.test"), ResponseCode::NXDomain);
}

/// A CA and a `localhost` certificate it signed: (CA PEM, chain PEM, key PEM).
fn internal_ca() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Trust Internal CA (test)");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = leaf.signed_by(&key, &Issuer::new(ca, ca_key)).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn https_list_servers_are_trusted_through_tls_ca() {
    let (ca, cert, key) = internal_ca();
    let server = ListServer::start_tls(&cert, &key);
    server.set("/ads.txt", Route::list("ads.test\n"));
    let url = server.https_url("localhost", "/ads.txt");
    let up = FakeUpstream::start();

    // Without the trust's CA the server is not trusted: no version, not ready.
    let sh = remote_setup(&up, &url, &[]).serve_unready();
    let r = sh.get("/readyz");
    assert_eq!(r.status, 503, "{}", r.body);
    wait(&sh, "the TLS failure reported", || {
        let s = status_of(&sh.get("/readyz").json(), "remote");
        s["error"]
            .as_str()
            .is_some_and(|e| e.contains("certificate") || e.contains("issuer"))
    });
    drop(sh);

    let setup = remote_setup(&up, &url, &[]).yaml("tls_ca: internal-ca.pem\n");
    setup.write("internal-ca.pem", &ca);
    let sh = setup.serve();
    assert_eq!(rcode(&sh, "ads.test"), ResponseCode::NXDomain);
    assert_eq!(
        status_of(&sh.get("/readyz").json(), "remote")["source"],
        "url"
    );

    // `check` fetches it too, and says where the list came from.
    let out = common::cli::check(&sh.setup.config_path());
    assert_eq!(out.code, Some(0), "{}", out.show());
    assert!(out.stdout.contains(" url"), "{}", out.show());
}
