//! Forwarding loops at run time: a probe name of ours arriving back at our
//! own listener.
//!
//! The config check (`config.rs`) catches an upstream that *is* one of our
//! listeners. What it cannot see is an upstream that forwards back to us
//! (a dnsmasq or Unbound whose own upstream was pointed at sinkhole).
//! dnsmasq's answer is the one used here: ask an upstream for a name
//! nobody else would ask, `<secret><nonce>-<server>.sinkhole-loop-check.`
//! (TXT), whenever an attempt there has failed (a loop always shows first
//! as one: the looped query waits on itself) and while it is down or
//! looped, never a healthy server. If that query comes in on our own
//! listener, the upstream sent it back: it is marked looped (skipped by
//! every query, even when every server is down, and logged as an error),
//! and the probe keeps asking until the name stops coming back. Our
//! listener answers the probe with REFUSED, so the probe itself goes round
//! once.
//!
//! The secret (64 random bits per process) keeps anyone else from marking
//! our upstreams looped; the nonce (per probe) keeps an intermediate cache
//! from hiding a loop behind an answer it remembered.
//!
//! What the probe cannot catch (a forwarder that answers the probe's name
//! itself, or changes it) the in-flight coalescing in [`super::inflight`]
//! still bounds: a looped query joins the one already waiting for the same
//! question instead of going round again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The probe name's last label, wire form without the root.
const SUFFIX_LABEL: &[u8] = b"sinkhole-loop-check";

/// Hex digits of the secret and the nonce in the first label.
const SECRET_HEX: usize = 16;
const NONCE_HEX: usize = 8;

/// The probe's secret, and per server whether it is looped and which
/// probe is out.
#[derive(Debug)]
pub struct LoopGuard {
    secret: [u8; SECRET_HEX],
    /// The servers, for the log line.
    addrs: Box<[SocketAddr]>,
    looped: Box<[AtomicBool]>,
    /// The nonce of the probe last sent to each server (0: none yet).
    sent: Box<[AtomicU32]>,
    /// The nonce of the probe that last came back, per server.
    back: Box<[AtomicU32]>,
}

fn hex(mut v: u64, out: &mut [u8]) {
    for b in out.iter_mut().rev() {
        *b = b"0123456789abcdef"[(v & 15) as usize];
        v >>= 4;
    }
}

fn unhex(s: &[u8]) -> Option<u64> {
    s.iter().try_fold(0u64, |acc, &c| {
        let d = (c as char).to_digit(16)?;
        Some(acc << 4 | u64::from(d))
    })
}

