//! A small HTTP/1.1 server loop for the block page, with the limits a
//! page that anyone on the network can reach needs.
//!
//! Why not axum as for the admin API: the block page is the part of the
//! process any client can reach, by design, on port 80 and 443; its reads
//! must be bounded in time and size in ways hyper's server does not let us
//! state together (request head within 10 s, at most 8 KiB of it, 60 s of
//! idleness, a cap on connections, a deadline on writes). It needs nothing
//! of HTTP but a request head: any method, any path, one page back. So the
//! loop here reads heads with `httparse` and writes one response each.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};

/// Limits on one connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request head must arrive whole within this.
    pub head: Duration,
    /// Kept-alive connections are closed after this long without a request.
    pub idle: Duration,
    /// Largest request head taken (request line and headers).
    pub max_head: usize,
    /// A response must be written within this.
    pub write: Duration,
}

impl Limits {
    /// SPEC's: headers within 10 s, idle 60 s, 8 KiB of headers.
    pub const SPEC: Limits = Limits {
        head: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        max_head: 8 * 1024,
        write: Duration::from_secs(10),
    };
}

/// What the block page needs of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    /// The Host header's value (`None` when absent).
    pub host: Option<String>,
    /// More than one Host header: a malformed request (RFC 9112 §3.2).
    pub hosts: usize,
    pub wants_json: bool,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
}

/// Why no request head could be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Over [`Limits::max_head`]: answered 400, then closed.
    TooLarge,
    /// Not HTTP: answered 400, then closed.
    Malformed,
    /// Too slow, or idle too long: closed.
    TimedOut,
    /// The client closed the connection.
    Closed,
}

/// Reads one request head into `buf` (which may already hold bytes that
/// came after the previous one). `first` is whether this is the
/// connection's first request: later ones may wait [`Limits::idle`] for
/// their first byte.
pub async fn read_head<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    limits: &Limits,
    first: bool,
) -> Result<Head, HeadError> {
    let start = Instant::now();
    let mut deadline = start + if first { limits.head } else { limits.idle };
    let mut chunk = [0u8; 2048];
    loop {
        if !buf.is_empty() {
            match parse(buf, limits)? {
                Some((head, used)) => {
                    buf.drain(..used);
                    return Ok(head);
                }
                None if !first && deadline > Instant::now() + limits.head => {
                    // A request has begun: it has `head` to finish.
                    deadline = Instant::now() + limits.head;
                }
                None => {}
            }
        }
        let n = match timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return Err(HeadError::TimedOut),
            Ok(Err(_)) | Ok(Ok(0)) => return Err(HeadError::Closed),
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > limits.max_head && parse(buf, limits)?.is_none() {
            return Err(HeadError::TooLarge);
        }
    }
}

/// A complete head in `buf` and its length, `None` if more is needed.
fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Head, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    if used > limits.max_head {
        return Err(HeadError::TooLarge);
    }
    let mut head = Head {
        method: req.method.unwrap_or("GET").to_owned(),
        host: None,
        hosts: 0,
        wants_json: false,
        keep_alive: req.version == Some(1),
    };
    let mut has_body = false;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| HeadError::Malformed)?;
        if h.name.eq_ignore_ascii_case("host") {
            head.hosts += 1;
            head.host = Some(value.trim().to_owned());
        } else if h.name.eq_ignore_ascii_case("accept") {
            head.wants_json |= value.split(',').any(|t| {
                t.trim()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                head.keep_alive = false;
            } else if v.contains("keep-alive") {
                head.keep_alive = true;
            }
        } else if (h.name.eq_ignore_ascii_case("content-length") && value.trim() != "0")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
        {
            has_body = true;
        }
    }
    // A body is never read: the connection ends with this response.
    if has_body {
        head.keep_alive = false;
    }
    Ok(Some((head, used)))
}

/// One response.
pub struct Response<'a> {
    pub status: u16,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Writes `r` (no body for HEAD), within [`Limits::write`].
pub async fn respond<S: AsyncWrite + Unpin>(
    s: &mut S,
    r: &Response<'_>,
    head_only: bool,
    keep_alive: bool,
    limits: &Limits,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(r.body.len() + 400);
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\n\
             Content-Type: {}\r\n\
             Content-Length: {}\r\n\
             Cache-Control: no-store\r\n\
             X-Content-Type-Options: nosniff\r\n\
             Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'\r\n\
             Referrer-Policy: no-referrer\r\n\
             Connection: {}\r\n\r\n",
            r.status,
            reason(r.status),
            r.content_type,
            r.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        )
        .as_bytes(),
    );
    if !head_only {
        out.extend_from_slice(r.body);
    }
    match tokio::time::timeout(limits.write, async {
        s.write_all(&out).await?;
        s.flush().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> Result<Option<Head>, HeadError> {
        parse(raw.as_bytes(), &Limits::SPEC).map(|o| o.map(|(h, _)| h))
    }

    #[test]
    fn reads_host_accept_and_connection() {
        let h = parsed("GET /x HTTP/1.1\r\nHost: Zoom.US:8080\r\nAccept: text/html, application/json;q=0.9\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.host.as_deref(), Some("Zoom.US:8080"));
        assert!(h.wants_json && h.keep_alive);
        let h = parsed("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive, "a body is never read: close after");
        let h = parsed("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(h.host.is_none() && !h.keep_alive);
        assert_eq!(parsed("GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        assert_eq!(
            parsed("\x16\x03\x01garbage\r\n\r\n"),
            Err(HeadError::Malformed)
        );
    }
}
