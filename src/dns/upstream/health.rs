//! Which upstream servers are down, and the probe that brings them back.
//!
//! A server is marked down by an attempt that times out or errs there
//! (SPEC: "skipped until it answers"), and up by any answer. While it is
//! down every worker skips it, so the healthy servers take the load at
//! once instead of each query waiting a timeout first; when all are down,
//! queries try them in order anyway (a real query is the fastest probe,
//! and no blackout outlasts a blip). A
//! background task asks each down server a probe question every
//! [`PROBE_EVERY`] and marks it up when it answers (SPEC: at least every
//! 5 s), Unbound's "probe the down server" without sending it client
//! traffic. The question is the loop probe of [`super::loops`], so the
//! same probe also finds a server that sends our queries back to us.
//!
//! Why one failure and not a run of them: a healthy server that was slow
//! on one name (an authority of that name down) is marked down too, but
//! its probe is answered within [`PROBE_EVERY`], so the cost of that
//! mistake is two seconds of its load on the other servers (tested). A run
//! of failures before marking down would instead make every query wait a
//! timeout at a dead server until the run is complete: at a quiet site,
//! several clients' queries in a row. (An error answer without the question,
//! NSD's REFUSED for a class it does not serve, is an answer: the server
//! stays up.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often a down server is asked.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Up or down, per server (by index).
#[derive(Debug)]
pub struct Health {
    down: Box<[AtomicBool]>,
    /// Failed since the last probe: probed at the next tick (a loop shows
    /// first as failures, see `loops`).
    suspect: Box<[AtomicBool]>,
}

impl Health {
    pub fn new(addrs: &[SocketAddr]) -> Self {
        Self {
            down: addrs.iter().map(|_| AtomicBool::new(false)).collect(),
            suspect: addrs.iter().map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// `server` failed: probe it soon.
    #[inline]
    pub fn suspect(&self, server: usize) {
        if let Some(s) = self.suspect.get(server)
            && !s.load(Ordering::Relaxed)
        {
            s.store(true, Ordering::Relaxed);
        }
    }

    /// Was `server` suspect since the last call? Clears it.
    fn take_suspect(&self, server: usize) -> bool {
        self.suspect
            .get(server)
            .is_some_and(|s| s.swap(false, Ordering::Relaxed))
    }

    /// An attempt at `server` failed (timed out or erred): down until it
    /// answers, and probed at the next tick.
    pub fn failed(&self, server: usize, addr: SocketAddr) {
        self.suspect(server);
        self.mark_down(server, addr);
    }

    /// An attempt at `server` was answered.
    #[inline]
    pub fn answered(&self, server: usize, addr: SocketAddr) {
        self.mark_up(server, addr);
    }

    #[inline]
    pub fn is_up(&self, server: usize) -> bool {
        self.down
            .get(server)
            .is_none_or(|d| !d.load(Ordering::Relaxed))
    }

    pub fn mark_down(&self, server: usize, addr: SocketAddr) {
        if let Some(d) = self.down.get(server)
            && !d.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(event = "upstream_down", upstream = %addr, "upstream marked down: skipped, and probed until it answers");
        }
    }

    fn mark_up(&self, server: usize, addr: SocketAddr) {
        // Read first: every answered query comes here, and a write would
        // bounce the line between the workers' cores.
        if let Some(d) = self.down.get(server)
            && d.load(Ordering::Relaxed)
            && d.swap(false, Ordering::Relaxed)
        {
            tracing::info!(event = "upstream_up", upstream = %addr, "upstream answers again");
        }
    }
}

/// Probes every down, looped or suspect (a failed attempt since the last
/// tick) server each [`PROBE_EVERY`], until `shutdown`. A healthy server
/// is never sent a probe: a forwarding loop always shows first as a
/// failure (the looped query times out waiting on itself), so probing
/// on failure finds it without extra queries to servers that answer.
pub async fn probe(servers: Arc<super::Servers>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (i, &addr) in servers.addrs.iter().enumerate() {
            let suspect = servers.health.take_suspect(i);
            if suspect || !servers.health.is_up(i) || servers.loops.is_looped(i) {
                check(&servers, i, addr).await;
            }
        }
    }
}

/// Sends server `i` the loop probe and settles its health by the outcome:
/// any answer means the server is alive; only a final one (NOERROR or
/// NXDOMAIN) that did not come back through our listener clears a loop (a
/// forwarder that has given up on us answers SERVFAIL without asking us).
async fn check(servers: &super::Servers, i: usize, addr: SocketAddr) {
    let (question, nonce) = servers.loops.probe_question(i);
    let rcode = answer_rcode(addr, &question, servers.timeout).await;
    if servers.loops.came_back(i, nonce) {
        servers.health.mark_down(i, addr);
        return;
    }
    match rcode {
        Some(0 | 3) => {
            servers.loops.clear(i, addr);
            servers.health.answered(i, addr);
        }
        Some(_) if !servers.loops.is_looped(i) => servers.health.answered(i, addr),
        _ => {}
    }
}

/// The RCODE `addr` answers `question` with, if it does within `timeout`,
/// from the address and port asked, under the ID sent.
async fn answer_rcode(addr: SocketAddr, question: &[u8], timeout: Duration) -> Option<u8> {
    let bind: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind).await.ok()?;
    sock.connect(addr).await.ok()?;
    let id = rand::random::<u16>();
    let mut query = Vec::with_capacity(12 + question.len());
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, one question
    query.extend_from_slice(question);
    sock.send(&query).await.ok()?;
    let mut buf = [0u8; 512];
    let reply = tokio::time::timeout(timeout, async {
        loop {
            match sock.recv(&mut buf).await {
                // A connected socket only hears from `addr`.
                Ok(n) if n >= 12 && buf[..2] == id.to_be_bytes() && buf[2] & 0x80 != 0 => {
                    return Some(buf[3] & 0x0F);
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    })
    .await;
    reply.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_and_up_by_index() {
        let addrs: Vec<SocketAddr> = vec![
            "192.0.2.1:53".parse().unwrap(),
            "192.0.2.2:53".parse().unwrap(),
        ];
        let h = Health::new(&addrs);
        assert!(h.is_up(0) && h.is_up(1));
        h.failed(1, addrs[1]);
        assert!(h.is_up(0) && !h.is_up(1));
        h.answered(1, addrs[1]);
        assert!(h.is_up(0) && h.is_up(1));
        assert!(h.is_up(7), "no such server: never skipped");
    }
}