impl LoopGuard {
    pub fn new(addrs: &[SocketAddr]) -> Self {
        let servers = addrs.len();
        let mut secret = [0u8; SECRET_HEX];
        hex(rand::random(), &mut secret);
        Self {
            secret,
            addrs: addrs.into(),
            looped: (0..servers).map(|_| AtomicBool::new(false)).collect(),
            sent: (0..servers).map(|_| AtomicU32::new(0)).collect(),
            back: (0..servers).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    #[inline]
    pub fn is_looped(&self, server: usize) -> bool {
        self.looped
            .get(server)
            .is_some_and(|l| l.load(Ordering::Relaxed))
    }

    /// Are all servers looped (nothing to forward to)?
    pub fn all_looped(&self) -> bool {
        self.looped.iter().all(|l| l.load(Ordering::Relaxed))
    }

    /// A fresh probe for `server`: its question (wire form: name, TXT, IN)
    /// and its nonce.
    pub fn probe_question(&self, server: usize) -> (Vec<u8>, u32) {
        let nonce = rand::random::<u32>() | 1;
        if let Some(s) = self.sent.get(server) {
            s.store(nonce, Ordering::Relaxed);
        }
        let mut label = Vec::with_capacity(SECRET_HEX + NONCE_HEX + 6);
        label.extend_from_slice(&self.secret);
        let mut n = [0u8; NONCE_HEX];
        hex(u64::from(nonce), &mut n);
        label.extend_from_slice(&n);
        label.push(b'-');
        label.extend_from_slice(server.to_string().as_bytes());
        let mut q = Vec::with_capacity(label.len() + SUFFIX_LABEL.len() + 7);
        q.push(label.len() as u8);
        q.extend_from_slice(&label);
        q.push(SUFFIX_LABEL.len() as u8);
        q.extend_from_slice(SUFFIX_LABEL);
        q.extend_from_slice(&[0, 0, 16, 0, 1]); // root; TXT IN
        (q, nonce)
    }

    /// Is `qname` (wire form) one of our probes? When it is the one last
    /// sent to its server, that server is marked looped. Cheap for every
    /// other name: one length and one byte compared.
    #[inline]
    pub fn is_probe(&self, qname: &[u8]) -> bool {
        let tail = SUFFIX_LABEL.len() + 2; // length byte, label, root
        if qname.len() <= tail || qname[qname.len() - 2] != b'k' && qname[qname.len() - 2] != b'K' {
            return false;
        }
        self.arrived(qname)
    }

    #[cold]
    fn arrived(&self, qname: &[u8]) -> bool {
        let tail = SUFFIX_LABEL.len() + 2;
        let (first, last) = qname.split_at(qname.len() - tail);
        if last[0] as usize != SUFFIX_LABEL.len()
            || !last[1..=SUFFIX_LABEL.len()].eq_ignore_ascii_case(SUFFIX_LABEL)
        {
            return false;
        }
        let Some((&len, label)) = first.split_first() else {
            return false;
        };
        if usize::from(len) != label.len()
            || label.len() < SECRET_HEX + NONCE_HEX + 2
            || !label[..SECRET_HEX].eq_ignore_ascii_case(&self.secret)
            || label[SECRET_HEX + NONCE_HEX] != b'-'
        {
            return false;
        }
        let nonce = unhex(&label[SECRET_HEX..SECRET_HEX + NONCE_HEX]);
        let server = std::str::from_utf8(&label[SECRET_HEX + NONCE_HEX + 1..])
            .ok()
            .and_then(|s| s.parse::<usize>().ok());
        let (Some(nonce), Some(server)) = (nonce, server) else {
            return false;
        };
        let Ok(nonce) = u32::try_from(nonce) else {
            return true;
        };
        if self.sent.get(server).map(|s| s.load(Ordering::Relaxed)) != Some(nonce) {
            return true; // an old probe, or not one of ours: proves nothing
        }
        if let Some(b) = self.back.get(server) {
            b.store(nonce, Ordering::Relaxed);
        }
        if let Some(l) = self.looped.get(server)
            && !l.swap(true, Ordering::Relaxed)
            && let Some(addr) = self.addrs.get(server)
        {
            tracing::error!(
                event = "upstream_loop",
                upstream = %addr,
                "forwarding loop: this upstream sent our own probe query back to our listener; it is skipped until the probe stops coming back"
            );
        }
        true
    }

    /// Did the probe `nonce` sent to `server` come back to our listener?
    pub fn came_back(&self, server: usize, nonce: u32) -> bool {
        self.back
            .get(server)
            .is_some_and(|b| b.load(Ordering::Relaxed) == nonce)
    }

    /// The probe sent to `server` was answered without coming back.
    pub fn clear(&self, server: usize, addr: SocketAddr) {
        if let Some(l) = self.looped.get(server)
            && l.swap(false, Ordering::Relaxed)
        {
            tracing::info!(event = "upstream_loop_gone", upstream = %addr, "upstream no longer sends our probe back");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(n: usize) -> LoopGuard {
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from(([192, 0, 2, i as u8], 53)))
            .collect();
        LoopGuard::new(&addrs)
    }

    fn qname(q: &[u8]) -> &[u8] {
        &q[..q.len() - 4]
    }

    #[test]
    fn a_probe_marks_its_server_looped() {
        let g = guard(3);
        let (q, nonce) = g.probe_question(2);
        assert!(!g.is_looped(2) && !g.came_back(2, nonce));
        assert!(g.is_probe(qname(&q)));
        assert!(g.is_looped(2) && !g.is_looped(0) && !g.is_looped(1));
        assert!(g.came_back(2, nonce));
        g.clear(2, "192.0.2.1:53".parse().unwrap());
        assert!(!g.is_looped(2));
    }

    #[test]
    fn case_changes_are_still_ours() {
        let g = guard(1);
        let q = g.probe_question(0).0.to_ascii_uppercase();
        assert!(g.is_probe(qname(&q)));
        assert!(g.is_looped(0));
    }

    #[test]
    fn a_stale_nonce_or_another_secret_marks_nothing() {
        let g = guard(1);
        let (old, _) = g.probe_question(0);
        let _new = g.probe_question(0);
        assert!(
            g.is_probe(qname(&old)),
            "still our name: answered, not forwarded"
        );
        assert!(!g.is_looped(0), "an old probe proves nothing");
        let other = guard(1);
        let (theirs, _) = other.probe_question(0);
        assert!(!g.is_probe(qname(&theirs)));
        assert!(!g.is_looped(0));
    }

    #[test]
    fn other_names_are_not_probes() {
        let g = guard(1);
        for name in [
            &b"\x07example\x03com\x00"[..],
            b"\x00",
            b"\x13sinkhole-loop-check\x00",
            b"\x01k\x00",
            b"\x03abc\x13sinkhole-loop-check\x00",
        ] {
            assert!(!g.is_probe(name), "{name:?}");
        }
    }
}
