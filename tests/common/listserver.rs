//! A real HTTP/1.1 server for remote lists, in the test process: each path
//! serves what the test set (status, body, content type), honours
//! `If-None-Match` / `If-Modified-Since` with a 304, and counts requests
//! and 304s per path, so a test can see what the resolver asked.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one path answers.
#[derive(Clone, Debug)]
pub struct Route {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: String,
    /// Sent as `ETag`; a request whose `If-None-Match` equals it gets 304.
    pub etag: Option<String>,
    /// Sent as `Last-Modified`; an `If-Modified-Since` equal to it gets 304.
    pub last_modified: Option<String>,
    /// Accept the connection and never answer (for the fetch timeout).
    pub hang: bool,
}

impl Route {
    /// A 200 list with an ETag derived from its body.
    pub fn list(body: &str) -> Self {
        Route {
            status: 200,
            body: body.as_bytes().to_vec(),
            content_type: "text/plain; charset=utf-8".into(),
            etag: Some(format!("\"{:x}\"", fnv(body.as_bytes()))),
            last_modified: None,
            hang: false,
        }
    }
    pub fn status(status: u16, body: &str, content_type: &str) -> Self {
        Route {
            status,
            body: body.as_bytes().to_vec(),
            content_type: content_type.into(),
            etag: None,
            last_modified: None,
            hang: false,
        }
    }
    pub fn bytes(body: Vec<u8>) -> Self {
        Route {
            status: 200,
            body,
            content_type: "application/octet-stream".into(),
            etag: None,
            last_modified: None,
            hang: false,
        }
    }
    pub fn hang() -> Self {
        Route {
            hang: true,
            ..Route::status(200, "", "text/plain")
        }
    }
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    /// Requests per path (any answer).
    requests: HashMap<String, u64>,
    /// 304 answers per path.
    not_modified: HashMap<String, u64>,
}

/// The server; stops when dropped.
pub struct ListServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl ListServer {
    pub fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// On a given address (to bring a server "back" on the same port).
    pub fn start_on(addr: SocketAddr) -> Self {
        Self::start_with(addr, None)
    }

    /// Over TLS, with this certificate chain and key (PEM), on loopback.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Self::start_with(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Some(Arc::new(config)),
        )
    }

    fn start_with(addr: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind(addr).expect("bind list server");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Acquire) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    match tls {
                        None => serve(conn, &s),
                        Some(config) => {
                            let Ok(server) = rustls::ServerConnection::new(config) else {
                                return;
                            };
                            serve(rustls::StreamOwned::new(server, conn), &s);
                        }
                    }
                });
            }
        });
        ListServer { addr, state, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The `https://` URL of `path` under `host` (which must resolve to
    /// loopback and be named by the certificate: `localhost`).
    pub fn https_url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.addr.port())
    }

    pub fn set(&self, path: &str, route: Route) {
        self.state.lock().unwrap().routes.insert(path.into(), route);
    }

    pub fn requests(&self, path: &str) -> u64 {
        *self.state.lock().unwrap().requests.get(path).unwrap_or(&0)
    }

    pub fn not_modified(&self, path: &str) -> u64 {
        *self
            .state
            .lock()
            .unwrap()
            .not_modified
            .get(path)
            .unwrap_or(&0)
    }
}

impl Drop for ListServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve<S: Read + Write>(conn: S, state: &Mutex<State>) {
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let route = {
            let mut s = state.lock().unwrap();
            *s.requests.entry(path.clone()).or_default() += 1;
            s.routes.get(&path).cloned()
        };
        let Some(route) = route else {
            let _ = write_response(reader.get_mut(), 404, "text/plain", b"not found\n", &[]);
            continue;
        };
        if route.hang {
            // Hold the connection open without a byte until the client
            // gives up (its read then fails and so does ours).
            let mut sink = [0u8; 64];
            let until = std::time::Instant::now() + Duration::from_secs(90);
            while std::time::Instant::now() < until {
                match reader.read(&mut sink) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
            return;
        }
        let etag_match = route
            .etag
            .as_ref()
            .is_some_and(|e| headers.get("if-none-match") == Some(e));
        let lm_match = route
            .last_modified
            .as_ref()
            .is_some_and(|l| headers.get("if-modified-since") == Some(l));
        let mut extra: Vec<(&str, String)> = Vec::new();
        if let Some(e) = &route.etag {
            extra.push(("ETag", e.clone()));
        }
        if let Some(l) = &route.last_modified {
            extra.push(("Last-Modified", l.clone()));
        }
        let ok = if route.status == 200 && (etag_match || lm_match) {
            *state
                .lock()
                .unwrap()
                .not_modified
                .entry(path.clone())
                .or_default() += 1;
            write_response(reader.get_mut(), 304, &route.content_type, b"", &extra)
        } else {
            write_response(
                reader.get_mut(),
                route.status,
                &route.content_type,
                &route.body,
                &extra,
            )
        };
        if ok.is_err() {
            return;
        }
    }
}

fn write_response(
    conn: &mut impl Write,
    status: u16,
    content_type: &str,
    body: &[u8],
    extra: &[(&str, String)],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        304 => "Not Modified",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n");
    if status != 304 {
        head += &format!("Content-Length: {}\r\n", body.len());
    }
    for (k, v) in extra {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}
