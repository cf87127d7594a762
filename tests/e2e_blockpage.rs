//! The block page (SPEC "Staff and monitoring"), over real sockets: a
//! blocked name gets 403 and the page (name, reason, alternatives as links,
//! contact, a reference also logged), anything else 404 and a neutral page,
//! `Accept: application/json` the same facts as JSON; no Host, a malformed
//! one or headers over 8 KiB get 400, and nothing from the request is
//! echoed unescaped; a slow client is cut off while others are served and
//! connections are capped; over HTTPS, with a CA made here, the SNI names
//! the site when there is no Host, and SIGHUP loads a new certificate.

mod common;

use common::http::{self, Response};
use common::{Setup, Sinkhole};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REASON: &str = "Zoom is not approved for NHS use (IG policy).";
const CONTACT: &str = "Information Governance, ig@example.nhs.uk, ext. 1234";

fn setup() -> Setup {
    Setup::new()
        .category_with_links(
            "unapproved-video",
            Some("redirect"),
            REASON,
            &[("Microsoft Teams", "https://teams.microsoft.com")],
            &["Attend Anywhere"],
        )
        .list("unapproved-video", Some("unapproved-video"), "zoom.us\n")
        .allowlist("ok", "support.zoom.us\n")
        .yaml(&format!(
            "blockpage:\n  organisation: \"NHS Example Trust\"\n  contact: \"{CONTACT}\"\n"
        ))
        .with_blockpage()
}

fn get(addr: SocketAddr, host: &str, accept: &str) -> Response {
    http::raw(
        addr,
        format!("GET /meeting/123?pwd=x HTTP/1.1\r\nHost: {host}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap_or_else(|e| panic!("GET {host}: {e}"))
}

/// The JSON audit lines with `"event": "blockpage"`.
fn blockpage_lines(sh: &Sinkhole) -> Vec<serde_json::Value> {
    sh.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "blockpage")
        .collect()
}

fn wait_for_line(sh: &Sinkhole, reference: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = blockpage_lines(sh)
            .into_iter()
            .find(|l| l["reference"] == reference)
        {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "reference {reference} never logged:\n{}",
            sh.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_blocked_name_gets_the_page_with_everything_staff_need() {
    let sh = setup().serve();
    let addr = sh.http.unwrap();
    let r = get(addr, "US04web.Zoom.us:80", "text/html");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let b = &r.body;
    for must in [
        "us04web.zoom.us",
        REASON,
        "<a href=\"https://teams.microsoft.com\">Microsoft Teams</a>",
        "<li>Attend Anywhere</li>",
        CONTACT,
        "NHS Example Trust",
    ] {
        assert!(b.contains(must), "page lacks {must:?}:\n{b}");
    }
    assert!(!b.contains("<script"), "no script: {b}");
    assert!(
        !b.contains("http://") && !b.contains("src="),
        "no external asset: {b}"
    );
    // The reference on the page is the one in the log line.
    let at = b.find("class=\"ref\">").expect("a reference") + "class=\"ref\">".len();
    let reference = &b[at..at + b[at..].find('<').unwrap()];
    assert_eq!(reference.len(), 22, "{reference}");
    let line = wait_for_line(&sh, reference);
    assert_eq!(line["name"], "us04web.zoom.us");
    assert_eq!(line["client"], "127.0.0.1");
    assert!(line["ts"].as_str().unwrap().ends_with('Z'));
    let m = sh.metrics();
    assert_eq!(
        http::metric(
            &m,
            "sinkhole_blockpage_requests_total",
            &[("result", "blocked")]
        ),
        1.0
    );
}

#[test]
fn json_gives_the_same_facts() {
    let sh = setup().serve();
    let addr = sh.http.unwrap();
    let r = get(addr, "zoom.us", "application/json");
    assert_eq!(r.status, 403);
    let v = r.json();
    assert_eq!(v["name"], "zoom.us");
    assert_eq!(v["blocked"], true);
    assert_eq!(v["category"], "unapproved-video");
    assert_eq!(v["list"], "unapproved-video");
    assert_eq!(v["reason"], REASON);
    assert_eq!(v["contact"], CONTACT);
    assert_eq!(
        v["alternatives"],
        serde_json::json!([
            {"name": "Microsoft Teams", "url": "https://teams.microsoft.com"},
            {"name": "Attend Anywhere", "url": null}
        ])
    );
    let reference = v["reference"].as_str().unwrap();
    wait_for_line(&sh, reference);

    let r = get(addr, "nhs.uk", "application/json");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        serde_json::json!({"name": "nhs.uk", "blocked": false})
    );
}

#[test]
fn a_name_that_is_not_blocked_gets_a_neutral_404() {
    let sh = setup().serve();
    let addr = sh.http.unwrap();
    for host in ["nhs.uk", "support.zoom.us", "notzoom.us"] {
        let r = get(addr, host, "*/*");
        assert_eq!(r.status, 404, "{host}: {}", r.body);
        assert!(r.body.contains(host));
        assert!(!r.body.contains("blocked on this network.") || r.body.contains("not blocked"));
        assert!(!r.body.contains(REASON), "no accusation: {}", r.body);
    }
    assert!(blockpage_lines(&sh).is_empty(), "only blocks are logged");
    assert_eq!(
        http::metric(
            &sh.metrics(),
            "sinkhole_blockpage_requests_total",
            &[("result", "not_blocked")]
        ),
        3.0
    );
}

#[test]
fn bad_requests_get_400_and_nothing_echoed() {
    let sh = setup().serve();
    let addr = sh.http.unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("no Host", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n".to_vec()),
        (
            "script in Host",
            b"GET / HTTP/1.1\r\nHost: <script>alert(1)</script>\r\n\r\n".to_vec(),
        ),
        (
            "two Hosts",
            b"GET / HTTP/1.1\r\nHost: zoom.us\r\nHost: nhs.uk\r\n\r\n".to_vec(),
        ),
        (
            "not HTTP",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
        ),
        (
            "headers over 8 KiB",
            format!(
                "GET / HTTP/1.1\r\nHost: zoom.us\r\nX-Pad: {}\r\n\r\n",
                "a".repeat(9000)
            )
            .into_bytes(),
        ),
    ];
    for (what, req) in &cases {
        let r = http::raw(addr, req).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.status, 400, "{what}: {}", r.body);
        assert!(!r.body.contains('<'), "{what}: echoed {:?}", r.body);
    }
    assert_eq!(
        http::metric(
            &sh.metrics(),
            "sinkhole_blockpage_requests_total",
            &[("result", "bad_request")]
        ),
        cases.len() as f64
    );
    // The admin port is never the block page.
    let r = http::get(sh.admin, "/");
    assert_ne!(r.status, 403);
    assert!(!r.body.contains(REASON));
}

#[test]
fn a_slow_client_is_cut_off_while_others_are_served() {
    let sh = setup().serve();
    let addr = sh.http.unwrap();
    // Half a request head, then nothing.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: zo").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // Others are served meanwhile.
    for _ in 0..3 {
        assert_eq!(get(addr, "zoom.us", "*/*").status, 403);
    }
    // The slow one is closed (SPEC: headers within 10 s), without a page.
    let mut rest = Vec::new();
    let n = slow
        .read_to_end(&mut rest)
        .expect("closed, not timed out on our side");
    assert_eq!(n, 0, "nothing answered to half a request: {rest:?}");
}

#[test]
fn connections_are_capped_and_the_page_recovers() {
    let sh = setup().serve();
    let addr = sh.http.unwrap();
    // Fill the cap with idle connections, each answered once (so the
    // server has surely accepted it) and then kept open.
    let mut held = Vec::new();
    for _ in 0..512 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: nhs.uk\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0 && buf.starts_with(b"HTTP/1.1 404"));
        held.push(s);
    }
    // One more is closed at once, unanswered.
    let mut extra = TcpStream::connect(addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: zoom.us\r\n\r\n");
    let mut buf = Vec::new();
    let _ = extra.read_to_end(&mut buf);
    assert!(buf.is_empty(), "over the cap: closed without a page");
    // DNS does not notice.
    let r = sh.udp(&common::Q::a("zoom.us"));
    assert!(!r.answers().is_empty());
    // Room again once some close.
    held.truncate(500);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match http::raw(
            addr,
            b"GET / HTTP/1.1\r\nHost: zoom.us\r\nConnection: close\r\n\r\n",
        ) {
            Ok(r) if r.status == 403 => break,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            other => panic!("no room after closing connections: {other:?}"),
        }
    }
}

