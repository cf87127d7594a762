//! The sockets a worker asks its upstreams from: many, on random ports,
//! reused for a while, then replaced.
//!
//! Why this shape. A spoofed answer must guess the query's ID (16 bits)
//! and the port it left from. Opening a socket per query (what this server
//! did before, and what Unbound does) gives a fresh random port each time
//! but costs five system calls and a descriptor per query in flight: 500
//! uncached queries a second at a blackholed upstream held over 1,000
//! descriptors. A few fixed sockets (dnsdist's way) are cheap but leave
//! the port nearly known. A pool sits between: [`SOCKETS`] sockets per
//! address family per worker, each bound to a port the kernel picks at
//! random, each query (or batch of queries, sent together) on one of them
//! at random. An attacker who has even learnt every open port must still
//! guess ID × port: 2^16 × 2^10 = 2^26 combinations per query. Each socket
//! is replaced by one on a new random port after [`USES`] queries, once
//! nothing is waiting on it, so the set of open ports keeps moving.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use crate::dns::sys::poll::{Poll, Wanted};

/// Sockets per address family per worker.
pub const SOCKETS: usize = 1024;
/// Queries a socket carries before it is replaced.
pub const USES: u32 = 256;

struct Slot {
    socket: UdpSocket,
    v6: bool,
    uses: u32,
    waiting: u32,
}

/// One worker's upstream sockets, registered in its epoll set with
/// `token_base + slot`.
pub struct Pool {
    slots: Vec<Slot>,
    /// Slots `0..v4` are IPv4, the rest IPv6.
    v4: usize,
    token_base: u64,
    /// Slots due for replacement at the end of this turn.
    due: Vec<u16>,
}

fn bind(v6: bool) -> io::Result<UdpSocket> {
    // Port 0: the kernel picks a random free ephemeral port.
    let local: SocketAddr = if v6 {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

impl Pool {
    /// `per_family` sockets for each family that some upstream uses.
    pub fn new(
        poll: &Poll,
        token_base: u64,
        v4: bool,
        v6: bool,
        per_family: usize,
    ) -> io::Result<Self> {
        let mut slots = Vec::new();
        for (want, is_v6) in [(v4, false), (v6, true)] {
            if !want {
                continue;
            }
            for _ in 0..per_family {
                let socket = bind(is_v6)?;
                poll.add(
                    socket.as_raw_fd(),
                    token_base + slots.len() as u64,
                    Wanted::Read,
                )?;
                slots.push(Slot {
                    socket,
                    v6: is_v6,
                    uses: 0,
                    waiting: 0,
                });
            }
        }
        let v4 = if v4 { per_family } else { 0 };
        Ok(Self {
            slots,
            v4,
            token_base,
            due: Vec::new(),
        })
    }

    /// A random socket of the family, preferring one not yet due for
    /// replacement.
    pub fn pick(&self, v6: bool) -> Option<u16> {
        let (from, to) = if v6 {
            (self.v4, self.slots.len())
        } else {
            (0, self.v4)
        };
        if from == to {
            return None;
        }
        let mut choice = from + rand::random_range(0..to - from);
        for _ in 0..4 {
            if self.slots[choice].uses < USES {
                break;
            }
            choice = from + rand::random_range(0..to - from);
        }
        Some(choice as u16)
    }

    pub fn fd(&self, slot: u16) -> RawFd {
        self.slots[usize::from(slot)].socket.as_raw_fd()
    }

    pub fn slot_of(&self, token: u64) -> Option<u16> {
        let slot = token.checked_sub(self.token_base)?;
        (slot < self.slots.len() as u64).then_some(slot as u16)
    }

    pub fn is_v6(&self, slot: u16) -> bool {
        self.slots[usize::from(slot)].v6
    }

    /// A query went out on `slot`.
    pub fn sent(&mut self, slot: u16) {
        let s = &mut self.slots[usize::from(slot)];
        s.uses = s.uses.saturating_add(1);
        s.waiting += 1;
    }

    /// A query on `slot` got its answer or gave up waiting.
    pub fn done(&mut self, slot: u16) {
        let s = &mut self.slots[usize::from(slot)];
        s.waiting = s.waiting.saturating_sub(1);
        if s.waiting == 0 && s.uses >= USES {
            self.due.push(slot);
        }
    }

    /// Replaces the sockets that are due, each by one on a new random
    /// port. Called between turns, never while a socket is being read.
    pub fn renew(&mut self, poll: &Poll) {
        while let Some(slot) = self.due.pop() {
            let s = &mut self.slots[usize::from(slot)];
            if s.waiting != 0 || s.uses < USES {
                continue; // used again since it was marked
            }
            match bind(s.v6) {
                Ok(socket) => {
                    let _ = poll.remove(s.socket.as_raw_fd());
                    let token = self.token_base + u64::from(slot);
                    if let Err(e) = poll.add(socket.as_raw_fd(), token, Wanted::Read) {
                        // Keep the old socket rather than lose the slot.
                        tracing::warn!(error = %e, "cannot register a new upstream socket");
                        let _ = poll.add(s.socket.as_raw_fd(), token, Wanted::Read);
                        s.uses = 0;
                        continue;
                    }
                    s.socket = socket;
                    s.uses = 0;
                }
                Err(e) => {
                    // Out of descriptors or ports: keep serving on the old one.
                    tracing::debug!(error = %e, "cannot open a new upstream socket");
                    s.uses = 0;
                }
            }
        }
    }

    /// The ports open now (for tests of the port spread).
    pub fn ports(&self) -> Vec<u16> {
        self.slots
            .iter()
            .filter_map(|s| s.socket.local_addr().ok().map(|a| a.port()))
            .collect()
    }
}
