//! The open-file budget: how many descriptors client connections may hold.
//!
//! A service started with the usual soft limit of 1,024 open files used to
//! let idle connections to the DNS or admin port take every descriptor,
//! after which the upstream stage could not open a socket (every uncached
//! query SERVFAILed) and nothing could be accepted even to be closed. Now:
//!
//! - at start the soft limit is raised to the hard one ([`raise_limit`]);
//! - the upstream pools are sized from what that allows (`app.rs`) and
//!   opened before any client is accepted;
//! - once every listener and pool is open, what is left, less
//!   [`HEADROOM`], is the budget of client connections ([`settle`]), shared
//!   by DNS over TCP, the admin API and the block page, each also under
//!   its own cap;
//! - a connection past the budget is accepted and closed at once (accept
//!   needs one descriptor for a moment; the headroom has it).
//!
//! UDP needs no descriptor per client, so cached, blocked and forwarded
//! answers keep flowing however many connections wait.
//!
//! The budget is one per process, as the limit is: a static, so the three
//! listeners and their tests need no handle passed down to them. Each
//! listener's own cap is its [`Slots`], and [`accept`] is the one accept
//! loop they share: a connection gets a [`Slot`] (its place under the
//! listener's cap and its descriptor in the budget) or is closed at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Descriptors kept out of the connection budget for everything else the
/// server opens while it runs: list files and the watcher, downloads, the
/// state directory, upstream TCP retries, health probes, the pool's
/// socket renewals, accept's momentary one.
pub const HEADROOM: usize = 256;

static HELD: AtomicUsize = AtomicUsize::new(0);
/// No cap until [`settle`] has measured one.
static CAP: AtomicUsize = AtomicUsize::new(usize::MAX);

/// One client connection's descriptor, given back on drop.
#[derive(Debug)]
pub struct FdPermit(());

impl Drop for FdPermit {
    fn drop(&mut self) {
        HELD.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A permit for one more client connection, or `None` when the budget is
/// spent (close the connection).
pub fn take() -> Option<FdPermit> {
    let held = HELD.fetch_add(1, Ordering::Relaxed);
    if held >= CAP.load(Ordering::Relaxed) {
        HELD.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    Some(FdPermit(()))
}

/// One listener's connection slots: at most `cap` held at once, each
/// also holding a descriptor of the process's budget.
#[derive(Debug)]
pub struct Slots {
    held: AtomicUsize,
    cap: usize,
}

/// One open connection's place under its listener's cap and its
/// descriptor; both given back on drop.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    _fd: FdPermit,
}

impl Slots {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            held: AtomicUsize::new(0),
            cap,
        })
    }

    /// A slot, or `None` at the cap or when the budget is spent.
    pub fn take(self: &Arc<Self>) -> Option<Slot> {
        if self.held.fetch_add(1, Ordering::Relaxed) >= self.cap {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let Some(fd) = take() else {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return None;
        };
        Some(Slot {
            slots: self.clone(),
            _fd: fd,
        })
    }

    /// Slots held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    pub fn cap(&self) -> usize {
        self.cap
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The next connection on `listener` that gets a slot. Past the cap or
/// the budget a connection is closed at once (and logged at debug); an
/// accept error (typically EMFILE) backs off briefly rather than spin.
/// `what` names the listener in those lines.
pub async fn accept(
    listener: &TcpListener,
    slots: &Arc<Slots>,
    what: &'static str,
) -> (TcpStream, SocketAddr, Slot) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match slots.take() {
                Some(slot) => return (stream, peer, slot),
                None => {
                    tracing::debug!(listener = what, client = %peer, "connection closed: at the listener's cap or the descriptor budget");
                }
            },
            Err(e) => {
                tracing::warn!(listener = what, error = %e, "accept error");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What [`settle`] found.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub limit: u64,
    /// Open when measured, connections aside.
    pub open: usize,
    /// Client connections allowed at once.
    pub connections: usize,
}

/// Measures the descriptors open now and sets the connection budget to
/// what the limit leaves, less [`HEADROOM`]. Call once every listener and
/// upstream pool is open.
pub fn settle() -> Budget {
    let limit = current_limit();
    let held = HELD.load(Ordering::Relaxed);
    let open = open_descriptors().map_or(0, |n| n.saturating_sub(held));
    let connections = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(open)
        .saturating_sub(HEADROOM);
    CAP.store(connections, Ordering::Relaxed);
    Budget {
        limit,
        open,
        connections,
    }
}

fn open_descriptors() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

fn current_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a plain system call on a struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur
}

/// Raises the open-file soft limit to the hard limit; returns the limit
/// now in force.
pub fn raise_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on structs we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}