// ---- HTTPS -----------------------------------------------------------------

/// A CA and a certificate it issued for the block page's names, written
/// as PEM into `dir`; returns (CA PEM, cert path, key path).
fn make_certificate(dir: &Path, serial: u64) -> (String, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Test Trust Internal CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec![
        "zoom.us".to_string(),
        "*.zoom.us".to_string(),
        "blockpage.trust.test".to_string(),
    ])
    .unwrap();
    leaf.serial_number = Some(serial.into());
    let issuer = Issuer::new(ca, ca_key);
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let cert_path = dir.join(format!("blockpage-{serial}.pem"));
    let key_path = dir.join(format!("blockpage-{serial}.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca_cert.pem(), cert_path, key_path)
}

/// One request over TLS with `sni`, trusting only `ca`; the response and
/// the certificate the server presented, or why the exchange failed.
fn tls_get(
    addr: SocketAddr,
    ca: &str,
    sni: &str,
    request: &str,
) -> Result<(Response, Vec<u8>), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(request.as_bytes())
        .map_err(|e| format!("handshake or write: {e}"))?;
    let mut raw = Vec::new();
    // A peer closing without close_notify is fine here.
    let _ = tls.read_to_end(&mut raw);
    let served = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let r = http::parse_response(&raw).map_err(|e| e.to_string())?;
    Ok((r, served))
}

#[test]
fn https_uses_the_sni_name_and_reloads_its_certificate_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificate(dir.path(), 1);
    let sh = setup()
        .with_blockpage_tls(cert.clone(), key.clone())
        .serve();
    let addr = sh.https.unwrap();

    // No Host: the SNI names the site.
    let (r, first) = tls_get(
        addr,
        &ca,
        "zoom.us",
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("zoom.us") && r.body.contains(REASON));
    // A Host wins over the SNI.
    let (r, _) = tls_get(
        addr,
        &ca,
        "blockpage.trust.test",
        "GET / HTTP/1.1\r\nHost: meet.zoom.us\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.json()["name"], "meet.zoom.us");
    let (r, _) = tls_get(
        addr,
        &ca,
        "blockpage.trust.test",
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 404, "the SNI here names no blocked site");

    // A new certificate in the same files, then SIGHUP: new handshakes get it.
    let (ca2, cert2, key2) = make_certificate(dir.path(), 2);
    std::fs::copy(&cert2, &cert).unwrap();
    std::fs::copy(&key2, &key).unwrap();
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -HUP {}", sh.pid())])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    // Until the reload lands, handshakes fail: the old certificate is not
    // from the new CA.
    loop {
        match tls_get(
            addr,
            &ca2,
            "zoom.us",
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        ) {
            Ok((r, served)) => {
                assert_eq!(r.status, 403);
                assert_ne!(served, first, "a new certificate");
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "the new certificate never served: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
