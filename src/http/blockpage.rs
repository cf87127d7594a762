//! The block page (`listen.http`, `listen.https`): what a member of staff
//! sees when the DNS sent their browser here.
//!
//! Any method and path. The name is the request's `Host` (without its
//! port), or over TLS the SNI name when there is no Host. The page asks the
//! policy snapshot the DNS path uses: a blocked name gets 403 and the
//! category's reason, its alternatives, whom to ask and a reference that is
//! also logged; any other name gets 404 and a neutral page, never a false
//! accusation; `Accept: application/json` gets the same facts as JSON. No
//! Host and no SNI, a malformed Host, or headers over 8 KiB get 400.
//!
//! The page is reachable by every client on the network, so it is bounded:
//! headers within 10 s, 60 s idle at most between requests, writes within
//! 10 s, and at most [`MAX_CONNECTIONS`] connections, past which new ones
//! are closed at once. None of that touches the DNS workers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn::{Head, HeadError, Limits, Response, read_head, respond};
use super::page::{AlternativeJson, BlockedFacts, NotBlocked, blocked_html, not_blocked_html};
use super::tls::Certificate;
use crate::fds::{self, Slots};
use crate::metrics::{BlockPageResult, Metrics};
use crate::observe::audit::AuditLog;
use crate::observe::clock::Utc;
use crate::policy::{Decision, DomainName, Live};

/// Open block-page connections, HTTP and HTTPS together.
pub const MAX_CONNECTIONS: usize = 512;
/// A reference's random part: no 0/O or 1/I to misread over the phone.
const REFERENCE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// Everything a block-page request needs.
pub struct BlockPage {
    live: Arc<Live>,
    organisation: Option<String>,
    contact: Option<String>,
    audit: Arc<AuditLog>,
    metrics: Arc<Metrics>,
    slots: Arc<Slots>,
    limits: Limits,
}

/// One answer, before it is written.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl BlockPage {
    pub fn new(
        live: Arc<Live>,
        organisation: Option<String>,
        contact: Option<String>,
        audit: Arc<AuditLog>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            live,
            organisation,
            contact,
            audit,
            metrics,
            slots: Slots::new(MAX_CONNECTIONS),
            limits: Limits::SPEC,
        }
    }

    fn bad_request(&self, why: &str) -> Answer {
        self.metrics.blockpage(BlockPageResult::BadRequest);
        Answer {
            status: 400,
            content_type: "text/plain; charset=utf-8",
            body: format!("400 Bad Request: {why}\n").into_bytes(),
        }
    }

    /// The answer to one request from `client`.
    fn answer(&self, head: &Head, sni: Option<&str>, client: IpAddr) -> Answer {
        if head.hosts > 1 {
            return self.bad_request("more than one Host header");
        }
        let Some(raw) = head.host.as_deref().or(sni) else {
            return self.bad_request("no Host header");
        };
        let Some(name) = host_name(raw) else {
            return self.bad_request("the Host header is not a domain name");
        };
        let name_str = name.as_str();
        let policy = self.live.load();
        let Decision::Block { hit, category, .. } = policy.decide_name(&name) else {
            self.metrics.blockpage(BlockPageResult::NotBlocked);
            let org = self.organisation.as_deref();
            return if head.wants_json {
                json(
                    404,
                    &NotBlocked {
                        name: name_str,
                        blocked: false,
                    },
                )
            } else {
                html(404, not_blocked_html(name_str, org))
            };
        };
        self.metrics.blockpage(BlockPageResult::Blocked);
        let reference = reference(SystemTime::now());
        self.audit.blockpage(&reference, name_str, client);
        let facts = BlockedFacts {
            name: name_str,
            blocked: true,
            category: &category.name,
            list: &hit.list.name,
            reason: category.reason.as_deref(),
            alternatives: category
                .alternatives
                .iter()
                .map(AlternativeJson::from)
                .collect(),
            contact: self.contact.as_deref(),
            reference: &reference,
        };
        if head.wants_json {
            json(403, &facts)
        } else {
            html(403, blocked_html(&facts, self.organisation.as_deref()))
        }
    }
}

fn html(status: u16, body: String) -> Answer {
    Answer {
        status,
        content_type: "text/html; charset=utf-8",
        body: body.into_bytes(),
    }
}

