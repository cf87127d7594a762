//! Forwarding to the upstream resolvers.
//!
//! A raw forwarder: the client's question goes out in a query of our own
//! (random ID, fresh socket so a random source port, RD set, CD/AD and DO
//! carried over, our EDNS size), and the reply is checked against it before
//! anyone sees it. Servers are tried in order; a timeout, a network error, a
//! malformed reply or SERVFAIL moves on to the next. A truncated UDP reply is
//! asked again over TCP to the same server.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout_at;

use super::answers::EDNS_PAYLOAD;
use super::wire::{
    FLAG_AD, FLAG_CD, FLAG_QR, FLAG_RD, FLAG_TC, HEADER_LEN, Query, RCODE_SERVFAIL, put_header,
    put_opt, read_u16,
};
use crate::metrics::{Metrics, UpstreamResult};

/// Largest UDP reply we accept (anything larger would be truncated by the
/// kernel anyway; our query advertises [`EDNS_PAYLOAD`]).
const MAX_UDP_REPLY: usize = 4096;

/// The configured upstream servers, in failover order.
pub struct Upstreams {
    servers: Vec<SocketAddr>,
    timeout: Duration,
}

/// Why no upstream gave a usable answer.
#[derive(Debug, thiserror::Error)]
#[error("no upstream answered ({tried} tried)")]
pub struct AllFailed {
    pub tried: usize,
}

#[derive(Debug)]
enum Attempt {
    Timeout,
    Failed,
}

impl Upstreams {
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration) -> Self {
        Self { servers, timeout }
    }

    /// Forwards `q`; returns the first acceptable reply's bytes.
    pub async fn forward(&self, q: &Query<'_>, metrics: &Metrics) -> Result<Vec<u8>, AllFailed> {
        let mut packet = Vec::with_capacity(HEADER_LEN + q.question.len() + 11);
        let flags = FLAG_RD | (q.flags & (FLAG_CD | FLAG_AD));
        put_header(&mut packet, 0, flags, [1, 0, 0, 1]);
        packet.extend_from_slice(q.question);
        put_opt(&mut packet, EDNS_PAYLOAD, 0, q.dnssec_ok(), &[]);

        for (i, server) in self.servers.iter().enumerate() {
            let started = Instant::now();
            let result = self.attempt(*server, &mut packet, q.question).await;
            let outcome = match &result {
                Ok(_) => UpstreamResult::Ok,
                Err(Attempt::Timeout) => UpstreamResult::Timeout,
                Err(Attempt::Failed) => UpstreamResult::Error,
            };
            metrics.upstream_done(i, outcome, started.elapsed());
            if let Ok(reply) = result {
                return Ok(reply);
            }
        }
        Err(AllFailed {
            tried: self.servers.len(),
        })
    }

    async fn attempt(
        &self,
        server: SocketAddr,
        packet: &mut [u8],
        question: &[u8],
    ) -> Result<Vec<u8>, Attempt> {
        let id: u16 = rand::random();
        packet[0..2].copy_from_slice(&id.to_be_bytes());
        let deadline = tokio::time::Instant::now() + self.timeout;
        let reply = match timeout_at(deadline, udp_exchange(server, packet, id, question)).await {
            Err(_) => return Err(Attempt::Timeout),
            Ok(Err(_)) => return Err(Attempt::Failed),
            Ok(Ok(r)) => r,
        };
        let reply = if read_u16(&reply, 2).is_some_and(|f| f & FLAG_TC != 0) {
            // A fresh attempt window for the TCP retry: the UDP leg was quick.
            let deadline = tokio::time::Instant::now() + self.timeout;
            match timeout_at(deadline, tcp_exchange(server, packet, id, question)).await {
                Err(_) => return Err(Attempt::Timeout),
                Ok(Err(_)) => return Err(Attempt::Failed),
                Ok(Ok(r)) => r,
            }
        } else {
            reply
        };
        if reply[3] & 0xF == RCODE_SERVFAIL {
            return Err(Attempt::Failed);
        }
        Ok(reply)
    }
}

/// Is `reply` the answer to our query `id` for `question`?
fn matches(reply: &[u8], id: u16, question: &[u8]) -> bool {
    reply.len() >= HEADER_LEN + question.len()
        && read_u16(reply, 0) == Some(id)
        && read_u16(reply, 2).is_some_and(|f| f & FLAG_QR != 0 && f & 0x7800 == 0)
        && read_u16(reply, 4) == Some(1)
        && reply[HEADER_LEN..HEADER_LEN + question.len()].eq_ignore_ascii_case(question)
}

async fn udp_exchange(
    server: SocketAddr,
    packet: &[u8],
    id: u16,
    question: &[u8],
) -> io::Result<Vec<u8>> {
    // A fresh socket per query: the kernel picks a random source port, which
    // with the random ID is what makes spoofed replies hard (RFC 5452).
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(packet).await?;
    let mut buf = vec![0u8; MAX_UDP_REPLY];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Anything else arriving on our port is ignored, not trusted.
        if matches(&buf[..n], id, question) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp_exchange(
    server: SocketAddr,
    packet: &[u8],
    id: u16,
    question: &[u8],
) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let mut framed = Vec::with_capacity(packet.len() + 2);
    framed.extend_from_slice(&(packet.len() as u16).to_be_bytes());
    framed.extend_from_slice(packet);
    stream.write_all(&framed).await?;
    let len = usize::from(stream.read_u16().await?);
    let mut reply = vec![0u8; len];
    stream.read_exact(&mut reply).await?;
    if matches(&reply, id, question) {
        Ok(reply)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "reply does not match the query",
        ))
    }
}
