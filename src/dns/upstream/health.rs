//! Which upstream servers are down, and the probe that brings them back.
//!
//! A server is marked down by the attempt that times out or errs there,
//! and up by any answer. While it is down every worker skips it, so the
//! healthy servers take the load at once instead of each query waiting a
//! timeout first; when all are down, queries try them in order anyway (a
//! real query is the fastest probe, and no blackout outlasts a blip). A
//! background task asks each down server for `. NS` every
//! [`PROBE_EVERY`] and marks it up when it answers (SPEC: at least every
//! 5 s), Unbound's "probe the down server" without sending it client
//! traffic.

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
}

impl Health {
    pub fn new(addrs: &[SocketAddr]) -> Self {
        Self {
            down: addrs.iter().map(|_| AtomicBool::new(false)).collect(),
        }
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

    pub fn mark_up(&self, server: usize, addr: SocketAddr) {
        if let Some(d) = self.down.get(server)
            && d.swap(false, Ordering::Relaxed)
        {
            tracing::info!(event = "upstream_up", upstream = %addr, "upstream answers again");
        }
    }

    fn down_servers(&self) -> Vec<usize> {
        (0..self.down.len()).filter(|&i| !self.is_up(i)).collect()
    }
}

/// Probes every down server each [`PROBE_EVERY`] until `shutdown`.
pub async fn probe(servers: Arc<super::Servers>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for i in servers.health.down_servers() {
            let addr = servers.addrs[i];
            if answers(addr, servers.timeout).await {
                servers.health.mark_up(i, addr);
            }
        }
    }
}

/// Whether `addr` answers `. NS` (any RCODE) within `timeout`, from the
/// address and port asked, under the ID sent.
async fn answers(addr: SocketAddr, timeout: Duration) -> bool {
    let bind: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
        return false;
    };
    if sock.connect(addr).await.is_err() {
        return false;
    }
    let id = rand::random::<u16>();
    let mut query = Vec::with_capacity(17);
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, one question
    query.extend_from_slice(&[0, 0, 2, 0, 1]); // . NS IN
    if sock.send(&query).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    let reply = tokio::time::timeout(timeout, async {
        loop {
            match sock.recv(&mut buf).await {
                // A connected socket only hears from `addr`.
                Ok(n) if n >= 12 && buf[..2] == id.to_be_bytes() && buf[2] & 0x80 != 0 => {
                    return true;
                }
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    })
    .await;
    reply.unwrap_or(false)
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
        h.mark_down(1, addrs[1]);
        assert!(h.is_up(0) && !h.is_up(1));
        assert_eq!(h.down_servers(), vec![1]);
        h.mark_up(1, addrs[1]);
        assert!(h.down_servers().is_empty());
        assert!(h.is_up(7), "no such server: never skipped");
    }
}