fn json(status: u16, value: &impl serde::Serialize) -> Answer {
    Answer {
        status,
        content_type: "application/json",
        body: serde_json::to_vec(value).unwrap_or_default(),
    }
}

/// The name a Host header (or SNI) names: its port and trailing dot
/// dropped, in lower case; `None` when it is not a domain name.
fn host_name(raw: &str) -> Option<DomainName> {
    let raw = raw.trim();
    let host = match raw.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        Some(_) => return None,
        None => raw,
    };
    DomainName::parse(host).ok()
}

/// `20261129-044556-K7Q2ZM`: the UTC time to the second, and six random
/// characters that tell apart two blocks in the same second.
fn reference(at: SystemTime) -> String {
    let mut r = Utc::from(at).compact();
    r.push('-');
    for _ in 0..6 {
        let i = rand::random_range(0..REFERENCE_ALPHABET.len());
        r.push(char::from(REFERENCE_ALPHABET[i]));
    }
    r
}

/// Serves the page over plain HTTP until `shutdown`.
pub async fn serve_http(
    listener: TcpListener,
    page: Arc<BlockPage>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let (stream, peer, slot) = tokio::select! {
            a = fds::accept(&listener, &page.slots, "block page") => a,
            _ = shutdown.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let page = page.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            connection(stream, peer, None, &page, shutdown).await;
            drop(slot);
        });
    }
}

/// Serves the page over TLS until `shutdown`, with the certificate in
/// service at each handshake (so a reload needs no restart).
pub async fn serve_https(
    listener: TcpListener,
    page: Arc<BlockPage>,
    cert: Arc<Certificate>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let (stream, peer, slot) = tokio::select! {
            a = fds::accept(&listener, &page.slots, "block page") => a,
            _ = shutdown.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let page = page.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.config());
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            // The handshake counts against the head's deadline.
            let handshake = tokio::time::timeout(page.limits.head, acceptor.accept(stream)).await;
            if let Ok(Ok(tls)) = handshake {
                let sni = tls.get_ref().1.server_name().map(str::to_owned);
                connection(tls, peer, sni, &page, shutdown).await;
            }
            drop(slot);
        });
    }
}

/// One connection's requests, in order, until it closes, idles out, errs
/// or the server shuts down.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    sni: Option<String>,
    page: &BlockPage,
    shutdown: CancellationToken,
) {
    let mut buf = Vec::with_capacity(1024);
    let mut first = true;
    loop {
        let head = tokio::select! {
            h = read_head(&mut stream, &mut buf, &page.limits, first) => h,
            _ = shutdown.cancelled() => return,
        };
        first = false;
        let (answer, keep_alive, head_only) = match head {
            Ok(head) => {
                let answer = page.answer(&head, sni.as_deref(), peer.ip());
                // After a bad request, nothing more from this client.
                let keep_alive = head.keep_alive && answer.status != 400;
                (answer, keep_alive, head.method.eq_ignore_ascii_case("HEAD"))
            }
            Err(HeadError::TooLarge) => {
                (page.bad_request("request headers over 8 KiB"), false, false)
            }
            Err(HeadError::Malformed) => {
                (page.bad_request("not an HTTP/1.1 request"), false, false)
            }
            Err(HeadError::TimedOut | HeadError::Closed) => return,
        };
        let response = Response {
            status: answer.status,
            content_type: answer.content_type,
            body: &answer.body,
        };
        if respond(&mut stream, &response, head_only, keep_alive, &page.limits)
            .await
            .is_err()
            || !keep_alive
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        let n = |s: &str| host_name(s).map(|d| d.as_str().to_owned());
        assert_eq!(n("Zoom.US"), Some("zoom.us".into()));
        assert_eq!(n("zoom.us:8080"), Some("zoom.us".into()));
        assert_eq!(n("zoom.us."), Some("zoom.us".into()));
        assert_eq!(n("zoom.us:"), None);
        assert_eq!(n("zoom.us:80x"), None);
        assert_eq!(n("<script>.test"), None);
        assert_eq!(n("[::1]:80"), None);
        assert_eq!(n(""), None);
    }

    #[test]
    fn references_read_well() {
        let r = reference(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_925_122));
        assert!(r.starts_with("20261129-040522-"), "{r}");
        assert_eq!(r.len(), 22);
        assert!(r[16..].bytes().all(|b| REFERENCE_ALPHABET.contains(&b)));
    }
}
